//! The MCP endpoint that agents talk to: Streamable HTTP at `/mcp` (all
//! upstreams, tools named `{server}__{tool}`) and `/mcp/{server}` (one
//! upstream with its own names).
//!
//! Two eras of the protocol are served side by side:
//! - the handshake revisions (2025-06-18, 2025-11-25 and older): `initialize`
//!   creates a session whose id comes back in `Mcp-Session-Id`, and later
//!   requests carry that header and `MCP-Protocol-Version`;
//! - the stateless revision 2026-07-28: no handshake and no session; every
//!   request carries its protocol version and client capabilities in
//!   `params._meta`, mirrored in the `MCP-Protocol-Version`, `Mcp-Method` and
//!   `Mcp-Name` headers, and `server/discover` describes the server.
//!
//! Every message is parsed once with duplicate keys rejected; batches are
//! rejected (MCP removed batching in 2025-06-18). The task token
//! authenticates every request, and a session belongs to the task that
//! opened it.

mod dispatch;
mod relay;
mod session;
mod subscriptions;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub use session::{AnswerError, Session, Sessions};

use crate::auth::{ApiError, authenticate_task};
use crate::state::AppState;

/// Revisions that use the `initialize` handshake, oldest first.
pub const HANDSHAKE_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Revisions that use the per-request envelope.
pub const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];
/// The key under `_meta` of a refused call's result that carries Warden's
/// machine-readable decision.
pub const DECISION_META_KEY: &str = "dev.warden/decision";

/// Time an agent has to send a whole request body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";
const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
const CLIENT_CAPABILITIES_META: &str = "io.modelcontextprotocol/clientCapabilities";
const SERVER_INFO_META: &str = "io.modelcontextprotocol/serverInfo";

/// JSON-RPC and MCP error codes used here.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid parameters, including an unknown tool.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error, including a failed upstream.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Headers disagree with the body (2026-07-28).
    pub const HEADER_MISMATCH: i64 = -32020;
    /// Unsupported protocol version (2026-07-28).
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// A JSON-RPC error to send back.
#[derive(Debug, Clone)]
pub struct RpcError {
    /// Error code.
    pub code: i64,
    /// Human-readable message.
    pub message: String,
    /// Optional data.
    pub data: Option<Value>,
}

impl RpcError {
    /// Creates an error without data.
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    fn to_json(&self) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        error
    }
}

/// The protocol era of one request.
#[derive(Debug, Clone)]
pub enum Era {
    /// Handshake era, with the session's negotiated version.
    Handshake {
        /// The session.
        session: Arc<Session>,
    },
    /// Stateless 2026-07-28 era.
    Modern {
        /// The request's protocol version.
        version: String,
    },
    /// An `initialize` request that opens a session.
    Initializing,
}

/// `POST /mcp`.
pub async fn post_all(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle_post(state, None, headers, body).await
}

/// `POST /mcp/{server}`.
pub async fn post_one(
    State(state): State<Arc<AppState>>,
    Path(server): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !state.upstreams.contains_key(&server) {
        return ApiError::NotFound(format!(
            "no upstream server named {server:?}; the configured servers are: {}",
            state
                .upstreams
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into_mcp_response();
    }
    handle_post(state, Some(server), headers, body).await
}

/// `GET /mcp` and `GET /mcp/{server}`: the session's standalone event
/// stream, which carries the updates of the resources it subscribed to.
/// Without a session (the stateless revision) there is no such stream, and
/// the status is 405, which MCP clients read as "no stream".
pub async fn get_stream(
    State(state): State<Arc<AppState>>,
    server: Option<Path<String>>,
    headers: HeaderMap,
) -> Response {
    let claims = match authenticate_task(&state, &headers).await {
        Ok(claims) => claims,
        Err(error) => return error.into_mcp_response(),
    };
    let server = server.map(|Path(server)| server);
    let Some(session_id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST, DELETE")],
            "without an MCP session this endpoint offers no event stream; send initialize first, or send requests with POST",
        )
            .into_response();
    };
    let session = match state.sessions.get(session_id) {
        Some(session) if session.task_id == claims.task_id => session,
        _ => return session_not_found(),
    };
    if session.server != server {
        return transport_error(
            code::INVALID_REQUEST,
            "this session was opened on another endpoint; use the endpoint that answered initialize",
        );
    }
    if relay::Mode::from_headers(&headers) == relay::Mode::Json {
        return (
            StatusCode::NOT_ACCEPTABLE,
            [(header::CONTENT_TYPE, "application/json")],
            json!({
                "error": "not_acceptable",
                "message": "the event stream is text/event-stream; send Accept: text/event-stream"
            })
            .to_string(),
        )
            .into_response();
    }
    let Some(events) = session.open_stream(&claims, relay::QUEUE) else {
        return (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "application/json")],
            json!({
                "error": "conflict",
                "message": "this session's event stream is already open; close it before opening another"
            })
            .to_string(),
        )
            .into_response();
    };
    tracing::debug!(task.id = %claims.task_id, session = %session.id, "event stream opened");
    event_stream_response(events)
}

/// `DELETE /mcp`: ends the caller's session.
pub async fn delete_session(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let claims = match authenticate_task(&state, &headers).await {
        Ok(claims) => claims,
        Err(error) => return error.into_mcp_response(),
    };
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return ApiError::BadRequest("missing Mcp-Session-Id header".into()).into_mcp_response();
    };
    match state.sessions.get(id) {
        Some(session) if session.task_id == claims.task_id => {
            state.sessions.remove(id);
            StatusCode::OK.into_response()
        }
        _ => ApiError::NotFound(format!("no session {id}")).into_mcp_response(),
    }
}

/// `DELETE /mcp/{server}`.
pub async fn delete_session_one(
    state: State<Arc<AppState>>,
    Path(_server): Path<String>,
    headers: HeaderMap,
) -> Response {
    delete_session(state, headers).await
}

async fn handle_post(
    state: Arc<AppState>,
    server: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let claims = match authenticate_task(&state, &headers).await {
        Ok(claims) => claims,
        Err(error) => return error.into_mcp_response(),
    };
    let limit = state.config.limits.max_body_bytes;
    // A declared Content-Length over the limit was already answered with
    // 413 by the Host and Origin middleware, which runs for every route.
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return ApiError::PayloadTooLarge(limit).into_mcp_response(),
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                axum::Json(json!({
                    "error": "request_timeout",
                    "message": format!("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs())
                })),
            )
                .into_response();
        }
    };
    let message = match warden_core::json::parse_strict(&bytes) {
        Ok(message) => message,
        Err(error) if error.is_strictness() => {
            return transport_error(code::INVALID_REQUEST, &format!("invalid message: {error}"));
        }
        Err(error) => {
            return transport_error(code::PARSE_ERROR, &format!("parse error: {error}"));
        }
    };
    let Value::Object(object) = &message else {
        let what = if message.is_array() {
            "JSON-RPC batches are not supported: MCP removed batching in revision 2025-06-18; send one message per request"
        } else {
            "a JSON-RPC message must be a JSON object"
        };
        return transport_error(code::INVALID_REQUEST, what);
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return transport_error(code::INVALID_REQUEST, "jsonrpc must be \"2.0\"");
    }
    let method = object.get("method").and_then(Value::as_str);
    let id = object.get("id");
    match (method, id) {
        (Some(method), Some(id)) => {
            if !(id.is_string() || id.is_i64() || id.is_u64()) {
                return transport_error(
                    code::INVALID_REQUEST,
                    "request id must be a string or an integer",
                );
            }
            handle_request(
                &state,
                server,
                &headers,
                &claims,
                method,
                id.clone(),
                &message,
            )
            .await
        }
        (Some(method), None) => {
            if object.contains_key("id") {
                return transport_error(code::INVALID_REQUEST, "request id must not be null");
            }
            handle_notification(&state, &headers, &claims, method).await
        }
        (None, Some(id)) if object.contains_key("result") || object.contains_key("error") => {
            handle_answer(&state, &headers, &claims, id, object)
        }
        _ => transport_error(
            code::INVALID_REQUEST,
            "message is neither a request, a notification nor a response",
        ),
    }
}

/// Takes an agent's response to a server request that Warden relayed to it.
fn handle_answer(
    state: &AppState,
    headers: &HeaderMap,
    claims: &warden_identity::TaskClaims,
    id: &Value,
    object: &serde_json::Map<String, Value>,
) -> Response {
    let session_id = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
    if let Some(session_id) = session_id {
        match state.sessions.get(session_id) {
            Some(session) if session.task_id == claims.task_id => {}
            _ => return session_not_found(),
        }
    }
    let outcome = match (object.get("result"), object.get("error")) {
        (Some(result), None) => Ok(result.clone()),
        (None, Some(error)) if error.is_object() => Err(crate::upstream::RpcError {
            error: error.clone(),
        }),
        _ => {
            return transport_error(
                code::INVALID_REQUEST,
                "a response must carry either result or an error object",
            );
        }
    };
    match state
        .sessions
        .deliver_answer(id, &claims.task_id, session_id, outcome)
    {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(error) => transport_error(
            code::INVALID_REQUEST,
            &format!("{error}; it may have timed out or belong to another session"),
        ),
    }
}

async fn handle_notification(
    state: &AppState,
    headers: &HeaderMap,
    claims: &warden_identity::TaskClaims,
    method: &str,
) -> Response {
    if let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
        match state.sessions.get(id) {
            Some(session) if session.task_id == claims.task_id => {}
            _ => return session_not_found(),
        }
    }
    tracing::debug!(task.id = %claims.task_id, method, "agent notification");
    StatusCode::ACCEPTED.into_response()
}

async fn handle_request(
    state: &Arc<AppState>,
    server: Option<String>,
    headers: &HeaderMap,
    claims: &warden_identity::TaskClaims,
    method: &str,
    id: Value,
    message: &Value,
) -> Response {
    let params = message.get("params");
    if params.is_some_and(|p| !p.is_object()) {
        return reply(
            None,
            &id,
            Err(RpcError::new(
                code::INVALID_PARAMS,
                "params must be an object",
            )),
        );
    }
    for name in [SESSION_HEADER, VERSION_HEADER] {
        if headers.get_all(name).iter().count() > 1 {
            return transport_error(
                code::INVALID_REQUEST,
                &format!("the {name} header appears more than once; send it once"),
            );
        }
    }
    let era = if method == "initialize" {
        Era::Initializing
    } else if let Some(session_id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
        let Some(session) = state.sessions.get(session_id) else {
            return session_not_found();
        };
        if session.task_id != claims.task_id {
            return session_not_found();
        }
        if session.server != server {
            return transport_error(
                code::INVALID_REQUEST,
                "this session was opened on another endpoint; use the endpoint that answered initialize",
            );
        }
        if let Some(version) = headers.get(VERSION_HEADER) {
            let version = version.to_str().unwrap_or_default();
            if !HANDSHAKE_VERSIONS.contains(&version) {
                return transport_error(
                    code::INVALID_REQUEST,
                    &format!(
                        "unsupported MCP-Protocol-Version {version:?}; this session negotiated {}",
                        session.protocol_version
                    ),
                );
            }
        }
        Era::Handshake { session }
    } else if has_envelope(params) || method == "server/discover" {
        match check_envelope(headers, method, params) {
            Ok(version) => Era::Modern { version },
            Err(error) => {
                let status = modern_status(error.code);
                let mut response = reply(None, &id, Err(error));
                *response.status_mut() = status;
                return response;
            }
        }
    } else {
        return transport_error(
            code::INVALID_REQUEST,
            "missing Mcp-Session-Id header: send initialize first, or use protocol revision 2026-07-28 with its per-request _meta envelope",
        );
    };

    let in_flight = match &era {
        Era::Handshake { session } => match session.begin(&id) {
            Some(guard) => Some(guard),
            None => {
                return reply(
                    None,
                    &id,
                    Err(RpcError::new(
                        code::INVALID_REQUEST,
                        format!(
                            "request id {id} is already in flight on this session; use a new id"
                        ),
                    )),
                );
            }
        },
        _ => None,
    };

    let modern = matches!(era, Era::Modern { .. });
    let mut mode = relay::Mode::from_headers(headers);
    // An opened session's id and a 2026-07-28 error's status travel in the
    // response head, which a stream sends before the outcome is known.
    if mode == relay::Mode::Stream && (modern || method == "initialize") {
        mode = relay::Mode::JsonFirst;
    }
    let (session_id, capabilities) = match &era {
        Era::Handshake { session } => (
            Some(session.id.clone()),
            session.client_capabilities.clone(),
        ),
        Era::Modern { .. } => (
            None,
            params
                .and_then(|p| p.get("_meta"))
                .and_then(|meta| meta.get(CLIENT_CAPABILITIES_META))
                .cloned()
                .unwrap_or_else(|| json!({})),
        ),
        Era::Initializing => (None, json!({})),
    };
    let relayer = Arc::new(relay::Relayer {
        state: state.clone(),
        claims: claims.clone(),
        session_id,
        capabilities,
        tool: relay::called_tool(server.as_deref(), method, params),
        request_id: id.clone(),
        modern,
    });
    let (relay_tx, relay_rx) = mpsc::channel(relay::QUEUE);
    let session = match &era {
        Era::Handshake { session } => Some(session.clone()),
        _ => None,
    };
    let call = Call {
        state: state.clone(),
        claims: claims.clone(),
        session,
        server,
        id,
        method: method.to_owned(),
        params: params.cloned(),
        caller_trace: crate::tracecontext::TraceParent::from_headers(headers),
        modern,
        in_flight,
    };
    let work: Work = Box::pin(call.run(relay_tx));
    respond(mode, work, relay_rx, relayer).await
}

/// One agent request, owned, so that it can go on after the response head
/// is sent.
struct Call {
    state: Arc<AppState>,
    claims: warden_identity::TaskClaims,
    session: Option<Arc<Session>>,
    server: Option<String>,
    id: Value,
    method: String,
    params: Option<Value>,
    caller_trace: Option<crate::tracecontext::TraceParent>,
    modern: bool,
    in_flight: Option<session::InFlight>,
}

/// The outcome of a [`Call`], ready to send.
struct Finished {
    status: StatusCode,
    session: Option<String>,
    body: Value,
}

type Work = Pin<Box<dyn Future<Output = Finished> + Send>>;

impl Call {
    async fn run(self, relay: crate::upstream::InterimSender) -> Finished {
        let context = dispatch::Context {
            state: &self.state,
            claims: &self.claims,
            server: self.server.as_deref(),
            request_id: &self.id,
            caller_trace: self.caller_trace.clone(),
            relay: Some(relay),
        };
        let outcome = match self.method.as_str() {
            "resources/subscribe" | "resources/unsubscribe" => {
                let request = subscriptions::Request {
                    state: &self.state,
                    claims: &self.claims,
                    server: self.server.as_deref(),
                    session: self.session.as_ref(),
                    request_id: &self.id,
                };
                let subscribe = self.method == "resources/subscribe";
                subscriptions::handle(&request, subscribe, self.params.as_ref())
                    .await
                    .into()
            }
            method => dispatch::dispatch(&context, method, self.params.as_ref()).await,
        };
        let (outcome, session) = match outcome {
            dispatch::Outcome::Result(result) => (Ok(result), None),
            dispatch::Outcome::Error(error) => (Err(error), None),
            dispatch::Outcome::Initialized { result, session } => (Ok(result), Some(session)),
        };
        let outcome = if self.modern {
            outcome.map(|result| stamp_modern(&context, &self.method, result))
        } else {
            outcome.map(strip_modern)
        };
        let status = match (&outcome, self.modern) {
            (Err(error), true) => modern_status(error.code),
            _ => StatusCode::OK,
        };
        drop(self.in_flight);
        Finished {
            status,
            session,
            body: response_body(&self.id, outcome),
        }
    }
}

/// Waits for the call and responds with JSON, or with an event stream once
/// the upstream sends something the agent should see before the response.
async fn respond(
    mode: relay::Mode,
    mut work: Work,
    mut interims: mpsc::Receiver<crate::upstream::Interim>,
    relayer: Arc<relay::Relayer>,
) -> Response {
    if mode == relay::Mode::Stream {
        return stream(work, interims, relayer, None);
    }
    loop {
        tokio::select! {
            biased;
            interim = interims.recv() => match interim {
                Some(interim) if mode == relay::Mode::JsonFirst => {
                    return stream(work, interims, relayer, Some(interim));
                }
                Some(interim) => relayer.handle(interim, None).await,
                None => return json_response(work.await),
            },
            finished = &mut work => {
                if mode == relay::Mode::JsonFirst
                    && let Ok(interim) = interims.try_recv()
                {
                    let done: Work = Box::pin(async move { finished });
                    return stream(done, interims, relayer, Some(interim));
                }
                return json_response(finished);
            }
        }
    }
}

/// Responds with an event stream that carries the relayed messages and then
/// the response. The call goes on when the agent disconnects, so that its
/// outcome is still recorded.
fn stream(
    mut work: Work,
    mut interims: mpsc::Receiver<crate::upstream::Interim>,
    relayer: Arc<relay::Relayer>,
    first: Option<crate::upstream::Interim>,
) -> Response {
    let (out, events) = mpsc::channel::<String>(relay::QUEUE);
    tokio::spawn(async move {
        if let Some(interim) = first {
            relayer.handle(interim, Some(&out)).await;
        }
        let finished = loop {
            tokio::select! {
                biased;
                interim = interims.recv() => match interim {
                    Some(interim) => relayer.handle(interim, Some(&out)).await,
                    None => break (&mut work).await,
                },
                finished = &mut work => {
                    while let Ok(interim) = interims.try_recv() {
                        relayer.handle(interim, Some(&out)).await;
                    }
                    break finished;
                }
            }
        };
        let _ = out
            .send(crate::sse::format_event(&finished.body.to_string()))
            .await;
    });
    event_stream_response(events)
}

fn event_stream_response(events: mpsc::Receiver<String>) -> Response {
    let body = Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(events)
            .map(|event| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(event))),
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn json_response(finished: Finished) -> Response {
    let mut response = (
        finished.status,
        [(header::CONTENT_TYPE, "application/json")],
        finished.body.to_string(),
    )
        .into_response();
    if let Some(session) = finished.session
        && let Ok(value) = HeaderValue::from_str(&session)
    {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response
}

/// Builds the policy view of a task from its token's claims: the acting
/// agent and the delegation chain come from the `act` claim.
pub fn task_context(claims: &warden_identity::TaskClaims) -> warden_policy::TaskContext {
    let agent = crate::delegation::acting_agent(claims).to_owned();
    let chain = crate::delegation::chain(claims);
    warden_policy::TaskContext {
        task_id: claims.task_id.clone(),
        trust_domain: agent
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned(),
        agent,
        user: claims.user.clone(),
        intent: claims.intent.clone(),
        tools: claims.tools.clone(),
        depth: (chain.len() - 1) as u32,
        chain,
    }
}

fn has_envelope(params: Option<&Value>) -> bool {
    params
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object)
        .is_some_and(|meta| meta.contains_key(PROTOCOL_VERSION_META))
}

/// Checks the 2026-07-28 envelope and its mirrored headers.
fn check_envelope(
    headers: &HeaderMap,
    method: &str,
    params: Option<&Value>,
) -> Result<String, RpcError> {
    let meta = params
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object)
        .ok_or_else(|| {
            RpcError::new(
                code::INVALID_PARAMS,
                format!("params._meta must be an object carrying {PROTOCOL_VERSION_META:?} and {CLIENT_CAPABILITIES_META:?}"),
            )
        })?;
    let missing: Vec<&str> = [PROTOCOL_VERSION_META, CLIENT_CAPABILITIES_META]
        .into_iter()
        .filter(|key| !meta.contains_key(*key))
        .collect();
    if !missing.is_empty() {
        return Err(RpcError::new(
            code::INVALID_PARAMS,
            format!(
                "params._meta is missing the envelope key(s): {}",
                missing.join(", ")
            ),
        ));
    }
    let version = &meta[PROTOCOL_VERSION_META];
    // Two copies of a routing header would let an intermediary that reads
    // the other copy see another request than the one Warden decides.
    for name in [VERSION_HEADER, METHOD_HEADER, NAME_HEADER] {
        if headers.get_all(name).iter().count() > 1 {
            return Err(RpcError::new(
                code::HEADER_MISMATCH,
                format!("the {name} header appears more than once; send it once"),
            ));
        }
    }
    let header_value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header_value(VERSION_HEADER).is_none_or(|h| Some(h) != version.as_str()) {
        return Err(RpcError::new(
            code::HEADER_MISMATCH,
            "MCP-Protocol-Version header does not match the envelope's protocol version",
        ));
    }
    if header_value(METHOD_HEADER) != Some(method) {
        return Err(RpcError::new(
            code::HEADER_MISMATCH,
            "Mcp-Method header does not match the request's method",
        ));
    }
    let name_key = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(key) = name_key
        && let Some(expected) = params.and_then(|p| p.get(key)).and_then(Value::as_str)
        && decode_header_value(header_value(NAME_HEADER)).as_deref() != Some(expected)
    {
        return Err(RpcError::new(
            code::HEADER_MISMATCH,
            format!("Mcp-Name header does not match the request's {key:?}"),
        ));
    }
    let Some(version) = version.as_str() else {
        return Err(RpcError::new(
            code::INVALID_PARAMS,
            "the protocol version must be a string",
        ));
    };
    if !MODERN_VERSIONS.contains(&version) {
        let mut error = RpcError::new(
            code::UNSUPPORTED_PROTOCOL_VERSION,
            format!("unsupported protocol version {version:?}"),
        );
        let mut supported: Vec<&str> = MODERN_VERSIONS.to_vec();
        supported.extend(HANDSHAKE_VERSIONS);
        error.data = Some(json!({ "supported": supported, "requested": version }));
        return Err(error);
    }
    Ok(version.to_owned())
}

/// Decodes an `Mcp-Name` value, which is either plain printable ASCII or
/// `=?base64?...?=`.
fn decode_header_value(value: Option<&str>) -> Option<String> {
    use base64::Engine;
    let value = value?;
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(payload) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(payload)
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(value.to_owned()),
    }
}

fn modern_status(code: i64) -> StatusCode {
    match code {
        code::PARSE_ERROR
        | code::INVALID_REQUEST
        | code::INVALID_PARAMS
        | code::HEADER_MISMATCH
        | code::UNSUPPORTED_PROTOCOL_VERSION => StatusCode::BAD_REQUEST,
        code::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// Adds the fields that 2026-07-28 requires on every result.
fn stamp_modern(context: &dispatch::Context<'_>, method: &str, mut result: Value) -> Value {
    let Some(object) = result.as_object_mut() else {
        return result;
    };
    object
        .entry("resultType")
        .or_insert_with(|| Value::String("complete".into()));
    if method.ends_with("/list") || method == "server/discover" {
        object.entry("ttlMs").or_insert(json!(0));
        object
            .entry("cacheScope")
            .or_insert_with(|| Value::String("private".into()));
    }
    let meta = object.entry("_meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.entry(SERVER_INFO_META)
            .or_insert_with(|| dispatch::server_info(context));
    }
    result
}

/// Removes the 2026-07-28 result fields that a handshake-era client did not
/// negotiate, in case a modern upstream added them.
fn strip_modern(mut result: Value) -> Value {
    if let Some(object) = result.as_object_mut() {
        for key in ["resultType", "ttlMs", "cacheScope"] {
            object.remove(key);
        }
        if let Some(meta) = object.get_mut("_meta").and_then(Value::as_object_mut)
            && meta.remove(SERVER_INFO_META).is_some()
            && meta.is_empty()
        {
            object.remove("_meta");
        }
    }
    result
}

fn response_body(id: &Value, outcome: Result<Value, RpcError>) -> Value {
    match outcome {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(error) => json!({ "jsonrpc": "2.0", "id": id, "error": error.to_json() }),
    }
}

fn reply(session: Option<&str>, id: &Value, outcome: Result<Value, RpcError>) -> Response {
    json_response(Finished {
        status: StatusCode::OK,
        session: session.map(str::to_owned),
        body: response_body(id, outcome),
    })
}

/// Builds a transport-level rejection: HTTP 400 with a JSON-RPC error whose
/// id is null, because the request id could not be trusted.
fn transport_error(code: i64, message: &str) -> Response {
    let body =
        json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } });
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn session_not_found() -> Response {
    let body = json!({ "jsonrpc": "2.0", "id": null, "error": {
        "code": -32001,
        "message": "session not found; it expired or was closed, so send initialize again"
    }});
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
