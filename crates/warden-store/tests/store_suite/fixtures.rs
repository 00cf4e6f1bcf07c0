//! Records the suite stores, built the same way on every backend.

use serde_json::{Value, json};
use warden_core::Decision;
use warden_core::json::canonical_hash;
use warden_store::{
    ApprovalRecord, ApprovalStatus, AuditRecord, NewAuditRecord, Store, TaskRecord,
};

/// A W3C trace id.
pub const TRACE_A: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// Another W3C trace id.
pub const TRACE_B: &str = "0af7651916cd43dd8448eb211c80319c";
/// The tool of the approvals in these tests.
pub const TOOL: &str = "shell__run_command";
/// Creation time of the approvals in these tests, in unix seconds.
pub const CREATED: i64 = 1_000;
/// Lifetime of the approvals in these tests, in seconds.
pub const LIFETIME: i64 = 300;
/// Expiry time of an approval created at [`CREATED`].
pub const EXPIRES: i64 = CREATED + LIFETIME;

/// Builds a live task.
pub fn task(task_id: &str, parent: Option<&str>, trace_id: &str, created_at: i64) -> TaskRecord {
    TaskRecord {
        task_id: task_id.into(),
        agent: "spiffe://acme.test/agent/support-bot".into(),
        user: "alice".into(),
        intent: format!("intent of {task_id}"),
        tools: vec!["fs__read_file".into(), "mail__send_email".into()],
        trace_id: trace_id.into(),
        parent_task_id: parent.map(str::to_owned),
        created_at,
        expires_at: created_at + 600,
        revoked_at: None,
    }
}

/// Builds an audit record of `task_id` whose detail contains a float, a
/// nested value and text that needs escaping.
pub fn record(
    trace_id: &str,
    task_id: &str,
    index: i64,
    decision: Option<Decision>,
) -> NewAuditRecord {
    NewAuditRecord {
        time_us: 1_700_000_000_000_000 + index,
        trace_id: trace_id.into(),
        span_id: format!("{index:016x}"),
        parent_span_id: (index > 0).then(|| format!("{:016x}", index - 1)),
        task_id: task_id.into(),
        agent: "spiffe://acme.test/agent/support-bot".into(),
        user: "alice".into(),
        kind: "tool.decision".into(),
        target: Some("fs__read_file".into()),
        decision,
        policy_ids: vec!["read-public".into(), "default".into()],
        reason: decision.map(|decision| format!("{decision} by policy")),
        detail: json!({
            "duration_ms": 0.1 + 0.2,
            "index": index,
            "nested": {"list": [1, 2.5, null, true]},
            "note": "grüße \u{1F600} \"quoted\" \\ back",
        }),
    }
}

/// Appends `count` allowed records of `task-1` in [`TRACE_A`] and flushes.
pub async fn append_and_flush(store: &dyn Store, count: i64) {
    for index in 0..count {
        store.append(record(TRACE_A, "task-1", index, Some(Decision::Allow)));
    }
    store.flush().await.expect("flush");
}

/// Loads the whole audit log.
pub async fn all_records(store: &dyn Store) -> Vec<AuditRecord> {
    store.audit_range(0, usize::MAX).await.expect("load audit")
}

/// Returns the arguments of most approvals here.
pub fn ls() -> Value {
    json!({"command": "ls"})
}

/// Builds a pending approval of `tool` with `arguments` in `task_id`,
/// created at `created_at` and valid for [`LIFETIME`] seconds.
pub fn pending(
    approval_id: &str,
    task_id: &str,
    tool: &str,
    arguments: Value,
    created_at: i64,
) -> ApprovalRecord {
    ApprovalRecord {
        approval_id: approval_id.into(),
        task_id: task_id.into(),
        trace_id: TRACE_A.into(),
        agent: "spiffe://acme.test/agent/support-bot".into(),
        user: "alice".into(),
        tool: tool.into(),
        arguments_hash: canonical_hash(&arguments),
        arguments,
        policy_ids: vec!["hold-shell".into(), "default".into()],
        reason: "shell commands need a human approval".into(),
        status: ApprovalStatus::Pending,
        created_at,
        expires_at: created_at + LIFETIME,
        decided_at: None,
        decided_by: None,
        decision_reason: None,
        consumed_at: None,
    }
}

/// Inserts the pending approval `a-1` of `ls` in `task-1`.
pub async fn insert_pending(store: &dyn Store) {
    store
        .insert_approval(&pending("a-1", "task-1", TOOL, ls(), CREATED))
        .await
        .expect("insert approval");
}

/// Returns the effective status of an approval that exists.
pub async fn status_of(store: &dyn Store, approval_id: &str, now: i64) -> ApprovalStatus {
    store
        .approval(approval_id, now)
        .await
        .expect("load approval")
        .expect("approval exists")
        .status
}

/// Returns the ids of `approvals`, in order.
pub fn ids(approvals: &[ApprovalRecord]) -> Vec<&str> {
    approvals
        .iter()
        .map(|approval| approval.approval_id.as_str())
        .collect()
}
