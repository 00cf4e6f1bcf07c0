//! Task endpoints: `POST /v1/tasks`, `GET /v1/tasks/{id}` and
//! `DELETE /v1/tasks/{id}`.
//!
//! An agent authenticated by its JWT-SVID asks for a task: an intent, the
//! user it acts for, an optional tool scope and a lifetime. The start-task
//! policy decides; on allow Warden stores the task and returns a task token
//! bound to agent, user, intent, scope and trace id, valid for at most
//! `tasks.max_ttl_seconds`. Ending the task revokes its token and every
//! token delegated from it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use warden_core::Decision;
use warden_identity::TaskClaims;
use warden_policy::{Step, StepRequest, TaskContext};
use warden_store::TaskRecord;

use crate::audit;
use crate::auth::{ApiError, authenticate_agent, bearer, format_time, now_unix};
use crate::state::{AppState, TaskStatus};
use crate::tracecontext::TraceParent;

/// Longest accepted intent, in characters.
pub const MAX_INTENT_CHARS: usize = 2000;
/// Most tool patterns in one task's scope.
pub const MAX_SCOPE_ENTRIES: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartTask {
    intent: String,
    user: String,
    #[serde(default)]
    tools: Option<Vec<String>>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// `POST /v1/tasks`.
pub async fn start(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let svid = authenticate_agent(&state, &headers)?;
    let value = warden_core::json::parse_strict(&body).map_err(|error| {
        ApiError::BadRequest(format!("request body is not valid JSON: {error}"))
    })?;
    let request: StartTask = serde_json::from_value(value).map_err(|error| {
        ApiError::BadRequest(format!(
            "invalid task request: {error}; send {{\"intent\": \"...\", \"user\": \"...\", \"tools\": [\"server__tool\"], \"ttl_seconds\": 300}}"
        ))
    })?;
    validate(&request)?;

    let max_ttl = state.config.tasks.max_ttl_seconds;
    let ttl = request
        .ttl_seconds
        .unwrap_or(state.config.tasks.default_ttl_seconds)
        .clamp(1, max_ttl);
    let tools = request
        .tools
        .clone()
        .unwrap_or_else(|| vec!["*".to_owned()]);
    let task_id = uuid::Uuid::new_v4().to_string();
    // An agent that traces its own work joins the task to its trace, with
    // the task's root span under the agent's current span.
    let caller_trace = TraceParent::from_headers(&headers);
    let trace_id = caller_trace.as_ref().map_or_else(
        || uuid::Uuid::new_v4().simple().to_string(),
        |parent| parent.trace_id.clone(),
    );
    let agent = svid.spiffe_id.as_str().to_owned();

    let context = TaskContext {
        task_id: task_id.clone(),
        agent: agent.clone(),
        trust_domain: svid.spiffe_id.trust_domain().to_owned(),
        user: request.user.clone(),
        intent: request.intent.clone(),
        tools: tools.clone(),
        chain: vec![agent.clone()],
        depth: 0,
    };
    let outcome = state.engine().decide(&StepRequest {
        task: &context,
        step: Step::StartTask { ttl_seconds: ttl },
    });
    state.metrics.count_decision(outcome.decision);
    tracing::info!(
        agent.id = %agent,
        user = %request.user,
        decision = %outcome.decision,
        policies = ?outcome.policy_ids,
        "task start decided"
    );
    if outcome.decision != Decision::Allow {
        return Err(ApiError::Forbidden(format!(
            "task refused: {} (policies: {})",
            outcome.reason,
            if outcome.policy_ids.is_empty() {
                "none".to_owned()
            } else {
                outcome.policy_ids.join(", ")
            }
        )));
    }

    let now = now_unix();
    let expires_at = now + ttl as i64;
    let claims = TaskClaims {
        iss: state.issuer.clone(),
        aud: state.config.identity.audience.clone(),
        sub: agent.clone(),
        jti: uuid::Uuid::new_v4().to_string(),
        task_id: task_id.clone(),
        user: request.user.clone(),
        intent: request.intent.clone(),
        tools: tools.clone(),
        trace_id: trace_id.clone(),
        iat: now,
        exp: expires_at,
        act: None,
        parent_task_id: None,
        root_task_id: None,
    };
    let token = state.tokens.issue(&claims).map_err(|error| {
        tracing::error!(%error, "signing a task token failed");
        ApiError::Unavailable(format!("cannot sign the task token: {error}"))
    })?;
    let record = TaskRecord {
        task_id: task_id.clone(),
        agent: agent.clone(),
        user: request.user.clone(),
        intent: request.intent.clone(),
        tools: tools.clone(),
        trace_id: trace_id.clone(),
        parent_task_id: None,
        created_at: now,
        expires_at,
        revoked_at: None,
    };
    state.store.insert_task(&record).await.map_err(|error| {
        tracing::error!(%error, task.id = %task_id, "storing a task failed");
        ApiError::Unavailable(format!("cannot store the task: {error}"))
    })?;
    state.tasks.set(&task_id, TaskStatus::Active);
    state.metrics.tasks_started.fetch_add(1, Ordering::Relaxed);
    audit::record(
        &state,
        &claims,
        audit::Step {
            kind: "task.start",
            target: None,
            decision: Some(outcome.decision),
            policy_ids: &outcome.policy_ids,
            reason: Some(&outcome.reason),
            detail: json!({
                "intent": request.intent,
                "tools": tools,
                "ttl_seconds": ttl,
            }),
            span_id: Some(audit::root_span(&task_id)),
            parent_span_id: Some(
                caller_trace
                    .map(|parent| parent.parent_id)
                    .unwrap_or_default(),
            ),
        },
    );
    tracing::info!(task.id = %task_id, agent.id = %agent, trace.id = %trace_id, ttl, "task started");

    let body = json!({
        "task_id": task_id,
        "token": token,
        "expires_at": format_time(expires_at),
        "trace_id": trace_id,
        "tools": tools,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /v1/tasks/{id}`: readable with the task's own token or the owning
/// agent's JWT-SVID.
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let record = authorize_owner(&state, &headers, &task_id).await?;
    Ok(Json(task_json(&record)))
}

/// `DELETE /v1/tasks/{id}`: ends the task and every task delegated from it.
pub async fn end(
    State(state): State<Arc<AppState>>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let record = authorize_owner(&state, &headers, &task_id).await?;
    let now = now_unix();
    let revoked = state
        .store
        .revoke_task(&task_id, now)
        .await
        .map_err(|error| {
            tracing::error!(%error, task.id = %task_id, "revoking a task failed");
            ApiError::Unavailable(format!("cannot revoke task {task_id}: {error}"))
        })?;
    for id in &revoked {
        state.tasks.set(id, TaskStatus::Revoked(now));
    }
    state.sessions.close_task_sessions(&revoked);
    let claims = claims_of(&record);
    audit::record(
        &state,
        &claims,
        audit::Step {
            kind: "task.end",
            target: None,
            decision: None,
            policy_ids: &[],
            reason: None,
            detail: json!({ "revoked": revoked }),
            span_id: None,
            parent_span_id: None,
        },
    );
    tracing::info!(task.id = %task_id, revoked = revoked.len(), "task ended");
    Ok(Json(json!({
        "task_id": task_id,
        "revoked": revoked,
        "revoked_at": format_time(record.revoked_at.unwrap_or(now)),
    })))
}

async fn authorize_owner(
    state: &AppState,
    headers: &HeaderMap,
    task_id: &str,
) -> Result<TaskRecord, ApiError> {
    let token = bearer(headers, "task token or JWT-SVID")?;
    let caller = match state.tokens.verify(&token, now_unix()) {
        Ok(claims) if claims.task_id != task_id => {
            return Err(ApiError::Forbidden(format!(
                "this task token belongs to task {}, not {task_id}",
                claims.task_id
            )));
        }
        Ok(claims) => crate::delegation::acting_agent(&claims).to_owned(),
        Err(_) => authenticate_agent(state, headers)?
            .spiffe_id
            .as_str()
            .to_owned(),
    };
    let record = state
        .store
        .task(task_id)
        .await
        .map_err(|error| ApiError::Unavailable(format!("cannot read task {task_id}: {error}")))?
        .ok_or_else(|| ApiError::NotFound(format!("no task {task_id}")))?;
    if record.agent != caller {
        return Err(ApiError::Forbidden(format!(
            "task {task_id} belongs to another agent"
        )));
    }
    Ok(record)
}

fn validate(request: &StartTask) -> Result<(), ApiError> {
    if request.intent.trim().is_empty() || request.intent.chars().count() > MAX_INTENT_CHARS {
        return Err(ApiError::BadRequest(format!(
            "intent must be 1 to {MAX_INTENT_CHARS} characters describing what the task is for"
        )));
    }
    if request.user.trim().is_empty() || request.user.len() > 256 {
        return Err(ApiError::BadRequest(
            "user must be 1 to 256 characters naming the person or principal the task acts for"
                .into(),
        ));
    }
    if let Some(tools) = &request.tools {
        if tools.len() > MAX_SCOPE_ENTRIES {
            return Err(ApiError::BadRequest(format!(
                "tools has {} entries; at most {MAX_SCOPE_ENTRIES} are allowed",
                tools.len()
            )));
        }
        for tool in tools {
            if !crate::scope::is_valid_pattern(tool) {
                return Err(ApiError::BadRequest(format!(
                    "tools entry {tool:?} is not a tool pattern; use \"server__tool\", \"server__*\" or \"*\""
                )));
            }
        }
    }
    if request.ttl_seconds == Some(0) {
        return Err(ApiError::BadRequest(
            "ttl_seconds must be at least 1".into(),
        ));
    }
    Ok(())
}

fn task_json(record: &TaskRecord) -> Value {
    json!({
        "task_id": record.task_id,
        "agent": record.agent,
        "user": record.user,
        "intent": record.intent,
        "tools": record.tools,
        "trace_id": record.trace_id,
        "parent_task_id": record.parent_task_id,
        "created_at": format_time(record.created_at),
        "expires_at": format_time(record.expires_at),
        "revoked_at": record.revoked_at.map(format_time),
        "state": if record.revoked_at.is_some() {
            "ended"
        } else if record.expires_at < now_unix() {
            "expired"
        } else {
            "active"
        },
    })
}

/// Rebuilds the claims that audit records need from a stored task.
pub fn claims_of(record: &TaskRecord) -> TaskClaims {
    TaskClaims {
        iss: String::new(),
        aud: String::new(),
        sub: record.agent.clone(),
        jti: String::new(),
        task_id: record.task_id.clone(),
        user: record.user.clone(),
        intent: record.intent.clone(),
        tools: record.tools.clone(),
        trace_id: record.trace_id.clone(),
        iat: record.created_at,
        exp: record.expires_at,
        act: None,
        parent_task_id: record.parent_task_id.clone(),
        root_task_id: None,
    }
}
