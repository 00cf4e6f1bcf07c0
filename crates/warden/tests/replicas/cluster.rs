//! Gateway replicas as real `warden serve` processes on free loopback
//! ports, sharing one data directory (so one set of keys) and one
//! PostgreSQL database named by [`STORE_URL_VAR`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Path of the `warden` binary under test.
pub const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

/// Environment variable through which replicas get the database URL, as
/// `[store] url_env` names it.
pub const STORE_URL_VAR: &str = "WARDEN_REPLICA_STORE_URL";

/// Admin token of every replica.
pub const ADMIN_TOKEN: &str = "replica-test-admin-token-0123456789";

/// SPIFFE ID of the agent the tests act as.
pub const AGENT: &str = "spiffe://warden.local/agent/replica-bot";

/// Policies: any agent may start tasks, list tools, call models and call
/// any tool, except that echoing "needs approval" waits for a person.
pub const POLICY: &str = r#"
@id("start-task")
permit (principal, action == Warden::Action::"start_task", resource);

@id("list-tools")
permit (principal, action == Warden::Action::"list_tools", resource);

@id("call-models")
permit (principal, action == Warden::Action::"call_model", resource);

@id("allow-all-calls")
permit (principal, action in Warden::Action::"call_tool", resource);

@id("hold-echo")
@hold("echoing this text needs a person's approval")
forbid (principal, action == Warden::Action::"testkit__echo", resource)
when { context.arguments.text == "needs approval" };
"#;

/// Maximum time a replica may take to return 200 on `/healthz` after it
/// starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Files shared by the replicas of one test.
pub struct ClusterFiles {
    /// Removed when dropped.
    pub dir: tempfile::TempDir,
    store_url: String,
    extra_config: String,
}

impl ClusterFiles {
    /// Writes the policy and example server directories for replicas on
    /// the database at `store_url`; `extra_config` is appended to every
    /// replica's configuration.
    pub fn new(store_url: &str, extra_config: &str) -> ClusterFiles {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        std::fs::create_dir_all(dir.path().join("policies")).expect("create the policy directory");
        std::fs::create_dir_all(dir.path().join("root/workspace")).expect("create the workspace");
        std::fs::write(dir.path().join("policies/test.cedar"), POLICY).expect("write the policy");
        ClusterFiles {
            dir,
            store_url: store_url.to_owned(),
            extra_config: extra_config.to_owned(),
        }
    }

    /// Writes the configuration of a replica listening on `port`.
    fn write_config(&self, port: u16) -> PathBuf {
        let base = self.dir.path();
        let mut toml = String::new();
        writeln!(toml, "data_dir = {}", quote(&base.join("data"))).expect("format");
        writeln!(toml, "[server]\nlisten = \"127.0.0.1:{port}\"").expect("format");
        writeln!(toml, "[store]\nurl_env = \"{STORE_URL_VAR}\"").expect("format");
        writeln!(toml, "[policy]\ndir = {}", quote(&base.join("policies"))).expect("format");
        writeln!(toml, "[approvals]\nwait_seconds = 20").expect("format");
        for server in ["files", "testkit"] {
            writeln!(
                toml,
                "[upstreams.{server}]\ncommand = {}\nargs = [\"example-server\", \"{server}\", \"--root\", {}]",
                quote(Path::new(WARDEN)),
                quote(&base.join("root"))
            )
            .expect("format");
        }
        toml.push_str(&self.extra_config);
        let path = base.join(format!("replica-{port}.toml"));
        std::fs::write(&path, toml).expect("write the config file");
        path
    }

    /// Starts a replica on a free port and waits until `/healthz` returns 200.
    pub async fn start_replica(&self) -> Replica {
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let config = self.write_config(port);
            let log = self.dir.path().join(format!("replica-{port}.log"));
            let log_file = std::fs::File::create(&log).expect("create the log file");
            let child = Command::new(WARDEN)
                .args(["serve", "--config"])
                .arg(&config)
                .env(STORE_URL_VAR, &self.store_url)
                .env("WARDEN_ADMIN_TOKEN", ADMIN_TOKEN)
                .env("WARDEN_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .expect("spawn warden serve");
            let mut replica = Replica {
                base: format!("http://127.0.0.1:{port}"),
                config,
                store_url: self.store_url.clone(),
                http: reqwest::Client::new(),
                child,
                log,
            };
            if replica.wait_healthy().await {
                return replica;
            }
            last_log = replica.log();
            if !last_log.contains("cannot listen") {
                break;
            }
        }
        panic!("warden serve did not become healthy; its log:\n{last_log}");
    }
}

/// A running `warden serve` process; killed when dropped.
pub struct Replica {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub base: String,
    /// Its configuration file.
    pub config: PathBuf,
    store_url: String,
    http: reqwest::Client,
    child: Child,
    log: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    /// Returns what the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait().expect("poll warden serve").is_some() {
                return false;
            }
            let response = self
                .http
                .get(format!("{}/healthz", self.base))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if response.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Runs `warden ARGS --config FILE` with the database URL and returns
    /// its output.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(WARDEN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env(STORE_URL_VAR, &self.store_url)
            .env_remove("WARDEN_LOG")
            .output()
            .expect("run warden")
    }

    /// Returns the status and body of `GET /readyz`.
    pub async fn readyz(&self) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/readyz", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("GET /readyz");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Starts a task for [`AGENT`] and returns its id and token.
    pub async fn start_task(&self) -> Task {
        let output = self.run(&["identity", "issue", AGENT]);
        assert!(
            output.status.success(),
            "warden identity issue failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let svid = String::from_utf8(output.stdout).expect("token is UTF-8");
        let response = self
            .http
            .post(format!("{}/v1/tasks", self.base))
            .bearer_auth(svid.trim())
            .json(&json!({ "intent": "replica test", "user": "alice@acme.test" }))
            .send()
            .await
            .expect("POST /v1/tasks");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("task response is JSON");
        assert_eq!(status, 201, "POST /v1/tasks failed: {body}");
        Task {
            id: body["task_id"].as_str().expect("task_id").to_owned(),
            token: body["token"].as_str().expect("token").to_owned(),
        }
    }

    /// Ends `task` with `DELETE /v1/tasks/{id}` and returns the status.
    pub async fn end_task(&self, task: &Task) -> u16 {
        self.http
            .delete(format!("{}/v1/tasks/{}", self.base, task.id))
            .bearer_auth(&task.token)
            .send()
            .await
            .expect("DELETE /v1/tasks")
            .status()
            .as_u16()
    }

    /// Opens an MCP session for `task` on this replica.
    pub async fn session(&self, task: &Task) -> Session {
        let url = format!("{}/mcp", self.base);
        let response = self
            .http
            .post(&url)
            .bearer_auth(&task.token)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": { "name": "warden-replica-test", "version": "1.0" }
                }
            }))
            .send()
            .await
            .expect("POST initialize");
        assert_eq!(response.status().as_u16(), 200, "initialize failed");
        let id = response
            .headers()
            .get("mcp-session-id")
            .expect("initialize returns Mcp-Session-Id")
            .to_str()
            .expect("session id is ASCII")
            .to_owned();
        let session = Session {
            url,
            token: task.token.clone(),
            id,
            http: self.http.clone(),
            next_request: Arc::new(AtomicU64::new(1)),
        };
        let (status, _) = session
            .post(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await;
        assert_eq!(status, 202, "notifications/initialized was not accepted");
        session
    }

    /// Sends an admin request and returns the status and JSON body.
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Posts a chat completion to `/llm/stub` with the task's token and
    /// returns the status.
    pub async fn model_call(&self, task: &Task) -> u16 {
        self.http
            .post(format!("{}/llm/stub/v1/chat/completions", self.base))
            .bearer_auth(&task.token)
            .json(&json!({
                "model": "stub-model",
                "messages": [{ "role": "user", "content": "hello" }]
            }))
            .send()
            .await
            .expect("POST /llm/stub")
            .status()
            .as_u16()
    }
}

/// A started task.
#[derive(Debug, Clone)]
pub struct Task {
    /// Task id.
    pub id: String,
    /// Task token.
    pub token: String,
}

/// An MCP session on one replica. Sessions live in the replica's memory,
/// so each replica needs its own; the task token works on every replica.
#[derive(Debug, Clone)]
pub struct Session {
    url: String,
    token: String,
    id: String,
    http: reqwest::Client,
    /// JSON-RPC id of the next request, unique in the session.
    next_request: Arc<AtomicU64>,
}

impl Session {
    /// Posts one JSON-RPC message and returns the status and JSON body
    /// (`Null` when the body is empty or not JSON).
    pub async fn post(&self, message: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-11-25")
            .timeout(Duration::from_secs(30))
            .body(message.to_string())
            .send()
            .await
            .expect("POST to MCP");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Calls `testkit__echo` with `text`; returns the status and body.
    pub async fn echo(&self, text: &str) -> (u16, Value) {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        self.post(&json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": "testkit__echo", "arguments": { "text": text } }
        }))
        .await
    }
}

/// Returns true when an echo reply is a successful result with `text`.
pub fn echoed(reply: &(u16, Value), text: &str) -> bool {
    let (status, body) = reply;
    *status == 200
        && body["result"]["isError"] != json!(true)
        && body["result"]["content"][0]["text"] == json!(text)
}

/// Returns a port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local address")
        .port()
}

fn quote(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}
