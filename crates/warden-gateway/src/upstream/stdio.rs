//! Stdio upstreams: a child process that Warden spawns and supervises.
//!
//! Messages are newline-delimited JSON-RPC on the child's stdin and stdout;
//! stderr is logged at debug level. A line longer than the configured limit
//! is discarded and logged, so a misbehaving server cannot make Warden
//! buffer without bound. When the process exits, every request in flight
//! fails and the next request spawns it again. Spawning is throttled to once
//! a second so that a server that crashes at start does not spin.
//!
//! Every agent shares the one process, and stdio carries no link between a
//! server's notification or request and the call that caused it. Progress
//! is linked by a token Warden puts in place of the client's. Logging
//! notifications and server requests go to the sole relayed request in
//! flight, and otherwise are dropped (notifications) or get Warden's own
//! response (requests).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use super::{InterimSender, RpcOutcome, UpstreamError, client_initialize_params, outcome_of};

/// Environment variables a spawned server inherits from Warden; all others
/// are withheld unless listed in `inherit_env` or set in `env`.
pub const INHERITED_ENV: [&str; 12] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TERM",
    "SYSTEMROOT",
    "NODE_PATH",
];

/// How to run a stdio server.
#[derive(Debug, Clone)]
pub struct StdioSettings {
    /// Server name, for errors and logs.
    pub server: String,
    /// Program to run.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Names of further variables to pass through from Warden's environment.
    pub inherit_env: Vec<String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Time allowed for spawn plus `initialize`.
    pub start_timeout: Duration,
    /// Longest accepted line from the server, in bytes.
    pub max_line_bytes: usize,
    /// Credential passed in an environment variable, read at each spawn.
    pub credential: Option<crate::credentials::Credential>,
    /// Sender of the server's resource update notifications.
    pub updates: tokio::sync::broadcast::Sender<Value>,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// Relays of the requests in flight, by Warden's request id.
type Relays = Arc<Mutex<HashMap<u64, Relay>>>;

/// The destination of the interim messages of one request in flight.
struct Relay {
    sender: InterimSender,
    /// The client's own `progressToken`, which Warden replaced with
    /// [`progress_token`] of the request id.
    progress_token: Option<Value>,
}

/// Prefix of the progress tokens Warden sends in place of the client's.
const PROGRESS_TOKEN_PREFIX: &str = "warden-progress-";

/// Lines of a server's stderr kept to explain a failed start.
const STDERR_TAIL_LINES: usize = 20;

/// The last lines a server wrote to stderr.
type StderrTail = Arc<Mutex<std::collections::VecDeque<String>>>;

struct Process {
    child: tokio::sync::Mutex<Child>,
    lines: mpsc::Sender<String>,
    pending: Pending,
    relays: Relays,
    next_id: AtomicU64,
    alive: Arc<AtomicBool>,
    initialize: Value,
}

/// A supervised stdio server.
pub struct StdioClient {
    settings: StdioSettings,
    /// Bumped on every (re)start and every `notifications/tools/list_changed`,
    /// so the upstream compares the tool list again.
    changes: Arc<AtomicU64>,
    process: tokio::sync::Mutex<Option<Arc<Process>>>,
    current: Mutex<Option<Arc<Process>>>,
    last_spawn: Mutex<Option<Instant>>,
}

impl StdioClient {
    /// Creates the client; the process starts on first use.
    pub fn new(settings: StdioSettings) -> StdioClient {
        StdioClient {
            settings,
            changes: Arc::default(),
            process: tokio::sync::Mutex::new(None),
            current: Mutex::new(None),
            last_spawn: Mutex::new(None),
        }
    }

    /// Starts the process if needed and returns its `initialize` result.
    pub async fn initialize_result(&self) -> Result<Value, UpstreamError> {
        Ok(self.ensure().await?.initialize.clone())
    }

    /// Sends one request and waits for the response. The progress
    /// notifications of this request go to `relay`. So do logging
    /// notifications and server requests while it is the only relayed
    /// request in flight.
    pub async fn request(
        &self,
        method: &str,
        params: Option<Value>,
        relay: Option<InterimSender>,
    ) -> Result<RpcOutcome, UpstreamError> {
        let process = self.ensure().await?;
        let response = process
            .call(&self.settings.server, method, params, relay)
            .await?;
        outcome_of(&self.settings.server, &response)
    }

    /// Sends one notification.
    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), UpstreamError> {
        let process = self.ensure().await?;
        process
            .send(&self.settings.server, &notification(method, params))
            .await
    }

    /// Counter of (re)starts and tool-list change notifications.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Returns true while a process is running.
    pub fn is_running(&self) -> bool {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|p| p.alive.load(Ordering::Acquire))
    }

    /// Kills the running process, if any; the next request spawns a new one.
    pub async fn restart(&self, reason: &str) {
        let taken = self.process.lock().await.take();
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(process) = taken {
            tracing::warn!(upstream = %self.settings.server, reason, "restarting upstream process");
            process.kill().await;
        }
    }

    /// Kills the process for good (used at shutdown).
    pub async fn shutdown(&self) {
        if let Some(process) = self.process.lock().await.take() {
            process.kill().await;
        }
    }

    async fn ensure(&self) -> Result<Arc<Process>, UpstreamError> {
        let mut slot = self.process.lock().await;
        if let Some(process) = slot.as_ref()
            && process.alive.load(Ordering::Acquire)
        {
            return Ok(process.clone());
        }
        if let Some(old) = slot.take() {
            old.kill().await;
        }
        self.throttle().await;
        let process = tokio::time::timeout(self.settings.start_timeout, self.spawn())
            .await
            .map_err(|_| UpstreamError::Unavailable {
                server: self.settings.server.clone(),
                detail: format!(
                    "did not answer initialize within {} s",
                    self.settings.start_timeout.as_secs()
                ),
            })??;
        let process = Arc::new(process);
        self.changes.fetch_add(1, Ordering::AcqRel);
        *slot = Some(process.clone());
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(process.clone());
        Ok(process)
    }

    async fn throttle(&self) {
        let wait = {
            let mut last = self.last_spawn.lock().unwrap_or_else(|e| e.into_inner());
            let wait = last
                .map(|at| Duration::from_secs(1).saturating_sub(at.elapsed()))
                .unwrap_or_default();
            *last = Some(Instant::now() + wait);
            wait
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    async fn spawn(&self) -> Result<Process, UpstreamError> {
        let settings = &self.settings;
        let server = settings.server.clone();
        let mut command = Command::new(&settings.command);
        // A spawned server gets a minimal environment, never Warden's own:
        // the admin token, webhook keys and provider keys stay in Warden.
        command.env_clear();
        for name in INHERITED_ENV
            .iter()
            .copied()
            .chain(settings.inherit_env.iter().map(String::as_str))
        {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        // A brokered secret is read at each spawn, so a restarted server
        // gets the current value.
        if let Some(pair) = settings.credential.as_ref().and_then(|c| c.env_pair()) {
            let (name, value) = pair.map_err(|message| UpstreamError::Unavailable {
                server: server.clone(),
                detail: format!("cannot start: the credential {message}"),
            })?;
            command.env(name, value);
        }
        command
            .args(&settings.args)
            .envs(&settings.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cwd) = &settings.cwd {
            command.current_dir(cwd);
        }
        let mut child = command
            .spawn()
            .map_err(|error| UpstreamError::Unavailable {
                server: server.clone(),
                detail: format!(
                    "cannot run {:?}: {error}; check upstreams.{server}.command and PATH",
                    settings.command
                ),
            })?;
        tracing::info!(upstream = %server, pid = child.id().unwrap_or(0), command = %settings.command, "upstream process started");

        let unavailable = |what: &str| UpstreamError::Unavailable {
            server: server.clone(),
            detail: format!("no {what} pipe"),
        };
        let stdin = child.stdin.take().ok_or_else(|| unavailable("stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| unavailable("stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| unavailable("stderr"))?;

        let pending: Pending = Arc::default();
        let relays: Relays = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (lines, lines_rx) = mpsc::channel::<String>(256);

        tokio::spawn(write_lines(server.clone(), stdin, lines_rx, alive.clone()));
        tokio::spawn(read_messages(
            server.clone(),
            FramedRead::new(
                stdout,
                LinesCodec::new_with_max_length(settings.max_line_bytes),
            ),
            pending.clone(),
            Routes {
                relays: relays.clone(),
                lines: lines.clone(),
                changes: self.changes.clone(),
                updates: settings.updates.clone(),
            },
            alive.clone(),
        ));
        let stderr_tail: StderrTail = Arc::default();
        tokio::spawn(log_stderr(
            server.clone(),
            stderr,
            settings.max_line_bytes,
            stderr_tail.clone(),
        ));

        let mut process = Process {
            child: tokio::sync::Mutex::new(child),
            lines,
            pending,
            relays,
            next_id: AtomicU64::new(1),
            alive,
            initialize: Value::Null,
        };
        let response = match process
            .call(
                &server,
                "initialize",
                Some(client_initialize_params()),
                None,
            )
            .await
        {
            Ok(response) => response,
            Err(UpstreamError::Unavailable { server, detail }) => {
                // Give the reader a moment to collect what the process
                // printed before it exited.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let tail: Vec<String> = stderr_tail
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                let detail = if tail.is_empty() {
                    detail
                } else {
                    format!("{detail}; its stderr ended with:\n  {}", tail.join("\n  "))
                };
                return Err(UpstreamError::Unavailable { server, detail });
            }
            Err(other) => return Err(other),
        };
        match outcome_of(&server, &response)? {
            Ok(result) => process.initialize = result,
            Err(error) => {
                process.kill().await;
                return Err(UpstreamError::Protocol {
                    server,
                    detail: format!("initialize failed: {}", error.error),
                });
            }
        }
        process
            .send(&server, &notification("notifications/initialized", None))
            .await?;
        Ok(process)
    }
}

impl Process {
    async fn call(
        &self,
        server: &str,
        method: &str,
        params: Option<Value>,
        relay: Option<InterimSender>,
    ) -> Result<Value, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let mut message = json!({ "jsonrpc": "2.0", "id": id, "method": method });
        let mut params = params;
        if let Some(sender) = relay {
            // Every agent shares this one process, so a client's token could
            // collide with another's. The server gets Warden's token, and
            // relayed notifications carry the client's own again.
            let progress_token = params
                .as_mut()
                .and_then(|params| params.get_mut("_meta"))
                .and_then(Value::as_object_mut)
                .and_then(|meta| meta.insert("progressToken".into(), json!(progress_token(id))));
            if progress_token.is_none()
                && let Some(params) = params.as_mut()
            {
                remove_progress_token(params);
            }
            self.relays
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    id,
                    Relay {
                        sender,
                        progress_token,
                    },
                );
        }
        if let Some(params) = params {
            message["params"] = params;
        }
        let _relay = RelayGuard {
            relays: self.relays.clone(),
            id,
        };
        if let Err(error) = self.send(server, &message).await {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(error);
        }
        let result = rx.await.map_err(|_| UpstreamError::Unavailable {
            server: server.to_owned(),
            detail: "the process exited before answering".into(),
        });
        if result.is_err() {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }
        result
    }

    async fn send(&self, server: &str, message: &Value) -> Result<(), UpstreamError> {
        self.lines
            .send(message.to_string())
            .await
            .map_err(|_| UpstreamError::Unavailable {
                server: server.to_owned(),
                detail: "the process exited".into(),
            })
    }

    async fn kill(&self) {
        self.alive.store(false, Ordering::Release);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let mut child = self.child.lock().await;
        if let Err(error) = child.start_kill() {
            tracing::debug!(%error, "kill of upstream process failed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    }
}

/// Removes a relay entry when its request ends, however it ends.
struct RelayGuard {
    relays: Relays,
    id: u64,
}

impl Drop for RelayGuard {
    fn drop(&mut self) {
        self.relays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Returns the progress token Warden sends for request `id`.
fn progress_token(id: u64) -> String {
    format!("{PROGRESS_TOKEN_PREFIX}{id}")
}

fn remove_progress_token(params: &mut Value) {
    if let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut) {
        meta.remove("progressToken");
    }
}

/// Returns the relay of the only relayed request in flight, if exactly one
/// is.
fn sole_relay(relays: &Relays) -> Option<InterimSender> {
    let relays = relays.lock().unwrap_or_else(|e| e.into_inner());
    match relays.len() {
        1 => relays.values().next().map(|relay| relay.sender.clone()),
        _ => None,
    }
}

/// Finds the request a progress notification belongs to by Warden's
/// token, puts the client's own token back and returns the relay.
fn progress_relay(relays: &Relays, message: &mut Value) -> Option<InterimSender> {
    let id = message
        .pointer("/params/progressToken")
        .and_then(Value::as_str)
        .and_then(|token| token.strip_prefix(PROGRESS_TOKEN_PREFIX))
        .and_then(|id| id.parse::<u64>().ok())?;
    let relays = relays.lock().unwrap_or_else(|e| e.into_inner());
    let relay = relays.get(&id)?;
    let token = relay.progress_token.clone()?;
    message["params"]["progressToken"] = token;
    Some(relay.sender.clone())
}

fn notification(method: &str, params: Option<Value>) -> Value {
    let mut message = json!({ "jsonrpc": "2.0", "method": method });
    if let Some(params) = params {
        message["params"] = params;
    }
    message
}

async fn write_lines(
    server: String,
    mut stdin: tokio::process::ChildStdin,
    mut lines: mpsc::Receiver<String>,
    alive: Arc<AtomicBool>,
) {
    while let Some(mut line) = lines.recv().await {
        line.push('\n');
        if let Err(error) = stdin.write_all(line.as_bytes()).await {
            tracing::warn!(upstream = %server, %error, "write to upstream stdin failed");
            break;
        }
        if stdin.flush().await.is_err() {
            break;
        }
    }
    alive.store(false, Ordering::Release);
}

/// Destinations of the server's messages that are not responses.
struct Routes {
    /// Relays of the requests in flight.
    relays: Relays,
    /// Lines to write to the server, for responses to its requests.
    lines: mpsc::Sender<String>,
    /// Bumped on `notifications/tools/list_changed`.
    changes: Arc<AtomicU64>,
    /// Resource update notifications.
    updates: tokio::sync::broadcast::Sender<Value>,
}

async fn read_messages(
    server: String,
    mut stdout: FramedRead<tokio::process::ChildStdout, LinesCodec>,
    pending: Pending,
    routes: Routes,
    alive: Arc<AtomicBool>,
) {
    while let Some(line) = stdout.next().await {
        let line = match line {
            Ok(line) => line,
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                tracing::warn!(upstream = %server, "upstream sent a line over the size limit; discarded it");
                continue;
            }
            Err(LinesCodecError::Io(error)) => {
                tracing::warn!(upstream = %server, %error, "read from upstream stdout failed");
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let message = match warden_core::json::parse_strict(line.as_bytes()) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(upstream = %server, %error, "upstream sent a line that is not strict JSON; discarded it");
                continue;
            }
        };
        let id = message.get("id").cloned();
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match (id.as_ref(), method.as_deref()) {
            (Some(id), None) => {
                let waiter = id.as_u64().and_then(|id| {
                    pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id)
                });
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send(message);
                    }
                    None => {
                        tracing::debug!(upstream = %server, %id, "response to no pending request")
                    }
                }
            }
            (Some(id), Some(method)) => {
                // Stdio carries no link between a server request and the
                // call that caused it, so only the sole relayed request in
                // flight can be its cause. Otherwise Warden responds itself.
                match sole_relay(&routes.relays) {
                    Some(sender) => {
                        let lines = routes.lines.clone();
                        let server = server.clone();
                        tokio::spawn(async move {
                            let answer =
                                super::relay_request(Some(&sender), &server, &message).await;
                            let _ = lines.send(answer.to_string()).await;
                        });
                    }
                    None => {
                        tracing::debug!(upstream = %server, method, "Warden responded to a server-to-client request itself");
                        let answer = super::local_answer(id, method);
                        let _ = routes.lines.send(answer.to_string()).await;
                    }
                }
            }
            (None, Some(method)) => {
                if method == "notifications/tools/list_changed" {
                    routes.changes.fetch_add(1, Ordering::AcqRel);
                }
                if method == "notifications/resources/updated" {
                    // No receiver means no agent subscribed; nothing to do.
                    let _ = routes.updates.send(message);
                    continue;
                }
                let mut message = message;
                let target = match method {
                    "notifications/progress" => progress_relay(&routes.relays, &mut message),
                    "notifications/message" => sole_relay(&routes.relays),
                    _ => None,
                };
                let relayed = match target {
                    // A full queue means the agent is not reading; dropping
                    // a notification is better than stalling every call.
                    Some(sender) => sender
                        .try_send(super::Interim::Notification {
                            server: server.clone(),
                            message,
                        })
                        .is_ok(),
                    None => false,
                };
                if !relayed {
                    tracing::debug!(upstream = %server, method, "upstream notification not relayed");
                }
            }
            (None, None) => {
                tracing::debug!(upstream = %server, "upstream sent a message with neither id nor method");
            }
        }
    }
    let was_alive = alive.swap(false, Ordering::AcqRel);
    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
    if was_alive {
        tracing::warn!(upstream = %server, "upstream process closed its output");
    } else {
        tracing::debug!(upstream = %server, "upstream process stopped");
    }
}

async fn log_stderr(
    server: String,
    stderr: tokio::process::ChildStderr,
    max_line_bytes: usize,
    tail: StderrTail,
) {
    let mut lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(max_line_bytes));
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => {
                tracing::debug!(upstream = %server, stderr = %line, "upstream stderr");
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            Err(LinesCodecError::MaxLineLengthExceeded) => continue,
            Err(LinesCodecError::Io(_)) => break,
        }
    }
}
