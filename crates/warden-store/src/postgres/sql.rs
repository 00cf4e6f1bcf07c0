//! SQL statements of the PostgreSQL backend on tasks, the audit log,
//! checkpoints and counters, and the conversion between rows and records.
//!
//! Transactions run at PostgreSQL's default isolation, READ COMMITTED.
//! Where two transactions could otherwise both pass a check before either
//! writes, they first take a lock: the row of `audit_head` for audit
//! batches, and an advisory lock for revocations and delegated tasks.

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};
use warden_core::Decision;

use super::events;
use crate::{AuditRecord, Checkpoint, NewAuditRecord, StoreError, TaskRecord, TraceSummary};

/// Key of the advisory lock that revocations and inserts of delegated
/// tasks take, so a task cannot be delegated from a parent while the
/// parent's subtree is being revoked.
const TASK_TREE_LOCK: i64 = 0x5741_5244_454e_0002;

const TASK_COLUMNS: &str = "task_id, agent, user_name, intent, tools, trace_id, parent_task_id, \
     created_at, expires_at, revoked_at";

pub(super) const AUDIT_COLUMNS: &str = "seq, time_us, trace_id, span_id, parent_span_id, task_id, \
     agent, user_name, kind, target, decision, policy_ids, reason, detail, prev_hash, hash";

/// An error from one of the functions of the PostgreSQL backend.
#[derive(Debug)]
pub(super) enum DbError {
    /// PostgreSQL or the driver returned an error.
    Sql(sqlx::Error),
    /// A stored row does not decode into a record.
    Corrupt { row: String, message: String },
}

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        DbError::Sql(error)
    }
}

impl DbError {
    /// Returns true when the database could not be reached or the
    /// connection broke, as opposed to a statement that failed.
    pub(super) fn is_connection_error(&self) -> bool {
        match self {
            DbError::Sql(error) => is_connection_error(error),
            DbError::Corrupt { .. } => false,
        }
    }

    /// Converts into a [`StoreError`] for `operation` on the store
    /// described by `store`.
    pub(super) fn into_store_error(self, store: &str, operation: String) -> StoreError {
        match self {
            DbError::Sql(source) if is_connection_error(&source) => StoreError::Unavailable {
                store: store.to_owned(),
                operation,
                source: Box::new(source),
            },
            DbError::Sql(source) => StoreError::Query {
                store: store.to_owned(),
                operation,
                source: Box::new(source),
            },
            DbError::Corrupt { row, message } => StoreError::Corrupt {
                store: store.to_owned(),
                row,
                message,
            },
        }
    }
}

/// Returns true for errors that mean the database is unreachable: I/O and
/// TLS failures, pool timeouts, and the SQLSTATE classes of connection
/// exceptions (08) and of a server shutting down or starting (57P01 to
/// 57P03).
pub(super) fn is_connection_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// Outcome of an [`insert_task`] call that did not fail.
#[derive(Debug, PartialEq)]
pub(super) enum TaskInsert {
    Inserted,
    Exists,
    ParentNotFound,
    ParentRevoked { revoked_at: i64 },
}

/// Outcome of an [`insert_checkpoint`] call that did not fail.
#[derive(Debug, PartialEq)]
pub(super) enum CheckpointInsert {
    /// The checkpoint was stored.
    Inserted,
    /// A checkpoint of the same seq was stored before; nothing changed.
    Exists,
    /// No audit record has the checkpoint's seq.
    NoRecord,
    /// The audit record at the checkpoint's seq has another hash.
    HashMismatch { stored: String },
}

/// Returns the name of the first field whose text contains NUL, which
/// PostgreSQL text cannot hold.
pub(super) fn nul_field<'a>(fields: &[(&'a str, &str)]) -> Option<&'a str> {
    fields
        .iter()
        .find(|(_, text)| text.contains('\0'))
        .map(|(name, _)| *name)
}

/// Returns the name of the first text field of `task` that contains NUL.
pub(super) fn nul_field_of_task(task: &TaskRecord) -> Option<&'static str> {
    let tools = task.tools.iter().map(|tool| ("tools", tool.as_str()));
    let fields: Vec<(&'static str, &str)> = [
        ("task_id", task.task_id.as_str()),
        ("agent", &task.agent),
        ("user", &task.user),
        ("intent", &task.intent),
        ("trace_id", &task.trace_id),
        (
            "parent_task_id",
            task.parent_task_id.as_deref().unwrap_or(""),
        ),
    ]
    .into_iter()
    .chain(tools)
    .collect();
    nul_field(&fields)
}

/// Returns the name of the first text field of `approval` that contains
/// NUL. The arguments are stored as JSON text, which escapes NUL.
pub(super) fn nul_field_of_approval(approval: &crate::ApprovalRecord) -> Option<&'static str> {
    let policies = approval
        .policy_ids
        .iter()
        .map(|id| ("policy_ids", id.as_str()));
    let fields: Vec<(&'static str, &str)> = [
        ("approval_id", approval.approval_id.as_str()),
        ("task_id", &approval.task_id),
        ("trace_id", &approval.trace_id),
        ("agent", &approval.agent),
        ("user", &approval.user),
        ("tool", &approval.tool),
        ("reason", &approval.reason),
        ("decided_by", approval.decided_by.as_deref().unwrap_or("")),
        (
            "decision_reason",
            approval.decision_reason.as_deref().unwrap_or(""),
        ),
    ]
    .into_iter()
    .chain(policies)
    .collect();
    nul_field(&fields)
}

/// Runs a query that needs the database.
pub(super) async fn ping(pool: &PgPool) -> Result<(), DbError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// Inserts `task` unless its id exists or its parent is unknown or
/// revoked. A delegated task takes the task tree lock first, so a
/// concurrent revocation of its parent either includes it or commits
/// before the parent check.
pub(super) async fn insert_task(pool: &PgPool, task: &TaskRecord) -> Result<TaskInsert, DbError> {
    let mut transaction = pool.begin().await?;
    if let Some(parent) = &task.parent_task_id {
        lock_task_tree(&mut transaction).await?;
        let parent_revoked_at: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_at FROM tasks WHERE task_id = $1")
                .bind(parent)
                .fetch_optional(&mut *transaction)
                .await?;
        match parent_revoked_at {
            None => return Ok(TaskInsert::ParentNotFound),
            Some(Some(revoked_at)) => return Ok(TaskInsert::ParentRevoked { revoked_at }),
            Some(None) => {}
        }
    }
    let inserted = sqlx::query(&format!(
        "INSERT INTO tasks ({TASK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (task_id) DO NOTHING"
    ))
    .bind(&task.task_id)
    .bind(&task.agent)
    .bind(&task.user)
    .bind(&task.intent)
    .bind(Value::from(task.tools.clone()).to_string())
    .bind(&task.trace_id)
    .bind(&task.parent_task_id)
    .bind(task.created_at)
    .bind(task.expires_at)
    .bind(task.revoked_at)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    transaction.commit().await?;
    Ok(if inserted == 1 {
        TaskInsert::Inserted
    } else {
        TaskInsert::Exists
    })
}

/// Loads one task.
pub(super) async fn select_task(
    pool: &PgPool,
    task_id: &str,
) -> Result<Option<TaskRecord>, DbError> {
    let row = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1"
    ))
    .bind(task_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_task).transpose()
}

/// Lists at most `limit` tasks, newest first.
pub(super) async fn select_tasks(pool: &PgPool, limit: usize) -> Result<Vec<TaskRecord>, DbError> {
    let rows = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks ORDER BY created_at DESC, row_id DESC LIMIT $1"
    ))
    .bind(sql_limit(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_task).collect()
}

/// Sets `revoked_at = at` on the task and its descendants that are not
/// revoked yet, announces them, and returns their ids, oldest task first.
pub(super) async fn revoke_task(
    pool: &PgPool,
    task_id: &str,
    at: i64,
) -> Result<Vec<String>, DbError> {
    let mut transaction = pool.begin().await?;
    lock_task_tree(&mut transaction).await?;
    // UNION (not UNION ALL) drops rows already found, so the walk ends even
    // if an edited database contains a parent cycle.
    let rows = sqlx::query(
        "WITH RECURSIVE subtree (task_id) AS (
            SELECT task_id FROM tasks WHERE task_id = $1
            UNION
            SELECT tasks.task_id FROM tasks
                JOIN subtree ON tasks.parent_task_id = subtree.task_id
        )
        UPDATE tasks SET revoked_at = $2
            FROM subtree
            WHERE tasks.task_id = subtree.task_id AND tasks.revoked_at IS NULL
            RETURNING tasks.task_id, tasks.created_at, tasks.row_id",
    )
    .bind(task_id)
    .bind(at)
    .fetch_all(&mut *transaction)
    .await?;
    let mut revoked = rows
        .iter()
        .map(|row| {
            Ok((
                row.try_get::<i64, _>("created_at")?,
                row.try_get::<i64, _>("row_id")?,
                row.try_get::<String, _>("task_id")?,
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    revoked.sort();
    let ids: Vec<String> = revoked.into_iter().map(|(_, _, id)| id).collect();
    events::notify_revoked(&mut transaction, &ids, at).await?;
    transaction.commit().await?;
    Ok(ids)
}

async fn lock_task_tree(transaction: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(TASK_TREE_LOCK)
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

/// Loads every audit record of one trace, in seq order.
pub(super) async fn select_trace(
    pool: &PgPool,
    trace_id: &str,
) -> Result<Vec<AuditRecord>, DbError> {
    let rows = sqlx::query(&format!(
        "SELECT {AUDIT_COLUMNS} FROM audit WHERE trace_id = $1 ORDER BY seq"
    ))
    .bind(trace_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_audit).collect()
}

/// Loads at most `limit` audit records after `after_seq`, in seq order.
pub(super) async fn select_audit_range(
    pool: &PgPool,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<AuditRecord>, DbError> {
    let rows = sqlx::query(&format!(
        "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2"
    ))
    .bind(after_seq)
    .bind(sql_limit(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_audit).collect()
}

/// Summarises the traces of the `limit` newest root tasks, newest first.
pub(super) async fn select_traces(
    pool: &PgPool,
    limit: usize,
) -> Result<Vec<TraceSummary>, DbError> {
    let rows = sqlx::query(
        "SELECT tasks.trace_id, tasks.task_id, tasks.agent, tasks.user_name, tasks.intent,
            tasks.created_at,
            (SELECT count(*) FROM audit WHERE audit.trace_id = tasks.trace_id) AS records,
            (SELECT count(*) FROM audit
                WHERE audit.trace_id = tasks.trace_id AND audit.decision = 'deny') AS denials
        FROM tasks
        WHERE tasks.parent_task_id IS NULL
        ORDER BY tasks.created_at DESC, tasks.row_id DESC
        LIMIT $1",
    )
    .bind(sql_limit(limit))
    .fetch_all(pool)
    .await?;
    let summaries = rows
        .iter()
        .map(|row| {
            Ok(TraceSummary {
                trace_id: row.try_get("trace_id")?,
                task_id: row.try_get("task_id")?,
                agent: row.try_get("agent")?,
                user: row.try_get("user_name")?,
                intent: row.try_get("intent")?,
                started_at: row.try_get("created_at")?,
                records: row.try_get("records")?,
                denials: row.try_get("denials")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(summaries)
}

/// Returns the seq and hash of the newest audit record.
pub(super) async fn select_audit_head(pool: &PgPool) -> Result<Option<(i64, String)>, DbError> {
    let head = sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(pool)
        .await?;
    Ok(head)
}

/// Stores `checkpoint` unless its seq has one already, after checking in
/// the same transaction that the audit record at its seq has its hash.
pub(super) async fn insert_checkpoint(
    pool: &PgPool,
    checkpoint: &Checkpoint,
) -> Result<CheckpointInsert, DbError> {
    let mut transaction = pool.begin().await?;
    let record_hash: Option<String> = sqlx::query_scalar("SELECT hash FROM audit WHERE seq = $1")
        .bind(checkpoint.seq)
        .fetch_optional(&mut *transaction)
        .await?;
    match record_hash {
        None => return Ok(CheckpointInsert::NoRecord),
        Some(stored) if stored != checkpoint.hash => {
            return Ok(CheckpointInsert::HashMismatch { stored });
        }
        Some(_) => {}
    }
    let inserted = sqlx::query(
        "INSERT INTO audit_checkpoints (seq, hash, created_at, signature)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (seq) DO NOTHING",
    )
    .bind(checkpoint.seq)
    .bind(&checkpoint.hash)
    .bind(checkpoint.created_at)
    .bind(&checkpoint.signature)
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    transaction.commit().await?;
    Ok(if inserted == 1 {
        CheckpointInsert::Inserted
    } else {
        CheckpointInsert::Exists
    })
}

/// Loads every checkpoint, in seq order.
pub(super) async fn select_checkpoints(pool: &PgPool) -> Result<Vec<Checkpoint>, DbError> {
    let rows: Vec<(i64, String, i64, String)> = sqlx::query_as(
        "SELECT seq, hash, created_at, signature FROM audit_checkpoints ORDER BY seq",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(seq, hash, created_at, signature)| Checkpoint {
            seq,
            hash,
            created_at,
            signature,
        })
        .collect())
}

/// Adds each `(name, delta)` to the counter `name` of `scope` in one
/// transaction and returns every counter of `scope` afterwards. A sum
/// beyond the range of `i64` saturates at its bound.
///
/// Each upsert locks its counter's row until the commit, so concurrent
/// additions from any replica are serialised per counter. The deltas are
/// applied in name order (a stable sort keeps repeated names in their
/// order), so two transactions lock shared counters in the same order and
/// cannot deadlock.
pub(super) async fn add_counters(
    pool: &PgPool,
    scope: &str,
    deltas: &[(&str, i64)],
) -> Result<BTreeMap<String, i64>, DbError> {
    let mut ordered = deltas.to_vec();
    ordered.sort_by_key(|(name, _)| *name);
    let mut transaction = pool.begin().await?;
    for (name, delta) in ordered {
        sqlx::query(
            "INSERT INTO counters (scope, name, value) VALUES ($1, $2, $3)
             ON CONFLICT (scope, name) DO UPDATE SET value = LEAST(GREATEST(
                 counters.value::numeric + excluded.value::numeric,
                 -9223372036854775808), 9223372036854775807)::bigint",
        )
        .bind(scope)
        .bind(name)
        .bind(delta)
        .execute(&mut *transaction)
        .await?;
    }
    let counters = sqlx::query_as("SELECT name, value FROM counters WHERE scope = $1")
        .bind(scope)
        .fetch_all(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(counters.into_iter().collect())
}

/// Returns every counter of `scope`.
pub(super) async fn select_counters(
    pool: &PgPool,
    scope: &str,
) -> Result<BTreeMap<String, i64>, DbError> {
    let counters: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, value FROM counters WHERE scope = $1")
            .bind(scope)
            .fetch_all(pool)
            .await?;
    Ok(counters.into_iter().collect())
}

/// Stores `pin`, replacing the row of the same tool.
pub(super) async fn save_tool_pin(pool: &PgPool, pin: &crate::ToolPin) -> Result<(), DbError> {
    let text = |value: &Option<Value>| value.as_ref().map(Value::to_string);
    sqlx::query(
        "INSERT INTO tool_pins (tool, hash, definition, accepted_at, accepted_by,
             pending_hash, pending_definition, pending_reason, seen_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (tool) DO UPDATE SET
             hash = excluded.hash, definition = excluded.definition,
             accepted_at = excluded.accepted_at, accepted_by = excluded.accepted_by,
             pending_hash = excluded.pending_hash,
             pending_definition = excluded.pending_definition,
             pending_reason = excluded.pending_reason, seen_at = excluded.seen_at",
    )
    .bind(&pin.tool)
    .bind(&pin.hash)
    .bind(text(&pin.definition))
    .bind(pin.accepted_at)
    .bind(&pin.accepted_by)
    .bind(&pin.pending_hash)
    .bind(text(&pin.pending_definition))
    .bind(&pin.pending_reason)
    .bind(pin.seen_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Returns every tool pin, by tool name.
pub(super) async fn select_tool_pins(pool: &PgPool) -> Result<Vec<crate::ToolPin>, DbError> {
    let rows = sqlx::query(
        "SELECT tool, hash, definition, accepted_at, accepted_by, pending_hash,
                pending_definition, pending_reason, seen_at
         FROM tool_pins ORDER BY tool",
    )
    .fetch_all(pool)
    .await?;
    let mut pins = Vec::with_capacity(rows.len());
    for row in &rows {
        let tool: String = row.try_get("tool")?;
        let parse = |column: &str| -> Result<Option<Value>, DbError> {
            let text: Option<String> = row.try_get(column)?;
            text.map(|text| {
                serde_json::from_str(&text).map_err(|error| DbError::Corrupt {
                    row: format!("tool pin {tool}"),
                    message: format!("{column} is not JSON: {error}"),
                })
            })
            .transpose()
        };
        pins.push(crate::ToolPin {
            definition: parse("definition")?,
            pending_definition: parse("pending_definition")?,
            hash: row.try_get("hash")?,
            accepted_at: row.try_get("accepted_at")?,
            accepted_by: row.try_get("accepted_by")?,
            pending_hash: row.try_get("pending_hash")?,
            pending_reason: row.try_get("pending_reason")?,
            seen_at: row.try_get("seen_at")?,
            tool,
        });
    }
    Ok(pins)
}

/// Converts a `usize` limit to PostgreSQL's `bigint`, saturating.
pub(super) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn decode_task(row: &PgRow) -> Result<TaskRecord, DbError> {
    let task_id: String = row.try_get("task_id")?;
    let tools: String = row.try_get("tools")?;
    let tools = serde_json::from_str(&tools).map_err(|error| DbError::Corrupt {
        row: format!("task {task_id:?}"),
        message: format!("tools column is not a JSON array of strings: {error}"),
    })?;
    Ok(TaskRecord {
        agent: row.try_get("agent")?,
        user: row.try_get("user_name")?,
        intent: row.try_get("intent")?,
        tools,
        trace_id: row.try_get("trace_id")?,
        parent_task_id: row.try_get("parent_task_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        task_id,
    })
}

/// Decodes a row of the columns [`AUDIT_COLUMNS`].
pub(super) fn decode_audit(row: &PgRow) -> Result<AuditRecord, DbError> {
    let seq: i64 = row.try_get("seq")?;
    let corrupt = |message: String| DbError::Corrupt {
        row: format!("audit record {seq}"),
        message,
    };
    let decision = match row.try_get::<Option<String>, _>("decision")?.as_deref() {
        None => None,
        Some("allow") => Some(Decision::Allow),
        Some("deny") => Some(Decision::Deny),
        Some("hold") => Some(Decision::Hold),
        Some(other) => return Err(corrupt(format!("unknown decision {other:?}"))),
    };
    let policy_ids: String = row.try_get("policy_ids")?;
    let policy_ids = serde_json::from_str(&policy_ids).map_err(|error| {
        corrupt(format!(
            "policy_ids column is not a JSON array of strings: {error}"
        ))
    })?;
    let detail: String = row.try_get("detail")?;
    let detail = serde_json::from_str(&detail)
        .map_err(|error| corrupt(format!("detail column is not JSON: {error}")))?;
    Ok(AuditRecord {
        seq,
        record: NewAuditRecord {
            time_us: row.try_get("time_us")?,
            trace_id: row.try_get("trace_id")?,
            span_id: row.try_get("span_id")?,
            parent_span_id: row.try_get("parent_span_id")?,
            task_id: row.try_get("task_id")?,
            agent: row.try_get("agent")?,
            user: row.try_get("user_name")?,
            kind: row.try_get("kind")?,
            target: row.try_get("target")?,
            decision,
            policy_ids,
            reason: row.try_get("reason")?,
            detail,
        },
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}
