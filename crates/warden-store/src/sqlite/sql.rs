//! Every SQL statement of the SQLite backend: schema, migrations, queries
//! and the conversion between rows and records.
//!
//! Functions here run on one connection and block. The caller chooses the
//! connection and the thread, and turns [`DbError`] into a
//! [`StoreError`] that names the store and the operation.

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde_json::Value;
use warden_core::Decision;

use crate::{
    AuditRecord, GENESIS_HASH, NewAuditRecord, StoreError, TaskRecord, TraceSummary, record_hash,
};

mod approval;
mod checkpoint;
mod counter;
mod pins;

pub(super) use self::approval::{
    ApprovalDecision, ApprovalInsert, consume_approval, decide_approval, find_approval,
    insert_approval, open_approval, select_approval, select_approvals,
};
pub(super) use self::checkpoint::{
    CheckpointInsert, insert_checkpoint, select_audit_head, select_checkpoints,
};
pub(super) use self::counter::{add_counters, select_counters};
pub(super) use self::pins::{save_tool_pin, select_tool_pins};

/// Schema migrations; entry `i` moves the schema from version `i` to
/// `i + 1`, and `PRAGMA user_version` stores the version reached. Stores
/// in the field ran the released entries, so a schema change is a new
/// entry and never an edit of an old one.
pub(super) const MIGRATIONS: &[&str] = &[
    // Version 1: tasks and the audit log. STRICT tables reject values of
    // the wrong type instead of converting them.
    "CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY NOT NULL,
        agent TEXT NOT NULL,
        user TEXT NOT NULL,
        intent TEXT NOT NULL,
        tools TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        parent_task_id TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER
    ) STRICT;
    CREATE INDEX tasks_parent ON tasks (parent_task_id)
        WHERE parent_task_id IS NOT NULL;
    CREATE INDEX tasks_trace ON tasks (trace_id);
    CREATE INDEX tasks_created ON tasks (created_at);

    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY NOT NULL,
        time_us INTEGER NOT NULL,
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        parent_span_id TEXT,
        task_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        user TEXT NOT NULL,
        kind TEXT NOT NULL,
        target TEXT,
        decision TEXT CHECK (decision IN ('allow', 'deny', 'hold')),
        policy_ids TEXT NOT NULL,
        reason TEXT,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    ) STRICT;
    CREATE INDEX audit_trace ON audit (trace_id, seq);
    CREATE INDEX audit_task ON audit (task_id, seq);
    CREATE INDEX audit_denials ON audit (trace_id) WHERE decision = 'deny';",
    // Version 2: human approvals of held tool calls. `status` is the last
    // stored transition; reads turn an overdue pending or approved row into
    // `expired` without writing it.
    "CREATE TABLE approvals (
        approval_id TEXT PRIMARY KEY NOT NULL,
        task_id TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        user TEXT NOT NULL,
        tool TEXT NOT NULL,
        arguments TEXT NOT NULL,
        arguments_hash TEXT NOT NULL,
        policy_ids TEXT NOT NULL,
        reason TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'approved', 'denied', 'consumed', 'expired')),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        decided_at INTEGER,
        decided_by TEXT,
        decision_reason TEXT,
        consumed_at INTEGER
    ) STRICT;
    CREATE INDEX approvals_call ON approvals (task_id, tool, arguments_hash);
    CREATE INDEX approvals_status ON approvals (status, created_at);
    CREATE INDEX approvals_created ON approvals (created_at);",
    // Version 3: signed checkpoints of the audit chain's head, and integer
    // counters per scope (a trace id) for per-task budgets.
    "CREATE TABLE audit_checkpoints (
        seq INTEGER PRIMARY KEY NOT NULL,
        hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        signature TEXT NOT NULL
    ) STRICT;

    CREATE TABLE counters (
        scope TEXT NOT NULL,
        name TEXT NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (scope, name)
    ) STRICT, WITHOUT ROWID;",
    // Version 4: pinned tool definitions, which an operator accepts.
    "CREATE TABLE tool_pins (
        tool TEXT PRIMARY KEY NOT NULL,
        hash TEXT,
        definition TEXT,
        accepted_at INTEGER,
        accepted_by TEXT,
        pending_hash TEXT,
        pending_definition TEXT,
        pending_reason TEXT,
        seen_at INTEGER NOT NULL
    ) STRICT;",
];

/// The schema version this build creates and reads.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const TASK_COLUMNS: &str = "task_id, agent, user, intent, tools, trace_id, parent_task_id, \
     created_at, expires_at, revoked_at";

const AUDIT_COLUMNS: &str = "seq, time_us, trace_id, span_id, parent_span_id, task_id, agent, \
     user, kind, target, decision, policy_ids, reason, detail, prev_hash, hash";

/// An error from one of the functions in this module.
#[derive(Debug)]
pub(super) enum DbError {
    /// SQLite returned an error.
    Sqlite(rusqlite::Error),
    /// A stored row does not decode into a record.
    Corrupt { row: String, message: String },
}

impl From<rusqlite::Error> for DbError {
    fn from(error: rusqlite::Error) -> Self {
        DbError::Sqlite(error)
    }
}

impl DbError {
    /// Converts into a [`StoreError`] for `operation` on the store described
    /// by `store`.
    pub(super) fn into_store_error(self, store: &str, operation: String) -> StoreError {
        match self {
            DbError::Sqlite(source) => StoreError::Query {
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

/// Outcome of an [`insert_task`] call that did not fail.
#[derive(Debug, PartialEq)]
pub(super) enum TaskInsert {
    Inserted,
    Exists,
    ParentNotFound,
    ParentRevoked { revoked_at: i64 },
}

/// Schema version of a database compared with [`SCHEMA_VERSION`].
#[derive(Debug, PartialEq)]
pub(super) enum SchemaState {
    Current,
    Older(i64),
    Newer(i64),
}

/// Applies the migrations that the database lacks, all in one transaction.
/// On failure returns the version that failed with its error; a database
/// from a newer build returns `Ok(SchemaState::Newer)` and is left alone.
pub(super) fn migrate(conn: &mut Connection) -> Result<SchemaState, (i64, rusqlite::Error)> {
    let transaction = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|error| (SCHEMA_VERSION, error))?;
    let current = user_version(&transaction).map_err(|error| (SCHEMA_VERSION, error))?;
    if current > SCHEMA_VERSION {
        return Ok(SchemaState::Newer(current));
    }

    let mut version = current;
    for migration in MIGRATIONS
        .iter()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        version += 1;
        transaction
            .execute_batch(migration)
            .and_then(|()| transaction.pragma_update(None, "user_version", version))
            .map_err(|error| (version, error))?;
    }
    transaction.commit().map_err(|error| (version, error))?;
    Ok(SchemaState::Current)
}

/// Compares the database's schema version with [`SCHEMA_VERSION`] without
/// changing anything.
pub(super) fn schema_state(conn: &Connection) -> rusqlite::Result<SchemaState> {
    let found = user_version(conn)?;
    Ok(match found.cmp(&SCHEMA_VERSION) {
        std::cmp::Ordering::Equal => SchemaState::Current,
        std::cmp::Ordering::Less => SchemaState::Older(found),
        std::cmp::Ordering::Greater => SchemaState::Newer(found),
    })
}

/// Runs a query that reads the schema, so it fails when the file is gone,
/// locked beyond the busy timeout or not a database.
pub(super) fn ping(conn: &Connection) -> Result<(), DbError> {
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| {
        row.get::<_, i64>(0)
    })?;
    Ok(())
}

/// Inserts `task` unless its id exists or its parent is unknown or
/// revoked. The checks and the insert share one transaction, so a
/// concurrent revocation of the parent cannot be missed.
pub(super) fn insert_task(conn: &mut Connection, task: &TaskRecord) -> Result<TaskInsert, DbError> {
    let transaction = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;

    let exists = transaction
        .query_row(
            "SELECT 1 FROM tasks WHERE task_id = ?1",
            [&task.task_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if exists {
        return Ok(TaskInsert::Exists);
    }

    if let Some(parent) = &task.parent_task_id {
        let parent_revoked_at: Option<Option<i64>> = transaction
            .query_row(
                "SELECT revoked_at FROM tasks WHERE task_id = ?1",
                [parent],
                |row| row.get(0),
            )
            .optional()?;
        match parent_revoked_at {
            None => return Ok(TaskInsert::ParentNotFound),
            Some(Some(revoked_at)) => return Ok(TaskInsert::ParentRevoked { revoked_at }),
            Some(None) => {}
        }
    }

    transaction.execute(
        &format!(
            "INSERT INTO tasks ({TASK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ),
        params![
            task.task_id,
            task.agent,
            task.user,
            task.intent,
            Value::from(task.tools.clone()).to_string(),
            task.trace_id,
            task.parent_task_id,
            task.created_at,
            task.expires_at,
            task.revoked_at,
        ],
    )?;
    transaction.commit()?;
    Ok(TaskInsert::Inserted)
}

/// Loads one task.
pub(super) fn select_task(conn: &Connection, task_id: &str) -> Result<Option<TaskRecord>, DbError> {
    let raw = conn
        .prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?1"
        ))?
        .query_row([task_id], RawTask::from_row)
        .optional()?;
    raw.map(RawTask::decode).transpose()
}

/// Lists at most `limit` tasks, newest first.
pub(super) fn select_tasks(conn: &Connection, limit: usize) -> Result<Vec<TaskRecord>, DbError> {
    let raws = conn
        .prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks ORDER BY created_at DESC, rowid DESC LIMIT ?1"
        ))?
        .query_map([sql_limit(limit)], RawTask::from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raws.into_iter().map(RawTask::decode).collect()
}

/// Sets `revoked_at = at` on the task and its descendants that are not
/// revoked yet, in one transaction; returns their ids, oldest task first.
pub(super) fn revoke_task(
    conn: &mut Connection,
    task_id: &str,
    at: i64,
) -> Result<Vec<String>, DbError> {
    let transaction = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // UNION (not UNION ALL) drops rows already found, so the walk ends even
    // if an edited database contains a parent cycle.
    let ids = transaction
        .prepare(
            "WITH RECURSIVE subtree (task_id) AS (
                SELECT task_id FROM tasks WHERE task_id = ?1
                UNION
                SELECT tasks.task_id FROM tasks
                    JOIN subtree ON tasks.parent_task_id = subtree.task_id
            )
            SELECT tasks.task_id FROM tasks
                JOIN subtree ON tasks.task_id = subtree.task_id
                WHERE tasks.revoked_at IS NULL
                ORDER BY tasks.created_at, tasks.rowid",
        )?
        .query_map([task_id], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    {
        let mut update = transaction.prepare(
            "UPDATE tasks SET revoked_at = ?1 WHERE task_id = ?2 AND revoked_at IS NULL",
        )?;
        for id in &ids {
            update.execute(params![at, id])?;
        }
    }
    transaction.commit()?;
    Ok(ids)
}

/// Position of a committed batch of audit records in the chain.
#[derive(Debug)]
pub(super) struct AppendedBatch {
    /// Seq of the last record written.
    pub(super) last_seq: i64,
    /// Hash of the record before the batch, or [`GENESIS_HASH`].
    pub(super) prev_hash: String,
    /// Hash of each record of the batch, in order; empty unless requested.
    pub(super) hashes: Vec<String>,
}

/// Appends `records` after the newest stored record, chaining their hashes,
/// in one transaction, and returns where they landed. The hash of each
/// record is kept only when `keep_hashes` is true.
///
/// The newest seq and hash are read inside the write transaction, so the
/// chain continues correctly after a restart or a failed batch.
pub(super) fn insert_audit_batch(
    conn: &mut Connection,
    records: &[NewAuditRecord],
    keep_hashes: bool,
) -> Result<AppendedBatch, DbError> {
    let transaction = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (mut seq, mut prev_hash) = transaction
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
        )
        .optional()?
        .unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
    let batch_prev_hash = keep_hashes.then(|| prev_hash.clone());
    let mut hashes = Vec::with_capacity(if keep_hashes { records.len() } else { 0 });
    {
        let mut insert = transaction.prepare_cached(&format!(
            "INSERT INTO audit ({AUDIT_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        ))?;
        for record in records {
            seq += 1;
            let hash = record_hash(&prev_hash, seq, record);
            insert.execute(params![
                seq,
                record.time_us,
                record.trace_id,
                record.span_id,
                record.parent_span_id,
                record.task_id,
                record.agent,
                record.user,
                record.kind,
                record.target,
                record.decision.map(Decision::as_str),
                Value::from(record.policy_ids.clone()).to_string(),
                record.reason,
                record.detail.to_string(),
                prev_hash,
                hash,
            ])?;
            if keep_hashes {
                hashes.push(hash.clone());
            }
            prev_hash = hash;
        }
    }
    transaction.commit()?;
    Ok(AppendedBatch {
        last_seq: seq,
        prev_hash: batch_prev_hash.unwrap_or_default(),
        hashes,
    })
}

/// Loads every audit record of one trace, in seq order.
pub(super) fn select_trace(conn: &Connection, trace_id: &str) -> Result<Vec<AuditRecord>, DbError> {
    let raws = conn
        .prepare_cached(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE trace_id = ?1 ORDER BY seq"
        ))?
        .query_map([trace_id], RawAudit::from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raws.into_iter().map(RawAudit::decode).collect()
}

/// Loads at most `limit` audit records after `after_seq`, in seq order.
pub(super) fn select_audit_range(
    conn: &Connection,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<AuditRecord>, DbError> {
    let raws = conn
        .prepare_cached(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?
        .query_map(params![after_seq, sql_limit(limit)], RawAudit::from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raws.into_iter().map(RawAudit::decode).collect()
}

/// Summarises the traces of the `limit` newest root tasks, newest first.
pub(super) fn select_traces(conn: &Connection, limit: usize) -> Result<Vec<TraceSummary>, DbError> {
    let summaries = conn
        .prepare_cached(
            "SELECT tasks.trace_id, tasks.task_id, tasks.agent, tasks.user, tasks.intent,
                tasks.created_at,
                (SELECT count(*) FROM audit WHERE audit.trace_id = tasks.trace_id),
                (SELECT count(*) FROM audit
                    WHERE audit.trace_id = tasks.trace_id AND audit.decision = 'deny')
            FROM tasks
            WHERE tasks.parent_task_id IS NULL
            ORDER BY tasks.created_at DESC, tasks.rowid DESC
            LIMIT ?1",
        )?
        .query_map([sql_limit(limit)], |row| {
            Ok(TraceSummary {
                trace_id: row.get(0)?,
                task_id: row.get(1)?,
                agent: row.get(2)?,
                user: row.get(3)?,
                intent: row.get(4)?,
                started_at: row.get(5)?,
                records: row.get(6)?,
                denials: row.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(summaries)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Converts a `usize` limit to SQLite's integer, saturating.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A `tasks` row before its JSON column is decoded.
struct RawTask {
    record: TaskRecord,
    tools: String,
}

impl RawTask {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawTask> {
        Ok(RawTask {
            record: TaskRecord {
                task_id: row.get(0)?,
                agent: row.get(1)?,
                user: row.get(2)?,
                intent: row.get(3)?,
                tools: Vec::new(),
                trace_id: row.get(5)?,
                parent_task_id: row.get(6)?,
                created_at: row.get(7)?,
                expires_at: row.get(8)?,
                revoked_at: row.get(9)?,
            },
            tools: row.get(4)?,
        })
    }

    fn decode(self) -> Result<TaskRecord, DbError> {
        let mut record = self.record;
        record.tools = serde_json::from_str(&self.tools).map_err(|error| DbError::Corrupt {
            row: format!("task {:?}", record.task_id),
            message: format!("tools column is not a JSON array of strings: {error}"),
        })?;
        Ok(record)
    }
}

/// An `audit` row before its JSON and decision columns are decoded.
struct RawAudit {
    seq: i64,
    record: NewAuditRecord,
    decision: Option<String>,
    policy_ids: String,
    detail: String,
    prev_hash: String,
    hash: String,
}

impl RawAudit {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawAudit> {
        Ok(RawAudit {
            seq: row.get(0)?,
            record: NewAuditRecord {
                time_us: row.get(1)?,
                trace_id: row.get(2)?,
                span_id: row.get(3)?,
                parent_span_id: row.get(4)?,
                task_id: row.get(5)?,
                agent: row.get(6)?,
                user: row.get(7)?,
                kind: row.get(8)?,
                target: row.get(9)?,
                decision: None,
                policy_ids: Vec::new(),
                reason: row.get(12)?,
                detail: Value::Null,
            },
            decision: row.get(10)?,
            policy_ids: row.get(11)?,
            detail: row.get(13)?,
            prev_hash: row.get(14)?,
            hash: row.get(15)?,
        })
    }

    fn decode(self) -> Result<AuditRecord, DbError> {
        let corrupt = |message: String| DbError::Corrupt {
            row: format!("audit record {}", self.seq),
            message,
        };
        let mut record = self.record;
        record.decision = match self.decision.as_deref() {
            None => None,
            Some("allow") => Some(Decision::Allow),
            Some("deny") => Some(Decision::Deny),
            Some("hold") => Some(Decision::Hold),
            Some(other) => return Err(corrupt(format!("unknown decision {other:?}"))),
        };
        record.policy_ids = serde_json::from_str(&self.policy_ids).map_err(|error| {
            corrupt(format!(
                "policy_ids column is not a JSON array of strings: {error}"
            ))
        })?;
        record.detail = serde_json::from_str(&self.detail)
            .map_err(|error| corrupt(format!("detail column is not JSON: {error}")))?;
        Ok(AuditRecord {
            seq: self.seq,
            record,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}
