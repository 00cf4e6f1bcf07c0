//! Delegation between agents: `POST /oauth2/token`, OAuth 2.0 Token
//! Exchange (RFC 8693).
//!
//! Agent A hands part of its task to agent B. B posts A's task token as
//! `subject_token` and its own JWT-SVID as `actor_token`, with an optional
//! `scope` (space-separated tool patterns). Warden evaluates the `delegate`
//! policy with A as principal and B as resource, and issues B a task token
//! for a child task: same user, intent and trace, a scope that is a subset
//! of A's, an expiry no later than A's, and the actor chain in the `act`
//! claim as RFC 8693 section 4.1 nests it (`sub` stays the original agent,
//! `act.sub` is the current actor, `act.act.sub` the one before). Ending A's
//! task revokes B's, at any depth.
//!
//! A request for more than A holds fails with an RFC 6749 error
//! (`invalid_scope`, `invalid_target`, `invalid_grant`, ...), never with a
//! silently narrowed token.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use warden_core::Decision;
use warden_identity::TaskClaims;
use warden_policy::{Step, StepRequest};
use warden_store::TaskRecord;

use crate::audit;
use crate::auth::{check_live, format_time, now_unix};
use crate::scope;
use crate::state::AppState;

/// The grant type of RFC 8693.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Token type of Warden's task tokens and of JWT-SVIDs.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Token type of an access token, which a task token also is.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An RFC 6749 section 5.2 error.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
}

impl OAuthError {
    fn new(code: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            code,
            description: description.into(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "error_description": self.description });
        (
            self.status,
            [(header::CACHE_CONTROL, "no-store")],
            Json(body),
        )
            .into_response()
    }
}

/// Returns the agent acting with a task token: the innermost actor of the
/// `act` chain is the oldest, so the current actor is `act.sub`, or `sub`
/// for a root task.
pub fn acting_agent(claims: &TaskClaims) -> &str {
    claims
        .act
        .as_ref()
        .and_then(|act| act.get("sub"))
        .and_then(Value::as_str)
        .unwrap_or(&claims.sub)
}

/// Returns the agents of the delegation chain, root first, current actor
/// last.
pub fn chain(claims: &TaskClaims) -> Vec<String> {
    let mut actors = Vec::new();
    let mut current = claims.act.as_ref();
    while let Some(act) = current {
        if let Some(sub) = act.get("sub").and_then(Value::as_str) {
            actors.push(sub.to_owned());
        }
        current = act.get("act");
    }
    actors.push(claims.sub.clone());
    actors.reverse();
    actors
}

/// `POST /oauth2/token`.
pub async fn token_exchange(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match exchange(&state, &headers, &body).await {
        Ok(body) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store")],
            Json(body),
        )
            .into_response(),
        Err(error) => {
            tracing::info!(error = error.code, description = %error.description, "token exchange refused");
            error.into_response()
        }
    }
}

async fn exchange(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Value, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(OAuthError::new(
            "invalid_request",
            "send the token exchange as application/x-www-form-urlencoded (RFC 8693 section 2.1)",
        ));
    }
    let form = parse_form(body)?;
    let field = |name: &str| form.get(name).map(String::as_str);
    match field("grant_type") {
        Some(TOKEN_EXCHANGE_GRANT) => {}
        Some(other) => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                format!("grant_type {other:?} is not supported; use {TOKEN_EXCHANGE_GRANT}"),
            ));
        }
        None => return Err(OAuthError::new("invalid_request", "grant_type is missing")),
    }
    for (name, allowed) in [
        ("subject_token_type", [JWT_TOKEN_TYPE, ACCESS_TOKEN_TYPE]),
        ("actor_token_type", [JWT_TOKEN_TYPE, ACCESS_TOKEN_TYPE]),
    ] {
        if let Some(value) = field(name)
            && !allowed.contains(&value)
        {
            return Err(OAuthError::new(
                "invalid_request",
                format!("{name} {value:?} is not supported; use {JWT_TOKEN_TYPE}"),
            ));
        }
    }
    if let Some(requested) = field("requested_token_type")
        && requested != ACCESS_TOKEN_TYPE
        && requested != JWT_TOKEN_TYPE
    {
        return Err(OAuthError::new(
            "invalid_request",
            format!(
                "requested_token_type {requested:?} is not supported; Warden issues task tokens ({ACCESS_TOKEN_TYPE})"
            ),
        ));
    }
    let audience = &state.config.identity.audience;
    for name in ["audience", "resource"] {
        if let Some(value) = field(name)
            && value != audience
        {
            return Err(OAuthError::new(
                "invalid_target",
                format!(
                    "{name} {value:?} is not this gateway; Warden issues task tokens for {audience:?} only"
                ),
            ));
        }
    }

    let now = now_unix();
    let subject_token = field("subject_token").ok_or_else(|| {
        OAuthError::new(
            "invalid_request",
            "subject_token is missing; send the delegating agent's task token",
        )
    })?;
    let parent = state
        .tokens
        .verify(subject_token, now)
        .map_err(|error| OAuthError::new("invalid_grant", format!("subject_token: {error}")))?;
    check_live(state, &parent)
        .await
        .map_err(|error| OAuthError::new("invalid_grant", format!("subject_token: {error}")))?;
    let actor_token = field("actor_token").ok_or_else(|| {
        OAuthError::new(
            "invalid_request",
            "actor_token is missing; send the receiving agent's JWT-SVID",
        )
    })?;
    let actor = state.verifier.verify(actor_token, now).map_err(|error| {
        state.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
        OAuthError::new("invalid_request", format!("actor_token: {error}"))
    })?;
    let actor_id = actor.spiffe_id.as_str().to_owned();

    let parent_chain = chain(&parent);
    let depth = parent_chain.len() as u32;
    let max_depth = state.config.delegation.max_depth;
    if depth > max_depth {
        return Err(OAuthError::new(
            "invalid_grant",
            format!(
                "delegation deeper than {max_depth} hops is not allowed (delegation.max_depth)"
            ),
        ));
    }
    if parent_chain.contains(&actor_id) {
        return Err(OAuthError::new(
            "invalid_grant",
            format!(
                "{actor_id} is already in this task's delegation chain; an agent cannot delegate back into its own chain"
            ),
        ));
    }

    let tools = match field("scope") {
        None => parent.tools.clone(),
        Some(scope) => {
            let requested: Vec<String> = scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if requested.is_empty() {
                return Err(OAuthError::new(
                    "invalid_scope",
                    "scope is empty; name at least one tool pattern",
                ));
            }
            for pattern in &requested {
                if !scope::is_valid_pattern(pattern) {
                    return Err(OAuthError::new(
                        "invalid_scope",
                        format!(
                            "{pattern:?} is not a tool pattern; use \"server__tool\", \"server__*\" or \"*\""
                        ),
                    ));
                }
                if !scope::covers(&parent.tools, pattern) {
                    let reason = format!(
                        "{pattern:?} is not within the delegating task's scope ({}); a delegated task gets a subset",
                        parent.tools.join(" ")
                    );
                    // A try to widen the scope is a step of the task too.
                    audit::record(
                        state,
                        &parent,
                        audit::Step {
                            kind: "delegation.decision",
                            target: Some(&actor_id),
                            decision: Some(warden_core::Decision::Deny),
                            policy_ids: &["warden:delegation-scope".to_owned()],
                            reason: Some(&reason),
                            detail: serde_json::json!({ "requested_scope": requested }),
                            span_id: None,
                            parent_span_id: None,
                        },
                    );
                    return Err(OAuthError::new("invalid_scope", reason));
                }
            }
            requested
        }
    };

    let parent_agent = acting_agent(&parent).to_owned();
    let outcome = state.engine().decide(&StepRequest {
        task: &crate::mcp::task_context(&parent),
        step: Step::Delegate {
            to_agent: &actor_id,
            tools: &tools,
            depth,
        },
    });
    state.metrics.count_decision(outcome.decision);
    let record_decision = |reason: &str| {
        audit::record(
            state,
            &parent,
            audit::Step {
                kind: "delegation.decision",
                target: Some(&actor_id),
                decision: Some(outcome.decision),
                policy_ids: &outcome.policy_ids,
                reason: Some(reason),
                detail: json!({ "tools": tools, "depth": depth, "errors": outcome.errors }),
                span_id: None,
                parent_span_id: None,
            },
        )
    };
    if outcome.decision != Decision::Allow {
        record_decision(&outcome.reason);
        return Err(OAuthError {
            status: StatusCode::FORBIDDEN,
            code: "access_denied",
            description: format!(
                "delegation from {parent_agent} to {actor_id} refused: {} (policies: {})",
                outcome.reason,
                if outcome.policy_ids.is_empty() {
                    "none".to_owned()
                } else {
                    outcome.policy_ids.join(", ")
                }
            ),
        });
    }
    record_decision(&outcome.reason);

    let expires_at = parent
        .exp
        .min(now + state.config.tasks.default_ttl_seconds as i64);
    let task_id = uuid::Uuid::new_v4().to_string();
    let act = nest_actor(&actor_id, parent.act.as_ref());
    let claims = TaskClaims {
        iss: state.issuer.clone(),
        aud: state.config.identity.audience.clone(),
        sub: parent.sub.clone(),
        jti: uuid::Uuid::new_v4().to_string(),
        task_id: task_id.clone(),
        user: parent.user.clone(),
        intent: parent.intent.clone(),
        tools: tools.clone(),
        trace_id: parent.trace_id.clone(),
        iat: now,
        exp: expires_at,
        act: Some(act),
        parent_task_id: Some(parent.task_id.clone()),
        root_task_id: Some(parent.root_task().to_owned()),
    };
    let token = state.tokens.issue(&claims).map_err(|error| {
        tracing::error!(%error, "signing a delegated task token failed");
        OAuthError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "server_error",
            description: format!("cannot sign the task token: {error}"),
        }
    })?;
    let record = TaskRecord {
        task_id: task_id.clone(),
        agent: actor_id.clone(),
        user: parent.user.clone(),
        intent: parent.intent.clone(),
        tools: tools.clone(),
        trace_id: parent.trace_id.clone(),
        parent_task_id: Some(parent.task_id.clone()),
        created_at: now,
        expires_at,
        revoked_at: None,
    };
    state.store.insert_task(&record).await.map_err(|error| {
        tracing::warn!(%error, task.id = %task_id, "storing a delegated task failed");
        OAuthError::new(
            "invalid_grant",
            format!("cannot create the delegated task: {error}"),
        )
    })?;
    state.tasks.set_active_if_absent(&task_id);
    audit::record(
        state,
        &claims,
        audit::Step {
            kind: "task.delegated",
            target: Some(&actor_id),
            decision: Some(Decision::Allow),
            policy_ids: &outcome.policy_ids,
            reason: None,
            detail: json!({
                "from_agent": parent_agent,
                "from_task": parent.task_id,
                "tools": tools,
                "depth": depth,
                "expires_at": format_time(expires_at),
            }),
            span_id: Some(audit::root_span(&task_id)),
            parent_span_id: Some(audit::root_span(&parent.task_id)),
        },
    );
    tracing::info!(
        task.id = %task_id,
        parent.task.id = %parent.task_id,
        agent.id = %actor_id,
        depth,
        "task delegated"
    );
    Ok(json!({
        "access_token": token,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": (expires_at - now).max(0),
        "scope": tools.join(" "),
        "task_id": task_id,
        "trace_id": parent.trace_id,
    }))
}

/// Builds the `act` claim for a new actor in front of the existing chain.
fn nest_actor(actor: &str, previous: Option<&Value>) -> Value {
    let mut act = json!({ "sub": actor });
    if let Some(previous) = previous {
        act["act"] = previous.clone();
    }
    act
}

/// Parses a form body, rejecting a parameter given twice (RFC 6749
/// section 3.2: "request and response parameters MUST NOT be included more
/// than once").
fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut form = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        if form.insert(name.to_string(), value.to_string()).is_some() {
            return Err(OAuthError::new(
                "invalid_request",
                format!("parameter {name} is given more than once"),
            ));
        }
    }
    Ok(form)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(act: Option<Value>) -> TaskClaims {
        TaskClaims {
            iss: "warden".into(),
            aud: "warden".into(),
            sub: "spiffe://t/a".into(),
            jti: "j".into(),
            task_id: "t".into(),
            user: "u".into(),
            intent: "i".into(),
            tools: vec!["*".into()],
            trace_id: "x".into(),
            iat: 0,
            exp: 1,
            act,
            parent_task_id: None,
            root_task_id: None,
        }
    }

    #[test]
    fn chain_of_root_task_is_its_agent() {
        let root = claims(None);
        assert_eq!(chain(&root), vec!["spiffe://t/a"]);
        assert_eq!(acting_agent(&root), "spiffe://t/a");
    }

    #[test]
    fn chain_lists_root_first_and_current_actor_last() {
        let act = nest_actor("spiffe://t/c", Some(&nest_actor("spiffe://t/b", None)));
        let grandchild = claims(Some(act));
        assert_eq!(
            chain(&grandchild),
            vec!["spiffe://t/a", "spiffe://t/b", "spiffe://t/c"]
        );
        assert_eq!(acting_agent(&grandchild), "spiffe://t/c");
    }

    #[test]
    fn parse_form_rejects_repeated_parameter() {
        assert!(parse_form(b"scope=a&scope=b").is_err());
        let form = parse_form(b"scope=a+b&grant_type=x").expect("form");
        assert_eq!(form["scope"], "a b");
    }
}
