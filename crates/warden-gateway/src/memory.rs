//! Task memory and shadow decisions.
//!
//! A task tree's memory (labels of data read, calls per class, running
//! sums) lives in the store's counters of its root task, so delegated
//! tasks and other replicas see the same values. It is read before each
//! tool call or HTTP request is decided and updated when the step is let
//! through (calls, sums) and when its output arrives (labels).
//!
//! Memory is kept while the loaded policies read it (any policy that
//! mentions `memory`): a set that starts reading it after a reload sees
//! what happened from then on.
//!
//! Shadow decisions let a policy change be tried on live traffic: with a
//! `[policy] shadow_dir`, every step is also decided by that set and the
//! result recorded beside the real one; with `[policy] mode = "shadow"`,
//! policy refusals are recorded as what would have happened and the step
//! goes through.

use serde_json::{Value, json};
use warden_config::PolicyMode;
use warden_core::Decision;
use warden_identity::TaskClaims;
use warden_policy::{Outcome, StepRequest, TaskMemory};

use crate::state::AppState;

/// Policy id of a step that shadow mode let through against the policies.
pub const SHADOW_MODE_POLICY_ID: &str = "warden:shadow-mode";

/// Policy id of a denial because the task's memory could not be read.
pub const MEMORY_POLICY_ID: &str = "warden:store-unavailable";

/// Returns true when the loaded policies (enforced or shadow) read task
/// memory; Warden keeps it only then, so deployments whose policies never
/// read it pay nothing for it.
pub fn in_use(state: &AppState) -> bool {
    state.engine().uses_memory() || state.shadow_engine().is_some_and(|e| e.uses_memory())
}

/// Reads the memory of the task tree of `claims`; `Err` carries a denial.
pub async fn load(state: &AppState, claims: &TaskClaims) -> Result<TaskMemory, Outcome> {
    if !in_use(state) {
        return Ok(TaskMemory::default());
    }
    match state.store.counters(claims.root_task()).await {
        Ok(counters) => Ok(TaskMemory::from_counters(&counters)),
        Err(error) => {
            tracing::error!(%error, task.id = %claims.task_id, "reading task memory failed; denying");
            Err(Outcome {
                decision: Decision::Deny,
                policy_ids: vec![MEMORY_POLICY_ID.to_owned()],
                reason: format!(
                    "what this task has done so far cannot be read ({error}); retry shortly"
                ),
                errors: Vec::new(),
                arguments: None,
            })
        }
    }
}

/// Counts one step let through: its classes and summed arguments.
///
/// Fails when the store does not take the update; the caller then refuses
/// the step, since a step missing from the memory would slip past the
/// limits that later decisions read.
pub async fn record_call(
    state: &AppState,
    claims: &TaskClaims,
    classes: &[String],
    sums: &[(String, i64)],
) -> Result<(), String> {
    let deltas = TaskMemory::call_deltas(classes, sums);
    add(state, claims, deltas).await
}

/// Adds the labels of an output the task received. Fails when the store
/// does not take them; the caller then withholds the output.
pub async fn record_labels(
    state: &AppState,
    claims: &TaskClaims,
    labels: &[String],
) -> Result<(), String> {
    if labels.is_empty() {
        return Ok(());
    }
    add(state, claims, TaskMemory::label_deltas(labels)).await
}

async fn add(
    state: &AppState,
    claims: &TaskClaims,
    deltas: Vec<(String, i64)>,
) -> Result<(), String> {
    if !in_use(state) {
        return Ok(());
    }
    let deltas: Vec<(&str, i64)> = deltas
        .iter()
        .map(|(name, value)| (name.as_str(), *value))
        .collect();
    state
        .store
        .add_counters(claims.root_task(), &deltas)
        .await
        .map(|_| ())
        .map_err(|error| {
            tracing::error!(%error, task.id = %claims.task_id, "updating task memory failed");
            format!("the task's memory cannot be updated ({error}); retry shortly")
        })
}

/// Returns the summed arguments of a call in 1/10,000 units.
pub fn sums_of(sum_arguments: &[String], arguments: &Value) -> Vec<(String, i64)> {
    sum_arguments
        .iter()
        .filter_map(|name| {
            let units = warden_policy::sum_units(arguments.get(name)?)?;
            Some((name.clone(), units))
        })
        .collect()
}

/// A decision together with the result of shadow evaluation.
pub struct Decided {
    /// The decision that takes effect.
    pub outcome: Outcome,
    /// For the record's detail: the shadow set's decision and, in shadow
    /// mode, what the enforced set would have done.
    pub shadow: Value,
}

/// Decides a step with the enforced policies, the shadow set and the
/// gateway's mode.
pub fn decide(state: &AppState, request: &StepRequest<'_>) -> Decided {
    let mut outcome = state.engine().decide(request);
    let mut shadow = serde_json::Map::new();
    if let Some(engine) = state.shadow_engine() {
        let candidate = engine.decide(request);
        shadow.insert(
            "candidate".into(),
            json!({
                "decision": candidate.decision.as_str(),
                "policy_ids": candidate.policy_ids,
                "reason": candidate.reason,
            }),
        );
    }
    let built_in = outcome
        .policy_ids
        .iter()
        .any(|id| id.starts_with("warden:"));
    if state.config.policy.mode == PolicyMode::Shadow
        && outcome.decision != Decision::Allow
        && !built_in
    {
        shadow.insert(
            "would".into(),
            json!({
                "decision": outcome.decision.as_str(),
                "policy_ids": outcome.policy_ids,
                "reason": outcome.reason,
            }),
        );
        outcome.reason = format!(
            "shadow mode lets this through; the policies would {}: {}",
            outcome.decision, outcome.reason
        );
        outcome.decision = Decision::Allow;
        // The deciding ids are in `shadow.would`; the allow is the mode's.
        outcome.policy_ids = vec![SHADOW_MODE_POLICY_ID.to_owned()];
    }
    Decided {
        outcome,
        shadow: if shadow.is_empty() {
            Value::Null
        } else {
            Value::Object(shadow)
        },
    }
}
