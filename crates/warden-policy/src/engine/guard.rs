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
//! and cached, since a tool sees few distinct directory combinations.

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
        let mut leading = first.get("body")?;
        while let Some(and) = leading.get("&&") {
            leading = and.get("left")?;
        }
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
        guard
    }

    /// Returns false only when `paths` has the argument and it lies in none
    /// of the directories.
    fn may_match(&self, paths: &[(String, String)]) -> bool {
        let Some((_, path)) = paths.iter().find(|(name, _)| *name == self.argument) else {
            return true;
        };
        self.directories.iter().any(|directory| {
            path == directory || warden_core::path::ancestors(path).contains(directory)
        })
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
