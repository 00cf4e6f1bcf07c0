//! The test files of `warden policy test`: reading the TOML, checking
//! every key, and building the cases.
//!
//! Every problem names the file, the table (a case by its name) and the
//! key, so that an author can fix it without guessing.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use warden_core::Decision;
use warden_policy::{ModelUsage, RouteDef, TaskContext, TaskMemory, ToolDef};

use super::{TestRoute, trust_domain};

/// Acting agent of a case whose task names none.
const DEFAULT_AGENT: &str = "spiffe://warden.local/agent/policy-test";

/// One test file, parsed and checked.
pub(super) struct TestFile {
    pub(super) path: PathBuf,
    pub(super) environment: Option<String>,
    pub(super) tools: Vec<ToolDef>,
    pub(super) routes: Vec<TestRoute>,
    pub(super) cases: Vec<Case>,
}

/// One test case.
pub(super) struct Case {
    pub(super) name: String,
    /// 1-based position in its file, for messages about unnamed cases.
    pub(super) index: usize,
    pub(super) step: CaseStep,
    pub(super) task: TaskContext,
    pub(super) memory: TaskMemory,
    pub(super) model_requested: bool,
    pub(super) expect: Decision,
    pub(super) policy_ids: Option<Vec<String>>,
}

/// The step a case decides.
pub(super) enum CaseStep {
    Tool {
        tool: String,
        arguments: Value,
    },
    ListTool {
        tool: String,
    },
    Route {
        route: String,
        method: String,
        path: String,
        query: Vec<(String, String)>,
        body: Value,
        has_body: bool,
        content_type: String,
        /// Scheme, host and port, or `None` for the route's own.
        destination: Option<(String, String, u16)>,
    },
    Model {
        provider: String,
        model: String,
        stream: bool,
        max_tokens: i64,
        tools: Vec<String>,
        usage: ModelUsage,
    },
    StartTask {
        ttl_seconds: u64,
    },
    Delegate {
        to: String,
        tools: Vec<String>,
    },
}

/// Keys that select the step of a case. Each case has exactly one.
const STEP_KEYS: [&str; 6] = [
    "tool",
    "route",
    "model",
    "list_tool",
    "start_task",
    "delegate",
];

/// A problem in a test file: the file, the table and the key at fault.
#[derive(Debug)]
pub(super) struct Invalid {
    file: PathBuf,
    /// The table, e.g. `case "mail is held"` or `[[tool]] #2`.
    table: Option<String>,
    key: Option<String>,
    message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(table) = &self.table {
            write!(f, "{table}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A problem with one key of a table.
#[derive(Debug)]
pub(super) struct KeyError {
    key: String,
    message: String,
}

impl KeyError {
    pub(super) fn new(key: impl Into<String>, message: impl Into<String>) -> KeyError {
        KeyError {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(super) fn within(self, file: &Path, table: String) -> Invalid {
        Invalid {
            file: file.to_owned(),
            table: Some(table),
            key: Some(self.key),
            message: self.message,
        }
    }
}

/// Reads the keys of one TOML table (converted to JSON) and remembers
/// which were read, so that [`Keys::finish`] can reject the rest.
struct Keys<'a> {
    map: &'a Map<String, Value>,
    /// Prefix of key names in messages, e.g. `task.`.
    prefix: String,
    read: BTreeSet<&'a str>,
}

impl<'a> Keys<'a> {
    fn new(map: &'a Map<String, Value>, prefix: &str) -> Keys<'a> {
        Keys {
            map,
            prefix: prefix.to_owned(),
            read: BTreeSet::new(),
        }
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn value(&mut self, key: &'a str) -> Option<&'a Value> {
        self.read.insert(key);
        self.map.get(key)
    }

    fn optional<T: DeserializeOwned>(&mut self, key: &'a str) -> Result<Option<T>, KeyError> {
        match self.value(key) {
            None => Ok(None),
            Some(value) => serde_json::from_value(value.clone())
                .map(Some)
                .map_err(|error| KeyError::new(self.name(key), error.to_string())),
        }
    }

    fn required<T: DeserializeOwned>(&mut self, key: &'a str) -> Result<T, KeyError> {
        self.optional(key)?
            .ok_or_else(|| KeyError::new(self.name(key), "is missing"))
    }

    fn table(&mut self, key: &'a str) -> Result<Option<Keys<'a>>, KeyError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Keys::new(map, &format!("{}.", self.name(key))))),
            Some(other) => Err(KeyError::new(
                self.name(key),
                format!("must be a table, not {other}"),
            )),
        }
    }

    /// Rejects every key that was not read.
    fn finish(self) -> Result<(), KeyError> {
        match self
            .map
            .keys()
            .find(|key| !self.read.contains(key.as_str()))
        {
            None => Ok(()),
            Some(key) => Err(KeyError::new(
                self.name(key),
                format!(
                    "unknown key; this table takes {}",
                    self.read
                        .iter()
                        .map(|key| format!("`{key}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
}

/// Reads and checks every `*.toml` file of `dir`, or `dir` itself when it
/// is a file, in file name order.
pub(super) fn load_files(dir: &Path) -> Result<Vec<TestFile>, Vec<Invalid>> {
    let whole = |message: String| {
        vec![Invalid {
            file: dir.to_owned(),
            table: None,
            key: None,
            message,
        }]
    };
    let paths = if dir.is_file() {
        vec![dir.to_owned()]
    } else {
        let entries = std::fs::read_dir(dir).map_err(|error| {
            whole(format!(
                "cannot read the test directory ({error}); pass a directory of *.toml files"
            ))
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                path.is_file()
                    && path.extension().is_some_and(|ext| ext == "toml")
                    && !path
                        .file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        paths
    };
    if paths.is_empty() {
        return Err(whole(
            "holds no *.toml test files; add a file with [[case]] tables".to_owned(),
        ));
    }
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match load_file(&path) {
            Ok(file) => files.push(file),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() && files.iter().all(|file| file.cases.is_empty()) {
        return Err(whole(
            "holds no [[case]] tables; a run without cases would pass without testing anything"
                .to_owned(),
        ));
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

fn load_file(path: &Path) -> Result<TestFile, Invalid> {
    let invalid = |message: String| Invalid {
        file: path.to_owned(),
        table: None,
        key: None,
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|error| invalid(format!("cannot read the file: {error}")))?;
    let document: toml::Table =
        toml::from_str(&text).map_err(|error| invalid(format!("is not valid TOML: {error}")))?;
    let document = serde_json::to_value(document)
        .map_err(|error| invalid(format!("cannot be read as JSON values: {error}")))?;
    let empty = Map::new();
    let map = document.as_object().unwrap_or(&empty);
    let mut keys = Keys::new(map, "");
    let environment = keys
        .optional::<String>("environment")
        .map_err(|error| error_at_top(path, error))?;
    let tool_tables = top_tables(&mut keys, "tool", path)?;
    let route_tables = top_tables(&mut keys, "route", path)?;
    let case_tables = top_tables(&mut keys, "case", path)?;
    keys.finish().map_err(|error| error_at_top(path, error))?;

    let mut tools = Vec::with_capacity(tool_tables.len());
    for (index, table) in tool_tables.iter().enumerate() {
        let tool = parse_tool(table)
            .map_err(|error| error.within(path, format!("[[tool]] #{}", index + 1)))?;
        tools.push(tool);
    }
    let mut routes = Vec::with_capacity(route_tables.len());
    for (index, table) in route_tables.iter().enumerate() {
        let route = parse_route(table)
            .map_err(|error| error.within(path, format!("[[route]] #{}", index + 1)))?;
        routes.push(route);
    }
    let mut cases = Vec::with_capacity(case_tables.len());
    for (index, table) in case_tables.iter().enumerate() {
        let label = match table.get("name").and_then(Value::as_str) {
            Some(name) => format!("case {name:?}"),
            None => format!("[[case]] #{}", index + 1),
        };
        let case = parse_case(table, index + 1).map_err(|error| error.within(path, label))?;
        cases.push(case);
    }
    Ok(TestFile {
        path: path.to_owned(),
        environment,
        tools,
        routes,
        cases,
    })
}

/// Reads an array of tables such as `[[case]]`, empty when absent.
fn top_tables<'a>(
    keys: &mut Keys<'a>,
    key: &'a str,
    path: &Path,
) -> Result<Vec<Map<String, Value>>, Invalid> {
    keys.optional::<Vec<Map<String, Value>>>(key)
        .map(Option::unwrap_or_default)
        .map_err(|error| error_at_top(path, error))
}

fn error_at_top(path: &Path, error: KeyError) -> Invalid {
    Invalid {
        file: path.to_owned(),
        table: None,
        key: Some(error.key),
        message: error.message,
    }
}

fn parse_tool(table: &Map<String, Value>) -> Result<ToolDef, KeyError> {
    let mut keys = Keys::new(table, "");
    let tool = ToolDef {
        server: keys.required("server")?,
        name: keys.required("name")?,
        description: keys.optional("description")?,
        input_schema: keys
            .optional("input_schema")?
            .unwrap_or_else(|| json!({ "type": "object", "properties": {} })),
        annotations: keys.optional("annotations")?,
        classes: keys.optional("classes")?.unwrap_or_default(),
        path_arguments: keys.optional("path_arguments")?,
        labels: keys.optional("labels")?.unwrap_or_default(),
        sum_arguments: keys.optional("sum_arguments")?.unwrap_or_default(),
    };
    keys.finish()?;
    Ok(tool)
}

fn parse_route(table: &Map<String, Value>) -> Result<TestRoute, KeyError> {
    let mut keys = Keys::new(table, "");
    let definition = RouteDef {
        name: keys.required("name")?,
        classes: keys.optional("classes")?.unwrap_or_default(),
        query_params: keys.optional("query_params")?.unwrap_or_default(),
        body_schema: keys.optional("body_schema")?,
        host: keys
            .optional::<String>("host")?
            .unwrap_or_default()
            .to_ascii_lowercase(),
        labels: keys.optional("labels")?.unwrap_or_default(),
    };
    let scheme: String = keys
        .optional("scheme")?
        .unwrap_or_else(|| "https".to_owned());
    if scheme != "https" && scheme != "http" {
        return Err(KeyError::new(
            "scheme",
            format!("must be http or https, not {scheme:?}"),
        ));
    }
    let default_port = if scheme == "http" { 80 } else { 443 };
    let port = keys.optional("port")?.unwrap_or(default_port);
    keys.finish()?;
    Ok(TestRoute {
        definition,
        scheme,
        port,
    })
}

fn parse_case(table: &Map<String, Value>, index: usize) -> Result<Case, KeyError> {
    let mut keys = Keys::new(table, "");
    let name: String = keys.required("name")?;

    let present: Vec<&str> = STEP_KEYS
        .into_iter()
        .filter(|key| table.contains_key(*key))
        .collect();
    let kind = match present.as_slice() {
        [kind] => *kind,
        [] => {
            return Err(KeyError::new(
                "tool",
                format!(
                    "is missing; a case needs one of {}",
                    STEP_KEYS.map(|key| format!("`{key}`")).join(", ")
                ),
            ));
        }
        several => {
            return Err(KeyError::new(
                several[1],
                format!(
                    "cannot be combined with `{}`; a case decides one step",
                    several[0]
                ),
            ));
        }
    };

    let task = parse_task(keys.table("task")?)?;
    let memory = parse_memory(keys.table("memory")?)?;
    let step = parse_step(&mut keys, kind, &task)?;
    let model_requested = if kind == "tool" {
        keys.optional("model_requested")?.unwrap_or(false)
    } else {
        false
    };

    let expect_text: String = keys.required("expect")?;
    let expect = match expect_text.as_str() {
        "allow" => Decision::Allow,
        "deny" => Decision::Deny,
        "hold" => Decision::Hold,
        other => {
            return Err(KeyError::new(
                "expect",
                format!("must be allow, deny or hold, not {other:?}"),
            ));
        }
    };
    let policy_ids = keys.optional("policy_ids")?;
    keys.finish()?;
    Ok(Case {
        name,
        index,
        step,
        task,
        memory,
        model_requested,
        expect,
        policy_ids,
    })
}

fn parse_step<'a>(
    keys: &mut Keys<'a>,
    kind: &'a str,
    task: &TaskContext,
) -> Result<CaseStep, KeyError> {
    let step = match kind {
        "tool" => CaseStep::Tool {
            tool: keys.required("tool")?,
            arguments: keys
                .optional::<Value>("arguments")?
                .unwrap_or_else(|| json!({})),
        },
        "list_tool" => CaseStep::ListTool {
            tool: keys.required("list_tool")?,
        },
        "route" => parse_route_step(keys)?,
        "model" => parse_model_step(keys)?,
        "start_task" => {
            let mut start = keys.table("start_task")?.ok_or_else(|| {
                KeyError::new(
                    "start_task",
                    "must be a table such as { ttl_seconds = 300 }",
                )
            })?;
            let ttl_seconds = start.optional("ttl_seconds")?.unwrap_or(300);
            start.finish()?;
            CaseStep::StartTask { ttl_seconds }
        }
        _ => {
            let mut delegate = keys.table("delegate")?.ok_or_else(|| {
                KeyError::new(
                    "delegate",
                    "must be a table such as { to = \"spiffe://...\" }",
                )
            })?;
            let to = delegate.required("to")?;
            let tools = delegate
                .optional("tools")?
                .unwrap_or_else(|| task.tools.clone());
            delegate.finish()?;
            CaseStep::Delegate { to, tools }
        }
    };
    Ok(step)
}

fn parse_route_step(keys: &mut Keys<'_>) -> Result<CaseStep, KeyError> {
    let route = keys.required("route")?;
    let method = keys
        .optional::<String>("method")?
        .unwrap_or_else(|| "GET".to_owned())
        .to_ascii_uppercase();
    let path: String = keys.optional("path")?.unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/') {
        return Err(KeyError::new(
            "path",
            format!("must start with /, not {path:?}"),
        ));
    }
    let query = match keys.value("query") {
        None => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, value)| match value {
                Value::String(text) => Ok((name.clone(), text.clone())),
                other => Err(KeyError::new(
                    format!("query.{name}"),
                    format!("must be a string, not {other}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            serde_json::from_value::<Vec<(String, String)>>(other.clone()).map_err(|_| {
                KeyError::new(
                    "query",
                    "must be a table of strings or an array of [name, value] pairs",
                )
            })?
        }
    };
    let body = keys.optional::<Value>("body")?;
    let has_body = body.is_some();
    let content_type = keys.optional("content_type")?.unwrap_or_else(|| {
        if has_body {
            "application/json".to_owned()
        } else {
            String::new()
        }
    });
    let destination = match keys.table("destination")? {
        None => None,
        Some(mut table) => {
            let scheme: String = table.required("scheme")?;
            let host: String = table.required("host")?;
            let default_port = if scheme == "http" { 80 } else { 443 };
            let port = table.optional("port")?.unwrap_or(default_port);
            table.finish()?;
            Some((scheme, host.to_ascii_lowercase(), port))
        }
    };
    Ok(CaseStep::Route {
        route,
        method,
        path,
        query,
        body: body.unwrap_or(Value::Null),
        has_body,
        content_type,
        destination,
    })
}

fn parse_model_step(keys: &mut Keys<'_>) -> Result<CaseStep, KeyError> {
    let mut model = keys.table("model")?.ok_or_else(|| {
        KeyError::new(
            "model",
            "must be a table such as { provider = \"openai\", model = \"gpt-4o-mini\" }",
        )
    })?;
    let provider = model.required("provider")?;
    let name = model.required("model")?;
    let stream = model.optional("stream")?.unwrap_or(false);
    let max_tokens = model.optional("max_tokens")?.unwrap_or(0);
    let tools = model.optional("tools")?.unwrap_or_default();
    let usage = match model.table("usage")? {
        None => ModelUsage::default(),
        Some(mut table) => {
            let usage = ModelUsage {
                calls: table.optional("calls")?.unwrap_or(0),
                input_tokens: table.optional("input_tokens")?.unwrap_or(0),
                output_tokens: table.optional("output_tokens")?.unwrap_or(0),
            };
            table.finish()?;
            usage
        }
    };
    model.finish()?;
    Ok(CaseStep::Model {
        provider,
        model: name,
        stream,
        max_tokens,
        tools,
        usage,
    })
}

fn parse_task(keys: Option<Keys<'_>>) -> Result<TaskContext, KeyError> {
    let Some(mut keys) = keys else {
        return Ok(task_context(
            DEFAULT_AGENT.to_owned(),
            "policy test".to_owned(),
            "policy-test@warden.local".to_owned(),
            vec!["*".to_owned()],
            vec![DEFAULT_AGENT.to_owned()],
        ));
    };
    let intent = keys
        .optional("intent")?
        .unwrap_or_else(|| "policy test".to_owned());
    let user = keys
        .optional("user")?
        .unwrap_or_else(|| "policy-test@warden.local".to_owned());
    let tools = keys
        .optional("tools")?
        .unwrap_or_else(|| vec!["*".to_owned()]);
    let agent: Option<String> = keys.optional("agent")?;
    let agents: Option<Vec<String>> = keys.optional("agents")?;
    let depth: Option<u32> = keys.optional("depth")?;
    let chain = match (agents, depth) {
        (Some(agents), depth) => {
            let hops = agents.len().saturating_sub(1);
            if agents.is_empty() {
                return Err(KeyError::new(
                    "task.agents",
                    "must list at least the acting agent",
                ));
            }
            if depth.is_some_and(|depth| depth as usize != hops) {
                return Err(KeyError::new(
                    "task.depth",
                    format!(
                        "is {} but task.agents has {} entries; depth is the number of agents minus one",
                        depth.unwrap_or_default(),
                        agents.len()
                    ),
                ));
            }
            if let Some(agent) = &agent
                && agents.last() != Some(agent)
            {
                return Err(KeyError::new(
                    "task.agent",
                    "must be the last entry of task.agents, the acting agent",
                ));
            }
            agents
        }
        (None, Some(depth)) if depth > 0 => {
            return Err(KeyError::new(
                "task.depth",
                format!(
                    "is {depth} but task.agents is missing; list the delegation chain, root agent first and acting agent last ({} entries)",
                    depth + 1
                ),
            ));
        }
        (None, _) => vec![agent.clone().unwrap_or_else(|| DEFAULT_AGENT.to_owned())],
    };
    keys.finish()?;
    let agent = chain.last().cloned().unwrap_or_default();
    Ok(task_context(agent, intent, user, tools, chain))
}

fn task_context(
    agent: String,
    intent: String,
    user: String,
    tools: Vec<String>,
    chain: Vec<String>,
) -> TaskContext {
    TaskContext {
        task_id: "policy-test".to_owned(),
        trust_domain: trust_domain(&agent),
        agent,
        user,
        intent,
        tools,
        depth: u32::try_from(chain.len().saturating_sub(1)).unwrap_or(u32::MAX),
        chain,
    }
}

fn parse_memory(keys: Option<Keys<'_>>) -> Result<TaskMemory, KeyError> {
    let Some(mut keys) = keys else {
        return Ok(TaskMemory::default());
    };
    let mut memory = TaskMemory {
        labels: keys.optional("labels")?.unwrap_or_default(),
        calls: keys.optional("calls")?.unwrap_or(0),
        class_calls: keys.optional("class_calls")?.unwrap_or_default(),
        sums: Default::default(),
    };
    let sums: Map<String, Value> = keys.optional("sums")?.unwrap_or_default();
    for (name, value) in sums {
        let units = warden_policy::sum_units(&value).ok_or_else(|| {
            KeyError::new(
                format!("memory.sums.{name}"),
                format!("must be a decimal number with at most 4 fraction digits, not {value}"),
            )
        })?;
        memory.sums.insert(name, units);
    }
    keys.finish()?;
    Ok(memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Map<String, Value> {
        let parsed: toml::Table = toml::from_str(text).expect("valid TOML");
        match serde_json::to_value(parsed).expect("JSON") {
            Value::Object(map) => map,
            other => panic!("not a table: {other}"),
        }
    }

    #[test]
    fn parse_case_reads_tool_case() {
        let case = parse_case(
            &table(
                r#"
                name = "mail"
                tool = "mail__send_email"
                arguments = { to = "bob@example.net" }
                memory = { labels = ["untrusted-content"], calls = 3, class_calls = { read = 3 }, sums = { amount = "120.5" } }
                expect = "hold"
                policy_ids = ["hold-external"]
                "#,
            ),
            1,
        )
        .expect("valid case");
        assert_eq!(case.expect, Decision::Hold);
        assert_eq!(case.memory.calls, 3);
        assert_eq!(case.memory.sums.get("amount"), Some(&1_205_000));
        assert_eq!(case.task.tools, vec!["*".to_owned()]);
        assert_eq!(case.task.depth, 0);
    }

    #[test]
    fn parse_case_rejects_unknown_key() {
        let error = parse_case(
            &table("name = \"x\"\ntool = \"a__b\"\nexpect = \"allow\"\nexpct = \"deny\""),
            1,
        )
        .err()
        .expect("an unknown key is rejected");
        assert_eq!(error.key, "expct");
    }

    #[test]
    fn parse_case_rejects_unknown_decision() {
        let error = parse_case(
            &table("name = \"x\"\ntool = \"a__b\"\nexpect = \"maybe\""),
            1,
        )
        .err()
        .expect("an unknown decision is rejected");
        assert_eq!(error.key, "expect");
        assert!(error.message.contains("\"maybe\""), "{}", error.message);
    }

    #[test]
    fn parse_case_rejects_two_steps() {
        let error = parse_case(
            &table("name = \"x\"\ntool = \"a__b\"\nroute = \"r\"\nexpect = \"allow\""),
            1,
        )
        .err()
        .expect("two steps are rejected");
        assert_eq!(error.key, "route");
    }

    #[test]
    fn parse_case_rejects_arguments_on_route_case() {
        let error = parse_case(
            &table("name = \"x\"\nroute = \"r\"\narguments = {}\nexpect = \"allow\""),
            1,
        )
        .err()
        .expect("arguments on a route case are rejected");
        assert_eq!(error.key, "arguments");
    }

    #[test]
    fn parse_task_needs_agents_for_depth() {
        let error = parse_case(
            &table("name = \"x\"\ntool = \"a__b\"\ntask = { depth = 1 }\nexpect = \"allow\""),
            1,
        )
        .err()
        .expect("depth without agents is rejected");
        assert_eq!(error.key, "task.depth");
    }

    #[test]
    fn parse_task_takes_depth_from_agents() {
        let case = parse_case(
            &table(
                "name = \"x\"\ntool = \"a__b\"\ntask = { agents = [\"spiffe://a.test/agent/root\", \"spiffe://a.test/agent/helper\"] }\nexpect = \"allow\"",
            ),
            1,
        )
        .expect("valid case");
        assert_eq!(case.task.depth, 1);
        assert_eq!(case.task.agent, "spiffe://a.test/agent/helper");
        assert_eq!(case.task.trust_domain, "a.test");
    }

    #[test]
    fn parse_memory_rejects_bad_sum() {
        let error = parse_case(
            &table(
                "name = \"x\"\ntool = \"a__b\"\nmemory = { sums = { amount = \"1.23456\" } }\nexpect = \"allow\"",
            ),
            1,
        )
        .err()
        .expect("a sum with 5 fraction digits is rejected");
        assert_eq!(error.key, "memory.sums.amount");
    }
}
