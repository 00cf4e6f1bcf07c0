//! Warden's durable state: tasks, revocations, human approvals and the
//! hash-chained audit log.
//!
//! The gateway and the CLI talk to storage only through the [`Store`] trait,
//! so a deployment can choose its backend without touching the callers.
//! [`SqliteStore`] is the embedded backend. The trait and the record types
//! mention no backend type, so another backend (PostgreSQL, for replicas
//! that share one store) implements the same interface.
//!
//! An approval binds one held tool call (task, qualified tool name and hash
//! of the canonical arguments) to a human decision. It lets that call
//! through at most once, and only before it expires.
//!
//! Audit records form a hash chain: every stored record carries the hash of
//! the record before it, and [`verify_chain`] recomputes the chain to find
//! the first record that was edited, deleted, inserted or moved.

mod chain;
mod check;
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

/// The lifecycle state of an [`ApprovalRecord`].
///
/// A request starts `Pending`. An approver moves it to `Approved` or
/// `Denied`, and the held call moves an approved one to `Consumed` when it
/// runs. A pending or approved request whose `expires_at` has passed reads
/// as `Expired`; the stored row keeps its old status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    /// Waiting for an approver.
    Pending,
    /// Approved and not used yet: the call may run once.
    Approved,
    /// Denied: the call stays refused.
    Denied,
    /// Approved and already used by its call.
    Consumed,
    /// Not decided or not used before `expires_at`.
    Expired,
}

impl ApprovalStatus {
    /// Returns the lowercase wire name (`pending`, `approved`, `denied`,
    /// `consumed`, `expired`).
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Consumed => "consumed",
            ApprovalStatus::Expired => "expired",
        }
    }
}

impl std::fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request for a human decision on one held tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// Unique approval id.
    pub approval_id: String,
    /// Id of the task that made the call.
    pub task_id: String,
    /// W3C trace id of the task.
    pub trace_id: String,
    /// SPIFFE ID of the agent that made the call.
    pub agent: String,
    /// The user the task acts for.
    pub user: String,
    /// Qualified name (`{server}__{tool}`) of the called tool.
    pub tool: String,
    /// The converted arguments that the policy decided on.
    pub arguments: serde_json::Value,
    /// Lowercase hex SHA-256 of the canonical JSON of `arguments`, as
    /// computed by `warden_core::json::canonical_hash`.
    pub arguments_hash: String,
    /// Ids of the policies that held the call.
    pub policy_ids: Vec<String>,
    /// The policies' reason for holding the call.
    pub reason: String,
    /// Lifecycle state; reads return the effective state, so an overdue
    /// pending or approved request is [`ApprovalStatus::Expired`].
    pub status: ApprovalStatus,
    /// Creation time, in unix seconds.
    pub created_at: i64,
    /// Last time, in unix seconds, at which the request can be decided and
    /// the approved call can run.
    pub expires_at: i64,
    /// Time of the approve or deny decision, in unix seconds.
    pub decided_at: Option<i64>,
    /// The approver who decided.
    pub decided_by: Option<String>,
    /// The approver's reason, if given.
    pub decision_reason: Option<String>,
    /// Time at which the approved call ran, in unix seconds.
    pub consumed_at: Option<i64>,
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

    /// Inserts a new approval request as given; the gateway inserts pending
    /// ones.
    ///
    /// Fails with [`StoreError::ApprovalExists`] when the id exists, and
    /// with [`StoreError::InvalidApproval`] when `arguments_hash` is not the
    /// canonical hash of `arguments`, so the arguments that an approver reads
    /// are the ones that the approval lets through.
    async fn insert_approval(&self, approval: &ApprovalRecord) -> Result<(), StoreError>;

    /// Loads one approval, or `None` when the id is unknown. A pending or
    /// approved one whose `expires_at` is before `now` reads as
    /// [`ApprovalStatus::Expired`].
    async fn approval(
        &self,
        approval_id: &str,
        now: i64,
    ) -> Result<Option<ApprovalRecord>, StoreError>;

    /// Lists at most `limit` approvals, newest first, optionally only those
    /// whose effective status at `now` is `status`.
    async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: usize,
        now: i64,
    ) -> Result<Vec<ApprovalRecord>, StoreError>;

    /// Returns the open approval request of this exact call (task, tool,
    /// argument hash), or stores `approval` as a new one when none is
    /// pending, approved or denied at `now`. The lookup and the insert are
    /// one transaction, so identical calls arriving together share one
    /// request; the flag is true when `approval` was stored.
    async fn open_approval(
        &self,
        approval: &ApprovalRecord,
        now: i64,
    ) -> Result<(ApprovalRecord, bool), StoreError>;

    /// Finds the newest approval for this exact call (task, qualified tool
    /// name and arguments hash) whose effective status at `now` is pending,
    /// approved or denied.
    ///
    /// Consumed and expired approvals are ignored. A denial never expires,
    /// so a denied call stays denied for the rest of its task.
    async fn find_approval(
        &self,
        task_id: &str,
        tool: &str,
        arguments_hash: &str,
        now: i64,
    ) -> Result<Option<ApprovalRecord>, StoreError>;

    /// Moves a pending approval that has not expired at `now` to approved
    /// (`approve` true) or denied, in one atomic update, and returns the
    /// updated record.
    ///
    /// Of concurrent decisions on one approval exactly one succeeds. The
    /// others fail with [`StoreError::ApprovalConflict`], which carries the
    /// effective status; an unknown id fails with
    /// [`StoreError::ApprovalNotFound`].
    async fn decide_approval(
        &self,
        approval_id: &str,
        approve: bool,
        decided_by: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<ApprovalRecord, StoreError>;

    /// Moves an approved approval that has not expired at `now` to
    /// consumed, in one atomic update.
    ///
    /// Returns true exactly once per approval. Returns false when the
    /// approval is pending, denied, expired, already consumed or unknown.
    async fn consume_approval(&self, approval_id: &str, now: i64) -> Result<bool, StoreError>;

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
