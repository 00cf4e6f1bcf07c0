//! Warden's configuration file.
//!
//! One TOML file describes the listener, the trusted SPIFFE trust domains,
//! the upstream MCP servers, the policy directory, the store, timeouts and
//! size limits. Unknown keys are rejected so that a typo never silently
//! turns a setting off. [`Config::load`] parses a file and [`Config::check`]
//! returns every problem found, each naming the key, its value and the fix.
//! Without a file, [`Config::default`] gives the documented embedded
//! defaults.

mod check;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use check::Problem;

/// Default listener address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// Default audience that JWT-SVIDs must carry in `aud`.
pub const DEFAULT_AUDIENCE: &str = "warden";
/// Trust domain of the built-in development issuer.
pub const DEFAULT_DEV_TRUST_DOMAIN: &str = "warden.local";

/// Error returned when a configuration file cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// Path of the file.
        path: PathBuf,
        /// Underlying error, shown in the message (not chained, so it
        /// prints once).
        error: std::io::Error,
    },
    /// The file is not valid TOML for Warden's configuration.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// Path of the file.
        path: PathBuf,
        /// Parser message, with line and column.
        message: String,
    },
    /// The file parsed but some values are invalid.
    #[error("invalid config file {path}:\n{}", format_problems(problems))]
    Invalid {
        /// Path of the file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|problem| format!("  - {problem}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listener settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Workload identity settings.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Trusted SPIFFE trust domains, each with its bundle.
    #[serde(default, rename = "trust_domain")]
    pub trust_domains: Vec<TrustDomainConfig>,
    /// Task token settings.
    #[serde(default)]
    pub tasks: TasksConfig,
    /// Policy settings.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Durable store settings.
    #[serde(default)]
    pub store: StoreConfig,
    /// Size limits and timeouts.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Human approval of held calls.
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// Administrator access to the approval and trace endpoints.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Delegation between agents by token exchange.
    #[serde(default)]
    pub delegation: DelegationConfig,
    /// Upstream MCP servers by name. The name prefixes the server's tools
    /// as `{name}__{tool}` and selects it in `/mcp/{name}`.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Plain HTTP API routes by name, served at `/http/{name}/...`.
    #[serde(default)]
    pub http: BTreeMap<String, RouteConfig>,
    /// Model API providers by name, served at `/llm/{name}/...`.
    #[serde(default)]
    pub llm: BTreeMap<String, ModelProviderConfig>,
    /// Audit log settings: argument redaction and signed checkpoints.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Export of trace spans over OTLP/HTTP and to a JSON-lines file.
    #[serde(default)]
    pub export: ExportConfig,
    /// Directory for keys and the default SQLite database. Defaults to
    /// `$WARDEN_DATA_DIR`, then `$XDG_DATA_HOME/warden`, then
    /// `~/.local/share/warden`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
}

/// HTTP listener settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `127.0.0.1:8787`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Values accepted in the `Host` header. Empty means the listener's
    /// own address plus `localhost:PORT` for a loopback listener.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Values accepted in the `Origin` header, e.g. `http://localhost:3000`.
    /// A request without `Origin` (a non-browser client) is accepted.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Threads that serve requests. Defaults to the number of CPUs; on a
    /// small machine shared with the upstreams, fewer can lower latency.
    #[serde(default)]
    pub worker_threads: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            worker_threads: None,
        }
    }
}

/// Workload identity settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Audience that JWT-SVIDs must contain in `aud`.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Clock leeway for `exp` and `nbf`, in seconds (0 to 60).
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Whether the built-in development issuer is trusted. Use it only where
    /// no SPIRE server exists.
    #[serde(default = "default_true")]
    pub dev_issuer: bool,
    /// Trust domain of the development issuer.
    #[serde(default = "default_dev_trust_domain")]
    pub dev_trust_domain: String,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            audience: default_audience(),
            leeway_seconds: default_leeway(),
            dev_issuer: true,
            dev_trust_domain: default_dev_trust_domain(),
        }
    }
}

/// One trusted SPIFFE trust domain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustDomainConfig {
    /// Trust domain name, e.g. `acme.test`.
    pub name: String,
    /// Path of its SPIFFE bundle (a JWK set) in JSON.
    pub bundle: PathBuf,
}

/// Task token settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksConfig {
    /// Lifetime of a task token when the request names none, in seconds.
    #[serde(default = "default_task_ttl")]
    pub default_ttl_seconds: u64,
    /// Upper bound on a task token's lifetime, in seconds.
    #[serde(default = "default_max_task_ttl")]
    pub max_ttl_seconds: u64,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            default_ttl_seconds: default_task_ttl(),
            max_ttl_seconds: default_max_task_ttl(),
        }
    }
}

/// Policy settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Directory of `.cedar` files. Without it Warden uses its bundled pack.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Environment name passed to policies as `context.environment`.
    #[serde(default = "default_environment")]
    pub environment: String,
    /// `enforce` (default) applies decisions; `shadow` records what the
    /// policies would deny or hold and lets every step through. Built-in
    /// refusals (task scope, unknown or changed tools, malformed
    /// arguments) are enforced in both modes.
    #[serde(default)]
    pub mode: PolicyMode,
    /// A second policy directory evaluated beside the enforced one on every
    /// step; its decisions are recorded as `shadow` in the trace and never
    /// enforced, so a candidate set can be tried on live traffic.
    #[serde(default)]
    pub shadow_dir: Option<PathBuf>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            dir: None,
            environment: default_environment(),
            mode: PolicyMode::default(),
            shadow_dir: None,
        }
    }
}

/// Whether policy decisions are applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Decisions are applied.
    #[default]
    Enforce,
    /// Decisions are recorded, not applied.
    Shadow,
}

/// Durable store settings: an SQLite file (the default), or a PostgreSQL
/// database that several gateway replicas share.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite database file. Defaults to `warden.db` in the data directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// PostgreSQL connection URL, `postgres://USER@HOST:PORT/DATABASE`.
    /// Selects the PostgreSQL store; excludes `path` and `url_env`.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable that holds the PostgreSQL connection URL, for
    /// a URL with a password. Selects the PostgreSQL store; excludes
    /// `path` and `url`.
    #[serde(default)]
    pub url_env: Option<String>,
}

impl StoreConfig {
    /// Returns the PostgreSQL URL from `url` or from the variable that
    /// `url_env` names, or `None` when the SQLite store is configured.
    ///
    /// Fails when `url_env` names a variable that is unset or empty. The
    /// message names the variable, never its value.
    pub fn postgres_url(&self) -> Result<Option<String>, String> {
        if let Some(url) = &self.url {
            return Ok(Some(url.clone()));
        }
        let Some(variable) = &self.url_env else {
            return Ok(None);
        };
        match std::env::var(variable) {
            Ok(url) if !url.trim().is_empty() => Ok(Some(url)),
            _ => Err(format!(
                "store.url_env names {variable}, which is not set; export the PostgreSQL URL in it"
            )),
        }
    }
}

/// Size limits and timeouts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted from an agent, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest message accepted from an upstream (one stdio line, one HTTP
    /// body or one SSE event), in bytes.
    #[serde(default = "default_max_body")]
    pub max_upstream_message_bytes: usize,
    /// Time an upstream has to respond to one request, in seconds.
    #[serde(default = "default_call_timeout")]
    pub call_timeout_seconds: u64,
    /// Time an upstream has to start and respond to `initialize`, in seconds.
    #[serde(default = "default_start_timeout")]
    pub start_timeout_seconds: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: default_max_body(),
            max_upstream_message_bytes: default_max_body(),
            call_timeout_seconds: default_call_timeout(),
            start_timeout_seconds: default_start_timeout(),
        }
    }
}

/// Human approval of held calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// How long a held call's request waits for a decision before the agent
    /// gets the hold refusal, in seconds (0 returns the refusal at once).
    #[serde(default = "default_approval_wait")]
    pub wait_seconds: u64,
    /// How long an approval request stays open, in seconds; an approval
    /// given in time lets the same call through once before this expiry.
    #[serde(default = "default_approval_ttl")]
    pub ttl_seconds: u64,
    /// URL that receives each new approval request as signed JSON.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Environment variable holding the webhook's HMAC-SHA256 key.
    #[serde(default)]
    pub webhook_secret_env: Option<String>,
    /// File holding the webhook's HMAC-SHA256 key.
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            wait_seconds: default_approval_wait(),
            ttl_seconds: default_approval_ttl(),
            webhook_url: None,
            webhook_secret_env: None,
            webhook_secret_file: None,
        }
    }
}

/// Delegation between agents by token exchange (RFC 8693).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationConfig {
    /// Maximum number of hops below a root task. An exchange that would go
    /// deeper is rejected whatever the policies decide, and policies can
    /// set a lower limit with `context.depth`.
    #[serde(default = "default_max_depth")]
    pub max_depth: u32,
}

impl Default for DelegationConfig {
    fn default() -> Self {
        DelegationConfig {
            max_depth: default_max_depth(),
        }
    }
}

/// Administrator access. The admin token is read from the environment
/// variable `WARDEN_ADMIN_TOKEN` or from `token_file`; without either, the
/// admin endpoints are closed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// File holding the admin bearer token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// One upstream MCP server: either a stdio `command` that Warden spawns and
/// supervises, or a Streamable HTTP `url`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Program to spawn for a stdio server: a name looked up in `PATH`, or
    /// a path, relative to the configuration file when relative.
    #[serde(default)]
    pub command: Option<String>,
    /// Arguments of `command`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables for `command`. A spawned server gets
    /// only these, a few basics (`PATH`, `HOME`, `LANG`, ...) and the names
    /// in `inherit_env`; Warden's own secrets are never passed on.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of variables of Warden's environment to pass to `command`.
    #[serde(default)]
    pub inherit_env: Vec<String>,
    /// Working directory of `command`; defaults to the directory of the
    /// configuration file.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Streamable HTTP endpoint of a remote server, e.g.
    /// `http://127.0.0.1:3001/mcp`.
    #[serde(default)]
    pub url: Option<String>,
    /// Per-request timeout for this server, in seconds; overrides
    /// `limits.call_timeout_seconds`.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Operator metadata per tool, keyed by the server's own tool name.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolConfig>,
    /// Credential that Warden injects: a header on every request to a
    /// `url` server, or an environment variable of a spawned `command`.
    #[serde(default)]
    pub credential: Option<CredentialConfig>,
}

/// How Warden authenticates to an upstream on the agent's behalf. The agent
/// never holds the secret; its own `Authorization` and `Cookie` headers are
/// never forwarded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// `bearer` (`Authorization: Bearer SECRET`), `header` (`header: SECRET`),
    /// `basic` (`username` and SECRET as password), `env` (SECRET in the
    /// environment variable `env` of a spawned server) or `txn_token` (a
    /// short-lived JWT per task, signed by Warden, in the `Txn-Token` header
    /// or the header named by `header`).
    pub kind: CredentialKind,
    /// Environment variable holding the secret, read on each use.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the secret, read on each use, so a rotated secret
    /// takes effect without a restart.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Header name for `header` (e.g. `X-Api-Key`) and, optionally,
    /// `txn_token`.
    #[serde(default)]
    pub header: Option<String>,
    /// User name for `basic`.
    #[serde(default)]
    pub username: Option<String>,
    /// Variable name for `env`.
    #[serde(default)]
    pub env: Option<String>,
    /// Audience of `txn_token` tokens; defaults to the upstream's origin.
    #[serde(default)]
    pub audience: Option<String>,
    /// Lifetime of `txn_token` tokens in seconds, never beyond the task's
    /// expiry (default 300).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// The kind of a [`CredentialConfig`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// `Authorization: Bearer SECRET`.
    #[default]
    Bearer,
    /// A named header carrying SECRET.
    Header,
    /// HTTP basic authentication with `username` and SECRET.
    Basic,
    /// An environment variable of a spawned server.
    Env,
    /// A per-task JWT minted by Warden.
    TxnToken,
}

impl CredentialKind {
    /// Returns the config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Bearer => "bearer",
            CredentialKind::Header => "header",
            CredentialKind::Basic => "basic",
            CredentialKind::Env => "env",
            CredentialKind::TxnToken => "txn_token",
        }
    }
}

/// One plain HTTP API that agents reach through `/http/{name}/...`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Base URL of the API, e.g. `https://api.example.com/v1`. The
    /// normalised path after `/http/{name}` is appended to it.
    pub url: String,
    /// Methods agents may use; empty allows GET, HEAD, POST, PUT, PATCH
    /// and DELETE.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Classes such as `read` or `external-send`, seen by policies as
    /// `resource.classes`.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Labels of what the route returns, as for tools.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Names of query parameters that policies see as
    /// `context.query.NAME` (strings); other parameters are forwarded and
    /// listed in `context.query_names`.
    #[serde(default)]
    pub query_params: Vec<String>,
    /// JSON Schema of JSON request bodies, as a table or a path to a JSON
    /// file. Policies see the body, converted to its types as tool
    /// arguments are, as `context.body`.
    #[serde(default)]
    pub body_schema: Option<toml::Value>,
    /// Allow loopback, private and link-local destinations (an internal
    /// API). Cloud metadata addresses stay denied.
    #[serde(default)]
    pub allow_private: bool,
    /// Request headers passed on besides `Content-Type`, `Accept`,
    /// `Accept-Language`, `If-Match`, `If-None-Match` and
    /// `Idempotency-Key`.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Redirects followed within the upstream's origin (default 5); a
    /// redirect to another origin is returned to the agent, never followed.
    #[serde(default)]
    pub max_redirects: Option<usize>,
    /// Per-request timeout in seconds; overrides
    /// `limits.call_timeout_seconds`.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Credential that Warden injects.
    #[serde(default)]
    pub credential: Option<CredentialConfig>,
}

/// Operator metadata for one tool.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// Classes such as `read`, `write`, `delete`, `external-send`.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Top-level argument names that hold file paths. Without it, Warden
    /// treats arguments with common path names (`path`, `source`, ...) so.
    #[serde(default)]
    pub path_arguments: Option<Vec<String>>,
    /// Labels of what the tool returns, such as `untrusted-content`,
    /// `sensitive` or `secret`; a task that called the tool carries them
    /// in `context.memory.labels` from then on.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Top-level numeric arguments whose values a task sums across its
    /// calls, e.g. `amount`, seen as `context.memory.sums.NAME`.
    #[serde(default)]
    pub sum_arguments: Vec<String>,
}

/// The API dialect of a model provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI-compatible `POST /v1/chat/completions`.
    Openai,
    /// Anthropic `POST /v1/messages`.
    Anthropic,
}

impl ProviderKind {
    /// Returns the lowercase name used in the config and in spans.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }
}

/// One model API provider that agents reach through `/llm/{name}/...`.
///
/// The provider's API key is read from `api_key_env` or `api_key_file` on
/// every call, so a rotated key is used without a restart. It is injected
/// upstream and never returned, logged or stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelProviderConfig {
    /// API dialect: `openai` or `anthropic`.
    pub kind: ProviderKind,
    /// Base URL of the provider, e.g. `https://api.openai.com`. The path
    /// after `/llm/{name}` is appended to it.
    pub base_url: String,
    /// Environment variable holding the provider's API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the provider's API key.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Models agents may call; empty leaves the choice to policy.
    #[serde(default)]
    pub models: Vec<String>,
    /// Maximum model calls per task, delegated tasks included.
    #[serde(default)]
    pub max_calls_per_task: Option<u64>,
    /// Maximum input plus output tokens per task, delegated tasks included.
    /// A call that starts under the budget may end over it; the next call
    /// is refused.
    #[serde(default)]
    pub max_tokens_per_task: Option<u64>,
    /// Per-call timeout, in seconds (default 300).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// Audit log settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Replace argument values in audit records and exported spans with
    /// their SHA-256; decisions are still made on the values.
    #[serde(default)]
    pub redact_arguments: bool,
    /// Seconds between signed checkpoints of the audit chain's head; 0
    /// turns periodic checkpoints off (one is still written at shutdown).
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_seconds: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            redact_arguments: false,
            checkpoint_interval_seconds: default_checkpoint_interval(),
        }
    }
}

/// Export of trace spans. Export never blocks a request: spans wait in a
/// bounded queue, and spans that do not fit are dropped, counted in
/// `/metrics` and logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`.
    /// Spans are posted as OTLP JSON.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Extra headers for the OTLP endpoint, e.g. an API key header of a
    /// tracing backend; values are read from the environment variable
    /// named by each entry.
    #[serde(default)]
    pub otlp_headers_env: BTreeMap<String, String>,
    /// File that receives every committed audit record and checkpoint as
    /// one JSON object per line.
    #[serde(default)]
    pub jsonl_path: Option<PathBuf>,
    /// `service.name` resource attribute of exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Spans waiting for export before new ones are dropped.
    #[serde(default = "default_export_queue")]
    pub queue_capacity: usize,
    /// Maximum spans per OTLP request.
    #[serde(default = "default_export_batch")]
    pub batch_max_spans: usize,
    /// Maximum time a span waits before its batch is sent, in milliseconds.
    #[serde(default = "default_export_interval")]
    pub batch_interval_ms: u64,
    /// Timeout of one OTLP request, in seconds.
    #[serde(default = "default_export_timeout")]
    pub timeout_seconds: u64,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            otlp_endpoint: None,
            otlp_headers_env: BTreeMap::new(),
            jsonl_path: None,
            service_name: default_service_name(),
            queue_capacity: default_export_queue(),
            batch_max_spans: default_export_batch(),
            batch_interval_ms: default_export_interval(),
            timeout_seconds: default_export_timeout(),
        }
    }
}

fn default_checkpoint_interval() -> u64 {
    60
}

fn default_service_name() -> String {
    "warden".into()
}

fn default_export_queue() -> usize {
    8192
}

fn default_export_batch() -> usize {
    512
}

fn default_export_interval() -> u64 {
    1000
}

fn default_export_timeout() -> u64 {
    10
}

/// Transport to an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport<'a> {
    /// A child process speaking newline-delimited JSON-RPC on stdio.
    Stdio {
        /// Program to run.
        command: &'a str,
        /// Its arguments.
        args: &'a [String],
    },
    /// A Streamable HTTP endpoint.
    Http {
        /// Endpoint URL.
        url: &'a str,
    },
}

impl UpstreamConfig {
    /// Returns the transport, or `None` when neither or both of `command`
    /// and `url` are set (reported by [`Config::check`]).
    pub fn transport(&self) -> Option<Transport<'_>> {
        match (&self.command, &self.url) {
            (Some(command), None) => Some(Transport::Stdio {
                command,
                args: &self.args,
            }),
            (None, Some(url)) => Some(Transport::Http { url }),
            _ => None,
        }
    }
}

impl Config {
    /// Reads, parses and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        // `warden.toml` alone has an empty parent; relative paths are then
        // relative to the working directory, made absolute so that spawned
        // servers resolve them the same way.
        let base = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        config.resolve_relative_paths(&base);
        let problems = config.check();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
        Ok(config)
    }

    /// Parses TOML text without checking values.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|error| error.to_string())
    }

    /// Returns every problem with the configured values, empty when valid.
    pub fn check(&self) -> Vec<Problem> {
        check::check(self)
    }

    /// Parsed listener address.
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.server.listen.parse().map_err(|_| {
            format!(
                "server.listen = {:?} is not an address; write it as IP:PORT, e.g. \"127.0.0.1:8787\"",
                self.server.listen
            )
        })
    }

    /// Returns the data directory for keys and the default database.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        default_data_dir()
    }

    /// Returns the SQLite database path.
    pub fn store_path(&self) -> PathBuf {
        self.store
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir().join("warden.db"))
    }

    /// Makes relative paths in the file relative to the file's directory, so
    /// a config works from any working directory.
    fn resolve_relative_paths(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        for domain in &mut self.trust_domains {
            resolve(&mut domain.bundle);
        }
        if let Some(dir) = &mut self.policy.dir {
            resolve(dir);
        }
        if let Some(dir) = &mut self.policy.shadow_dir {
            resolve(dir);
        }
        if let Some(path) = &mut self.store.path {
            resolve(path);
        }
        if let Some(dir) = &mut self.data_dir {
            resolve(dir);
        }
        if let Some(file) = &mut self.approvals.webhook_secret_file {
            resolve(file);
        }
        if let Some(file) = &mut self.admin.token_file {
            resolve(file);
        }
        if let Some(file) = &mut self.export.jsonl_path {
            resolve(file);
        }
        for route in self.http.values_mut() {
            if let Some(credential) = &mut route.credential
                && let Some(file) = &mut credential.secret_file
            {
                resolve(file);
            }
            if let Some(toml::Value::String(schema)) = &mut route.body_schema {
                let mut path = PathBuf::from(&*schema);
                resolve(&mut path);
                *schema = path.to_string_lossy().into_owned();
            }
        }
        for provider in self.llm.values_mut() {
            if let Some(file) = &mut provider.api_key_file {
                resolve(file);
            }
        }
        for upstream in self.upstreams.values_mut() {
            if let Some(credential) = &mut upstream.credential
                && let Some(file) = &mut credential.secret_file
            {
                resolve(file);
            }
            match &mut upstream.cwd {
                Some(cwd) => resolve(cwd),
                // A spawned server runs in the file's directory, so a
                // command installed next to the file is found from anywhere.
                None if upstream.command.is_some() => upstream.cwd = Some(base.to_owned()),
                None => {}
            }
            // A command written as a relative path ("./bin/server") is
            // relative to the file too; a bare name is looked up in PATH.
            if let Some(command) = &mut upstream.command
                && command.contains('/')
                && Path::new(command.as_str()).is_relative()
            {
                *command = base.join(&*command).to_string_lossy().into_owned();
            }
        }
    }
}

/// Returns the default data directory (see [`Config::data_dir`]).
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WARDEN_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("warden");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/share/warden");
    }
    PathBuf::from(".warden")
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}

fn default_audience() -> String {
    DEFAULT_AUDIENCE.to_owned()
}

fn default_leeway() -> u64 {
    30
}

fn default_true() -> bool {
    true
}

fn default_dev_trust_domain() -> String {
    DEFAULT_DEV_TRUST_DOMAIN.to_owned()
}

fn default_task_ttl() -> u64 {
    300
}

fn default_max_task_ttl() -> u64 {
    900
}

fn default_environment() -> String {
    "development".to_owned()
}

fn default_max_body() -> usize {
    4 * 1024 * 1024
}

fn default_call_timeout() -> u64 {
    30
}

fn default_start_timeout() -> u64 {
    20
}

fn default_max_depth() -> u32 {
    4
}

fn default_approval_wait() -> u64 {
    5
}

fn default_approval_ttl() -> u64 {
    900
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_unknown_key() {
        let error = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 2\n")
            .expect_err("unknown key");
        assert!(error.contains("unknown field `listn`"), "{error}");
    }

    #[test]
    fn parse_accepts_empty_file() {
        let config = Config::parse("").expect("empty config");
        assert_eq!(config.server.listen, DEFAULT_LISTEN);
        assert_eq!(config.identity.audience, DEFAULT_AUDIENCE);
    }

    #[test]
    fn load_resolves_relative_paths() {
        let dir = std::env::temp_dir().join(format!("warden-config-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
        let file = dir.join("warden.toml");
        std::fs::write(&file, "[policy]\ndir = \"policies\"\n").expect("write");
        let config = Config::load(&file).expect("load");
        assert_eq!(config.policy.dir, Some(dir.join("policies")));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn transport_requires_exactly_one_of_command_and_url() {
        let both = UpstreamConfig {
            command: Some("x".into()),
            url: Some("http://127.0.0.1:1/mcp".into()),
            ..UpstreamConfig::default()
        };
        assert!(both.transport().is_none());
        let neither = UpstreamConfig::default();
        assert!(neither.transport().is_none());
    }
}
