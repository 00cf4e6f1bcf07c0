//! Plain HTTP API routes: `/http/{route}/...`.
//!
//! Each configured route forwards to one upstream base URL. Warden
//! authenticates the task, normalises the path and query once, decides the
//! request with the route's Cedar action (`route:{name}`) on those
//! normalised values, and forwards exactly what it decided on, with the
//! route's credential injected and the agent's own `Authorization` and
//! `Cookie` left behind. The upstream's answer is scrubbed of the injected
//! secret and of common secret shapes before the agent sees it.
//!
//! Outbound connections go only to checked addresses: loopback, private,
//! link-local and cloud metadata addresses are refused unless the route
//! allows private destinations (metadata addresses never), and every
//! redirect hop is checked again. A redirect to another origin is returned
//! to the agent, never followed, so a credential never leaves its origin.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use url::{Host, Url};
use warden_config::{Config, RouteConfig};
use warden_core::Decision;
use warden_identity::TaskClaims;
use warden_policy::{Destination, Outcome as PolicyOutcome, Step, StepRequest};
use warden_store::ApprovalStatus;

use crate::audit;
use crate::auth::{ApiError, authenticate_task, now_unix};
use crate::credentials::Credential;
use crate::outbound::{OutboundClient, OutboundError, OutboundRequest, Reach, denied_address};
use crate::state::AppState;
use crate::tracecontext::{self, TraceParent};

mod target;

pub use target::Target;

/// Methods a route allows when its config lists none.
const DEFAULT_METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
/// Request headers always passed on.
const FORWARDED_REQUEST_HEADERS: [&str; 6] = [
    "content-type",
    "accept",
    "accept-language",
    "if-match",
    "if-none-match",
    "idempotency-key",
];
/// Response headers passed back to the agent.
const PASSED_RESPONSE_HEADERS: [&str; 10] = [
    "content-type",
    "content-language",
    "etag",
    "last-modified",
    "cache-control",
    "location",
    "retry-after",
    "link",
    "x-request-id",
    "x-ratelimit-remaining",
];
/// Redirects followed within the upstream's origin by default.
const DEFAULT_MAX_REDIRECTS: usize = 5;
/// Time allowed for the agent's request body to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Policy id of a pre-check denial for a method the route does not allow.
pub const METHOD_POLICY_ID: &str = "warden:method";
/// Policy id of a pre-check denial for a path or query Warden does not
/// forward.
pub const TARGET_POLICY_ID: &str = "warden:invalid-target";
/// Policy id of a pre-check denial for a body that the route's policies
/// cannot read.
pub const BODY_TYPE_POLICY_ID: &str = "warden:body-type";
/// Policy id of a pre-check denial for a destination address the route may
/// not reach.
pub const DESTINATION_POLICY_ID: &str = "warden:destination";

/// The configured routes.
pub struct Routes {
    routes: BTreeMap<String, Route>,
}

/// One configured route: its upstream, client, credential and the checks a
/// request passes before its policy decision.
pub struct Route {
    name: String,
    config: RouteConfig,
    base: Url,
    client: OutboundClient,
    credential: Option<Credential>,
    methods: Vec<String>,
    forward: Vec<HeaderName>,
}

impl Routes {
    /// Builds one client per route.
    pub fn new(config: &Config) -> anyhow::Result<Routes> {
        let mut routes = BTreeMap::new();
        for (name, route) in &config.http {
            let base = Url::parse(&route.url)
                .map_err(|error| anyhow::anyhow!("http.{name}.url: {error}"))?;
            let timeout = Duration::from_secs(
                route
                    .timeout_seconds
                    .unwrap_or(config.limits.call_timeout_seconds),
            );
            let reach = if route.allow_private {
                Reach::Private
            } else {
                Reach::Public
            };
            let client = OutboundClient::new(reach, timeout, Duration::from_secs(10))?;
            let credential = route
                .credential
                .as_ref()
                .map(|credential| Credential::new(credential, &base.origin().ascii_serialization()))
                .transpose()?;
            let methods = if route.methods.is_empty() {
                DEFAULT_METHODS.map(str::to_owned).to_vec()
            } else {
                route.methods.clone()
            };
            let forward = FORWARDED_REQUEST_HEADERS
                .iter()
                .map(|name| (*name).to_owned())
                .chain(
                    route
                        .forward_headers
                        .iter()
                        .map(|name| name.to_ascii_lowercase()),
                )
                .filter_map(|name| HeaderName::try_from(name).ok())
                .collect();
            routes.insert(
                name.clone(),
                Route {
                    name: name.clone(),
                    config: route.clone(),
                    base,
                    client,
                    credential,
                    methods,
                    forward,
                },
            );
        }
        Ok(Routes { routes })
    }

    /// Returns true when no route is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Returns the route named `name`, or `None` for an unknown route.
    pub fn get(&self, name: &str) -> Option<&Route> {
        self.routes.get(name)
    }
}

/// A request to a route rejected before its policy decision.
///
/// The request itself gets a response with `status`, `code` and `message`.
/// A pre-check of the same request returns `deny` with `policy_id` and the
/// same message.
#[derive(Debug)]
pub struct Rejection {
    /// HTTP status of the response to the request.
    pub status: StatusCode,
    /// Machine-readable error code of that response.
    pub code: &'static str,
    /// Built-in policy id of a pre-check's denial.
    pub policy_id: &'static str,
    /// Description of the problem and of the fix.
    pub message: String,
}

impl Rejection {
    /// Builds the 400 for a path or query that [`Target::parse`] or
    /// [`Route::check_query`] rejects.
    pub fn invalid_target(message: String) -> Rejection {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            policy_id: TARGET_POLICY_ID,
            message,
        }
    }

    /// Removes secret shapes from the message, which may echo the
    /// request's URL, before it is returned or recorded.
    pub fn redact(mut self, state: &AppState) -> Rejection {
        let (clean, _) = state.redact(Bytes::from(self.message.into_bytes()), &[]);
        self.message = String::from_utf8_lossy(&clean).into_owned();
        self
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response()
    }
}

impl Route {
    /// Returns the route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the upstream URL that a request with `target` goes to.
    pub fn url(&self, target: &Target) -> Url {
        target.url(&self.base)
    }

    /// Rejects a method outside the route's `methods` with 405.
    pub fn check_method(&self, method: &str) -> Result<(), Rejection> {
        if self.methods.iter().any(|allowed| allowed == method) {
            return Ok(());
        }
        Err(Rejection {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            policy_id: METHOD_POLICY_ID,
            message: format!(
                "route {} allows {}, not {method}",
                self.name,
                self.methods.join(", ")
            ),
        })
    }

    /// Rejects with 400 a query that could make the upstream read a
    /// declared parameter other than the one the policies decided on.
    ///
    /// A declared name (`query_params`) may appear once. A name that
    /// equals a declared name except in ASCII case (`Q` for `q`) is
    /// rejected, because ASP.NET binds names case-insensitively. So is a
    /// declared name followed by `[` (`q[]`, `q[0]`), because PHP, Rails
    /// and Node's qs read it as that name.
    pub fn check_query(&self, query: &[(String, String)]) -> Result<(), Rejection> {
        for declared in &self.config.query_params {
            if query.iter().filter(|(name, _)| name == declared).count() > 1 {
                return Err(Rejection::invalid_target(format!(
                    "query parameter {declared:?} appears more than once; send it once"
                )));
            }
            for (name, _) in query {
                if name != declared && name.eq_ignore_ascii_case(declared) {
                    return Err(Rejection::invalid_target(format!(
                        "query parameter {name:?} differs from the declared parameter \
                         {declared:?} only in case, and some servers read it as {declared:?}; \
                         send it as {declared:?}"
                    )));
                }
                let bracketed = name
                    .get(..declared.len())
                    .is_some_and(|prefix| prefix.eq_ignore_ascii_case(declared))
                    && name[declared.len()..].starts_with('[');
                if bracketed {
                    return Err(Rejection::invalid_target(format!(
                        "query parameter {name:?} is the declared parameter {declared:?} \
                         with a bracket suffix, which some servers read as {declared:?}; \
                         send {declared:?} once, without brackets"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Rejects with 415 a body that is not a JSON object on a route with a
    /// `body_schema`, because its policies read the body and would let any
    /// other body pass unseen.
    pub fn check_body(&self, has_body: bool, parsed: &Value) -> Result<(), Rejection> {
        if self.config.body_schema.is_none() || !has_body || parsed.is_object() {
            return Ok(());
        }
        Err(Rejection {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            policy_id: BODY_TYPE_POLICY_ID,
            message: format!(
                "route {} takes a JSON object body (Content-Type: application/json), which its policies decide on",
                self.name
            ),
        })
    }

    /// Checks the host of `url` as the outbound client does before it
    /// connects, and rejects with 403 an IP-literal host outside the
    /// route's reach.
    ///
    /// A host name passes with a note: its addresses are known only when
    /// Warden resolves the name to connect, and are checked then.
    pub fn check_destination(&self, url: &Url) -> Result<Option<String>, Rejection> {
        let reach = self.client.reach();
        let addr: IpAddr = match url.host() {
            Some(Host::Ipv4(addr)) => addr.into(),
            Some(Host::Ipv6(addr)) => addr.into(),
            Some(Host::Domain(name)) => {
                let refused = match reach {
                    Reach::Public => "any address that is not public",
                    Reach::Private => "a cloud metadata address",
                };
                return Ok(Some(format!(
                    "the addresses of {name} are checked when Warden connects, \
                     and {refused} is refused then"
                )));
            }
            None => {
                return Err(destination_denied(url, "the URL has no host".to_owned()));
            }
        };
        match denied_address(addr, reach) {
            None => Ok(None),
            Some(reason) => Err(destination_denied(url, format!("{addr} is {reason}"))),
        }
    }
}

/// Builds the 403 that the outbound client returns for a denied
/// destination, with the same message.
fn destination_denied(url: &Url, reason: String) -> Rejection {
    let error = OutboundError::Denied {
        url: url.to_string(),
        reason,
    };
    Rejection {
        status: StatusCode::FORBIDDEN,
        code: "destination_denied",
        policy_id: DESTINATION_POLICY_ID,
        message: error.to_string(),
    }
}

/// `/http/{route}` and `/http/{route}/{*path}`: one API request.
pub async fn proxy(
    State(state): State<Arc<AppState>>,
    UrlPath(params): UrlPath<Vec<(String, String)>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let route_name = params
        .iter()
        .find(|(key, _)| key == "route")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let claims = match authenticate_task(&state, &headers).await {
        Ok(claims) => claims,
        Err(error) => return error.into_response(),
    };
    let Some(route) = state.routes.routes.get(&route_name) else {
        return ApiError::NotFound(format!(
            "no HTTP route named {route_name:?}; the routes are the [http.NAME] sections of Warden's config"
        ))
        .into_response();
    };
    if let Err(rejection) = route.check_method(method.as_str()) {
        return rejection.into_response();
    }
    // The raw path after `/http/{route}`, cut at the raw route segment so
    // that an escaped route name keeps its path.
    let raw_path = uri
        .path()
        .strip_prefix("/http/")
        .map(|rest| rest.find('/').map_or("", |slash| &rest[slash..]))
        .unwrap_or_default();
    let target = match Target::parse(raw_path, uri.query()) {
        Ok(target) => target,
        Err(message) => return Rejection::invalid_target(message).into_response(),
    };
    if let Err(rejection) = route.check_query(&target.query) {
        return rejection.into_response();
    }
    let request = Request {
        state: &state,
        route,
        claims: &claims,
        caller_trace: TraceParent::from_headers(&headers),
    };
    request.run(method, target, &headers, body).await
}

/// One request of a task to a route.
struct Request<'a> {
    state: &'a Arc<AppState>,
    route: &'a Route,
    claims: &'a TaskClaims,
    caller_trace: Option<TraceParent>,
}

impl Request<'_> {
    async fn run(
        &self,
        method: Method,
        target: Target,
        headers: &HeaderMap,
        body: Body,
    ) -> Response {
        let limit = self.state.config.limits.max_body_bytes;
        let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit))
            .await
        {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => return ApiError::PayloadTooLarge(limit).into_response(),
            Err(_) => {
                return (
                    StatusCode::REQUEST_TIMEOUT,
                    axum::Json(json!({
                        "error": "request_timeout",
                        "message": format!("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
                    })),
                )
                    .into_response();
            }
        };
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let is_json = is_json_type(&content_type);
        let parsed = if is_json && !bytes.is_empty() {
            match warden_core::json::parse_strict(&bytes) {
                Ok(value) => value,
                Err(error) => {
                    return ApiError::BadRequest(format!("the JSON body is invalid: {error}"))
                        .into_response();
                }
            }
        } else {
            Value::Null
        };
        if let Err(rejection) = self.route.check_body(!bytes.is_empty(), &parsed) {
            return rejection.into_response();
        }
        let url = target.url(&self.route.base);
        let destination_host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let memory = match crate::memory::load(self.state, self.claims).await {
            Ok(memory) => memory,
            Err(denial) => return self.refusal(&denial, None),
        };
        let decided = crate::memory::decide(
            self.state,
            &StepRequest {
                task: &crate::mcp::task_context(self.claims),
                step: Step::HttpRequest {
                    route: &self.route.name,
                    method: method.as_str(),
                    path: &target.path,
                    query: &target.query,
                    body: &parsed,
                    has_body: !bytes.is_empty(),
                    content_type: &content_type,
                    destination: Destination {
                        scheme: url.scheme(),
                        host: &destination_host,
                        port: url.port_or_known_default().unwrap_or(0),
                    },
                    memory: &memory,
                },
            },
        );
        let outcome = decided.outcome;
        self.state.metrics.count_decision(outcome.decision);
        // What the approval binds and the record shows: the decided request.
        let decided_body = outcome.arguments.clone().unwrap_or_else(|| parsed.clone());
        let call = json!({
            "method": method.as_str(),
            "path": target.path,
            "query": target.query,
            "body": decided_body,
            "body_sha256": warden_core::sha256_hex(&bytes),
        });
        let action = format!("route:{}", self.route.name);
        let parent = self
            .caller_trace
            .as_ref()
            .and_then(|caller| caller.parent_in(&self.claims.trace_id))
            .map(str::to_owned);
        let span = audit::record(
            self.state,
            self.claims,
            audit::Step {
                kind: "http.decision",
                target: Some(&action),
                decision: Some(outcome.decision),
                policy_ids: &outcome.policy_ids,
                reason: Some(&outcome.reason),
                detail: json!({
                    "method": method.as_str(),
                    "path": target.path,
                    "query": target.query,
                    "url": url.as_str(),
                    "arguments": decided_body,
                    "arguments_sha256": warden_core::json::canonical_hash(&call),
                    "errors": outcome.errors,
                    "shadow": decided.shadow,
                }),
                span_id: None,
                parent_span_id: parent,
            },
        );
        tracing::info!(
            task.id = %self.claims.task_id,
            route = %self.route.name,
            http.method = %method,
            url.path = %target.path,
            decision = %outcome.decision,
            policies = ?outcome.policy_ids,
            "HTTP request decided"
        );
        match self.settle(&action, &call, outcome, &span).await {
            Ok(()) => {}
            Err(response) => return response,
        }
        // Checked after the decision, so that the trace keeps what the
        // policies decided; the client checks every hop again.
        if let Err(rejection) = self.route.check_destination(&url) {
            let rejection = rejection.redact(self.state);
            tracing::warn!(
                task.id = %self.claims.task_id,
                route = %self.route.name,
                error = %rejection.message,
                "HTTP request to a denied destination rejected"
            );
            self.record_result(
                &span,
                json!({ "outcome": "failure", "error": rejection.message, "duration_ms": 0.0 }),
            );
            return rejection.into_response();
        }

        if let Err(message) =
            crate::memory::record_call(self.state, self.claims, &self.route.config.classes, &[])
                .await
        {
            return ApiError::Unavailable(message).into_response();
        }
        // Forward exactly the decided body: converted when typed, the
        // re-serialised parsed value for other JSON, the bytes otherwise.
        let forwarded_body = if decided_body.is_null() {
            bytes
        } else {
            Bytes::from(serde_json::to_vec(&decided_body).unwrap_or_default())
        };
        self.forward(method, url, headers, forwarded_body, &span)
            .await
    }

    /// Applies a hold or a denial; `Ok` lets the request through.
    async fn settle(
        &self,
        action: &str,
        call: &Value,
        mut outcome: PolicyOutcome,
        span: &str,
    ) -> Result<(), Response> {
        match outcome.decision {
            Decision::Allow => Ok(()),
            Decision::Deny => Err(self.refusal(&outcome, None)),
            Decision::Hold => {
                match crate::approvals::resolve(
                    self.state,
                    self.claims,
                    action,
                    call,
                    &outcome,
                    span,
                )
                .await
                {
                    Ok(crate::approvals::Resolution::Proceed { .. }) => Ok(()),
                    Ok(crate::approvals::Resolution::Refuse {
                        approval_id,
                        status,
                    }) => {
                        if status == ApprovalStatus::Denied {
                            outcome.decision = Decision::Deny;
                            outcome.reason = format!(
                                "a person denied this exact request (approval {approval_id}); the decision is final"
                            );
                        }
                        Err(self.refusal(&outcome, Some(&approval_id)))
                    }
                    Err(error) => {
                        tracing::error!(task.id = %self.claims.task_id, %error, "approval store failed; denying the held request");
                        outcome.decision = Decision::Deny;
                        outcome.reason =
                            format!("the approval store is unavailable ({error}); try again later");
                        Err(self.refusal(&outcome, None))
                    }
                }
            }
        }
    }

    async fn forward(
        &self,
        method: Method,
        url: Url,
        incoming: &HeaderMap,
        body: Bytes,
        span: &str,
    ) -> Response {
        let mut headers = HeaderMap::new();
        for name in &self.route.forward {
            for value in incoming.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let traceparent =
            tracecontext::format(&self.claims.trace_id, span, self.caller_trace.as_ref());
        if let Ok(value) = HeaderValue::from_str(&traceparent) {
            headers.insert(HeaderName::from_static("traceparent"), value);
        }
        let (sensitive, secrets) = match &self.route.credential {
            None => (HeaderMap::new(), Vec::new()),
            Some(credential) => {
                match credential.inject(self.claims, &self.state.txn_tokens, now_unix()) {
                    Ok(injected) => (injected.headers, injected.secrets),
                    Err(message) => {
                        tracing::error!(route = %self.route.name, "{message}");
                        return ApiError::Unavailable(format!(
                            "the credential of route {} is unavailable: {message}; ask the operator to set it",
                            self.route.name
                        ))
                        .into_response();
                    }
                }
            }
        };
        let max_redirects = self
            .route
            .config
            .max_redirects
            .unwrap_or(DEFAULT_MAX_REDIRECTS);
        let started = Instant::now();
        let sent = self
            .route
            .client
            .send(
                OutboundRequest {
                    method: method.clone(),
                    url,
                    headers,
                    sensitive,
                    body,
                },
                max_redirects,
            )
            .await;
        let outcome = match sent {
            Ok(outcome) => outcome,
            Err(error) => {
                let (status, code) = match &error {
                    OutboundError::Denied { .. } => (StatusCode::FORBIDDEN, "destination_denied"),
                    _ => (StatusCode::BAD_GATEWAY, "upstream_error"),
                };
                let message = String::from_utf8_lossy(
                    &self
                        .state
                        .redact(error.to_string().into_bytes().into(), &secrets)
                        .0,
                )
                .into_owned();
                tracing::warn!(task.id = %self.claims.task_id, route = %self.route.name, error = %message, "HTTP request not completed");
                self.record_result(
                    span,
                    json!({
                        "outcome": "failure",
                        "error": message,
                        "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
                    }),
                );
                return (
                    status,
                    axum::Json(json!({ "error": code, "message": message })),
                )
                    .into_response();
            }
        };
        let status = outcome.response.status();
        let mut response_headers = HeaderMap::new();
        let mut header_redactions = 0;
        for (name, value) in outcome.response.headers() {
            if !PASSED_RESPONSE_HEADERS.contains(&name.as_str()) {
                continue;
            }
            let (clean, count) = self
                .state
                .redact(Bytes::copy_from_slice(value.as_bytes()), &secrets);
            header_redactions += count;
            if let Ok(clean) = HeaderValue::from_bytes(&clean) {
                response_headers.append(name.clone(), clean);
            }
        }
        let redirect_refused = outcome.redirect_refused.as_ref().map(|location| {
            let (clean, _) = self
                .state
                .redact(Bytes::copy_from_slice(location.as_bytes()), &secrets);
            String::from_utf8_lossy(&clean).into_owned()
        });
        let limit = self.state.config.limits.max_upstream_message_bytes;
        let body = match crate::outbound::read_limited(outcome.response, limit).await {
            Ok(body) => body,
            Err(message) => {
                self.record_result(
                    span,
                    json!({
                        "outcome": "failure",
                        "status": status.as_u16(),
                        "error": message,
                        "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
                    }),
                );
                return ApiError::Unavailable(format!("route {}: {message}", self.route.name))
                    .into_response();
            }
        };
        let (body, redactions) = self.state.redact(body, &secrets);
        if let Err(message) =
            crate::memory::record_labels(self.state, self.claims, &self.route.config.labels).await
        {
            return ApiError::Unavailable(format!(
                "Warden withheld the response of route {}: {message}",
                self.route.name
            ))
            .into_response();
        }
        self.record_result(span, json!({
            "outcome": if status.is_success() || status.is_redirection() { "result" } else { "error" },
            "status": status.as_u16(),
            "redirects": outcome.hops,
            "redirect_refused": redirect_refused,
            "redactions": redactions + header_redactions,
            "bytes": body.len(),
            "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
        }));
        (status, response_headers, body).into_response()
    }

    fn record_result(&self, span: &str, detail: Value) {
        let action = format!("route:{}", self.route.name);
        audit::record(
            self.state,
            self.claims,
            audit::Step {
                kind: "http.result",
                target: Some(&action),
                decision: None,
                policy_ids: &[],
                reason: None,
                detail,
                span_id: None,
                parent_span_id: Some(span.to_owned()),
            },
        );
    }

    fn refusal(&self, outcome: &PolicyOutcome, approval_id: Option<&str>) -> Response {
        let policies = if outcome.policy_ids.is_empty() {
            "no policy permits it".to_owned()
        } else {
            format!("deciding policies: {}", outcome.policy_ids.join(", "))
        };
        let message = match outcome.decision {
            Decision::Hold => format!(
                "Warden is holding this request to route {} for human approval{}: {}. Retry the same request once a person has approved it ({policies}).",
                self.route.name,
                approval_id
                    .map(|id| format!(" (approval id {id})"))
                    .unwrap_or_default(),
                outcome.reason
            ),
            _ => format!(
                "Warden denied this request to route {}: {}. Do not retry the same request ({policies}).",
                self.route.name, outcome.reason
            ),
        };
        let mut decision = json!({
            "decision": outcome.decision.as_str(),
            "policy_ids": outcome.policy_ids,
            "reason": outcome.reason,
            "task_id": self.claims.task_id,
            "trace_id": self.claims.trace_id,
        });
        if let Some(approval_id) = approval_id {
            decision["approval_id"] = json!(approval_id);
        }
        if !outcome.errors.is_empty() {
            decision["errors"] = json!(outcome.errors);
        }
        (
            StatusCode::FORBIDDEN,
            axum::Json(json!({
                "error": if outcome.decision == Decision::Hold { "warden_held" } else { "warden_denied" },
                "message": message,
                crate::mcp::DECISION_META_KEY: decision,
            })),
        )
            .into_response()
    }
}

fn is_json_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Result<String, String> {
        Target::parse(path, None).map(|target| target.path)
    }

    #[test]
    fn parse_normalises_dot_segments_and_escapes_once() {
        assert_eq!(target("/public/../admin"), Ok("/admin".into()));
        assert_eq!(target("/public/%2e%2e/admin"), Ok("/admin".into()));
        assert_eq!(target("/public/%2E%2E/admin"), Ok("/admin".into()));
        assert_eq!(target("//admin"), Ok("/admin".into()));
        assert_eq!(target("/a/./b//c"), Ok("/a/b/c".into()));
        assert_eq!(target(""), Ok("/".into()));
        assert_eq!(target("/../../etc"), Ok("/etc".into()));
    }

    #[test]
    fn parse_refuses_ambiguous_escapes() {
        for path in [
            "/public%2f..%2fadmin",
            "/public%2F..",
            "/a%5cb",
            "/a%00b",
            "/a\\b",
            "/a%5Cb",
            "/%ff",
            "/a%0ab",
        ] {
            assert!(target(path).is_err(), "{path} accepted");
        }
    }

    #[test]
    fn parse_rejects_semicolon_raw_or_escaped() {
        for path in [
            "/admin;x=1",
            "/public/..;/admin",
            "/admin%3bx=1",
            "/admin%3Bx=1",
            "/;",
        ] {
            let error = target(path).expect_err(path);
            assert!(error.contains("';'"), "{path}: {error}");
        }
    }

    #[test]
    fn parse_rejects_control_characters_in_query() {
        for query in ["q=forbidden%00", "q%00=", "q=a%0Ab", "q%09=1", "q=%7f"] {
            let error = Target::parse("/search", Some(query)).expect_err(query);
            assert!(error.contains("control character"), "{query}: {error}");
        }
        let target = Target::parse("/search", Some("q=a%20b")).expect("parses");
        assert_eq!(target.query, vec![("q".into(), "a b".into())]);
    }

    #[test]
    fn parse_decodes_double_escapes_only_once() {
        // %252e is "%2e" after one decoding: a literal name, not a dot.
        assert_eq!(
            target("/public/%252e%252e/admin"),
            Ok("/public/%2e%2e/admin".into())
        );
    }

    #[test]
    fn url_forwards_the_decided_path_and_query() {
        let base = Url::parse("https://api.test/v1/").expect("base");
        let target = Target::parse("/public/%2e%2e/repos/a%20b/", Some("q=x%20y&page=2&q=z"))
            .expect("parses");
        assert_eq!(target.path, "/repos/a b");
        assert_eq!(
            target.query,
            vec![
                ("q".into(), "x y".into()),
                ("page".into(), "2".into()),
                ("q".into(), "z".into())
            ]
        );
        assert_eq!(
            target.url(&base).as_str(),
            "https://api.test/v1/repos/a%20b/?q=x+y&page=2&q=z"
        );
    }

    #[test]
    fn url_of_root_keeps_the_base_path() {
        let base = Url::parse("http://127.0.0.1:9000/api").expect("base");
        let target = Target::parse("", None).expect("parses");
        assert_eq!(target.url(&base).as_str(), "http://127.0.0.1:9000/api");
        let target = Target::parse("/", None).expect("parses");
        assert_eq!(target.url(&base).as_str(), "http://127.0.0.1:9000/api");
        let root = Url::parse("http://127.0.0.1:9000").expect("base");
        assert_eq!(target.url(&root).as_str(), "http://127.0.0.1:9000/");
    }

    #[test]
    fn is_json_type_accepts_parameters_and_suffixes() {
        assert!(is_json_type("application/json; charset=utf-8"));
        assert!(is_json_type("application/merge-patch+json"));
        assert!(!is_json_type("text/plain"));
    }
}
