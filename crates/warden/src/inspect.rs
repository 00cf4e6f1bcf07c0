//! Commands that inspect state without serving: `check-config`, `trace`,
//! `policy validate|schema` and `audit verify`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use warden_config::Config;
use warden_gateway::PolicySource;
use warden_gateway::checkpoint::{
    AuditLogSummary, AuditLogVerdict, checkpoint_jwks, verify_audit_log,
};
use warden_gateway::server::task_key_path;
use warden_gateway::upstream::Upstream;
use warden_identity::{Jwks, SigningKey};
use warden_policy::ToolDef;
use warden_store::{AuditRecord, PostgresStore, SqliteStore, Store};

use crate::defaults::Effective;

/// `warden check-config FILE`.
pub fn check_config(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            if config.upstreams.is_empty() {
                println!(
                    "{}: valid (no upstreams: the bundled example servers and policy pack are used)",
                    file.display()
                );
            } else if config.policy.dir.is_none() {
                println!(
                    "{}: invalid:\n  - policy.dir: is not set; with upstreams of your own, set [policy] dir to a directory of .cedar files",
                    file.display()
                );
                return ExitCode::FAILURE;
            } else {
                println!(
                    "{}: valid ({} upstream(s): {})",
                    file.display(),
                    config.upstreams.len(),
                    config
                        .upstreams
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the configured store read-only: the SQLite file, or the
/// PostgreSQL database of `[store] url` or `url_env`.
pub(crate) fn open_store(config: &Config) -> anyhow::Result<Box<dyn Store>> {
    if let Some(url) = config.store.postgres_url().map_err(anyhow::Error::msg)? {
        return Ok(Box::new(PostgresStore::open_read_only(&url)?));
    }
    let path = config.store_path();
    if !path.exists() {
        anyhow::bail!(
            "no store at {}; run `warden serve` or `warden demo` first, or pass --config",
            path.display()
        );
    }
    Ok(Box::new(SqliteStore::open_read_only(&path)?))
}

/// `warden trace list`.
pub async fn trace_list(config: &Effective, limit: usize) -> anyhow::Result<ExitCode> {
    let store = open_store(&config.config)?;
    let traces = store.traces(limit).await?;
    if traces.is_empty() {
        println!("no traces yet");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32}  {:<20}  {:>7}  {:>6}  {:<36}  AGENT / USER / INTENT",
        "TRACE", "STARTED", "RECORDS", "DENIED", "TASK"
    );
    for trace in traces {
        println!(
            "{:<32}  {:<20}  {:>7}  {:>6}  {:<36}  {} / {} / {}",
            trace.trace_id,
            warden_gateway::auth::format_time(trace.started_at),
            trace.records,
            trace.denials,
            trace.task_id,
            trace.agent,
            trace.user,
            trace.intent
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `warden trace show ID`.
pub async fn trace_show(config: &Effective, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store(&config.config)?;
    let mut records = store.trace(id).await?;
    if records.is_empty()
        && let Some(task) = store.task(id).await?
    {
        records = store.trace(&task.trace_id).await?;
    }
    if records.is_empty() {
        anyhow::bail!("no trace or task {id:?}; `warden trace list` shows the recent ones");
    }
    if json {
        for record in &records {
            println!("{}", serde_json::to_string(record)?);
        }
    } else {
        print!("{}", render_trace(&records));
    }
    Ok(ExitCode::SUCCESS)
}

/// Renders a trace as an indented tree of spans.
pub fn render_trace(records: &[AuditRecord]) -> String {
    let mut out = String::new();
    let first = &records[0].record;
    out.push_str(&format!(
        "trace {}  task {}\nagent {}  user {}\n",
        first.trace_id, first.task_id, first.agent, first.user
    ));
    let mut children: BTreeMap<String, Vec<&AuditRecord>> = BTreeMap::new();
    let spans: std::collections::HashSet<&str> =
        records.iter().map(|r| r.record.span_id.as_str()).collect();
    let mut roots = Vec::new();
    for record in records {
        match record.record.parent_span_id.as_deref() {
            Some(parent) if spans.contains(parent) && parent != record.record.span_id => {
                children.entry(parent.to_owned()).or_default().push(record)
            }
            _ => roots.push(record),
        }
    }
    // "No model asked for it" only means something in a task whose model
    // calls went through Warden.
    let models = records.iter().any(|r| r.record.kind == "model.result");
    for root in roots {
        render_node(root, &children, 0, models, &mut out);
    }
    out
}

fn render_node(
    record: &AuditRecord,
    children: &BTreeMap<String, Vec<&AuditRecord>>,
    depth: usize,
    models: bool,
    out: &mut String,
) {
    let r = &record.record;
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.time_us) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[hour]:[minute]:[second].[subsecond digits:3]"
            ))
            .ok()
        })
        .unwrap_or_default();
    let indent = "  ".repeat(depth);
    let decision = r
        .decision
        .map(|d| d.as_str().to_uppercase())
        .unwrap_or_default();
    let mut line = format!(
        "{time}  {indent}{:<14} {:<26} {decision:<5}",
        r.kind,
        r.target.as_deref().unwrap_or("")
    );
    if !r.policy_ids.is_empty() {
        line.push_str(&format!(" [{}]", r.policy_ids.join(", ")));
    }
    if let Some(arguments) = r.detail.get("arguments").filter(|a| !a.is_null()) {
        line.push_str(&format!(" {arguments}"));
    }
    if r.kind == "task.delegated"
        && let Some(tools) = r.detail.get("tools")
    {
        line.push_str(&format!(" task {} scope {tools}", r.task_id));
    }
    if let Some(shadow) = r.detail.get("shadow").filter(|s| s.is_object()) {
        for (key, label) in [("would", "policies would"), ("candidate", "candidate set")] {
            if let Some(other) = shadow.get(key) {
                let decision = other
                    .get("decision")
                    .and_then(|d| d.as_str())
                    .unwrap_or_default()
                    .to_uppercase();
                let ids: Vec<&str> = other
                    .get("policy_ids")
                    .and_then(|ids| ids.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|id| id.as_str())
                    .collect();
                line.push_str(&format!(" ({label}: {decision} [{}])", ids.join(", ")));
            }
        }
    }
    match r.detail.get("requested_by") {
        Some(link) if link.is_object() => {
            let id = link
                .get("tool_call_id")
                .and_then(|i| i.as_str())
                .unwrap_or("");
            line.push_str(&format!(" (requested by model, {id})"));
        }
        Some(_) if models => line.push_str(" (no model asked for it)"),
        _ => {}
    }
    if let Some(approver) = r.detail.get("approver").and_then(|a| a.as_str()) {
        line.push_str(&format!(" by {approver}"));
    }
    if let Some(outcome) = r.detail.get("outcome").and_then(|o| o.as_str()) {
        let error = r
            .detail
            .get("is_error")
            .and_then(|e| e.as_bool())
            .unwrap_or(false);
        let ms = r
            .detail
            .get("duration_ms")
            .and_then(|d| d.as_f64())
            .unwrap_or(0.0);
        line.push_str(&format!(
            " {outcome}{} {ms:.1} ms",
            if error { " (isError)" } else { "" }
        ));
    }
    if r.kind == "model.result" {
        let tokens = |key: &str| r.detail.get(key).and_then(|n| n.as_i64()).unwrap_or(0);
        line.push_str(&format!(
            ", {} in / {} out tokens",
            tokens("gen_ai.usage.input_tokens"),
            tokens("gen_ai.usage.output_tokens")
        ));
        let asked: Vec<&str> = r
            .detail
            .get("tool_calls")
            .and_then(|calls| calls.as_array())
            .into_iter()
            .flatten()
            .filter_map(|call| call.get("name").and_then(|n| n.as_str()))
            .collect();
        if !asked.is_empty() {
            line.push_str(&format!(", asks for {}", asked.join(", ")));
        }
    }
    if r.decision
        .is_some_and(|d| d != warden_core::Decision::Allow)
        && let Some(reason) = &r.reason
    {
        line.push_str(&format!("\n{time}  {indent}  reason: {reason}"));
    }
    out.push_str(&line);
    out.push('\n');
    if let Some(kids) = children.get(&r.span_id) {
        for kid in kids {
            render_node(kid, children, depth + 1, models, out);
        }
    }
}

/// Starts the configured upstreams and returns their tools.
pub(crate) async fn upstream_tools(config: &Config) -> anyhow::Result<Vec<ToolDef>> {
    let limits = &config.limits;
    let mut tools = Vec::new();
    for (name, upstream_config) in &config.upstreams {
        let upstream = Arc::new(Upstream::new(
            name,
            upstream_config,
            Duration::from_secs(limits.call_timeout_seconds),
            Duration::from_secs(limits.start_timeout_seconds),
            limits.max_upstream_message_bytes,
        )?);
        upstream
            .start()
            .await
            .with_context(|| format!("upstream {name} failed to start"))?;
        tools.extend(upstream.tool_defs());
        upstream.shutdown().await;
    }
    Ok(tools)
}

/// `warden policy validate`.
pub async fn policy_validate(config: &Effective, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let source = match dir {
        Some(dir) => PolicySource::Dir(dir),
        None => config.policy_source.clone(),
    };
    let tools = upstream_tools(&config.config).await?;
    match source.load(&tools, &config.config) {
        Ok(engine) => {
            println!(
                "{}: {} policies valid against {} tools",
                source.describe(),
                engine.policy_count(),
                tools.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("{}: invalid:\n{error}", source.describe());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `warden policy schema`.
pub async fn policy_schema(config: &Effective) -> anyhow::Result<ExitCode> {
    let tools = upstream_tools(&config.config).await?;
    let engine = warden_policy::PolicyEngine::from_sources(
        &[],
        &tools,
        warden_policy::EngineOptions {
            environment: config.config.policy.environment.clone(),
            routes: warden_gateway::policy_source::route_defs(&config.config)
                .map_err(anyhow::Error::msg)?,
        },
    )?;
    println!("{}", engine.schema_text());
    Ok(ExitCode::SUCCESS)
}

/// `warden audit verify`: checks the hash chain and every signed
/// checkpoint, and names the first bad record.
pub async fn audit_verify(
    config: &Effective,
    jwks: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = open_store(&config.config)?;
    let keys = checkpoint_keys(&config.config, store.as_ref(), jwks).await?;
    let verdict = verify_audit_log(store.as_ref(), &keys).await?;
    let (report, code) = match &verdict {
        AuditLogVerdict::Valid(summary) => (valid_report(summary, json), ExitCode::SUCCESS),
        AuditLogVerdict::Invalid(defect) => (
            if json {
                serde_json::json!({
                    "valid": false,
                    "first_bad_seq": defect.seq,
                    "message": defect.message,
                })
                .to_string()
            } else {
                format!(
                    "audit log invalid: first bad record is seq {}: {}",
                    defect.seq, defect.message
                )
            },
            ExitCode::FAILURE,
        ),
    };
    println!("{report}");
    Ok(code)
}

/// `warden audit jwks`: prints the JWK set that verifies checkpoints.
pub fn audit_jwks(config: &Effective) -> anyhow::Result<ExitCode> {
    let path = task_key_path(&config.config.data_dir());
    let key = SigningKey::load(&path).with_context(|| {
        format!(
            "cannot load Warden's signing key {}; start the gateway once to create it, or pass --config",
            path.display()
        )
    })?;
    println!("{}", serde_json::to_string_pretty(&checkpoint_jwks(&key))?);
    Ok(ExitCode::SUCCESS)
}

/// Loads the keys that verify checkpoints: the JWK set at `jwks`, or the
/// public half of the signing key in the data directory. Without a key
/// file, a log without checkpoints still verifies.
async fn checkpoint_keys(
    config: &Config,
    store: &dyn Store,
    jwks: Option<&Path>,
) -> anyhow::Result<Jwks> {
    if let Some(path) = jwks {
        return Jwks::from_file(path)
            .with_context(|| format!("cannot load the JWK set {}", path.display()));
    }
    let path = task_key_path(&config.data_dir());
    match SigningKey::load(&path) {
        Ok(key) => Ok(Jwks::from_json(&checkpoint_jwks(&key))?),
        Err(_) if !path.exists() && store.checkpoints().await?.is_empty() => {
            Ok(Jwks::from_json(&serde_json::json!({ "keys": [] }))?)
        }
        Err(error) => Err(anyhow::anyhow!(
            "cannot load Warden's signing key {} to verify the checkpoints: {error}; pass --jwks FILE with the JWK set that `warden audit jwks` printed",
            path.display()
        )),
    }
}

/// Formats the report of a valid log: one summary line, and a note when
/// the newest records are not covered by a checkpoint yet.
fn valid_report(summary: &AuditLogSummary, json: bool) -> String {
    if json {
        return serde_json::json!({
            "valid": true,
            "records": summary.records,
            "head_seq": summary.head_seq,
            "head_hash": summary.head_hash,
            "checkpoints": summary.checkpoints,
            "newest_checkpoint_seq": summary.newest_checkpoint,
        })
        .to_string();
    }
    let plural = if summary.checkpoints == 1 { "" } else { "s" };
    let mut report = format!(
        "audit log valid: {} records, head {} {}, {} checkpoint{plural}",
        summary.records, summary.head_seq, summary.head_hash, summary.checkpoints
    );
    if let Some(newest) = summary.newest_checkpoint {
        report.push_str(&format!(", newest at seq {newest}"));
    }
    let covered = summary.newest_checkpoint.unwrap_or(0);
    if covered < summary.head_seq {
        report.push_str(&format!(
            "\nnote: records {} to {} are not covered by a checkpoint yet, so deleting them or rebuilding the chain from them would go unnoticed; the gateway signs its head every audit.checkpoint_interval_seconds and at shutdown",
            covered + 1,
            summary.head_seq
        ));
    }
    report
}
