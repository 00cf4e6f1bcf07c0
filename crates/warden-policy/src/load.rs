//! Parsing and validation of policy files.
//!
//! Each file is split into statements at top-level semicolons, and each
//! statement is parsed on its own. So every policy gets a stable id (its
//! `@id` annotation, or `FILE:INDEX`), and every problem is reported with
//! its file, line, column and policy id. All problems of all files are
//! collected before loading fails.

use std::collections::HashMap;
use std::ops::Range;

use cedar_policy::{Effect, Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

use crate::error::{PolicyProblem, line_and_column};
use crate::schema::NAMESPACE;

/// Prefix of the policy ids that Warden itself reports; `@id` may not use it.
pub(crate) const RESERVED_ID_PREFIX: &str = "warden:";

/// Annotation that turns a `forbid` into "needs a human approval".
pub(crate) const HOLD_ANNOTATION: &str = "hold";
/// Annotation that gives a `forbid` its reason sentence.
pub(crate) const REASON_ANNOTATION: &str = "reason";
/// Annotation that names a policy.
pub(crate) const ID_ANNOTATION: &str = "id";

/// One parsed policy and where it came from.
pub(crate) struct LoadedPolicy {
    /// The policy, renamed to its Warden id.
    pub(crate) policy: Policy,
    /// Whether the policy is a `forbid` annotated `@hold`.
    pub(crate) hold: bool,
    source: SourceRef,
}

#[derive(Clone, Copy)]
struct SourceRef {
    /// Index into the sources slice.
    file: usize,
    /// Byte offset of the policy's first token in its file.
    offset: usize,
}

/// Parses and validates every policy of `sources` (file name, text).
pub(crate) fn load_policies(
    sources: &[(String, String)],
    schema: &Schema,
) -> Result<Vec<LoadedPolicy>, Vec<PolicyProblem>> {
    let mut problems = Vec::new();
    let mut loaded: Vec<LoadedPolicy> = Vec::new();
    let mut first_use: HashMap<String, SourceRef> = HashMap::new();

    for (file_index, (file, text)) in sources.iter().enumerate() {
        for (index, range) in split_statements(text).into_iter().enumerate() {
            let source = SourceRef {
                file: file_index,
                offset: range.start,
            };
            let default_id = format!("{file}:{index}");
            let locate = |offset: usize, message: String, policy_id: &str| {
                locate_problem(sources, source, offset, message, policy_id)
            };
            let parsed = Policy::parse(Some(PolicyId::new(&default_id)), &text[range.clone()]);
            let policy = match parsed {
                Ok(policy) => policy,
                Err(errors) => {
                    for error in errors.iter() {
                        let offset = first_label_offset(error).unwrap_or(0);
                        problems.push(locate(offset, diagnostic_message(error), &default_id));
                    }
                    continue;
                }
            };
            let policy = match policy.annotation(ID_ANNOTATION) {
                Some(id) => {
                    if let Some(message) = check_id_annotation(id) {
                        problems.push(locate(0, message, &default_id));
                        continue;
                    }
                    policy.new_id(PolicyId::new(id))
                }
                None => policy,
            };
            let id = policy.id().to_string();
            if let Some(first) = first_use.get(&id) {
                let (line, column) = line_and_column(&sources[first.file].1, first.offset);
                let message = format!(
                    "duplicate policy id \"{id}\", first used at {}:{line}:{column}; \
                     give each policy a unique @id",
                    sources[first.file].0
                );
                problems.push(locate(0, message, &id));
                continue;
            }
            first_use.insert(id.clone(), source);
            if let Some(message) = check_annotations(&policy) {
                problems.push(locate(0, message, &id));
                continue;
            }
            if let Some(message) = check_path_literals(&policy) {
                problems.push(locate(0, message, &id));
                continue;
            }
            let hold = policy.annotation(HOLD_ANNOTATION).is_some();
            if hold && policy.effect() == Effect::Permit {
                let message = "@hold applies only to forbid policies; \
                               write the rule as a forbid or remove @hold"
                    .to_owned();
                problems.push(locate(0, message, &id));
                continue;
            }
            loaded.push(LoadedPolicy {
                policy,
                hold,
                source,
            });
        }
    }

    problems.extend(validate(sources, schema, &loaded));
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(problems)
    }
}

/// Validates the policies against the schema in strict mode and returns
/// one problem per validation error. Warnings are logged.
fn validate(
    sources: &[(String, String)],
    schema: &Schema,
    loaded: &[LoadedPolicy],
) -> Vec<PolicyProblem> {
    let by_id: HashMap<&PolicyId, &LoadedPolicy> = loaded
        .iter()
        .map(|entry| (entry.policy.id(), entry))
        .collect();
    let set = match PolicySet::from_policies(loaded.iter().map(|entry| entry.policy.clone())) {
        Ok(set) => set,
        Err(error) => {
            // Ids were checked for uniqueness above, so this is unexpected.
            return vec![PolicyProblem {
                file: String::new(),
                line: 0,
                column: 0,
                message: format!("failed to build the policy set: {error}"),
                policy_id: String::new(),
            }];
        }
    };
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    // A warning is a load error too: an impossible policy (for example a
    // forbid scoped to the `call_tool` group with `==` instead of `in`)
    // never applies, and a string with mixed scripts or bidirectional
    // characters can hide what a policy compares against.
    let locate = |id: &PolicyId, offset: Option<usize>, message: String| match by_id.get(id) {
        Some(entry) => locate_problem(
            sources,
            entry.source,
            offset.unwrap_or(0),
            message,
            id.as_ref(),
        ),
        None => PolicyProblem {
            file: String::new(),
            line: 0,
            column: 0,
            message,
            policy_id: id.to_string(),
        },
    };
    // A policy scoped only to action groups that have no member here (the
    // route group on a gateway without routes) is "impossible" for this
    // deployment, not wrong: a shared pack must load everywhere.
    let empty_groups = empty_action_groups(schema);
    let dormant = |id: &PolicyId| {
        by_id
            .get(id)
            .is_some_and(|entry| match entry.policy.action_constraint() {
                cedar_policy::ActionConstraint::In(scopes) => {
                    !scopes.is_empty() && scopes.iter().all(|scope| empty_groups.contains(scope))
                }
                _ => false,
            })
    };
    let warnings = result
        .validation_warnings()
        .filter(|warning| !dormant(warning.policy_id()))
        .map(|warning| {
            let message = format!(
                "{}; Warden rejects policies with validation warnings, so fix or remove it",
                diagnostic_message(warning)
            );
            locate(warning.policy_id(), first_label_offset(warning), message)
        });
    let errors = result
        .validation_errors()
        .filter(|error| !dormant(error.policy_id()))
        .map(|error| {
            let id = error.policy_id();
            // Cedar opens each message with the policy id, which the problem
            // already shows at its end.
            let full = diagnostic_message(error);
            let prefix = format!("for policy `{id}`, ");
            let message = full.strip_prefix(&prefix).unwrap_or(&full).to_owned();
            locate(id, first_label_offset(error), message)
        });
    collapse_repeats(warnings.chain(errors).collect())
}

/// Returns the action groups of the schema that no action belongs to.
fn empty_action_groups(schema: &Schema) -> std::collections::HashSet<cedar_policy::EntityUid> {
    let Ok(actions) = schema.action_entities() else {
        return Default::default();
    };
    let groups: std::collections::HashSet<cedar_policy::EntityUid> =
        [crate::schema::CALL_TOOL, crate::schema::HTTP_REQUEST]
            .iter()
            .filter_map(|group| {
                format!("{NAMESPACE}::Action::\"{group}\"")
                    .parse::<cedar_policy::EntityUid>()
                    .ok()
            })
            .collect();
    let mut used = std::collections::HashSet::new();
    for entity in actions.iter() {
        if let Some(ancestors) = actions.ancestors(&entity.uid()) {
            used.extend(ancestors.cloned());
        }
    }
    groups.difference(&used).cloned().collect()
}

/// Annotations Warden reads; any other is most likely a typo that would
/// silently drop a reason or a hold.
const KNOWN_ANNOTATIONS: [&str; 3] = [ID_ANNOTATION, REASON_ANNOTATION, HOLD_ANNOTATION];

fn check_annotations(policy: &Policy) -> Option<String> {
    policy
        .annotations()
        .map(|(key, _)| key)
        .find(|key| !KNOWN_ANNOTATIONS.contains(key))
        .map(|key| {
            format!(
                "unknown annotation @{key}; Warden reads @id, @reason and @hold, so correct or remove it"
            )
        })
}

/// Rejects `Warden::Path` literals that no argument can ever be in: paths
/// in requests are absolute and normalised, so `srv/data`, `/srv/data/` or
/// `/srv/../data` would never match.
fn check_path_literals(policy: &Policy) -> Option<String> {
    let json = policy.to_json().ok()?;
    let mut literals = Vec::new();
    collect_path_literals(&json, &mut literals);
    literals.into_iter().find_map(|literal| {
        let normalized = warden_core::path::normalize(&literal);
        (normalized != literal || !literal.starts_with('/')).then(|| {
            format!(
                "Warden::Path::{literal:?} can never match, because argument paths are absolute and normalised; write Warden::Path::{:?}",
                if normalized.starts_with('/') {
                    normalized
                } else {
                    format!("/{normalized}")
                }
            )
        })
    })
}

fn collect_path_literals(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(entity) = map.get("__entity")
                && entity.get("type").and_then(serde_json::Value::as_str)
                    == Some(&format!("{NAMESPACE}::Path"))
                && let Some(id) = entity.get("id").and_then(serde_json::Value::as_str)
            {
                out.push(id.to_owned());
            }
            for child in map.values() {
                collect_path_literals(child, out);
            }
        }
        serde_json::Value::Array(items) => {
            for child in items {
                collect_path_literals(child, out);
            }
        }
        _ => {}
    }
}

/// Sorts problems and keeps one per policy and location.
///
/// Strict validation checks a policy once for every action its scope
/// allows, so one mistake in a policy scoped to all tool calls yields one
/// error per tool. The first message is kept and the rest are counted.
fn collapse_repeats(mut problems: Vec<PolicyProblem>) -> Vec<PolicyProblem> {
    problems.sort_by(|a, b| {
        (&a.file, a.line, a.column, &a.policy_id, &a.message).cmp(&(
            &b.file,
            b.line,
            b.column,
            &b.policy_id,
            &b.message,
        ))
    });
    let mut collapsed: Vec<(PolicyProblem, usize)> = Vec::new();
    for problem in problems {
        if let Some((kept, repeats)) = collapsed.last_mut() {
            let same_place = kept.file == problem.file
                && kept.line == problem.line
                && kept.column == problem.column
                && kept.policy_id == problem.policy_id;
            if same_place {
                *repeats += 1;
                continue;
            }
        }
        collapsed.push((problem, 0));
    }
    collapsed
        .into_iter()
        .map(|(mut problem, repeats)| {
            if repeats > 0 {
                let separator = if problem.message.ends_with(['?', '.']) {
                    " "
                } else {
                    "; "
                };
                let noun = if repeats == 1 { "problem" } else { "problems" };
                problem.message = format!(
                    "{}{separator}{repeats} more {noun} at this location, \
                     usually the same one for other actions",
                    problem.message
                );
            }
            problem
        })
        .collect()
}

/// Returns the byte ranges of the statements in `text`, each from its first
/// token through its terminating `;`. Text after the last `;` that is not
/// blank or a comment becomes a statement of its own, which then fails to
/// parse with Cedar's own message. Semicolons inside string literals and
/// `//` comments do not end a statement.
pub(crate) fn split_statements(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut statements = Vec::new();
    let mut start: Option<usize> = None;
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'/' if bytes.get(index + 1) == Some(&b'/') => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
                continue;
            }
            b'"' => {
                start.get_or_insert(index);
                index += 1;
                while index < bytes.len() && bytes[index] != b'"' {
                    index += if bytes[index] == b'\\' { 2 } else { 1 };
                }
            }
            b';' => {
                let first = start.take().unwrap_or(index);
                statements.push(first..index + 1);
            }
            byte if byte.is_ascii_whitespace() => {}
            _ => {
                start.get_or_insert(index);
            }
        }
        index += 1;
    }
    if let Some(first) = start {
        statements.push(first..text.len());
    }
    statements
}

fn check_id_annotation(id: &str) -> Option<String> {
    if id.trim().is_empty() {
        Some("@id is empty; give the policy a non-empty id".to_owned())
    } else if id.starts_with(RESERVED_ID_PREFIX) {
        Some(format!(
            "@id \"{id}\" uses the reserved prefix \"{RESERVED_ID_PREFIX}\"; choose another id"
        ))
    } else {
        None
    }
}

fn locate_problem(
    sources: &[(String, String)],
    source: SourceRef,
    offset_in_policy: usize,
    message: String,
    policy_id: &str,
) -> PolicyProblem {
    let (file, text) = &sources[source.file];
    let (line, column) = line_and_column(text, source.offset + offset_in_policy);
    PolicyProblem {
        file: file.clone(),
        line,
        column,
        message,
        policy_id: policy_id.to_owned(),
    }
}

fn first_label_offset(diagnostic: &dyn Diagnostic) -> Option<usize> {
    diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset())
}

/// Returns Cedar's message followed by its help text, if any.
fn diagnostic_message<D: Diagnostic + ?Sized>(diagnostic: &D) -> String {
    match diagnostic.help() {
        Some(help) => format!("{diagnostic}; {help}"),
        None => diagnostic.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(text: &str) -> Vec<&str> {
        split_statements(text)
            .into_iter()
            .map(|range| &text[range])
            .collect()
    }

    #[test]
    fn split_statements_skips_comments_and_strings() {
        let text = "// header; not a policy\n\
                    permit(principal, action, resource) when { context.x == \"a;b\" };\n\
                    \n  forbid(principal, action, resource); // trailing; comment\n";
        assert_eq!(
            statements(text),
            vec![
                "permit(principal, action, resource) when { context.x == \"a;b\" };",
                "forbid(principal, action, resource);",
            ]
        );
    }

    #[test]
    fn split_statements_keeps_slashes_in_strings() {
        let text = "permit(principal, action, resource) \
                    when { resource.uri like \"https://acme.test/*\" };\n\
                    forbid(principal, action, resource);";
        assert_eq!(statements(text).len(), 2);
    }

    #[test]
    fn split_statements_handles_escaped_quotes() {
        let text = r#"@reason("say \"no\"; now") forbid(principal, action, resource);"#;
        assert_eq!(statements(text), vec![text]);
    }

    #[test]
    fn split_statements_keeps_unterminated_tail() {
        let text = "permit(principal, action, resource);\nforbid(principal, action, resource)";
        assert_eq!(
            statements(text),
            vec![
                "permit(principal, action, resource);",
                "forbid(principal, action, resource)",
            ]
        );
    }

    #[test]
    fn split_statements_of_blank_file_is_empty() {
        assert!(statements("  \n// only a comment\n").is_empty());
    }

    #[test]
    fn check_id_annotation_rejects_reserved_and_empty() {
        assert!(check_id_annotation("warden:arguments").is_some());
        assert!(check_id_annotation(" ").is_some());
        assert!(check_id_annotation("allow-reads").is_none());
    }
}
