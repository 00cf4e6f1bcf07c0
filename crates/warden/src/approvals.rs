//! `warden approvals list|show|approve|deny`: the approver's side, over the
//! running gateway's admin API.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::defaults::Effective;

/// Where and how to reach the admin API.
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    /// Builds a client for `url` (default: the configured listener) with
    /// the admin token from `WARDEN_ADMIN_TOKEN` or `admin.token_file`.
    pub fn new(config: &Effective, url: Option<String>) -> anyhow::Result<AdminClient> {
        let base = url.unwrap_or_else(|| format!("http://{}", config.config.server.listen));
        let token = match std::env::var("WARDEN_ADMIN_TOKEN") {
            Ok(token) if !token.is_empty() => token,
            _ => match &config.config.admin.token_file {
                Some(file) => std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read admin.token_file {}", file.display()))?
                    .trim()
                    .to_owned(),
                None => bail!(
                    "no admin token; export WARDEN_ADMIN_TOKEN with the token the gateway was started with"
                ),
            },
        };
        Ok(AdminClient {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach Warden at {}; is `warden serve` running?",
                    self.base
                )
            })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "HTTP {}: {}",
                status.as_u16(),
                body["message"].as_str().unwrap_or("no message")
            );
        }
        Ok(body)
    }
}

/// `warden approvals list`.
pub async fn list(client: &AdminClient, status: &str) -> anyhow::Result<ExitCode> {
    let body = client
        .call(
            client
                .http
                .get(format!("{}/v1/approvals?status={status}", client.base)),
        )
        .await?;
    let approvals = body["approvals"].as_array().cloned().unwrap_or_default();
    if approvals.is_empty() {
        println!("no {status} approvals");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36}  {:<9}  {:<24}  {:<20}  ARGUMENTS",
        "APPROVAL", "STATUS", "TOOL", "EXPIRES"
    );
    for approval in approvals {
        println!(
            "{:<36}  {:<9}  {:<24}  {:<20}  {}",
            approval["approval_id"].as_str().unwrap_or_default(),
            approval["status"].as_str().unwrap_or_default(),
            approval["tool"].as_str().unwrap_or_default(),
            approval["expires_at"].as_str().unwrap_or_default(),
            approval["arguments"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `warden approvals show ID`.
pub async fn show(client: &AdminClient, id: &str) -> anyhow::Result<ExitCode> {
    let body = client
        .call(
            client
                .http
                .get(format!("{}/v1/approvals/{id}", client.base)),
        )
        .await?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(ExitCode::SUCCESS)
}

/// `warden approvals approve|deny ID`.
pub async fn decide(
    client: &AdminClient,
    id: &str,
    approve: bool,
    approver: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<ExitCode> {
    let verb = if approve { "approve" } else { "deny" };
    let mut body = json!({});
    if let Some(approver) = approver {
        body["approver"] = Value::String(approver);
    }
    if let Some(reason) = reason {
        body["reason"] = Value::String(reason);
    }
    let record = client
        .call(
            client
                .http
                .post(format!("{}/v1/approvals/{id}/{verb}", client.base))
                .json(&body),
        )
        .await?;
    println!(
        "approval {id} is now {} (tool {}, task {})",
        record["status"].as_str().unwrap_or_default(),
        record["tool"].as_str().unwrap_or_default(),
        record["task_id"].as_str().unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
