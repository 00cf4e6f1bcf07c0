//! SQL statements on the `approvals` table.
//!
//! The table stores the last transition of each approval. Reads compute
//! the effective status at the caller's `now`, so a pending or approved
//! row whose `expires_at` is before `now` reads as `expired` without a
//! write. Decisions and consumption are single conditional `UPDATE`s, so
//! of two racing writers on one approval exactly one changes it, even
//! across processes that share the database file.

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde_json::Value;

use super::{DbError, sql_limit};
use crate::{ApprovalRecord, ApprovalStatus};

/// Columns in the order that [`RawApproval::from_row`] reads them.
const APPROVAL_COLUMNS: &str = "approval_id, task_id, trace_id, agent, user, tool, arguments, \
     arguments_hash, policy_ids, reason, status, created_at, expires_at, decided_at, decided_by, \
     decision_reason, consumed_at";

/// `SELECT` of every column with `status` replaced by the effective status
/// at `?1`, the caller's `now`.
const SELECT_EFFECTIVE: &str = "SELECT approval_id, task_id, trace_id, agent, user, tool, \
     arguments, arguments_hash, policy_ids, reason, \
     CASE WHEN status IN ('pending', 'approved') AND expires_at < ?1 \
         THEN 'expired' ELSE status END, \
     created_at, expires_at, decided_at, decided_by, decision_reason, consumed_at \
     FROM approvals";

/// Outcome of an [`insert_approval`] call that did not fail.
#[derive(Debug, PartialEq)]
pub(in crate::sqlite) enum ApprovalInsert {
    Inserted,
    Exists,
}

/// Outcome of a [`decide_approval`] call that did not fail.
#[derive(Debug, PartialEq)]
pub(in crate::sqlite) enum ApprovalDecision {
    /// The approval was pending and now carries the decision.
    Decided(Box<ApprovalRecord>),
    NotFound,
    /// The approval was not pending at `now`.
    Conflict {
        status: ApprovalStatus,
        changed_at: Option<i64>,
    },
}

/// Inserts `approval` unless its id exists.
pub(in crate::sqlite) fn insert_approval(
    conn: &Connection,
    approval: &ApprovalRecord,
) -> Result<ApprovalInsert, DbError> {
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT INTO approvals ({APPROVAL_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
             ON CONFLICT (approval_id) DO NOTHING"
        ))?
        .execute(params![
            approval.approval_id,
            approval.task_id,
            approval.trace_id,
            approval.agent,
            approval.user,
            approval.tool,
            approval.arguments.to_string(),
            approval.arguments_hash,
            Value::from(approval.policy_ids.clone()).to_string(),
            approval.reason,
            approval.status.as_str(),
            approval.created_at,
            approval.expires_at,
            approval.decided_at,
            approval.decided_by,
            approval.decision_reason,
            approval.consumed_at,
        ])?;
    Ok(if inserted == 1 {
        ApprovalInsert::Inserted
    } else {
        ApprovalInsert::Exists
    })
}

/// Returns the open approval of the call `approval` describes, or inserts
/// `approval`, in one immediate transaction.
pub(in crate::sqlite) fn open_approval(
    conn: &mut Connection,
    approval: &ApprovalRecord,
    now: i64,
) -> Result<(ApprovalRecord, bool), DbError> {
    let transaction = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let existing = find_approval(
        &transaction,
        &approval.task_id,
        &approval.tool,
        &approval.arguments_hash,
        now,
    )?;
    if let Some(existing) = existing {
        transaction.commit()?;
        return Ok((existing, false));
    }
    let inserted = insert_approval(&transaction, approval)?;
    transaction.commit()?;
    Ok((
        approval.clone(),
        matches!(inserted, ApprovalInsert::Inserted),
    ))
}

/// Loads one approval with its effective status at `now`.
pub(in crate::sqlite) fn select_approval(
    conn: &Connection,
    approval_id: &str,
    now: i64,
) -> Result<Option<ApprovalRecord>, DbError> {
    let raw = conn
        .prepare_cached(&format!("{SELECT_EFFECTIVE} WHERE approval_id = ?2"))?
        .query_row(params![now, approval_id], RawApproval::from_row)
        .optional()?;
    raw.map(RawApproval::decode).transpose()
}

/// Lists at most `limit` approvals, newest first, optionally only those
/// with effective status `status` at `now`.
pub(in crate::sqlite) fn select_approvals(
    conn: &Connection,
    status: Option<ApprovalStatus>,
    limit: usize,
    now: i64,
) -> Result<Vec<ApprovalRecord>, DbError> {
    // Each filter tests the stored status first, so it can use the
    // `approvals_status` index.
    let filter = match status {
        None => "",
        Some(ApprovalStatus::Pending) => "WHERE status = 'pending' AND expires_at >= ?1",
        Some(ApprovalStatus::Approved) => "WHERE status = 'approved' AND expires_at >= ?1",
        Some(ApprovalStatus::Denied) => "WHERE status = 'denied'",
        Some(ApprovalStatus::Consumed) => "WHERE status = 'consumed'",
        Some(ApprovalStatus::Expired) => {
            "WHERE status = 'expired' \
             OR (status IN ('pending', 'approved') AND expires_at < ?1)"
        }
    };
    let raws = conn
        .prepare_cached(&format!(
            "{SELECT_EFFECTIVE} {filter} ORDER BY created_at DESC, rowid DESC LIMIT ?2"
        ))?
        .query_map(params![now, sql_limit(limit)], RawApproval::from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raws.into_iter().map(RawApproval::decode).collect()
}

/// Finds the newest approval of one exact call that is pending, approved
/// or denied at `now`.
pub(in crate::sqlite) fn find_approval(
    conn: &Connection,
    task_id: &str,
    tool: &str,
    arguments_hash: &str,
    now: i64,
) -> Result<Option<ApprovalRecord>, DbError> {
    let raw = conn
        .prepare_cached(&format!(
            "{SELECT_EFFECTIVE} \
             WHERE task_id = ?2 AND tool = ?3 AND arguments_hash = ?4 \
                AND (status = 'denied' \
                    OR (status IN ('pending', 'approved') AND expires_at >= ?1)) \
             ORDER BY created_at DESC, rowid DESC LIMIT 1"
        ))?
        .query_row(
            params![now, task_id, tool, arguments_hash],
            RawApproval::from_row,
        )
        .optional()?;
    raw.map(RawApproval::decode).transpose()
}

/// Moves a pending approval that has not expired at `now` to approved or
/// denied.
///
/// The conditional `UPDATE` decides the race between approvers. When it
/// changes nothing, the follow-up read in the same transaction
/// distinguishes an unknown id from a conflict and finds the status that won.
pub(in crate::sqlite) fn decide_approval(
    conn: &mut Connection,
    approval_id: &str,
    approve: bool,
    decided_by: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<ApprovalDecision, DbError> {
    let status = if approve {
        ApprovalStatus::Approved
    } else {
        ApprovalStatus::Denied
    };
    let transaction = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;

    let updated = transaction
        .prepare_cached(&format!(
            "UPDATE approvals \
             SET status = ?2, decided_at = ?3, decided_by = ?4, decision_reason = ?5 \
             WHERE approval_id = ?1 AND status = 'pending' AND expires_at >= ?3 \
             RETURNING {APPROVAL_COLUMNS}"
        ))?
        .query_row(
            params![approval_id, status.as_str(), now, decided_by, reason],
            RawApproval::from_row,
        )
        .optional()?;
    let outcome = match updated {
        Some(raw) => ApprovalDecision::Decided(Box::new(raw.decode()?)),
        None => match select_approval(&transaction, approval_id, now)? {
            None => ApprovalDecision::NotFound,
            Some(current) => ApprovalDecision::Conflict {
                status: current.status,
                changed_at: changed_at(&current),
            },
        },
    };

    transaction.commit()?;
    Ok(outcome)
}

/// Moves an approved approval that has not expired at `now` to consumed;
/// returns true when this call made the change.
pub(in crate::sqlite) fn consume_approval(
    conn: &Connection,
    approval_id: &str,
    now: i64,
) -> Result<bool, DbError> {
    let changed = conn
        .prepare_cached(
            "UPDATE approvals SET status = 'consumed', consumed_at = ?2 \
             WHERE approval_id = ?1 AND status = 'approved' AND expires_at >= ?2",
        )?
        .execute(params![approval_id, now])?;
    Ok(changed == 1)
}

/// Returns when `approval` reached its effective status, if known.
fn changed_at(approval: &ApprovalRecord) -> Option<i64> {
    match approval.status {
        ApprovalStatus::Pending => None,
        ApprovalStatus::Approved | ApprovalStatus::Denied => approval.decided_at,
        ApprovalStatus::Consumed => approval.consumed_at,
        ApprovalStatus::Expired => Some(approval.expires_at),
    }
}

/// An `approvals` row before its JSON and status columns are decoded.
struct RawApproval {
    record: ApprovalRecord,
    arguments: String,
    policy_ids: String,
    status: String,
}

impl RawApproval {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawApproval> {
        Ok(RawApproval {
            record: ApprovalRecord {
                approval_id: row.get(0)?,
                task_id: row.get(1)?,
                trace_id: row.get(2)?,
                agent: row.get(3)?,
                user: row.get(4)?,
                tool: row.get(5)?,
                arguments: Value::Null,
                arguments_hash: row.get(7)?,
                policy_ids: Vec::new(),
                reason: row.get(9)?,
                status: ApprovalStatus::Pending,
                created_at: row.get(11)?,
                expires_at: row.get(12)?,
                decided_at: row.get(13)?,
                decided_by: row.get(14)?,
                decision_reason: row.get(15)?,
                consumed_at: row.get(16)?,
            },
            arguments: row.get(6)?,
            policy_ids: row.get(8)?,
            status: row.get(10)?,
        })
    }

    fn decode(self) -> Result<ApprovalRecord, DbError> {
        let mut record = self.record;
        let corrupt = |message: String| DbError::Corrupt {
            row: format!("approval {:?}", record.approval_id),
            message,
        };
        let status = match self.status.as_str() {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "denied" => ApprovalStatus::Denied,
            "consumed" => ApprovalStatus::Consumed,
            "expired" => ApprovalStatus::Expired,
            other => return Err(corrupt(format!("unknown status {other:?}"))),
        };
        let arguments = serde_json::from_str(&self.arguments)
            .map_err(|error| corrupt(format!("arguments column is not JSON: {error}")))?;
        let policy_ids = serde_json::from_str(&self.policy_ids).map_err(|error| {
            corrupt(format!(
                "policy_ids column is not a JSON array of strings: {error}"
            ))
        })?;
        record.status = status;
        record.arguments = arguments;
        record.policy_ids = policy_ids;
        Ok(record)
    }
}
