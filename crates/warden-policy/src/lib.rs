//! Warden's Cedar policy engine.
//!
//! The engine turns each step of a task (starting it, listing a tool,
//! calling a tool, reading a resource, getting a prompt, calling a model)
//! into a Cedar request and decides it as allow, deny or hold. It generates the Cedar
//! schema, namespace `Warden`, from the upstream tools' MCP `inputSchema`,
//! so policies are validated against each tool's real argument types.
//! Policies are parsed and validated once, in [`PolicyEngine::load_dir`] or
//! [`PolicyEngine::from_sources`]; [`PolicyEngine::decide`] parses nothing.
//!
//! Modules:
//! - `arguments`: argument types from `inputSchema` and the conversion of
//!   a call's arguments to them.
//! - `schema`: the generated Cedar schema.
//! - `load`: policy files, policy ids and validation.
//! - `engine`: the engine and its decisions.

mod arguments;
mod engine;
mod error;
mod load;
mod schema;

use serde::Serialize;
pub use warden_core::Decision;

pub use engine::PolicyEngine;
pub use error::{PolicyLoadError, PolicyProblem};

/// Policy id of a denial for a route that Warden does not know.
pub const UNKNOWN_ROUTE_POLICY_ID: &str = "warden:unknown-route";

/// Policy id of a denial for arguments that do not fit the tool's schema.
pub const ARGUMENTS_POLICY_ID: &str = "warden:arguments";
/// Policy id of a denial for a tool that Warden does not know.
pub const UNKNOWN_TOOL_POLICY_ID: &str = "warden:unknown-tool";
/// Policy id of a denial because the Cedar request could not be built.
pub const REQUEST_POLICY_ID: &str = "warden:request";

/// Classes that every generated schema contains, so that policies can name
/// them in `context.memory.class_calls` whatever the tool catalogue.
pub const STANDARD_CLASSES: [&str; 7] = [
    "read",
    "write",
    "delete",
    "external-send",
    "payment",
    "code-exec",
    "identity-admin",
];

/// Label that tools reaching outside (MCP `openWorldHint`) give their
/// output unless the operator says otherwise: the model may read
/// instructions planted by someone else in it.
pub const UNTRUSTED_CONTENT: &str = "untrusted-content";

/// One upstream MCP tool, as its server lists it and the operator configures it.
#[derive(Clone, Debug, Default)]
pub struct ToolDef {
    /// Upstream server name from the configuration, e.g. `fs`.
    pub server: String,
    /// The upstream's own tool name, e.g. `read_file`.
    pub name: String,
    /// The tool's description as the upstream lists it.
    pub description: Option<String>,
    /// The tool's MCP `inputSchema`, a JSON Schema object.
    pub input_schema: serde_json::Value,
    /// MCP `ToolAnnotations` (`readOnlyHint`, `destructiveHint`,
    /// `openWorldHint`).
    pub annotations: Option<serde_json::Value>,
    /// Operator-assigned classes from the configuration, e.g. `["read"]`.
    pub classes: Vec<String>,
    /// Top-level argument names that hold file paths; `None` selects them
    /// by name (`path`, `file`, `directory`, `source`, `cwd` and similar).
    pub path_arguments: Option<Vec<String>>,
    /// Operator-assigned labels of the tool's output, e.g.
    /// `["untrusted-content"]`.
    pub labels: Vec<String>,
    /// Top-level numeric arguments summed per task.
    pub sum_arguments: Vec<String>,
}

impl ToolDef {
    /// Returns the name Warden uses everywhere: `{server}__{name}`.
    pub fn qualified_name(&self) -> String {
        format!("{}__{}", self.server, self.name)
    }

    fn hint(&self, key: &str, default: bool) -> bool {
        self.annotations
            .as_ref()
            .and_then(|annotations| annotations.get(key))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(default)
    }

    /// Returns the tool's classes: the configured ones plus what its MCP
    /// annotations add.
    ///
    /// Servers are not trusted, so annotations only tighten. Without
    /// configured classes they fill the gap with MCP's defaults for absent
    /// hints: `readOnlyHint` gives `read`; otherwise the tool is a `write`,
    /// also a `delete` unless `destructiveHint` is false, and an
    /// `external-send` unless `openWorldHint` is false. With configured
    /// classes only explicit hints count, and they can only add `write`
    /// (`readOnlyHint: false`), `delete` (`destructiveHint: true`) or
    /// `external-send` (`openWorldHint: true` on a tool that is not
    /// read-only), never `read`.
    pub fn effective_classes(&self) -> Vec<String> {
        let explicit = |key: &str| {
            self.annotations
                .as_ref()
                .and_then(|annotations| annotations.get(key))
                .and_then(serde_json::Value::as_bool)
        };
        let mut derived = Vec::new();
        if self.classes.is_empty() {
            if self.hint("readOnlyHint", false) {
                derived.push("read");
            } else {
                derived.push("write");
                if self.hint("destructiveHint", true) {
                    derived.push("delete");
                }
                if self.hint("openWorldHint", true) {
                    derived.push("external-send");
                }
            }
        } else {
            let read_only = explicit("readOnlyHint") == Some(true);
            if explicit("readOnlyHint") == Some(false) {
                derived.push("write");
            }
            if !read_only && explicit("destructiveHint") == Some(true) {
                derived.push("delete");
            }
            if !read_only && explicit("openWorldHint") == Some(true) {
                derived.push("external-send");
            }
        }
        let mut classes = self.classes.clone();
        for class in derived {
            if !classes.iter().any(|known| known == class) {
                classes.push(class.to_owned());
            }
        }
        classes
    }

    /// Returns the labels of the tool's output: the configured ones, plus
    /// `untrusted-content` for a read-only tool that reaches outside
    /// (`openWorldHint` true or absent) when the operator set no labels.
    pub fn effective_labels(&self) -> Vec<String> {
        let mut labels = self.labels.clone();
        if self.labels.is_empty()
            && self.hint("readOnlyHint", false)
            && self.hint("openWorldHint", true)
            && self.annotations.is_some()
        {
            labels.push(UNTRUSTED_CONTENT.to_owned());
        }
        labels
    }
}

/// What a task tree has done so far, as policies see it in
/// `context.memory`: the labels of the data it has read, its calls per
/// class, and running sums of declared numeric arguments. Warden keeps it
/// in the store's counters of the root task, so delegated tasks and
/// replicas share it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskMemory {
    /// Labels of every output the task tree has received.
    pub labels: std::collections::BTreeSet<String>,
    /// Tool calls and HTTP requests let through.
    pub calls: i64,
    /// Calls let through, per class.
    pub class_calls: std::collections::BTreeMap<String, i64>,
    /// Running sums per argument name, in units of 1/10,000 (Cedar's
    /// decimal precision).
    pub sums: std::collections::BTreeMap<String, i64>,
}

/// Counter name prefixes of [`TaskMemory`] in the store.
const MEMORY_CALLS: &str = "memory.calls";
const MEMORY_CLASS: &str = "memory.class.";
const MEMORY_LABEL: &str = "memory.label.";
const MEMORY_SUM: &str = "memory.sum.";

impl TaskMemory {
    /// Reads the memory out of a root task's store counters.
    pub fn from_counters(counters: &std::collections::BTreeMap<String, i64>) -> TaskMemory {
        let mut memory = TaskMemory::default();
        for (name, value) in counters {
            if name == MEMORY_CALLS {
                memory.calls = *value;
            } else if let Some(class) = name.strip_prefix(MEMORY_CLASS) {
                memory.class_calls.insert(class.to_owned(), *value);
            } else if let Some(label) = name.strip_prefix(MEMORY_LABEL) {
                if *value > 0 {
                    memory.labels.insert(label.to_owned());
                }
            } else if let Some(sum) = name.strip_prefix(MEMORY_SUM) {
                memory.sums.insert(sum.to_owned(), *value);
            }
        }
        memory
    }

    /// Returns the counter additions for one call let through: one call,
    /// one per class, and each summed argument in 1/10,000 units.
    pub fn call_deltas(classes: &[String], sums: &[(String, i64)]) -> Vec<(String, i64)> {
        let mut deltas = vec![(MEMORY_CALLS.to_owned(), 1)];
        deltas.extend(
            classes
                .iter()
                .map(|class| (format!("{MEMORY_CLASS}{class}"), 1)),
        );
        deltas.extend(
            sums.iter()
                .map(|(name, value)| (format!("{MEMORY_SUM}{name}"), *value)),
        );
        deltas
    }

    /// Returns the counter additions for an output carrying `labels`.
    pub fn label_deltas(labels: &[String]) -> Vec<(String, i64)> {
        labels
            .iter()
            .map(|label| (format!("{MEMORY_LABEL}{label}"), 1))
            .collect()
    }
}

/// Reads a summed argument's value in units of 1/10,000: an integer, a
/// number or a string of decimal digits, as argument conversion accepts.
pub fn sum_units(value: &serde_json::Value) -> Option<i64> {
    let text = match value {
        serde_json::Value::Number(number) => number.to_string(),
        serde_json::Value::String(text) => text.trim().to_owned(),
        _ => return None,
    };
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 4
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let mut fraction_units: i64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    for _ in fraction.len()..4 {
        fraction_units *= 10;
    }
    let units = whole.checked_mul(10_000)?.checked_add(fraction_units)?;
    Some(if negative { -units } else { units })
}

/// One plain HTTP API route, as the operator configures it.
#[derive(Clone, Debug, Default)]
pub struct RouteDef {
    /// Route name from the configuration; its action is `route:{name}`.
    pub name: String,
    /// Operator-assigned classes, e.g. `["read"]`.
    pub classes: Vec<String>,
    /// Query parameters that policies see by name in `context.query`.
    pub query_params: Vec<String>,
    /// JSON Schema of JSON request bodies; policies see a body converted
    /// to it as `context.body`. `None` leaves the body out of the context.
    pub body_schema: Option<serde_json::Value>,
    /// Host of the route's base URL, the `host` attribute of the route.
    pub host: String,
    /// Labels of what the route returns.
    pub labels: Vec<String>,
}

impl RouteDef {
    /// Returns the route's action id: `route:{name}`.
    pub fn action(&self) -> String {
        format!("route:{}", self.name)
    }
}

/// Settings of a [`PolicyEngine`] that come from the configuration.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Deployment environment, e.g. `development`, exposed to policies as
    /// `context.environment`.
    pub environment: String,
    /// HTTP API routes; each is an action `route:{name}` in the group
    /// `http_request`.
    pub routes: Vec<RouteDef>,
}

/// The destination of an HTTP request, as `context.destination`.
#[derive(Clone, Copy, Debug)]
pub struct Destination<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Host name or address, lowercase.
    pub host: &'a str,
    /// Port, explicit or the scheme's default.
    pub port: u16,
}

/// Per-task facts that every request carries.
#[derive(Clone, Debug)]
pub struct TaskContext {
    /// Task id.
    pub task_id: String,
    /// SPIFFE ID of the acting agent.
    pub agent: String,
    /// Trust domain of the agent's SPIFFE ID.
    pub trust_domain: String,
    /// The user the task acts for.
    pub user: String,
    /// The task's stated intent.
    pub intent: String,
    /// Task tool scope: qualified names and patterns such as
    /// `fs__read_file`, `fs__*` or `*`.
    pub tools: Vec<String>,
    /// Agents of the delegation chain, the root task's agent first and the
    /// acting agent last; one entry for a root task.
    pub chain: Vec<String>,
    /// Number of delegation hops below the root task (0 for a root task).
    pub depth: u32,
}

impl TaskContext {
    /// Returns true when the task's tool scope covers the qualified tool
    /// name: a pattern matches exactly, or `*` matches any suffix.
    ///
    /// The engine passes the scope to policies as `context.task.tools` and
    /// does not apply it by itself.
    pub fn allows_tool(&self, qualified: &str) -> bool {
        self.tools
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => qualified.starts_with(prefix),
                None => pattern == qualified,
            })
    }
}

/// One step of a task, as Warden decides it.
#[derive(Clone, Copy, Debug)]
pub enum Step<'a> {
    /// Starting a task (`POST /v1/tasks`). The resource is
    /// `Warden::Gateway::"warden"`.
    StartTask {
        /// Requested task lifetime in seconds.
        ttl_seconds: u64,
    },
    /// Showing one tool in a `tools/list` response.
    ListTool {
        /// Qualified tool name.
        tool: &'a str,
    },
    /// Calling one tool (`tools/call`).
    CallTool {
        /// Qualified tool name.
        tool: &'a str,
        /// The `arguments` object of the call, or `Null` when absent.
        arguments: &'a serde_json::Value,
        /// True when a model response of this task asked for this exact
        /// call (`context.model_requested`).
        model_requested: bool,
        /// The task tree's memory so far (`context.memory`).
        memory: &'a TaskMemory,
    },
    /// Calling a model API through `/llm/{provider}/...`. The resource is
    /// `Warden::Model::"{provider}/{model}"`.
    CallModel {
        /// Provider name from the configuration, e.g. `openai`.
        provider: &'a str,
        /// The requested model, e.g. `gpt-4o-mini`.
        model: &'a str,
        /// True for a streaming call.
        stream: bool,
        /// The call's output token limit; 0 when the call sets none.
        max_tokens: i64,
        /// Names of the tools the call offers the model.
        tools: &'a [String],
        /// This provider's usage so far in the task and its delegated tasks.
        usage: ModelUsage,
    },
    /// Reading one resource (`resources/read`). The resource entity is
    /// `Warden::Resource::"{server}__{uri}"` in `Warden::Server::"{server}"`.
    ReadResource {
        /// Upstream server name.
        server: &'a str,
        /// Resource URI.
        uri: &'a str,
    },
    /// Getting one prompt (`prompts/get`). The prompt entity is
    /// `Warden::Prompt::"{server}__{name}"` in `Warden::Server::"{server}"`.
    GetPrompt {
        /// Upstream server name.
        server: &'a str,
        /// The upstream's prompt name.
        name: &'a str,
    },
    /// An upstream server's request to the agent during a call
    /// (`sampling/createMessage`, `elicitation/create`). The resource is
    /// `Warden::Server::"{server}"`.
    ServerRequest {
        /// Upstream server name.
        server: &'a str,
        /// The JSON-RPC method the server sent.
        method: &'a str,
        /// Qualified name of the tool whose call is in progress, or empty
        /// when the request came during another method.
        tool: &'a str,
    },
    /// A request to a plain HTTP API route (`/http/{route}/...`). The
    /// resource is `Warden::Route::"{route}"`.
    HttpRequest {
        /// Route name.
        route: &'a str,
        /// Request method, upper case.
        method: &'a str,
        /// The normalised path below the route's base URL, starting `/`.
        path: &'a str,
        /// Decoded query parameters in order.
        query: &'a [(String, String)],
        /// The parsed JSON body, or `Null` when the request has none or it
        /// is not JSON.
        body: &'a serde_json::Value,
        /// True when the request has a body.
        has_body: bool,
        /// The request's `Content-Type`, or empty.
        content_type: &'a str,
        /// The request's destination.
        destination: Destination<'a>,
        /// The task tree's memory so far (`context.memory`).
        memory: &'a TaskMemory,
    },
    /// Delegating part of the task to another agent by token exchange.
    Delegate {
        /// SPIFFE ID of the agent that receives the delegated task.
        to_agent: &'a str,
        /// Tool scope requested for the delegated task.
        tools: &'a [String],
        /// Depth of the delegated task (1 for the first hop).
        depth: u32,
    },
}

/// Model usage counted for a task tree, exposed as `context.usage`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ModelUsage {
    /// Model calls allowed so far.
    pub calls: i64,
    /// Input tokens the provider reported.
    pub input_tokens: i64,
    /// Output tokens the provider reported.
    pub output_tokens: i64,
}

impl ModelUsage {
    /// Returns input plus output tokens.
    pub fn total_tokens(&self) -> i64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// A step together with the task it belongs to.
#[derive(Clone, Copy, Debug)]
pub struct StepRequest<'a> {
    /// The task the step belongs to.
    pub task: &'a TaskContext,
    /// The step to decide.
    pub step: Step<'a>,
}

/// The decision on one step and what led to it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// Allow, deny or hold.
    pub decision: Decision,
    /// Ids of the deciding policies: the matching permits for an allow,
    /// the matching forbids or failing policies for a deny, the matching
    /// hold policies for a hold, or a `warden:` id for a built-in denial.
    pub policy_ids: Vec<String>,
    /// One sentence that a model can act on.
    pub reason: String,
    /// Evaluation or conversion errors; empty when there were none.
    pub errors: Vec<String>,
    /// For a tool call or a request with a typed body, the arguments or
    /// body converted to the schema's types, which is what Warden
    /// forwards; `None` when conversion failed or the step has neither.
    pub arguments: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(tools: &[&str]) -> TaskContext {
        TaskContext {
            task_id: "t1".to_owned(),
            agent: "spiffe://acme.test/agent/bot".to_owned(),
            trust_domain: "acme.test".to_owned(),
            user: "alice".to_owned(),
            intent: "read".to_owned(),
            tools: tools.iter().map(|tool| (*tool).to_owned()).collect(),
            chain: vec!["spiffe://acme.test/agent/bot".to_owned()],
            depth: 0,
        }
    }

    #[test]
    fn allows_tool_matches_exact_and_prefix() {
        let scoped = task(&["fs__read_file", "git__*"]);
        assert!(scoped.allows_tool("fs__read_file"));
        assert!(scoped.allows_tool("git__log"));
        assert!(!scoped.allows_tool("fs__write_file"));
        assert!(!scoped.allows_tool("fs__read_file_extra"));
    }

    #[test]
    fn allows_tool_with_star_matches_all() {
        assert!(task(&["*"]).allows_tool("mail__send_email"));
        assert!(!task(&[]).allows_tool("mail__send_email"));
    }

    #[test]
    fn qualified_name_joins_server_and_tool() {
        let tool = ToolDef {
            server: "fs".to_owned(),
            name: "read_file".to_owned(),
            description: None,
            input_schema: serde_json::json!({"type": "object"}),
            annotations: None,
            ..ToolDef::default()
        };
        assert_eq!(tool.qualified_name(), "fs__read_file");
    }
}
