//! The decision path of one tool call, without the network: verifying the
//! task token, building the Cedar request and evaluating the bundled policy
//! pack against the bundled example servers' tools.
//!
//! Run with `cargo bench -p warden-gateway --bench decision`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use warden_gateway::PolicySource;
use warden_identity::{SigningKey, TaskClaims, TaskTokens};
use warden_policy::{Step, StepRequest, TaskContext, ToolDef};

fn example_tools() -> Vec<ToolDef> {
    let classes = |tool: &str| match tool {
        "write_file" => vec!["write".to_owned()],
        "send_email" => vec!["external-send".to_owned()],
        "refund" => vec!["payment".to_owned(), "write".to_owned()],
        "void_invoice" => vec!["payment".to_owned(), "delete".to_owned()],
        _ => vec!["read".to_owned()],
    };
    ["files", "mail", "billing"]
        .iter()
        .flat_map(|server| {
            let list = warden_examples::tool_list(server);
            list.as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |tool| {
                    let name = tool["name"].as_str().unwrap_or_default().to_owned();
                    ToolDef {
                        server: (*server).to_owned(),
                        description: None,
                        input_schema: tool["inputSchema"].clone(),
                        annotations: Some(tool["annotations"].clone()),
                        classes: classes(&name),
                        name,
                        ..ToolDef::default()
                    }
                })
        })
        .collect()
}

fn claims(now: i64) -> TaskClaims {
    TaskClaims {
        iss: "warden".into(),
        aud: "warden".into(),
        sub: "spiffe://warden.local/agent/bench".into(),
        jti: "jti-1".into(),
        task_id: "task-1".into(),
        user: "alice@acme.test".into(),
        intent: "summarise the notes".into(),
        tools: vec!["files__*".into(), "mail__send_email".into()],
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        iat: now,
        exp: now + 600,
        act: None,
        parent_task_id: None,
        root_task_id: None,
    }
}

fn task_context(claims: &TaskClaims) -> TaskContext {
    TaskContext {
        task_id: claims.task_id.clone(),
        agent: claims.sub.clone(),
        trust_domain: "warden.local".into(),
        user: claims.user.clone(),
        intent: claims.intent.clone(),
        tools: claims.tools.clone(),
        chain: vec![claims.sub.clone()],
        depth: 0,
    }
}

fn bench_decision(c: &mut Criterion) {
    let now = 1_800_000_000;
    let key = SigningKey::generate().expect("key");
    let tokens = TaskTokens::new(key, "warden".into(), "warden".into(), 30);
    let token = tokens.issue(&claims(now)).expect("token");
    let engine = PolicySource::Bundled
        .load(&example_tools(), &warden_config::Config::default())
        .expect("bundled pack loads");
    let read: Value = json!({ "path": "/workspace/notes/todo.md" });
    let write: Value = json!({ "path": "/workspace/notes/x.md", "content": "x" });
    let memory = warden_policy::TaskMemory::default();

    c.bench_function("task_token_verify", |b| {
        b.iter(|| tokens.verify(black_box(&token), now).expect("valid"))
    });

    let context = task_context(&claims(now));
    c.bench_function("decide_allowed_read", |b| {
        b.iter(|| {
            engine.decide(&StepRequest {
                task: &context,
                step: Step::CallTool {
                    tool: "files__read_file",
                    arguments: black_box(&read),
                    model_requested: false,
                    memory: &memory,
                },
            })
        })
    });
    c.bench_function("decide_denied_write", |b| {
        b.iter(|| {
            engine.decide(&StepRequest {
                task: &context,
                step: Step::CallTool {
                    tool: "files__write_file",
                    arguments: black_box(&write),
                    model_requested: false,
                    memory: &memory,
                },
            })
        })
    });
    c.bench_function("decision_path_token_and_policy", |b| {
        b.iter(|| {
            let claims = tokens.verify(black_box(&token), now).expect("valid");
            let context = task_context(&claims);
            engine.decide(&StepRequest {
                task: &context,
                step: Step::CallTool {
                    tool: "files__read_file",
                    arguments: black_box(&read),
                    model_requested: false,
                    memory: &memory,
                },
            })
        })
    });
}

criterion_group!(benches, bench_decision);
criterion_main!(benches);
