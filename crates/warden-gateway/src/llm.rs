//! Model calls: Warden as a proxy for model APIs at `/llm/{provider}/...`.
//!
//! An agent points its OpenAI or Anthropic SDK at Warden with its task
//! token as the API key. Warden authenticates the task, decides the call
//! (configured model list, per-task budgets, then the `call_model`
//! policies), injects the provider's key, which the agent never holds, and
//! streams the response back. Each call is two records in the task's trace: a
//! `model.decision`, and for an allowed call a `model.result` with the
//! OpenTelemetry GenAI attributes and the tool calls the model asked for.
//! Those tool calls are remembered, so that a later `tools/call` is linked
//! to the model call that requested it.

mod requested;
mod stream;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use warden_config::{Config, ModelProviderConfig, ProviderKind};
use warden_core::Decision;
use warden_identity::TaskClaims;
use warden_policy::{ModelUsage, Outcome as PolicyOutcome, Step, StepRequest};

pub use requested::{Link, Requested, RequestedCalls};
use stream::stream_body;
use wire::{ModelRequest, Summary, error_body};

use crate::audit;
use crate::auth::{ApiError, verify_task_token};
use crate::credentials::SecretSource;
use crate::state::AppState;
use crate::tracecontext::{self, TraceParent};

/// Policy id of a denial for a model outside the provider's `models` list.
pub const MODEL_NOT_ALLOWED_POLICY_ID: &str = "warden:model-not-allowed";
/// Policy id of a denial for an exhausted per-task budget.
pub const MODEL_BUDGET_POLICY_ID: &str = "warden:model-budget";

/// Default per-call timeout of a provider, in seconds.
const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
/// Time allowed for the agent's request body to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest streamed line Warden holds back to scan; a longer one is passed
/// on in pieces.
const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Response headers passed back to the agent besides `Content-Type`.
const PASSED_RESPONSE_HEADERS: &[&str] = &[
    "x-request-id",
    "request-id",
    "retry-after",
    "openai-processing-ms",
    "openai-version",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-tokens-remaining",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
];
/// Request headers passed on to an Anthropic upstream.
const ANTHROPIC_REQUEST_HEADERS: &[&str] = &["anthropic-version", "anthropic-beta"];

/// The configured model providers.
pub struct Providers {
    providers: BTreeMap<String, Provider>,
}

struct Provider {
    name: String,
    config: ModelProviderConfig,
    base: String,
    client: reqwest::Client,
}

impl Providers {
    /// Builds one HTTP client per provider. Clients follow no redirects, so
    /// the injected key is never sent to another origin.
    pub fn new(config: &Config) -> anyhow::Result<Providers> {
        let mut providers = BTreeMap::new();
        for (name, provider) in &config.llm {
            let timeout =
                Duration::from_secs(provider.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS));
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(10))
                .timeout(timeout)
                .build()
                .with_context(|| format!("cannot build the HTTP client of provider {name}"))?;
            providers.insert(
                name.clone(),
                Provider {
                    name: name.clone(),
                    config: provider.clone(),
                    base: provider.base_url.trim_end_matches('/').to_owned(),
                    client,
                },
            );
        }
        Ok(Providers { providers })
    }

    /// Returns true when no provider is configured.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

impl Provider {
    fn kind(&self) -> ProviderKind {
        self.config.kind
    }

    /// Returns the one API path served for this provider's kind.
    fn endpoint(&self) -> &'static str {
        match self.kind() {
            ProviderKind::Openai => "v1/chat/completions",
            ProviderKind::Anthropic => "v1/messages",
        }
    }

    /// Reads the API key now, so a rotated key file takes effect on the
    /// next call.
    fn api_key(&self) -> Result<HeaderValue, String> {
        let key = SecretSource::from_config(&self.config.api_key_env, &self.config.api_key_file)
            .ok_or_else(|| format!("provider {} has no API key source", self.name))?
            .read()
            .map_err(|message| {
                format!(
                    "the API key of provider {} is missing: {message}",
                    self.name
                )
            })?;
        let key = key.as_str();
        let value = match self.kind() {
            ProviderKind::Openai => HeaderValue::from_str(&format!("Bearer {key}")),
            ProviderKind::Anthropic => HeaderValue::from_str(key),
        };
        let mut value = value.map_err(|_| {
            format!(
                "the API key of provider {} is not a valid header value",
                self.name
            )
        })?;
        value.set_sensitive(true);
        Ok(value)
    }

    fn counter(&self, name: &str) -> String {
        format!("model.{}.{name}", self.name)
    }
}

/// `/llm/{provider}/{*path}`: one model call.
pub async fn proxy(
    State(state): State<Arc<AppState>>,
    UrlPath((provider_name, path)): UrlPath<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(provider) = state.providers.providers.get(&provider_name) else {
        let known: Vec<&str> = state
            .providers
            .providers
            .keys()
            .map(String::as_str)
            .collect();
        return error_response(
            None,
            StatusCode::NOT_FOUND,
            "not_found",
            &format!(
                "no model provider named {provider_name:?}; configured providers: {}",
                if known.is_empty() {
                    "none (add an [llm.NAME] section to the config)".to_owned()
                } else {
                    known.join(", ")
                }
            ),
            None,
        );
    };
    let kind = Some(provider.kind());
    if path != provider.endpoint() {
        return error_response(
            kind,
            StatusCode::NOT_FOUND,
            "not_found",
            &format!(
                "Warden serves only POST /llm/{provider_name}/{} for this provider, not /{path}",
                provider.endpoint()
            ),
            None,
        );
    }
    if method != Method::POST {
        return error_response(
            kind,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("use POST for /llm/{provider_name}/{path}, not {method}"),
            None,
        );
    }
    let claims = match authenticate(&state, &headers).await {
        Ok(claims) => claims,
        Err(error) => {
            let status = error.status();
            return error_response(kind, status, error.code(), &error.to_string(), None);
        }
    };
    let call = Call {
        state: &state,
        provider,
        claims: &claims,
        caller_trace: TraceParent::from_headers(&headers),
    };
    call.run(uri.query(), &headers, body).await
}

/// Reads the task token from `Authorization: Bearer` or, as the Anthropic
/// SDK sends its key, from `x-api-key`.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<TaskClaims, ApiError> {
    if headers.contains_key(header::AUTHORIZATION) {
        return crate::auth::authenticate_task(state, headers).await;
    }
    let mut values = headers.get_all("x-api-key").iter();
    match (values.next(), values.next()) {
        (Some(value), None) => {
            let token = value.to_str().map_err(|_| {
                ApiError::Unauthorized("the x-api-key header is not ASCII".into())
            })?;
            verify_task_token(state, token.trim().to_owned()).await
        }
        (Some(_), Some(_)) => Err(ApiError::Unauthorized(
            "x-api-key is repeated; send the task token once".into(),
        )),
        (None, _) => Err(ApiError::Unauthorized(
            "missing task token; use the task token from POST /v1/tasks as the API key (Authorization: Bearer or x-api-key)".into(),
        )),
    }
}

/// One model call of a task.
struct Call<'a> {
    state: &'a Arc<AppState>,
    provider: &'a Provider,
    claims: &'a TaskClaims,
    caller_trace: Option<TraceParent>,
}

impl Call<'_> {
    fn kind(&self) -> Option<ProviderKind> {
        Some(self.provider.kind())
    }

    async fn run(&self, query: Option<&str>, headers: &HeaderMap, body: Body) -> Response {
        let limit = self.state.config.limits.max_body_bytes;
        let bytes =
            match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(_)) => {
                    let error = ApiError::PayloadTooLarge(limit);
                    return self.error(error.status(), error.code(), &error.to_string());
                }
                Err(_) => {
                    return self.error(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        &format!(
                            "the request body did not arrive within {} s",
                            BODY_TIMEOUT.as_secs()
                        ),
                    );
                }
            };
        let mut body = match warden_core::json::parse_strict(&bytes) {
            Ok(body) => body,
            Err(error) => {
                return self.error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &format!("the request body is not valid JSON: {error}"),
                );
            }
        };
        let request = match wire::inspect_request(self.provider.kind(), &body) {
            Ok(request) => request,
            Err(message) => {
                return self.error(StatusCode::BAD_REQUEST, "invalid_request", &message);
            }
        };

        let (outcome, usage) = self.decide(&request).await;
        self.state.metrics.count_decision(outcome.decision);
        let target = format!("{}/{}", self.provider.name, request.model);
        let parent = self
            .caller_trace
            .as_ref()
            .and_then(|caller| caller.parent_in(&self.claims.trace_id))
            .map(str::to_owned);
        let decision_span = audit::record(
            self.state,
            self.claims,
            audit::Step {
                kind: "model.decision",
                target: Some(&target),
                decision: Some(outcome.decision),
                policy_ids: &outcome.policy_ids,
                reason: Some(&outcome.reason),
                detail: json!({
                    "provider": self.provider.name,
                    "model": request.model,
                    "stream": request.stream,
                    "max_tokens": request.max_tokens,
                    "tools": request.tools,
                    "usage_before": usage_json(&usage),
                }),
                span_id: None,
                parent_span_id: parent,
            },
        );
        tracing::info!(
            task.id = %self.claims.task_id,
            agent.id = %crate::delegation::acting_agent(self.claims),
            gen_ai.request.model = %request.model,
            provider = %self.provider.name,
            decision = %outcome.decision,
            policies = ?outcome.policy_ids,
            "model call decided"
        );
        if outcome.decision != Decision::Allow {
            return self.refusal(&target, &outcome);
        }
        if let Err(error) = self
            .state
            .store
            .add_counters(
                self.claims.root_task(),
                &[(&self.provider.counter("calls"), 1)],
            )
            .await
        {
            tracing::error!(%error, task.id = %self.claims.task_id, "counting a model call failed; refusing it");
            return self.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store is unavailable, so the call cannot be counted against the task's budget; retry shortly",
            );
        }

        if self.provider.kind() == ProviderKind::Openai && request.stream {
            ask_for_stream_usage(
                &mut body,
                self.provider.config.max_tokens_per_task.is_some(),
            );
        }
        let key = match self.provider.api_key() {
            Ok(key) => key,
            Err(message) => {
                tracing::error!(provider = %self.provider.name, "{message}");
                return self.error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "provider_key_unavailable",
                    &format!("{message}; ask the operator to set it"),
                );
            }
        };
        let mut url = format!("{}/{}", self.provider.base, self.provider.endpoint());
        if let Some(query) = query {
            url.push('?');
            url.push_str(query);
        }
        let traceparent = tracecontext::format(
            &self.claims.trace_id,
            &decision_span,
            self.caller_trace.as_ref(),
        );
        let upstream = self
            .provider
            .client
            .post(&url)
            .headers(self.upstream_headers(headers, key, &traceparent))
            .body(serde_json::to_vec(&body).unwrap_or_default());
        let started = Instant::now();
        let finished = Finished {
            state: Arc::clone(self.state),
            claims: self.claims.clone(),
            provider_name: self.provider.name.clone(),
            kind: self.provider.kind(),
            request,
            decision_span,
            started,
        };
        let response = match upstream.send().await {
            Ok(response) => response,
            Err(error) => {
                let message = format!(
                    "provider {} did not answer: {}",
                    self.provider.name,
                    crate::outbound::describe_error(&error)
                );
                tracing::warn!(task.id = %self.claims.task_id, "{message}");
                self.state
                    .metrics
                    .upstream_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                finished
                    .record(None, Summary::default(), Some(&message))
                    .await;
                return self.error(StatusCode::BAD_GATEWAY, "upstream_error", &message);
            }
        };
        let secret = key_text(&self.provider.api_key().ok());
        let status = response.status();
        let mut headers = HeaderMap::new();
        for (name, value) in response.headers() {
            if name == header::CONTENT_TYPE || PASSED_RESPONSE_HEADERS.contains(&name.as_str()) {
                headers.append(name.clone(), value.clone());
            }
        }
        let streaming = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        if streaming {
            let body = stream_body(response, secret, finished);
            return (status, headers, body).into_response();
        }

        let limit = self.state.config.limits.max_upstream_message_bytes;
        let bytes = match crate::outbound::read_limited(response, limit).await {
            Ok(bytes) => bytes,
            Err(message) => {
                let message = format!("provider {}: {message}", self.provider.name);
                finished
                    .record(Some(status.as_u16()), Summary::default(), Some(&message))
                    .await;
                return self.error(StatusCode::BAD_GATEWAY, "upstream_error", &message);
            }
        };
        let summary = serde_json::from_slice::<Value>(&bytes)
            .map(|value| wire::summarize(self.provider.kind(), &value))
            .unwrap_or_default();
        let error = (!status.is_success()).then(|| format!("provider answered {status}"));
        finished
            .record(Some(status.as_u16()), summary, error.as_deref())
            .await;
        (status, headers, self.scrub_answer(bytes, secret.as_deref())).into_response()
    }

    /// Applies the configured model list and budgets, then the policies.
    async fn decide(&self, request: &ModelRequest) -> (PolicyOutcome, ModelUsage) {
        let deny = |policy: &str, reason: String| PolicyOutcome {
            decision: Decision::Deny,
            policy_ids: vec![policy.to_owned()],
            reason,
            errors: Vec::new(),
            arguments: None,
        };
        let config = &self.provider.config;
        let counters = match self.state.store.counters(self.claims.root_task()).await {
            Ok(counters) => counters,
            Err(error) => {
                tracing::error!(%error, task.id = %self.claims.task_id, "reading model usage failed; denying");
                return (
                    deny(
                        warden_policy::REQUEST_POLICY_ID,
                        format!("the task's model usage cannot be read ({error}); retry shortly"),
                    ),
                    ModelUsage::default(),
                );
            }
        };
        let read = |name: &str| {
            counters
                .get(&self.provider.counter(name))
                .copied()
                .unwrap_or(0)
        };
        let usage = ModelUsage {
            calls: read("calls"),
            input_tokens: read("input_tokens"),
            output_tokens: read("output_tokens"),
        };
        if !config.models.is_empty() && !config.models.contains(&request.model) {
            let outcome = deny(
                MODEL_NOT_ALLOWED_POLICY_ID,
                format!(
                    "model {} is not offered by provider {}; use one of {}",
                    request.model,
                    self.provider.name,
                    config.models.join(", ")
                ),
            );
            return (outcome, usage);
        }
        if let Some(max) = config.max_calls_per_task
            && usage.calls >= i64::try_from(max).unwrap_or(i64::MAX)
        {
            let outcome = deny(
                MODEL_BUDGET_POLICY_ID,
                format!(
                    "this task has used its budget of {max} calls to provider {}; finish with what you have or start a new task",
                    self.provider.name
                ),
            );
            return (outcome, usage);
        }
        if let Some(max) = config.max_tokens_per_task
            && usage.total_tokens() >= i64::try_from(max).unwrap_or(i64::MAX)
        {
            let outcome = deny(
                MODEL_BUDGET_POLICY_ID,
                format!(
                    "this task has used {} of its budget of {max} tokens at provider {}; finish with what you have or start a new task",
                    usage.total_tokens(),
                    self.provider.name
                ),
            );
            return (outcome, usage);
        }
        let mut outcome = self.state.engine().decide(&StepRequest {
            task: &crate::mcp::task_context(self.claims),
            step: Step::CallModel {
                provider: &self.provider.name,
                model: &request.model,
                stream: request.stream,
                max_tokens: request.max_tokens,
                tools: &request.tools,
                usage,
            },
        });
        if outcome.decision == Decision::Hold {
            outcome.decision = Decision::Deny;
            outcome.reason = format!(
                "{}; model calls cannot wait for a human approval, so a hold denies them",
                outcome.reason
            );
        }
        (outcome, usage)
    }

    fn upstream_headers(
        &self,
        incoming: &HeaderMap,
        key: HeaderValue,
        traceparent: &str,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(accept) = incoming.get(header::ACCEPT) {
            headers.insert(header::ACCEPT, accept.clone());
        }
        match self.provider.kind() {
            ProviderKind::Openai => {
                headers.insert(header::AUTHORIZATION, key);
            }
            ProviderKind::Anthropic => {
                headers.insert(HeaderName::from_static("x-api-key"), key);
                for name in ANTHROPIC_REQUEST_HEADERS {
                    for value in incoming.get_all(*name) {
                        headers.append(HeaderName::from_static(name), value.clone());
                    }
                }
            }
        }
        if let Ok(value) = HeaderValue::from_str(traceparent) {
            headers.insert(HeaderName::from_static("traceparent"), value);
        }
        headers
    }

    /// Removes the provider's key from a whole response: from the decoded
    /// strings of a JSON body (a key written with `\\u` escapes included),
    /// then from the bytes in any spelling, with common secret shapes.
    fn scrub_answer(&self, bytes: Bytes, secret: Option<&str>) -> Bytes {
        let secrets: Vec<String> = secret.map(str::to_owned).into_iter().collect();
        let bytes = match serde_json::from_slice::<Value>(&bytes) {
            Ok(mut value) => {
                if self.state.redact_json(&mut value, &secrets) > 0 {
                    Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
                } else {
                    bytes
                }
            }
            Err(_) => bytes,
        };
        self.state.redact(bytes, &secrets).0
    }

    fn refusal(&self, target: &str, outcome: &PolicyOutcome) -> Response {
        let policies = if outcome.policy_ids.is_empty() {
            "no policy permits it".to_owned()
        } else {
            format!("deciding policies: {}", outcome.policy_ids.join(", "))
        };
        let message = format!(
            "Warden denied this call to model {target}: {}. Do not retry the same call ({policies}).",
            outcome.reason
        );
        let decision = json!({
            "decision": outcome.decision.as_str(),
            "policy_ids": outcome.policy_ids,
            "reason": outcome.reason,
            "task_id": self.claims.task_id,
            "trace_id": self.claims.trace_id,
        });
        error_response(
            self.kind(),
            StatusCode::FORBIDDEN,
            "warden_denied",
            &message,
            Some(decision),
        )
    }

    fn error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        error_response(self.kind(), status, code, message, None)
    }
}

/// The state that records the end of an allowed call, possibly after the
/// handler has returned a streaming body.
struct Finished {
    state: Arc<AppState>,
    claims: TaskClaims,
    provider_name: String,
    kind: ProviderKind,
    request: ModelRequest,
    decision_span: String,
    started: Instant,
}

impl Finished {
    /// Records the `model.result` span, adds the tokens to the task's
    /// counters and remembers the tool calls the model asked for.
    async fn record(self, status: Option<u16>, summary: Summary, error: Option<&str>) {
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let tool_calls: Vec<(String, String, Option<String>)> = summary
            .tool_calls
            .iter()
            .map(|call| {
                let hash = call
                    .parsed_arguments()
                    .map(|arguments| warden_core::json::canonical_hash(&arguments));
                (call.id.clone(), call.name.clone(), hash)
            })
            .collect();
        let mut detail = json!({
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.kind.as_str(),
            "gen_ai.request.model": self.request.model,
            "gen_ai.usage.input_tokens": summary.input_tokens,
            "gen_ai.usage.output_tokens": summary.output_tokens,
            "gen_ai.response.finish_reasons": summary.finish_reasons,
            "tool_calls": tool_calls
                .iter()
                .map(|(id, name, hash)| json!({ "id": id, "name": name, "arguments_sha256": hash }))
                .collect::<Vec<_>>(),
            "provider": self.provider_name,
            "stream": self.request.stream,
            "duration_ms": duration_ms,
            "status": status,
            "outcome": match (status, error) {
                (None, _) => "failure",
                (Some(_), Some(_)) => "error",
                (Some(_), None) => "result",
            },
        });
        if self.request.max_tokens > 0 {
            detail["gen_ai.request.max_tokens"] = json!(self.request.max_tokens);
        }
        if let Some(model) = &summary.model {
            detail["gen_ai.response.model"] = json!(model);
        }
        if let Some(id) = &summary.response_id {
            detail["gen_ai.response.id"] = json!(id);
        }
        if let Some(error) = error {
            detail["error"] = json!(error);
        }
        let target = format!("{}/{}", self.provider_name, self.request.model);
        let span = audit::record(
            &self.state,
            &self.claims,
            audit::Step {
                kind: "model.result",
                target: Some(&target),
                decision: None,
                policy_ids: &[],
                reason: None,
                detail,
                span_id: None,
                parent_span_id: Some(self.decision_span.clone()),
            },
        );
        let requested = tool_calls
            .into_iter()
            .map(|(tool_call_id, name, arguments_hash)| Requested {
                tool_call_id,
                name,
                arguments_hash,
                span_id: span.clone(),
            })
            .collect();
        self.state
            .requested_calls
            .add(self.claims.root_task(), requested);

        let tokens = [
            (
                format!("model.{}.input_tokens", self.provider_name),
                summary.input_tokens,
            ),
            (
                format!("model.{}.output_tokens", self.provider_name),
                summary.output_tokens,
            ),
        ];
        let deltas: Vec<(&str, i64)> = tokens
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(name, count)| (name.as_str(), *count))
            .collect();
        if !deltas.is_empty()
            && let Err(error) = self
                .state
                .store
                .add_counters(self.claims.root_task(), &deltas)
                .await
        {
            tracing::error!(%error, task.id = %self.claims.task_id, "adding model tokens to the task's usage failed");
        }
    }
}

/// Asks an OpenAI-compatible provider to end a stream with a usage chunk,
/// so the tokens are counted. With `force`, which a token budget needs, an
/// agent's `include_usage: false` is overridden.
fn ask_for_stream_usage(body: &mut Value, force: bool) {
    let Some(object) = body.as_object_mut() else {
        return;
    };
    let options = object.entry("stream_options").or_insert_with(|| json!({}));
    if let Some(options) = options.as_object_mut()
        && (force || !options.contains_key("include_usage"))
    {
        options.insert("include_usage".into(), Value::Bool(true));
    }
}

/// Returns the bare key text of an injected header value.
fn key_text(value: &Option<HeaderValue>) -> Option<String> {
    let text = value.as_ref()?.to_str().ok()?;
    let key = text.strip_prefix("Bearer ").unwrap_or(text);
    (key.len() >= 8).then(|| key.to_owned())
}

fn usage_json(usage: &ModelUsage) -> Value {
    json!({
        "calls": usage.calls,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens(),
    })
}

fn error_response(
    kind: Option<ProviderKind>,
    status: StatusCode,
    code: &str,
    message: &str,
    decision: Option<Value>,
) -> Response {
    let body = error_body(kind, status.as_u16(), code, message, decision);
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, crate::auth::challenge(message));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_strips_bearer_and_ignores_short_keys() {
        let bearer = HeaderValue::from_static("Bearer sk-abcdefgh");
        assert_eq!(key_text(&Some(bearer)).as_deref(), Some("sk-abcdefgh"));
        let short = HeaderValue::from_static("abc");
        assert_eq!(key_text(&Some(short)), None);
    }

    #[test]
    fn ask_for_stream_usage_overrides_only_when_forced() {
        let mut body = json!({"model": "m", "stream": true});
        ask_for_stream_usage(&mut body, false);
        assert_eq!(body["stream_options"]["include_usage"], true);

        let mut body = json!({"stream_options": {"include_usage": false}});
        ask_for_stream_usage(&mut body, false);
        assert_eq!(body["stream_options"]["include_usage"], false);

        ask_for_stream_usage(&mut body, true);
        assert_eq!(body["stream_options"]["include_usage"], true);
    }
}
