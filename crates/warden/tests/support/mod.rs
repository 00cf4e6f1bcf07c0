//! Helpers shared by the integration tests: a real `warden serve` process
//! on a free loopback port, configured by a TOML file in a temporary
//! directory, with the bundled example servers as upstreams.
//!
//! Each test starts its own gateway, so tests share no state. The gateway
//! runs the example servers from the same binary (`warden example-server`).
//! [`Warden`] kills the process when dropped.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of these helpers"
)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

/// Path of the `warden` binary under test.
pub const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

/// SPIFFE ID of the agent the tests act as.
pub const AGENT: &str = "spiffe://warden.local/agent/test-bot";

/// Key under `_meta` of a refused call's result that contains the decision.
pub const DECISION_KEY: &str = "dev.warden/decision";

/// Policies that let any agent start a task and list every tool.
pub const BASE_POLICY: &str = r#"
@id("start-task")
permit (principal, action == Warden::Action::"start_task", resource);

@id("list-tools")
permit (principal, action == Warden::Action::"list_tools", resource);
"#;

/// Max time a gateway may take to return 200 on `/healthz` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One bundled example server configured as an upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Upstream name, the prefix of its tools.
    pub name: String,
    /// Bundled server: `files`, `mail`, `billing` or `testkit`.
    pub server: String,
    /// `timeout_seconds` of the upstream, when set.
    pub timeout_seconds: Option<u64>,
}

impl Upstream {
    /// Creates an upstream named `name` running the bundled `server`.
    pub fn new(name: &str, server: &str) -> Upstream {
        Upstream {
            name: name.to_owned(),
            server: server.to_owned(),
            timeout_seconds: None,
        }
    }

    /// Sets the upstream's per-request timeout in seconds.
    pub fn timeout(mut self, seconds: u64) -> Upstream {
        self.timeout_seconds = Some(seconds);
        self
    }
}

/// What goes into a test gateway's configuration file.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Upstream servers.
    pub upstreams: Vec<Upstream>,
    /// Policy files as (file name, Cedar text).
    pub policies: Vec<(String, String)>,
    /// Extra lines of the `[server]` table.
    pub server: Vec<String>,
    /// Lines of the `[identity]` table.
    pub identity: Vec<String>,
    /// Lines of the `[limits]` table.
    pub limits: Vec<String>,
}

impl Setup {
    /// Creates a setup with the given upstreams and one policy file next to
    /// [`BASE_POLICY`].
    pub fn new(upstreams: Vec<Upstream>, policy: &str) -> Setup {
        Setup {
            upstreams,
            policies: vec![
                ("base.cedar".to_owned(), BASE_POLICY.to_owned()),
                ("test.cedar".to_owned(), policy.to_owned()),
            ],
            server: Vec::new(),
            identity: Vec::new(),
            limits: Vec::new(),
        }
    }

    /// Returns a setup with a `files` and a `testkit` upstream where every
    /// call is permitted.
    pub fn permissive() -> Setup {
        Setup::new(
            vec![
                Upstream::new("files", "files"),
                Upstream::new("testkit", "testkit"),
            ],
            "@id(\"allow-all-calls\")\npermit (principal, action in Warden::Action::\"call_tool\", resource);\n",
        )
    }
}

/// A configuration written to a temporary directory, not yet served.
pub struct ConfigDir {
    /// The temporary directory; removed when dropped.
    pub dir: tempfile::TempDir,
    /// The configuration file.
    pub config: PathBuf,
    /// The policy directory.
    pub policy_dir: PathBuf,
    /// Root directory of the example servers (their state lives here).
    pub root: PathBuf,
}

impl ConfigDir {
    /// Writes the configuration for `setup`, listening on `port`.
    pub fn write(setup: &Setup, port: u16) -> ConfigDir {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let policy_dir = dir.path().join("policies");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&policy_dir).expect("create the policy directory");
        std::fs::create_dir_all(root.join("workspace")).expect("create the workspace");

        for (name, text) in &setup.policies {
            std::fs::write(policy_dir.join(name), text).expect("write a policy file");
        }

        let config = dir.path().join("warden.toml");
        let mut toml = String::new();
        writeln!(toml, "data_dir = {}", quote(&dir.path().join("data"))).expect("format");
        writeln!(toml, "[server]\nlisten = \"127.0.0.1:{port}\"").expect("format");
        for line in &setup.server {
            writeln!(toml, "{line}").expect("format");
        }
        writeln!(toml, "[identity]").expect("format");
        for line in &setup.identity {
            writeln!(toml, "{line}").expect("format");
        }
        writeln!(toml, "[limits]").expect("format");
        for line in &setup.limits {
            writeln!(toml, "{line}").expect("format");
        }
        writeln!(toml, "[policy]\ndir = {}", quote(&policy_dir)).expect("format");
        for upstream in &setup.upstreams {
            writeln!(
                toml,
                "[upstreams.{}]\ncommand = {}\nargs = [\"example-server\", \"{}\", \"--root\", {}]",
                upstream.name,
                quote(Path::new(WARDEN)),
                upstream.server,
                quote(&root)
            )
            .expect("format");
            if let Some(seconds) = upstream.timeout_seconds {
                writeln!(toml, "timeout_seconds = {seconds}").expect("format");
            }
        }

        std::fs::write(&config, toml).expect("write the config file");
        ConfigDir {
            dir,
            config,
            policy_dir,
            root,
        }
    }

    /// Returns the real path of a file in the `files` server's workspace,
    /// given the virtual path the server shows (`/workspace/...`).
    pub fn workspace_file(&self, virtual_path: &str) -> PathBuf {
        let rest = virtual_path
            .strip_prefix("/workspace/")
            .expect("a path under /workspace/");
        self.root.join("workspace").join(rest)
    }

    /// Runs `warden ARGS --config FILE` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        warden_command(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run warden")
    }

    /// Runs `warden serve` and waits for it to exit, for configurations
    /// that must be refused at start. Fails the test when the process is
    /// still running after the start timeout.
    pub fn serve_expecting_exit(&self) -> Output {
        let mut child = warden_command(&["serve"])
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn warden serve");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if child.try_wait().expect("poll warden serve").is_some() {
                return child.wait_with_output().expect("collect warden output");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let output = child.wait_with_output().expect("collect warden output");
                panic!(
                    "warden serve kept running with a configuration it should refuse; stderr:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A running `warden serve` process; killed when dropped.
pub struct Warden {
    /// The configuration it runs on.
    pub files: ConfigDir,
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub base: String,
    /// Listening port.
    pub port: u16,
    /// HTTP client.
    pub http: reqwest::Client,
    child: Child,
    log: PathBuf,
}

impl Drop for Warden {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Warden {
    /// Writes the configuration, starts `warden serve` on a free port and
    /// waits until `/healthz` returns 200. Retries on another port when the
    /// chosen one was taken in the meantime.
    pub async fn start(setup: Setup) -> Warden {
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let files = ConfigDir::write(&setup, port);
            let log = files.dir.path().join("warden.log");
            let log_file = std::fs::File::create(&log).expect("create the log file");
            let child = warden_command(&["serve"])
                .arg("--config")
                .arg(&files.config)
                .env("WARDEN_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .expect("spawn warden serve");
            let mut warden = Warden {
                base: format!("http://127.0.0.1:{port}"),
                port,
                http: reqwest::Client::new(),
                files,
                child,
                log,
            };
            if warden.wait_healthy().await {
                return warden;
            }
            last_log = warden.log();
            if !last_log.contains("cannot listen") {
                break;
            }
        }
        panic!("warden serve did not become healthy; its log:\n{last_log}");
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns what the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Returns true while the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("poll warden serve").is_none()
    }

    /// Sends a signal with `kill -SIGNAL PID`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Returns the status of `GET /healthz`.
    pub async fn health(&self) -> u16 {
        self.http
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .expect("GET /healthz")
            .status()
            .as_u16()
    }

    async fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if !self.is_running() {
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

    /// Issues a JWT-SVID for [`AGENT`] with `warden identity issue`.
    pub fn issue_svid(&self) -> String {
        self.issue_svid_for(AGENT, &[])
    }

    /// Issues a JWT-SVID with `warden identity issue ID [EXTRA...]`.
    pub fn issue_svid_for(&self, spiffe_id: &str, extra: &[&str]) -> String {
        let mut args = vec!["identity", "issue", spiffe_id];
        args.extend_from_slice(extra);
        let output = self.files.run(&args);
        assert!(
            output.status.success(),
            "warden identity issue failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("token is UTF-8")
            .trim()
            .to_owned()
    }

    /// Loads the development issuer's signing key from the data directory.
    pub fn dev_key(&self) -> DevKey {
        DevKey::load(&self.files.dir.path().join("data/keys/dev-issuer.pk8"))
    }

    /// Sends `POST /v1/tasks` with `svid` and a JSON body.
    pub async fn post_task(&self, svid: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/tasks", self.base))
            .bearer_auth(svid)
            .json(body)
            .send()
            .await
            .expect("POST /v1/tasks")
    }

    /// Starts a task with every tool in scope and returns it.
    pub async fn task(&self) -> Task {
        self.task_with(json!({ "intent": "integration test", "user": "alice@acme.test" }))
            .await
    }

    /// Starts a task with the given request body and returns it.
    pub async fn task_with(&self, body: Value) -> Task {
        let svid = self.issue_svid();
        let response = self.post_task(&svid, &body).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("task response is JSON");
        assert_eq!(status, 201, "POST /v1/tasks failed: {body}");
        Task {
            id: body["task_id"].as_str().expect("task_id").to_owned(),
            token: body["token"].as_str().expect("token").to_owned(),
        }
    }

    /// Sends `DELETE /v1/tasks/{id}` with the task's own token.
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

    /// Opens an MCP session on `/mcp` with `initialize` and
    /// `notifications/initialized`.
    pub async fn session(&self, task: &Task) -> Session {
        self.session_at("/mcp", task).await
    }

    /// Opens an MCP session on the given endpoint path.
    pub async fn session_at(&self, path: &str, task: &Task) -> Session {
        let url = format!("{}{path}", self.base);
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
                    "clientInfo": { "name": "warden-integration-test", "version": "1.0" }
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
        };
        let status = session
            .post_json(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await
            .status()
            .as_u16();
        assert_eq!(status, 202, "notifications/initialized was not accepted");
        session
    }

    /// Returns the records of a task's trace from
    /// `warden trace show ID --json`, polling until `ready` holds for them
    /// (the audit log is written off the request path).
    pub async fn trace(&self, task_id: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let output = self.files.run(&["trace", "show", task_id, "--json"]);
            let records: Vec<Value> = if output.status.success() {
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .map(|line| serde_json::from_str(line).expect("trace line is JSON"))
                    .collect()
            } else {
                Vec::new()
            };
            if ready(&records) || Instant::now() > deadline {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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

/// An initialized MCP session of the handshake era.
#[derive(Debug, Clone)]
pub struct Session {
    /// Endpoint URL.
    pub url: String,
    /// Task token sent with every request.
    pub token: String,
    /// `Mcp-Session-Id`.
    pub id: String,
    http: reqwest::Client,
}

impl Session {
    /// Returns the same session presented with another bearer token.
    pub fn with_token(&self, token: String) -> Session {
        Session {
            token,
            ..self.clone()
        }
    }

    /// Returns a request builder for `POST` on the session's endpoint with
    /// the token and session headers set.
    pub fn post(&self) -> reqwest::RequestBuilder {
        self.http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-11-25")
    }

    /// Posts a raw body.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.post().body(body).send().await.expect("POST to MCP")
    }

    /// Posts a JSON message.
    pub async fn post_json(&self, message: &Value) -> reqwest::Response {
        self.post_raw(message.to_string()).await
    }

    /// Posts a raw body and returns the HTTP status and the JSON reply.
    pub async fn exchange(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self.post_raw(body).await;
        let status = response.status().as_u16();
        let text = response.text().await.expect("read MCP reply");
        let reply = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("MCP reply is not JSON (HTTP {status}): {text}"));
        (status, reply)
    }

    /// Sends a request and returns the HTTP status and the JSON reply.
    pub async fn request(&self, id: Value, method: &str, params: Value) -> (u16, Value) {
        let message = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.exchange(message.to_string()).await
    }

    /// Calls a tool with request id 1 and returns the JSON reply.
    pub async fn call_tool(&self, name: &str, arguments: Value) -> Value {
        self.call_tool_with_id(json!(1), name, arguments).await
    }

    /// Calls a tool with the given request id and returns the JSON reply.
    pub async fn call_tool_with_id(&self, id: Value, name: &str, arguments: Value) -> Value {
        let (status, reply) = self
            .request(
                id,
                "tools/call",
                json!({ "name": name, "arguments": arguments }),
            )
            .await;
        assert_eq!(status, 200, "tools/call returned HTTP {status}: {reply}");
        reply
    }

    /// Returns the tool names of `tools/list`.
    pub async fn tool_names(&self) -> Vec<String> {
        let (status, reply) = self.request(json!(1), "tools/list", json!({})).await;
        assert_eq!(status, 200, "tools/list returned HTTP {status}: {reply}");
        reply["result"]["tools"]
            .as_array()
            .expect("tools/list result has tools")
            .iter()
            .map(|tool| tool["name"].as_str().expect("tool name").to_owned())
            .collect()
    }
}

/// Returns the text of the first content item of a tool call reply.
pub fn result_text(reply: &Value) -> String {
    reply["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The development issuer's ES256 key, for signing hostile tokens.
pub struct DevKey {
    key_pair: EcdsaKeyPair,
    /// RFC 7638 thumbprint of the public JWK, as the issuer uses for `kid`.
    pub kid: String,
    /// Uncompressed public point `04 || x || y`.
    pub public_point: Vec<u8>,
    /// The public JWK as the issuer's bundle shows it.
    pub public_jwk: Value,
}

impl DevKey {
    /// Loads a PKCS#8 P-256 key file.
    pub fn load(path: &Path) -> DevKey {
        let der = std::fs::read(path).expect("read the development issuer key");
        DevKey::from_pkcs8(&der)
    }

    /// Generates a fresh key that is in no trust bundle.
    pub fn generate() -> DevKey {
        let document =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .expect("generate a P-256 key");
        DevKey::from_pkcs8(document.as_ref())
    }

    fn from_pkcs8(der: &[u8]) -> DevKey {
        let key_pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .expect("parse a PKCS#8 P-256 key");
        let point = key_pair.public_key().as_ref().to_vec();
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let digest = ring::digest::digest(&ring::digest::SHA256, thumbprint_input.as_bytes());
        let kid = URL_SAFE_NO_PAD.encode(digest.as_ref());
        let public_jwk =
            json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256" });
        DevKey {
            key_pair,
            kid,
            public_point: point,
            public_jwk,
        }
    }

    /// Signs `claims` as ES256 with this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({ "alg": "ES256", "typ": "JWT", "kid": self.kid }),
            claims,
        )
    }

    /// Signs `claims` as ES256 under an arbitrary header.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let signature = self
            .key_pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// Signs the exact header and payload texts as ES256, so a test can
    /// send JSON that a serialiser would not produce (duplicate keys).
    pub fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = self
            .key_pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// Returns claims of a JWT-SVID for [`AGENT`] and audience `warden`,
    /// valid for five minutes.
    pub fn svid_claims() -> Value {
        let now = now_unix();
        json!({ "sub": AGENT, "aud": ["warden"], "exp": now + 300, "iat": now })
    }
}

/// Signs `claims` with HMAC-SHA256 keyed by `key`, under `header`.
pub fn sign_hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    let input = signing_input(header, claims);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Returns `base64url(header).base64url(claims)`.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Current unix time in seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Returns a `warden` command with the given arguments and no inherited
/// configuration.
pub fn warden_command(args: &[&str]) -> Command {
    let mut command = Command::new(WARDEN);
    command
        .args(args)
        .env_remove("WARDEN_CONFIG")
        .env_remove("WARDEN_ADMIN_TOKEN")
        .env("NO_COLOR", "1");
    command
}

/// Returns a loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Writes `path` as a TOML basic string.
fn quote(path: &Path) -> String {
    let text = path.to_str().expect("temporary paths are UTF-8");
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
