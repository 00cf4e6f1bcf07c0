//! MCP methods as Warden serves them.
//!
//! Listing methods gather from the upstreams in reach of the endpoint and
//! show only what the task may use. `tools/call`, `resources/read` and
//! `prompts/get` are decided by policy before they reach the upstream; a
//! refused call gets a `CallToolResult` with `isError: true`, a sentence the
//! model can act on, and the decision under [`DECISION_META_KEY`] in
//! `_meta`. Methods Warden does not know are rejected, not forwarded.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};
use warden_core::Decision;
use warden_identity::TaskClaims;
use warden_policy::{Outcome as PolicyOutcome, Step, StepRequest};
use warden_store::ApprovalStatus;

use super::{DECISION_META_KEY, HANDSHAKE_VERSIONS, MODERN_VERSIONS, RpcError, code, task_context};
use crate::approvals;
use crate::audit;
use crate::scope;
use crate::state::AppState;
use crate::tracecontext::{self, TraceParent};
use crate::upstream::Upstream;

/// Everything a method handler needs.
pub struct Context<'a> {
    /// Shared gateway state.
    pub state: &'a Arc<AppState>,
    /// Claims of the caller's task token.
    pub claims: &'a TaskClaims,
    /// Server of `/mcp/{server}`, or `None` for `/mcp`.
    pub server: Option<&'a str>,
    /// The agent's JSON-RPC request id.
    pub request_id: &'a Value,
    /// The agent's trace context from the `traceparent` header.
    pub caller_trace: Option<TraceParent>,
    /// Where an upstream's notifications and requests during this request
    /// go, on their way to the agent.
    pub relay: Option<crate::upstream::InterimSender>,
}

/// Result of one method: a result, an error, or an opened session.
pub enum Outcome {
    /// A result.
    Result(Value),
    /// A JSON-RPC error.
    Error(RpcError),
    /// The result of `initialize` and the new session's id.
    Initialized { result: Value, session: String },
}

impl From<Result<Value, RpcError>> for Outcome {
    fn from(result: Result<Value, RpcError>) -> Outcome {
        match result {
            Ok(value) => Outcome::Result(value),
            Err(error) => Outcome::Error(error),
        }
    }
}

const ENVELOPE_PREFIX: &str = "io.modelcontextprotocol/";

/// `params._meta` key by which an agent names the model's tool-call id that
/// a `tools/call` answers. Warden reads it and does not forward it.
pub const TOOL_CALL_ID_META_KEY: &str = "dev.warden/tool_call_id";

/// Runs one request.
pub async fn dispatch(context: &Context<'_>, method: &str, params: Option<&Value>) -> Outcome {
    let empty = Value::Object(Map::new());
    let params = params.unwrap_or(&empty);
    match method {
        "initialize" => initialize(context, params),
        "server/discover" => Outcome::Result(discover(context)),
        "ping" => Outcome::Result(json!({})),
        "tools/list" => tools_list(context).await.into(),
        "tools/call" => tools_call(context, params).await.into(),
        "resources/list" => gather(context, |c| &c.resources, "resources", None).into(),
        "resources/templates/list" => gather(
            context,
            |c| &c.resource_templates,
            "resourceTemplates",
            None,
        )
        .into(),
        "prompts/list" => gather(context, |c| &c.prompts, "prompts", Some("name")).into(),
        "resources/read" => resources_read(context, params).await.into(),
        "prompts/get" => prompts_get(context, params).await.into(),
        "completion/complete" | "logging/setLevel" => {
            forward_plain(context, method, params).await.into()
        }
        other => Outcome::Error(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("method {other:?} is not supported by Warden"),
        )),
    }
}

/// Returns the serverInfo this endpoint presents.
pub fn server_info(context: &Context<'_>) -> Value {
    if let Some(upstream) = context.server.and_then(|s| context.state.upstreams.get(s)) {
        let info = &upstream.catalog().initialize["serverInfo"];
        if info.is_object() {
            return info.clone();
        }
    }
    json!({ "name": "warden", "title": "Warden", "version": env!("CARGO_PKG_VERSION") })
}

fn capabilities(context: &Context<'_>) -> Value {
    let upstreams = reachable(context);
    let mut capabilities = Map::new();
    let offered = |name: &str| {
        upstreams.iter().any(|u| {
            u.catalog()
                .capabilities()
                .get(name)
                .is_some_and(Value::is_object)
        })
    };
    // NOTE: listChanged is not advertised because Warden pins the lists
    // taken at start and does not relay list changes to agents.
    capabilities.insert("tools".into(), json!({}));
    for name in ["resources", "prompts"] {
        if offered(name) {
            capabilities.insert(name.into(), json!({}));
        }
    }
    // Subscriptions are served on one server's endpoint, by that server.
    let subscribable = context.server.is_some()
        && upstreams.iter().any(|u| {
            u.catalog()
                .capabilities()
                .pointer("/resources/subscribe")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        });
    if subscribable {
        capabilities.insert("resources".into(), json!({ "subscribe": true }));
    }
    if context.server.is_some() {
        for name in ["logging", "completions"] {
            if offered(name) {
                capabilities.insert(name.into(), json!({}));
            }
        }
    }
    Value::Object(capabilities)
}

fn instructions(context: &Context<'_>) -> Option<Value> {
    match context.server.and_then(|s| context.state.upstreams.get(s)) {
        Some(upstream) => upstream.catalog().initialize.get("instructions").cloned(),
        None => Some(Value::String(
            "Tools of every upstream server are named {server}__{tool}. Warden decides each call by policy; a refused call returns isError with the reason.".into(),
        )),
    }
}

fn initialize(context: &Context<'_>, params: &Value) -> Outcome {
    let requested = params.get("protocolVersion").and_then(Value::as_str);
    let version = match requested {
        Some(v) if HANDSHAKE_VERSIONS.contains(&v) => v,
        _ => HANDSHAKE_VERSIONS[HANDSHAKE_VERSIONS.len() - 1],
    };
    let Some(session) = context.state.sessions.create(
        &context.claims.task_id,
        crate::delegation::acting_agent(context.claims),
        context.server,
        version,
        params
            .get("capabilities")
            .filter(|c| c.is_object())
            .cloned()
            .unwrap_or_else(|| json!({})),
        context.claims.exp,
    ) else {
        return Outcome::Error(RpcError::new(
            code::INVALID_REQUEST,
            format!(
                "too many open sessions for task {}: at most {} per task, {} per agent and {} in all; close one with DELETE /mcp",
                context.claims.task_id,
                super::session::MAX_SESSIONS_PER_TASK,
                super::session::MAX_SESSIONS_PER_AGENT,
                super::session::MAX_SESSIONS
            ),
        ));
    };
    let mut result = json!({
        "protocolVersion": version,
        "capabilities": capabilities(context),
        "serverInfo": server_info(context),
    });
    if let Some(instructions) = instructions(context) {
        result["instructions"] = instructions;
    }
    tracing::debug!(task.id = %context.claims.task_id, session = %session.id, version, "MCP session opened");
    Outcome::Initialized {
        result,
        session: session.id.clone(),
    }
}

fn discover(context: &Context<'_>) -> Value {
    let mut result = json!({
        "supportedVersions": MODERN_VERSIONS,
        "capabilities": capabilities(context),
    });
    if let Some(instructions) = instructions(context) {
        result["instructions"] = instructions;
    }
    result
}

fn reachable(context: &Context<'_>) -> Vec<Arc<Upstream>> {
    match context.server {
        Some(server) => context
            .state
            .upstreams
            .get(server)
            .cloned()
            .into_iter()
            .collect(),
        None => context.state.upstreams.values().cloned().collect(),
    }
}

/// Returns the name an endpoint shows for an upstream item.
fn public_name(context: &Context<'_>, server: &str, name: &str) -> String {
    match context.server {
        Some(_) => name.to_owned(),
        None => format!("{server}__{name}"),
    }
}

/// Resolves a public name to its upstream and the upstream's own name.
fn resolve(context: &Context<'_>, name: &str) -> Option<(Arc<Upstream>, String)> {
    match context.server {
        Some(server) => {
            let upstream = context.state.upstreams.get(server)?.clone();
            Some((upstream, name.to_owned()))
        }
        None => {
            let (server, rest) = name.split_once("__")?;
            let upstream = context.state.upstreams.get(server)?.clone();
            Some((upstream, rest.to_owned()))
        }
    }
}

async fn tools_list(context: &Context<'_>) -> Result<Value, RpcError> {
    // Store what blocked tools offer now and unblock accepted ones, so an
    // accepted tool is listed without first being called by name.
    for upstream in reachable(context) {
        // A tool that appeared since the last look is found here too.
        upstream.check_tools().await;
        if !upstream.blocked_tools().is_empty() {
            crate::pins::sync(context.state, &upstream).await;
        }
    }
    let engine = context.state.engine();
    let task = task_context(context.claims);
    let mut tools = Vec::new();
    for upstream in reachable(context) {
        for tool in &upstream.catalog().tools {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let qualified = format!("{}__{name}", upstream.name());
            if !scope::allows(&context.claims.tools, &qualified)
                || upstream.blocked_reason(name).is_some()
            {
                continue;
            }
            let outcome = engine.decide(&StepRequest {
                task: &task,
                step: Step::ListTool { tool: &qualified },
            });
            if outcome.decision == Decision::Deny {
                continue;
            }
            let mut shown = tool.clone();
            shown["name"] = Value::String(public_name(context, upstream.name(), name));
            tools.push(shown);
        }
    }
    Ok(json!({ "tools": tools }))
}

fn gather(
    context: &Context<'_>,
    items: impl Fn(&crate::upstream::Catalog) -> &Vec<Value>,
    field: &str,
    rename: Option<&str>,
) -> Result<Value, RpcError> {
    let mut out = Vec::new();
    for upstream in reachable(context) {
        let catalog = upstream.catalog();
        for item in items(&catalog) {
            let in_scope = match rename {
                Some(key) => item.get(key).and_then(Value::as_str).is_some_and(|name| {
                    scope::allows(
                        &context.claims.tools,
                        &format!("{}__{name}", upstream.name()),
                    )
                }),
                None => scope::allows_server(&context.claims.tools, upstream.name()),
            };
            if !in_scope {
                continue;
            }
            let mut shown = item.clone();
            if let Some(key) = rename
                && let Some(name) = item.get(key).and_then(Value::as_str)
            {
                shown[key] = Value::String(public_name(context, upstream.name(), name));
            }
            out.push(shown);
        }
    }
    Ok(json!({ field: out }))
}

async fn tools_call(context: &Context<'_>, params: &Value) -> Result<Value, RpcError> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err(RpcError::new(
            code::INVALID_PARAMS,
            "tools/call needs params.name, the tool's name",
        ));
    };
    let arguments = params.get("arguments").cloned().unwrap_or(Value::Null);
    if !(arguments.is_object() || arguments.is_null()) {
        return Err(RpcError::new(
            code::INVALID_PARAMS,
            "params.arguments must be an object",
        ));
    }
    let Some((upstream, tool)) = resolve(context, name).filter(|(u, t)| u.has_tool(t)) else {
        // Refused like any other call, as a tool result the model can read:
        // that is also how MCP servers answer a tool they do not have.
        let outcome = PolicyOutcome {
            decision: Decision::Deny,
            policy_ids: vec![warden_policy::UNKNOWN_TOOL_POLICY_ID.to_owned()],
            reason: format!(
                "there is no tool {name:?}; call tools/list for the tools this task may use"
            ),
            errors: Vec::new(),
            arguments: None,
        };
        context.state.metrics.count_decision(outcome.decision);
        audit::record(
            context.state,
            context.claims,
            audit::Step {
                kind: "tool.decision",
                target: Some(name),
                decision: Some(outcome.decision),
                policy_ids: &outcome.policy_ids,
                reason: Some(&outcome.reason),
                detail: json!({ "request_id": context.request_id }),
                span_id: None,
                parent_span_id: None,
            },
        );
        return Ok(refusal(context.claims, name, &outcome, None));
    };
    let qualified = format!("{}__{tool}", upstream.name());
    let claims = context.claims;
    let state = context.state;
    upstream.check_tools().await;

    // Link the call to the model response that asked for it, if any.
    let tool_call_id = params
        .pointer("/_meta/dev.warden~1tool_call_id")
        .and_then(Value::as_str);
    let names: &[&str] = if context.server.is_some() {
        &[qualified.as_str(), tool.as_str()]
    } else {
        &[qualified.as_str()]
    };
    let requested_hash = if arguments.is_null() {
        warden_core::json::canonical_hash(&json!({}))
    } else {
        warden_core::json::canonical_hash(&arguments)
    };
    let requested_by =
        state
            .requested_calls
            .take(claims.root_task(), tool_call_id, names, &requested_hash);
    let caller_trace = params
        .pointer("/_meta/traceparent")
        .and_then(Value::as_str)
        .and_then(TraceParent::parse)
        .or_else(|| context.caller_trace.clone());
    let parent_span = caller_trace
        .as_ref()
        .and_then(|caller| caller.parent_in(&claims.trace_id))
        .map(str::to_owned)
        .or_else(|| requested_by.as_ref().map(|link| link.span_id.clone()));

    let mut shadow = Value::Null;
    if upstream.blocked_reason(&tool).is_some() {
        // An operator may have accepted the definition since.
        crate::pins::recheck(state, &upstream, &tool).await;
    }
    let outcome = if let Some(reason) = upstream.blocked_reason(&tool) {
        PolicyOutcome {
            decision: Decision::Deny,
            policy_ids: vec!["warden:tool-changed".into()],
            reason,
            errors: Vec::new(),
            arguments: None,
        }
    } else if scope::allows(&claims.tools, &qualified) {
        match crate::memory::load(state, claims).await {
            Ok(memory) => {
                let decided = crate::memory::decide(
                    state,
                    &StepRequest {
                        task: &task_context(claims),
                        step: Step::CallTool {
                            tool: &qualified,
                            arguments: &arguments,
                            model_requested: requested_by.is_some(),
                            memory: &memory,
                        },
                    },
                );
                shadow = decided.shadow;
                decided.outcome
            }
            Err(denial) => denial,
        }
    } else {
        PolicyOutcome {
            decision: Decision::Deny,
            policy_ids: vec!["warden:task-scope".into()],
            reason: format!(
                "{qualified} is outside this task's tool scope ({}); start a task whose tools include it",
                claims.tools.join(", ")
            ),
            errors: Vec::new(),
            arguments: None,
        }
    };
    state.metrics.count_decision(outcome.decision);
    let decided_arguments = outcome
        .arguments
        .clone()
        .unwrap_or_else(|| arguments.clone());
    let span = audit::record(
        state,
        claims,
        audit::Step {
            kind: "tool.decision",
            target: Some(&qualified),
            decision: Some(outcome.decision),
            policy_ids: &outcome.policy_ids,
            reason: Some(&outcome.reason),
            detail: json!({
                "arguments": decided_arguments,
                "arguments_sha256": warden_core::json::canonical_hash(&decided_arguments),
                "errors": outcome.errors,
                "request_id": context.request_id,
                "model_requested": requested_by.is_some(),
                "requested_by": requested_by.as_ref().map(crate::llm::Link::to_json),
                "shadow": shadow,
            }),
            span_id: None,
            parent_span_id: parent_span,
        },
    );
    tracing::info!(
        task.id = %claims.task_id,
        agent.id = %crate::delegation::acting_agent(claims),
        tool.name = %qualified,
        decision = %outcome.decision,
        policies = ?outcome.policy_ids,
        "tool call decided"
    );
    let mut outcome = outcome;
    if outcome.decision == Decision::Hold {
        match approvals::resolve(
            state,
            claims,
            &qualified,
            &decided_arguments,
            &outcome,
            &span,
        )
        .await
        {
            Ok(approvals::Resolution::Proceed { approval_id }) => {
                tracing::info!(task.id = %claims.task_id, tool.name = %qualified, approval.id = %approval_id, "approved call proceeds");
            }
            Ok(approvals::Resolution::Refuse {
                approval_id,
                status,
            }) => {
                if status == ApprovalStatus::Denied {
                    outcome.decision = Decision::Deny;
                    outcome.reason = format!(
                        "a person denied this exact call (approval {approval_id}); the decision is final"
                    );
                    audit::record(
                        state,
                        claims,
                        audit::Step {
                            kind: "approval.refused",
                            target: Some(&qualified),
                            decision: Some(Decision::Deny),
                            policy_ids: &outcome.policy_ids,
                            reason: Some(&outcome.reason),
                            detail: json!({ "approval_id": approval_id }),
                            span_id: None,
                            parent_span_id: Some(span.clone()),
                        },
                    );
                } else if status == ApprovalStatus::Expired {
                    outcome.reason = format!(
                        "{}; approval request {approval_id} expired before a decision, so retry to request a new one",
                        outcome.reason
                    );
                }
                return Ok(refusal(claims, &qualified, &outcome, Some(&approval_id)));
            }
            Err(error) => {
                tracing::error!(task.id = %claims.task_id, tool.name = %qualified, %error, "approval store failed; denying the held call");
                outcome.decision = Decision::Deny;
                outcome.reason =
                    format!("the approval store is unavailable ({error}); try again later");
                return Ok(refusal(claims, &qualified, &outcome, None));
            }
        }
    } else if outcome.decision != Decision::Allow {
        return Ok(refusal(claims, &qualified, &outcome, None));
    }

    // The call goes through: count it in the task's memory.
    let definition = state.engine().tool(&qualified).cloned();
    if let Some(definition) = &definition {
        let sums = crate::memory::sums_of(&definition.sum_arguments, &decided_arguments);
        if let Err(message) =
            crate::memory::record_call(state, claims, &definition.effective_classes(), &sums).await
        {
            // An uncounted call would slip past the limits that later
            // decisions read, so it does not run.
            let outcome = PolicyOutcome {
                decision: Decision::Deny,
                policy_ids: vec![crate::memory::MEMORY_POLICY_ID.to_owned()],
                reason: message,
                errors: Vec::new(),
                arguments: None,
            };
            return Ok(refusal(claims, &qualified, &outcome, None));
        }
    }
    let mut forwarded = Map::new();
    forwarded.insert("name".into(), Value::String(tool));
    if !decided_arguments.is_null() {
        forwarded.insert("arguments".into(), decided_arguments);
    }
    if let Some(mut meta) = forwardable_meta(params) {
        let mut emptied = false;
        if let Some(object) = meta.as_object_mut() {
            emptied = object.remove(TOOL_CALL_ID_META_KEY).is_some() && object.is_empty();
            // The upstream's parent is Warden's decision span.
            if object.contains_key("traceparent") {
                let value = tracecontext::format(&claims.trace_id, &span, caller_trace.as_ref());
                object.insert("traceparent".into(), Value::String(value));
            }
        }
        if !emptied {
            forwarded.insert("_meta".into(), meta);
        }
    }
    let credential = match upstream.task_credential(claims, &state.txn_tokens) {
        Ok(credential) => credential,
        Err(message) => {
            tracing::error!(upstream = %upstream.name(), "{message}");
            return Err(RpcError::new(
                code::INTERNAL_ERROR,
                format!(
                    "the credential for {} is unavailable: {message}",
                    upstream.name()
                ),
            ));
        }
    };
    let started = Instant::now();
    let result = upstream
        .request_relayed(
            "tools/call",
            Some(Value::Object(forwarded)),
            &credential.headers,
            context.relay.clone(),
        )
        .await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (detail, reply) = match result {
        Ok(Ok(mut result)) => (
            {
                scrub_decision_key(&mut result);
                let mut secrets = credential.secrets;
                secrets.extend(upstream.static_secrets());
                let redactions = redact_result(state, &mut result, &secrets);

                json!({
                "outcome": "result",
                "is_error": result.get("isError").and_then(Value::as_bool).unwrap_or(false),
                "duration_ms": elapsed_ms,
                "redactions": redactions,
                })
            },
            Ok(result),
        ),
        Ok(Err(error)) => (
            json!({ "outcome": "error", "error": error.error, "duration_ms": elapsed_ms }),
            Err(upstream_rpc_error(error.error)),
        ),
        Err(error) => {
            state
                .metrics
                .upstream_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(task.id = %claims.task_id, tool.name = %qualified, %error, "upstream call failed");
            (
                json!({ "outcome": "failure", "error": error.to_string(), "duration_ms": elapsed_ms }),
                Err(RpcError::new(
                    code::INTERNAL_ERROR,
                    format!("{error}; retry the call"),
                )),
            )
        }
    };
    audit::record(
        state,
        claims,
        audit::Step {
            kind: "tool.result",
            target: Some(&qualified),
            decision: None,
            policy_ids: &[],
            reason: None,
            detail,
            span_id: None,
            parent_span_id: Some(span),
        },
    );
    // The output's labels join the task's memory before the agent sees
    // it; output whose labels cannot be recorded is withheld, since a
    // later send would then not know what the task has read.
    if reply.is_ok()
        && let Some(definition) = &definition
        && let Err(message) =
            crate::memory::record_labels(state, claims, &definition.effective_labels()).await
    {
        return Err(RpcError::new(
            code::INTERNAL_ERROR,
            format!("Warden withheld the result of {qualified}: {message}"),
        ));
    }
    reply
}

async fn resources_read(context: &Context<'_>, params: &Value) -> Result<Value, RpcError> {
    let Some(uri) = params.get("uri").and_then(Value::as_str) else {
        return Err(RpcError::new(
            code::INVALID_PARAMS,
            "resources/read needs params.uri",
        ));
    };
    let upstream = resource_owner(context, uri)?;
    let outcome = if scope::allows_server(&context.claims.tools, upstream.name()) {
        context.state.engine().decide(&StepRequest {
            task: &task_context(context.claims),
            step: Step::ReadResource {
                server: upstream.name(),
                uri,
            },
        })
    } else {
        out_of_scope(
            context,
            &format!("the resources of server {}", upstream.name()),
        )
    };
    decide_and_forward(
        context,
        &upstream,
        "resources/read",
        "resource",
        uri,
        params.clone(),
        outcome,
    )
    .await
}

async fn prompts_get(context: &Context<'_>, params: &Value) -> Result<Value, RpcError> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err(RpcError::new(
            code::INVALID_PARAMS,
            "prompts/get needs params.name",
        ));
    };
    let known = |u: &Arc<Upstream>, p: &str| {
        u.catalog()
            .prompts
            .iter()
            .any(|item| item.get("name").and_then(Value::as_str) == Some(p))
    };
    let Some((upstream, prompt)) = resolve(context, name).filter(|(u, p)| known(u, p)) else {
        return Err(RpcError::new(
            code::INVALID_PARAMS,
            format!("unknown prompt {name:?}; call prompts/list"),
        ));
    };
    let qualified = format!("{}__{prompt}", upstream.name());
    let outcome = if scope::allows(&context.claims.tools, &qualified) {
        context.state.engine().decide(&StepRequest {
            task: &task_context(context.claims),
            step: Step::GetPrompt {
                server: upstream.name(),
                name: &prompt,
            },
        })
    } else {
        out_of_scope(context, &format!("prompt {qualified}"))
    };
    let mut forwarded = params.clone();
    forwarded["name"] = Value::String(prompt.clone());
    let target = format!("{}__{prompt}", upstream.name());
    decide_and_forward(
        context,
        &upstream,
        "prompts/get",
        "prompt",
        &target,
        forwarded,
        outcome,
    )
    .await
}

/// Records the decision of a resource read or prompt get and forwards it
/// when allowed. A refusal here is a JSON-RPC error, since these results
/// have no `isError` field.
async fn decide_and_forward(
    context: &Context<'_>,
    upstream: &Upstream,
    method: &str,
    kind: &str,
    target: &str,
    params: Value,
    outcome: PolicyOutcome,
) -> Result<Value, RpcError> {
    let state = context.state;
    let mut outcome = outcome;
    if outcome.decision == Decision::Hold {
        // Approvals cover tool calls only, so a held read or prompt is
        // refused outright rather than left waiting for an approval that
        // cannot be requested.
        outcome.decision = Decision::Deny;
        outcome.reason = format!(
            "{}; approvals cover tool calls only, so this {kind} request is refused",
            outcome.reason
        );
    }
    state.metrics.count_decision(outcome.decision);
    let span = audit::record(
        state,
        context.claims,
        audit::Step {
            kind: &format!("{kind}.decision"),
            target: Some(target),
            decision: Some(outcome.decision),
            policy_ids: &outcome.policy_ids,
            reason: Some(&outcome.reason),
            detail: json!({ "errors": outcome.errors, "request_id": context.request_id }),
            span_id: None,
            parent_span_id: None,
        },
    );
    if outcome.decision != Decision::Allow {
        let mut error = RpcError::new(
            code::INVALID_REQUEST,
            format!("Warden refused {method} of {target}: {}", outcome.reason),
        );
        error.data =
            Some(json!({ DECISION_META_KEY: decision_json(context.claims, &outcome, None) }));
        return Err(error);
    }
    let params = strip_envelope(params);
    let result = upstream
        .request_relayed(
            method,
            Some(params),
            &axum::http::HeaderMap::new(),
            context.relay.clone(),
        )
        .await;
    let (detail, reply) = match result {
        Ok(Ok(mut result)) => {
            scrub_decision_key(&mut result);
            let redactions = redact_result(context.state, &mut result, &upstream.static_secrets());
            (
                json!({ "outcome": "result", "redactions": redactions }),
                Ok(result),
            )
        }
        Ok(Err(error)) => (
            json!({ "outcome": "error", "error": error.error }),
            Err(upstream_rpc_error(error.error)),
        ),
        Err(error) => {
            state
                .metrics
                .upstream_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (
                json!({ "outcome": "failure", "error": error.to_string() }),
                Err(RpcError::new(code::INTERNAL_ERROR, error.to_string())),
            )
        }
    };
    audit::record(
        state,
        context.claims,
        audit::Step {
            kind: &format!("{kind}.result"),
            target: Some(target),
            decision: None,
            policy_ids: &[],
            reason: None,
            detail,
            span_id: None,
            parent_span_id: Some(span),
        },
    );
    reply
}

async fn forward_plain(
    context: &Context<'_>,
    method: &str,
    params: &Value,
) -> Result<Value, RpcError> {
    let Some(upstream) = context.server.and_then(|s| context.state.upstreams.get(s)) else {
        if method == "logging/setLevel" {
            return Ok(json!({}));
        }
        return Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("{method} is served on /mcp/{{server}} only, where the server is unambiguous"),
        ));
    };
    if !scope::allows_server(&context.claims.tools, upstream.name()) {
        return Err(RpcError::new(
            code::INVALID_REQUEST,
            format!(
                "{method} on server {} is outside this task's scope ({}); start a task whose tools include {}__*",
                upstream.name(),
                context.claims.tools.join(", "),
                upstream.name()
            ),
        ));
    }
    // Forward only what the upstream offers and Warden advertises.
    let capability = match method {
        "completion/complete" => Some("completions"),
        "logging/setLevel" => Some("logging"),
        _ => None,
    };
    let offered = capability.is_some_and(|name| {
        upstream
            .catalog()
            .capabilities()
            .get(name)
            .is_some_and(Value::is_object)
    });
    if !offered {
        return Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!(
                "{method} is not offered through Warden by upstream {}",
                upstream.name()
            ),
        ));
    }
    audit::record(
        context.state,
        context.claims,
        audit::Step {
            kind: "method.forwarded",
            target: Some(upstream.name()),
            decision: None,
            policy_ids: &[],
            reason: None,
            detail: json!({ "method": method, "request_id": context.request_id }),
            span_id: None,
            parent_span_id: None,
        },
    );
    match upstream
        .request(method, Some(strip_envelope(params.clone())))
        .await
    {
        Ok(Ok(mut result)) => {
            scrub_decision_key(&mut result);
            redact_result(context.state, &mut result, &upstream.static_secrets());
            Ok(result)
        }
        Ok(Err(error)) => Err(upstream_rpc_error(error.error)),
        Err(error) => Err(RpcError::new(code::INTERNAL_ERROR, error.to_string())),
    }
}

fn resource_owner(context: &Context<'_>, uri: &str) -> Result<Arc<Upstream>, RpcError> {
    let upstreams = reachable(context);
    if context.server.is_some() {
        return upstreams
            .into_iter()
            .next()
            .ok_or_else(|| RpcError::new(code::INVALID_PARAMS, "no such server"));
    }
    let listed = |u: &&Arc<Upstream>| {
        u.catalog()
            .resources
            .iter()
            .any(|r| r.get("uri").and_then(Value::as_str) == Some(uri))
    };
    let templated = |u: &&Arc<Upstream>| {
        u.catalog().resource_templates.iter().any(|t| {
            t.get("uriTemplate")
                .and_then(Value::as_str)
                .and_then(|template| template.split('{').next())
                .is_some_and(|prefix| !prefix.is_empty() && uri.starts_with(prefix))
        })
    };
    let mut owners: Vec<&Arc<Upstream>> = upstreams.iter().filter(listed).collect();
    if owners.is_empty() {
        owners = upstreams.iter().filter(templated).collect();
    }
    match owners.as_slice() {
        [owner] => Ok((*owner).clone()),
        [] => Err(RpcError::new(
            code::INVALID_PARAMS,
            format!(
                "unknown resource {uri:?}; call resources/list, or read it through /mcp/{{server}}"
            ),
        )),
        several => Err(RpcError::new(
            code::INVALID_PARAMS,
            format!(
                "resource {uri:?} is offered by several servers ({}); read it through /mcp/{{server}}",
                several
                    .iter()
                    .map(|u| u.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn out_of_scope(context: &Context<'_>, what: &str) -> PolicyOutcome {
    PolicyOutcome {
        decision: Decision::Deny,
        policy_ids: vec!["warden:task-scope".into()],
        reason: format!(
            "{what} is outside this task's scope ({}); start a task whose tools include it",
            context.claims.tools.join(", ")
        ),
        errors: Vec::new(),
        arguments: None,
    }
}

/// Returns the `_meta` of a forwarded call: the client's own, without the
/// 2026-07-28 envelope keys that a handshake-era upstream does not expect.
fn forwardable_meta(params: &Value) -> Option<Value> {
    let meta = params.get("_meta")?.as_object()?;
    let kept: Map<String, Value> = meta
        .iter()
        .filter(|(key, _)| !key.starts_with(ENVELOPE_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if kept.is_empty() && !meta.is_empty() {
        return None;
    }
    Some(Value::Object(kept))
}

fn strip_envelope(mut params: Value) -> Value {
    let meta = forwardable_meta(&params);
    if let Some(object) = params.as_object_mut() {
        match meta {
            Some(meta) => {
                object.insert("_meta".into(), meta);
            }
            None => {
                object.remove("_meta");
            }
        }
    }
    params
}

/// Removes Warden's decision key from everything an upstream sent, at any
/// depth: only Warden speaks under it, and an upstream that set it could
/// fake a refusal or a policy id.
pub fn scrub_decision_key(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove(DECISION_META_KEY);
            for child in map.values_mut() {
                scrub_decision_key(child);
            }
        }
        Value::Array(items) => {
            for child in items {
                scrub_decision_key(child);
            }
        }
        _ => {}
    }
}

fn upstream_rpc_error(mut error: Value) -> RpcError {
    scrub_decision_key(&mut error);
    RpcError {
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
    }
}

fn decision_json(claims: &TaskClaims, outcome: &PolicyOutcome, approval_id: Option<&str>) -> Value {
    let mut decision = json!({
        "decision": outcome.decision.as_str(),
        "policy_ids": outcome.policy_ids,
        "reason": outcome.reason,
        "task_id": claims.task_id,
        "trace_id": claims.trace_id,
    });
    if !outcome.errors.is_empty() {
        decision["errors"] = json!(outcome.errors);
    }
    if let Some(approval_id) = approval_id {
        decision["approval_id"] = Value::String(approval_id.to_owned());
    }
    decision
}

/// Removes injected secrets and common secret shapes from every string of
/// an upstream's result; returns the number of removals.
fn redact_result(state: &AppState, result: &mut Value, secrets: &[String]) -> usize {
    state.redact_json(result, secrets)
}

/// Builds the `CallToolResult` of a refused call.
pub fn refusal(
    claims: &TaskClaims,
    tool: &str,
    outcome: &PolicyOutcome,
    approval_id: Option<&str>,
) -> Value {
    let policies = if outcome.policy_ids.is_empty() {
        "no policy permits it".to_owned()
    } else {
        format!("deciding policies: {}", outcome.policy_ids.join(", "))
    };
    let text = match outcome.decision {
        Decision::Hold => format!(
            "Warden is holding this call to {tool} for human approval{}: {}. Retry the same call once a person has approved it ({policies}).",
            approval_id
                .map(|id| format!(" (approval id {id})"))
                .unwrap_or_default(),
            outcome.reason
        ),
        _ => format!(
            "Warden denied this call to {tool}: {}. Do not retry the same call; choose another action or ask the user ({policies}).",
            outcome.reason
        ),
    };
    json!({
        "content": [{ "type": "text", "text": text }],
        "isError": true,
        "_meta": { DECISION_META_KEY: decision_json(claims, outcome, approval_id) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_decision_key_at_any_depth() {
        let mut value = json!({
            "_meta": { DECISION_META_KEY: { "decision": "deny" }, "other": 1 },
            "content": [{ "type": "text", "_meta": { DECISION_META_KEY: {} } }],
            "data": { DECISION_META_KEY: "x" }
        });
        scrub_decision_key(&mut value);
        assert_eq!(
            value,
            json!({
                "_meta": { "other": 1 },
                "content": [{ "type": "text", "_meta": {} }],
                "data": {}
            })
        );
    }
}
