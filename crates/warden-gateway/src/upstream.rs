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
}

impl Upstream {
    /// Creates the upstream without connecting.
    pub fn new(
        name: &str,
        config: &UpstreamConfig,
        timeout: Duration,
        start_timeout: Duration,
        max_message_bytes: usize,
    ) -> Result<Upstream, UpstreamError> {
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
                }))
            }
            Some(Transport::Http { url }) => Connection::Http(http::HttpClient::new(
                name,
                url,
                start_timeout,
                max_message_bytes,
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
                let blocked = self
                    .catalog()
                    .tools
                    .iter()
                    .filter_map(|tool| tool.get("name").and_then(Value::as_str))
                    .map(|name| (name.to_owned(), reason.clone()))
                    .collect();
                *self.blocked.write().unwrap_or_else(|e| e.into_inner()) = blocked;
                return;
            }
        };
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
                    "the definition of {}__{name} changed since Warden started; an operator must review it and restart Warden to accept it",
                    self.name
                ),
                None => format!(
                    "{}__{name} appeared after Warden started; an operator must review it and restart Warden to accept it",
                    self.name
                ),
            };
            tracing::error!(upstream = %self.name, tool.name = %name, "upstream tool definition changed; tool blocked");
            blocked.insert(name.to_owned(), reason);
        }
        *self.blocked.write().unwrap_or_else(|e| e.into_inner()) = blocked;
        self.checked_changes.store(now, Ordering::Release);
    }

    /// Returns why a tool is blocked, if it is.
    pub fn blocked_reason(&self, tool: &str) -> Option<String> {
        self.blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tool)
            .cloned()
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
        let call = async {
            match &self.connection {
                Connection::Stdio(client) => client.request(method, params).await,
                Connection::Http(client) => client.request(method, params).await,
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
pub(crate) fn client_initialize_params() -> Value {
    json!({
        "protocolVersion": UPSTREAM_PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": { "name": "warden", "version": env!("CARGO_PKG_VERSION") }
    })
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
