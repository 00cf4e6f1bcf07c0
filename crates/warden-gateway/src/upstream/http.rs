//! Streamable HTTP upstreams.
//!
//! Warden first probes the upstream with `server/discover` to learn whether it speaks
//! the stateless revision 2026-07-28. If it does, every request carries the
//! per-request `_meta` envelope and its mirrored headers, and there is no
//! session. Otherwise (any error, including 404 or a JSON-RPC error) Warden
//! opens one MCP session with the `initialize` handshake. Each request is a
//! POST. A response comes back as JSON or as an event stream. In a stream,
//! the notifications and server-to-client requests before the response with
//! the request's id go to the request's relay, if it has one. When the server
//! forgets the session (404), Warden initializes again and retries the
//! request once. Resource update notifications, which a server sends outside
//! any request, arrive on the session's standalone stream (`GET`), which
//! Warden reads once an agent subscribes to a resource.
//!
//! Redirects are never followed. Warden sends the upstream's own Host header,
//! never the agent's, and the `MCP-Protocol-Version` header only to servers
//! of revision 2025-06-18 or later, which define it.

use std::sync::Arc;
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
/// The first revision that defines the `MCP-Protocol-Version` header.
const FIRST_VERSION_HEADER_REVISION: &str = "2025-06-18";

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
    session: Arc<tokio::sync::Mutex<Option<Session>>>,
    next_id: AtomicU64,
    connected: AtomicBool,
    /// Bumped on every new session and every tool-list change notification.
    changes: Arc<AtomicU64>,
    max_message_bytes: usize,
    /// Credential injected into every request to this server.
    credential: Option<crate::credentials::Credential>,
    /// Sender of the resource update notifications of the standalone stream.
    updates: tokio::sync::broadcast::Sender<Value>,
    /// True once the standalone stream's reader runs.
    listening: AtomicBool,
}

/// Wait before the standalone stream is opened again, doubled after each
/// failure up to [`MAX_LISTEN_RETRY`].
const LISTEN_RETRY: Duration = Duration::from_secs(1);
/// Maximum wait between two attempts to open the standalone stream.
const MAX_LISTEN_RETRY: Duration = Duration::from_secs(30);

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
        credential: Option<crate::credentials::Credential>,
        updates: tokio::sync::broadcast::Sender<Value>,
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
            session: Arc::new(tokio::sync::Mutex::new(None)),
            next_id: AtomicU64::new(1),
            connected: AtomicBool::new(false),
            changes: Arc::new(AtomicU64::new(0)),
            max_message_bytes,
            credential,
            updates,
            listening: AtomicBool::new(false),
        })
    }

    /// Starts reading the session's standalone event stream (`GET`), once,
    /// for the notifications the server sends outside any request. The
    /// reader follows new sessions, retries with a growing wait, and stops
    /// for good when the server offers no stream (405).
    pub fn listen(&self) {
        if self.listening.swap(true, Ordering::AcqRel) {
            return;
        }
        let listener = Listener {
            server: self.server.clone(),
            url: self.url.clone(),
            client: self.client.clone(),
            session: self.session.clone(),
            changes: self.changes.clone(),
            updates: self.updates.clone(),
            credential: self.credential.clone(),
            max_message_bytes: self.max_message_bytes,
        };
        tokio::spawn(listener.run());
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

    /// Sends one request and waits for the response; `extra` headers (a
    /// per-task credential) go with this request only. What the server
    /// sends on the response stream before the response goes to `relay`.
    pub async fn request(
        &self,
        method: &str,
        params: Option<Value>,
        extra: &HeaderMap,
        relay: Option<super::InterimSender>,
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
            let reply = self
                .post(Some(&session), &message, Some(id), extra, relay.as_ref())
                .await?;
            match reply {
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
        self.post(Some(&session), &message, None, &HeaderMap::new(), None)
            .await
            .map(|_| ())
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
        let response = self
            .post_raw(Some(&probe), &message, &HeaderMap::new())
            .await?;
        if !response.status().is_success() {
            return Ok(None);
        }
        let Ok(Reply::Message(reply)) = self.read_reply(response, Some(id), None, None).await
        else {
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
        let response = self.post_raw(None, &message, &HeaderMap::new()).await?;
        let session_id = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let reply = self.read_reply(response, Some(id), None, None).await?;
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
        self.post(Some(&session), &initialized, None, &HeaderMap::new(), None)
            .await?;
        Ok(session)
    }

    async fn post(
        &self,
        session: Option<&Session>,
        message: &Value,
        id: Option<u64>,
        extra: &HeaderMap,
        relay: Option<&super::InterimSender>,
    ) -> Result<Reply, UpstreamError> {
        let response = self.post_raw(session, message, extra).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND
            && session.is_some_and(|s| s.id.is_some())
        {
            return Ok(Reply::SessionExpired);
        }
        self.read_reply(response, id, session, relay).await
    }

    async fn post_raw(
        &self,
        session: Option<&Session>,
        message: &Value,
        extra: &HeaderMap,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut headers = HeaderMap::new();
        if let Some(credential) = &self.credential {
            let injected = credential
                .static_headers()
                .map_err(|message| self.unavailable(&format!("the credential {message}")))?;
            headers.extend(injected.headers);
        }
        for (name, value) in extra {
            headers.insert(name.clone(), value.clone());
        }
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
            // The header exists from 2025-06-18 on; an older server gets
            // only the headers of its own revision.
            if session.protocol_version.as_str() >= FIRST_VERSION_HEADER_REVISION
                && let Ok(value) = HeaderValue::from_str(&session.protocol_version)
            {
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
        relay: Option<&super::InterimSender>,
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
            return self.read_stream(response, id, session, relay).await;
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
        relay: Option<&super::InterimSender>,
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
                    (Some(_), Some(_)) => {
                        let answer = super::relay_request(relay, &self.server, &message).await;
                        self.answer_server_request(session, &answer).await;
                    }
                    (None, Some("notifications/tools/list_changed")) => {
                        self.changes.fetch_add(1, Ordering::AcqRel);
                    }
                    _ => {
                        if !super::relay_notification(relay, &self.server, &message).await {
                            tracing::debug!(upstream = %self.server, ?method, "upstream notification not relayed");
                        }
                    }
                }
            }
        }
        if id.is_none() {
            return Ok(Reply::Accepted);
        }
        Err(self.unavailable("the event stream ended before the response"))
    }

    async fn answer_server_request(&self, session: Option<&Session>, answer: &Value) {
        match self.post_raw(session, answer, &HeaderMap::new()).await {
            Ok(response) if !response.status().is_success() => {
                tracing::debug!(upstream = %self.server, status = %response.status(), "server rejected the response to its request");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(upstream = %self.server, %error, "response to a server request not delivered");
            }
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

/// Reads an upstream session's standalone event stream.
struct Listener {
    server: String,
    url: String,
    client: reqwest::Client,
    session: Arc<tokio::sync::Mutex<Option<Session>>>,
    changes: Arc<AtomicU64>,
    updates: tokio::sync::broadcast::Sender<Value>,
    credential: Option<crate::credentials::Credential>,
    max_message_bytes: usize,
}

/// The reason the standalone stream ended.
enum Ended {
    /// The server offers no standalone stream.
    NotOffered,
    /// The stream ended or failed; opening it again may work.
    Retry(String),
}

impl Listener {
    async fn run(self) {
        let mut wait = LISTEN_RETRY;
        loop {
            let session = self.session.lock().await.clone();
            // A stateless (2026-07-28) session has no standalone stream.
            let ended = match session {
                Some(session) if session.modern => Ended::NotOffered,
                Some(session) => self.read(&session).await,
                None => Ended::Retry("no session yet".into()),
            };
            match ended {
                Ended::NotOffered => {
                    tracing::info!(upstream = %self.server, "upstream offers no standalone event stream; resource updates are not relayed");
                    return;
                }
                Ended::Retry(reason) => {
                    tracing::debug!(upstream = %self.server, reason, "standalone event stream ended; opening it again");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_LISTEN_RETRY);
        }
    }

    async fn read(&self, session: &Session) -> Ended {
        let mut headers = HeaderMap::new();
        if let Some(credential) = &self.credential {
            match credential.static_headers() {
                Ok(injected) => headers.extend(injected.headers),
                Err(message) => return Ended::Retry(format!("the credential {message}")),
            }
        }
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(id) = &session.id
            && let Ok(value) = HeaderValue::from_str(id)
        {
            headers.insert(SESSION_HEADER, value);
        }
        if session.protocol_version.as_str() >= FIRST_VERSION_HEADER_REVISION
            && let Ok(value) = HeaderValue::from_str(&session.protocol_version)
        {
            headers.insert(VERSION_HEADER, value);
        }

        let response = match self.client.get(&self.url).headers(headers).send().await {
            Ok(response) => response,
            Err(error) => return Ended::Retry(format!("GET {} failed: {error}", self.url)),
        };
        if response.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED {
            return Ended::NotOffered;
        }
        if !response.status().is_success() {
            return Ended::Retry(format!("GET {} returned {}", self.url, response.status()));
        }

        let mut parser = sse::Parser::new(self.max_message_bytes);
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => return Ended::Retry(format!("reading the stream failed: {error}")),
            };
            let events = match parser.feed(&chunk) {
                Ok(events) => events,
                Err(error) => return Ended::Retry(error.to_string()),
            };
            for event in events {
                self.handle(&event.data);
            }
        }
        Ended::Retry("the server closed the stream".into())
    }

    fn handle(&self, data: &str) {
        if data.is_empty() {
            return;
        }
        let Ok(message) = warden_core::json::parse_strict(data.as_bytes()) else {
            tracing::warn!(upstream = %self.server, "upstream event is not strict JSON; skipped it");
            return;
        };
        let method = message.get("method").and_then(Value::as_str);
        match (message.get("id"), method) {
            (None, Some("notifications/resources/updated")) => {
                // No receiver means no agent subscribed; nothing to do.
                let _ = self.updates.send(message);
            }
            (None, Some("notifications/tools/list_changed")) => {
                self.changes.fetch_add(1, Ordering::AcqRel);
            }
            // NOTE: Warden sends no response to a server request on the
            // standalone stream (ping, roots/list), because it declares no
            // capability that a server would use outside a request.
            _ => {
                tracing::debug!(upstream = %self.server, ?method, "upstream message outside a request not relayed")
            }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode};
    use axum::response::{IntoResponse, Response};

    use super::*;

    /// One request as the mock upstream received it.
    #[derive(Debug, Clone)]
    struct Seen {
        headers: AxumHeaders,
        body: Value,
    }

    #[derive(Clone)]
    struct Mock {
        revision: &'static str,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    async fn answer(State(mock): State<Mock>, headers: AxumHeaders, body: String) -> Response {
        let body: Value = serde_json::from_str(&body).expect("JSON body");
        mock.seen.lock().expect("lock").push(Seen {
            headers,
            body: body.clone(),
        });
        let id = body["id"].clone();
        match body["method"].as_str() {
            Some("server/discover") => StatusCode::NOT_FOUND.into_response(),
            Some("initialize") => (
                [
                    ("mcp-session-id", "s-1"),
                    ("content-type", "application/json"),
                ],
                json!({ "jsonrpc": "2.0", "id": id, "result": {
                    "protocolVersion": mock.revision,
                    "capabilities": { "tools": {} },
                    "serverInfo": { "name": "mock", "version": "1" }
                }})
                .to_string(),
            )
                .into_response(),
            Some(_) if id.is_null() => StatusCode::ACCEPTED.into_response(),
            Some(_) => (
                [("content-type", "application/json")],
                json!({ "jsonrpc": "2.0", "id": id, "result": { "content": [] } }).to_string(),
            )
                .into_response(),
            None => StatusCode::ACCEPTED.into_response(),
        }
    }

    /// Starts a mock upstream of `revision` and returns its URL and the
    /// requests it receives.
    async fn mock(revision: &'static str) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/mcp", axum::routing::post(answer))
            .with_state(Mock {
                revision,
                seen: seen.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}/mcp"), seen)
    }

    async fn call_through(revision: &'static str, params: Value) -> (String, Vec<Seen>) {
        let (url, seen) = mock(revision).await;
        let (updates, _) = tokio::sync::broadcast::channel(1);
        let client = HttpClient::new("mock", &url, Duration::from_secs(5), 1 << 20, None, updates)
            .expect("client");
        let outcome = client
            .request("tools/call", Some(params), &HeaderMap::new(), None)
            .await
            .expect("request");
        assert!(outcome.is_ok(), "{outcome:?}");
        let seen = seen.lock().expect("lock").clone();
        (url, seen)
    }

    fn call_of(seen: &[Seen]) -> &Seen {
        seen.iter()
            .find(|s| s.body["method"] == "tools/call")
            .expect("the call reached the upstream")
    }

    #[tokio::test]
    async fn forwarded_call_is_the_client_params_unchanged() {
        let params = json!({ "name": "echo", "arguments": { "text": "hi" } });

        let (_, seen) = call_through("2025-11-25", params.clone()).await;
        let call = call_of(&seen);

        assert_eq!(call.body["params"], params);
        assert_eq!(
            call.body.as_object().map(|o| o.len()),
            Some(4),
            "{}",
            call.body
        );
    }

    #[tokio::test]
    async fn forwarded_call_carries_upstream_host() {
        let (url, seen) = call_through("2025-11-25", json!({ "name": "echo" })).await;
        let host = url::Url::parse(&url).expect("url");
        let expected = format!(
            "{}:{}",
            host.host_str().expect("host"),
            host.port().expect("port")
        );

        let call = call_of(&seen);

        assert_eq!(
            call.headers.get("host").and_then(|v| v.to_str().ok()),
            Some(expected.as_str())
        );
    }

    #[tokio::test]
    async fn version_header_sent_from_2025_06_18() {
        let (_, seen) = call_through("2025-11-25", json!({ "name": "echo" })).await;
        let call = call_of(&seen);

        assert_eq!(
            call.headers
                .get(VERSION_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("2025-11-25")
        );
        assert!(call.headers.get(METHOD_HEADER).is_none());
    }

    #[tokio::test]
    async fn version_header_withheld_from_2025_03_26() {
        let (_, seen) = call_through("2025-03-26", json!({ "name": "echo" })).await;
        let call = call_of(&seen);

        assert!(
            call.headers.get(VERSION_HEADER).is_none(),
            "{:?}",
            call.headers
        );
        assert!(call.headers.get(METHOD_HEADER).is_none());
        assert!(call.headers.get(NAME_HEADER).is_none());
    }
}
