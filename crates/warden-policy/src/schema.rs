//! Generation of Warden's Cedar schema (namespace `Warden`).
//!
//! Every action has its own context type, so strict validation rejects a
//! policy that reads a field its action does not provide, such as
//! `context.arguments` on `list_tools`. `call_tool` is an action group with
//! no `appliesTo`. Each tool is its own action in that group, named by its
//! qualified name, with the tool's argument types as `context.arguments`.

use serde_json::{Map, Value, json};

use crate::arguments::types::RecordType;

/// Namespace of every Warden entity type and action.
pub(crate) const NAMESPACE: &str = "Warden";

/// Action that starts a task.
pub(crate) const START_TASK: &str = "start_task";
/// Action that hands part of a task to another agent.
pub(crate) const DELEGATE: &str = "delegate";
/// Action that shows one tool in a tool listing.
pub(crate) const LIST_TOOLS: &str = "list_tools";
/// Action group of all tool calls.
pub(crate) const CALL_TOOL: &str = "call_tool";
/// Action that reads one resource.
pub(crate) const READ_RESOURCE: &str = "read_resource";
/// Action that fetches one prompt.
pub(crate) const GET_PROMPT: &str = "get_prompt";
/// Action that calls a model API.
pub(crate) const CALL_MODEL: &str = "call_model";
/// Action that lets an upstream's request to the agent (sampling,
/// elicitation) through to the agent.
pub(crate) const SERVER_REQUEST: &str = "server_request";
/// Action group of all HTTP route requests.
pub(crate) const HTTP_REQUEST: &str = "http_request";

/// Returns the schema in Cedar's JSON schema format for tools given as
/// (qualified name, argument record) pairs.
pub(crate) fn schema_json<'a>(
    tools: impl IntoIterator<Item = (&'a str, &'a RecordType)>,
    routes: impl IntoIterator<Item = (String, &'a [String], Option<&'a RecordType>)>,
    memory: &MemoryShape,
) -> Value {
    let mut actions = Map::new();
    actions.insert(HTTP_REQUEST.to_owned(), json!({}));
    for (action_id, query_params, body) in routes {
        let query = record(
            query_params
                .iter()
                .map(|name| (name.as_str(), optional(string()))),
        );
        let mut context = common_context();
        context.extend([
            ("method", string()),
            ("path", json!({ "type": "Entity", "name": "Path" })),
            ("path_text", string()),
            ("query", query),
            ("query_names", string_set()),
            ("has_body", boolean()),
            ("content_type", string()),
            ("memory", json!({ "type": "Memory" })),
            (
                "destination",
                record([("scheme", string()), ("host", string()), ("port", long())]),
            ),
        ]);
        if let Some(body) = body {
            context.push(("body", optional(body.cedar_json())));
        }
        let mut action = applies_to("Agent", "Route", record(context));
        action["memberOf"] = json!([{ "id": HTTP_REQUEST }]);
        actions.insert(action_id, action);
    }
    actions.insert(
        START_TASK.to_owned(),
        applies_to(
            "Agent",
            "Gateway",
            record([
                ("environment", string()),
                ("intent", string()),
                ("user", string()),
                ("tools", string_set()),
                ("ttl_seconds", json!({ "type": "Long" })),
            ]),
        ),
    );
    actions.insert(
        DELEGATE.to_owned(),
        applies_to(
            "Agent",
            "Agent",
            record(common_context().into_iter().chain([
                ("tools", string_set()),
                ("depth", json!({ "type": "Long" })),
            ])),
        ),
    );
    actions.insert(
        LIST_TOOLS.to_owned(),
        applies_to("Agent", "Tool", record(common_context())),
    );
    actions.insert(CALL_TOOL.to_owned(), json!({}));
    actions.insert(
        READ_RESOURCE.to_owned(),
        applies_to(
            "Agent",
            "Resource",
            record(
                common_context()
                    .into_iter()
                    .chain([("uri", string()), ("server", string())]),
            ),
        ),
    );
    actions.insert(
        GET_PROMPT.to_owned(),
        applies_to(
            "Agent",
            "Prompt",
            record(common_context().into_iter().chain([("server", string())])),
        ),
    );
    actions.insert(
        SERVER_REQUEST.to_owned(),
        applies_to(
            "Agent",
            "Server",
            record(common_context().into_iter().chain([
                ("server", string()),
                ("method", string()),
                ("tool", string()),
            ])),
        ),
    );
    actions.insert(
        CALL_MODEL.to_owned(),
        applies_to(
            "Agent",
            "Model",
            record(common_context().into_iter().chain([
                ("provider", string()),
                ("model", string()),
                ("stream", boolean()),
                ("max_tokens", long()),
                ("tools", string_set()),
                (
                    "usage",
                    record([
                        ("calls", long()),
                        ("input_tokens", long()),
                        ("output_tokens", long()),
                        ("total_tokens", long()),
                    ]),
                ),
            ])),
        ),
    );
    for (qualified, arguments) in tools {
        let mut action = applies_to(
            "Agent",
            "Tool",
            record(common_context().into_iter().chain([
                ("arguments", arguments.cedar_json()),
                ("model_requested", boolean()),
                ("memory", json!({ "type": "Memory" })),
            ])),
        );
        action["memberOf"] = json!([{ "id": CALL_TOOL }]);
        actions.insert(qualified.to_owned(), action);
    }

    json!({
        NAMESPACE: {
            "commonTypes": {
                "Memory": memory.cedar_json(),
                "Task": record([
                    ("id", string()),
                    ("intent", string()),
                    ("user", string()),
                    ("tools", string_set()),
                    ("depth", json!({ "type": "Long" })),
                    ("agents", string_set()),
                    ("root_agent", string()),
                ]),
            },
            "entityTypes": {
                "Agent": { "shape": record([("trust_domain", string())]) },
                "User": {},
                "Server": {},
                "Tool": {
                    "memberOfTypes": ["Server"],
                    "shape": record([
                        ("name", string()),
                        ("server", string()),
                        ("tool", string()),
                        ("classes", string_set()),
                        ("labels", string_set()),
                        ("read_only", boolean()),
                        ("destructive", boolean()),
                        ("open_world", boolean()),
                    ]),
                },
                "Resource": {
                    "memberOfTypes": ["Server"],
                    "shape": record([("uri", string())]),
                },
                "Prompt": {
                    "memberOfTypes": ["Server"],
                    "shape": record([("name", string())]),
                },
                "Route": {
                    "shape": record([
                        ("name", string()),
                        ("classes", string_set()),
                        ("labels", string_set()),
                        ("host", string()),
                    ]),
                },
                "Model": {
                    "shape": record([("provider", string()), ("name", string())]),
                },
                "Path": { "memberOfTypes": ["Path"] },
                "Gateway": {},
            },
            "actions": actions,
        }
    })
}

/// The attribute names of `context.memory`: every class and every summed
/// argument name that a policy may test.
#[derive(Clone, Debug, Default)]
pub(crate) struct MemoryShape {
    pub(crate) classes: Vec<String>,
    pub(crate) sums: Vec<String>,
}

impl MemoryShape {
    fn cedar_json(&self) -> Value {
        let decimal = || json!({ "type": "Extension", "name": "decimal" });
        let sums = || record(self.sums.iter().map(|name| (name.as_str(), decimal())));
        record([
            ("labels", string_set()),
            ("calls", long()),
            (
                "class_calls",
                record(self.classes.iter().map(|name| (name.as_str(), long()))),
            ),
            ("sums", sums()),
            ("sums_with_call", sums()),
        ])
    }
}

fn common_context() -> Vec<(&'static str, Value)> {
    vec![
        ("environment", string()),
        ("task", json!({ "type": "Task" })),
    ]
}

fn applies_to(principal: &str, resource: &str, context: Value) -> Value {
    json!({
        "appliesTo": {
            "principalTypes": [principal],
            "resourceTypes": [resource],
            "context": context,
        }
    })
}

fn record<'a>(attributes: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let attributes: Map<String, Value> = attributes
        .into_iter()
        .map(|(name, kind)| (name.to_owned(), kind))
        .collect();
    json!({ "type": "Record", "attributes": attributes })
}

fn string() -> Value {
    json!({ "type": "String" })
}

fn boolean() -> Value {
    json!({ "type": "Boolean" })
}

fn optional(mut kind: Value) -> Value {
    kind["required"] = Value::Bool(false);
    kind
}

fn long() -> Value {
    json!({ "type": "Long" })
}

fn string_set() -> Value {
    json!({ "type": "Set", "element": { "type": "String" } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arguments::types::arguments_type;
    use cedar_policy::{Schema, SchemaFragment};

    fn sample_arguments() -> RecordType {
        arguments_type(
            &json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "limit": {"type": "integer"},
                    "ratio": {"type": "number"},
                    "recursive": {"type": "boolean"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "options": {
                        "type": "object",
                        "properties": {"depth": {"type": "integer"}},
                        "required": ["depth"]
                    },
                    "extra": {"anyOf": [{"type": "string"}, {"type": "integer"}]}
                },
                "required": ["path"]
            }),
            None,
        )
        .expect("translates")
    }

    #[test]
    fn schema_json_is_accepted_by_cedar() {
        let arguments = sample_arguments();
        let value = schema_json([("fs__read_file", &arguments)], [], &MemoryShape::default());
        let schema = Schema::from_json_value(value);
        assert!(schema.is_ok(), "{:?}", schema.err());
    }

    #[test]
    fn schema_text_shows_tool_argument_types() {
        let arguments = sample_arguments();
        let value = schema_json([("fs__read_file", &arguments)], [], &MemoryShape::default());
        let text = SchemaFragment::from_json_value(value)
            .expect("fragment parses")
            .to_cedarschema()
            .expect("prints");
        let expected_parts = [
            "path: Path,",
            "limit?: __cedar::Long,",
            "ratio?: __cedar::decimal,",
            "recursive?: __cedar::Bool,",
            "tags?: Set<__cedar::String>",
            "options?: {",
            "depth: __cedar::Long",
            "action \"fs__read_file\" in [Action::\"call_tool\"]",
        ];
        for part in expected_parts {
            assert!(text.contains(part), "schema text lacks {part:?}:\n{text}");
        }
        assert!(!text.contains("extra"), "untyped argument leaked:\n{text}");
    }
}
