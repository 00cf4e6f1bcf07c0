//! Errors of the store and of audit chain verification.
//!
//! Each message names the store or record involved and states what to do
//! next. Backend errors are kept as boxed sources, so no backend type leaks
//! into the shared interface.

use std::path::PathBuf;

use crate::ApprovalStatus;

/// A backend error kept as the source of a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from a [`Store`](crate::Store) operation.
///
/// `store` fields describe the store for messages, for example
/// `SQLite store at /var/lib/warden/warden.db`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory for the database file could not be created.
    #[error(
        "cannot create directory {} for the SQLite store: {source}; create it or set [store] path to a writable location",
        path.display()
    )]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The file system error.
        source: std::io::Error,
    },

    /// The database file could not be opened or configured.
    #[error(
        "cannot open SQLite store at {}: {source}; set [store] path to a writable file",
        path.display()
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// The backend error.
        source: BoxError,
    },

    /// A read-only open found no database file.
    #[error(
        "no SQLite store at {}; check [store] path, or start the gateway once to create the store",
        path.display()
    )]
    NotFound {
        /// The database file.
        path: PathBuf,
    },

    /// A schema migration failed.
    #[error(
        "cannot migrate SQLite store at {} to schema version {version}: {source}; check that the file is a Warden store and that its disk is writable",
        path.display()
    )]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The schema version that failed to apply.
        version: i64,
        /// The backend error.
        source: BoxError,
    },

    /// The database was written by a newer Warden.
    #[error(
        "SQLite store at {} has schema version {found}, newer than version {supported} that this Warden supports; upgrade Warden or set [store] path to another file",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The schema version in the file.
        found: i64,
        /// The newest schema version this build supports.
        supported: i64,
    },

    /// A read-only open found a schema that has not been migrated yet.
    #[error(
        "SQLite store at {} has schema version {found} but this Warden reads version {expected}; start the gateway once to migrate the store",
        path.display()
    )]
    OutdatedSchema {
        /// The database file.
        path: PathBuf,
        /// The schema version in the file.
        found: i64,
        /// The schema version this build reads.
        expected: i64,
    },

    /// A query or statement failed.
    #[error(
        "{operation} failed on {store}: {source}; check that the store's disk is writable and not full, then retry"
    )]
    Query {
        /// Description of the store.
        store: String,
        /// The attempted operation, e.g. `insert task "t-1"`.
        operation: String,
        /// The backend error.
        source: BoxError,
    },

    /// A stored row could not be decoded.
    #[error(
        "{row} in {store} is invalid: {message}; run `warden audit verify` and restore the store from a backup"
    )]
    Corrupt {
        /// Description of the store.
        store: String,
        /// The row, e.g. `audit record 42` or `task "t-1"`.
        row: String,
        /// The defect found in the row.
        message: String,
    },

    /// A task with the same id exists.
    #[error("task {task_id} already exists; create the task with a new id")]
    TaskExists {
        /// The duplicate id.
        task_id: String,
    },

    /// The parent of a new task is unknown.
    #[error(
        "cannot create task {task_id}: parent task {parent_task_id} not found; delegate only from a live task"
    )]
    ParentNotFound {
        /// The new task.
        task_id: String,
        /// The unknown parent.
        parent_task_id: String,
    },

    /// The parent of a new task is revoked.
    #[error(
        "cannot create task {task_id}: parent task {parent_task_id} was revoked at {revoked_at} (unix seconds); start a new task with POST /v1/tasks"
    )]
    ParentRevoked {
        /// The new task.
        task_id: String,
        /// The revoked parent.
        parent_task_id: String,
        /// When the parent was revoked, in unix seconds.
        revoked_at: i64,
    },

    /// An approval with the same id exists.
    #[error("approval {approval_id} already exists; store the request with a new id")]
    ApprovalExists {
        /// The duplicate id.
        approval_id: String,
    },

    /// An approval request was rejected before it was stored.
    #[error("cannot store approval {approval_id}: {message}")]
    InvalidApproval {
        /// The rejected approval.
        approval_id: String,
        /// The defect and how to fix it.
        message: String,
    },

    /// A checkpoint was rejected before it was stored.
    #[error("cannot store the audit checkpoint of seq {seq}: {message}")]
    InvalidCheckpoint {
        /// The seq of the rejected checkpoint.
        seq: i64,
        /// The defect and how to fix it.
        message: String,
    },

    /// No approval has the given id.
    #[error("no approval {approval_id}; list pending ones with GET /v1/approvals")]
    ApprovalNotFound {
        /// The unknown id.
        approval_id: String,
    },

    /// A decision was attempted on an approval that is no longer pending.
    #[error("{}", conflict_message(.approval_id, .status, .changed_at))]
    ApprovalConflict {
        /// The approval.
        approval_id: String,
        /// Its effective status when the decision was attempted.
        status: ApprovalStatus,
        /// When it reached that status, in unix seconds: the decision time
        /// for approved and denied, the use time for consumed, and
        /// `expires_at` for expired.
        changed_at: Option<i64>,
    },

    /// A write was attempted on a store opened read-only.
    #[error("cannot {operation}: {store} is open read-only; run this against the gateway's store")]
    ReadOnly {
        /// Description of the store.
        store: String,
        /// The attempted operation.
        operation: String,
    },

    /// The audit writer is not running, so appended records are lost.
    #[error(
        "the audit writer of {store} has stopped, so new audit records are dropped; restart Warden"
    )]
    WriterStopped {
        /// Description of the store.
        store: String,
    },

    /// Audit batches failed to commit since the previous flush.
    #[error(
        "{records} audit records could not be committed to {store}: {message}; check free disk space and file permissions"
    )]
    AuditWrite {
        /// Description of the store.
        store: String,
        /// Number of records lost.
        records: u64,
        /// The last commit error.
        message: String,
    },

    /// The PostgreSQL URL is invalid, or no connection could be made at
    /// start.
    #[error(
        "cannot connect to {store}: {source}; check [store] url (or the variable that [store] url_env names) and that PostgreSQL runs and accepts connections"
    )]
    Connect {
        /// Description of the store, without the password.
        store: String,
        /// The backend error.
        source: BoxError,
    },

    /// A PostgreSQL schema migration failed.
    #[error(
        "cannot migrate {store} to schema version {version}: {source}; check that the database user may create tables in the database"
    )]
    MigrateDatabase {
        /// Description of the store, without the password.
        store: String,
        /// The schema version that failed to apply.
        version: i64,
        /// The backend error.
        source: BoxError,
    },

    /// The database has a schema that this build cannot use: written by a
    /// newer Warden, or, for a read-only open, not migrated yet.
    #[error("{store} has schema version {found}, but this Warden uses version {expected}; {fix}")]
    SchemaVersion {
        /// Description of the store, without the password.
        store: String,
        /// The schema version in the database.
        found: i64,
        /// The schema version this build uses.
        expected: i64,
        /// What to do about it.
        fix: &'static str,
    },

    /// The database could not be reached, so the operation did not run.
    #[error(
        "{operation} failed: {store} is unreachable: {source}; check that PostgreSQL runs and accepts connections, then retry"
    )]
    Unavailable {
        /// Description of the store, without the password.
        store: String,
        /// The attempted operation.
        operation: String,
        /// The backend error.
        source: BoxError,
    },

    /// A value contains text that the backend cannot store.
    #[error("cannot store {value} in {store}: {message}")]
    Unstorable {
        /// Description of the store.
        store: String,
        /// The rejected value, e.g. `task "t-1"`.
        value: String,
        /// The defect and how to fix it.
        message: String,
    },

    /// A blocking store operation did not run to completion.
    #[error("{operation} on {store} did not complete: {message}; retry the request")]
    Interrupted {
        /// Description of the store.
        store: String,
        /// The attempted operation.
        operation: String,
        /// The reason it stopped, e.g. a panic message or runtime shutdown.
        message: String,
    },
}

/// Builds the message of [`StoreError::ApprovalConflict`]: what the
/// approval's state is, since when, and what the caller can do instead.
fn conflict_message(
    approval_id: &str,
    status: &ApprovalStatus,
    changed_at: &Option<i64>,
) -> String {
    let since = changed_at
        .map(|at| format!(" at {at} (unix seconds)"))
        .unwrap_or_default();
    match status {
        ApprovalStatus::Pending => {
            format!("approval {approval_id} is still pending; decide it before the call can run")
        }
        ApprovalStatus::Approved | ApprovalStatus::Denied => {
            format!("approval {approval_id} was already {status}{since}; a decision is final")
        }
        ApprovalStatus::Consumed => format!(
            "approval {approval_id} was approved and its call already ran{since}; an approval covers one call, so the agent must repeat the call to request a new approval"
        ),
        ApprovalStatus::Expired => format!(
            "approval {approval_id} expired{since}; the agent must repeat the call to request a new approval"
        ),
    }
}

/// A break in the audit hash chain, found by
/// [`verify_chain`](crate::verify_chain).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A record does not follow its predecessor's seq, because a record
    /// before it was deleted, or records were inserted or moved.
    #[error(
        "audit record {seq} is out of sequence: expected seq {expected}; a record was deleted, inserted or moved here, so restore the store from a backup"
    )]
    Sequence {
        /// The seq found.
        seq: i64,
        /// The seq that should follow the previous record.
        expected: i64,
    },

    /// A record's `prev_hash` is not the hash of the record before it.
    #[error(
        "audit record {seq} does not link to the record before it: prev_hash is {found} but should be {expected}; a record before it was changed, removed or inserted, so restore the store from a backup"
    )]
    Link {
        /// The record whose link is broken.
        seq: i64,
        /// The hash of the previous record.
        expected: String,
        /// The `prev_hash` stored in the record.
        found: String,
    },

    /// A record's content does not match its stored hash.
    #[error(
        "audit record {seq} was altered: its content hashes to {computed} but the stored hash is {stored}; restore the store from a backup"
    )]
    Hash {
        /// The altered record.
        seq: i64,
        /// The hash stored in the record.
        stored: String,
        /// The hash of the record's content.
        computed: String,
    },
}

impl ChainError {
    /// Returns the seq of the first bad record.
    pub fn seq(&self) -> i64 {
        match self {
            ChainError::Sequence { seq, .. }
            | ChainError::Link { seq, .. }
            | ChainError::Hash { seq, .. } => *seq,
        }
    }
}
