//! Warden's durable state: tasks, revocations, human approvals and the
//! hash-chained audit log.
//!
//! The gateway and the CLI talk to storage only through the [`Store`] trait,
//! so a deployment can choose its backend without touching the callers.
//! [`SqliteStore`] is the embedded backend, for one gateway process.
//! [`PostgresStore`] lets several gateway replicas share one state: it
//! publishes revocations and approval decisions to every replica as
//! [`StoreEvent`]s, and its audit writers append to one hash chain.
//!
//! An approval binds one held tool call (task, qualified tool name and hash
//! of the canonical arguments) to a human decision. It lets that call
//! through at most once, and only before it expires.
//!
//! Audit records form a hash chain: every stored record carries the hash of
//! the record before it, and [`verify_chain`] recomputes the chain to find
//! the first record that was edited, deleted, inserted or moved. Signed
//! [`Checkpoint`]s of the chain's head also expose a deleted tail and a
//! chain rebuilt after an edit, which the hash chain alone cannot show.

mod chain;
mod check;
mod error;
mod lost;
mod postgres;
mod sqlite;

use serde::{Deserialize, Serialize};
use warden_core::Decision;

pub use chain::{GENESIS_HASH, first_bad_seq, record_hash, verify_chain};
pub use error::{BoxError, ChainError, StoreError};
pub use postgres::{PostgresOptions, PostgresStore, redact_url};
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

/// A signed statement of the audit chain's head at one moment.
///
/// Warden signs `{"seq", "hash", "created_at"}` with its signing key as a
/// compact JWS. A checkpoint fixes every record up to `seq`: removing the
/// newest records, or rebuilding the chain after an edit, no longer matches
/// a checkpoint that an attacker cannot re-sign.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    /// Seq of the newest record covered.
    pub seq: i64,
    /// Hash of the record at `seq`.
    pub hash: String,
    /// Time of signing, in unix seconds.
    pub created_at: i64,
    /// Compact JWS (ES256) over the canonical JSON of `seq`, `hash` and
    /// `created_at`, with the signing key's id in the `kid` header.
    pub signature: String,
}

/// The pinned definition of one upstream tool.
///
/// `hash` and `definition` are what an operator accepted (or what Warden
/// saw first, which it accepts on first use unless it hides text); the
/// `pending_*` fields hold a definition the server offers now that nobody
/// has accepted, which keeps the tool blocked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ToolPin {
    /// Qualified tool name, `{server}__{tool}`.
    pub tool: String,
    /// SHA-256 of the accepted definition; `None` when none is accepted.
    pub hash: Option<String>,
    /// The accepted definition.
    pub definition: Option<serde_json::Value>,
    /// When the definition was accepted, in unix seconds.
    pub accepted_at: Option<i64>,
    /// Name of the approver (`first use` for a definition pinned on first sight).
    pub accepted_by: Option<String>,
    /// SHA-256 of the definition waiting for review.
    pub pending_hash: Option<String>,
    /// The definition waiting for review.
    pub pending_definition: Option<serde_json::Value>,
    /// Reason the pending definition is blocked.
    pub pending_reason: Option<String>,
    /// When Warden last compared the tool with its pin, in unix seconds.
    pub seen_at: i64,
}

/// Receives audit records after their batch is committed, with their seq
/// and hashes, e.g. to export them as spans.
///
/// It is called on the audit writer's thread, so it must return at once:
/// hand the records to a queue and never block or wait for I/O.
pub trait AuditObserver: Send + Sync + 'static {
    /// Called once per committed batch, in seq order.
    fn committed(&self, records: &[AuditRecord]);

    /// Called after a checkpoint is stored.
    fn checkpointed(&self, _checkpoint: &Checkpoint) {}
}

/// A change made through any store that shares the backend, published so
/// that caches in every process can follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// These tasks were revoked at `revoked_at` (unix seconds).
    TaskRevoked {
        /// Ids of the revoked tasks.
        task_ids: Vec<String>,
        /// The revocation time, in unix seconds.
        revoked_at: i64,
    },
    /// An approval was approved or denied.
    ApprovalDecided {
        /// Id of the decided approval.
        approval_id: String,
    },
    /// Events may have been missed, for example while the connection to
    /// the database was lost: drop every cached state and read it again.
    Resync,
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

    /// Returns the seq and hash of the newest committed audit record, or
    /// `None` when the log is empty.
    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError>;

    /// Stores a signed checkpoint. Storing a checkpoint of a seq that has
    /// one already does nothing.
    ///
    /// Fails with [`StoreError::InvalidCheckpoint`] when no audit record
    /// has the checkpoint's seq or that record has another hash. The store
    /// does not check the signature.
    async fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    /// Loads every checkpoint, in seq order.
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError>;

    /// Adds each `(name, delta)` to the counter `name` of `scope` in one
    /// transaction (a counter starts at 0) and returns every counter of
    /// `scope` after the addition. Concurrent additions are never lost, and
    /// a sum beyond the range of `i64` saturates at its bound.
    ///
    /// Scopes are trace ids, so a task and the tasks delegated from it
    /// share their counters (model calls, tokens).
    async fn add_counters(
        &self,
        scope: &str,
        deltas: &[(&str, i64)],
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError>;

    /// Returns every counter of `scope`; empty when none was added.
    async fn counters(
        &self,
        scope: &str,
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError>;

    /// Subscribes to the changes made through every store that shares this
    /// one's backend, this store included.
    ///
    /// Returns `None` when the backend publishes no events because one
    /// process owns it (SQLite), since that process makes every change
    /// itself. A subscriber that lags behind receives `RecvError::Lagged`
    /// and must treat it as [`StoreEvent::Resync`].
    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        None
    }

    /// Loads every tool pin. A backend without pins returns none, so every
    /// start pins what it sees, as on first use.
    async fn tool_pins(&self) -> Result<Vec<ToolPin>, StoreError> {
        Ok(Vec::new())
    }

    /// Stores a tool pin, replacing the pin of the same tool.
    async fn save_tool_pin(&self, _pin: &ToolPin) -> Result<(), StoreError> {
        Ok(())
    }

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
