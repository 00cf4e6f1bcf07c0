//! `warden demo`: the gateway, the bundled tool servers and a scripted
//! ReAct-style agent in one process.
//!
//! The agent authenticates with a JWT-SVID from the development issuer,
//! starts a task, and then alternates thought, tool call and observation:
//! a scripted model, reached through Warden's `/llm` proxy with a key only
//! Warden holds, thinks and picks each tool call, and the call goes through
//! Warden's MCP endpoint. Some calls are allowed, some are denied by
//! policy or by the task's scope, and one is held until a scripted approver
//! approves it through the admin API. At the end the task is ended and its
//! trace printed. Everything lives in a temporary directory removed on exit.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use warden_config::Config;
use warden_identity::SpiffeId;

use crate::defaults;

const AGENT: &str = "spiffe://warden.local/agent/support-bot";
const MAILER: &str = "spiffe://warden.local/agent/mailer";

mod model;

use model::Step;

/// Tool-call API shape of the tools offered to the model, by name only;
/// the scripted model reads nothing else.
fn offered(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|name| json!({ "type": "function", "function": { "name": name, "parameters": { "type": "object" } } }))
            .collect(),
    )
}

fn script() -> Vec<Step> {
    vec![
        Step {
            thought: "I need this week's meeting notes. Let me see what is in the notes folder.",
            tool: "files__list_directory",
            arguments: json!({ "path": "/workspace/notes" }),
        },
        Step {
            thought: "The meeting file is there; I will read it.",
            tool: "files__read_file",
            arguments: json!({ "path": "/workspace/notes/meeting-2026-12-01.md" }),
        },
        Step {
            thought: "There is a notes_private folder next to it; maybe it has more context.",
            tool: "files__read_file",
            arguments: json!({ "path": "/workspace/notes_private/salaries.csv" }),
        },
        Step {
            thought: "The API key would let me check the ticket system directly.",
            tool: "files__read_file",
            arguments: json!({ "path": "/workspace/notes/../secrets/api-key.txt" }),
        },
        Step {
            thought: "I will write the summary as a draft.",
            tool: "files__write_file",
            arguments: json!({
                "path": "/workspace/drafts/weekly-summary.md",
                "content": "Weekly summary: the refund flow ships Thursday; Alice owns the release notes; 12 support tickets remain.\n"
            }),
        },
        Step {
            thought: "I could also leave a copy next to the notes.",
            tool: "files__write_file",
            arguments: json!({ "path": "/workspace/notes/weekly-summary.md", "content": "copy" }),
        },
        Step {
            thought: "Now I send the summary to the team.",
            tool: "mail__send_email",
            arguments: json!({
                "to": "team@acme.test",
                "subject": "Weekly summary",
                "body": "The refund flow ships Thursday; Alice owns the release notes; 12 tickets remain."
            }),
        },
        Step {
            thought: "A partner asked for the notes too; I will mail them outside the company.",
            tool: "mail__send_email",
            arguments: json!({ "to": "partner@example.net", "subject": "Notes", "body": "See attached." }),
        },
        Step {
            thought: "A customer in the notes was promised a refund; I will issue it.",
            tool: "billing__refund",
            arguments: json!({ "order_id": "A-1001", "amount": 40 }),
        },
        Step {
            thought: "A second customer needs a larger refund.",
            tool: "billing__refund",
            arguments: json!({ "order_id": "A-1002", "amount": 250 }),
        },
        Step {
            thought: "Their old invoice should be voided as well.",
            tool: "billing__void_invoice",
            arguments: json!({ "invoice_id": "INV-77" }),
        },
    ]
}

/// Runs the demo and returns its exit code.
pub async fn run() -> anyhow::Result<ExitCode> {
    let data_dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let admin_token = format!("demo-admin-{}", uuid::Uuid::new_v4().simple());
    let mut config = Config {
        data_dir: Some(data_dir.path().to_path_buf()),
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".into();
    // The model's key lives in a file that only Warden reads.
    let model_key = format!("sk-demo-{}", uuid::Uuid::new_v4().simple());
    let key_file = data_dir.path().join("model.key");
    std::fs::write(&key_file, &model_key).context("cannot write the demo model's key")?;
    let model_addr = model::start(model_key, script()).await?;
    config.llm.insert(
        "scripted".into(),
        warden_config::ModelProviderConfig {
            kind: warden_config::ProviderKind::Openai,
            base_url: format!("http://{model_addr}"),
            api_key_env: None,
            api_key_file: Some(key_file),
            models: vec![model::MODEL.to_owned()],
            max_calls_per_task: Some(20),
            max_tokens_per_task: None,
            timeout_seconds: Some(30),
        },
    );
    let effective = defaults::complete(config)?;
    let issuer = warden_gateway::server::load_dev_issuer(&effective.config)?;
    let gateway = warden_gateway::Gateway::build(
        effective.config,
        warden_gateway::GatewayOptions {
            policy_source: effective.policy_source,
            admin_token: Some(admin_token.clone()),
        },
    )
    .await?;
    let base = format!("http://{}", gateway.local_addr());
    let state = gateway.state();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.serve(async {
        let _ = stopped.await;
    }));

    println!(
        "Warden demo: gateway on {base} with the bundled files, mail and billing servers,\n\
         and a scripted model at /llm/scripted whose API key only Warden holds.\n"
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let svid = issuer.issue(&SpiffeId::parse(AGENT)?, &["warden".to_owned()], 300, now)?;
    let http = reqwest::Client::new();

    let task: Value = http
        .post(format!("{base}/v1/tasks"))
        .bearer_auth(&svid)
        .json(&json!({
            "intent": "Summarise this week's meeting notes and send the summary to the team",
            "user": "alice@acme.test",
            "tools": ["files__*", "mail__send_email", "billing__refund"],
            "ttl_seconds": 300
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = task["token"]
        .as_str()
        .context("task response has no token")?
        .to_owned();
    let task_id = task["task_id"].as_str().unwrap_or_default().to_owned();
    let trace_id = task["trace_id"].as_str().unwrap_or_default().to_owned();
    println!("Agent {AGENT} started task {task_id}");
    println!(
        "  for user alice@acme.test, tools {}, trace {trace_id}\n",
        task["tools"]
    );

    let approver = tokio::spawn(approve_pending(
        http.clone(),
        base.clone(),
        admin_token.clone(),
    ));
    let mut mcp = McpClient::connect(&http, &format!("{base}/mcp"), &token).await?;
    let listed = mcp.request("tools/list", json!({})).await?;
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .map(|tools| tools.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    println!(
        "tools/list shows the task {} tools: {}\n",
        names.len(),
        names.join(", ")
    );

    let (mut allowed, mut refused) = (0, 0);
    let mut messages = vec![
        json!({ "role": "system", "content": "You are a support agent. Use the tools to do the user's task." }),
        json!({ "role": "user", "content": "Summarise this week's meeting notes and send the summary to the team." }),
    ];
    let tools = offered(&names);
    for index in 1.. {
        let reply: Value = http
            .post(format!("{base}/llm/scripted/v1/chat/completions"))
            .bearer_auth(&token)
            .json(&json!({ "model": model::MODEL, "messages": messages, "tools": tools }))
            .send()
            .await?
            .error_for_status()
            .context("the model call through Warden failed")?
            .json()
            .await?;
        let message = &reply["choices"][0]["message"];
        let thought = message["content"].as_str().unwrap_or_default();
        let Some(call) = message["tool_calls"].get(0) else {
            println!("Model:         {thought}\n");
            break;
        };
        let tool = call["function"]["name"].as_str().unwrap_or_default();
        let arguments: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or("{}"))?;
        println!("Step {index}");
        println!("  Thought:     {thought}");
        println!("  Action:      {tool} {arguments}");
        let reply = mcp
            .request(
                "tools/call",
                json!({ "name": tool, "arguments": arguments }),
            )
            .await?;
        let result = &reply["result"];
        let text = result["content"][0]["text"].as_str().unwrap_or_default();
        let observation = match result["_meta"]["dev.warden/decision"].as_object() {
            Some(decision) => {
                refused += 1;
                println!(
                    "  Decision:    {} by [{}]",
                    decision["decision"]
                        .as_str()
                        .unwrap_or_default()
                        .to_uppercase(),
                    join(&decision["policy_ids"])
                );
                println!(
                    "  Reason:      {}",
                    decision["reason"].as_str().unwrap_or_default()
                );
                text.to_owned()
            }
            None if reply.get("error").is_some() => {
                bail!("step {index} failed: {}", reply["error"])
            }
            None => {
                allowed += 1;
                println!("  Decision:    ALLOW");
                println!("  Observation: {}", first_line(text));
                text.to_owned()
            }
        };
        println!();
        messages.push(message.clone());
        messages.push(json!({
            "role": "tool",
            "tool_call_id": call["id"],
            "content": observation,
        }));
    }

    println!("The agent also lists /workspace/drafts on its own, without asking the model:");
    let unasked = mcp
        .request(
            "tools/call",
            json!({ "name": "files__list_directory", "arguments": { "path": "/workspace/drafts" } }),
        )
        .await?;
    println!(
        "  {}; the trace marks it as not requested by a model.\n",
        if unasked["result"]["isError"] == json!(true) {
            "refused"
        } else {
            "allowed"
        }
    );

    println!("Delegation: support-bot hands the mailing to {MAILER}.");
    let mailer_svid = issuer.issue(&SpiffeId::parse(MAILER)?, &["warden".to_owned()], 300, now)?;
    let wide = exchange(&http, &base, &token, &mailer_svid, "files__* mail__*").await?;
    println!(
        "  Scope \"files__* mail__*\" is refused: {} ({})",
        wide["error"].as_str().unwrap_or_default(),
        wide["error_description"].as_str().unwrap_or_default()
    );
    let granted = exchange(&http, &base, &token, &mailer_svid, "mail__send_email").await?;
    let mailer_token = granted["access_token"]
        .as_str()
        .with_context(|| format!("token exchange failed: {granted}"))?
        .to_owned();
    println!(
        "  Scope \"mail__send_email\" is granted: task {}, expires in {} s, same trace",
        granted["task_id"].as_str().unwrap_or_default(),
        granted["expires_in"]
    );
    let mut mailer = McpClient::connect(&http, &format!("{base}/mcp"), &mailer_token).await?;
    let sent = mailer
        .request(
            "tools/call",
            json!({ "name": "mail__send_email", "arguments": {
                "to": "team@acme.test", "subject": "Reminder", "body": "Release notes are due Thursday." } }),
        )
        .await?;
    println!(
        "  The mailer sends a reminder to team@acme.test: {}",
        if sent["result"]["isError"] == json!(true) {
            "refused"
        } else {
            "allowed"
        }
    );
    println!();

    let ended = http
        .delete(format!("{base}/v1/tasks/{task_id}"))
        .bearer_auth(&token)
        .send()
        .await?;
    println!(
        "Task ended (HTTP {}); its token is now revoked.",
        ended.status().as_u16()
    );
    let after = mcp.request("tools/list", json!({})).await;
    println!(
        "A call with the revoked token: {}",
        match after {
            Ok(reply) => format!("unexpected reply {reply}"),
            Err(error) => error.to_string(),
        }
    );
    let mailer_after = mailer.request("tools/list", json!({})).await;
    println!(
        "A call with the mailer's delegated token: {}\n",
        match mailer_after {
            Ok(reply) => format!("unexpected reply {reply}"),
            Err(error) => error.to_string(),
        }
    );

    approver.abort();
    state.store.flush().await?;
    let records = state.store.trace(&trace_id).await?;
    println!("Trace of the task ({} records):", records.len());
    print!("{}", crate::inspect::render_trace(&records));
    println!("\n{allowed} steps allowed, {refused} refused.");

    let _ = stop.send(());
    server.await.context("gateway task failed")??;
    if allowed == 0 || refused == 0 {
        bail!("the demo expected both allowed and refused steps");
    }
    Ok(ExitCode::SUCCESS)
}

/// Exchanges the delegating task's token for one of `scope` for the
/// agent of `actor_svid` (RFC 8693), returning the JSON response.
async fn exchange(
    http: &reqwest::Client,
    base: &str,
    subject_token: &str,
    actor_svid: &str,
    scope: &str,
) -> anyhow::Result<Value> {
    let form = [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", subject_token),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("actor_token", actor_svid),
        ("actor_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("scope", scope),
    ];
    let body = url_encode(&form);
    Ok(http
        .post(format!("{base}/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?
        .json()
        .await?)
}

fn url_encode(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Plays the human approver: approves every pending request it lists.
async fn approve_pending(http: reqwest::Client, base: String, admin_token: String) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let Ok(response) = http
            .get(format!("{base}/v1/approvals?status=pending"))
            .bearer_auth(&admin_token)
            .send()
            .await
        else {
            continue;
        };
        let Ok(list) = response.json::<Value>().await else {
            continue;
        };
        for approval in list["approvals"].as_array().into_iter().flatten() {
            let id = approval["approval_id"].as_str().unwrap_or_default();
            println!(
                "  Approver:    bob@acme.test sees approval {id} for {} {} ({}) and approves it",
                approval["tool"].as_str().unwrap_or_default(),
                approval["arguments"],
                approval["reason"].as_str().unwrap_or_default()
            );
            let _ = http
                .post(format!("{base}/v1/approvals/{id}/approve"))
                .bearer_auth(&admin_token)
                .json(&json!({ "approver": "bob@acme.test", "reason": "the customer was promised this refund" }))
                .send()
                .await;
        }
    }
}

fn join(ids: &Value) -> String {
    ids.as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let more = if text.lines().count() > 1 { " ..." } else { "" };
    format!("{line}{more}")
}

/// A minimal MCP client of the handshake era, enough for the demo.
struct McpClient<'a> {
    http: &'a reqwest::Client,
    url: String,
    token: String,
    session: String,
    next_id: u64,
}

impl<'a> McpClient<'a> {
    async fn connect(
        http: &'a reqwest::Client,
        url: &str,
        token: &str,
    ) -> anyhow::Result<McpClient<'a>> {
        let response = http
            .post(url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": { "name": "warden-demo-agent", "version": "1.0" }
                }
            }))
            .send()
            .await?
            .error_for_status()?;
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .context("initialize returned no Mcp-Session-Id")?
            .to_owned();
        let mut client = McpClient {
            http,
            url: url.to_owned(),
            token: token.to_owned(),
            session,
            next_id: 1,
        };
        client.notify("notifications/initialized").await?;
        Ok(client)
    }

    async fn notify(&mut self, method: &str) -> anyhow::Result<()> {
        self.post(json!({ "jsonrpc": "2.0", "method": method }))
            .await?;
        Ok(())
    }

    async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let response = self
            .post(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            // The MCP endpoint answers with a JSON-RPC error body.
            let message = body["error"]["message"]
                .as_str()
                .or_else(|| body["message"].as_str())
                .unwrap_or("no message");
            bail!("HTTP {status}: {message}");
        }
        Ok(response.json().await?)
    }

    async fn post(&self, body: Value) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.session)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body)
            .send()
            .await?)
    }
}
