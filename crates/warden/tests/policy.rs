//! Policy decisions on hostile tool calls through a real `warden serve`:
//! path prefix confusion, arguments of the wrong JSON type, tool name
//! collisions between servers, unknown tools and the task's tool scope.

mod support;

use serde_json::{Value, json};
use support::{DECISION_KEY, Session, Setup, Upstream, Warden, result_text};

/// Returns the decision object of a refused call's result.
fn decision(reply: &Value) -> &Value {
    &reply["result"]["_meta"][DECISION_KEY]
}

const READ_DATA_POLICY: &str = r#"
@id("files-read-data")
permit (principal, action == Warden::Action::"files__read_file", resource)
when { context.arguments.path in Warden::Path::"/workspace/data" };
"#;

const PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY----- test secret";

async fn files_gateway() -> Warden {
    let warden = Warden::start(Setup::new(
        vec![Upstream::new("files", "files")],
        READ_DATA_POLICY,
    ))
    .await;
    let public = warden.files.workspace_file("/workspace/data/readme.txt");
    let private = warden
        .files
        .workspace_file("/workspace/data_private/key.pem");
    for (path, content) in [(&public, "public notes"), (&private, PRIVATE_KEY)] {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create directory");
        std::fs::write(path, content).expect("write workspace file");
    }
    warden
}

#[tokio::test]
async fn policy_path_inside_directory_is_allowed() {
    let warden = files_gateway().await;
    let session = warden.session(&warden.task().await).await;

    let reply = session
        .call_tool(
            "files__read_file",
            json!({ "path": "/workspace/data/readme.txt" }),
        )
        .await;

    assert_eq!(reply["result"]["isError"], json!(false), "{reply}");
    assert_eq!(result_text(&reply), "public notes");
}

#[tokio::test]
async fn policy_path_prefix_sibling_is_denied() {
    let warden = files_gateway().await;
    let session = warden.session(&warden.task().await).await;

    let reply = session
        .call_tool(
            "files__read_file",
            json!({ "path": "/workspace/data_private/key.pem" }),
        )
        .await;

    assert_eq!(reply["result"]["isError"], json!(true), "{reply}");
    assert_eq!(decision(&reply)["decision"], json!("deny"), "{reply}");
    assert!(!result_text(&reply).contains("PRIVATE"), "{reply}");
}

#[tokio::test]
async fn policy_path_dot_dot_spellings_are_denied() {
    let warden = files_gateway().await;
    let session = warden.session(&warden.task().await).await;
    let paths = [
        "/workspace/data/../data_private/key.pem",
        "/workspace/data/./../data_private/key.pem",
        "/workspace/data/sub/../../data_private/key.pem",
        "/workspace//data/..//data_private/key.pem",
        "/workspace/data/../../workspace/data_private/key.pem",
        "/../workspace/data/../data_private/key.pem",
        "workspace/data/../data_private/key.pem",
        "/workspace/data/..",
    ];
    for path in paths {
        let reply = session
            .call_tool("files__read_file", json!({ "path": path }))
            .await;
        assert_eq!(reply["result"]["isError"], json!(true), "{path}: {reply}");
        assert_eq!(
            decision(&reply)["decision"],
            json!("deny"),
            "{path}: {reply}"
        );
        assert!(!result_text(&reply).contains("PRIVATE"), "{path}: {reply}");
    }
}

#[tokio::test]
async fn policy_path_backslash_never_reaches_sibling() {
    let warden = files_gateway().await;
    let session = warden.session(&warden.task().await).await;

    // A backslash is part of a file name on a POSIX upstream, so the policy
    // and the upstream both see one file inside /workspace/data.
    let reply = session
        .call_tool(
            "files__read_file",
            json!({ "path": "/workspace/data/..\\data_private\\key.pem" }),
        )
        .await;

    assert!(!result_text(&reply).contains("PRIVATE"), "{reply}");
}

/// Permits every call, and forbids refunds above 1000 in the units of the
/// tool's `number` argument.
const REFUND_POLICY: &str = r#"
@id("allow-all-calls")
permit (principal, action in Warden::Action::"call_tool", resource);

@id("no-large-refunds")
@reason("refunds above 1000 are not allowed")
forbid (principal, action == Warden::Action::"billing__refund", resource)
when { context.arguments.amount.greaterThan(decimal("1000.0")) };
"#;

async fn billing_gateway() -> Warden {
    Warden::start(Setup::new(
        vec![Upstream::new("billing", "billing")],
        REFUND_POLICY,
    ))
    .await
}

#[tokio::test]
async fn policy_small_refund_is_allowed() {
    let warden = billing_gateway().await;
    let session = warden.session(&warden.task().await).await;

    let reply = session
        .call_tool(
            "billing__refund",
            json!({ "order_id": "A-1", "amount": 50 }),
        )
        .await;

    assert_eq!(reply["result"]["isError"], json!(false), "{reply}");
    assert!(warden.files.root.join("refunds.jsonl").exists());
}

#[tokio::test]
async fn policy_string_amount_is_denied() {
    let warden = billing_gateway().await;
    let session = warden.session(&warden.task().await).await;

    let reply = session
        .call_tool(
            "billing__refund",
            json!({ "order_id": "A-1", "amount": "5000" }),
        )
        .await;

    assert_eq!(reply["result"]["isError"], json!(true), "{reply}");
    assert_eq!(decision(&reply)["decision"], json!("deny"), "{reply}");
    assert_eq!(
        decision(&reply)["policy_ids"],
        json!(["no-large-refunds"]),
        "{reply}"
    );
    assert!(!warden.files.root.join("refunds.jsonl").exists());
}

#[tokio::test]
async fn policy_amount_spellings_are_denied() {
    let warden = billing_gateway().await;
    let session = warden.session(&warden.task().await).await;
    let amounts = [
        json!(5000),
        json!(1000.5),
        json!("5e3"),
        json!("5000.0001"),
        json!(" 5000"),
        json!("abc"),
        json!("Infinity"),
        json!("NaN"),
        json!(1e20),
        json!(null),
        json!([5000]),
        json!({ "value": 5000 }),
    ];
    for amount in amounts {
        let reply = session
            .call_tool(
                "billing__refund",
                json!({ "order_id": "A-1", "amount": amount }),
            )
            .await;
        assert_eq!(
            reply["result"]["isError"],
            json!(true),
            "amount {amount}: {reply}"
        );
        assert_eq!(
            decision(&reply)["decision"],
            json!("deny"),
            "amount {amount}: {reply}"
        );
    }
    let missing = session
        .call_tool("billing__refund", json!({ "order_id": "A-1" }))
        .await;
    assert_eq!(
        decision(&missing)["decision"],
        json!("deny"),
        "missing amount: {missing}"
    );
    assert!(!warden.files.root.join("refunds.jsonl").exists());
}

#[tokio::test]
async fn policy_string_integer_is_denied() {
    let policy = r#"
@id("allow-all-calls")
permit (principal, action in Warden::Action::"call_tool", resource);

@id("no-long-sleeps")
forbid (principal, action == Warden::Action::"testkit__sleep", resource)
when { context.arguments.seconds > 1000 };
"#;
    let warden = Warden::start(Setup::new(
        vec![Upstream::new("testkit", "testkit").timeout(2)],
        policy,
    ))
    .await;
    let session = warden.session(&warden.task().await).await;

    for seconds in [
        json!("5000"),
        json!(5000),
        json!("5e3"),
        json!(1.5e3),
        json!("x"),
    ] {
        let reply = session
            .call_tool("testkit__sleep", json!({ "seconds": seconds }))
            .await;
        assert_eq!(
            reply["result"]["isError"],
            json!(true),
            "seconds {seconds}: {reply}"
        );
        assert_eq!(
            decision(&reply)["decision"],
            json!("deny"),
            "seconds {seconds}: {reply}"
        );
    }
}

async fn twin_gateway(policy: &str) -> Warden {
    Warden::start(Setup::new(
        vec![Upstream::new("a", "testkit"), Upstream::new("b", "testkit")],
        policy,
    ))
    .await
}

const ALLOW_ALL: &str = r#"
@id("allow-all-calls")
permit (principal, action in Warden::Action::"call_tool", resource);
"#;

#[tokio::test]
async fn policy_same_tool_on_two_servers_is_namespaced() {
    let warden = twin_gateway(ALLOW_ALL).await;
    let session = warden.session(&warden.task().await).await;

    let names = session.tool_names().await;

    assert!(names.contains(&"a__echo".to_owned()), "{names:?}");
    assert!(names.contains(&"b__echo".to_owned()), "{names:?}");
    assert!(!names.contains(&"echo".to_owned()), "{names:?}");
}

#[tokio::test]
async fn policy_call_is_traced_under_qualified_name() {
    let warden = twin_gateway(ALLOW_ALL).await;
    let task = warden.task().await;
    let session = warden.session(&task).await;

    let reply = session.call_tool("a__echo", json!({ "text": "hi" })).await;
    let records = warden
        .trace(&task.id, |records| {
            records.iter().any(|r| r["kind"] == json!("tool.decision"))
        })
        .await;
    let decisions: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == json!("tool.decision"))
        .collect();

    assert_eq!(result_text(&reply), "hi", "{reply}");
    assert_eq!(decisions.len(), 1, "{records:?}");
    assert_eq!(decisions[0]["target"], json!("a__echo"), "{records:?}");
    assert_eq!(decisions[0]["decision"], json!("allow"), "{records:?}");
}

#[tokio::test]
async fn policy_forbid_on_one_server_spares_the_other() {
    let policy = format!(
        "{ALLOW_ALL}\n@id(\"no-b-echo\")\nforbid (principal, action == Warden::Action::\"b__echo\", resource);\n"
    );
    let warden = twin_gateway(&policy).await;
    let session = warden.session(&warden.task().await).await;

    let a = session.call_tool("a__echo", json!({ "text": "hi" })).await;
    let b = session.call_tool("b__echo", json!({ "text": "hi" })).await;

    assert_eq!(result_text(&a), "hi", "{a}");
    assert_eq!(decision(&b)["decision"], json!("deny"), "{b}");
    assert_eq!(decision(&b)["policy_ids"], json!(["no-b-echo"]), "{b}");
}

#[tokio::test]
async fn policy_unknown_tool_is_refused_as_a_tool_result() {
    let warden = twin_gateway(ALLOW_ALL).await;
    let session = warden.session(&warden.task().await).await;
    let names = [
        "c__echo",
        "a__nosuch",
        "echo",
        "a__",
        "__echo",
        "a__echo__x",
        "A__echo",
        "a__ECHO",
        "a__echo ",
        "a_echo",
        "a/echo",
    ];
    for name in names {
        let (status, reply) = session
            .request(
                json!(1),
                "tools/call",
                json!({ "name": name, "arguments": { "text": "x" } }),
            )
            .await;
        assert_eq!(status, 200, "{name}: {reply}");
        assert_eq!(reply["result"]["isError"], json!(true), "{name}: {reply}");
        assert_eq!(
            reply["result"]["_meta"][DECISION_KEY]["policy_ids"],
            json!(["warden:unknown-tool"]),
            "{name}: {reply}"
        );
    }
}

async fn scoped_session(warden: &Warden) -> Session {
    let task = warden
        .task_with(json!({
            "intent": "integration test", "user": "alice@acme.test", "tools": ["testkit__echo"]
        }))
        .await;
    warden.session(&task).await
}

#[tokio::test]
async fn policy_tool_outside_scope_is_denied() {
    let warden = Warden::start(Setup::permissive()).await;
    let session = scoped_session(&warden).await;

    let reply = session
        .call_tool(
            "files__write_file",
            json!({ "path": "/workspace/drafts/x", "content": "y" }),
        )
        .await;

    assert_eq!(reply["result"]["isError"], json!(true), "{reply}");
    assert_eq!(decision(&reply)["decision"], json!("deny"), "{reply}");
    assert_eq!(
        decision(&reply)["policy_ids"],
        json!(["warden:task-scope"]),
        "{reply}"
    );
    assert!(!warden.files.workspace_file("/workspace/drafts/x").exists());
}

#[tokio::test]
async fn policy_scope_limits_tool_list() {
    let warden = Warden::start(Setup::permissive()).await;
    let session = scoped_session(&warden).await;

    let names = session.tool_names().await;

    assert_eq!(names, vec!["testkit__echo".to_owned()]);
}

#[tokio::test]
async fn policy_forbid_applies_on_server_endpoint() {
    let policy = format!(
        "{ALLOW_ALL}\n@id(\"no-b-echo\")\nforbid (principal, action == Warden::Action::\"b__echo\", resource);\n"
    );
    let warden = twin_gateway(&policy).await;
    let task = warden.task().await;
    let a = warden.session_at("/mcp/a", &task).await;
    let b = warden.session_at("/mcp/b", &task).await;

    let allowed = a.call_tool("echo", json!({ "text": "hi" })).await;
    let denied = b.call_tool("echo", json!({ "text": "hi" })).await;
    let (_, qualified) = b
        .request(
            json!(2),
            "tools/call",
            json!({ "name": "a__echo", "arguments": { "text": "hi" } }),
        )
        .await;

    assert_eq!(result_text(&allowed), "hi", "{allowed}");
    assert_eq!(decision(&denied)["decision"], json!("deny"), "{denied}");
    assert_eq!(
        decision(&denied)["policy_ids"],
        json!(["no-b-echo"]),
        "{denied}"
    );
    // On /mcp/b, a qualified name of another server names no tool of b.
    assert_eq!(qualified["result"]["isError"], json!(true), "{qualified}");
    assert_eq!(
        decision(&qualified)["policy_ids"],
        json!(["warden:unknown-tool"]),
        "{qualified}"
    );
}

#[tokio::test]
async fn policy_forwards_converted_arguments() {
    let warden = billing_gateway().await;
    let session = warden.session(&warden.task().await).await;

    let reply = session
        .call_tool(
            "billing__refund",
            json!({ "order_id": "A-1", "amount": "50" }),
        )
        .await;
    let refunds = std::fs::read_to_string(warden.files.root.join("refunds.jsonl"))
        .expect("the upstream recorded the refund");
    let forwarded: Value = serde_json::from_str(refunds.trim()).expect("refund line is JSON");

    assert_eq!(reply["result"]["isError"], json!(false), "{reply}");
    assert_eq!(forwarded["amount"], json!(50), "{refunds}");
}
