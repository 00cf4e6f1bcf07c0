//! What an upstream sends during a request, on its way to the agent.
//!
//! While Warden waits for an upstream's response, the server may send
//! progress and logging notifications and requests of its own
//! (`sampling/createMessage`, `elicitation/create`, `roots/list`, `ping`).
//! They reach the agent on the event stream of the agent's own POST, which
//! Warden opens when the agent accepts `text/event-stream`. A relayed
//! request gets an id chosen by Warden. The agent sends its JSON-RPC
//! response in a POST, [`super::Sessions::deliver_answer`] hands it back
//! here, and it goes to the upstream under the server's own id.
//!
//! Sampling, elicitation and roots requests are decided by policy (action
//! `server_request`) before the agent receives them, because an upstream
//! that requests something from the agent's model or user takes a step of
//! the task. Every relayed message, decision and response is recorded in
//! the trace.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use warden_core::Decision;
use warden_identity::TaskClaims;
use warden_policy::{Outcome as PolicyOutcome, Step, StepRequest};

use super::{DECISION_META_KEY, code, task_context};
use crate::audit;
use crate::state::AppState;
use crate::upstream::{Interim, RpcError, RpcOutcome};

/// Interim messages one request may have queued towards the agent.
pub const QUEUE: usize = 64;

/// Methods whose relay a policy decides.
const DECIDED_METHODS: [&str; 3] = ["sampling/createMessage", "elicitation/create", "roots/list"];

/// The response format of one agent POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The agent accepts JSON only: nothing can be relayed.
    Json,
    /// JSON unless the upstream sends something before its response; then
    /// an event stream.
    JsonFirst,
    /// An event stream from the start, because the agent prefers it.
    Stream,
}

impl Mode {
    /// Reads the mode from the agent's `Accept` header. `text/event-stream`
    /// listed before `application/json`, or with a higher `q`, is a
    /// preference for the stream.
    pub fn from_headers(headers: &HeaderMap) -> Mode {
        let mut json: Option<(f32, usize)> = None;
        let mut stream: Option<(f32, usize)> = None;
        let ranges = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','));
        for (position, range) in ranges.enumerate() {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if quality <= 0.0 {
                continue;
            }
            let slot = match media.as_str() {
                "application/json" => &mut json,
                "text/event-stream" => &mut stream,
                _ => continue,
            };
            slot.get_or_insert((quality, position));
        }
        match (json, stream) {
            (_, None) => Mode::Json,
            (None, Some(_)) => Mode::Stream,
            (Some((jq, jp)), Some((sq, sp))) => {
                if sq > jq || (sq == jq && sp < jp) {
                    Mode::Stream
                } else {
                    Mode::JsonFirst
                }
            }
        }
    }
}

/// Relays the interim messages of one agent request.
pub struct Relayer {
    /// Shared gateway state.
    pub state: Arc<AppState>,
    /// Claims of the agent's task token.
    pub claims: TaskClaims,
    /// The agent's session, in the handshake era.
    pub session_id: Option<String>,
    /// Capabilities the agent declared.
    pub capabilities: Value,
    /// Qualified name of the tool being called, or empty.
    pub tool: String,
    /// The agent's id of the request in progress.
    pub request_id: Value,
    /// True for a request of the stateless revision 2026-07-28.
    pub modern: bool,
}

impl Relayer {
    /// Handles one interim message. With `out`, the agent's event stream,
    /// it is relayed; without, notifications are dropped and requests are
    /// refused, because the agent cannot receive them.
    pub async fn handle(self: &Arc<Self>, interim: Interim, out: Option<&mpsc::Sender<String>>) {
        match interim {
            Interim::Notification { server, message } => {
                self.notification(&server, message, out).await;
            }
            Interim::Request {
                server,
                message,
                reply,
            } => self.request(&server, message, reply, out).await,
        }
    }

    async fn notification(
        &self,
        server: &str,
        mut message: Value,
        out: Option<&mpsc::Sender<String>>,
    ) {
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let Some(out) = out else {
            tracing::debug!(task.id = %self.claims.task_id, upstream = %server, method, "notification not relayed: the agent accepts no event stream");
            return;
        };
        super::dispatch::scrub_decision_key(&mut message);
        self.state.redactor.redact_json(&mut message);
        let delivered = out
            .send(crate::sse::format_event(&message.to_string()))
            .await;
        if delivered.is_err() {
            tracing::debug!(task.id = %self.claims.task_id, upstream = %server, method, "notification not relayed: the agent closed its stream");
            return;
        }
        self.record(
            "notification.relayed",
            server,
            None,
            json!({
                "method": method,
                "params": message.get("params"),
                "request_id": self.request_id,
            }),
        );
    }

    async fn request(
        self: &Arc<Self>,
        server: &str,
        message: Value,
        reply: oneshot::Sender<RpcOutcome>,
        out: Option<&mpsc::Sender<String>>,
    ) {
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let upstream_id = message.get("id").cloned().unwrap_or(Value::Null);
        let outcome = self.decide(server, &method, out.is_some());
        self.state.metrics.count_decision(outcome.decision);
        let span = self.record(
            "server_request.decision",
            server,
            Some(&outcome),
            json!({
                "method": method,
                "tool": self.tool,
                "request_id": self.request_id,
                "upstream_request_id": upstream_id,
                "errors": outcome.errors,
            }),
        );
        tracing::info!(
            task.id = %self.claims.task_id,
            upstream = %server,
            method,
            decision = %outcome.decision,
            policies = ?outcome.policy_ids,
            "server request decided"
        );

        let out = match out {
            Some(out) if outcome.decision == Decision::Allow => out,
            _ => {
                let error = self.refusal(server, &method, &outcome);
                let _ = reply.send(Err(error));
                return;
            }
        };

        // The agent gets the request under an id of Warden's, so that ids
        // of different upstreams and sessions never collide.
        let awaited = self
            .state
            .sessions
            .await_answer(&self.claims.task_id, self.session_id.as_deref());
        let mut relayed = message;
        relayed["id"] = Value::String(awaited.id.clone());
        super::dispatch::scrub_decision_key(&mut relayed);
        let event = crate::sse::format_event(&relayed.to_string());
        if out.send(event).await.is_err() {
            let error = RpcError {
                error: json!({
                    "code": code::INTERNAL_ERROR,
                    "message": format!("the client closed its stream before Warden could pass on {method}"),
                }),
            };
            self.finish(server, &method, &span, &awaited.id, Err(error), reply);
            return;
        }

        let relayer = self.clone();
        let server = server.to_owned();
        tokio::spawn(async move {
            let (id, outcome, reply) = wait_for_response(awaited, reply, &method).await;
            relayer.finish(&server, &method, &span, &id, outcome, reply);
        });
    }

    /// Builds the error the upstream gets for a refused request, with
    /// Warden's decision in `data`.
    fn refusal(&self, server: &str, method: &str, outcome: &PolicyOutcome) -> RpcError {
        RpcError {
            error: json!({
                "code": code::INVALID_REQUEST,
                "message": format!("Warden refused {method} from server {server}: {}", outcome.reason),
                "data": { DECISION_META_KEY: {
                    "decision": outcome.decision.as_str(),
                    "policy_ids": outcome.policy_ids,
                    "reason": outcome.reason,
                    "task_id": self.claims.task_id,
                    "trace_id": self.claims.trace_id,
                }},
            }),
        }
    }

    /// Decides whether a server request may reach the agent.
    fn decide(&self, server: &str, method: &str, can_stream: bool) -> PolicyOutcome {
        let refuse = |policy: &str, reason: String| PolicyOutcome {
            decision: Decision::Deny,
            policy_ids: vec![policy.to_owned()],
            reason,
            errors: Vec::new(),
            arguments: None,
        };
        if !can_stream {
            return refuse(
                "warden:no-event-stream",
                "the agent's request does not accept text/event-stream, so Warden cannot pass server requests on to it".into(),
            );
        }
        if self.modern {
            // NOTE: revision 2026-07-28 requests input from the client with
            // an `input_required` result rather than a request on the
            // stream, and Warden does not translate one into the other.
            return refuse(
                "warden:protocol-revision",
                format!("Warden does not pass {method} on to agents of revision 2026-07-28"),
            );
        }
        let capability = match method {
            "sampling/createMessage" => Some("sampling"),
            "elicitation/create" => Some("elicitation"),
            "roots/list" => Some("roots"),
            _ => None,
        };
        if let Some(capability) = capability
            && !self
                .capabilities
                .get(capability)
                .is_some_and(Value::is_object)
        {
            return refuse(
                "warden:client-capability",
                format!("the agent did not declare the {capability} capability"),
            );
        }
        if !DECIDED_METHODS.contains(&method) {
            return PolicyOutcome {
                decision: Decision::Allow,
                policy_ids: Vec::new(),
                reason: format!("{method} is relayed without a policy decision"),
                errors: Vec::new(),
                arguments: None,
            };
        }
        let mut outcome = self.state.engine().decide(&StepRequest {
            task: &task_context(&self.claims),
            step: Step::ServerRequest {
                server,
                method,
                tool: &self.tool,
            },
        });
        if outcome.decision == Decision::Hold {
            // Approvals cover tool calls only, so no approval can exist.
            outcome.decision = Decision::Deny;
            outcome.reason = format!(
                "{}; approvals cover tool calls only, so this {method} is refused",
                outcome.reason
            );
        }
        outcome
    }

    /// Sends the agent's response (or Warden's error) to the upstream and
    /// records it.
    fn finish(
        &self,
        server: &str,
        method: &str,
        span: &str,
        relay_id: &str,
        outcome: RpcOutcome,
        reply: oneshot::Sender<RpcOutcome>,
    ) {
        let detail = match &outcome {
            Ok(result) => json!({
                "method": method,
                "outcome": "result",
                "relay_id": relay_id,
                "action": result.get("action"),
                "result_sha256": warden_core::json::canonical_hash(result),
            }),
            Err(error) => json!({
                "method": method,
                "outcome": "error",
                "relay_id": relay_id,
                "error": error.error,
            }),
        };
        if reply.send(outcome).is_err() {
            tracing::debug!(task.id = %self.claims.task_id, upstream = %server, method, "the upstream request ended before the agent responded");
        }
        audit::record(
            &self.state,
            &self.claims,
            audit::Step {
                kind: "server_request.result",
                target: Some(server),
                decision: None,
                policy_ids: &[],
                reason: None,
                detail,
                span_id: None,
                parent_span_id: Some(span.to_owned()),
            },
        );
    }

    fn record(
        &self,
        kind: &str,
        server: &str,
        outcome: Option<&PolicyOutcome>,
        detail: Value,
    ) -> String {
        audit::record(
            &self.state,
            &self.claims,
            audit::Step {
                kind,
                target: Some(server),
                decision: outcome.map(|o| o.decision),
                policy_ids: outcome.map(|o| o.policy_ids.as_slice()).unwrap_or(&[]),
                reason: outcome.map(|o| o.reason.as_str()),
                detail,
                span_id: None,
                parent_span_id: None,
            },
        )
    }
}

/// Waits for the agent's response to a relayed request, or until the
/// upstream request ends. Returns the relay id, the outcome for the upstream
/// and the reply channel.
async fn wait_for_response(
    mut awaited: super::session::AwaitedAnswer,
    mut reply: oneshot::Sender<RpcOutcome>,
    method: &str,
) -> (String, RpcOutcome, oneshot::Sender<RpcOutcome>) {
    let id = awaited.id.clone();
    let response = tokio::select! {
        response = &mut awaited.answer => response.ok(),
        () = reply.closed() => None,
    };
    let outcome = response.unwrap_or_else(|| {
        Err(RpcError {
            error: json!({
                "code": code::INTERNAL_ERROR,
                "message": format!("the client sent no response to {method} before the call ended"),
            }),
        })
    });
    (id, outcome, reply)
}

/// Returns the qualified tool name of a `tools/call` on the endpoint of
/// `server` (`None` for `/mcp`), or empty for other methods.
pub fn called_tool(server: Option<&str>, method: &str, params: Option<&Value>) -> String {
    if method != "tools/call" {
        return String::new();
    }
    let name = params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    match server {
        Some(server) => format!("{server}__{name}"),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn mode(accept: &str) -> Mode {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(accept).expect("header"),
        );
        Mode::from_headers(&headers)
    }

    #[test]
    fn mode_json_first_when_json_listed_first() {
        assert_eq!(mode("application/json, text/event-stream"), Mode::JsonFirst);
    }

    #[test]
    fn mode_stream_when_stream_listed_first() {
        assert_eq!(mode("text/event-stream, application/json"), Mode::Stream);
    }

    #[test]
    fn mode_follows_quality_over_order() {
        assert_eq!(
            mode("text/event-stream;q=0.5, application/json"),
            Mode::JsonFirst
        );
    }

    #[test]
    fn mode_json_without_event_stream() {
        assert_eq!(mode("application/json"), Mode::Json);
    }

    #[test]
    fn mode_ignores_zero_quality() {
        assert_eq!(mode("application/json, text/event-stream;q=0"), Mode::Json);
    }

    #[test]
    fn called_tool_is_qualified_on_server_endpoint() {
        let params = json!({ "name": "echo" });
        assert_eq!(
            called_tool(Some("everything"), "tools/call", Some(&params)),
            "everything__echo"
        );
    }

    #[test]
    fn called_tool_is_empty_for_other_methods() {
        let params = json!({ "uri": "test://x" });
        assert_eq!(called_tool(None, "resources/read", Some(&params)), "");
    }
}
