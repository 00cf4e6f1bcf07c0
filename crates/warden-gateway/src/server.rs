//! Building and running the gateway: keys, identity, store, upstreams,
//! policies, the HTTP router, policy reload on SIGHUP, and shutdown.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;
use warden_config::Config;
use warden_identity::{DevIssuer, Jwks, SigningKey, SvidVerifier, TaskTokens};
use warden_policy::ToolDef;
use warden_store::{SqliteStore, Store};

use crate::auth::{ApiError, authenticate_admin};
use crate::policy_source::PolicySource;
use crate::state::{AppState, TaskTable, VerifiedTokens};
use crate::upstream::Upstream;
use crate::{approvals, delegation, guard, mcp, tasks};

/// Issuer name written into task tokens.
pub const TASK_TOKEN_ISSUER: &str = "warden";

/// Inputs of [`Gateway::build`] besides the configuration.
pub struct GatewayOptions {
    /// Source of the policies.
    pub policy_source: PolicySource,
    /// Admin bearer token; admin endpoints are closed without one.
    pub admin_token: Option<String>,
}

/// A gateway bound to its listener, ready to serve.
pub struct Gateway {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

/// Paths of the keys in the data directory.
pub fn dev_issuer_key_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("keys").join("dev-issuer.pk8")
}

/// Path of the task-token signing key in the data directory.
pub fn task_key_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("keys").join("task-tokens.pk8")
}

/// Path of the key that signs per-task downstream tokens, published at
/// `/.well-known/jwks.json`.
pub fn downstream_key_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("keys").join("downstream-tokens.pk8")
}

/// Loads the development issuer of this data directory.
pub fn load_dev_issuer(config: &Config) -> anyhow::Result<DevIssuer> {
    let path = dev_issuer_key_path(&config.data_dir());
    let key = SigningKey::load_or_create(&path)
        .with_context(|| format!("cannot load the development issuer key {}", path.display()))?;
    Ok(DevIssuer::new(&config.identity.dev_trust_domain, key)?)
}

impl Gateway {
    /// Starts upstreams, loads policies, opens the store and binds.
    pub async fn build(config: Config, options: GatewayOptions) -> anyhow::Result<Gateway> {
        let data_dir = config.data_dir();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;

        let mut bundles: HashMap<String, Jwks> = HashMap::new();
        for domain in &config.trust_domains {
            let jwks = Jwks::from_file(&domain.bundle).with_context(|| {
                format!("cannot load the bundle of trust domain {}", domain.name)
            })?;
            bundles.insert(domain.name.clone(), jwks);
        }
        if config.identity.dev_issuer {
            let issuer = load_dev_issuer(&config)?;
            bundles.insert(
                issuer.trust_domain().to_owned(),
                Jwks::from_json(&issuer.bundle())?,
            );
            tracing::warn!(trust_domain = %issuer.trust_domain(), "development issuer is trusted; disable identity.dev_issuer where SPIRE issues identities");
        }
        let verifier = SvidVerifier::new(
            bundles,
            config.identity.audience.clone(),
            config.identity.leeway_seconds as i64,
        )?;
        let task_key = SigningKey::load_or_create(&task_key_path(&data_dir))
            .context("cannot load the task-token signing key")?;
        let tokens = TaskTokens::new(
            task_key,
            TASK_TOKEN_ISSUER.to_owned(),
            config.identity.audience.clone(),
            config.identity.leeway_seconds as i64,
        );

        let exporter = crate::export::Exporter::start(&config.export)
            .context("cannot start span export; check the [export] section")?;
        let observer = exporter
            .clone()
            .map(|exporter| exporter as Arc<dyn warden_store::AuditObserver>);
        let store: Arc<dyn Store> = match config.store.postgres_url().map_err(anyhow::Error::msg)? {
            Some(url) => {
                let store_options = warden_store::PostgresOptions {
                    observer,
                    ..Default::default()
                };
                Arc::new(
                    warden_store::PostgresStore::connect(&url, &store_options)
                        .await
                        .context("cannot open the PostgreSQL store")?,
                )
            }
            None => {
                let store_path = config.store_path();
                let store_options = warden_store::SqliteOptions {
                    observer,
                    ..Default::default()
                };
                Arc::new(
                    SqliteStore::open_with_options(&store_path, &store_options).with_context(
                        || format!("cannot open the store {}", store_path.display()),
                    )?,
                )
            }
        };
        let tasks = TaskTable::for_store(store.as_ref());

        let limits = &config.limits;
        let mut upstreams = BTreeMap::new();
        for (name, upstream_config) in &config.upstreams {
            let timeout = Duration::from_secs(
                upstream_config
                    .timeout_seconds
                    .unwrap_or(limits.call_timeout_seconds),
            );
            let upstream = Upstream::new(
                name,
                upstream_config,
                timeout,
                Duration::from_secs(limits.start_timeout_seconds),
                limits.max_upstream_message_bytes,
            )?;
            upstream
                .start()
                .await
                .with_context(|| format!("upstream {name} failed to start"))?;
            let now = crate::auth::now_unix();
            let blocked = crate::pins::reconcile(store.as_ref(), &upstream, now)
                .await
                .with_context(|| {
                    format!("cannot compare the tools of upstream {name} with their pins")
                })?;
            if blocked > 0 {
                tracing::warn!(upstream = %name, tools = blocked, "tools blocked until an operator accepts their definitions (warden tools list)");
            }
            upstreams.insert(name.clone(), Arc::new(upstream));
        }

        let tools = all_tools(&upstreams);
        let engine = options
            .policy_source
            .load(&tools, &config)
            .with_context(|| {
                format!(
                    "policies in {} are invalid",
                    options.policy_source.describe()
                )
            })?;
        tracing::info!(
            source = %options.policy_source.describe(),
            policies = engine.policy_count(),
            tools = tools.len(),
            "policies loaded"
        );
        let shadow = load_shadow(&tools, &config)?;
        if config.policy.mode == warden_config::PolicyMode::Shadow {
            tracing::warn!("policy mode is shadow: policy refusals are recorded, not enforced");
        }

        let addr = config.listen_addr().map_err(anyhow::Error::msg)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}; is another process using it?"))?;
        let addr = listener.local_addr()?;
        let allowed_hosts = if config.server.allowed_hosts.is_empty() {
            guard::default_hosts(addr)
        } else {
            config.server.allowed_hosts.clone()
        };
        let allowed_origins = config.server.allowed_origins.clone();

        let webhook = approval_webhook(&config)?;
        let admin_token = match options.admin_token.filter(|t| !t.is_empty()) {
            Some(token) => Some(token),
            None => read_admin_token_file(&config)?,
        };
        let leeway = config.identity.leeway_seconds as i64;
        warn_missing_secrets(&config);
        let providers = crate::llm::Providers::new(&config)?;
        let routes = crate::http_routes::Routes::new(&config)?;
        let downstream_key = SigningKey::load_or_create(&downstream_key_path(&data_dir))
            .context("cannot load the downstream token signing key")?;
        let txn_tokens =
            crate::credentials::TxnTokens::new(downstream_key, TASK_TOKEN_ISSUER.to_owned());
        let metrics = crate::metrics::Metrics::default();
        if let Some(exporter) = exporter {
            metrics.set_exporter(exporter);
        }
        let state = Arc::new(AppState {
            config,
            verifier,
            issuer: TASK_TOKEN_ISSUER.to_owned(),
            tokens,
            policy_source: options.policy_source,
            engine: RwLock::new(Arc::new(engine)),
            shadow: RwLock::new(shadow.map(Arc::new)),
            store,
            upstreams,
            verified_tokens: VerifiedTokens::new(leeway),
            tasks,
            approvals: crate::approvals::Approvals::new(webhook),
            sessions: mcp::Sessions::default(),
            metrics,
            allowed_hosts,
            allowed_origins,
            admin_token,
            providers,
            requested_calls: crate::llm::RequestedCalls::default(),
            routes,
            txn_tokens,
            redactor: crate::redact::Redactor::new(Vec::new()),
        });
        if let Some(events) = state.store.events() {
            state.approvals.follow(events);
        }
        Ok(Gateway {
            state,
            listener,
            addr,
        })
    }

    /// Returns the bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the shared state.
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` completes, then flushes the audit log, writes
    /// a final signed checkpoint of its head and stops the upstreams.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        spawn_reload_on_hangup(state.clone());
        let checkpoints = crate::checkpoint::CheckpointTask::for_gateway(&state)?;
        tracing::info!(listen = %self.addr, upstreams = state.upstreams.len(), "warden listening");
        serve_connections(self.listener, router(state.clone()), shutdown).await;
        tracing::info!("warden stopping");
        if let Err(error) = state.store.flush().await {
            tracing::error!(%error, "flushing the audit log at shutdown failed");
        }
        checkpoints.finish().await;
        // The last batch and the final checkpoint reach the exporters too.
        if let Some(exporter) = state.metrics.exporter() {
            exporter.shutdown().await;
        }
        for upstream in state.upstreams.values() {
            upstream.shutdown().await;
        }
        Ok(())
    }
}

/// Time a client has to send a request's headers, and to start the next
/// request on a kept-alive connection, before the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once; further clients wait in the backlog.
pub const MAX_CONNECTIONS: usize = 4096;
/// Time in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` completes, then lets in-flight
/// requests finish within [`SHUTDOWN_GRACE`].
///
/// Each connection gets `TCP_NODELAY` (responses are small and
/// latency-bound), a header read timeout against slow or idle clients, and
/// a slot among [`MAX_CONNECTIONS`].
async fn serve_connections(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};

    // HTTP/1.1 only: the automatic HTTP/1-or-2 detection waits for the
    // first bytes with no deadline, so silent connections would hold
    // their slots forever. The header read timeout starts at once.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
        }
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, peer = %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the shutdown grace period were dropped");
    }
}

/// Builds the HTTP router.
pub fn router(state: Arc<AppState>) -> Router {
    // Handlers that take the body as `Bytes` are capped by this layer; the
    // MCP endpoint caps its streamed body itself with the same limit.
    let body_limit = axum::extract::DefaultBodyLimit::max(state.config.limits.max_body_bytes);
    Router::new()
        .route("/v1/tasks", post(tasks::start))
        .route("/v1/tasks/{id}", get(tasks::show).delete(tasks::end))
        .route("/v1/traces/{id}", get(trace))
        .route("/v1/decisions", post(crate::precheck::decide))
        .route("/oauth2/token", post(delegation::token_exchange))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", get(approvals::show))
        .route("/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/v1/approvals/{id}/deny", post(approvals::deny))
        .route(
            "/mcp",
            post(mcp::post_all)
                .get(mcp::get_stream)
                .delete(mcp::delete_session),
        )
        .route(
            "/mcp/{server}",
            post(mcp::post_one)
                .get(mcp::get_stream)
                .delete(mcp::delete_session_one),
        )
        .route("/llm/{provider}/{*path}", any(crate::llm::proxy))
        .route("/http/{route}", any(crate::http_routes::proxy))
        .route("/http/{route}/", any(crate::http_routes::proxy))
        .route("/http/{route}/{*path}", any(crate::http_routes::proxy))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .layer(body_limit)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check_host_and_origin,
        ))
        .with_state(state)
}

/// `GET /.well-known/jwks.json`: the key that signs per-task downstream
/// tokens, for upstreams that verify them.
async fn jwks(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(axum::http::header::CACHE_CONTROL, "max-age=300")],
        axum::Json(state.txn_tokens.jwks()),
    )
}

/// Reloads policies against the current tools. On failure the running set
/// stays in force.
pub fn reload_policies(state: &AppState) -> Result<usize, warden_policy::PolicyLoadError> {
    let tools = all_tools(&state.upstreams);
    let engine = state.policy_source.load(&tools, &state.config)?;
    let count = engine.policy_count();
    // A shadow set that no longer loads is dropped, not kept stale.
    let shadow = match &state.config.policy.shadow_dir {
        None => None,
        Some(dir) => match PolicySource::Dir(dir.clone()).load(&tools, &state.config) {
            Ok(engine) => Some(Arc::new(engine)),
            Err(error) => {
                tracing::error!(%error, dir = %dir.display(), "shadow policies failed to load; shadow decisions stop until they load");
                None
            }
        },
    };
    state.set_engine(engine);
    *state.shadow.write().unwrap_or_else(|e| e.into_inner()) = shadow;
    Ok(count)
}

/// Warns at start about secrets that cannot be read now. Secrets are read
/// on use, so one set later still works; until then the calls that need it
/// fail with 503.
fn warn_missing_secrets(config: &Config) {
    use crate::credentials::SecretSource;

    for (name, provider) in &config.llm {
        if let Some(secret) =
            SecretSource::from_config(&provider.api_key_env, &provider.api_key_file)
            && let Err(message) = secret.read()
        {
            tracing::warn!(provider = %name, "model provider key not available: {message}; calls to /llm/{name} fail until it is set");
        }
    }
    let credentials =
        config
            .http
            .iter()
            .map(|(name, route)| (format!("http.{name}"), route.credential.as_ref()))
            .chain(config.upstreams.iter().map(|(name, upstream)| {
                (format!("upstreams.{name}"), upstream.credential.as_ref())
            }));
    for (key, credential) in credentials {
        if let Some(credential) = credential
            && let Some(secret) =
                SecretSource::from_config(&credential.secret_env, &credential.secret_file)
            && let Err(message) = secret.read()
        {
            tracing::warn!(config.key = %key, "credential not available: {message}; requests that need it fail until it is set");
        }
    }
}

/// Loads the shadow policy set of `[policy] shadow_dir`, if configured.
fn load_shadow(
    tools: &[warden_policy::ToolDef],
    config: &Config,
) -> anyhow::Result<Option<warden_policy::PolicyEngine>> {
    let Some(dir) = &config.policy.shadow_dir else {
        return Ok(None);
    };
    let engine = PolicySource::Dir(dir.clone())
        .load(tools, config)
        .with_context(|| format!("shadow policies in {} are invalid", dir.display()))?;
    tracing::info!(dir = %dir.display(), policies = engine.policy_count(), "shadow policies loaded");
    Ok(Some(engine))
}

fn approval_webhook(config: &Config) -> anyhow::Result<Option<approvals::Webhook>> {
    let settings = &config.approvals;
    let Some(url) = &settings.webhook_url else {
        return Ok(None);
    };
    let key = match (&settings.webhook_secret_env, &settings.webhook_secret_file) {
        (Some(variable), _) => std::env::var(variable).with_context(|| {
            format!("approvals.webhook_secret_env names {variable}, which is not set; export the webhook signing key in it")
        })?,
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read approvals.webhook_secret_file {}", file.display()))?
            .trim()
            .to_owned(),
        (None, None) => anyhow::bail!(
            "approvals.webhook_url is set without a signing key; set approvals.webhook_secret_env or approvals.webhook_secret_file"
        ),
    };
    if key.len() < 16 {
        anyhow::bail!(
            "the approval webhook signing key is shorter than 16 bytes; use a random key of at least 32 bytes"
        );
    }
    Ok(Some(approvals::Webhook::start(
        url.clone(),
        key.into_bytes(),
    )))
}

fn read_admin_token_file(config: &Config) -> anyhow::Result<Option<String>> {
    let Some(file) = &config.admin.token_file else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read admin.token_file {}", file.display()))?
        .trim()
        .to_owned();
    if token.len() < 16 {
        anyhow::bail!(
            "the admin token in {} is shorter than 16 characters; use a random token",
            file.display()
        );
    }
    Ok(Some(token))
}

fn all_tools(upstreams: &BTreeMap<String, Arc<Upstream>>) -> Vec<ToolDef> {
    upstreams.values().flat_map(|u| u.tool_defs()).collect()
}

fn spawn_reload_on_hangup(state: Arc<AppState>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; policy reload by signal is off");
            return;
        };
        while hangups.recv().await.is_some() {
            match reload_policies(&state) {
                Ok(count) => tracing::info!(policies = count, "policies reloaded"),
                Err(error) => {
                    tracing::error!(%error, "policy reload failed; keeping the policies in force")
                }
            }
        }
    });
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let mut problems = Vec::new();
    if let Err(error) = state.store.ping().await {
        problems.push(format!("store: {error}"));
    }
    for upstream in state.upstreams.values() {
        if !upstream.is_connected() {
            problems.push(format!(
                "upstream {}: not connected (it restarts on the next call)",
                upstream.name()
            ));
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, axum::Json(json!({ "ready": true }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ready": false, "problems": problems })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(state.store.dropped_records()),
    )
        .into_response()
}

async fn trace(
    State(state): State<Arc<AppState>>,
    UrlPath(trace_id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticate_admin(&state, &headers)?;
    state
        .store
        .flush()
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    let records = state
        .store
        .trace(&trace_id)
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    if records.is_empty() {
        return Err(ApiError::NotFound(format!("no trace {trace_id}")));
    }
    Ok(axum::Json(json!({ "trace_id": trace_id, "records": records })).into_response())
}
