//! Loading and reloading policy files in a real `warden serve`. A broken
//! file stops the start with its file and line, and a policy that reads a
//! field its action lacks is rejected at start. A reload by SIGHUP keeps
//! the last good set when the new one is broken.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{ConfigDir, DECISION_KEY, Setup, Upstream, Warden, result_text};

/// Policy text whose third line contains a syntax error.
const SYNTAX_ERROR: &str = "@id(\"ok\")\npermit (principal, action == Warden::Action::\"list_tools\", resource);\npermit (principal, action, resource) when { context.environment == };\n";

fn testkit_setup(policy: &str) -> Setup {
    Setup::new(vec![Upstream::new("testkit", "testkit")], policy)
}

#[test]
fn policy_load_syntax_error_stops_start() {
    let mut setup = testkit_setup("");
    setup
        .policies
        .push(("broken.cedar".to_owned(), SYNTAX_ERROR.to_owned()));
    let files = ConfigDir::write(&setup, 0);

    let output = files.serve_expecting_exit();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("broken.cedar:3:"), "{stderr}");
}

#[test]
fn policy_load_arguments_under_list_tools_stops_start() {
    let policy = r#"
@id("list-workspace-only")
permit (principal, action == Warden::Action::"list_tools", resource)
when { context.arguments.text == "x" };
"#;
    let files = ConfigDir::write(&testkit_setup(policy), 0);

    let output = files.serve_expecting_exit();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("test.cedar"), "{stderr}");
    assert!(stderr.contains("list-workspace-only"), "{stderr}");
}

#[test]
fn policy_load_unavailable_fields_stop_start() {
    let policies = [
        // A tool argument the tool does not have.
        "permit (principal, action == Warden::Action::\"testkit__echo\", resource)\nwhen { context.arguments.path == \"/x\" };\n",
        // Tool arguments while starting a task.
        "permit (principal, action == Warden::Action::\"start_task\", resource)\nwhen { context.arguments.text == \"x\" };\n",
        // An argument of the wrong type: seconds is an integer.
        "permit (principal, action == Warden::Action::\"testkit__sleep\", resource)\nwhen { context.arguments.seconds == \"5\" };\n",
        // A tool that no upstream offers.
        "permit (principal, action == Warden::Action::\"testkit__nosuch\", resource);\n",
    ];
    for policy in policies {
        let files = ConfigDir::write(&testkit_setup(policy), 0);
        let output = files.serve_expecting_exit();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{policy} was accepted: {stderr}");
        assert!(stderr.contains("test.cedar"), "{policy}: {stderr}");
    }
}

#[test]
fn policy_validate_names_file_and_line() {
    let mut setup = testkit_setup("");
    setup
        .policies
        .push(("broken.cedar".to_owned(), SYNTAX_ERROR.to_owned()));
    let files = ConfigDir::write(&setup, 0);

    let output = files.run(&["policy", "validate"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success(), "{text}");
    assert!(text.contains("broken.cedar:3:"), "{text}");
}

const ALLOW_ECHO: &str = r#"
@id("allow-echo")
permit (principal, action == Warden::Action::"testkit__echo", resource);
"#;

const FORBID_ECHO: &str = r#"
@id("allow-echo")
permit (principal, action == Warden::Action::"testkit__echo", resource);

@id("no-echo")
forbid (principal, action == Warden::Action::"testkit__echo", resource);
"#;

/// Waits until the log contains `text` `count` times.
async fn wait_for_log(warden: &Warden, text: &str, count: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if warden.log().matches(text).count() >= count {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn policy_reload_broken_file_keeps_last_good_set() {
    let mut warden = Warden::start(testkit_setup(ALLOW_ECHO)).await;
    let session = warden.session(&warden.task().await).await;
    let before = session
        .call_tool("testkit__echo", json!({ "text": "before" }))
        .await;
    assert_eq!(result_text(&before), "before", "{before}");

    std::fs::write(warden.files.policy_dir.join("test.cedar"), SYNTAX_ERROR)
        .expect("write the broken policy");
    warden.signal("HUP");
    let failed = wait_for_log(&warden, "policy reload failed", 1).await;
    let after = session
        .call_tool("testkit__echo", json!({ "text": "after" }))
        .await;

    assert!(failed, "no failed reload in the log:\n{}", warden.log());
    assert!(warden.is_running(), "SIGHUP stopped the gateway");
    assert_eq!(result_text(&after), "after", "{after}");
}

#[tokio::test]
async fn policy_reload_good_file_takes_effect() {
    let warden = Warden::start(testkit_setup(ALLOW_ECHO)).await;
    let session = warden.session(&warden.task().await).await;
    let before = session
        .call_tool("testkit__echo", json!({ "text": "before" }))
        .await;
    assert_eq!(result_text(&before), "before", "{before}");

    std::fs::write(warden.files.policy_dir.join("test.cedar"), FORBID_ECHO)
        .expect("write the new policy");
    warden.signal("HUP");
    let reloaded = wait_for_log(&warden, "policies reloaded", 1).await;
    let after = session
        .call_tool("testkit__echo", json!({ "text": "after" }))
        .await;

    assert!(reloaded, "no reload in the log:\n{}", warden.log());
    assert_eq!(after["result"]["isError"], json!(true), "{after}");
    assert_eq!(
        after["result"]["_meta"][DECISION_KEY]["policy_ids"],
        json!(["no-echo"]),
        "{after}"
    );
}

#[tokio::test]
async fn policy_reload_after_broken_file_recovers() {
    let warden = Warden::start(testkit_setup(ALLOW_ECHO)).await;
    let session = warden.session(&warden.task().await).await;

    std::fs::write(warden.files.policy_dir.join("test.cedar"), SYNTAX_ERROR)
        .expect("write the broken policy");
    warden.signal("HUP");
    assert!(wait_for_log(&warden, "policy reload failed", 1).await);
    std::fs::write(warden.files.policy_dir.join("test.cedar"), FORBID_ECHO)
        .expect("write the fixed policy");
    warden.signal("HUP");
    let reloaded = wait_for_log(&warden, "policies reloaded", 1).await;
    let after = session
        .call_tool("testkit__echo", json!({ "text": "after" }))
        .await;

    assert!(reloaded, "no reload in the log:\n{}", warden.log());
    assert_eq!(after["result"]["isError"], json!(true), "{after}");
}

#[test]
fn tool_settings_for_unknown_tool_stop_start() {
    let files = ConfigDir::write(&testkit_setup(""), 0);
    let mut toml = std::fs::read_to_string(&files.config).expect("read config");
    toml.push_str("\n[upstreams.testkit.tools.ech0]\nclasses = [\"write\"]\n");
    std::fs::write(&files.config, toml).expect("write config");

    let output = files.serve_expecting_exit();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("upstreams.testkit.tools.ech0 names no tool of upstream testkit"),
        "{stderr}"
    );
}
