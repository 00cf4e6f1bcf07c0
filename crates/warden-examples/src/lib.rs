//! Small MCP tool servers bundled with Warden, so that the demo and the
//! tests run without Node.js or Python.
//!
//! Each server speaks newline-delimited JSON-RPC on stdin and stdout (the
//! MCP stdio transport), answers `initialize`, `ping`, `tools/list` and
//! `tools/call`, and keeps its state under a root directory:
//!
//! - `files`: `read_file`, `list_directory` and `write_file` on a virtual
//!   tree whose paths start with `/workspace`, mapped into the root.
//! - `mail`: `send_email`, which appends the message to `outbox.jsonl`.
//! - `billing`: `refund`, which appends the refund to `refunds.jsonl`.
//! - `testkit`: `echo`, `env`, `sleep` and `crash`, for testing how the
//!   gateway handles slow, failing and changing upstreams.

mod servers;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

pub use servers::seed_workspace;

/// Names of the bundled servers.
pub const SERVERS: [&str; 4] = ["files", "mail", "billing", "testkit"];

/// Error from [`run`].
#[derive(Debug)]
pub enum ExampleError {
    /// The server name is not one of [`SERVERS`].
    UnknownServer(String),
    /// Reading stdin or writing stdout failed.
    Io(std::io::Error),
}

impl std::fmt::Display for ExampleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExampleError::UnknownServer(name) => write!(
                f,
                "unknown example server {name:?}; choose one of {}",
                SERVERS.join(", ")
            ),
            ExampleError::Io(error) => write!(f, "stdio failed: {error}"),
        }
    }
}

impl std::error::Error for ExampleError {}

/// Serves one bundled server on stdin and stdout until stdin closes.
pub fn run(server: &str, root: &Path) -> Result<(), ExampleError> {
    if !SERVERS.contains(&server) {
        return Err(ExampleError::UnknownServer(server.to_owned()));
    }
    let state = servers::Server::new(server, root.to_path_buf());
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.map_err(ExampleError::Io)?;
        if line.trim().is_empty() {
            continue;
        }
        let Some(reply) = handle_line(&state, &line) else {
            continue;
        };
        writeln!(stdout, "{reply}").map_err(ExampleError::Io)?;
        stdout.flush().map_err(ExampleError::Io)?;
    }
    Ok(())
}

fn handle_line(server: &servers::Server, line: &str) -> Option<Value> {
    let message = match warden_core::json::parse_strict(line.as_bytes()) {
        Ok(message) => message,
        Err(error) => {
            return Some(json!({
                "jsonrpc": "2.0", "id": null,
                "error": { "code": -32700, "message": format!("parse error: {error}") }
            }));
        }
    };
    let id = message.get("id")?.clone();
    let method = message.get("method").and_then(Value::as_str)?;
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    let outcome = match method {
        "initialize" => Ok(json!({
            "protocolVersion": params
                .get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or("2025-06-18"),
            "capabilities": { "tools": {} },
            "serverInfo": { "name": format!("warden-example-{}", server.name()), "version": env!("CARGO_PKG_VERSION") }
        })),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({ "tools": server.tools() })),
        "tools/call" => server.call(&params),
        other => Err((-32601, format!("method {other:?} not found"))),
    };
    Some(match outcome {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err((code, message)) => json!({
            "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message }
        }),
    })
}

/// Returns the `tools/list` entries of a bundled server, or an empty list
/// for an unknown name.
pub fn tool_list(server: &str) -> Value {
    if !SERVERS.contains(&server) {
        return json!([]);
    }
    servers::Server::new(server, PathBuf::new()).tools()
}

/// Returns the default root directory of the example servers inside a
/// Warden data directory.
pub fn default_root(data_dir: &Path) -> PathBuf {
    data_dir.join("examples")
}
