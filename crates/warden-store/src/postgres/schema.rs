//! The PostgreSQL schema and its migrations.
//!
//! The one row of `warden_schema` stores the schema version reached. Every
//! replica runs [`migrate`] at start: in one transaction, under an advisory
//! lock, so replicas that start together apply each migration once.

use sqlx::postgres::PgPool;

use super::sql::DbError;

/// Schema migrations; entry `i` moves the schema from version `i` to
/// `i + 1`. Databases in the field ran the released entries, so a schema
/// change is a new entry and never an edit of an old one.
///
/// Text columns hold JSON as text, not `jsonb`, because `jsonb` rewrites
/// numbers and key order, and an audit record must read back exactly as
/// it was hashed. The column for the user is `user_name`, because `user`
/// is a reserved word in PostgreSQL.
pub(super) const MIGRATIONS: &[&str] = &[
    // Version 1: tasks, the audit log with its head and committed batch
    // ids, approvals, checkpoints and counters. `row_id` keeps insertion
    // order for ties in listings.
    "CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        user_name TEXT NOT NULL,
        intent TEXT NOT NULL,
        tools TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        parent_task_id TEXT,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        revoked_at BIGINT,
        row_id BIGINT GENERATED ALWAYS AS IDENTITY
    );
    CREATE INDEX tasks_parent ON tasks (parent_task_id)
        WHERE parent_task_id IS NOT NULL;
    CREATE INDEX tasks_trace ON tasks (trace_id);
    CREATE INDEX tasks_created ON tasks (created_at, row_id);

    CREATE TABLE audit (
        seq BIGINT PRIMARY KEY,
        time_us BIGINT NOT NULL,
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        parent_span_id TEXT,
        task_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        user_name TEXT NOT NULL,
        kind TEXT NOT NULL,
        target TEXT,
        decision TEXT CHECK (decision IN ('allow', 'deny', 'hold')),
        policy_ids TEXT NOT NULL,
        reason TEXT,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_trace ON audit (trace_id, seq);
    CREATE INDEX audit_task ON audit (task_id, seq);
    CREATE INDEX audit_denials ON audit (trace_id) WHERE decision = 'deny';

    CREATE TABLE audit_head (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL
    );
    INSERT INTO audit_head (id, seq, hash)
        VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

    CREATE TABLE audit_batches (
        batch_id TEXT PRIMARY KEY,
        last_seq BIGINT NOT NULL,
        committed_at BIGINT NOT NULL
    );
    CREATE INDEX audit_batches_committed ON audit_batches (committed_at);

    CREATE TABLE approvals (
        approval_id TEXT PRIMARY KEY,
        task_id TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        user_name TEXT NOT NULL,
        tool TEXT NOT NULL,
        arguments TEXT NOT NULL,
        arguments_hash TEXT NOT NULL,
        policy_ids TEXT NOT NULL,
        reason TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'approved', 'denied', 'consumed', 'expired')),
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        decided_at BIGINT,
        decided_by TEXT,
        decision_reason TEXT,
        consumed_at BIGINT,
        row_id BIGINT GENERATED ALWAYS AS IDENTITY
    );
    CREATE INDEX approvals_call ON approvals (task_id, tool, arguments_hash);
    CREATE INDEX approvals_status ON approvals (status, created_at);
    CREATE INDEX approvals_created ON approvals (created_at, row_id);

    CREATE TABLE audit_checkpoints (
        seq BIGINT PRIMARY KEY,
        hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        signature TEXT NOT NULL
    );

    CREATE TABLE counters (
        scope TEXT NOT NULL,
        name TEXT NOT NULL,
        value BIGINT NOT NULL,
        PRIMARY KEY (scope, name)
    );",
    // Version 2: pinned tool definitions, which an operator accepts.
    "CREATE TABLE tool_pins (
        tool TEXT PRIMARY KEY,
        hash TEXT,
        definition TEXT,
        accepted_at BIGINT,
        accepted_by TEXT,
        pending_hash TEXT,
        pending_definition TEXT,
        pending_reason TEXT,
        seen_at BIGINT NOT NULL
    );",
];

/// The schema version this build creates and reads.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Key of the advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x5741_5244_454e_0001;

/// Schema version of a database compared with [`SCHEMA_VERSION`].
#[derive(Debug, PartialEq)]
pub(super) enum SchemaState {
    Current,
    Older(i64),
    Newer(i64),
}

/// Applies the migrations that the database lacks, all in one transaction;
/// on failure returns the version that failed with its error. A database
/// of a newer build returns `Ok(SchemaState::Newer)` and is left alone.
pub(super) async fn migrate(pool: &PgPool) -> Result<SchemaState, (i64, sqlx::Error)> {
    let at_start = |error| (SCHEMA_VERSION, error);
    let mut transaction = pool.begin().await.map_err(at_start)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *transaction)
        .await
        .map_err(at_start)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS warden_schema (
            id SMALLINT PRIMARY KEY CHECK (id = 1),
            version BIGINT NOT NULL
        )",
    )
    .execute(&mut *transaction)
    .await
    .map_err(at_start)?;
    let current: i64 = sqlx::query_scalar("SELECT version FROM warden_schema WHERE id = 1")
        .fetch_optional(&mut *transaction)
        .await
        .map_err(at_start)?
        .unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Ok(SchemaState::Newer(current));
    }

    let mut version = current;
    for migration in MIGRATIONS
        .iter()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        version += 1;
        sqlx::raw_sql(migration)
            .execute(&mut *transaction)
            .await
            .map_err(|error| (version, error))?;
    }
    sqlx::query(
        "INSERT INTO warden_schema (id, version) VALUES (1, $1)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version",
    )
    .bind(version)
    .execute(&mut *transaction)
    .await
    .map_err(|error| (version, error))?;
    transaction
        .commit()
        .await
        .map_err(|error| (version, error))?;
    Ok(if version == SCHEMA_VERSION {
        SchemaState::Current
    } else {
        SchemaState::Older(version)
    })
}

/// Returns the schema version of the database, 0 when it has none.
pub(super) async fn version(pool: &PgPool) -> Result<i64, DbError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('warden_schema') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(0);
    }
    let version = sqlx::query_scalar("SELECT version FROM warden_schema WHERE id = 1")
        .fetch_optional(pool)
        .await?;
    Ok(version.unwrap_or(0))
}
