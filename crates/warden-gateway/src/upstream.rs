//! Connections to upstream MCP servers.
//!
//! Each configured server is one [`Upstream`]: a child process speaking
//! newline-delimited JSON-RPC on stdio ([`stdio`]) or a Streamable HTTP
//! endpoint ([`http`]). Warden is the MCP client of every upstream. It
//! assigns its own request ids, so ids chosen by agents never collide on the
//! upstream, and it keeps a catalog of the server's tools, resources and
//! prompts taken at start.
//!
//! An upstream that crashes or does not respond within its timeout fails the
//! calls in flight with an error; the next call starts it again.
//!
//! What a server sends during a request, before its response (progress and
//! logging notifications, sampling, elicitation, roots and ping requests),
//! goes to the request's [`InterimSender`] when the caller gives one, on its
//! way to the agent.

pub mod http;
pub mod stdio;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use warden_config::{Transport, UpstreamConfig};
use warden_policy::ToolDef;

/// The MCP revision Warden offers upstreams in `initialize`.
pub const UPSTREAM_PROTOCOL_VERSION: &str = "2025-11-25";

/// Error from one upstream request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The server did not respond within its timeout.
    #[error("upstream {server} did not answer {method} within {seconds} s")]
    Timeout {
        /// Server name.
        server: String,
        /// JSON-RPC method.
        method: String,
        /// Timeout in seconds.
        seconds: u64,
    },
    /// The server process exited or the connection broke.
    #[error("upstream {server} is unavailable: {detail}")]
    Unavailable {
        /// Server name.
        server: String,
        /// What happened.
        detail: String,
    },
    /// The configuration does not match what the server offers.
    #[error("{detail}")]
    Config {
        /// Server name.
        server: String,
        /// The mismatch and its fix.
        detail: String,
    },
    /// The server sent something that is not valid MCP.
    #[error("upstream {server} sent an invalid message: {detail}")]
    Protocol {
        /// Server name.
        server: String,
        /// Description of the problem.
        detail: String,
    },
}

/// A JSON-RPC error object returned by an upstream.
#[derive(Debug, Clone)]
pub struct RpcError {
    /// The whole `error` member as received.
    pub error: Value,
}

/// Outcome of one upstream request: the `result` member or the `error`
/// member of the server's response.
pub type RpcOutcome = Result<Value, RpcError>;

/// Server-to-client requests that Warden passes on to the agent during a
/// request. Warden responds to any other method with "method not found".
pub const RELAYED_REQUESTS: [&str; 4] = [
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "ping",
];

/// Notifications that Warden passes on to the agent during a request.
pub const RELAYED_NOTIFICATIONS: [&str; 2] = ["notifications/progress", "notifications/message"];

/// A message an upstream sends during one request, before its response.
#[derive(Debug)]
pub enum Interim {
    /// A progress or logging notification, as the server sent it.
    Notification {
        /// Name of the upstream server.
        server: String,
        /// The whole JSON-RPC notification.
        message: Value,
    },
    /// A request from the server to the client (sampling, elicitation,
    /// roots, ping). The receiver sends the client's response on `reply`.
    /// Dropping `reply` sends the server an error.
    Request {
        /// Name of the upstream server.
        server: String,
        /// The whole JSON-RPC request, with the server's own id.
        message: Value,
        /// Takes the client's response for the server.
        reply: tokio::sync::oneshot::Sender<RpcOutcome>,
    },
}

/// Sender of the interim messages of one upstream request.
pub type InterimSender = tokio::sync::mpsc::Sender<Interim>;

/// Tools, resources and prompts an upstream offered at start.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// The `initialize` result (protocol version, capabilities, serverInfo).
    pub initialize: Value,
    /// Tools as listed by the server.
    pub tools: Vec<Value>,
    /// Resources as listed by the server.
    pub resources: Vec<Value>,
    /// Resource templates as listed by the server.
    pub resource_templates: Vec<Value>,
    /// Prompts as listed by the server.
    pub prompts: Vec<Value>,
}

impl Catalog {
    /// Returns the capabilities object of the server.
    pub fn capabilities(&self) -> &Value {
        &self.initialize["capabilities"]
    }

    fn has_capability(&self, name: &str) -> bool {
        self.capabilities().get(name).is_some_and(Value::is_object)
    }
}

enum Connection {
    Stdio(stdio::StdioClient),
    Http(http::HttpClient),
}

/// One configured upstream MCP server.
pub struct Upstream {
    name: String,
    config: UpstreamConfig,
    connection: Connection,
    timeout: Duration,
    catalog: RwLock<Arc<Catalog>>,
    /// The connection's change counter when the tool list was last compared.
    checked_changes: AtomicU64,
    /// Tools whose definition differs from the one pinned at start, with why.
    blocked: RwLock<BTreeMap<String, String>>,
    /// Tools blocked by their stored pin (changed since an operator
    /// accepted them, or hiding text), with why.
    pin_blocked: RwLock<BTreeMap<String, String>>,
    /// The tool list of the latest listing, newer than the catalog when the
    /// server changed its tools.
    latest: RwLock<Option<Vec<Value>>>,
    /// Reason every tool of this server is blocked while its tool list
    /// cannot be read. The next successful listing clears it.
    unverified: RwLock<Option<String>>,
    /// Credential Warden injects, if any.
    credential: Option<crate::credentials::Credential>,
    /// Resource update notifications the server sent outside any request.
    updates: tokio::sync::broadcast::Sender<Value>,
}

/// Resource update notifications an upstream may have queued for routing.
const UPDATE_QUEUE: usize = 256;

impl Upstream {
    /// Creates the upstream without connecting.
    pub fn new(
        name: &str,
        config: &UpstreamConfig,
        timeout: Duration,
        start_timeout: Duration,
        max_message_bytes: usize,
    ) -> Result<Upstream, UpstreamError> {
        let credential = config
            .credential
            .as_ref()
            .map(|credential| {
                let audience = config
                    .url
                    .as_deref()
                    .and_then(|url| url::Url::parse(url).ok())
                    .map(|url| url.origin().ascii_serialization())
                    .unwrap_or_default();
                crate::credentials::Credential::new(credential, &audience)
            })
            .transpose()
            .map_err(|error| UpstreamError::Unavailable {
                server: name.to_owned(),
                detail: format!("invalid credential: {error}"),
            })?;
        let (updates, _) = tokio::sync::broadcast::channel(UPDATE_QUEUE);
        let connection = match config.transport() {
            Some(Transport::Stdio { command, args }) => {
                Connection::Stdio(stdio::StdioClient::new(stdio::StdioSettings {
                    server: name.to_owned(),
                    command: command.to_owned(),
                    args: args.to_vec(),
                    env: config.env.clone(),
                    inherit_env: config.inherit_env.clone(),
                    cwd: config.cwd.clone(),
                    start_timeout,
                    max_line_bytes: max_message_bytes,
                    credential: credential.clone(),
                    updates: updates.clone(),
                }))
            }
            Some(Transport::Http { url }) => Connection::Http(http::HttpClient::new(
                name,
                url,
                start_timeout,
                max_message_bytes,
                credential.clone(),
                updates.clone(),
            )?),
            None => {
                return Err(UpstreamError::Unavailable {
                    server: name.to_owned(),
                    detail: "neither command nor url is configured".into(),
                });
            }
        };
        Ok(Upstream {
            name: name.to_owned(),
            config: config.clone(),
            connection,
            timeout,
            catalog: RwLock::new(Arc::new(Catalog::default())),
            checked_changes: AtomicU64::new(0),
            blocked: RwLock::default(),
            pin_blocked: RwLock::default(),
            latest: RwLock::default(),
            unverified: RwLock::default(),
            credential,
            updates,
        })
    }

    /// Server name from the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Connects and records the server's tools, resources and prompts.
    pub async fn start(&self) -> Result<(), UpstreamError> {
        let initialize = match &self.connection {
            Connection::Stdio(client) => client.initialize_result().await?,
            Connection::Http(client) => client.initialize_result().await?,
        };
        let mut catalog = Catalog {
            initialize,
            ..Catalog::default()
        };
        if catalog.has_capability("tools") {
            catalog.tools = self.list_all("tools/list", "tools").await?;
        }
        if catalog.has_capability("resources") {
            catalog.resources = self.list_all("resources/list", "resources").await?;
            catalog.resource_templates = self
                .list_all("resources/templates/list", "resourceTemplates")
                .await
                .unwrap_or_default();
        }
        if catalog.has_capability("prompts") {
            catalog.prompts = self.list_all("prompts/list", "prompts").await?;
        }
        let offered: Vec<&str> = catalog
            .tools
            .iter()
            .filter_map(|tool| tool.get("name").and_then(Value::as_str))
            .collect();
        // Tool settings carry classes that policies rely on; a misspelt
        // tool name would silently drop them, so it stops the start.
        if let Some(unknown) = self
            .config
            .tools
            .keys()
            .find(|name| !offered.contains(&name.as_str()))
        {
            return Err(UpstreamError::Config {
                server: self.name.clone(),
                detail: format!(
                    "upstreams.{}.tools.{unknown} names no tool of upstream {}; its tools are: {}",
                    self.name,
                    self.name,
                    offered.join(", ")
                ),
            });
        }
        tracing::info!(
            upstream = %self.name,
            tools = catalog.tools.len(),
            resources = catalog.resources.len(),
            prompts = catalog.prompts.len(),
            "upstream ready"
        );
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(catalog);
        self.checked_changes
            .store(self.changes(), Ordering::Release);
        Ok(())
    }

    fn changes(&self) -> u64 {
        match &self.connection {
            Connection::Stdio(client) => client.changes(),
            Connection::Http(client) => client.changes(),
        }
    }

    /// Compares the server's tool list with the definitions pinned at start
    /// when the server restarted, opened a new session or announced a
    /// change. A tool whose definition (description, schema, annotations)
    /// changed, or that is new, is blocked: policies were validated against
    /// the pinned definition, and a server may have swapped a harmless tool
    /// for another under the same name.
    pub async fn check_tools(&self) {
        let connected = match &self.connection {
            Connection::Stdio(client) => client.initialize_result().await.map(|_| ()),
            Connection::Http(client) => client.initialize_result().await.map(|_| ()),
        };
        if connected.is_err() {
            return;
        }
        let now = self.changes();
        if self.checked_changes.load(Ordering::Acquire) == now {
            return;
        }
        let listed = match self.list_all("tools/list", "tools").await {
            Ok(listed) => listed,
            Err(error) => {
                // Unverified definitions could have changed, so every tool
                // of this server is blocked until a listing succeeds; the
                // next call tries again.
                tracing::warn!(upstream = %self.name, %error, "cannot list tools to compare them with the pinned definitions; blocking the server's tools");
                let reason = format!(
                    "Warden cannot verify the tool definitions of upstream {} ({error}); retry shortly",
                    self.name
                );
                // Kept apart from the other blocks: accepting a pin must not
                // unblock a server whose current tools nobody has seen.
                *self.unverified.write().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                return;
            }
        };
        *self.unverified.write().unwrap_or_else(|e| e.into_inner()) = None;
        let pinned = self.catalog();
        let mut blocked = BTreeMap::new();
        for tool in &listed {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let before = pinned
                .tools
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some(name));
            let reason = match before {
                Some(before)
                    if warden_core::json::canonical(before)
                        == warden_core::json::canonical(tool) =>
                {
                    continue;
                }
                Some(_) => format!(
                    "the definition of {server}__{name} changed since it was accepted; review it with `warden tools diff {server}__{name}` and accept it with `warden tools accept {server}__{name} --hash HASH`",
                    server = self.name
                ),
                None => format!(
                    "{server}__{name} appeared after Warden started; review it with `warden tools diff {server}__{name}` and accept it with `warden tools accept {server}__{name} --hash HASH`",
                    server = self.name
                ),
            };
            tracing::error!(upstream = %self.name, tool.name = %name, "upstream tool definition changed; tool blocked");
            blocked.insert(name.to_owned(), reason);
        }
        *self.blocked.write().unwrap_or_else(|e| e.into_inner()) = blocked;
        *self.latest.write().unwrap_or_else(|e| e.into_inner()) = Some(listed);
        self.checked_changes.store(now, Ordering::Release);
    }

    /// Blocks the tools of `blocked` by their stored pins, replacing the
    /// previous pin blocks.
    pub fn set_pin_blocked(&self, blocked: BTreeMap<String, String>) {
        *self.pin_blocked.write().unwrap_or_else(|e| e.into_inner()) = blocked;
    }

    /// Returns the tool's definition as the server offers it now: from the
    /// latest listing, or from the catalog taken at start.
    pub fn latest_definition(&self, tool: &str) -> Option<Value> {
        let named = |t: &&Value| t.get("name").and_then(Value::as_str) == Some(tool);
        if let Some(listed) = self
            .latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return listed.iter().find(named).cloned();
        }
        self.catalog().tools.iter().find(named).cloned()
    }

    /// Accepts `definition` for its tool: the catalog takes it (so policies
    /// reloaded afterwards are validated against it) and the tool is no
    /// longer blocked.
    pub fn accept_definition(&self, definition: Value) {
        let Some(name) = definition
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return;
        };
        {
            let mut catalog = self.catalog.write().unwrap_or_else(|e| e.into_inner());
            let mut updated = (**catalog).clone();
            match updated
                .tools
                .iter_mut()
                .find(|t| t.get("name").and_then(Value::as_str) == Some(name.as_str()))
            {
                Some(slot) => *slot = definition,
                None => updated.tools.push(definition),
            }
            *catalog = Arc::new(updated);
        }
        self.blocked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
        self.pin_blocked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
    }

    /// Returns why a tool is blocked, if it is.
    pub fn blocked_reason(&self, tool: &str) -> Option<String> {
        if let Some(reason) = self
            .unverified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Some(reason.clone());
        }
        if let Some(reason) = self
            .pin_blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tool)
        {
            return Some(reason.clone());
        }
        self.blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tool)
            .cloned()
    }

    /// Returns the names of the tools that are blocked, by their pin or by a
    /// changed definition. Allocates nothing when no tool is blocked.
    pub fn blocked_tools(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .pin_blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for name in self
            .blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
        {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// Returns the catalog taken at start.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Returns the tool definitions that policies are generated from.
    pub fn tool_defs(&self) -> Vec<ToolDef> {
        let catalog = self.catalog();
        catalog
            .tools
            .iter()
            .filter_map(|tool| {
                let name = tool.get("name")?.as_str()?.to_owned();
                let settings = self.config.tools.get(&name);
                Some(ToolDef {
                    server: self.name.clone(),
                    description: tool
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    input_schema: tool
                        .get("inputSchema")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                    annotations: tool.get("annotations").cloned(),
                    classes: settings.map(|s| s.classes.clone()).unwrap_or_default(),
                    path_arguments: settings.and_then(|s| s.path_arguments.clone()),
                    labels: settings.map(|s| s.labels.clone()).unwrap_or_default(),
                    sum_arguments: settings
                        .map(|s| s.sum_arguments.clone())
                        .unwrap_or_default(),
                    name,
                })
            })
            .collect()
    }

    /// Returns true when the catalog has a tool with this upstream name.
    pub fn has_tool(&self, tool: &str) -> bool {
        self.catalog()
            .tools
            .iter()
            .any(|t| t.get("name").and_then(Value::as_str) == Some(tool))
    }

    /// Sends one request and waits for its response within the timeout.
    pub async fn request(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<RpcOutcome, UpstreamError> {
        self.request_with(method, params, &axum::http::HeaderMap::new())
            .await
    }

    /// Returns the headers of a per-task credential for a request of the
    /// task of `claims`, and the secret values they carry; empty when the
    /// upstream has no such credential.
    pub fn task_credential(
        &self,
        claims: &warden_identity::TaskClaims,
        minter: &crate::credentials::TxnTokens,
    ) -> Result<crate::credentials::Injected, String> {
        match &self.credential {
            Some(credential) if credential.per_task() => {
                credential.inject(claims, minter, crate::auth::now_unix())
            }
            _ => Ok(crate::credentials::Injected {
                headers: axum::http::HeaderMap::new(),
                secrets: Vec::new(),
            }),
        }
    }

    /// Returns the secret values of the upstream's static credential, to
    /// remove them from what the upstream returns.
    pub fn static_secrets(&self) -> Vec<String> {
        let Some(credential) = &self.credential else {
            return Vec::new();
        };
        match credential.env_pair() {
            Some(Ok((_, value))) => vec![value],
            Some(Err(_)) => Vec::new(),
            None => credential
                .static_headers()
                .map(|injected| injected.secrets)
                .unwrap_or_default(),
        }
    }

    /// Sends one request with `extra` headers (for an HTTP upstream) and
    /// waits for its response within the timeout.
    pub async fn request_with(
        &self,
        method: &str,
        params: Option<Value>,
        extra: &axum::http::HeaderMap,
    ) -> Result<RpcOutcome, UpstreamError> {
        self.request_relayed(method, params, extra, None).await
    }

    /// Sends one request like [`Upstream::request_with`] and passes the
    /// progress and logging notifications and the server-to-client requests
    /// that come before the response to `relay`. Without a relay,
    /// notifications are dropped, Warden responds to `ping` itself and
    /// rejects other server requests. The timeout covers the whole exchange,
    /// including the time the agent takes to respond to a relayed request.
    pub async fn request_relayed(
        &self,
        method: &str,
        params: Option<Value>,
        extra: &axum::http::HeaderMap,
        relay: Option<InterimSender>,
    ) -> Result<RpcOutcome, UpstreamError> {
        let call = async {
            match &self.connection {
                Connection::Stdio(client) => client.request(method, params, relay).await,
                Connection::Http(client) => client.request(method, params, extra, relay).await,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!(upstream = %self.name, method, seconds = self.timeout.as_secs(), "upstream request timed out");
                if let Connection::Stdio(client) = &self.connection {
                    client.restart("request timed out").await;
                }
                Err(UpstreamError::Timeout {
                    server: self.name.clone(),
                    method: method.to_owned(),
                    seconds: self.timeout.as_secs(),
                })
            }
        }
    }

    /// Sends a notification; errors are logged, not returned.
    pub async fn notify(&self, method: &str, params: Option<Value>) {
        let result = match &self.connection {
            Connection::Stdio(client) => client.notify(method, params).await,
            Connection::Http(client) => client.notify(method, params).await,
        };
        if let Err(error) = result {
            tracing::debug!(upstream = %self.name, method, %error, "notification not delivered");
        }
    }

    /// Returns a receiver of the `notifications/resources/updated` messages
    /// the server sends. An HTTP upstream sends them on its standalone
    /// stream, which Warden opens on the first call of this method.
    pub fn resource_updates(&self) -> tokio::sync::broadcast::Receiver<Value> {
        let receiver = self.updates.subscribe();
        if let Connection::Http(client) = &self.connection {
            client.listen();
        }
        receiver
    }

    /// Returns true when the upstream is connected (a stdio process is
    /// running, or an HTTP session is established).
    pub fn is_connected(&self) -> bool {
        match &self.connection {
            Connection::Stdio(client) => client.is_running(),
            Connection::Http(client) => client.is_connected(),
        }
    }

    /// Stops a spawned process.
    pub async fn shutdown(&self) {
        if let Connection::Stdio(client) = &self.connection {
            client.shutdown().await;
        }
    }

    async fn list_all(&self, method: &str, field: &str) -> Result<Vec<Value>, UpstreamError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let params = cursor.as_ref().map(|c| json!({ "cursor": c }));
            let result =
                self.request(method, params)
                    .await?
                    .map_err(|e| UpstreamError::Protocol {
                        server: self.name.clone(),
                        detail: format!("{method} failed: {}", e.error),
                    })?;
            if let Some(list) = result.get(field).and_then(Value::as_array) {
                items.extend(list.iter().cloned());
            }
            match result.get("nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
                _ => return Ok(items),
            }
        }
        Err(UpstreamError::Protocol {
            server: self.name.clone(),
            detail: format!("{method} returned more than 1000 pages"),
        })
    }
}

/// Builds the `initialize` params Warden sends as a client.
///
/// Warden declares sampling and elicitation because it relays those
/// requests to the agent whose call is in progress. When that agent did not
/// declare the capability itself, the server gets an error. Roots are not
/// declared, because a server requests them outside any call, where no
/// single agent's roots apply.
pub(crate) fn client_initialize_params() -> Value {
    json!({
        "protocolVersion": UPSTREAM_PROTOCOL_VERSION,
        "capabilities": { "sampling": {}, "elicitation": {} },
        "clientInfo": { "name": "warden", "version": env!("CARGO_PKG_VERSION") }
    })
}

/// Builds Warden's own response to a server-to-client request that no
/// agent receives: `ping` gets an empty result, anything else "method not
/// found".
pub(crate) fn local_answer(id: &Value, method: &str) -> Value {
    if method == "ping" {
        json!({ "jsonrpc": "2.0", "id": id, "result": {} })
    } else {
        json!({ "jsonrpc": "2.0", "id": id, "error": {
            "code": -32601,
            "message": format!("{method} is not supported by this client")
        }})
    }
}

/// Builds the JSON-RPC response that carries an agent's outcome back to the
/// server.
pub(crate) fn answer_message(id: &Value, outcome: RpcOutcome) -> Value {
    match outcome {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(error) => json!({ "jsonrpc": "2.0", "id": id, "error": error.error }),
    }
}

/// Passes one server-to-client request to `relay`, waits for the agent's
/// outcome and returns the response to send to the server. Without a relay,
/// for a method Warden does not relay, or when the receiver goes away, the
/// response comes from [`local_answer`].
pub(crate) async fn relay_request(
    relay: Option<&InterimSender>,
    server: &str,
    message: &Value,
) -> Value {
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let method = message.get("method").and_then(Value::as_str).unwrap_or("");
    let Some(relay) = relay.filter(|_| RELAYED_REQUESTS.contains(&method)) else {
        return local_answer(&id, method);
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let sent = relay
        .send(Interim::Request {
            server: server.to_owned(),
            message: message.clone(),
            reply,
        })
        .await;
    if sent.is_err() {
        return local_answer(&id, method);
    }
    match answer.await {
        Ok(outcome) => answer_message(&id, outcome),
        Err(_) => json!({ "jsonrpc": "2.0", "id": id, "error": {
            "code": -32603,
            "message": format!("the client did not answer {method}")
        }}),
    }
}

/// Passes one notification to `relay` when it is one Warden relays;
/// returns false when it was not passed on.
pub(crate) async fn relay_notification(
    relay: Option<&InterimSender>,
    server: &str,
    message: &Value,
) -> bool {
    let method = message.get("method").and_then(Value::as_str).unwrap_or("");
    match relay {
        Some(relay) if RELAYED_NOTIFICATIONS.contains(&method) => relay
            .send(Interim::Notification {
                server: server.to_owned(),
                message: message.clone(),
            })
            .await
            .is_ok(),
        _ => false,
    }
}

/// Splits a JSON-RPC response into its outcome.
pub(crate) fn outcome_of(server: &str, message: &Value) -> Result<RpcOutcome, UpstreamError> {
    if let Some(result) = message.get("result") {
        return Ok(Ok(result.clone()));
    }
    if let Some(error) = message.get("error") {
        return Ok(Err(RpcError {
            error: error.clone(),
        }));
    }
    Err(UpstreamError::Protocol {
        server: server.to_owned(),
        detail: "response has neither result nor error".into(),
    })
}
