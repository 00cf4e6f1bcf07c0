//! `warden policy test`: declarative policy test cases in TOML files.
//!
//! Each `*.toml` file of the test directory contains `[[case]]` tables. A
//! case is one step (a tool call, an HTTP route request, a model call, a
//! tool listing, a task start or a delegation) with the task and the task
//! memory it runs in, and the decision it expects. Cases are decided as the
//! gateway decides steps: the task's tool scope first, then the Cedar
//! policies, and a hold on a model call becomes a denial. The tools come
//! from the file's `[[tool]]` tables or, when it has none, from the
//! configured upstreams. The routes come from its `[[route]]` tables or the
//! configuration's `[http.NAME]` sections.
//!
//! `warden policy replay` reuses the gateway's checks around Cedar from
//! here.
//!
//! The `cases` module reads and checks the test files.

mod cases;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use warden_config::Config;
use warden_core::Decision;
use warden_gateway::PolicySource;
use warden_gateway::policy_source::{BUNDLED_PACK, route_defs};
use warden_policy::{
    Destination, EngineOptions, Outcome, PolicyEngine, PolicyLoadError, RouteDef, Step,
    StepRequest, ToolDef,
};

use cases::{Case, CaseStep, Invalid, KeyError, TestFile, load_files};

use crate::defaults::Effective;

/// Exit status when a test file is invalid.
const INVALID_EXIT: u8 = 2;

/// Policy id of the gateway's task scope check, which runs before Cedar.
pub const TASK_SCOPE_POLICY_ID: &str = "warden:task-scope";

/// `warden policy test DIR`: runs every case and prints one line per case
/// and a summary. Exits 1 when a case fails and 2 when a test file is
/// invalid.
pub async fn run(
    config: &Effective,
    dir: &Path,
    policies: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let files = match load_files(dir) {
        Ok(files) => files,
        Err(errors) => return Ok(report_invalid(&errors)),
    };
    let source = match policies {
        Some(dir) => PolicySource::Dir(dir),
        None => config.policy_source.clone(),
    };
    let upstream_tools = if files.iter().any(|file| file.tools.is_empty()) {
        crate::inspect::upstream_tools(&config.config).await?
    } else {
        Vec::new()
    };
    let config_routes = config_routes(&config.config)?;

    let mut suites = Vec::with_capacity(files.len());
    let mut invalid = Vec::new();
    for file in files {
        let tools = if file.tools.is_empty() {
            upstream_tools.clone()
        } else {
            file.tools.clone()
        };
        let routes = if file.routes.is_empty() {
            config_routes.clone()
        } else {
            file.routes.clone()
        };
        let environment = file
            .environment
            .clone()
            .unwrap_or_else(|| config.config.policy.environment.clone());
        let definitions = routes
            .iter()
            .map(|route| route.definition.clone())
            .collect();
        let engine = load_engine(&source, &tools, definitions, environment).with_context(|| {
            format!(
                "the policies of {} do not load against the tools and routes of {}",
                source.describe(),
                file.path.display()
            )
        })?;
        invalid.extend(unknown_targets(&file, &engine, &routes));
        suites.push((file, engine, routes));
    }
    if !invalid.is_empty() {
        return Ok(report_invalid(&invalid));
    }

    let (mut passed, mut failed) = (0usize, 0usize);
    for (file, engine, routes) in &suites {
        for case in &file.cases {
            let outcome = decide_case(engine, routes, case);
            match failure(case, &outcome) {
                None => {
                    passed += 1;
                    println!("ok   {}", case.name);
                }
                Some(message) => {
                    failed += 1;
                    println!("FAIL {}: {message}", case.name);
                }
            }
        }
    }
    println!(
        "{} cases: {passed} passed, {failed} failed ({})",
        passed + failed,
        source.describe()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Builds an engine from `source` with the given tools and routes, which
/// may differ from the configuration's.
pub fn load_engine(
    source: &PolicySource,
    tools: &[ToolDef],
    routes: Vec<RouteDef>,
    environment: String,
) -> Result<PolicyEngine, PolicyLoadError> {
    let options = EngineOptions {
        environment,
        routes,
    };
    match source {
        PolicySource::Dir(dir) => PolicyEngine::load_dir(dir, tools, options),
        PolicySource::Bundled => {
            let sources: Vec<(String, String)> = BUNDLED_PACK
                .iter()
                .map(|(name, text)| (format!("bundled/{name}"), (*text).to_owned()))
                .collect();
            PolicyEngine::from_sources(&sources, tools, options)
        }
    }
}

/// Returns the denial that the gateway gives a tool outside the task's
/// tool scope before any policy runs.
pub fn scope_denial(tool: &str, scope: &[String]) -> Outcome {
    Outcome {
        decision: Decision::Deny,
        policy_ids: vec![TASK_SCOPE_POLICY_ID.to_owned()],
        reason: format!(
            "{tool} is outside this task's tool scope ({}); start a task whose tools include it",
            scope.join(", ")
        ),
        errors: Vec::new(),
        arguments: None,
    }
}

/// Turns a hold on a model call into a denial, as the gateway does,
/// because a model call cannot wait for a human approval.
pub fn model_outcome(mut outcome: Outcome) -> Outcome {
    if outcome.decision == Decision::Hold {
        outcome.decision = Decision::Deny;
        outcome.reason = format!(
            "{}; model calls cannot wait for a human approval, so a hold denies them",
            outcome.reason
        );
    }
    outcome
}

/// Returns the trust domain of a SPIFFE ID, or an empty string.
pub fn trust_domain(agent: &str) -> String {
    agent
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned()
}

/// Returns the configured `[http.NAME]` routes with their destinations.
pub fn config_routes(config: &Config) -> anyhow::Result<Vec<TestRoute>> {
    let definitions = route_defs(config).map_err(anyhow::Error::msg)?;
    Ok(definitions
        .into_iter()
        .map(|definition| {
            let url = config
                .http
                .get(&definition.name)
                .and_then(|route| reqwest::Url::parse(&route.url).ok());
            let scheme = url.as_ref().map_or("https", |url| url.scheme()).to_owned();
            let port = url
                .as_ref()
                .and_then(reqwest::Url::port_or_known_default)
                .unwrap_or(443);
            TestRoute {
                definition,
                scheme,
                port,
            }
        })
        .collect())
}

/// An HTTP route with the scheme and port of its base URL.
#[derive(Clone, Debug)]
pub struct TestRoute {
    /// The route's definition for the policy engine.
    pub definition: RouteDef,
    /// `http` or `https`.
    pub scheme: String,
    /// Port of the base URL, explicit or the scheme's default.
    pub port: u16,
}

/// Returns the cases that name a tool or route that the file's engine does
/// not know: the gateway rejects such a step before deciding it.
fn unknown_targets(file: &TestFile, engine: &PolicyEngine, routes: &[TestRoute]) -> Vec<Invalid> {
    let mut invalid = Vec::new();
    for case in &file.cases {
        let (key, known, what) = match &case.step {
            CaseStep::Tool { tool, .. } => ("tool", engine.tool(tool).is_some(), tool),
            CaseStep::ListTool { tool } => ("list_tool", engine.tool(tool).is_some(), tool),
            CaseStep::Route { route, .. } => (
                "route",
                routes.iter().any(|known| &known.definition.name == route),
                route,
            ),
            _ => continue,
        };
        if known {
            continue;
        }
        let hint = if key == "route" {
            "define it in a [[route]] table or an [http.NAME] section of the configuration"
        } else if file.tools.is_empty() {
            "the configured upstreams do not list it; add a [[tool]] table or fix the name (server__tool)"
        } else {
            "no [[tool]] table of this file defines it; tools are named server__tool"
        };
        invalid.push(
            KeyError::new(key, format!("unknown {key} {what:?}; {hint}"))
                .within(&file.path, case_label(case)),
        );
    }
    invalid
}

fn case_label(case: &Case) -> String {
    if case.name.is_empty() {
        format!("[[case]] #{}", case.index)
    } else {
        format!("case {:?}", case.name)
    }
}

fn report_invalid(errors: &[Invalid]) -> ExitCode {
    for error in errors {
        eprintln!("invalid test file: {error}");
    }
    ExitCode::from(INVALID_EXIT)
}

/// Decides a case as the gateway decides the same step.
fn decide_case(engine: &PolicyEngine, routes: &[TestRoute], case: &Case) -> Outcome {
    let task = &case.task;
    let step = match &case.step {
        CaseStep::Tool { tool, arguments } => {
            if !warden_gateway::scope::allows(&task.tools, tool) {
                return scope_denial(tool, &task.tools);
            }
            Step::CallTool {
                tool,
                arguments,
                model_requested: case.model_requested,
                memory: &case.memory,
            }
        }
        CaseStep::ListTool { tool } => {
            if !warden_gateway::scope::allows(&task.tools, tool) {
                return scope_denial(tool, &task.tools);
            }
            Step::ListTool { tool }
        }
        CaseStep::Route {
            route,
            method,
            path,
            query,
            body,
            has_body,
            content_type,
            destination,
        } => {
            let known = routes.iter().find(|known| &known.definition.name == route);
            let destination = match (destination, known) {
                (Some((scheme, host, port)), _) => Destination {
                    scheme,
                    host,
                    port: *port,
                },
                (None, Some(known)) => Destination {
                    scheme: &known.scheme,
                    host: &known.definition.host,
                    port: known.port,
                },
                (None, None) => Destination {
                    scheme: "https",
                    host: "",
                    port: 443,
                },
            };
            Step::HttpRequest {
                route,
                method,
                path,
                query,
                body,
                has_body: *has_body,
                content_type,
                destination,
                memory: &case.memory,
            }
        }
        CaseStep::Model {
            provider,
            model,
            stream,
            max_tokens,
            tools,
            usage,
        } => {
            let outcome = engine.decide(&StepRequest {
                task,
                step: Step::CallModel {
                    provider,
                    model,
                    stream: *stream,
                    max_tokens: *max_tokens,
                    tools,
                    usage: *usage,
                },
            });
            return model_outcome(outcome);
        }
        CaseStep::StartTask { ttl_seconds } => Step::StartTask {
            ttl_seconds: *ttl_seconds,
        },
        CaseStep::Delegate { to, tools } => Step::Delegate {
            to_agent: to,
            tools,
            depth: task.depth.saturating_add(1),
        },
    };
    engine.decide(&StepRequest { task, step })
}

/// Returns why `outcome` fails the case, or `None` when it passes.
fn failure(case: &Case, outcome: &Outcome) -> Option<String> {
    let sorted = |ids: &[String]| ids.iter().cloned().collect::<BTreeSet<String>>();
    let ids_match = case
        .policy_ids
        .as_ref()
        .is_none_or(|expected| sorted(expected) == sorted(&outcome.policy_ids));
    if outcome.decision == case.expect && ids_match {
        return None;
    }
    let expected = match &case.policy_ids {
        Some(ids) => format!("{} by [{}]", case.expect, ids.join(", ")),
        None => case.expect.to_string(),
    };
    let mut message = format!(
        "expected {expected}, got {} by [{}]: {}",
        outcome.decision,
        outcome.policy_ids.join(", "),
        outcome.reason
    );
    if !outcome.errors.is_empty() {
        message.push_str(&format!(" (errors: {})", outcome.errors.join("; ")));
    }
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_outcome_turns_hold_into_deny() {
        let outcome = model_outcome(Outcome {
            decision: Decision::Hold,
            policy_ids: vec!["p".to_owned()],
            reason: "needs a person".to_owned(),
            errors: Vec::new(),
            arguments: None,
        });
        assert_eq!(outcome.decision, Decision::Deny);
        assert_eq!(outcome.policy_ids, vec!["p".to_owned()]);
    }
}
