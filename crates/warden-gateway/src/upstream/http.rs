//! Streamable HTTP upstreams.
//!
//! Warden first probes the upstream with `server/discover` to learn whether it speaks
//! the stateless revision 2026-07-28. If it does, every request carries the
//! per-request `_meta` envelope and its mirrored headers, and there is no
//! session. Otherwise (any error, including 404 or a JSON-RPC error) Warden
//! opens one MCP session with the `initialize` handshake. Each request is a
//! POST. A response comes back as
//! JSON or as an event stream; in a stream, notifications are skipped and
//! server-to-client requests are answered (ping) or rejected, until the
//! response with the request's id arrives. When the server forgets the
//! session (404), Warden initializes again and retries the request once.
//!
//! Redirects are never followed, and Warden sends the upstream's own Host
//! header, never the agent's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::{RpcOutcome, UpstreamError, client_initialize_params, outcome_of};
use crate::sse;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";
/// The stateless revision Warden speaks to upstreams that offer it.
pub const MODERN_VERSION: &str = "2026-07-28";

#[derive(Debug, Clone)]
struct Session {
    id: Option<String>,
    protocol_version: String,
    initialize: Value,
    modern: bool,
}

/// A Streamable HTTP upstream.
pub struct HttpClient {
    server: String,
    url: String,
    client: reqwest::Client,
    session: tokio::sync::Mutex<Option<Session>>,
    next_id: AtomicU64,
    connected: AtomicBool,
    /// Bumped on every new session and every tool-list change notification.
    changes: AtomicU64,
    max_message_bytes: usize,
}

enum Reply {
    Message(Value),
    Accepted,
    SessionExpired,
}

impl HttpClient {
    /// Creates the client; the session starts on first use.
    pub fn new(
        server: &str,
        url: &str,
        connect_timeout: Duration,
        max_message_bytes: usize,
    ) -> Result<HttpClient, UpstreamError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|error| UpstreamError::Unavailable {
                server: server.to_owned(),
                detail: format!("cannot build HTTP client: {error}"),
            })?;
        Ok(HttpClient {
            server: server.to_owned(),
            url: url.to_owned(),
            client,
            session: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
            connected: AtomicBool::new(false),
            changes: AtomicU64::new(0),
            max_message_bytes,
        })
    }

    /// Opens the session if needed and returns the `initialize` result.
    pub async fn initialize_result(&self) -> Result<Value, UpstreamError> {
        Ok(self.ensure_session().await?.initialize)
    }

    /// Counter of new sessions and tool-list change notifications.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Returns true while a session is established.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Sends one request and waits for the response.
    pub async fn request(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<RpcOutcome, UpstreamError> {
        for _ in 0..2 {
            let session = self.ensure_session().await?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let mut message = json!({ "jsonrpc": "2.0", "id": id, "method": method });
            if let Some(params) = &params {
                message["params"] = params.clone();
            }
            if session.modern {
                add_envelope(&mut message);
            }
            match self.post(Some(&session), &message, Some(id)).await? {
                Reply::Message(response) => return outcome_of(&self.server, &response),
                Reply::SessionExpired => {
                    tracing::info!(upstream = %self.server, "upstream session expired; initializing again");
                    *self.session.lock().await = None;
                    self.connected.store(false, Ordering::Release);
                }
                Reply::Accepted => {
                    return Err(self.protocol("answered a request with 202 Accepted"));
                }
            }
        }
        Err(self.unavailable("the session expired twice in a row"))
    }

    /// Sends one notification.
    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), UpstreamError> {
        let session = self.ensure_session().await?;
        if session.modern {
            // 2026-07-28 defines no client-to-server notifications.
            return Ok(());
        }
        let mut message = json!({ "jsonrpc": "2.0", "method": method });
        if let Some(params) = params {
            message["params"] = params;
        }
        self.post(Some(&session), &message, None).await.map(|_| ())
    }

    async fn ensure_session(&self) -> Result<Session, UpstreamError> {
        let mut slot = self.session.lock().await;
        if let Some(session) = slot.as_ref() {
            return Ok(session.clone());
        }
        let session = match self.discover().await? {
            Some(session) => session,
            None => self.initialize().await?,
        };
        tracing::info!(upstream = %self.server, url = %self.url, protocol = %session.protocol_version, "upstream connected");
        self.connected.store(true, Ordering::Release);
        self.changes.fetch_add(1, Ordering::AcqRel);
        *slot = Some(session.clone());
        Ok(session)
    }

    /// Probes for the stateless revision; `None` means "use the handshake".
    async fn discover(&self) -> Result<Option<Session>, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message =
            json!({ "jsonrpc": "2.0", "id": id, "method": "server/discover", "params": {} });
        add_envelope(&mut message);
        let probe = Session {
            id: None,
            protocol_version: MODERN_VERSION.to_owned(),
            initialize: Value::Null,
            modern: true,
        };
        let response = self.post_raw(Some(&probe), &message).await?;
        if !response.status().is_success() {
            return Ok(None);
        }
        let Ok(Reply::Message(reply)) = self.read_reply(response, Some(id), None).await else {
            return Ok(None);
        };
        let Some(result) = reply.get("result") else {
            return Ok(None);
        };
        let modern = result
            .get("supportedVersions")
            .and_then(Value::as_array)
            .is_some_and(|versions| versions.iter().any(|v| v == MODERN_VERSION));
        if !modern {
            return Ok(None);
        }
        let mut initialize = json!({
            "protocolVersion": MODERN_VERSION,
            "capabilities": result.get("capabilities").cloned().unwrap_or_else(|| json!({})),
            "serverInfo": result
                .pointer("/_meta/io.modelcontextprotocol~1serverInfo")
                .cloned()
                .unwrap_or_else(|| json!({})),
        });
        if let Some(instructions) = result.get("instructions") {
            initialize["instructions"] = instructions.clone();
        }
        Ok(Some(Session {
            id: None,
            protocol_version: MODERN_VERSION.to_owned(),
            initialize,
            modern: true,
        }))
    }

    async fn initialize(&self) -> Result<Session, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = json!({
            "jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": client_initialize_params()
        });
        let response = self.post_raw(None, &message).await?;
        let session_id = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let reply = self.read_reply(response, Some(id), None).await?;
        let Reply::Message(reply) = reply else {
            return Err(self.protocol("did not answer initialize"));
        };
        let initialize = match outcome_of(&self.server, &reply)? {
            Ok(result) => result,
            Err(error) => {
                return Err(self.protocol(&format!("initialize failed: {}", error.error)));
            }
        };
        let protocol_version = initialize
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(super::UPSTREAM_PROTOCOL_VERSION)
            .to_owned();
        let session = Session {
            id: session_id,
            protocol_version,
            initialize,
            modern: false,
        };
        let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        self.post(Some(&session), &initialized, None).await?;
        Ok(session)
    }

    async fn post(
        &self,
        session: Option<&Session>,
        message: &Value,
        id: Option<u64>,
    ) -> Result<Reply, UpstreamError> {
        let response = self.post_raw(session, message).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND
            && session.is_some_and(|s| s.id.is_some())
        {
            return Ok(Reply::SessionExpired);
        }
        self.read_reply(response, id, session).await
    }

    async fn post_raw(
        &self,
        session: Option<&Session>,
        message: &Value,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(session) = session {
            if let Some(id) = &session.id
                && let Ok(value) = HeaderValue::from_str(id)
            {
                headers.insert(SESSION_HEADER, value);
            }
            if let Ok(value) = HeaderValue::from_str(&session.protocol_version) {
                headers.insert(VERSION_HEADER, value);
            }
            if session.modern {
                add_routing_headers(&mut headers, message);
            }
        }
        self.client
            .post(&self.url)
            .headers(headers)
            .body(message.to_string())
            .send()
            .await
            .map_err(|error| {
                self.connected.store(false, Ordering::Release);
                self.unavailable(&format!("POST {} failed: {error}", self.url))
            })
    }

    async fn read_reply(
        &self,
        response: reqwest::Response,
        id: Option<u64>,
        session: Option<&Session>,
    ) -> Result<Reply, UpstreamError> {
        let status = response.status();
        if status == reqwest::StatusCode::ACCEPTED {
            return Ok(Reply::Accepted);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") {
            return self.read_stream(response, id, session).await;
        }
        let body = self.read_body(response).await?;
        if id.is_none() {
            return Ok(Reply::Accepted);
        }
        let message = warden_core::json::parse_strict(&body).map_err(|error| {
            self.protocol(&format!(
                "HTTP {status} with a body that is not strict JSON ({error})"
            ))
        })?;
        if message.get("id").is_none() && message.get("error").is_none() {
            return Err(self.protocol(&format!("HTTP {status} without a JSON-RPC response")));
        }
        Ok(Reply::Message(message))
    }

    async fn read_body(&self, response: reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|error| self.unavailable(&format!("reading the body failed: {error}")))?;
            if body.len() + chunk.len() > self.max_message_bytes {
                return Err(self.protocol(&format!(
                    "response body larger than {} bytes",
                    self.max_message_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn read_stream(
        &self,
        response: reqwest::Response,
        id: Option<u64>,
        session: Option<&Session>,
    ) -> Result<Reply, UpstreamError> {
        let mut parser = sse::Parser::new(self.max_message_bytes);
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| {
                self.unavailable(&format!("reading the event stream failed: {error}"))
            })?;
            let events = parser
                .feed(&chunk)
                .map_err(|error| self.protocol(&error.to_string()))?;
            for event in events {
                if !(event.event.is_empty() || event.event == "message") || event.data.is_empty() {
                    continue;
                }
                let message = match warden_core::json::parse_strict(event.data.as_bytes()) {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!(upstream = %self.server, %error, "upstream event is not strict JSON; skipped it");
                        continue;
                    }
                };
                let method = message.get("method").and_then(Value::as_str);
                match (message.get("id"), method) {
                    (Some(message_id), None)
                        if id.is_some_and(|id| message_id.as_u64() == Some(id)) =>
                    {
                        return Ok(Reply::Message(message));
                    }
                    (Some(request_id), Some(method)) => {
                        self.answer_server_request(session, request_id, method)
                            .await;
                    }
                    (None, Some("notifications/tools/list_changed")) => {
                        self.changes.fetch_add(1, Ordering::AcqRel);
                    }
                    _ => {
                        // NOTE: notifications sent during a call (progress,
                        // logging) are not relayed to the agent yet.
                        tracing::debug!(upstream = %self.server, ?method, "upstream notification");
                    }
                }
            }
        }
        if id.is_none() {
            return Ok(Reply::Accepted);
        }
        Err(self.unavailable("the event stream ended before the response"))
    }

    async fn answer_server_request(&self, session: Option<&Session>, id: &Value, method: &str) {
        let reply = if method == "ping" {
            json!({ "jsonrpc": "2.0", "id": id, "result": {} })
        } else {
            json!({ "jsonrpc": "2.0", "id": id, "error": {
                "code": -32601,
                "message": format!("{method} is not supported by this client")
            }})
        };
        if let Err(error) = self.post_raw(session, &reply).await {
            tracing::debug!(upstream = %self.server, %error, "response to a server request not delivered");
        }
    }

    fn unavailable(&self, detail: &str) -> UpstreamError {
        UpstreamError::Unavailable {
            server: self.server.clone(),
            detail: detail.to_owned(),
        }
    }

    fn protocol(&self, detail: &str) -> UpstreamError {
        UpstreamError::Protocol {
            server: self.server.clone(),
            detail: detail.to_owned(),
        }
    }
}

/// Adds the 2026-07-28 per-request envelope to a request's `params._meta`.
fn add_envelope(message: &mut Value) {
    if !message["params"].is_object() {
        message["params"] = json!({});
    }
    let params = &mut message["params"];
    if !params["_meta"].is_object() {
        params["_meta"] = json!({});
    }
    let meta = &mut params["_meta"];
    meta["io.modelcontextprotocol/protocolVersion"] = json!(MODERN_VERSION);
    meta["io.modelcontextprotocol/clientCapabilities"] = json!({});
    meta["io.modelcontextprotocol/clientInfo"] =
        json!({ "name": "warden", "version": env!("CARGO_PKG_VERSION") });
}

/// Mirrors the method and, for named requests, the name into headers.
// NOTE: `Mcp-Param-*` headers for arguments annotated with `x-mcp-header`
// are not sent, so a 2026-07-28 upstream that requires them rejects the call.
fn add_routing_headers(headers: &mut HeaderMap, message: &Value) {
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(method) {
        headers.insert(METHOD_HEADER, value);
    }
    let name = match method {
        "tools/call" | "prompts/get" => message.pointer("/params/name"),
        "resources/read" => message.pointer("/params/uri"),
        _ => None,
    };
    if let Some(name) = name.and_then(Value::as_str)
        && let Ok(value) = HeaderValue::from_str(&encode_header_value(name))
    {
        headers.insert(NAME_HEADER, value);
    }
}

/// Encodes a header value as plain printable ASCII or, when it would not
/// survive as a header, as `=?base64?...?=`.
fn encode_header_value(value: &str) -> String {
    use base64::Engine;
    let plain = value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && value.trim() == value
        && !(value.starts_with("=?base64?") && value.ends_with("?="));
    if plain {
        value.to_owned()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
        )
    }
}
