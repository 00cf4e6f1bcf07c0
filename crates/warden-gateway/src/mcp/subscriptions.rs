//! Resource subscriptions on `/mcp/{server}`.
//!
//! Every agent shares Warden's one session with an upstream, so Warden
//! subscribes upstream once per resource and counts the agent sessions
//! subscribed to it: the first subscription is forwarded, and so is the
//! unsubscription of the last. The server's `notifications/resources/updated`
//! messages reach each subscribed session on its standalone event stream
//! (`GET`), and each delivery is recorded in the trace of the session's task.
//!
//! A subscription is decided like a read of the resource (`read_resource`),
//! since the updates tell the agent about a resource it may not read.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use warden_core::Decision;
use warden_identity::TaskClaims;
use warden_policy::{Outcome as PolicyOutcome, Step, StepRequest};

use super::{DECISION_META_KEY, RpcError, Session, code, task_context};
use crate::audit;
use crate::scope;
use crate::state::AppState;
use crate::upstream::Upstream;

/// Everything a subscription request needs.
pub struct Request<'a> {
    /// Shared gateway state.
    pub state: &'a Arc<AppState>,
    /// Claims of the caller's task token.
    pub claims: &'a TaskClaims,
    /// Server of `/mcp/{server}`, or `None` for `/mcp`.
    pub server: Option<&'a str>,
    /// The caller's session; `None` in the stateless revision.
    pub session: Option<&'a Arc<Session>>,
    /// The agent's JSON-RPC request id.
    pub request_id: &'a Value,
}

/// Runs `resources/subscribe` (`subscribe` true) or `resources/unsubscribe`.
pub async fn handle(
    request: &Request<'_>,
    subscribe: bool,
    params: Option<&Value>,
) -> Result<Value, RpcError> {
    let method = if subscribe {
        "resources/subscribe"
    } else {
        "resources/unsubscribe"
    };
    let empty = json!({});
    let params = params.unwrap_or(&empty);
    let Some(uri) = params.get("uri").and_then(Value::as_str) else {
        return Err(RpcError::new(
            code::INVALID_PARAMS,
            format!("{method} needs params.uri, the resource's URI"),
        ));
    };
    let Some(upstream) = request
        .server
        .and_then(|server| request.state.upstreams.get(server))
    else {
        return Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("{method} is served on /mcp/{{server}} only, where the server is unambiguous"),
        ));
    };

    let offered = upstream
        .catalog()
        .capabilities()
        .pointer("/resources/subscribe")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !offered {
        return Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!(
                "{method} is not offered through Warden by upstream {}",
                upstream.name()
            ),
        ));
    }
    let Some(session) = request.session else {
        return Err(RpcError::new(
            code::INVALID_REQUEST,
            format!(
                "{method} needs an MCP session, because updates arrive on the session's event stream; send initialize first"
            ),
        ));
    };

    let sessions = &request.state.sessions;
    if !subscribe {
        if sessions.unsubscribe(upstream.name(), uri, &session.id) {
            return forward(request, upstream, method, params).await;
        }
        return Ok(json!({}));
    }

    let outcome = decide(request, upstream, uri);
    if outcome.decision != Decision::Allow {
        let mut error = RpcError::new(
            code::INVALID_REQUEST,
            format!("Warden refused {method} of {uri}: {}", outcome.reason),
        );
        error.data = Some(json!({ DECISION_META_KEY: {
            "decision": outcome.decision.as_str(),
            "policy_ids": outcome.policy_ids,
            "reason": outcome.reason,
            "task_id": request.claims.task_id,
            "trace_id": request.claims.trace_id,
        }}));
        return Err(error);
    }

    route_updates(request.state, upstream);
    if !sessions.subscribe(upstream.name(), uri, &session.id) {
        // The upstream already sends this resource's updates.
        return Ok(json!({}));
    }
    let result = forward(request, upstream, method, params).await;
    if result.is_err() {
        sessions.unsubscribe(upstream.name(), uri, &session.id);
    }
    result
}

/// Decides a subscription as a read of the resource and records it.
fn decide(request: &Request<'_>, upstream: &Upstream, uri: &str) -> PolicyOutcome {
    let state = request.state;
    let mut outcome = if scope::allows_server(&request.claims.tools, upstream.name()) {
        state.engine().decide(&StepRequest {
            task: &task_context(request.claims),
            step: Step::ReadResource {
                server: upstream.name(),
                uri,
            },
        })
    } else {
        PolicyOutcome {
            decision: Decision::Deny,
            policy_ids: vec!["warden:task-scope".into()],
            reason: format!(
                "the resources of server {} are outside this task's scope ({}); start a task whose tools include {}__*",
                upstream.name(),
                request.claims.tools.join(", "),
                upstream.name()
            ),
            errors: Vec::new(),
            arguments: None,
        }
    };
    if outcome.decision == Decision::Hold {
        // Approvals cover tool calls only, so no approval can exist.
        outcome.decision = Decision::Deny;
        outcome.reason = format!(
            "{}; approvals cover tool calls only, so this subscription is refused",
            outcome.reason
        );
    }
    state.metrics.count_decision(outcome.decision);
    audit::record(
        state,
        request.claims,
        audit::Step {
            kind: "resource.subscribe",
            target: Some(uri),
            decision: Some(outcome.decision),
            policy_ids: &outcome.policy_ids,
            reason: Some(&outcome.reason),
            detail: json!({
                "server": upstream.name(),
                "errors": outcome.errors,
                "request_id": request.request_id,
            }),
            span_id: None,
            parent_span_id: None,
        },
    );
    outcome
}

async fn forward(
    request: &Request<'_>,
    upstream: &Upstream,
    method: &str,
    params: &Value,
) -> Result<Value, RpcError> {
    audit::record(
        request.state,
        request.claims,
        audit::Step {
            kind: "method.forwarded",
            target: Some(upstream.name()),
            decision: None,
            policy_ids: &[],
            reason: None,
            detail: json!({ "method": method, "request_id": request.request_id }),
            span_id: None,
            parent_span_id: None,
        },
    );
    match upstream.request(method, Some(params.clone())).await {
        Ok(Ok(mut result)) => {
            super::dispatch::scrub_decision_key(&mut result);
            Ok(result)
        }
        Ok(Err(error)) => {
            let mut error = error.error;
            super::dispatch::scrub_decision_key(&mut error);
            Err(RpcError {
                code: error
                    .get("code")
                    .and_then(Value::as_i64)
                    .unwrap_or(code::INTERNAL_ERROR),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error")
                    .to_owned(),
                data: error.get("data").cloned(),
            })
        }
        Err(error) => Err(RpcError::new(code::INTERNAL_ERROR, error.to_string())),
    }
}

/// Starts, once per upstream, the task that passes the upstream's resource
/// updates to the subscribed sessions.
fn route_updates(state: &Arc<AppState>, upstream: &Upstream) {
    if !state.sessions.start_routing(upstream.name()) {
        return;
    }
    let mut updates = upstream.resource_updates();
    let state = state.clone();
    let server = upstream.name().to_owned();
    tokio::spawn(async move {
        loop {
            match updates.recv().await {
                Ok(message) => deliver(&state, &server, message),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(upstream = %server, missed, "resource updates arrived faster than Warden relayed them; some were dropped");
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// Sends one update to every session subscribed to its resource.
fn deliver(state: &AppState, server: &str, mut message: Value) {
    let Some(uri) = message
        .pointer("/params/uri")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return;
    };
    super::dispatch::scrub_decision_key(&mut message);
    let event = crate::sse::format_event(&message.to_string());
    let now = crate::auth::now_unix();
    for session in state.sessions.subscribers(server, &uri) {
        if session.expires_at < now {
            continue;
        }
        let Some(claims) = session.push_event(event.clone()) else {
            tracing::debug!(upstream = %server, session = %session.id, "resource update not relayed: the session has no open event stream");
            continue;
        };
        audit::record(
            state,
            &claims,
            audit::Step {
                kind: "notification.relayed",
                target: Some(server),
                decision: None,
                policy_ids: &[],
                reason: None,
                detail: json!({
                    "method": "notifications/resources/updated",
                    "params": message.get("params"),
                    "session": session.id,
                }),
                span_id: None,
                parent_span_id: None,
            },
        );
    }
}
