//! Audit records of a task's steps.
//!
//! Every step is one span of the task's trace. The task's root span id is
//! derived from the task id, so records written anywhere in the process
//! (or by another replica) attach to the same root without a lookup.
//! Records go to the store's group-commit queue and never wait for disk.

use serde_json::Value;
use warden_core::Decision;
use warden_identity::TaskClaims;
use warden_store::NewAuditRecord;

use crate::auth::now_micros;
use crate::state::AppState;

/// What a redacted argument value reads as in records.
pub const REDACTED: &str = "[redacted]";

/// Returns the root span id of a task: 16 hex digits.
pub fn root_span(task_id: &str) -> String {
    warden_core::sha256_hex(task_id.as_bytes())[..16].to_owned()
}

/// Returns a fresh random span id: 16 hex digits.
pub fn new_span() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// Fields of one step record.
pub struct Step<'a> {
    /// Record kind, e.g. `tool.decision`.
    pub kind: &'a str,
    /// The tool, resource or prompt concerned.
    pub target: Option<&'a str>,
    /// The decision, for decision records.
    pub decision: Option<Decision>,
    /// Deciding policy ids.
    pub policy_ids: &'a [String],
    /// Reason sentence.
    pub reason: Option<&'a str>,
    /// Free-form details; never secrets or tokens.
    pub detail: Value,
    /// Span id of this step; a new one when `None`.
    pub span_id: Option<String>,
    /// Parent span; the task's root span when `None`.
    pub parent_span_id: Option<String>,
}

/// Enqueues one record for the task of `claims` and returns its span id.
///
/// With `audit.redact_arguments`, an `arguments` value in the detail is
/// replaced by a marker before the record leaves this function; its hash,
/// recorded beside it as `arguments_sha256`, stays.
pub fn record(state: &AppState, claims: &TaskClaims, mut step: Step<'_>) -> String {
    if state.config.audit.redact_arguments
        && let Some(arguments) = step
            .detail
            .as_object_mut()
            .and_then(|detail| detail.get_mut("arguments"))
    {
        *arguments = Value::String(REDACTED.to_owned());
    }
    let span_id = step.span_id.unwrap_or_else(new_span);
    let parent = step
        .parent_span_id
        .unwrap_or_else(|| root_span(&claims.task_id));
    state.store.append(NewAuditRecord {
        time_us: now_micros(),
        trace_id: claims.trace_id.clone(),
        span_id: span_id.clone(),
        parent_span_id: Some(parent),
        task_id: claims.task_id.clone(),
        agent: crate::delegation::acting_agent(claims).to_owned(),
        user: claims.user.clone(),
        kind: step.kind.to_owned(),
        target: step.target.map(str::to_owned),
        decision: step.decision,
        policy_ids: step.policy_ids.to_vec(),
        reason: step.reason.map(str::to_owned),
        detail: step.detail,
    });
    span_id
}
