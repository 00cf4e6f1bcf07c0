//! `POST /v1/decisions`: asks whether a step would be allowed, denied or
//! held, without taking it.
//!
//! An agent can plan around refusals: it sends the tool call or HTTP
//! request it is about to make and gets the decision Warden would reach
//! now, with the same task, scope, memory and policies. Nothing is
//! forwarded, no approval is opened and the task's memory does not change;
//! the question itself is recorded in the trace.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use warden_core::Decision;
use warden_policy::{Destination, Outcome, Step, StepRequest, TaskContext, TaskMemory};

use crate::audit;
use crate::auth::{ApiError, authenticate_task};
use crate::http_routes::{Rejection, Target};
use crate::mcp::task_context;
use crate::state::AppState;

/// The step an agent asks about.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Question {
    /// Qualified tool name, for a tool call.
    #[serde(default)]
    tool: Option<String>,
    /// The tool call's arguments.
    #[serde(default)]
    arguments: Option<Value>,
    /// Route name, for an HTTP request.
    #[serde(default)]
    route: Option<String>,
    /// HTTP method (default GET).
    #[serde(default)]
    method: Option<String>,
    /// Path below the route, as the agent would send it.
    #[serde(default)]
    path: Option<String>,
    /// Raw query string, without `?`.
    #[serde(default)]
    query: Option<String>,
    /// JSON body.
    #[serde(default)]
    body: Option<Value>,
}

/// `POST /v1/decisions`.
pub async fn decide(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let claims = authenticate_task(&state, &headers).await?;
    let value = warden_core::json::parse_strict(&body).map_err(|error| {
        ApiError::BadRequest(format!("request body is not valid JSON: {error}"))
    })?;
    let question: Question = serde_json::from_value(value).map_err(|error| {
        ApiError::BadRequest(format!(
            "invalid question: {error}; send {{\"tool\": \"server__tool\", \"arguments\": {{...}}}} or {{\"route\": \"NAME\", \"method\": \"GET\", \"path\": \"/...\"}}"
        ))
    })?;
    let memory = match crate::memory::load(&state, &claims).await {
        Ok(memory) => memory,
        Err(denial) => return Ok(Json(answer(&denial))),
    };
    let task = task_context(&claims);
    let mut note = None;
    let (target, decided) = match (&question.tool, &question.route) {
        (Some(tool), None) => {
            let arguments = question.arguments.clone().unwrap_or(Value::Null);
            if !(arguments.is_object() || arguments.is_null()) {
                return Err(ApiError::BadRequest("arguments must be an object".into()));
            }
            let blocked = tool
                .split_once("__")
                .and_then(|(server, name)| state.upstreams.get(server).map(|u| (u, name)))
                .and_then(|(upstream, name)| upstream.blocked_reason(name));
            let decided = if let Some(reason) = blocked {
                built_in("warden:tool-changed", reason)
            } else if !crate::scope::allows(&claims.tools, tool) {
                built_in(
                    "warden:task-scope",
                    format!(
                        "{tool} is outside this task's tool scope ({})",
                        claims.tools.join(", ")
                    ),
                )
            } else {
                crate::memory::decide(
                    &state,
                    &StepRequest {
                        task: &task,
                        step: Step::CallTool {
                            tool,
                            arguments: &arguments,
                            model_requested: false,
                            memory: &memory,
                        },
                    },
                )
                .outcome
            };
            (tool.clone(), decided)
        }
        (None, Some(route)) => {
            let (decided, route_note) = decide_route(&state, &task, &memory, &question, route)?;
            note = route_note;
            (format!("route:{route}"), decided)
        }
        _ => {
            return Err(ApiError::BadRequest(
                "name either a tool (with arguments) or a route (with method and path)".into(),
            ));
        }
    };
    audit::record(
        &state,
        &claims,
        audit::Step {
            kind: "precheck.decision",
            target: Some(&target),
            decision: Some(decided.decision),
            policy_ids: &decided.policy_ids,
            reason: Some(&decided.reason),
            detail: json!({ "arguments": question.arguments.clone().or(question.body.clone()) }),
            span_id: None,
            parent_span_id: None,
        },
    );
    let mut body = answer(&decided);
    if let Some(note) = note {
        body["note"] = json!(note);
    }
    Ok(Json(body))
}

/// Decides an HTTP request to `route_name` as the request itself would be
/// decided, and returns the outcome and a note on what is checked only when
/// the request is sent.
///
/// The request's own checks come first and in the same order: method,
/// path and query, body type, destination. A request they reject is
/// denied with their built-in policy id and message.
fn decide_route(
    state: &AppState,
    task: &TaskContext,
    memory: &TaskMemory,
    question: &Question,
    route_name: &str,
) -> Result<(Outcome, Option<String>), ApiError> {
    let Some(route) = state.routes.get(route_name) else {
        return Err(ApiError::NotFound(format!(
            "no HTTP route named {route_name:?}; the routes are the [http.NAME] sections of Warden's config"
        )));
    };
    let method = question
        .method
        .clone()
        .unwrap_or_else(|| "GET".to_owned())
        .to_ascii_uppercase();
    let body = question.body.clone().unwrap_or(Value::Null);
    let checked = route.check_method(&method).and_then(|()| {
        let target = Target::parse(
            question.path.as_deref().unwrap_or("/"),
            question.query.as_deref(),
        )
        .map_err(Rejection::invalid_target)?;
        route.check_query(&target.query)?;
        route.check_body(!body.is_null(), &body)?;
        let url = route.url(&target);
        let note = route.check_destination(&url)?;
        Ok((target, url, note))
    });
    let (target, url, note) = match checked {
        Ok(checked) => checked,
        Err(rejection) => {
            let rejection = rejection.redact(state);
            return Ok((built_in(rejection.policy_id, rejection.message), None));
        }
    };
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let decided = crate::memory::decide(
        state,
        &StepRequest {
            task,
            step: Step::HttpRequest {
                route: route.name(),
                method: &method,
                path: &target.path,
                query: &target.query,
                body: &body,
                has_body: !body.is_null(),
                content_type: if body.is_null() {
                    ""
                } else {
                    "application/json"
                },
                destination: Destination {
                    scheme: url.scheme(),
                    host: &host,
                    port: url.port_or_known_default().unwrap_or(0),
                },
                memory,
            },
        },
    )
    .outcome;
    Ok((decided, note))
}

fn built_in(policy: &str, reason: String) -> Outcome {
    Outcome {
        decision: Decision::Deny,
        policy_ids: vec![policy.to_owned()],
        reason,
        errors: Vec::new(),
        arguments: None,
    }
}

fn answer(outcome: &Outcome) -> Value {
    let mut body = json!({
        "decision": outcome.decision.as_str(),
        "policy_ids": outcome.policy_ids,
        "reason": outcome.reason,
    });
    if !outcome.errors.is_empty() {
        body["errors"] = json!(outcome.errors);
    }
    body
}
