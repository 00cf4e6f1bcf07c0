//! `warden demo` runs the whole story end to end and exits 0.

use std::process::Command;

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

#[test]
fn demo_shows_model_and_tool_steps_in_one_trace() {
    let output = Command::new(WARDEN)
        .arg("demo")
        .env("WARDEN_LOG", "warn")
        .output()
        .expect("run warden demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );

    for expected in [
        // Decisions of every kind, each with its reason or policy.
        "Decision:    ALLOW",
        "Decision:    DENY by [files-no-secrets]",
        "Decision:    DENY by [warden:task-scope]",
        "and approves it",
        // Delegation and revocation.
        "is refused: invalid_scope",
        "Scope \"mail__send_email\" is granted",
        "Task ended (HTTP 200)",
        // The trace nests tool calls under the model calls that asked for them.
        "model.decision scripted/demo-react-1",
        "asks for files__list_directory",
        "(requested by model, call_1)",
        "(no model asked for it)",
        "task.delegated",
    ] {
        assert!(
            stdout.contains(expected),
            "demo output lacks {expected:?}:\n{stdout}"
        );
    }
    // The model's key is Warden's alone.
    assert!(
        !stdout.contains("sk-demo-") && !stderr.contains("sk-demo-"),
        "the model key leaked into the demo output"
    );
}
