//! Tests of loading and deciding through the public engine API.

use serde_json::{Value, json};

use crate::{
    ARGUMENTS_POLICY_ID, Decision, EngineOptions, ModelUsage, Outcome, PolicyEngine,
    PolicyLoadError, REQUEST_POLICY_ID, Step, StepRequest, TaskContext, TaskMemory, ToolDef,
    UNKNOWN_TOOL_POLICY_ID,
};

fn tool(server: &str, name: &str, input_schema: Value) -> ToolDef {
    ToolDef {
        server: server.to_owned(),
        name: name.to_owned(),
        description: None,
        input_schema,
        annotations: None,
        classes: Vec::new(),
        path_arguments: None,
        labels: Vec::new(),
        sum_arguments: Vec::new(),
    }
}

fn tools() -> Vec<ToolDef> {
    let mut read_file = tool(
        "fs",
        "read_file",
        json!({
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"]
        }),
    );
    read_file.classes = vec!["read".to_owned()];
    read_file.annotations = Some(json!({"readOnlyHint": true, "destructiveHint": false}));
    let mut write_file = tool(
        "fs",
        "write_file",
        json!({
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"]
        }),
    );
    write_file.classes = vec!["write".to_owned()];
    let transfer = tool(
        "pay",
        "transfer",
        json!({
            "type": "object",
            "properties": {
                "amount": {"type": "integer"},
                "fee": {"type": "number"},
                "urgent": {"type": "boolean"},
                "options": {
                    "type": "object",
                    "properties": {"depth": {"type": "integer"}},
                    "required": ["depth"]
                }
            },
            "required": ["amount"]
        }),
    );
    let mail_send = tool(
        "mail",
        "send_email",
        json!({"type": "object", "properties": {"to": {"type": "string"}}}),
    );
    let evil_send = tool(
        "evil",
        "send_email",
        json!({"type": "object", "properties": {"to": {"type": "string"}}}),
    );
    vec![read_file, write_file, transfer, mail_send, evil_send]
}

fn options() -> EngineOptions {
    EngineOptions {
        environment: "development".to_owned(),
        routes: Vec::new(),
    }
}

fn engine(policies: &str) -> PolicyEngine {
    let sources = vec![("main.cedar".to_owned(), policies.to_owned())];
    PolicyEngine::from_sources(&sources, &tools(), options())
        .unwrap_or_else(|error| panic!("policies failed to load:\n{error}"))
}

fn load_error(sources: &[(&str, &str)]) -> PolicyLoadError {
    let sources: Vec<(String, String)> = sources
        .iter()
        .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
        .collect();
    match PolicyEngine::from_sources(&sources, &tools(), options()) {
        Ok(_) => panic!("policies loaded but should have failed"),
        Err(error) => error,
    }
}

fn task() -> TaskContext {
    TaskContext {
        task_id: "task-1".to_owned(),
        agent: "spiffe://acme.test/agent/support-bot".to_owned(),
        trust_domain: "acme.test".to_owned(),
        user: "alice".to_owned(),
        intent: "summarise reports".to_owned(),
        tools: vec!["fs__read_file".to_owned(), "pay__*".to_owned()],
        chain: vec!["spiffe://acme.test/agent/support-bot".to_owned()],
        depth: 0,
    }
}

fn call(engine: &PolicyEngine, tool: &str, arguments: Value) -> Outcome {
    let task = task();
    engine.decide(&StepRequest {
        task: &task,
        step: Step::CallTool {
            tool,
            arguments: &arguments,
            model_requested: false,
            memory: no_memory(),
        },
    })
}

fn no_memory() -> &'static TaskMemory {
    static EMPTY: std::sync::OnceLock<TaskMemory> = std::sync::OnceLock::new();
    EMPTY.get_or_init(TaskMemory::default)
}

fn decide(engine: &PolicyEngine, step: Step<'_>) -> Outcome {
    let task = task();
    engine.decide(&StepRequest { task: &task, step })
}

const PERMIT_ALL: &str = "permit(principal, action, resource);\n";

const DATA_ONLY: &str = r#"
@id("read-data")
permit(principal, action == Warden::Action::"fs__read_file", resource)
when { context.arguments.path in Warden::Path::"/srv/data" };
"#;

#[test]
fn engine_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicyEngine>();
}

#[test]
fn path_inside_allowed_directory_is_allowed() {
    let outcome = call(
        &engine(DATA_ONLY),
        "fs__read_file",
        json!({"path": "/srv/data/a.txt"}),
    );
    assert_eq!(outcome.decision, Decision::Allow);
    assert_eq!(outcome.policy_ids, vec!["read-data"]);
}

#[test]
fn path_prefix_sibling_is_denied() {
    let outcome = call(
        &engine(DATA_ONLY),
        "fs__read_file",
        json!({"path": "/srv/data_private/key.pem"}),
    );
    assert_eq!(outcome.decision, Decision::Deny);
    assert!(outcome.policy_ids.is_empty());
    assert_eq!(
        outcome.reason,
        "no policy permits calling tool fs__read_file with these arguments"
    );
}

#[test]
fn path_escapes_are_denied() {
    let engine = engine(DATA_ONLY);
    let escapes = [
        "/srv/data/../data_private/key.pem",
        "/srv/data/../../etc/passwd",
        "/srv/data/./../data_private",
        "\\srv\\data\\..\\data_private\\key.pem",
        "srv/data/a.txt",
        "/srv",
        "/srv/data_private",
    ];
    for path in escapes {
        let outcome = call(&engine, "fs__read_file", json!({ "path": path }));
        assert_eq!(outcome.decision, Decision::Deny, "{path} was not denied");
    }
}

#[test]
fn path_spellings_inside_directory_are_allowed() {
    let engine = engine(DATA_ONLY);
    for path in [
        "/srv/data",
        "/srv//data/./x/../a.txt",
        "/srv/data/",
        "/../srv/data/a",
    ] {
        let outcome = call(&engine, "fs__read_file", json!({ "path": path }));
        assert_eq!(outcome.decision, Decision::Allow, "{path} was not allowed");
    }
}

#[test]
fn path_is_forwarded_as_given() {
    let outcome = call(
        &engine(DATA_ONLY),
        "fs__read_file",
        json!({"path": "/srv/data/x/../a.txt"}),
    );
    assert_eq!(
        outcome.arguments,
        Some(json!({"path": "/srv/data/x/../a.txt"}))
    );
}

#[test]
fn unscoped_arguments_forbid_fails_to_load() {
    // `context.arguments` exists only on tool call actions, so a forbid
    // that reads it for every action cannot silently drop out at run time.
    let policies = format!(
        "{PERMIT_ALL}forbid(principal, action, resource) \
         when {{ context.arguments.amount > 1000 }};"
    );
    let error = load_error(&[("main.cedar", &policies)]);
    let problems = error.problems();
    assert_eq!(problems.len(), 1, "{error}");
    assert_eq!(problems[0].line, 2);
    assert_eq!(problems[0].policy_id, "main.cedar:1");
    assert!(
        problems[0]
            .message
            .contains("more problems at this location"),
        "{error}"
    );
}

#[test]
fn string_amount_is_converted_before_forbid() {
    let policies = format!(
        "{PERMIT_ALL}forbid(principal, action == Warden::Action::\"pay__transfer\", resource) \
         when {{ context.arguments.amount > 1000 }};"
    );
    let outcome = call(
        &engine(&policies),
        "pay__transfer",
        json!({"amount": "5000"}),
    );
    assert_eq!(outcome.decision, Decision::Deny);
    assert_eq!(outcome.policy_ids, vec!["main.cedar:1"]);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
}

#[test]
fn converted_arguments_are_forwarded() {
    let outcome = call(
        &engine(PERMIT_ALL),
        "pay__transfer",
        json!({"amount": "5000", "urgent": "true", "fee": "0.25"}),
    );
    assert_eq!(outcome.decision, Decision::Allow);
    assert_eq!(
        outcome.arguments,
        Some(json!({"amount": 5000, "fee": 0.25, "urgent": true}))
    );
}

#[test]
fn evaluation_error_denies_despite_permit() {
    // Adding to i64::MAX overflows at run time, which validation cannot see.
    let policies = format!(
        "{PERMIT_ALL}forbid(principal, action == Warden::Action::\"pay__transfer\", resource) \
         when {{ context.arguments.amount + 9223372036854775807 > 0 }};"
    );
    let outcome = call(&engine(&policies), "pay__transfer", json!({"amount": 1}));
    assert_eq!(outcome.decision, Decision::Deny);
    assert_eq!(outcome.policy_ids, vec!["main.cedar:1"]);
    assert_eq!(outcome.errors.len(), 1);
    assert!(
        outcome.errors[0].contains("overflow"),
        "{:?}",
        outcome.errors
    );
    assert!(
        outcome.reason.contains("failed to evaluate"),
        "{}",
        outcome.reason
    );
}

#[test]
fn evaluation_error_in_permit_denies() {
    let policies = "permit(principal, action, resource) when { true };\n\
                    permit(principal, action == Warden::Action::\"pay__transfer\", resource) \
                    when { context.arguments.amount * 9223372036854775807 > 0 };";
    let outcome = call(&engine(policies), "pay__transfer", json!({"amount": 2}));
    assert_eq!(outcome.decision, Decision::Deny);
    assert_eq!(outcome.policy_ids, vec!["main.cedar:1"]);
}

#[test]
fn evaluation_error_in_hold_policy_denies() {
    let policies = format!(
        "{PERMIT_ALL}@hold forbid(principal, action == Warden::Action::\"pay__transfer\", resource) \
         when {{ context.arguments.amount - 9223372036854775807 < -9223372036854775807 }};"
    );
    let outcome = call(&engine(&policies), "pay__transfer", json!({"amount": -5}));
    assert_eq!(outcome.decision, Decision::Deny);
    assert_eq!(outcome.policy_ids, vec!["main.cedar:1"]);
    assert!(!outcome.errors.is_empty());
}

#[test]
fn list_tools_policy_reading_arguments_fails_to_load() {
    let policy = "permit(principal, action == Warden::Action::\"list_tools\", resource) \
                  when { context.arguments.path == \"x\" };";
    let error = load_error(&[("list.cedar", policy)]);
    let problems = error.problems();
    assert_eq!(problems.len(), 1, "{error}");
    assert_eq!(problems[0].file, "list.cedar");
    assert_eq!(problems[0].policy_id, "list.cedar:0");
    assert!(problems[0].message.contains("arguments"), "{error}");
}

#[test]
fn read_resource_policy_reading_arguments_fails_to_load() {
    let policy = "permit(principal, action == Warden::Action::\"read_resource\", resource) \
                  when { context.arguments.path == \"x\" };";
    let error = load_error(&[("resources.cedar", policy)]);
    assert_eq!(error.problems().len(), 1, "{error}");
}

#[test]
fn undeclared_argument_field_fails_to_load() {
    let policy = "permit(principal, action == Warden::Action::\"fs__read_file\", resource) \
                  when { context.arguments.mode == \"x\" };";
    let error = load_error(&[("main.cedar", policy)]);
    assert_eq!(error.problems().len(), 1, "{error}");
}

#[test]
fn optional_argument_without_has_fails_to_load() {
    let policy = "forbid(principal, action == Warden::Action::\"pay__transfer\", resource) \
                  when { context.arguments.urgent };";
    let error = load_error(&[("main.cedar", policy)]);
    assert_eq!(error.problems().len(), 1, "{error}");
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let text = "permit(principal, action, resource);\n\n\
                forbid(principal, action, resource) when { context.x == };\n";
    let error = load_error(&[("broken.cedar", text)]);
    let problems = error.problems();
    assert_eq!(problems.len(), 1, "{error}");
    assert_eq!(problems[0].file, "broken.cedar");
    assert_eq!(problems[0].line, 3);
    assert_eq!(problems[0].policy_id, "broken.cedar:1");
    assert!(error.to_string().starts_with("broken.cedar:3:"), "{error}");
    assert!(
        error.to_string().ends_with("(policy broken.cedar:1)"),
        "{error}"
    );
}

#[test]
fn validation_error_names_line_of_policy() {
    let text = "permit(principal, action, resource);\n\
                @id(\"bad-field\")\n\
                permit(principal, action == Warden::Action::\"list_tools\", resource)\n\
                when { context.nothing };\n";
    let error = load_error(&[("main.cedar", text)]);
    let problems = error.problems();
    assert_eq!(problems.len(), 1, "{error}");
    assert_eq!(problems[0].line, 4, "{error}");
    assert_eq!(problems[0].policy_id, "bad-field");
}

#[test]
fn all_problems_are_reported_together() {
    let error = load_error(&[
        (
            "a.cedar",
            "permit(principal, action, resource) when { 1 + };",
        ),
        (
            "b.cedar",
            "permit(principal, action, resource) when { context.nothing };",
        ),
    ]);
    let files: Vec<&str> = error.problems().iter().map(|p| p.file.as_str()).collect();
    assert_eq!(files, vec!["a.cedar", "b.cedar"], "{error}");
}

#[test]
fn duplicate_id_across_files_fails_to_load() {
    let policy = "@id(\"same\") permit(principal, action, resource);";
    let error = load_error(&[("a.cedar", policy), ("b.cedar", policy)]);
    let problems = error.problems();
    assert_eq!(problems.len(), 1, "{error}");
    assert_eq!(problems[0].file, "b.cedar");
    assert!(problems[0].message.contains("a.cedar:1:1"), "{error}");
}

#[test]
fn reserved_id_prefix_fails_to_load() {
    let error = load_error(&[(
        "main.cedar",
        "@id(\"warden:arguments\") permit(principal, action, resource);",
    )]);
    assert_eq!(error.problems().len(), 1, "{error}");
}

#[test]
fn template_fails_to_load() {
    let error = load_error(&[(
        "main.cedar",
        "permit(principal == ?principal, action, resource);",
    )]);
    assert_eq!(error.problems().len(), 1, "{error}");
}

#[test]
fn hold_policy_turns_allow_into_hold() {
    let policies = format!(
        "{PERMIT_ALL}@id(\"big-transfer\")\n\
         @hold(\"transfers above 1000 need a human approval\")\n\
         forbid(principal, action == Warden::Action::\"pay__transfer\", resource) \
         when {{ context.arguments.amount > 1000 }};"
    );
    let engine = engine(&policies);
    let large = call(&engine, "pay__transfer", json!({"amount": 5000}));
    assert_eq!(large.decision, Decision::Hold);
    assert_eq!(large.policy_ids, vec!["big-transfer"]);
    assert_eq!(large.reason, "transfers above 1000 need a human approval");
    let small = call(&engine, "pay__transfer", json!({"amount": 10}));
    assert_eq!(small.decision, Decision::Allow);
}

#[test]
fn hold_without_text_has_default_reason() {
    let policies = format!("{PERMIT_ALL}@hold forbid(principal, action, resource);");
    let outcome = call(&engine(&policies), "pay__transfer", json!({"amount": 1}));
    assert_eq!(outcome.decision, Decision::Hold);
    assert_eq!(
        outcome.reason,
        "calling tool pay__transfer with these arguments needs a human approval (policy main.cedar:1)"
    );
}

#[test]
fn plain_forbid_wins_over_hold() {
    let policies = format!(
        "{PERMIT_ALL}@hold forbid(principal, action, resource);\n\
         forbid(principal, action == Warden::Action::\"pay__transfer\", resource);"
    );
    let outcome = call(&engine(&policies), "pay__transfer", json!({"amount": 1}));
    assert_eq!(outcome.decision, Decision::Deny);
    assert_eq!(outcome.policy_ids, vec!["main.cedar:2"]);
}

#[test]
fn hold_without_permit_is_deny() {
    let policies = "@hold forbid(principal, action, resource);";
    let outcome = call(&engine(policies), "pay__transfer", json!({"amount": 1}));
    assert_eq!(outcome.decision, Decision::Deny);
    assert!(outcome.policy_ids.is_empty());
}

#[test]
fn hold_on_permit_fails_to_load() {
    let error = load_error(&[("main.cedar", "@hold permit(principal, action, resource);")]);
    assert_eq!(error.problems().len(), 1, "{error}");
    assert!(error.problems()[0].message.contains("@hold"), "{error}");
}

#[test]
fn forbid_reason_comes_from_annotation() {
    let policies = format!(
        "{PERMIT_ALL}@reason(\"writes are disabled during the audit; read instead\")\n\
         forbid(principal, action in Warden::Action::\"call_tool\", resource) \
         when {{ resource.classes.contains(\"write\") }};"
    );
    let outcome = call(
        &engine(&policies),
        "fs__write_file",
        json!({"path": "/tmp/x", "content": "y"}),
    );
    assert_eq!(outcome.decision, Decision::Deny);
    assert_eq!(
        outcome.reason,
        "writes are disabled during the audit; read instead"
    );
}

#[test]
fn forbid_without_reason_names_policy() {
    let policies = format!("{PERMIT_ALL}@id(\"no-writes\") forbid(principal, action, resource);");
    let outcome = call(
        &engine(&policies),
        "fs__write_file",
        json!({"path": "/tmp/x", "content": "y"}),
    );
    assert_eq!(outcome.reason, "denied by policy no-writes");
    assert_eq!(outcome.policy_ids, vec!["no-writes"]);
}

#[test]
fn allow_lists_matching_permits() {
    let policies = "permit(principal, action, resource);\n\
                    @id(\"reads\") \
                    permit(principal, action in Warden::Action::\"call_tool\", resource) \
                    when { resource.read_only };";
    let outcome = call(&engine(policies), "fs__read_file", json!({"path": "/a"}));
    assert_eq!(outcome.decision, Decision::Allow);
    assert_eq!(outcome.policy_ids, vec!["main.cedar:0", "reads"]);
}

#[test]
fn unknown_argument_is_denied() {
    let outcome = call(
        &engine(PERMIT_ALL),
        "fs__read_file",
        json!({"path": "/srv/data/a", "mode": "raw"}),
    );
    assert_eq!(outcome.decision, Decision::Deny);
    assert_eq!(outcome.policy_ids, vec![ARGUMENTS_POLICY_ID]);
    assert!(outcome.reason.contains("\"mode\""), "{}", outcome.reason);
    assert!(
        outcome.reason.contains("fs__read_file"),
        "{}",
        outcome.reason
    );
    assert_eq!(outcome.arguments, None);
}

#[test]
fn missing_required_argument_is_denied() {
    let outcome = call(
        &engine(PERMIT_ALL),
        "fs__write_file",
        json!({"path": "/tmp/a"}),
    );
    assert_eq!(outcome.decision, Decision::Deny);
    assert_eq!(outcome.policy_ids, vec![ARGUMENTS_POLICY_ID]);
    assert_eq!(
        outcome.reason,
        "required argument \"content\" of tool fs__write_file is missing; pass a string"
    );
}

#[test]
fn unconvertible_argument_names_types() {
    let outcome = call(
        &engine(PERMIT_ALL),
        "pay__transfer",
        json!({"amount": "lots"}),
    );
    assert_eq!(outcome.policy_ids, vec![ARGUMENTS_POLICY_ID]);
    assert_eq!(
        outcome.reason,
        "argument \"amount\" of tool pay__transfer must be an integer, \
         but the call passed the string \"lots\""
    );
    assert_eq!(outcome.errors, vec![outcome.reason.clone()]);
}

#[test]
fn decimal_argument_compares_in_policy() {
    let policies = format!(
        "{PERMIT_ALL}forbid(principal, action == Warden::Action::\"pay__transfer\", resource) \
         when {{ context.arguments has fee && \
         context.arguments.fee.greaterThan(decimal(\"100.5\")) }};"
    );
    let engine = engine(&policies);
    let high = call(
        &engine,
        "pay__transfer",
        json!({"amount": 1, "fee": 100.75}),
    );
    assert_eq!(high.decision, Decision::Deny);
    let low = call(
        &engine,
        "pay__transfer",
        json!({"amount": 1, "fee": "100.4"}),
    );
    assert_eq!(low.decision, Decision::Allow);
    let whole = call(&engine, "pay__transfer", json!({"amount": 1, "fee": 101}));
    assert_eq!(whole.decision, Decision::Deny);
}

#[test]
fn decimal_with_five_fraction_digits_is_denied() {
    let outcome = call(
        &engine(PERMIT_ALL),
        "pay__transfer",
        json!({"amount": 1, "fee": 0.12345}),
    );
    assert_eq!(outcome.policy_ids, vec![ARGUMENTS_POLICY_ID]);
    assert!(
        outcome.reason.contains("at most 4 fraction digits"),
        "{}",
        outcome.reason
    );
}

#[test]
fn nested_argument_is_visible_to_policy() {
    let policies = format!(
        "{PERMIT_ALL}forbid(principal, action == Warden::Action::\"pay__transfer\", resource) \
         when {{ context.arguments has options && context.arguments.options.depth > 3 }};"
    );
    let engine = engine(&policies);
    let deep = call(
        &engine,
        "pay__transfer",
        json!({"amount": 1, "options": {"depth": 4}}),
    );
    assert_eq!(deep.decision, Decision::Deny);
    let shallow = call(
        &engine,
        "pay__transfer",
        json!({"amount": 1, "options": {"depth": "2"}}),
    );
    assert_eq!(shallow.decision, Decision::Allow);
}

#[test]
fn task_scope_is_visible_to_policy() {
    let policies = "permit(principal, action in Warden::Action::\"call_tool\", resource) \
                    when { context.task.tools.contains(resource.name) };";
    let engine = engine(policies);
    let in_scope = call(&engine, "fs__read_file", json!({"path": "/a"}));
    assert_eq!(in_scope.decision, Decision::Allow);
    let out_of_scope = call(
        &engine,
        "fs__write_file",
        json!({"path": "/a", "content": ""}),
    );
    assert_eq!(out_of_scope.decision, Decision::Deny);
}

#[test]
fn task_fields_are_visible_to_policy() {
    let policies = "permit(principal, action, resource) \
                    when { context has task && context.task.user == \"alice\" && \
                    context.task.id == \"task-1\" && context.task.intent like \"*reports*\" && \
                    context.environment == \"development\" && \
                    principal.trust_domain == \"acme.test\" };";
    let outcome = call(&engine(policies), "fs__read_file", json!({"path": "/a"}));
    assert_eq!(outcome.decision, Decision::Allow);
}

#[test]
fn unknown_tool_is_denied() {
    let engine = engine(PERMIT_ALL);
    let called = call(&engine, "fs__delete_everything", json!({}));
    assert_eq!(called.decision, Decision::Deny);
    assert_eq!(called.policy_ids, vec![UNKNOWN_TOOL_POLICY_ID]);
    let listed = decide(&engine, Step::ListTool { tool: "read_file" });
    assert_eq!(listed.policy_ids, vec![UNKNOWN_TOOL_POLICY_ID]);
}

#[test]
fn list_tools_decides_per_tool() {
    let policies = "permit(principal, action == Warden::Action::\"list_tools\", resource) \
                    when { resource.read_only };";
    let engine = engine(policies);
    let read = decide(
        &engine,
        Step::ListTool {
            tool: "fs__read_file",
        },
    );
    assert_eq!(read.decision, Decision::Allow);
    let write = decide(
        &engine,
        Step::ListTool {
            tool: "fs__write_file",
        },
    );
    assert_eq!(write.decision, Decision::Deny);
}

#[test]
fn tool_hints_use_mcp_defaults() {
    let policies = "permit(principal, action == Warden::Action::\"list_tools\", resource) \
                    when { !resource.read_only && resource.destructive && resource.open_world };";
    let engine = engine(policies);
    let without_hints = decide(
        &engine,
        Step::ListTool {
            tool: "fs__write_file",
        },
    );
    assert_eq!(without_hints.decision, Decision::Allow);
    let with_hints = decide(
        &engine,
        Step::ListTool {
            tool: "fs__read_file",
        },
    );
    assert_eq!(with_hints.decision, Decision::Deny);
}

#[test]
fn same_tool_name_on_two_servers_stays_apart() {
    let policies = "permit(principal, action == Warden::Action::\"mail__send_email\", resource);";
    let engine = engine(policies);
    let mail = call(&engine, "mail__send_email", json!({"to": "bob@acme.test"}));
    assert_eq!(mail.decision, Decision::Allow);
    let evil = call(&engine, "evil__send_email", json!({"to": "bob@acme.test"}));
    assert_eq!(evil.decision, Decision::Deny);
}

#[test]
fn server_scope_matches_its_tools() {
    let policies = "permit(principal, action, resource in Warden::Server::\"fs\");";
    let engine = engine(policies);
    let fs = call(&engine, "fs__read_file", json!({"path": "/a"}));
    assert_eq!(fs.decision, Decision::Allow);
    let pay = call(&engine, "pay__transfer", json!({"amount": 1}));
    assert_eq!(pay.decision, Decision::Deny);
}

#[test]
fn duplicate_qualified_tool_fails_to_load() {
    let mut definitions = tools();
    definitions.push(tool("fs", "read_file", json!({"type": "object"})));
    let result = PolicyEngine::from_sources(&[], &definitions, options());
    assert!(matches!(
        result,
        Err(PolicyLoadError::Tool { ref tool, .. }) if tool == "fs__read_file"
    ));
}

#[test]
fn start_task_sees_ttl_and_intent() {
    let policies = "permit(principal, action == Warden::Action::\"start_task\", resource) \
                    when { context.ttl_seconds <= 3600 && context.tools.contains(\"pay__*\") };";
    let engine = engine(policies);
    let short = decide(&engine, Step::StartTask { ttl_seconds: 600 });
    assert_eq!(short.decision, Decision::Allow);
    let long = decide(
        &engine,
        Step::StartTask {
            ttl_seconds: 86_400,
        },
    );
    assert_eq!(long.decision, Decision::Deny);
}

#[test]
fn start_task_with_huge_ttl_is_denied() {
    let outcome = decide(
        &engine(PERMIT_ALL),
        Step::StartTask {
            ttl_seconds: u64::MAX,
        },
    );
    assert_eq!(outcome.decision, Decision::Deny);
    assert_eq!(outcome.policy_ids, vec![REQUEST_POLICY_ID]);
}

#[test]
fn read_resource_sees_uri_and_server() {
    let policies = "permit(principal, action == Warden::Action::\"read_resource\", resource \
                    in Warden::Server::\"fs\") \
                    when { resource.uri like \"file:///srv/data/*\" && context.server == \"fs\" };";
    let engine = engine(policies);
    let inside = decide(
        &engine,
        Step::ReadResource {
            server: "fs",
            uri: "file:///srv/data/a.txt",
        },
    );
    assert_eq!(inside.decision, Decision::Allow);
    let other_server = decide(
        &engine,
        Step::ReadResource {
            server: "web",
            uri: "file:///srv/data/a.txt",
        },
    );
    assert_eq!(other_server.decision, Decision::Deny);
}

#[test]
fn get_prompt_sees_prompt_name() {
    let policies = "permit(principal, action == Warden::Action::\"get_prompt\", resource) \
                    when { resource.name == \"summarise\" && resource in Warden::Server::\"docs\" };";
    let engine = engine(policies);
    let allowed = decide(
        &engine,
        Step::GetPrompt {
            server: "docs",
            name: "summarise",
        },
    );
    assert_eq!(allowed.decision, Decision::Allow);
    let other = decide(
        &engine,
        Step::GetPrompt {
            server: "docs",
            name: "exfiltrate",
        },
    );
    assert_eq!(other.decision, Decision::Deny);
}

#[test]
fn server_request_sees_method_server_and_tool() {
    let policies = "permit(principal, action == Warden::Action::\"server_request\", \
                    resource == Warden::Server::\"docs\") \
                    when { context.method == \"elicitation/create\" && context.tool == \"docs__ask\" };";
    let engine = engine(policies);
    let request = |server, method, tool| {
        decide(
            &engine,
            Step::ServerRequest {
                server,
                method,
                tool,
            },
        )
    };
    let allowed = request("docs", "elicitation/create", "docs__ask");
    let sampling = request("docs", "sampling/createMessage", "docs__ask");
    let other_tool = request("docs", "elicitation/create", "docs__other");
    let other_server = request("web", "elicitation/create", "docs__ask");

    assert_eq!(allowed.decision, Decision::Allow);
    assert_eq!(sampling.decision, Decision::Deny);
    assert_eq!(other_tool.decision, Decision::Deny);
    assert_eq!(other_server.decision, Decision::Deny);
}

#[test]
fn server_request_policy_reading_arguments_fails_to_load() {
    let policy = "permit(principal, action == Warden::Action::\"server_request\", resource) \
                  when { context.arguments.path == \"/a\" };";
    let error = load_error(&[("requests.cedar", policy)]);
    assert_eq!(error.problems().len(), 1, "{error}");
}

#[test]
fn no_policies_deny_everything() {
    let engine = engine("");
    assert_eq!(engine.policy_count(), 0);
    let outcome = call(&engine, "fs__read_file", json!({"path": "/a"}));
    assert_eq!(outcome.decision, Decision::Deny);
    let start = decide(&engine, Step::StartTask { ttl_seconds: 60 });
    assert_eq!(start.decision, Decision::Deny);
}

#[test]
fn load_dir_reads_cedar_files_in_order() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("b.cedar"), PERMIT_ALL).expect("write b");
    std::fs::write(
        dir.path().join("a.cedar"),
        "forbid(principal, action, resource);",
    )
    .expect("write a");
    std::fs::write(dir.path().join("notes.txt"), "not a policy").expect("write notes");
    std::fs::write(dir.path().join(".draft.cedar"), "not a policy").expect("write draft");
    std::fs::create_dir(dir.path().join("sub.cedar")).expect("create subdirectory");
    let engine = PolicyEngine::load_dir(dir.path(), &tools(), options()).expect("loads");
    assert_eq!(engine.policy_count(), 2);
    let outcome = call(&engine, "fs__read_file", json!({"path": "/a"}));
    assert_eq!(outcome.policy_ids, vec!["a.cedar:0"]);
}

#[test]
fn load_dir_of_empty_directory_loads() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let engine = PolicyEngine::load_dir(dir.path(), &tools(), options()).expect("loads");
    assert_eq!(engine.policy_count(), 0);
}

#[test]
fn load_dir_of_missing_directory_names_path() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let missing = dir.path().join("missing");
    let result = PolicyEngine::load_dir(&missing, &tools(), options());
    let Err(error) = result else {
        panic!("missing directory loaded");
    };
    assert!(matches!(error, PolicyLoadError::Read { .. }));
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );
}

#[test]
fn tool_returns_definition() {
    let engine = engine(PERMIT_ALL);
    let definition = engine.tool("fs__read_file").expect("tool is known");
    assert_eq!(definition.name, "read_file");
    assert!(engine.tool("read_file").is_none());
}

#[test]
fn schema_text_lists_tool_actions() {
    let text = engine(PERMIT_ALL).schema_text();
    assert!(text.contains("namespace Warden"), "{text}");
    assert!(text.contains("\"fs__read_file\""), "{text}");
    assert!(text.contains("\"evil__send_email\""), "{text}");
}

fn delegated_task() -> TaskContext {
    TaskContext {
        agent: "spiffe://acme.test/agent/mailer".to_owned(),
        chain: vec![
            "spiffe://acme.test/agent/support-bot".to_owned(),
            "spiffe://acme.test/agent/mailer".to_owned(),
        ],
        depth: 1,
        ..task()
    }
}

const DELEGATION_POLICIES: &str = r#"
@id("delegate-two-hops")
permit (principal, action == Warden::Action::"delegate", resource)
when { context.depth <= 2 };

@id("no-payments-below-root")
@reason("a delegated agent may not call payment tools")
forbid (principal, action in Warden::Action::"call_tool", resource)
when { context.task.depth > 0 && resource.server == "pay" };

@id("pay-anything")
permit (principal, action in Warden::Action::"call_tool", resource)
when { resource.server == "pay" };
"#;

fn delegation_engine() -> PolicyEngine {
    let tools = vec![ToolDef {
        server: "pay".to_owned(),
        name: "transfer".to_owned(),
        description: None,
        input_schema: json!({
            "type": "object",
            "properties": { "amount": { "type": "integer" } },
            "required": ["amount"]
        }),
        annotations: None,
        classes: vec!["payment".to_owned()],
        path_arguments: None,
        labels: Vec::new(),
        sum_arguments: Vec::new(),
    }];
    PolicyEngine::from_sources(
        &[(
            "delegation.cedar".to_owned(),
            DELEGATION_POLICIES.to_owned(),
        )],
        &tools,
        EngineOptions {
            environment: "test".to_owned(),
            routes: Vec::new(),
        },
    )
    .expect("delegation policies load")
}

#[test]
fn delegate_allowed_within_depth() {
    let engine = delegation_engine();
    let tools = vec!["pay__transfer".to_owned()];
    let outcome = engine.decide(&StepRequest {
        task: &task(),
        step: Step::Delegate {
            to_agent: "spiffe://acme.test/agent/mailer",
            tools: &tools,
            depth: 1,
        },
    });
    assert_eq!(outcome.decision, Decision::Allow);
    assert_eq!(outcome.policy_ids, vec!["delegate-two-hops"]);
}

#[test]
fn delegate_denied_past_depth() {
    let engine = delegation_engine();
    let tools = vec!["pay__transfer".to_owned()];
    let outcome = engine.decide(&StepRequest {
        task: &task(),
        step: Step::Delegate {
            to_agent: "spiffe://acme.test/agent/mailer",
            tools: &tools,
            depth: 3,
        },
    });
    assert_eq!(outcome.decision, Decision::Deny);
}

#[test]
fn delegated_agent_sees_its_depth() {
    let engine = delegation_engine();
    let arguments = json!({ "amount": 5 });
    let root = engine.decide(&StepRequest {
        task: &task(),
        step: Step::CallTool {
            tool: "pay__transfer",
            arguments: &arguments,
            model_requested: false,
            memory: no_memory(),
        },
    });
    assert_eq!(root.decision, Decision::Allow);
    let delegated = engine.decide(&StepRequest {
        task: &delegated_task(),
        step: Step::CallTool {
            tool: "pay__transfer",
            arguments: &arguments,
            model_requested: false,
            memory: no_memory(),
        },
    });
    assert_eq!(delegated.decision, Decision::Deny);
    assert_eq!(
        delegated.reason,
        "a delegated agent may not call payment tools"
    );
}

#[test]
fn misspelt_annotation_fails_to_load() {
    let error = load_error(&[(
        "typo.cedar",
        "@id(\"no-writes\") @reasn(\"why\") forbid (principal, action in Warden::Action::\"call_tool\", resource);",
    )]);
    let text = error.to_string();
    assert!(text.contains("unknown annotation @reasn"), "{text}");
}

#[test]
fn impossible_policy_fails_to_load() {
    let error = load_error(&[(
        "group.cedar",
        "@id(\"no-calls\") forbid (principal, action == Warden::Action::\"call_tool\", resource);",
    )]);
    let text = error.to_string();
    assert!(text.contains("validation warnings"), "{text}");
}

#[test]
fn unnormalised_path_literal_fails_to_load() {
    for literal in ["srv/data", "/srv/data/", "/srv/../data"] {
        let policy = format!(
            "@id(\"reads\") permit (principal, action == Warden::Action::\"fs__read_file\", resource) \
             when {{ context.arguments.path in Warden::Path::\"{literal}\" }};"
        );
        let error = load_error(&[("paths.cedar", policy.as_str())]);
        let text = error.to_string();
        assert!(text.contains("can never match"), "{literal}: {text}");
    }
}

/// Directory rules whose leading test on `path` lets the engine skip them
/// for other directories. `{lead}` is replaced by nothing for the guarded
/// form and by `true && ` for a form with no guard, which Cedar decides the
/// same way; the two engines must agree on every call.
const GUARDED_RULES: &str = r#"
@id("read-a") permit (principal, action == Warden::Action::"fs__read_file", resource)
when { {lead}context.arguments.path in Warden::Path::"/a" };
@id("read-b-or-c") permit (principal, action == Warden::Action::"fs__read_file", resource)
when { {lead}context.arguments.path in Warden::Path::"/b" || context.arguments.path in Warden::Path::"/c" };
@id("no-secrets") @reason("secrets stay put")
forbid (principal, action == Warden::Action::"fs__read_file", resource)
when { {lead}context.arguments.path in Warden::Path::"/a/secret" };
@id("no-secret2") forbid (principal, action in Warden::Action::"call_tool", resource)
when { {lead}context.arguments has path && context.arguments.path is Warden::Path && context.arguments.path in Warden::Path::"/a/secret2" };
@id("no-writes-in-test") @reason("writes are off in test")
forbid (principal, action in Warden::Action::"call_tool", resource)
when { {lead}context.environment == "test" && resource.classes.contains("write") && context.arguments has path && context.arguments.path in Warden::Path::"/a/locked" };
@id("no-prod") forbid (principal, action in Warden::Action::"call_tool", resource)
when { {lead}context.environment == "production" };
@id("write-a") permit (principal, action == Warden::Action::"fs__write_file", resource)
when { {lead}context.arguments.path in Warden::Path::"/a" && context.arguments.content like "*ok*" };
@id("write-bad") forbid (principal, action == Warden::Action::"fs__write_file", resource)
when { {lead}context.arguments.path in Warden::Path::"/a/locked" && context.arguments.content like "*" };
"#;

#[test]
fn path_guards_change_no_decision() {
    let guarded = engine(&GUARDED_RULES.replace("{lead}", ""));
    let unguarded = engine(&GUARDED_RULES.replace("{lead}", "true && "));
    let calls = [
        ("fs__read_file", json!({"path": "/a/x"})),
        ("fs__read_file", json!({"path": "/a"})),
        ("fs__read_file", json!({"path": "/a/secret/k"})),
        ("fs__read_file", json!({"path": "/a/secret2/k"})),
        (
            "fs__write_file",
            json!({"path": "/a/secret2/k", "content": "ok"}),
        ),
        ("pay__transfer", json!({"amount": 5})),
        ("fs__read_file", json!({"path": "/a_other/x"})),
        ("fs__read_file", json!({"path": "/b/x"})),
        ("fs__read_file", json!({"path": "/c/../c/y"})),
        ("fs__read_file", json!({"path": "/d"})),
        ("fs__read_file", json!({"path": "relative/a"})),
        ("fs__read_file", json!({})),
        ("fs__write_file", json!({"path": "/a/x", "content": "ok"})),
        ("fs__write_file", json!({"path": "/a/x", "content": "no"})),
        (
            "fs__write_file",
            json!({"path": "/a/locked/x", "content": "ok"}),
        ),
        ("fs__write_file", json!({"path": "/z", "content": "ok"})),
    ];
    for (tool, arguments) in calls {
        let with_guards = call(&guarded, tool, arguments.clone());
        let without = call(&unguarded, tool, arguments.clone());
        assert_eq!(with_guards.decision, without.decision, "{tool} {arguments}");
        assert_eq!(
            with_guards.policy_ids, without.policy_ids,
            "{tool} {arguments}"
        );
        assert_eq!(with_guards.reason, without.reason, "{tool} {arguments}");
        assert_eq!(
            with_guards.errors.is_empty(),
            without.errors.is_empty(),
            "{tool} {arguments}"
        );
    }
}

#[test]
fn path_guarded_policy_keeps_its_id() {
    let engine = engine(&GUARDED_RULES.replace("{lead}", ""));
    let outcome = call(&engine, "fs__read_file", json!({"path": "/a/x"}));
    assert_eq!(outcome.policy_ids, vec!["read-a"]);
}

const MODEL_POLICIES: &str = r#"
@id("models")
permit (principal, action == Warden::Action::"call_model", resource)
when { resource.provider == "openai" };

@id("no-streaming")
@reason("streaming is off for this deployment")
forbid (principal, action == Warden::Action::"call_model", resource)
when { context.stream };

@id("call-budget")
forbid (principal, action == Warden::Action::"call_model", resource)
when { context.usage.total_tokens >= 1000 || context.tools.contains("mail__send_email") };

@id("requested-only")
forbid (principal, action in Warden::Action::"call_tool", resource)
unless { context.model_requested };
"#;

fn call_model(engine: &PolicyEngine, provider: &str, stream: bool, usage: ModelUsage) -> Outcome {
    engine.decide(&StepRequest {
        task: &task(),
        step: Step::CallModel {
            provider,
            model: "gpt-4o-mini",
            stream,
            max_tokens: 0,
            tools: &[],
            usage,
        },
    })
}

#[test]
fn call_model_sees_provider_stream_and_usage() {
    let engine = engine(MODEL_POLICIES);
    let fresh = ModelUsage::default();
    let allowed = call_model(&engine, "openai", false, fresh);
    assert_eq!(allowed.decision, Decision::Allow, "{allowed:?}");
    assert_eq!(allowed.policy_ids, vec!["models"]);

    assert_eq!(
        call_model(&engine, "anthropic", false, fresh).decision,
        Decision::Deny
    );
    let streamed = call_model(&engine, "openai", true, fresh);
    assert_eq!(streamed.policy_ids, vec!["no-streaming"]);

    let spent = ModelUsage {
        calls: 3,
        input_tokens: 600,
        output_tokens: 400,
    };
    let over = call_model(&engine, "openai", false, spent);
    assert_eq!(over.decision, Decision::Deny);
    assert_eq!(over.policy_ids, vec!["call-budget"]);
}

#[test]
fn call_model_sees_offered_tools() {
    let engine = engine(MODEL_POLICIES);
    let tools = vec!["mail__send_email".to_owned()];
    let outcome = engine.decide(&StepRequest {
        task: &task(),
        step: Step::CallModel {
            provider: "openai",
            model: "gpt-4o-mini",
            stream: false,
            max_tokens: 256,
            tools: &tools,
            usage: ModelUsage::default(),
        },
    });
    assert_eq!(outcome.policy_ids, vec!["call-budget"]);
}

#[test]
fn call_tool_sees_model_requested() {
    let engine = engine(&format!("{PERMIT_ALL}{MODEL_POLICIES}"));
    let arguments = json!({"path": "/data/a.txt"});
    let step = |model_requested| Step::CallTool {
        tool: "fs__read_file",
        arguments: &arguments,
        model_requested,
        memory: no_memory(),
    };
    let unrequested = decide(&engine, step(false));
    assert_eq!(unrequested.decision, Decision::Deny);
    assert_eq!(unrequested.policy_ids, vec!["requested-only"]);
    assert_eq!(decide(&engine, step(true)).decision, Decision::Allow);
}

#[test]
fn model_context_is_not_visible_to_tool_calls() {
    let policy = r#"
@id("bad")
permit (principal, action in Warden::Action::"call_tool", resource)
when { context.usage.calls < 3 };
"#;
    let error = load_error(&[("bad.cedar", policy)]);
    assert!(error.to_string().contains("bad"), "{error}");
}

fn route_engine(policies: &str) -> Result<PolicyEngine, PolicyLoadError> {
    let routes = vec![
        crate::RouteDef {
            name: "pay".to_owned(),
            classes: vec!["payment".to_owned()],
            query_params: vec!["q".to_owned()],
            body_schema: Some(json!({
                "type": "object",
                "properties": { "amount": { "type": "integer" }, "to": { "type": "string" } },
            })),
            host: "api.test".to_owned(),
            labels: Vec::new(),
        },
        crate::RouteDef {
            name: "docs".to_owned(),
            host: "docs.test".to_owned(),
            ..crate::RouteDef::default()
        },
    ];
    PolicyEngine::from_sources(
        &[("routes.cedar".to_owned(), policies.to_owned())],
        &tools(),
        EngineOptions {
            environment: "development".to_owned(),
            routes,
        },
    )
}

const ROUTE_POLICIES: &str = r#"
@id("public-reads")
permit (principal, action in Warden::Action::"http_request", resource)
when { context.method == "GET" && context.path in Warden::Path::"/public" };

@id("small-payments")
permit (principal, action == Warden::Action::"route:pay", resource)
when { context.method == "POST" && context has body && context.body has amount && context.body.amount <= 100 };

@id("no-search-for-secrets")
forbid (principal, action in Warden::Action::"http_request", resource)
when { context.query has q && context.query.q like "*secret*" };
"#;

fn http<'a>(
    route: &'a str,
    method: &'a str,
    path: &'a str,
    query: &'a [(String, String)],
    body: &'a Value,
) -> Step<'a> {
    Step::HttpRequest {
        route,
        method,
        path,
        query,
        body,
        has_body: !body.is_null(),
        content_type: "application/json",
        destination: crate::Destination {
            scheme: "https",
            host: "api.test",
            port: 443,
        },
        memory: no_memory(),
    }
}

#[test]
fn http_request_decides_on_path_query_and_body() {
    let engine = route_engine(ROUTE_POLICIES).expect("loads");
    let none = Value::Null;
    let no_query: Vec<(String, String)> = Vec::new();
    let read = decide(&engine, http("docs", "GET", "/public/a", &no_query, &none));
    assert_eq!(read.policy_ids, vec!["public-reads"]);
    assert_eq!(
        decide(&engine, http("docs", "GET", "/admin", &no_query, &none)).decision,
        Decision::Deny
    );

    let search = vec![("q".to_owned(), "my secret key".to_owned())];
    let searched = decide(&engine, http("pay", "GET", "/public/s", &search, &none));
    assert_eq!(searched.policy_ids, vec!["no-search-for-secrets"]);

    let small = json!({ "amount": "40", "to": "bob" });
    let paid = decide(&engine, http("pay", "POST", "/payments", &no_query, &small));
    assert_eq!(paid.decision, Decision::Allow, "{paid:?}");
    assert_eq!(paid.arguments, Some(json!({ "amount": 40, "to": "bob" })));

    let large = json!({ "amount": 5000 });
    assert_eq!(
        decide(&engine, http("pay", "POST", "/payments", &no_query, &large)).decision,
        Decision::Deny
    );
    let undeclared = json!({ "amount": 5, "memo": "x" });
    let refused = decide(
        &engine,
        http("pay", "POST", "/payments", &no_query, &undeclared),
    );
    assert_eq!(refused.policy_ids, vec![ARGUMENTS_POLICY_ID]);
}

#[test]
fn http_request_to_unknown_route_denies() {
    let engine = route_engine(ROUTE_POLICIES).expect("loads");
    let outcome = decide(&engine, http("nope", "GET", "/", &[], &Value::Null));
    assert_eq!(outcome.policy_ids, vec![crate::UNKNOWN_ROUTE_POLICY_ID]);
}

#[test]
fn body_is_unavailable_on_routes_without_schema() {
    let policy = r#"
@id("bad")
permit (principal, action == Warden::Action::"route:docs", resource)
when { context.body.amount < 3 };
"#;
    let error = route_engine(policy).err().expect("load fails");
    assert!(error.to_string().contains("bad"), "{error}");
}

/// The documented default pack, which decides by classes and labels only.
fn default_pack(tools: &[ToolDef]) -> PolicyEngine {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/default");
    PolicyEngine::load_dir(&dir, tools, options()).expect("default pack loads")
}

fn classed(server: &str, name: &str, classes: &[&str], labels: &[&str]) -> ToolDef {
    ToolDef {
        classes: classes.iter().map(|c| (*c).to_owned()).collect(),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        ..tool(
            server,
            name,
            json!({"type": "object", "properties": {"x": {"type": "string"}}}),
        )
    }
}

#[test]
fn default_pack_decides_by_class_and_memory() {
    let tools = vec![
        classed("web", "fetch", &["read"], &["untrusted-content"]),
        classed("mail", "send", &["external-send"], &[]),
        classed("bank", "pay", &["payment", "write"], &[]),
        classed("admin", "reset_password", &["identity-admin"], &[]),
        // No classes and no annotations: MCP's defaults make it a write,
        // delete and external send.
        classed("misc", "mystery", &[], &[]),
    ];
    let engine = default_pack(&tools);
    let task = task();
    let call = |tool: &str, memory: &TaskMemory| {
        engine
            .decide(&StepRequest {
                task: &task,
                step: Step::CallTool {
                    tool,
                    arguments: &json!({"x": "1"}),
                    model_requested: true,
                    memory,
                },
            })
            .decision
    };
    let fresh = TaskMemory::default();
    let tainted = TaskMemory {
        labels: ["untrusted-content".to_owned()].into(),
        ..TaskMemory::default()
    };
    assert_eq!(call("web__fetch", &fresh), Decision::Allow);
    assert_eq!(call("mail__send", &fresh), Decision::Allow);
    assert_eq!(call("bank__pay", &fresh), Decision::Allow);
    assert_eq!(call("web__fetch", &tainted), Decision::Allow);
    assert_eq!(call("mail__send", &tainted), Decision::Hold);
    assert_eq!(call("bank__pay", &tainted), Decision::Hold);
    assert_eq!(call("admin__reset_password", &fresh), Decision::Hold);
    assert_eq!(call("misc__mystery", &fresh), Decision::Hold);

    let secret = TaskMemory {
        labels: ["secret".to_owned()].into(),
        ..TaskMemory::default()
    };
    assert_eq!(call("mail__send", &secret), Decision::Deny);
}

#[test]
fn effective_classes_tighten_only() {
    let annotated = |classes: &[&str], annotations: Value| ToolDef {
        annotations: Some(annotations),
        ..classed("s", "t", classes, &[])
    };
    // A server's read-only claim adds nothing to a configured write.
    assert_eq!(
        annotated(&["write"], json!({"readOnlyHint": true})).effective_classes(),
        vec!["write"]
    );
    // Explicit hints tighten a configured read.
    assert_eq!(
        annotated(
            &["read"],
            json!({"readOnlyHint": false, "destructiveHint": true})
        )
        .effective_classes(),
        vec!["read", "write", "delete"]
    );
    // Without configuration, annotations fill the gap.
    assert_eq!(
        annotated(&[], json!({"readOnlyHint": true})).effective_classes(),
        vec!["read"]
    );
    assert_eq!(
        annotated(&[], json!({"readOnlyHint": true})).effective_labels(),
        vec!["untrusted-content"]
    );
    assert_eq!(
        annotated(
            &[],
            json!({"readOnlyHint": false, "destructiveHint": false, "openWorldHint": false})
        )
        .effective_classes(),
        vec!["write"]
    );
}

#[test]
fn memory_sums_include_the_call() {
    let mut pay = classed("bank", "pay", &["payment"], &[]);
    pay.input_schema = json!({"type": "object", "properties": {"amount": {"type": "number"}}});
    pay.sum_arguments = vec!["amount".to_owned()];
    let policy = r#"
@id("pay")
permit (principal, action in Warden::Action::"call_tool", resource);
@id("sum-cap")
forbid (principal, action in Warden::Action::"call_tool", resource)
when { context.memory.sums_with_call.amount.greaterThan(decimal("1000.0")) };
"#;
    let engine = PolicyEngine::from_sources(
        &[("p.cedar".to_owned(), policy.to_owned())],
        &[pay],
        options(),
    )
    .expect("loads");
    let task = task();
    let decide_with = |spent: i64, amount: &str| {
        let memory = TaskMemory {
            sums: [("amount".to_owned(), spent * 10_000)].into(),
            ..TaskMemory::default()
        };
        engine
            .decide(&StepRequest {
                task: &task,
                step: Step::CallTool {
                    tool: "bank__pay",
                    arguments: &json!({"amount": amount}),
                    model_requested: false,
                    memory: &memory,
                },
            })
            .decision
    };
    assert_eq!(decide_with(900, "100"), Decision::Allow);
    assert_eq!(decide_with(900, "100.01"), Decision::Deny);
    assert_eq!(decide_with(0, "999.5"), Decision::Allow);
    // A negative amount would lower the running sum, so it is refused.
    assert_eq!(decide_with(0, "-1000"), Decision::Deny);
}

#[test]
fn default_pack_holds_tools_with_mixed_classes() {
    let tools = vec![
        // A fetch reaches a host the agent chose, so its URL can carry data out.
        classed(
            "web",
            "get_page",
            &["read", "external-send"],
            &["untrusted-content"],
        ),
        classed("chat", "add_member", &["write", "external-send"], &[]),
        classed("chat", "invite", &["identity-admin", "external-send"], &[]),
        classed("chat", "remove", &["identity-admin", "delete"], &[]),
        classed("bank", "update_profile", &["write"], &[]),
    ];
    let engine = default_pack(&tools);
    let task = task();
    let call = |tool: &str, labels: &[&str]| {
        let memory = TaskMemory {
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            ..TaskMemory::default()
        };
        engine
            .decide(&StepRequest {
                task: &task,
                step: Step::CallTool {
                    tool,
                    arguments: &json!({"x": "1"}),
                    model_requested: true,
                    memory: &memory,
                },
            })
            .decision
    };

    assert_eq!(call("web__get_page", &[]), Decision::Allow);
    assert_eq!(
        call("web__get_page", &["untrusted-content"]),
        Decision::Hold
    );
    assert_eq!(call("web__get_page", &["sensitive"]), Decision::Hold);
    assert_eq!(call("chat__add_member", &[]), Decision::Allow);
    assert_eq!(
        call("chat__add_member", &["untrusted-content"]),
        Decision::Hold
    );
    assert_eq!(call("chat__invite", &[]), Decision::Hold);
    assert_eq!(call("chat__invite", &["secret"]), Decision::Deny);
    assert_eq!(call("chat__remove", &[]), Decision::Hold);
    assert_eq!(
        call("bank__update_profile", &["untrusted-content"]),
        Decision::Allow
    );
}
