//! Warden's durable state: tasks, revocations and the hash-chained audit log.
//!
//! The gateway and the CLI talk to storage only through the [`Store`] trait,
//! so a deployment can choose its backend without touching the callers.
//! [`SqliteStore`] is the embedded backend. The trait and the record types
//! mention no backend type, so another backend (PostgreSQL, for replicas
//! that share one store) implements the same interface.
//!
//! Audit records form a hash chain: every stored record carries the hash of
//! the record before it, and [`verify_chain`] recomputes the chain to find
//! the first record that was edited, deleted, inserted or moved.

mod chain;
mod error;
mod sqlite;

use serde::{Deserialize, Serialize};
use warden_core::Decision;

pub use chain::{GENESIS_HASH, record_hash, verify_chain};
pub use error::{BoxError, ChainError, StoreError};
pub use sqlite::{SqliteOptions, SqliteStore};

/// One task: a unit of work that an agent runs for a user, with its scope,
/// lifetime and trace.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskRecord {
    /// Unique task id.
    pub task_id: String,
    /// SPIFFE ID of the agent that runs the task.
    pub agent: String,
    /// The user (or upstream principal) the task acts for.
    pub user: String,
    /// The stated purpose of the task.
    pub intent: String,
    /// Qualified names (`{server}__{tool}`) of the tools in the task's scope.
    pub tools: Vec<String>,
    /// W3C trace id shared by the task and every task delegated from it.
    pub trace_id: String,
    /// The task this one was delegated from, if any.
    pub parent_task_id: Option<String>,
    /// Creation time, in unix seconds.
    pub created_at: i64,
    /// Expiry time, in unix seconds.
    pub expires_at: i64,
    /// Revocation time, in unix seconds, if the task was revoked.
    pub revoked_at: Option<i64>,
}

/// One audit record as the gateway submits it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NewAuditRecord {
    /// Time of the step, in unix microseconds.
    pub time_us: i64,
    /// W3C trace id of the task.
    pub trace_id: String,
    /// Span id of this step.
    pub span_id: String,
    /// Span id of the enclosing step, if any.
    pub parent_span_id: Option<String>,
    /// Id of the task the step belongs to.
    pub task_id: String,
    /// SPIFFE ID of the acting agent.
    pub agent: String,
    /// The user the task acts for.
    pub user: String,
    /// Record kind: `task.start`, `task.end`, `tool.decision`,
    /// `tool.result`, `resource.decision` and so on.
    pub kind: String,
    /// Target of the step, e.g. a qualified tool name.
    pub target: Option<String>,
    /// The policy decision, for decision records.
    pub decision: Option<Decision>,
    /// Ids of the policies that decided the step.
    pub policy_ids: Vec<String>,
    /// Human-readable reason for the decision or outcome.
    pub reason: Option<String>,
    /// Free-form JSON such as an argument hash, an outcome or a duration.
    /// The caller must keep secrets out of it.
    pub detail: serde_json::Value,
}

/// A stored audit record: the submitted record with its place in the chain.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// Position in the audit log, starting at 1 with no gaps.
    pub seq: i64,
    /// The record as submitted.
    #[serde(flatten)]
    pub record: NewAuditRecord,
    /// Hash of the record at `seq - 1`, or [`GENESIS_HASH`] for the first.
    pub prev_hash: String,
    /// Hash of this record, computed by [`record_hash`].
    pub hash: String,
}

/// Summary of one trace for listings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TraceSummary {
    /// W3C trace id.
    pub trace_id: String,
    /// Id of the root task, the one not delegated from another task.
    pub task_id: String,
    /// SPIFFE ID of the root task's agent.
    pub agent: String,
    /// The user the root task acts for.
    pub user: String,
    /// The root task's intent.
    pub intent: String,
    /// Creation time of the root task, in unix seconds.
    pub started_at: i64,
    /// Number of audit records in the trace, delegated tasks included.
    pub records: i64,
    /// Number of those records whose decision is `deny`.
    pub denials: i64,
}

/// Warden's durable state behind one interface.
///
/// Methods that take a time take it in unix seconds, so callers decide the
/// clock and tests can fix it.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new task. Fails when the id exists, or when the parent task
    /// is unknown or revoked, so no task can be delegated from a dead one.
    async fn insert_task(&self, task: &TaskRecord) -> Result<(), StoreError>;

    /// Loads one task, or `None` when the id is unknown.
    async fn task(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError>;

    /// Revokes the task and every task whose parent chain leads to it;
    /// returns the ids revoked now.
    ///
    /// Tasks already revoked keep their first revocation time and are not
    /// returned. An unknown id returns an empty list, and the caller tells
    /// "not found" from "already revoked" with [`Store::task`].
    async fn revoke_task(&self, task_id: &str, at: i64) -> Result<Vec<String>, StoreError>;

    /// Lists at most `limit` tasks, newest first.
    async fn tasks(&self, limit: usize) -> Result<Vec<TaskRecord>, StoreError>;

    /// Enqueues a record without waiting for disk; a background writer
    /// commits batches (group commit).
    ///
    /// When the queue is full the record is dropped, counted in
    /// [`Store::dropped_records`] and reported in a rate-limited warning.
    fn append(&self, record: NewAuditRecord);

    /// Waits until every record enqueued before the call is committed.
    ///
    /// Fails when a batch could not be committed since the previous flush,
    /// or when the writer has stopped.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Loads every audit record of one trace, in seq order.
    async fn trace(&self, trace_id: &str) -> Result<Vec<AuditRecord>, StoreError>;

    /// Lists summaries of at most `limit` traces, newest first.
    async fn traces(&self, limit: usize) -> Result<Vec<TraceSummary>, StoreError>;

    /// Loads at most `limit` audit records with seq greater than
    /// `after_seq`, in seq order, for chain verification in pages.
    async fn audit_range(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Checks that the store runs queries and that its audit writer runs.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Counts audit records lost since start: dropped because the writer
    /// queue was full, appended after the writer stopped, or in a batch
    /// whose commit failed after retries.
    fn dropped_records(&self) -> u64;

    /// Commits every queued record and stops the audit writer. Later
    /// appends are dropped and counted.
    async fn close(&self) -> Result<(), StoreError>;
}
