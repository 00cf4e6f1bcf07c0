//! Human approval of held calls.
//!
//! A policy marks a step as needing a person with a `forbid` annotated
//! `@hold`. Warden then records an approval request bound to the exact call:
//! the task, the qualified tool name and the SHA-256 of the canonical
//! arguments that were decided on. The agent's request waits up to
//! `approvals.wait_seconds` for a decision. Approved in time, the call runs;
//! otherwise the agent gets the hold refusal with the approval id, and the
//! same call retried after approval runs. An approval lets its call through
//! once and expires after `approvals.ttl_seconds`; a denial is final for
//! that call.
//!
//! Approvers use the admin endpoints `GET /v1/approvals`,
//! `GET /v1/approvals/{id}` and `POST /v1/approvals/{id}/approve|deny`. A
//! configured webhook receives each new request, signed with HMAC-SHA256.

mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};
use warden_identity::TaskClaims;
use warden_policy::Outcome as PolicyOutcome;
use warden_store::{ApprovalRecord, ApprovalStatus, StoreError, StoreEvent};

pub use webhook::Webhook;

use crate::audit;
use crate::auth::{ApiError, authenticate_admin, format_time, now_unix};
use crate::state::AppState;

/// Maximum time between two checks of an approval while a call waits, so a
/// decision made on another replica is seen without a notification.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Resolution of a held call.
pub enum Resolution {
    /// An approval for this exact call was used; run the call.
    Proceed {
        /// The approval that was consumed.
        approval_id: String,
    },
    /// The call stays refused.
    Refuse {
        /// The approval request, when one exists.
        approval_id: String,
        /// Its status: pending, denied or expired.
        status: ApprovalStatus,
    },
}

/// Wake-ups for calls waiting on a decision, plus the webhook.
///
/// A decision made through this process wakes its waiters at once. With a
/// store shared by replicas, [`Approvals::follow`] wakes them on decisions
/// that other replicas announce; [`POLL_INTERVAL`] bounds the wait when an
/// announcement is lost.
#[derive(Default)]
pub struct Approvals {
    waiters: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    webhook: Option<Webhook>,
}

impl Approvals {
    /// Creates the registry with an optional webhook.
    pub fn new(webhook: Option<Webhook>) -> Approvals {
        Approvals {
            waiters: Arc::default(),
            webhook,
        }
    }

    /// Wakes the waiters of every approval decision that `events`
    /// announces, and every waiter when events were missed, on a task of
    /// the current Tokio runtime. The task ends when the registry is
    /// dropped or the store closes its events.
    pub fn follow(&self, mut events: broadcast::Receiver<StoreEvent>) {
        let waiters = Arc::downgrade(&self.waiters);
        tokio::spawn(async move {
            loop {
                let event = events.recv().await;
                let Some(waiters) = waiters.upgrade() else {
                    return;
                };
                let waiters = waiters.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Ok(StoreEvent::ApprovalDecided { approval_id }) => {
                        if let Some(waiter) = waiters.get(&approval_id) {
                            waiter.notify_waiters();
                        }
                    }
                    Ok(StoreEvent::TaskRevoked { .. }) => {}
                    Ok(StoreEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        waiters.values().for_each(|waiter| waiter.notify_waiters());
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    fn waiter(&self, approval_id: &str) -> Arc<Notify> {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(approval_id.to_owned())
            .or_default()
            .clone()
    }

    fn wake(&self, approval_id: &str) {
        let waiter = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(approval_id);
        if let Some(waiter) = waiter {
            waiter.notify_waiters();
        }
    }

    fn forget(&self, approval_id: &str) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if waiters
            .get(approval_id)
            .is_some_and(|waiter| Arc::strong_count(waiter) == 1)
        {
            waiters.remove(approval_id);
        }
    }
}

/// Resolves a held call: uses an existing approval of the exact call, or
/// records a new request and waits for a decision.
pub async fn resolve(
    state: &AppState,
    claims: &TaskClaims,
    tool: &str,
    arguments: &Value,
    outcome: &PolicyOutcome,
    decision_span: &str,
) -> Result<Resolution, StoreError> {
    let step = Held {
        state,
        claims,
        tool,
        decision_span,
    };
    let store = &state.store;
    let hash = warden_core::json::canonical_hash(arguments);
    // Two rounds at most: an approved request that a concurrent identical
    // call used first is gone, and the second round opens a new one.
    for _ in 0..2 {
        let now = now_unix();
        let record = open_request(&step, arguments, &hash, outcome, now).await?;
        match record.status {
            ApprovalStatus::Approved => {
                if store.consume_approval(&record.approval_id, now).await? {
                    return Ok(used(&step, &record.approval_id));
                }
            }
            ApprovalStatus::Denied => {
                return Ok(Resolution::Refuse {
                    approval_id: record.approval_id,
                    status: ApprovalStatus::Denied,
                });
            }
            _ => match wait(&step, &record.approval_id).await? {
                // An identical call used the approval first: open a fresh
                // request for this one instead of naming the used one.
                Resolution::Refuse {
                    status: ApprovalStatus::Consumed,
                    ..
                } => break,
                resolution => return Ok(resolution),
            },
        }
    }
    let record = open_request(&step, arguments, &hash, outcome, now_unix()).await?;
    Ok(Resolution::Refuse {
        approval_id: record.approval_id,
        status: record.status,
    })
}

/// Returns the open request of this exact call, opening and announcing a
/// new one when there is none.
async fn open_request(
    step: &Held<'_>,
    arguments: &Value,
    hash: &str,
    outcome: &PolicyOutcome,
    now: i64,
) -> Result<ApprovalRecord, StoreError> {
    let candidate = new_request(step, arguments, hash, outcome, now);
    let (record, created) = step.state.store.open_approval(&candidate, now).await?;
    if created {
        announce(step, &record, outcome);
    }
    Ok(record)
}

/// The held call being resolved.
struct Held<'a> {
    state: &'a AppState,
    claims: &'a TaskClaims,
    tool: &'a str,
    decision_span: &'a str,
}

fn new_request(
    step: &Held<'_>,
    arguments: &Value,
    hash: &str,
    outcome: &PolicyOutcome,
    now: i64,
) -> ApprovalRecord {
    let claims = step.claims;
    ApprovalRecord {
        approval_id: uuid::Uuid::new_v4().to_string(),
        task_id: claims.task_id.clone(),
        trace_id: claims.trace_id.clone(),
        agent: crate::delegation::acting_agent(claims).to_owned(),
        user: claims.user.clone(),
        tool: step.tool.to_owned(),
        arguments: arguments.clone(),
        arguments_hash: hash.to_owned(),
        policy_ids: outcome.policy_ids.clone(),
        reason: outcome.reason.clone(),
        status: ApprovalStatus::Pending,
        created_at: now,
        expires_at: now + step.state.config.approvals.ttl_seconds as i64,
        decided_at: None,
        decided_by: None,
        decision_reason: None,
        consumed_at: None,
    }
}

/// Records a newly stored request in the trace and sends it to the webhook.
fn announce(step: &Held<'_>, record: &ApprovalRecord, outcome: &PolicyOutcome) {
    let Held {
        state,
        claims,
        tool,
        decision_span,
    } = *step;
    audit::record(
        state,
        claims,
        audit::Step {
            kind: "approval.requested",
            target: Some(tool),
            decision: Some(warden_core::Decision::Hold),
            policy_ids: &outcome.policy_ids,
            reason: Some(&outcome.reason),
            detail: json!({
                "approval_id": record.approval_id,
                "arguments_sha256": record.arguments_hash,
                "expires_at": format_time(record.expires_at),
            }),
            span_id: None,
            parent_span_id: Some(decision_span.to_owned()),
        },
    );
    tracing::info!(
        task.id = %claims.task_id,
        tool.name = %tool,
        approval.id = %record.approval_id,
        "approval requested"
    );
    if let Some(webhook) = &state.approvals.webhook {
        webhook.send(approval_json(record, now_unix()));
    }
}

async fn wait(step: &Held<'_>, approval_id: &str) -> Result<Resolution, StoreError> {
    let state = step.state;
    let deadline = Instant::now() + Duration::from_secs(state.config.approvals.wait_seconds);
    let waiter = state.approvals.waiter(approval_id);
    let resolution = loop {
        let notified = waiter.notified();
        let now = now_unix();
        let status = state
            .store
            .approval(approval_id, now)
            .await?
            .map(|record| record.status)
            .unwrap_or(ApprovalStatus::Expired);
        match status {
            ApprovalStatus::Approved => {
                if state.store.consume_approval(approval_id, now).await? {
                    break used(step, approval_id);
                }
                // Another call of the same arguments used it first.
                break Resolution::Refuse {
                    approval_id: approval_id.to_owned(),
                    status: ApprovalStatus::Consumed,
                };
            }
            ApprovalStatus::Pending => {}
            other => {
                break Resolution::Refuse {
                    approval_id: approval_id.to_owned(),
                    status: other,
                };
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break Resolution::Refuse {
                approval_id: approval_id.to_owned(),
                status: ApprovalStatus::Pending,
            };
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(remaining.min(POLL_INTERVAL)) => {}
        }
    };
    drop(waiter);
    state.approvals.forget(approval_id);
    Ok(resolution)
}

fn used(step: &Held<'_>, approval_id: &str) -> Resolution {
    audit::record(
        step.state,
        step.claims,
        audit::Step {
            kind: "approval.used",
            target: Some(step.tool),
            decision: Some(warden_core::Decision::Allow),
            policy_ids: &[],
            reason: Some("a person approved this exact call"),
            detail: json!({ "approval_id": approval_id }),
            span_id: None,
            parent_span_id: Some(step.decision_span.to_owned()),
        },
    );
    Resolution::Proceed {
        approval_id: approval_id.to_owned(),
    }
}

/// Builds the public JSON of an approval.
pub fn approval_json(record: &ApprovalRecord, now: i64) -> Value {
    json!({
        "approval_id": record.approval_id,
        "status": record.status.as_str(),
        "task_id": record.task_id,
        "trace_id": record.trace_id,
        "agent": record.agent,
        "user": record.user,
        "tool": record.tool,
        "arguments": record.arguments,
        "arguments_sha256": record.arguments_hash,
        "policy_ids": record.policy_ids,
        "reason": record.reason,
        "created_at": format_time(record.created_at),
        "expires_at": format_time(record.expires_at),
        "expires_in_seconds": (record.expires_at - now).max(0),
        "decided_at": record.decided_at.map(format_time),
        "decided_by": record.decided_by,
        "decision_reason": record.decision_reason,
        "consumed_at": record.consumed_at.map(format_time),
    })
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/approvals`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    authenticate_admin(&state, &headers)?;
    let status = match query.status.as_deref() {
        None | Some("all") => None,
        Some(text) => Some(parse_status(text)?),
    };
    let now = now_unix();
    let records = state
        .store
        .approvals(status, query.limit.unwrap_or(100).min(1000), now)
        .await
        .map_err(store_error)?;
    let approvals: Vec<Value> = records.iter().map(|r| approval_json(r, now)).collect();
    Ok(Json(json!({ "approvals": approvals })))
}

/// `GET /v1/approvals/{id}`.
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(approval_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authenticate_admin(&state, &headers)?;
    let now = now_unix();
    let record = state
        .store
        .approval(&approval_id, now)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(&approval_id))?;
    Ok(Json(approval_json(&record, now)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    approver: Option<String>,
    reason: Option<String>,
}

/// `POST /v1/approvals/{id}/approve`.
pub async fn approve(
    state: State<Arc<AppState>>,
    path: Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    decide(state, path, headers, body, true).await
}

/// `POST /v1/approvals/{id}/deny`.
pub async fn deny(
    state: State<Arc<AppState>>,
    path: Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    decide(state, path, headers, body, false).await
}

async fn decide(
    State(state): State<Arc<AppState>>,
    Path(approval_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
    approve: bool,
) -> Result<Response, ApiError> {
    authenticate_admin(&state, &headers)?;
    let body: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        let value = warden_core::json::parse_strict(&body).map_err(|error| {
            ApiError::BadRequest(format!("request body is not valid JSON: {error}"))
        })?;
        serde_json::from_value(value).map_err(|error| {
            ApiError::BadRequest(format!(
                "invalid decision: {error}; send {{\"approver\": \"name\", \"reason\": \"why\"}} or no body"
            ))
        })?
    };
    let approver = body.approver.unwrap_or_else(|| "admin".to_owned());
    if approver.trim().is_empty() || approver.len() > 256 {
        return Err(ApiError::BadRequest(
            "approver must be 1 to 256 characters".into(),
        ));
    }
    let now = now_unix();
    let record = match state
        .store
        .decide_approval(
            &approval_id,
            approve,
            &approver,
            body.reason.as_deref(),
            now,
        )
        .await
    {
        Ok(record) => record,
        Err(error @ StoreError::ApprovalConflict { .. }) => {
            return Ok((
                StatusCode::CONFLICT,
                Json(json!({ "error": "conflict", "message": error.to_string() })),
            )
                .into_response());
        }
        Err(error) => return Err(store_error(error)),
    };
    state.approvals.wake(&approval_id);
    if let Ok(Some(task)) = state.store.task(&record.task_id).await {
        let claims = crate::tasks::claims_of(&task);
        audit::record(
            &state,
            &claims,
            audit::Step {
                kind: "approval.decided",
                target: Some(&record.tool),
                decision: Some(if approve {
                    warden_core::Decision::Allow
                } else {
                    warden_core::Decision::Deny
                }),
                policy_ids: &record.policy_ids,
                reason: record.decision_reason.as_deref(),
                detail: json!({ "approval_id": record.approval_id, "approver": approver }),
                span_id: None,
                parent_span_id: None,
            },
        );
    }
    tracing::info!(
        approval.id = %approval_id,
        approver = %approver,
        decision = if approve { "approve" } else { "deny" },
        "approval decided"
    );
    Ok(Json(approval_json(&record, now)).into_response())
}

fn parse_status(text: &str) -> Result<ApprovalStatus, ApiError> {
    match text {
        "pending" => Ok(ApprovalStatus::Pending),
        "approved" => Ok(ApprovalStatus::Approved),
        "denied" => Ok(ApprovalStatus::Denied),
        "consumed" => Ok(ApprovalStatus::Consumed),
        "expired" => Ok(ApprovalStatus::Expired),
        other => Err(ApiError::BadRequest(format!(
            "unknown status {other:?}; use pending, approved, denied, consumed, expired or all"
        ))),
    }
}

fn not_found(approval_id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no approval {approval_id}; list them with GET /v1/approvals"
    ))
}

fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::ApprovalNotFound { approval_id } => not_found(&approval_id),
        other => {
            tracing::error!(error = %other, "approval store operation failed");
            ApiError::Unavailable(format!("the store is unavailable: {other}"))
        }
    }
}
