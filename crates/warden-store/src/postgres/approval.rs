//! SQL statements of the PostgreSQL backend on the `approvals` table.
//!
//! As in the SQLite backend, the table stores the last transition of each
//! approval, and reads compute the effective status at the caller's `now`.
//! Decisions and consumption are single conditional `UPDATE`s: PostgreSQL
//! locks the row, and a second writer re-checks the condition after the
//! first commits, so of two racing writers on any replicas exactly one
//! changes it.

use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use super::events;
use super::sql::{DbError, sql_limit};
use crate::{ApprovalRecord, ApprovalStatus};

/// Columns in the order that an insert binds them.
const APPROVAL_COLUMNS: &str = "approval_id, task_id, trace_id, agent, user_name, tool, \
     arguments, arguments_hash, policy_ids, reason, status, created_at, expires_at, decided_at, \
     decided_by, decision_reason, consumed_at";

/// `SELECT` of every column with `status` replaced by the effective status
/// at `$1`, the caller's `now`.
const SELECT_EFFECTIVE: &str = "SELECT approval_id, task_id, trace_id, agent, user_name, tool, \
     arguments, arguments_hash, policy_ids, reason, \
     CASE WHEN status IN ('pending', 'approved') AND expires_at < $1 \
         THEN 'expired' ELSE status END AS status, \
     created_at, expires_at, decided_at, decided_by, decision_reason, consumed_at \
     FROM approvals";

/// Outcome of a [`decide_approval`] call that did not fail.
#[derive(Debug, PartialEq)]
pub(super) enum ApprovalDecision {
    /// The approval was pending and now carries the decision.
    Decided(Box<ApprovalRecord>),
    NotFound,
    /// The approval was not pending at `now`.
    Conflict {
        status: ApprovalStatus,
        changed_at: Option<i64>,
    },
}

/// Inserts `approval` unless its id exists; returns true when inserted.
pub(super) async fn insert_approval(
    pool: &PgPool,
    approval: &ApprovalRecord,
) -> Result<bool, DbError> {
    let mut connection = pool.acquire().await?;
    insert(&mut connection, approval).await
}

/// Returns the open approval of the call `approval` describes, or inserts
/// `approval`. An advisory lock on the call serialises identical calls on
/// every replica, so they share one request.
pub(super) async fn open_approval(
    pool: &PgPool,
    approval: &ApprovalRecord,
    now: i64,
) -> Result<(ApprovalRecord, bool), DbError> {
    let mut transaction = pool.begin().await?;
    let call = format!(
        "{}\n{}\n{}",
        approval.task_id, approval.tool, approval.arguments_hash
    );
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(call)
        .execute(&mut *transaction)
        .await?;
    let existing = find(
        &mut transaction,
        &approval.task_id,
        &approval.tool,
        &approval.arguments_hash,
        now,
    )
    .await?;
    if let Some(existing) = existing {
        transaction.commit().await?;
        return Ok((existing, false));
    }
    let inserted = insert(&mut transaction, approval).await?;
    transaction.commit().await?;
    Ok((approval.clone(), inserted))
}

/// Loads one approval with its effective status at `now`.
pub(super) async fn select_approval(
    pool: &PgPool,
    approval_id: &str,
    now: i64,
) -> Result<Option<ApprovalRecord>, DbError> {
    let mut connection = pool.acquire().await?;
    select_one(&mut connection, approval_id, now).await
}

/// Lists at most `limit` approvals, newest first, optionally only those
/// with effective status `status` at `now`.
pub(super) async fn select_approvals(
    pool: &PgPool,
    status: Option<ApprovalStatus>,
    limit: usize,
    now: i64,
) -> Result<Vec<ApprovalRecord>, DbError> {
    // Each filter tests the stored status first, so it can use the
    // `approvals_status` index.
    let filter = match status {
        None => "",
        Some(ApprovalStatus::Pending) => "WHERE status = 'pending' AND expires_at >= $1",
        Some(ApprovalStatus::Approved) => "WHERE status = 'approved' AND expires_at >= $1",
        Some(ApprovalStatus::Denied) => "WHERE status = 'denied'",
        Some(ApprovalStatus::Consumed) => "WHERE status = 'consumed'",
        Some(ApprovalStatus::Expired) => {
            "WHERE status = 'expired' \
             OR (status IN ('pending', 'approved') AND expires_at < $1)"
        }
    };
    let rows = sqlx::query(&format!(
        "{SELECT_EFFECTIVE} {filter} ORDER BY created_at DESC, row_id DESC LIMIT $2"
    ))
    .bind(now)
    .bind(sql_limit(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode).collect()
}

/// Finds the newest approval of one exact call that is pending, approved
/// or denied at `now`.
pub(super) async fn find_approval(
    pool: &PgPool,
    task_id: &str,
    tool: &str,
    arguments_hash: &str,
    now: i64,
) -> Result<Option<ApprovalRecord>, DbError> {
    let mut connection = pool.acquire().await?;
    find(&mut connection, task_id, tool, arguments_hash, now).await
}

/// Moves a pending approval that has not expired at `now` to approved or
/// denied, and announces the decision in the same transaction.
///
/// When the conditional `UPDATE` changes nothing, the follow-up read
/// distinguishes an unknown id from a conflict and finds the status that
/// won.
pub(super) async fn decide_approval(
    pool: &PgPool,
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
    let mut transaction = pool.begin().await?;
    let updated = sqlx::query(&format!(
        "UPDATE approvals \
         SET status = $2, decided_at = $3, decided_by = $4, decision_reason = $5 \
         WHERE approval_id = $1 AND status = 'pending' AND expires_at >= $3 \
         RETURNING {APPROVAL_COLUMNS}"
    ))
    .bind(approval_id)
    .bind(status.as_str())
    .bind(now)
    .bind(decided_by)
    .bind(reason)
    .fetch_optional(&mut *transaction)
    .await?;
    let outcome = match updated {
        Some(row) => {
            events::notify_decided(&mut transaction, approval_id).await?;
            ApprovalDecision::Decided(Box::new(decode(&row)?))
        }
        None => match select_one(&mut transaction, approval_id, now).await? {
            None => ApprovalDecision::NotFound,
            Some(current) => ApprovalDecision::Conflict {
                status: current.status,
                changed_at: changed_at(&current),
            },
        },
    };
    transaction.commit().await?;
    Ok(outcome)
}

/// Moves an approved approval that has not expired at `now` to consumed;
/// returns true when this call made the change.
pub(super) async fn consume_approval(
    pool: &PgPool,
    approval_id: &str,
    now: i64,
) -> Result<bool, DbError> {
    let changed = sqlx::query(
        "UPDATE approvals SET status = 'consumed', consumed_at = $2 \
         WHERE approval_id = $1 AND status = 'approved' AND expires_at >= $2",
    )
    .bind(approval_id)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

async fn insert(
    connection: &mut sqlx::PgConnection,
    approval: &ApprovalRecord,
) -> Result<bool, DbError> {
    let inserted = sqlx::query(&format!(
        "INSERT INTO approvals ({APPROVAL_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
         ON CONFLICT (approval_id) DO NOTHING"
    ))
    .bind(&approval.approval_id)
    .bind(&approval.task_id)
    .bind(&approval.trace_id)
    .bind(&approval.agent)
    .bind(&approval.user)
    .bind(&approval.tool)
    .bind(approval.arguments.to_string())
    .bind(&approval.arguments_hash)
    .bind(Value::from(approval.policy_ids.clone()).to_string())
    .bind(&approval.reason)
    .bind(approval.status.as_str())
    .bind(approval.created_at)
    .bind(approval.expires_at)
    .bind(approval.decided_at)
    .bind(&approval.decided_by)
    .bind(&approval.decision_reason)
    .bind(approval.consumed_at)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

async fn select_one(
    connection: &mut sqlx::PgConnection,
    approval_id: &str,
    now: i64,
) -> Result<Option<ApprovalRecord>, DbError> {
    let row = sqlx::query(&format!("{SELECT_EFFECTIVE} WHERE approval_id = $2"))
        .bind(now)
        .bind(approval_id)
        .fetch_optional(&mut *connection)
        .await?;
    row.as_ref().map(decode).transpose()
}

async fn find(
    connection: &mut sqlx::PgConnection,
    task_id: &str,
    tool: &str,
    arguments_hash: &str,
    now: i64,
) -> Result<Option<ApprovalRecord>, DbError> {
    let row = sqlx::query(&format!(
        "{SELECT_EFFECTIVE} \
         WHERE task_id = $2 AND tool = $3 AND arguments_hash = $4 \
            AND (status = 'denied' \
                OR (status IN ('pending', 'approved') AND expires_at >= $1)) \
         ORDER BY created_at DESC, row_id DESC LIMIT 1"
    ))
    .bind(now)
    .bind(task_id)
    .bind(tool)
    .bind(arguments_hash)
    .fetch_optional(&mut *connection)
    .await?;
    row.as_ref().map(decode).transpose()
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

fn decode(row: &PgRow) -> Result<ApprovalRecord, DbError> {
    let approval_id: String = row.try_get("approval_id")?;
    let corrupt = |message: String| DbError::Corrupt {
        row: format!("approval {approval_id:?}"),
        message,
    };
    let status = match row.try_get::<String, _>("status")?.as_str() {
        "pending" => ApprovalStatus::Pending,
        "approved" => ApprovalStatus::Approved,
        "denied" => ApprovalStatus::Denied,
        "consumed" => ApprovalStatus::Consumed,
        "expired" => ApprovalStatus::Expired,
        other => return Err(corrupt(format!("unknown status {other:?}"))),
    };
    let arguments: String = row.try_get("arguments")?;
    let arguments = serde_json::from_str(&arguments)
        .map_err(|error| corrupt(format!("arguments column is not JSON: {error}")))?;
    let policy_ids: String = row.try_get("policy_ids")?;
    let policy_ids = serde_json::from_str(&policy_ids).map_err(|error| {
        corrupt(format!(
            "policy_ids column is not a JSON array of strings: {error}"
        ))
    })?;
    Ok(ApprovalRecord {
        task_id: row.try_get("task_id")?,
        trace_id: row.try_get("trace_id")?,
        agent: row.try_get("agent")?,
        user: row.try_get("user_name")?,
        tool: row.try_get("tool")?,
        arguments,
        arguments_hash: row.try_get("arguments_hash")?,
        policy_ids,
        reason: row.try_get("reason")?,
        status,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        decided_at: row.try_get("decided_at")?,
        decided_by: row.try_get("decided_by")?,
        decision_reason: row.try_get("decision_reason")?,
        consumed_at: row.try_get("consumed_at")?,
        approval_id,
    })
}
