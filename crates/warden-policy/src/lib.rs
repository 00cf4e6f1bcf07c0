//! Warden's Cedar policy engine.
//!
//! The engine turns each step of a task (starting it, listing a tool,
//! calling a tool, reading a resource, getting a prompt) into a Cedar
//! request and decides it as allow, deny or hold. It generates the Cedar
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

/// Policy id of a denial for arguments that do not fit the tool's schema.
pub const ARGUMENTS_POLICY_ID: &str = "warden:arguments";
/// Policy id of a denial for a tool that Warden does not know.
pub const UNKNOWN_TOOL_POLICY_ID: &str = "warden:unknown-tool";
/// Policy id of a denial because the Cedar request could not be built.
pub const REQUEST_POLICY_ID: &str = "warden:request";

/// One upstream MCP tool, as its server lists it and the operator configures it.
#[derive(Clone, Debug)]
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
}

impl ToolDef {
    /// Returns the name Warden uses everywhere: `{server}__{name}`.
    pub fn qualified_name(&self) -> String {
        format!("{}__{}", self.server, self.name)
    }
}

/// Settings of a [`PolicyEngine`] that come from the configuration.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Deployment environment, e.g. `development`, exposed to policies as
    /// `context.environment`.
    pub environment: String,
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
    /// For a tool call, the arguments converted to the schema's types,
    /// which is what Warden forwards; `None` when conversion failed or the
    /// step is not a tool call.
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
            classes: Vec::new(),
            path_arguments: None,
        };
        assert_eq!(tool.qualified_name(), "fs__read_file");
    }
}
