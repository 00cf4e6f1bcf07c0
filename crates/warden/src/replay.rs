//! `warden policy replay`: re-decides recorded steps against a candidate
//! policy set and reports every decision that would change.
//!
//! The steps are the `tool.decision`, `http.decision` and `model.decision`
//! records of the store's traces. Each step is rebuilt from its record and
//! its task: the task's user, intent and tool scope come from the store,
//! the acting agent from the record, and the depth from the task's parent
//! links. Task memory is rebuilt by going through the trace in seq order
//! and applying the gateway's updates. A call let through adds one call,
//! one per effective class of its tool or route, and its summed arguments.
//! An output that arrived adds the labels of its tool or route.
//!
//! A step that a built-in check decided before the policies ran (the task
//! scope, a changed tool definition, model budgets, an unreadable store)
//! keeps its recorded decision, because no policy change can alter it.
//! The report marks such steps as built-in, and also the steps decided by
//! the engine's own `warden:` checks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};
use warden_core::Decision;
use warden_gateway::PolicySource;
use warden_gateway::audit::REDACTED;
use warden_gateway::policy_source::route_defs;
use warden_policy::{
    ARGUMENTS_POLICY_ID, Destination, ModelUsage, Outcome, PolicyEngine, REQUEST_POLICY_ID,
    RouteDef, Step, StepRequest, TaskContext, TaskMemory, UNKNOWN_ROUTE_POLICY_ID,
    UNKNOWN_TOOL_POLICY_ID,
};
use warden_store::{AuditRecord, NewAuditRecord, Store, TaskRecord};

use crate::defaults::Effective;
use crate::policy_test::{model_outcome, scope_denial, trust_domain};

/// Maximum number of parent links followed from one task. A longer chain
/// means that the store's parent links form a cycle.
const MAX_HOPS: usize = 64;

/// Record kinds whose steps are replayed.
const DECISION_KINDS: [&str; 3] = ["tool.decision", "http.decision", "model.decision"];

/// Options of `warden policy replay`.
pub struct ReplayRequest {
    /// Directory of the candidate `.cedar` files.
    pub policies: PathBuf,
    /// One trace id or task id, or `None` for the newest traces.
    pub trace: Option<String>,
    /// Number of newest traces to replay without `trace`.
    pub limit: usize,
    /// Print one JSON object instead of text.
    pub json: bool,
}

/// `warden policy replay`: prints the steps whose decision would change
/// and a summary. Changed decisions are a finding, not an error, so the
/// exit status is 0 unless the replay itself fails.
pub async fn run(config: &Effective, request: ReplayRequest) -> anyhow::Result<ExitCode> {
    let store = crate::inspect::open_store(&config.config)?;
    let trace_ids = select_traces(store.as_ref(), request.trace.as_deref(), request.limit).await?;
    let tools = crate::inspect::upstream_tools(&config.config).await?;
    let source = PolicySource::Dir(request.policies.clone());
    let engine = source.load(&tools, &config.config).with_context(|| {
        format!(
            "the candidate policies in {} are invalid; `warden policy validate --dir {}` shows the same errors",
            source.describe(),
            source.describe()
        )
    })?;
    let routes = route_defs(&config.config)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .map(|route| (route.name.clone(), route))
        .collect();
    let replayer = Replayer { engine, routes };

    let mut report = Report {
        candidate: source.describe(),
        traces: trace_ids.len(),
        ..Report::default()
    };
    for trace_id in &trace_ids {
        let records = store.trace(trace_id).await?;
        let tasks = load_tasks(store.as_ref(), &records).await?;
        replayer.replay_trace(&records, &tasks, &mut report);
    }
    report.entries.sort_by_key(|entry| entry.seq);
    if request.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}

/// Returns the trace ids to replay, oldest first: the trace of `trace`
/// (a trace id or a task id), or the `limit` newest traces.
async fn select_traces(
    store: &dyn Store,
    trace: Option<&str>,
    limit: usize,
) -> anyhow::Result<Vec<String>> {
    if let Some(id) = trace {
        if !store.trace(id).await?.is_empty() {
            return Ok(vec![id.to_owned()]);
        }
        if let Some(task) = store.task(id).await? {
            return Ok(vec![task.trace_id]);
        }
        anyhow::bail!("no trace or task {id:?}; `warden trace list` shows the recent ones");
    }
    let mut ids: Vec<String> = store
        .traces(limit)
        .await?
        .into_iter()
        .map(|summary| summary.trace_id)
        .collect();
    ids.reverse();
    Ok(ids)
}

/// A task's facts that every step of it needs.
struct TaskInfo {
    user: String,
    intent: String,
    tools: Vec<String>,
    /// Agents of the delegation chain, the root task's agent first.
    chain: Vec<String>,
}

impl TaskInfo {
    fn context(&self, task_id: &str, agent: &str) -> TaskContext {
        let mut chain = self.chain.clone();
        if let Some(last) = chain.last_mut() {
            agent.clone_into(last);
        }
        TaskContext {
            task_id: task_id.to_owned(),
            agent: agent.to_owned(),
            trust_domain: trust_domain(agent),
            user: self.user.clone(),
            intent: self.intent.clone(),
            tools: self.tools.clone(),
            depth: u32::try_from(chain.len().saturating_sub(1)).unwrap_or(u32::MAX),
            chain,
        }
    }
}

/// Loads the task of every record and its delegation chain. A task that
/// is missing from the store, or whose parent is, is left out, and its
/// steps are reported as not replayable.
async fn load_tasks(
    store: &dyn Store,
    records: &[AuditRecord],
) -> anyhow::Result<HashMap<String, TaskInfo>> {
    let mut cache: HashMap<String, Option<TaskRecord>> = HashMap::new();
    let ids: BTreeSet<&str> = records
        .iter()
        .map(|record| record.record.task_id.as_str())
        .collect();
    let mut tasks = HashMap::new();
    'tasks: for id in ids {
        let Some(task) = fetch_task(store, &mut cache, id).await? else {
            continue;
        };
        let mut agents = vec![task.agent.clone()];
        let mut parent = task.parent_task_id.clone();
        while let Some(parent_id) = parent {
            if agents.len() > MAX_HOPS {
                anyhow::bail!(
                    "task {id} has more than {MAX_HOPS} ancestors; the parent links in the store form a cycle"
                );
            }
            let Some(parent_task) = fetch_task(store, &mut cache, &parent_id).await? else {
                continue 'tasks;
            };
            agents.push(parent_task.agent.clone());
            parent = parent_task.parent_task_id.clone();
        }
        agents.reverse();
        tasks.insert(
            id.to_owned(),
            TaskInfo {
                user: task.user.clone(),
                intent: task.intent.clone(),
                tools: task.tools.clone(),
                chain: agents,
            },
        );
    }
    Ok(tasks)
}

async fn fetch_task(
    store: &dyn Store,
    cache: &mut HashMap<String, Option<TaskRecord>>,
    id: &str,
) -> anyhow::Result<Option<TaskRecord>> {
    if let Some(task) = cache.get(id) {
        return Ok(task.clone());
    }
    let task = store.task(id).await?;
    cache.insert(id.to_owned(), task.clone());
    Ok(task)
}

/// The candidate engine and what memory updates need.
struct Replayer {
    engine: PolicyEngine,
    routes: HashMap<String, RouteDef>,
}

impl Replayer {
    /// Replays one trace's records, which are in seq order.
    fn replay_trace(
        &self,
        records: &[AuditRecord],
        tasks: &HashMap<String, TaskInfo>,
        report: &mut Report,
    ) {
        // A held step ran after an approval when a result record sits
        // under its decision.
        let answered: HashSet<&str> = records
            .iter()
            .filter(|record| matches!(record.record.kind.as_str(), "tool.result" | "http.result"))
            .filter_map(|record| record.record.parent_span_id.as_deref())
            .collect();
        let mut counters: BTreeMap<String, i64> = BTreeMap::new();
        for record in records {
            let step = &record.record;
            let outcome = step.detail.get("outcome").and_then(Value::as_str);
            match step.kind.as_str() {
                kind if DECISION_KINDS.contains(&kind) => {
                    let memory = TaskMemory::from_counters(&counters);
                    self.compare(record, tasks, &memory, report);
                    let let_through = match step.decision {
                        Some(Decision::Allow) => true,
                        Some(Decision::Hold) => answered.contains(step.span_id.as_str()),
                        _ => false,
                    };
                    if let_through {
                        add(&mut counters, self.call_deltas(step));
                    }
                }
                "tool.result" if outcome == Some("result") => {
                    let labels = step
                        .target
                        .as_deref()
                        .and_then(|tool| self.engine.tool(tool))
                        .map(warden_policy::ToolDef::effective_labels)
                        .unwrap_or_default();
                    add(&mut counters, TaskMemory::label_deltas(&labels));
                }
                // The gateway adds a route's labels once the response
                // arrived, whatever its status.
                "http.result" if matches!(outcome, Some("result" | "error")) => {
                    let labels = self
                        .route_of(step)
                        .map(|route| route.labels.clone())
                        .unwrap_or_default();
                    add(&mut counters, TaskMemory::label_deltas(&labels));
                }
                _ => {}
            }
        }
    }

    /// Returns the memory counter additions of a step let through.
    fn call_deltas(&self, step: &NewAuditRecord) -> Vec<(String, i64)> {
        match step.kind.as_str() {
            "tool.decision" => {
                let Some(tool) = step
                    .target
                    .as_deref()
                    .and_then(|tool| self.engine.tool(tool))
                else {
                    return Vec::new();
                };
                // NOTE: redacted arguments have no values to sum, so later
                // steps see lower sums than the gateway saw. Redaction is
                // set for the whole gateway, so their arguments are usually
                // redacted too, and then they are not replayed.
                let arguments = step.detail.get("arguments").unwrap_or(&Value::Null);
                let sums = warden_gateway::memory::sums_of(&tool.sum_arguments, arguments);
                TaskMemory::call_deltas(&tool.effective_classes(), &sums)
            }
            "http.decision" => match self.route_of(step) {
                Some(route) => TaskMemory::call_deltas(&route.classes, &[]),
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn route_of(&self, step: &NewAuditRecord) -> Option<&RouteDef> {
        let name = step.target.as_deref()?.strip_prefix("route:")?;
        self.routes.get(name)
    }

    /// Re-decides one decision record and adds the result to the report.
    fn compare(
        &self,
        record: &AuditRecord,
        tasks: &HashMap<String, TaskInfo>,
        memory: &TaskMemory,
        report: &mut Report,
    ) {
        let step = &record.record;
        let Some(recorded) = recorded_verdict(step) else {
            return;
        };
        let mut entry = Entry {
            seq: record.seq,
            time_us: step.time_us,
            trace_id: step.trace_id.clone(),
            task_id: step.task_id.clone(),
            agent: step.agent.clone(),
            kind: step.kind.clone(),
            target: step.target.clone().unwrap_or_default(),
            built_in: recorded.is_built_in(),
            recorded,
            result: EntryResult::NotReplayable(String::new()),
        };
        let candidate = match self.candidate(step, tasks, memory, &entry.recorded) {
            Ok(candidate) => candidate,
            Err(reason) => {
                report.not_replayable += 1;
                entry.result = EntryResult::NotReplayable(reason);
                report.entries.push(entry);
                return;
            }
        };
        report.replayed += 1;
        entry.built_in = entry.built_in || candidate.is_built_in();
        if entry.built_in {
            report.built_in += 1;
        }
        if candidate.decision != entry.recorded.decision {
            *report
                .transitions
                .entry((
                    entry.recorded.decision.as_str(),
                    candidate.decision.as_str(),
                ))
                .or_default() += 1;
            entry.result = EntryResult::Changed(candidate);
            report.entries.push(entry);
        } else if candidate.policy_set() != entry.recorded.policy_set() {
            report.other_policies += 1;
            entry.result = EntryResult::OtherPolicies(candidate);
            report.entries.push(entry);
        }
    }

    /// Decides a recorded step with the candidate policies, as the gateway
    /// would have. `Err` explains why the step cannot be rebuilt.
    fn candidate(
        &self,
        step: &NewAuditRecord,
        tasks: &HashMap<String, TaskInfo>,
        memory: &TaskMemory,
        recorded: &Verdict,
    ) -> Result<Verdict, String> {
        let task = tasks
            .get(&step.task_id)
            .ok_or_else(|| {
                format!(
                    "task {} or one of its parents is not in the store",
                    step.task_id
                )
            })?
            .context(&step.task_id, &step.agent);
        let target = step
            .target
            .as_deref()
            .ok_or_else(|| "the record names no target".to_owned())?;
        let detail = &step.detail;
        match step.kind.as_str() {
            "tool.decision" => {
                if recorded.is_decided_before_policies(false) {
                    return Ok(recorded.clone());
                }
                if !warden_gateway::scope::allows(&task.tools, target) {
                    return Ok(scope_denial(target, &task.tools).into());
                }
                let arguments = recorded_arguments(detail)?;
                let model_requested = detail
                    .get("model_requested")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let outcome = self.engine.decide(&StepRequest {
                    task: &task,
                    step: Step::CallTool {
                        tool: target,
                        arguments: &arguments,
                        model_requested,
                        memory,
                    },
                });
                Ok(outcome.into())
            }
            "http.decision" => {
                if recorded.is_decided_before_policies(false) {
                    return Ok(recorded.clone());
                }
                self.decide_http(&task, target, detail, memory)
            }
            _ => {
                // Every built-in denial of a model call (model list,
                // budgets, unreadable usage) comes before the policies.
                if recorded.is_decided_before_policies(true) {
                    return Ok(recorded.clone());
                }
                self.decide_model(&task, detail)
            }
        }
    }

    /// Rebuilds and decides an `http.decision` record.
    ///
    /// NOTE: the record keeps neither the request's `Content-Type` nor
    /// whether a body that is not JSON was sent, so a recorded JSON body
    /// is replayed as `application/json` and no JSON body as no body.
    fn decide_http(
        &self,
        task: &TaskContext,
        target: &str,
        detail: &Value,
        memory: &TaskMemory,
    ) -> Result<Verdict, String> {
        let route = target
            .strip_prefix("route:")
            .ok_or_else(|| format!("target {target:?} is not route:NAME"))?;
        let text = |key: &str| {
            detail
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("the record has no {key}"))
        };

        let method = text("method")?;
        let path = text("path")?;
        let query: Vec<(String, String)> = match detail.get("query") {
            None | Some(Value::Null) => Vec::new(),
            Some(query) => serde_json::from_value(query.clone()).map_err(|error| {
                format!("the record's query is not [name, value] pairs: {error}")
            })?,
        };

        let url = reqwest::Url::parse(&text("url")?)
            .map_err(|error| format!("the record's url is invalid: {error}"))?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let body = recorded_arguments(detail)?;
        let has_body = !body.is_null();
        let content_type = if has_body { "application/json" } else { "" };

        let outcome = self.engine.decide(&StepRequest {
            task,
            step: Step::HttpRequest {
                route,
                method: &method,
                path: &path,
                query: &query,
                body: &body,
                has_body,
                content_type,
                destination: Destination {
                    scheme: url.scheme(),
                    host: &host,
                    port: url.port_or_known_default().unwrap_or(0),
                },
                memory,
            },
        });
        Ok(outcome.into())
    }

    /// Rebuilds and decides a `model.decision` record.
    fn decide_model(&self, task: &TaskContext, detail: &Value) -> Result<Verdict, String> {
        let text = |key: &str| {
            detail
                .get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("the record has no {key}"))
        };
        let provider = text("provider")?;
        let model = text("model")?;
        let tools: Vec<String> = detail
            .get("tools")
            .and_then(|tools| serde_json::from_value(tools.clone()).ok())
            .unwrap_or_default();
        let usage_before = detail.get("usage_before");
        let count = |key: &str| {
            usage_before
                .and_then(|usage| usage.get(key))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let outcome = self.engine.decide(&StepRequest {
            task,
            step: Step::CallModel {
                provider,
                model,
                stream: detail
                    .get("stream")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                max_tokens: detail
                    .get("max_tokens")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                tools: &tools,
                usage: ModelUsage {
                    calls: count("calls"),
                    input_tokens: count("input_tokens"),
                    output_tokens: count("output_tokens"),
                },
            },
        });
        Ok(model_outcome(outcome).into())
    }
}

/// Returns a record's `arguments`, or why they cannot be replayed.
fn recorded_arguments(detail: &Value) -> Result<Value, String> {
    match detail.get("arguments") {
        Some(Value::String(text)) if text == REDACTED => Err("arguments redacted".to_owned()),
        Some(arguments) => Ok(arguments.clone()),
        None => Ok(Value::Null),
    }
}

/// Returns the decision the policies made on a recorded step: in shadow
/// mode the one they would have enforced, otherwise the recorded one.
fn recorded_verdict(step: &NewAuditRecord) -> Option<Verdict> {
    if let Some(would) = step.detail.pointer("/shadow/would") {
        let decision = serde_json::from_value(would.get("decision")?.clone()).ok()?;
        return Some(Verdict {
            decision,
            policy_ids: serde_json::from_value(would.get("policy_ids")?.clone()).ok()?,
            reason: would
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        });
    }
    Some(Verdict {
        decision: step.decision?,
        policy_ids: step.policy_ids.clone(),
        reason: step.reason.clone().unwrap_or_default(),
    })
}

fn add(counters: &mut BTreeMap<String, i64>, deltas: Vec<(String, i64)>) {
    for (name, delta) in deltas {
        let value = counters.entry(name).or_insert(0);
        *value = value.saturating_add(delta);
    }
}

/// A decision with its deciding policies and reason.
#[derive(Clone, Debug)]
struct Verdict {
    decision: Decision,
    policy_ids: Vec<String>,
    reason: String,
}

impl From<Outcome> for Verdict {
    fn from(outcome: Outcome) -> Verdict {
        Verdict {
            decision: outcome.decision,
            policy_ids: outcome.policy_ids,
            reason: outcome.reason,
        }
    }
}

impl Verdict {
    fn is_built_in(&self) -> bool {
        self.policy_ids.iter().any(|id| id.starts_with("warden:"))
    }

    /// Returns true when a built-in check of the gateway decided the step
    /// before the policy engine ran.
    ///
    /// For tool calls and HTTP requests, the engine's own `warden:`
    /// denials (unknown tool or route, arguments that do not fit, a request
    /// that cannot be built) are decided again. With `model`, every
    /// `warden:` id counts as decided before the engine.
    fn is_decided_before_policies(&self, model: bool) -> bool {
        const ENGINE_IDS: [&str; 4] = [
            ARGUMENTS_POLICY_ID,
            UNKNOWN_TOOL_POLICY_ID,
            REQUEST_POLICY_ID,
            UNKNOWN_ROUTE_POLICY_ID,
        ];
        self.policy_ids
            .iter()
            .any(|id| id.starts_with("warden:") && (model || !ENGINE_IDS.contains(&id.as_str())))
    }

    fn policy_set(&self) -> BTreeSet<&str> {
        self.policy_ids.iter().map(String::as_str).collect()
    }

    fn describe(&self) -> String {
        format!("{} by [{}]", self.decision, self.policy_ids.join(", "))
    }

    fn to_json(&self) -> Value {
        json!({
            "decision": self.decision.as_str(),
            "policy_ids": self.policy_ids,
            "reason": self.reason,
        })
    }
}

/// The replay result of one recorded step.
enum EntryResult {
    /// The candidate decides otherwise.
    Changed(Verdict),
    /// The candidate decides the same by other policies.
    OtherPolicies(Verdict),
    /// The step cannot be rebuilt, for the reason given.
    NotReplayable(String),
}

/// One reported step.
struct Entry {
    seq: i64,
    time_us: i64,
    trace_id: String,
    task_id: String,
    agent: String,
    kind: String,
    target: String,
    built_in: bool,
    recorded: Verdict,
    result: EntryResult,
}

impl Entry {
    fn time(&self) -> String {
        warden_gateway::auth::format_time(self.time_us.div_euclid(1_000_000))
    }

    fn render(&self) -> String {
        let mut text = format!(
            "seq {}  {}  {} {}{}\n  task {}  agent {}\n",
            self.seq,
            self.time(),
            self.kind,
            self.target,
            if self.built_in {
                "  (built-in check)"
            } else {
                ""
            },
            self.task_id,
            self.agent
        );
        match &self.result {
            EntryResult::Changed(candidate) | EntryResult::OtherPolicies(candidate) => {
                text.push_str(&format!(
                    "  recorded:  {}\n  candidate: {}: {}\n",
                    self.recorded.describe(),
                    candidate.describe(),
                    candidate.reason
                ));
            }
            EntryResult::NotReplayable(reason) => {
                text.push_str(&format!(
                    "  recorded:  {}\n  not replayable ({reason})\n",
                    self.recorded.describe()
                ));
            }
        }
        text
    }

    fn to_json(&self) -> Value {
        let (change, candidate, reason) = match &self.result {
            EntryResult::Changed(candidate) => ("decision", candidate.to_json(), Value::Null),
            EntryResult::OtherPolicies(candidate) => ("policies", candidate.to_json(), Value::Null),
            EntryResult::NotReplayable(reason) => {
                ("not_replayable", Value::Null, Value::String(reason.clone()))
            }
        };
        json!({
            "seq": self.seq,
            "time": self.time(),
            "trace_id": self.trace_id,
            "task_id": self.task_id,
            "agent": self.agent,
            "kind": self.kind,
            "target": self.target,
            "built_in": self.built_in,
            "change": change,
            "recorded": self.recorded.to_json(),
            "candidate": candidate,
            "not_replayable": reason,
        })
    }
}

/// The result of a replay.
#[derive(Default)]
struct Report {
    /// The candidate policy source.
    candidate: String,
    traces: usize,
    /// Steps decided again, built-in ones included.
    replayed: usize,
    /// Changed decisions by (recorded, candidate) decision.
    transitions: BTreeMap<(&'static str, &'static str), usize>,
    /// Steps with the same decision by other policies.
    other_policies: usize,
    /// Replayed steps that a built-in check decided.
    built_in: usize,
    not_replayable: usize,
    /// Reported steps, in seq order once the replay is done.
    entries: Vec<Entry>,
}

impl Report {
    fn changed(&self) -> usize {
        self.transitions.values().sum()
    }

    fn transitions_text(&self) -> Vec<String> {
        self.transitions
            .iter()
            .map(|((from, to), count)| format!("{from}->{to}: {count}"))
            .collect()
    }

    fn render(&self) -> String {
        let mut text = String::new();
        for entry in &self.entries {
            text.push_str(&entry.render());
        }
        let transitions = self.transitions_text();
        let transitions = if transitions.is_empty() {
            String::new()
        } else {
            format!(" ({})", transitions.join(", "))
        };
        text.push_str(&format!(
            "{} steps replayed from {} {} against {}: {} changed{transitions}, {} same decision by other policies, {} not replayable, {} built-in\n",
            self.replayed,
            self.traces,
            if self.traces == 1 { "trace" } else { "traces" },
            self.candidate,
            self.changed(),
            self.other_policies,
            self.not_replayable,
            self.built_in
        ));
        text
    }

    fn to_json(&self) -> Value {
        let transitions: serde_json::Map<String, Value> = self
            .transitions
            .iter()
            .map(|((from, to), count)| (format!("{from}->{to}"), json!(count)))
            .collect();
        json!({
            "candidate": self.candidate,
            "traces": self.traces,
            "replayed": self.replayed,
            "changed": self.changed(),
            "transitions": transitions,
            "other_policies": self.other_policies,
            "not_replayable": self.not_replayable,
            "built_in": self.built_in,
            "records": self.entries.iter().map(Entry::to_json).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(ids: &[&str]) -> Verdict {
        Verdict {
            decision: Decision::Deny,
            policy_ids: ids.iter().map(|id| (*id).to_owned()).collect(),
            reason: String::new(),
        }
    }

    #[test]
    fn scope_denial_is_decided_before_policies() {
        assert!(verdict(&["warden:task-scope"]).is_decided_before_policies(false));
    }

    #[test]
    fn engine_denial_is_decided_again() {
        assert!(!verdict(&[ARGUMENTS_POLICY_ID]).is_decided_before_policies(false));
        assert!(verdict(&[ARGUMENTS_POLICY_ID]).is_built_in());
    }

    #[test]
    fn model_built_in_is_decided_before_policies() {
        assert!(verdict(&[REQUEST_POLICY_ID]).is_decided_before_policies(true));
    }

    #[test]
    fn recorded_arguments_rejects_redacted() {
        let detail = json!({ "arguments": REDACTED });
        assert_eq!(
            recorded_arguments(&detail).err().as_deref(),
            Some("arguments redacted")
        );
    }

    #[test]
    fn recorded_verdict_prefers_shadow_would() {
        let step = NewAuditRecord {
            time_us: 0,
            trace_id: "t".to_owned(),
            span_id: "s".to_owned(),
            parent_span_id: None,
            task_id: "task".to_owned(),
            agent: "spiffe://a.test/agent/x".to_owned(),
            user: "u".to_owned(),
            kind: "tool.decision".to_owned(),
            target: Some("a__b".to_owned()),
            decision: Some(Decision::Allow),
            policy_ids: Vec::new(),
            reason: Some("shadow mode lets this through".to_owned()),
            detail: json!({ "shadow": { "would": { "decision": "deny", "policy_ids": ["p"], "reason": "r" } } }),
        };
        let recorded = recorded_verdict(&step).expect("a verdict");
        assert_eq!(recorded.decision, Decision::Deny);
        assert_eq!(recorded.policy_ids, vec!["p".to_owned()]);
    }

    #[test]
    fn add_saturates() {
        let mut counters = BTreeMap::from([("memory.calls".to_owned(), i64::MAX)]);
        add(&mut counters, vec![("memory.calls".to_owned(), 1)]);
        assert_eq!(counters.get("memory.calls"), Some(&i64::MAX));
    }
}
