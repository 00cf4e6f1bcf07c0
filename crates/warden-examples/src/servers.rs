//! The tools of the bundled servers.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

/// Virtual prefix of every path of the `files` server.
pub const WORKSPACE: &str = "/workspace";

/// One running bundled server.
pub struct Server {
    name: String,
    root: PathBuf,
}

type CallResult = Result<Value, (i64, String)>;

impl Server {
    pub fn new(name: &str, root: PathBuf) -> Server {
        Server {
            name: name.to_owned(),
            root,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tools(&self) -> Value {
        match self.name.as_str() {
            "files" => json!([
                tool(
                    "read_file",
                    "Read a text file under /workspace.",
                    json!({
                        "type": "object",
                        "properties": { "path": { "type": "string", "description": "Absolute path, e.g. /workspace/notes/todo.md" } },
                        "required": ["path"]
                    }),
                    json!({ "readOnlyHint": true, "openWorldHint": false })
                ),
                tool(
                    "list_directory",
                    "List a directory under /workspace.",
                    json!({
                        "type": "object",
                        "properties": { "path": { "type": "string" } },
                        "required": ["path"]
                    }),
                    json!({ "readOnlyHint": true, "openWorldHint": false })
                ),
                tool(
                    "write_file",
                    "Create or replace a text file under /workspace.",
                    json!({
                        "type": "object",
                        "properties": { "path": { "type": "string" }, "content": { "type": "string" } },
                        "required": ["path", "content"]
                    }),
                    json!({ "readOnlyHint": false, "destructiveHint": true, "openWorldHint": false })
                ),
            ]),
            "mail" => json!([tool(
                "send_email",
                "Send an email.",
                json!({
                    "type": "object",
                    "properties": {
                        "to": { "type": "string", "format": "email" },
                        "subject": { "type": "string" },
                        "body": { "type": "string" }
                    },
                    "required": ["to", "subject", "body"]
                }),
                json!({ "readOnlyHint": false, "destructiveHint": false, "openWorldHint": true })
            )]),
            "billing" => json!([
                tool(
                    "refund",
                    "Refund an order.",
                    json!({
                        "type": "object",
                        "properties": {
                            "order_id": { "type": "string" },
                            "amount": { "type": "number", "description": "Amount in the order's currency" }
                        },
                        "required": ["order_id", "amount"]
                    }),
                    json!({ "readOnlyHint": false, "destructiveHint": false, "openWorldHint": true })
                ),
                tool(
                    "void_invoice",
                    "Void an unpaid invoice.",
                    json!({
                        "type": "object",
                        "properties": { "invoice_id": { "type": "string" } },
                        "required": ["invoice_id"]
                    }),
                    json!({ "readOnlyHint": false, "destructiveHint": true, "openWorldHint": true })
                ),
            ]),
            _ => json!([
                tool(
                    "echo",
                    &self.echo_description(),
                    json!({
                        "type": "object",
                        "properties": { "text": { "type": "string" } },
                        "required": ["text"]
                    }),
                    json!({ "readOnlyHint": true })
                ),
                tool(
                    "env",
                    "Return the value of an environment variable of the server, or \"unset\".",
                    json!({
                        "type": "object",
                        "properties": { "name": { "type": "string" } },
                        "required": ["name"]
                    }),
                    json!({ "readOnlyHint": true }),
                ),
                tool(
                    "sleep",
                    "Wait, then answer.",
                    json!({
                        "type": "object",
                        "properties": { "seconds": { "type": "integer" } },
                        "required": ["seconds"]
                    }),
                    json!({ "readOnlyHint": true })
                ),
                tool(
                    "crash",
                    "Exit the server process at once.",
                    json!({
                        "type": "object", "properties": {}
                    }),
                    json!({ "readOnlyHint": true })
                ),
            ]),
        }
    }

    /// Returns the `testkit` echo tool's description: the text of
    /// `ROOT/echo-description.txt` when present, so tests can change a
    /// tool's definition between two starts of the server.
    fn echo_description(&self) -> String {
        std::fs::read_to_string(self.root.join("echo-description.txt"))
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|_| "Return the text.".to_owned())
    }

    pub fn call(&self, params: &Value) -> CallResult {
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let empty = json!({});
        let arguments = params.get("arguments").unwrap_or(&empty);
        let text = |key: &str| arguments.get(key).and_then(Value::as_str);
        match (self.name.as_str(), name) {
            ("files", "read_file") => Ok(self.read_file(text("path"))),
            ("files", "list_directory") => Ok(self.list_directory(text("path"))),
            ("files", "write_file") => Ok(self.write_file(text("path"), text("content"))),
            ("mail", "send_email") => Ok(self.append("outbox.jsonl", arguments, "queued message")),
            ("billing", "refund") => Ok(self.append("refunds.jsonl", arguments, "refund issued")),
            ("billing", "void_invoice") => {
                Ok(self.append("voided.jsonl", arguments, "invoice voided"))
            }
            ("testkit", "echo") => Ok(ok(text("text").unwrap_or_default())),
            ("testkit", "env") => {
                let value = std::env::var(text("name").unwrap_or_default());
                Ok(ok(&value.unwrap_or_else(|_| "unset".to_owned())))
            }
            ("testkit", "sleep") => {
                let seconds = arguments
                    .get("seconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                std::thread::sleep(Duration::from_secs(seconds.min(3600)));
                Ok(ok(&format!("slept {seconds} s")))
            }
            ("testkit", "crash") => std::process::exit(3),
            _ => Err((-32602, format!("unknown tool {name:?}"))),
        }
    }

    fn resolve(&self, path: Option<&str>) -> Result<PathBuf, Value> {
        let Some(path) = path else {
            return Err(failed("missing argument path"));
        };
        let normalized = warden_core::path::normalize(path);
        let Some(rest) = normalized.strip_prefix(WORKSPACE) else {
            return Err(failed(&format!("{path} is outside {WORKSPACE}")));
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(failed(&format!("{path} is outside {WORKSPACE}")));
        }
        Ok(self
            .root
            .join("workspace")
            .join(rest.trim_start_matches('/')))
    }

    fn read_file(&self, path: Option<&str>) -> Value {
        match self.resolve(path) {
            Ok(real) => match std::fs::read_to_string(&real) {
                Ok(content) => ok(&content),
                Err(error) => failed(&format!(
                    "cannot read {}: {error}",
                    path.unwrap_or_default()
                )),
            },
            Err(error) => error,
        }
    }

    fn list_directory(&self, path: Option<&str>) -> Value {
        let real = match self.resolve(path) {
            Ok(real) => real,
            Err(error) => return error,
        };
        match std::fs::read_dir(&real) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(Result::ok)
                    .map(|entry| {
                        let kind = if entry.path().is_dir() {
                            "[DIR]"
                        } else {
                            "[FILE]"
                        };
                        format!("{kind} {}", entry.file_name().to_string_lossy())
                    })
                    .collect();
                names.sort();
                ok(&names.join("\n"))
            }
            Err(error) => failed(&format!(
                "cannot list {}: {error}",
                path.unwrap_or_default()
            )),
        }
    }

    fn write_file(&self, path: Option<&str>, content: Option<&str>) -> Value {
        let real = match self.resolve(path) {
            Ok(real) => real,
            Err(error) => return error,
        };
        if let Some(parent) = real.parent()
            && let Err(error) = std::fs::create_dir_all(parent)
        {
            return failed(&format!("cannot create {}: {error}", parent.display()));
        }
        match std::fs::write(&real, content.unwrap_or_default()) {
            Ok(()) => ok(&format!("wrote {}", path.unwrap_or_default())),
            Err(error) => failed(&format!(
                "cannot write {}: {error}",
                path.unwrap_or_default()
            )),
        }
    }

    fn append(&self, file: &str, arguments: &Value, what: &str) -> Value {
        let path = self.root.join(file);
        let written = std::fs::create_dir_all(&self.root).and_then(|()| {
            let mut out = OpenOptions::new().create(true).append(true).open(&path)?;
            writeln!(out, "{arguments}")
        });
        match written {
            Ok(()) => ok(what),
            Err(error) => failed(&format!("cannot write {}: {error}", path.display())),
        }
    }
}

/// Creates the demo workspace under `root` unless it exists.
pub fn seed_workspace(root: &Path) -> std::io::Result<()> {
    let workspace = root.join("workspace");
    if workspace.exists() {
        return Ok(());
    }
    let files = [
        (
            "notes/meeting-2026-12-01.md",
            "# Weekly sync\n\n- Refund flow ships on Thursday.\n- Alice owns the release notes.\n- Support backlog is down to 12 tickets.\n",
        ),
        (
            "notes/todo.md",
            "- Draft the weekly summary\n- Send it to team@acme.test\n",
        ),
        (
            "notes_private/salaries.csv",
            "name,salary\nalice,100\nbob,90\n",
        ),
        ("secrets/api-key.txt", "sk-demo-not-a-real-key\n"),
        ("drafts/.keep", ""),
    ];
    for (path, content) in files {
        let full = workspace.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(full, content)?;
    }
    Ok(())
}

fn tool(name: &str, description: &str, input_schema: Value, annotations: Value) -> Value {
    json!({
        "name": name,
        "description": description,
        "inputSchema": input_schema,
        "annotations": annotations
    })
}

fn ok(text: &str) -> Value {
    json!({ "content": [{ "type": "text", "text": text }], "isError": false })
}

fn failed(text: &str) -> Value {
    json!({ "content": [{ "type": "text", "text": text }], "isError": true })
}
