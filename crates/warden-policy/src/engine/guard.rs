//! Path guards: skipping policies that cannot apply to a call's paths.
//!
//! Cedar evaluates every policy it is given, at about a microsecond each,
//! so a tool with dozens of directory rules would spend most of a decision
//! on rules about other directories. A policy whose first `when` condition
//! starts with `context.arguments.NAME in Warden::Path::"DIR"` (or a `||`
//! of such tests on one argument) can only match a call whose `NAME` lies in
//! one of those directories. When the argument is present and lies in none
//! of them, Cedar would find that leading test false and skip the rest of
//! the condition without evaluating it, so leaving the policy out changes
//! neither the decision nor the errors. When the argument is absent, the
//! policy stays in, and Cedar reports the missing attribute as it would.
//!
//! The policy sets for each combination of satisfied guards are built once
//! and cached, because a tool meets few distinct directory combinations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cedar_policy::{Policy, PolicySet};
use serde_json::Value;

use crate::schema::NAMESPACE;

/// Most cached policy sets per tool before the cache is emptied.
const MAX_CACHED_SETS: usize = 1024;

/// The leading path test of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathGuard {
    /// Top-level argument name.
    pub(crate) argument: String,
    /// Normalised absolute directories; the policy can match only inside one.
    pub(crate) directories: Vec<String>,
}

impl PathGuard {
    /// Returns the guard of `policy`, if it has one.
    pub(crate) fn of(policy: &Policy) -> Option<PathGuard> {
        let json = policy.to_json().ok()?;
        let first = json.get("conditions")?.as_array()?.first()?;
        if first.get("kind")?.as_str()? != "when" {
            return None;
        }
        let mut conjuncts = Vec::new();
        collect_conjuncts(first.get("body")?, &mut conjuncts);
        // Presence and type tests that cannot raise an error may come
        // first, as in `context.arguments has path && context.arguments.path
        // is Warden::Path && context.arguments.path in ...`.
        let mut checked_types = Vec::new();
        let mut leading = None;
        for conjunct in conjuncts {
            match presence_test(conjunct) {
                Some(Presence::Has) => continue,
                Some(Presence::Is(argument)) => checked_types.push(argument),
                None => {
                    leading = Some(conjunct);
                    break;
                }
            }
        }
        let leading = leading?;
        let mut tests = Vec::new();
        collect_disjuncts(leading, &mut tests);
        let mut guard: Option<PathGuard> = None;
        for test in tests {
            let (argument, directory) = path_test(test)?;
            match &mut guard {
                None => {
                    guard = Some(PathGuard {
                        argument,
                        directories: vec![directory],
                    })
                }
                Some(existing) if existing.argument == argument => {
                    existing.directories.push(directory)
                }
                Some(_) => return None,
            }
        }
        // An `is` test on another argument could raise an error when that
        // argument is absent, so such a policy keeps no guard.
        guard.filter(|guard| {
            checked_types
                .iter()
                .all(|argument| *argument == guard.argument)
        })
    }

    /// Returns false only when `paths` has the argument and it lies in none
    /// of the directories.
    fn may_match(&self, paths: &[(String, String)]) -> bool {
        let Some((_, path)) = paths.iter().find(|(name, _)| *name == self.argument) else {
            return true;
        };
        self.directories
            .iter()
            .any(|directory| warden_core::path::is_within_normalized(path, directory))
    }
}

/// A tool's plain policies split by guard, with cached subsets.
pub(crate) struct GuardedPolicies {
    unguarded: Vec<Policy>,
    guarded: Vec<(PathGuard, Policy)>,
    cache: Mutex<HashMap<Vec<bool>, Arc<PolicySet>>>,
}

impl GuardedPolicies {
    /// Splits `policies`; `None` when no policy has a guard.
    pub(crate) fn new(policies: &PolicySet) -> Option<GuardedPolicies> {
        let mut unguarded = Vec::new();
        let mut guarded = Vec::new();
        for policy in policies.policies() {
            match PathGuard::of(policy) {
                Some(guard) => guarded.push((guard, policy.clone())),
                None => unguarded.push(policy.clone()),
            }
        }
        (!guarded.is_empty()).then(|| GuardedPolicies {
            unguarded,
            guarded,
            cache: Mutex::default(),
        })
    }

    /// Returns the policies that can apply to a call with these normalised
    /// path arguments, or `None` when all of them can.
    pub(crate) fn select(&self, paths: &[(String, String)]) -> Option<Arc<PolicySet>> {
        let mask: Vec<bool> = self
            .guarded
            .iter()
            .map(|(guard, _)| guard.may_match(paths))
            .collect();
        if mask.iter().all(|kept| *kept) {
            return None;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = cache.get(&mask) {
            return Some(set.clone());
        }
        let kept = self
            .guarded
            .iter()
            .zip(&mask)
            .filter(|(_, kept)| **kept)
            .map(|((_, policy), _)| policy.clone());
        let set = PolicySet::from_policies(self.unguarded.iter().cloned().chain(kept)).ok()?;
        let set = Arc::new(set);
        if cache.len() >= MAX_CACHED_SETS {
            cache.clear();
        }
        cache.insert(mask, set.clone());
        Some(set)
    }
}

fn collect_conjuncts<'a>(expression: &'a Value, out: &mut Vec<&'a Value>) {
    match expression
        .get("&&")
        .and_then(|and| Some((and.get("left")?, and.get("right")?)))
    {
        Some((left, right)) => {
            collect_conjuncts(left, out);
            collect_conjuncts(right, out);
        }
        None => out.push(expression),
    }
}

/// A leading presence or type test. Neither raises an error once the
/// guarded argument is present, which is the only case a guard prunes.
enum Presence {
    /// `context has arguments` or `context.arguments has NAME`.
    Has,
    /// `context.arguments.NAME is Warden::Path`.
    Is(String),
}

fn presence_test(expression: &Value) -> Option<Presence> {
    if let Some(has) = expression.get("has") {
        let left = has.get("left")?;
        let on_context = left.get("Var").and_then(Value::as_str) == Some("context");
        let on_arguments = left.get(".").is_some_and(|access| {
            access.get("attr").and_then(Value::as_str) == Some("arguments")
                && access
                    .get("left")
                    .and_then(|l| l.get("Var"))
                    .and_then(Value::as_str)
                    == Some("context")
        });
        return (on_context || on_arguments).then_some(Presence::Has);
    }
    let is = expression.get("is")?;
    if is.get("entity_type")?.as_str()? != format!("{NAMESPACE}::Path") || is.get("in").is_some() {
        return None;
    }
    let attribute = is.get("left")?.get(".")?;
    let arguments = attribute.get("left")?.get(".")?;
    if arguments.get("attr")?.as_str()? != "arguments"
        || arguments.get("left")?.get("Var")?.as_str()? != "context"
    {
        return None;
    }
    Some(Presence::Is(attribute.get("attr")?.as_str()?.to_owned()))
}

fn collect_disjuncts<'a>(expression: &'a Value, out: &mut Vec<&'a Value>) {
    match expression.get("||") {
        Some(or) => {
            if let (Some(left), Some(right)) = (or.get("left"), or.get("right")) {
                collect_disjuncts(left, out);
                collect_disjuncts(right, out);
            } else {
                out.push(expression);
            }
        }
        None => out.push(expression),
    }
}

/// Matches `context.arguments.NAME in Warden::Path::"DIR"`.
fn path_test(expression: &Value) -> Option<(String, String)> {
    let test = expression.get("in")?;
    let attribute = test.get("left")?.get(".")?;
    let argument = attribute.get("attr")?.as_str()?;
    let arguments = attribute.get("left")?.get(".")?;
    if arguments.get("attr")?.as_str()? != "arguments"
        || arguments.get("left")?.get("Var")?.as_str()? != "context"
    {
        return None;
    }
    let entity = test.get("right")?.get("Value")?.get("__entity")?;
    if entity.get("type")?.as_str()? != format!("{NAMESPACE}::Path") {
        return None;
    }
    let directory = entity.get("id")?.as_str()?;
    Some((argument.to_owned(), directory.to_owned()))
}

/// Facts about a tool and the engine that are fixed when policies load.
pub(crate) struct StaticFacts<'a> {
    pub(crate) name: &'a str,
    pub(crate) server: &'a str,
    pub(crate) tool: &'a str,
    pub(crate) classes: &'a [String],
    pub(crate) read_only: bool,
    pub(crate) destructive: bool,
    pub(crate) open_world: bool,
    pub(crate) environment: &'a str,
}

/// Returns true when `policy` can never match a request about this tool:
/// its first `when` condition starts with tests of the tool's fixed
/// attributes or the environment, and one of them is false. Those tests
/// cannot raise errors, so Cedar would find the condition false without
/// evaluating the rest, and leaving the policy out of the tool's set
/// changes no decision.
pub(crate) fn never_matches(policy: &Policy, facts: &StaticFacts<'_>) -> bool {
    let Ok(json) = policy.to_json() else {
        return false;
    };
    let Some(first) = json
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|conditions| conditions.first())
    else {
        return false;
    };
    if first.get("kind").and_then(Value::as_str) != Some("when") {
        return false;
    }
    let Some(body) = first.get("body") else {
        return false;
    };
    let mut conjuncts = Vec::new();
    collect_conjuncts(body, &mut conjuncts);
    for conjunct in conjuncts {
        match static_value(conjunct, facts) {
            Some(true) => continue,
            Some(false) => return true,
            None => return false,
        }
    }
    false
}

fn static_value(expression: &Value, facts: &StaticFacts<'_>) -> Option<bool> {
    if let Some(not) = expression.get("!") {
        return static_value(not.get("arg")?, facts).map(|value| !value);
    }
    for (operator, equal) in [("==", true), ("!=", false)] {
        if let Some(comparison) = expression.get(operator) {
            let (left, right) = (comparison.get("left")?, comparison.get("right")?);
            let (attribute, literal) = match (static_string(left, facts), literal_string(right)) {
                (Some(attribute), Some(literal)) => (attribute, literal),
                _ => (static_string(right, facts)?, literal_string(left)?),
            };
            return Some((attribute == literal) == equal);
        }
    }
    if let Some(contains) = expression.get("contains") {
        if resource_attribute(contains.get("left")?)? != "classes" {
            return None;
        }
        let class = literal_string(contains.get("right")?)?;
        return Some(facts.classes.iter().any(|c| c == class));
    }
    match resource_attribute(expression)? {
        "read_only" => Some(facts.read_only),
        "destructive" => Some(facts.destructive),
        "open_world" => Some(facts.open_world),
        _ => None,
    }
}

/// Returns the value of `resource.name|server|tool` or `context.environment`.
fn static_string<'a>(expression: &Value, facts: &StaticFacts<'a>) -> Option<&'a str> {
    if let Some(attribute) = resource_attribute(expression) {
        return match attribute {
            "name" => Some(facts.name),
            "server" => Some(facts.server),
            "tool" => Some(facts.tool),
            _ => None,
        };
    }
    let access = expression.get(".")?;
    (access.get("attr")?.as_str()? == "environment"
        && access.get("left")?.get("Var")?.as_str()? == "context")
        .then_some(facts.environment)
}

fn resource_attribute(expression: &Value) -> Option<&str> {
    let access = expression.get(".")?;
    (access.get("left")?.get("Var")?.as_str()? == "resource")
        .then(|| access.get("attr")?.as_str())
        .flatten()
}

fn literal_string(expression: &Value) -> Option<&str> {
    expression.get("Value")?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn guard(text: &str) -> Option<PathGuard> {
        PathGuard::of(&Policy::from_str(text).expect("policy parses"))
    }

    #[test]
    fn guard_of_leading_path_test() {
        let found = guard(
            r#"permit (principal, action, resource) when { context.arguments.path in Warden::Path::"/srv/data" && context.arguments.mode == "r" };"#,
        );
        assert_eq!(
            found,
            Some(PathGuard {
                argument: "path".to_owned(),
                directories: vec!["/srv/data".to_owned()],
            })
        );
    }

    #[test]
    fn guard_of_disjunction_on_one_argument() {
        let found = guard(
            r#"permit (principal, action, resource) when { context.arguments.path in Warden::Path::"/a" || context.arguments.path in Warden::Path::"/b" };"#,
        )
        .expect("guard");
        assert_eq!(found.directories, vec!["/a", "/b"]);
    }

    #[test]
    fn guard_after_presence_tests() {
        let found = guard(
            r#"forbid (principal, action, resource) when { context has arguments && context.arguments has path && context.arguments.path is Warden::Path && context.arguments.path in Warden::Path::"/srv/secret" };"#,
        )
        .expect("guard");
        assert_eq!(found.directories, vec!["/srv/secret"]);
    }

    #[test]
    fn no_guard_after_type_test_of_other_argument() {
        let found = guard(
            r#"forbid (principal, action, resource) when { context.arguments.source is Warden::Path && context.arguments.path in Warden::Path::"/srv" };"#,
        );
        assert_eq!(found, None);
    }

    #[test]
    fn no_guard_when_test_is_not_leading() {
        let found = guard(
            r#"permit (principal, action, resource) when { context.arguments.mode == "r" && context.arguments.path in Warden::Path::"/a" };"#,
        );
        assert_eq!(found, None);
    }

    #[test]
    fn no_guard_for_unless_or_mixed_arguments() {
        assert_eq!(
            guard(
                r#"forbid (principal, action, resource) unless { context.arguments.path in Warden::Path::"/a" };"#
            ),
            None
        );
        assert_eq!(
            guard(
                r#"permit (principal, action, resource) when { context.arguments.path in Warden::Path::"/a" || context.arguments.source in Warden::Path::"/b" };"#
            ),
            None
        );
    }

    fn facts() -> StaticFacts<'static> {
        StaticFacts {
            name: "fs__read_file",
            server: "fs",
            tool: "read_file",
            classes: &[],
            read_only: true,
            destructive: false,
            open_world: false,
            environment: "development",
        }
    }

    fn never(text: &str) -> bool {
        never_matches(&Policy::from_str(text).expect("policy parses"), &facts())
    }

    #[test]
    fn never_matches_false_static_tests() {
        assert!(never(
            r#"forbid (principal, action, resource) when { resource.classes.contains("write") };"#
        ));
        assert!(never(
            r#"forbid (principal, action, resource) when { context.environment == "production" && resource.destructive };"#
        ));
        assert!(never(
            r#"forbid (principal, action, resource) when { resource.server == "mail" };"#
        ));
        assert!(never(
            r#"forbid (principal, action, resource) when { !resource.read_only };"#
        ));
    }

    #[test]
    fn never_matches_keeps_possible_policies() {
        assert!(!never(
            r#"forbid (principal, action, resource) when { resource.server == "fs" };"#
        ));
        assert!(!never(
            r#"forbid (principal, action, resource) when { principal.trust_domain != "a" && resource.server == "mail" };"#
        ));
        assert!(!never(
            r#"forbid (principal, action, resource) unless { resource.server == "mail" };"#
        ));
        assert!(!never(r#"permit (principal, action, resource);"#));
    }

    #[test]
    fn may_match_keeps_policy_without_argument() {
        let guard = PathGuard {
            argument: "path".to_owned(),
            directories: vec!["/srv/data".to_owned()],
        };
        assert!(guard.may_match(&[]));
        assert!(guard.may_match(&[("path".to_owned(), "/srv/data/a".to_owned())]));
        assert!(!guard.may_match(&[("path".to_owned(), "/srv/data_private/a".to_owned())]));
    }
}
