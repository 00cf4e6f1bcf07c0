//! Measures `PolicyEngine::decide` with 100 policies over 10 tools: an
//! allowed read and a write denied by a path forbid.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use warden_policy::{
    Decision, EngineOptions, PolicyEngine, Step, StepRequest, TaskContext, ToolDef,
};

fn tool(server: &str, name: &str, classes: &[&str], input_schema: Value) -> ToolDef {
    ToolDef {
        server: server.to_owned(),
        name: name.to_owned(),
        description: None,
        input_schema,
        annotations: None,
        classes: classes.iter().map(|class| (*class).to_owned()).collect(),
        path_arguments: None,
        labels: Vec::new(),
        sum_arguments: Vec::new(),
    }
}

fn tools() -> Vec<ToolDef> {
    let path_only = json!({
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"]
    });
    vec![
        tool("fs", "read_file", &["read"], path_only.clone()),
        tool("fs", "list_directory", &["read"], path_only),
        tool(
            "fs",
            "write_file",
            &["write"],
            json!({
                "type": "object",
                "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                "required": ["path", "content"]
            }),
        ),
        tool(
            "fs",
            "move_file",
            &["write"],
            json!({
                "type": "object",
                "properties": {
                    "source": {"type": "string"},
                    "destination": {"type": "string"}
                },
                "required": ["source", "destination"]
            }),
        ),
        tool(
            "git",
            "log",
            &["read"],
            json!({
                "type": "object",
                "properties": {"repo": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["repo"]
            }),
        ),
        tool(
            "git",
            "commit",
            &["write"],
            json!({
                "type": "object",
                "properties": {"repo": {"type": "string"}, "message": {"type": "string"}},
                "required": ["repo", "message"]
            }),
        ),
        tool(
            "mail",
            "send_email",
            &["external", "write"],
            json!({
                "type": "object",
                "properties": {
                    "to": {"type": "array", "items": {"type": "string"}},
                    "subject": {"type": "string"},
                    "body": {"type": "string"}
                },
                "required": ["to", "subject", "body"]
            }),
        ),
        tool(
            "pay",
            "transfer",
            &["payment"],
            json!({
                "type": "object",
                "properties": {
                    "amount": {"type": "number"},
                    "currency": {"type": "string", "enum": ["EUR", "USD"]},
                    "account": {"type": "string"}
                },
                "required": ["amount", "currency", "account"]
            }),
        ),
        tool(
            "http",
            "fetch",
            &["external", "read"],
            json!({
                "type": "object",
                "properties": {
                    "url": {"type": "string"},
                    "method": {"type": "string", "enum": ["GET", "POST"]}
                },
                "required": ["url"]
            }),
        ),
        tool(
            "db",
            "query",
            &["read"],
            json!({
                "type": "object",
                "properties": {"sql": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["sql"]
            }),
        ),
    ]
}

/// Returns 100 policies: path permits and forbids, class forbids, argument
/// conditions and holds.
fn policies() -> String {
    let mut text = String::new();
    for team in 0..30 {
        text.push_str(&format!(
            "permit(principal, action in [Warden::Action::\"fs__read_file\", \
             Warden::Action::\"fs__list_directory\"], resource) \
             when {{ context.arguments.path in Warden::Path::\"/srv/data/team{team}\" }};\n"
        ));
    }
    for secret in 0..20 {
        text.push_str(&format!(
            "@reason(\"secret area {secret} is off limits\")\n\
             forbid(principal, action in Warden::Action::\"call_tool\", resource) \
             when {{ context has arguments && context.arguments has path && \
             context.arguments.path is Warden::Path && \
             context.arguments.path in Warden::Path::\"/srv/secret{secret}\" }};\n"
        ));
    }
    for class in 0..10 {
        text.push_str(&format!(
            "forbid(principal, action in Warden::Action::\"call_tool\", resource) \
             when {{ resource.classes.contains(\"blocked{class}\") }};\n"
        ));
    }
    for team in 0..10 {
        text.push_str(&format!(
            "permit(principal, action == Warden::Action::\"fs__write_file\", resource) \
             when {{ context.arguments.path in Warden::Path::\"/srv/data/team{team}\" && \
             context.task.user == \"user{team}\" }};\n"
        ));
    }
    for limit in 0..10 {
        text.push_str(&format!(
            "permit(principal, action == Warden::Action::\"git__log\", resource) \
             when {{ context.arguments has limit && context.arguments.limit <= {} && \
             context.arguments.repo == \"repo{limit}\" }};\n",
            (limit + 1) * 10
        ));
    }
    for step in 0..10 {
        text.push_str(&format!(
            "permit(principal, action == Warden::Action::\"pay__transfer\", resource) \
             when {{ context.arguments.amount.lessThan(decimal(\"{step}00.0\")) && \
             context.arguments.account == \"acct{step}\" }};\n"
        ));
    }
    text.push_str(
        "permit(principal, action == Warden::Action::\"list_tools\", resource);\n\
         permit(principal, action == Warden::Action::\"start_task\", resource) \
         when { context.ttl_seconds <= 3600 };\n\
         @hold(\"external email needs a human approval\")\n\
         forbid(principal, action == Warden::Action::\"mail__send_email\", resource);\n\
         forbid(principal, action in Warden::Action::\"call_tool\", resource) \
         when { context.environment == \"production\" && resource.destructive && \
         resource.classes.contains(\"write\") };\n\
         permit(principal, action == Warden::Action::\"db__query\", resource) \
         when { context.arguments has limit && context.arguments.limit <= 100 };\n\
         permit(principal, action == Warden::Action::\"http__fetch\", resource) \
         when { context.arguments.url like \"https://docs.acme.test/*\" };\n\
         forbid(principal, action == Warden::Action::\"http__fetch\", resource) \
         when { context.arguments has method && context.arguments.method == \"POST\" };\n\
         permit(principal, action == Warden::Action::\"git__commit\", resource) \
         when { context.task.intent like \"*commit*\" };\n\
         permit(principal, action == Warden::Action::\"read_resource\", resource) \
         when { resource.uri like \"file:///srv/data/*\" };\n\
         forbid(principal, action, resource) when { principal.trust_domain != \"acme.test\" };\n",
    );
    text
}

fn engine() -> PolicyEngine {
    let sources = vec![("bench.cedar".to_owned(), policies())];
    let options = EngineOptions {
        environment: "development".to_owned(),
        routes: Vec::new(),
    };
    let engine = PolicyEngine::from_sources(&sources, &tools(), options)
        .unwrap_or_else(|error| panic!("bench policies failed to load:\n{error}"));
    assert_eq!(engine.policy_count(), 100);
    engine
}

fn bench_decide(c: &mut Criterion) {
    let engine = engine();
    let task = TaskContext {
        task_id: "task-1".to_owned(),
        agent: "spiffe://acme.test/agent/support-bot".to_owned(),
        trust_domain: "acme.test".to_owned(),
        user: "user3".to_owned(),
        intent: "summarise the team reports".to_owned(),
        tools: vec!["fs__*".to_owned()],
        chain: vec!["spiffe://acme.test/agent/support-bot".to_owned()],
        depth: 0,
    };
    let memory = warden_policy::TaskMemory::default();
    let read_arguments = json!({"path": "/srv/data/team7/reports/q3.txt"});
    let write_arguments = json!({"path": "/srv/secret3/keys/prod.pem", "content": "x"});
    let read = StepRequest {
        task: &task,
        step: Step::CallTool {
            tool: "fs__read_file",
            arguments: &read_arguments,
            model_requested: false,
            memory: &memory,
        },
    };
    let write = StepRequest {
        task: &task,
        step: Step::CallTool {
            tool: "fs__write_file",
            arguments: &write_arguments,
            model_requested: false,
            memory: &memory,
        },
    };
    assert_eq!(engine.decide(&read).decision, Decision::Allow);
    assert_eq!(engine.decide(&write).decision, Decision::Deny);

    c.bench_function("decide allowed read, 100 policies", |b| {
        b.iter(|| black_box(engine.decide(black_box(&read))))
    });
    c.bench_function("decide denied write, 100 policies", |b| {
        b.iter(|| black_box(engine.decide(black_box(&write))))
    });
}

/// The default pack decides by classes, labels and task memory, so every
/// call carries a `context.memory` record.
fn bench_default_pack(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/default");
    let mut tools = tools();
    for tool in &mut tools {
        if tool.name.contains("write") {
            tool.classes = vec!["write".to_owned()];
        } else if tool.server == "mail" {
            tool.classes = vec!["external-send".to_owned()];
        } else {
            tool.classes = vec!["read".to_owned()];
        }
    }
    let engine = PolicyEngine::load_dir(
        &dir,
        &tools,
        EngineOptions {
            environment: "development".to_owned(),
            routes: Vec::new(),
        },
    )
    .unwrap_or_else(|error| panic!("default pack failed to load:\n{error}"));
    let task = TaskContext {
        task_id: "task-1".to_owned(),
        agent: "spiffe://acme.test/agent/support-bot".to_owned(),
        trust_domain: "acme.test".to_owned(),
        user: "user3".to_owned(),
        intent: "summarise the team reports".to_owned(),
        tools: vec!["*".to_owned()],
        chain: vec!["spiffe://acme.test/agent/support-bot".to_owned()],
        depth: 0,
    };
    let mut memory = warden_policy::TaskMemory {
        calls: 12,
        ..warden_policy::TaskMemory::default()
    };
    memory.labels.insert("untrusted-content".to_owned());
    memory.class_calls.insert("read".to_owned(), 9);
    memory.class_calls.insert("write".to_owned(), 3);
    let read_arguments = json!({"path": "/srv/data/team7/reports/q3.txt"});
    let read = StepRequest {
        task: &task,
        step: Step::CallTool {
            tool: "fs__read_file",
            arguments: &read_arguments,
            model_requested: true,
            memory: &memory,
        },
    };
    assert_eq!(engine.decide(&read).decision, Decision::Allow);
    c.bench_function("decide read with task memory, default pack", |b| {
        b.iter(|| black_box(engine.decide(black_box(&read))))
    });
}

criterion_group!(benches, bench_decide, bench_default_pack);
criterion_main!(benches);
