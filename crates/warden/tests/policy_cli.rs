//! `warden policy test` and `warden policy replay` through the real binary:
//! declarative test cases with passing, failing and invalid files, the
//! bundled pack's own cases, and the replay of a real gateway's audit log
//! against candidate policy sets.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{BASE_POLICY, ConfigDir, Setup, Upstream, Warden, warden_command};

/// A test tool and policies for `policy test` cases: mail may go to
/// `@acme.test` only, and large payments wait for a person.
const CASES_POLICY: &str = r#"
@id("mail-internal")
permit (principal, action == Warden::Action::"mail__send_email", resource)
when { context.arguments.to like "*@acme.test" };

@id("mail-no-external")
@reason("mail may be sent only to @acme.test addresses")
forbid (principal, action == Warden::Action::"mail__send_email", resource)
unless { context.arguments.to like "*@acme.test" };

@id("hold-mail-after-untrusted")
@hold("mail after reading untrusted content needs a person")
forbid (principal, action == Warden::Action::"mail__send_email", resource)
when { context.memory.labels.contains("untrusted-content") };

@id("tickets-read")
permit (principal, action == Warden::Action::"route:tickets", resource)
when { context.method == "GET" };

@id("models")
permit (principal, action == Warden::Action::"call_model", resource)
when { context.max_tokens <= 1000 };
"#;

const MAIL_TOOL: &str = r#"
[[tool]]
server = "mail"
name = "send_email"
classes = ["external-send"]
input_schema = { type = "object", properties = { to = { type = "string" } }, required = ["to"] }

[[route]]
name = "tickets"
classes = ["read"]
host = "tickets.example.com"
"#;

const PASSING_CASES: &str = r#"
[[case]]
name = "internal mail is allowed"
tool = "mail__send_email"
arguments = { to = "bob@acme.test" }
expect = "allow"
policy_ids = ["mail-internal"]

[[case]]
name = "mail after untrusted content is held"
tool = "mail__send_email"
arguments = { to = "bob@acme.test" }
memory = { labels = ["untrusted-content"], calls = 3, class_calls = { read = 3 } }
expect = "hold"
policy_ids = ["hold-mail-after-untrusted"]

[[case]]
name = "ticket reads are allowed"
route = "tickets"
method = "GET"
path = "/queues/support"
expect = "allow"

[[case]]
name = "large model calls are denied"
model = { provider = "openai", model = "gpt-4o-mini", max_tokens = 4000 }
expect = "deny"
"#;

const FAILING_CASE: &str = r#"
[[case]]
name = "external mail is allowed"
tool = "mail__send_email"
arguments = { to = "bob@example.net" }
expect = "allow"
"#;

/// A directory with a policy set and a test directory.
struct CaseDir {
    dir: tempfile::TempDir,
}

impl CaseDir {
    fn new(policy: &str) -> CaseDir {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        std::fs::create_dir_all(dir.path().join("policies")).expect("create policies");
        std::fs::create_dir_all(dir.path().join("tests")).expect("create tests");
        std::fs::write(dir.path().join("policies/cases.cedar"), policy).expect("write policy");
        CaseDir { dir }
    }

    fn write_test(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join("tests").join(name);
        std::fs::write(&path, text).expect("write test file");
        path
    }

    /// Runs `warden policy test DIR/tests --policies DIR/policies`.
    fn run(&self) -> Output {
        let tests = self.dir.path().join("tests");
        let policies = self.dir.path().join("policies");
        let args = [
            "policy",
            "test",
            path_str(&tests),
            "--policies",
            path_str(&policies),
        ];
        warden_command(&args)
            .env("WARDEN_DATA_DIR", self.dir.path().join("data"))
            .output()
            .expect("run warden policy test")
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn policy_test_passing_cases_exit_zero() {
    let cases = CaseDir::new(CASES_POLICY);
    cases.write_test("mail.toml", &format!("{MAIL_TOOL}{PASSING_CASES}"));

    let output = cases.run();

    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    assert!(text.contains("ok   internal mail is allowed\n"), "{text}");
    assert!(
        text.contains("ok   mail after untrusted content is held\n"),
        "{text}"
    );
    assert!(text.contains("ok   ticket reads are allowed\n"), "{text}");
    assert!(
        text.contains("ok   large model calls are denied\n"),
        "{text}"
    );
    assert!(text.contains("4 cases: 4 passed, 0 failed"), "{text}");
}

#[test]
fn policy_test_failing_case_exits_one() {
    let cases = CaseDir::new(CASES_POLICY);
    cases.write_test(
        "mail.toml",
        &format!("{MAIL_TOOL}{PASSING_CASES}{FAILING_CASE}"),
    );

    let output = cases.run();

    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}{}", stderr(&output));
    assert!(
        text.contains(
            "FAIL external mail is allowed: expected allow, got deny by [mail-no-external]: mail may be sent only to @acme.test addresses\n"
        ),
        "{text}"
    );
    assert!(text.contains("ok   internal mail is allowed\n"), "{text}");
    assert!(text.contains("5 cases: 4 passed, 1 failed"), "{text}");
}

#[test]
fn policy_test_wrong_policy_ids_fail() {
    let cases = CaseDir::new(CASES_POLICY);
    let case = r#"
[[case]]
name = "internal mail by the wrong policy"
tool = "mail__send_email"
arguments = { to = "bob@acme.test" }
expect = "allow"
policy_ids = ["some-other-policy"]
"#;
    cases.write_test("mail.toml", &format!("{MAIL_TOOL}{case}"));

    let output = cases.run();

    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}{}", stderr(&output));
    assert!(
        text.contains("FAIL internal mail by the wrong policy: expected allow by [some-other-policy], got allow by [mail-internal]"),
        "{text}"
    );
}

#[test]
fn policy_test_task_scope_denies_before_policies() {
    let cases = CaseDir::new(CASES_POLICY);
    let case = r#"
[[case]]
name = "mail outside the scope"
tool = "mail__send_email"
arguments = { to = "bob@acme.test" }
task = { tools = ["files__*"] }
expect = "deny"
policy_ids = ["warden:task-scope"]
"#;
    cases.write_test("scope.toml", &format!("{MAIL_TOOL}{case}"));

    let output = cases.run();

    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
}

#[test]
fn policy_test_unknown_decision_exits_two() {
    let cases = CaseDir::new(CASES_POLICY);
    let case = r#"
[[case]]
name = "typo in the decision"
tool = "mail__send_email"
arguments = { to = "bob@acme.test" }
expect = "maybe"
"#;
    let path = cases.write_test("typo.toml", &format!("{MAIL_TOOL}{case}"));

    let output = cases.run();

    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains(path_str(&path)), "{text}");
    assert!(text.contains("case \"typo in the decision\""), "{text}");
    assert!(text.contains("key `expect`"), "{text}");
    assert!(text.contains("\"maybe\""), "{text}");
    assert!(
        stdout(&output).is_empty(),
        "no case runs: {}",
        stdout(&output)
    );
}

#[test]
fn policy_test_unknown_key_exits_two() {
    let cases = CaseDir::new(CASES_POLICY);
    let case = r#"
[[case]]
name = "misspelt memory"
tool = "mail__send_email"
arguments = { to = "bob@acme.test" }
memory = { lables = ["untrusted-content"] }
expect = "hold"
"#;
    cases.write_test("typo.toml", &format!("{MAIL_TOOL}{case}"));

    let output = cases.run();

    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("case \"misspelt memory\""), "{text}");
    assert!(text.contains("key `memory.lables`"), "{text}");
}

#[test]
fn policy_test_unknown_tool_exits_two() {
    let cases = CaseDir::new(CASES_POLICY);
    let case = r#"
[[case]]
name = "tool of no server"
tool = "mail__send_fax"
expect = "deny"
"#;
    cases.write_test("unknown.toml", &format!("{MAIL_TOOL}{case}"));

    let output = cases.run();

    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("key `tool`: unknown tool \"mail__send_fax\""),
        "{text}"
    );
}

#[test]
fn policy_test_empty_directory_exits_two() {
    let cases = CaseDir::new(CASES_POLICY);

    let output = cases.run();

    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("no *.toml test files"), "{text}");
}

#[test]
fn policy_test_bundled_pack_cases_pass() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/tests");
    let data = tempfile::tempdir().expect("create a temporary directory");

    let output = warden_command(&["policy", "test", path_str(&tests)])
        .env("WARDEN_DATA_DIR", data.path())
        .output()
        .expect("run warden policy test");

    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    assert!(text.contains(" 0 failed (bundled pack)"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn policy_test_takes_tools_from_configured_upstreams() {
    let files = ConfigDir::write(
        &Setup::new(
            vec![Upstream::new("files", "files")],
            "@id(\"read-data\")\npermit (principal, action == Warden::Action::\"files__read_file\", resource)\nwhen { context.arguments.path in Warden::Path::\"/workspace/data\" };\n",
        ),
        1,
    );
    let tests = files.dir.path().join("cases.toml");
    std::fs::write(
        &tests,
        r#"
[[case]]
name = "data is readable"
tool = "files__read_file"
arguments = { path = "/workspace/data/a.txt" }
expect = "allow"
policy_ids = ["read-data"]

[[case]]
name = "writes are not permitted"
tool = "files__write_file"
arguments = { path = "/workspace/data/a.txt", content = "x" }
expect = "deny"
policy_ids = []
"#,
    )
    .expect("write test file");

    let output = files.run(&["policy", "test", path_str(&tests)]);

    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    assert!(text.contains("2 cases: 2 passed, 0 failed"), "{text}");
}

/// Policies of the recorded gateway: echo is permitted, and reads under
/// `/workspace/data`.
const RECORDED_POLICY: &str = r#"
@id("allow-echo")
permit (principal, action == Warden::Action::"testkit__echo", resource);

@id("files-read-data")
permit (principal, action == Warden::Action::"files__read_file", resource)
when { context.arguments.path in Warden::Path::"/workspace/data" };
"#;

/// A stopped gateway and the seq of each of its tool decisions, by a
/// short name of the call.
struct Recorded {
    warden: Warden,
    task_id: String,
    seqs: std::collections::BTreeMap<&'static str, i64>,
}

impl Recorded {
    /// Writes a candidate policy directory: the recorded set plus `extra`.
    fn candidate(&self, extra: &str) -> PathBuf {
        let dir = self
            .warden
            .files
            .dir
            .path()
            .join(format!("candidate-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the candidate directory");
        std::fs::write(dir.join("base.cedar"), BASE_POLICY).expect("write base.cedar");
        std::fs::write(dir.join("test.cedar"), RECORDED_POLICY).expect("write test.cedar");
        std::fs::write(dir.join("candidate.cedar"), extra).expect("write candidate.cedar");
        dir
    }

    fn replay(&self, policies: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["policy", "replay", "--policies", path_str(policies)];
        args.extend_from_slice(extra);
        self.warden.files.run(&args)
    }
}

/// Runs a gateway, makes two allowed echo calls, one allowed and one
/// denied read, waits until the trace contains them, and stops the gateway.
async fn record_calls(setup: Setup) -> Recorded {
    let warden = Warden::start(setup).await;
    let readme = warden.files.workspace_file("/workspace/data/readme.txt");
    std::fs::create_dir_all(readme.parent().expect("parent")).expect("create data");
    std::fs::write(&readme, "notes").expect("write readme");
    let task = warden.task().await;
    let session = warden.session(&task).await;
    let calls: [(&str, &str, Value); 4] = [
        ("hi", "testkit__echo", json!({ "text": "hi" })),
        (
            "readme",
            "files__read_file",
            json!({ "path": "/workspace/data/readme.txt" }),
        ),
        (
            "other",
            "files__read_file",
            json!({ "path": "/workspace/other/x.txt" }),
        ),
        ("bye", "testkit__echo", json!({ "text": "bye" })),
    ];
    for (_, tool, arguments) in &calls {
        session.call_tool(tool, arguments.clone()).await;
    }
    let count = |records: &[Value], kind: &str| {
        records
            .iter()
            .filter(|record| record["kind"] == kind)
            .count()
    };
    let records = warden
        .trace(&task.id, |records| {
            count(records, "tool.decision") == 4 && count(records, "tool.result") == 3
        })
        .await;
    assert_eq!(count(&records, "tool.decision"), 4, "{records:?}");

    let decisions: Vec<&Value> = records
        .iter()
        .filter(|record| record["kind"] == "tool.decision")
        .collect();
    let mut seqs = std::collections::BTreeMap::new();
    for ((name, _, _), record) in calls.iter().zip(&decisions) {
        seqs.insert(*name, record["seq"].as_i64().expect("seq"));
    }
    assert_eq!(decisions[2]["decision"], json!("deny"), "{records:?}");

    let mut warden = warden;
    warden.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while warden.is_running() {
        assert!(Instant::now() < deadline, "warden did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Recorded {
        warden,
        task_id: task.id,
        seqs,
    }
}

fn recorded_setup() -> Setup {
    Setup::new(
        vec![
            Upstream::new("files", "files"),
            Upstream::new("testkit", "testkit"),
        ],
        RECORDED_POLICY,
    )
}

#[tokio::test]
async fn policy_replay_lists_flipped_decision() {
    let recorded = record_calls(recorded_setup()).await;
    let candidate = recorded.candidate(
        "@id(\"no-bye\")\n@reason(\"no goodbyes\")\nforbid (principal, action == Warden::Action::\"testkit__echo\", resource)\nwhen { context.arguments.text == \"bye\" };\n",
    );

    let output = recorded.replay(&candidate, &[]);

    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    let changed: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("seq "))
        .collect();
    assert_eq!(changed.len(), 1, "{text}");
    assert!(
        changed[0].starts_with(&format!("seq {} ", recorded.seqs["bye"])),
        "{text}"
    );
    assert!(changed[0].contains("tool.decision testkit__echo"), "{text}");
    assert!(text.contains("recorded:  allow by [allow-echo]"), "{text}");
    assert!(
        text.contains("candidate: deny by [no-bye]: no goodbyes"),
        "{text}"
    );
    assert!(
        text.contains(&format!("task {}", recorded.task_id)),
        "{text}"
    );
    assert!(
        text.contains(&format!("agent {}", support::AGENT)),
        "{text}"
    );
    assert!(
        text.contains("4 steps replayed from 1 trace against"),
        "{text}"
    );
    assert!(text.contains(": 1 changed (allow->deny: 1)"), "{text}");
    assert!(text.contains(", 0 not replayable"), "{text}");
}

#[tokio::test]
async fn policy_replay_same_policies_report_no_change() {
    let recorded = record_calls(recorded_setup()).await;

    let output = recorded.replay(&recorded.warden.files.policy_dir, &[]);

    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    assert!(!text.contains("seq "), "{text}");
    assert!(text.contains("4 steps replayed"), "{text}");
    assert!(
        text.contains(": 0 changed, 0 same decision by other policies"),
        "{text}"
    );
}

#[tokio::test]
async fn policy_replay_rebuilds_call_count() {
    let recorded = record_calls(recorded_setup()).await;
    // Two calls were let through before "bye": "hi" and the readme read.
    // The denied read does not count, so calls == 2 holds for "bye" only.
    let candidate = recorded.candidate(
        "@id(\"third-call\")\nforbid (principal, action == Warden::Action::\"testkit__echo\", resource)\nwhen { context.memory.calls == 2 };\n",
    );

    let output = recorded.replay(&candidate, &["--json"]);

    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    let report: Value = serde_json::from_str(&text).expect("replay --json prints JSON");
    assert_eq!(report["changed"], json!(1), "{report}");
    assert_eq!(
        report["records"][0]["seq"],
        json!(recorded.seqs["bye"]),
        "{report}"
    );
    assert_eq!(
        report["records"][0]["change"],
        json!("decision"),
        "{report}"
    );
    assert_eq!(
        report["records"][0]["candidate"]["policy_ids"],
        json!(["third-call"]),
        "{report}"
    );
}

#[tokio::test]
async fn policy_replay_rebuilds_labels() {
    let recorded = record_calls(recorded_setup()).await;
    // testkit__echo is read-only without openWorldHint, so its output is
    // labelled untrusted-content. Both reads come after "hi" returned.
    let candidate = recorded.candidate(
        "@id(\"no-reads-after-untrusted\")\nforbid (principal, action == Warden::Action::\"files__read_file\", resource)\nwhen { context.memory.labels.contains(\"untrusted-content\") };\n",
    );

    let output = recorded.replay(&candidate, &["--json", "--trace", &recorded.task_id]);

    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    let report: Value = serde_json::from_str(&text).expect("replay --json prints JSON");
    let records = report["records"].as_array().expect("records");
    assert_eq!(records.len(), 2, "{report}");
    assert_eq!(
        records[0]["seq"],
        json!(recorded.seqs["readme"]),
        "{report}"
    );
    assert_eq!(records[0]["change"], json!("decision"), "{report}");
    assert_eq!(records[1]["seq"], json!(recorded.seqs["other"]), "{report}");
    assert_eq!(records[1]["change"], json!("policies"), "{report}");
    assert_eq!(
        report["transitions"],
        json!({ "allow->deny": 1 }),
        "{report}"
    );
    assert_eq!(report["other_policies"], json!(1), "{report}");
}

#[tokio::test]
async fn policy_replay_redacted_arguments_not_replayable() {
    let mut setup = recorded_setup();
    // These lines follow the [limits] table, so the header opens a table
    // of its own.
    setup.limits = vec!["[audit]".to_owned(), "redact_arguments = true".to_owned()];
    let recorded = record_calls(setup).await;
    let candidate = recorded.candidate("");

    let output = recorded.replay(&candidate, &[]);

    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    assert_eq!(
        text.matches("not replayable (arguments redacted)").count(),
        4,
        "{text}"
    );
    assert!(text.contains("0 steps replayed"), "{text}");
    assert!(text.contains(", 4 not replayable"), "{text}");
}

#[tokio::test]
async fn policy_replay_invalid_candidate_exits_one() {
    let recorded = record_calls(recorded_setup()).await;
    let candidate =
        recorded.candidate("permit (principal, action, resource) when { context.nope };\n");

    let output = recorded.replay(&candidate, &[]);

    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("candidate policies"), "{text}");
}

#[tokio::test]
async fn policy_replay_decides_model_and_http_steps() {
    // Nothing listens on the model's port, and Warden refuses to send the
    // route's requests to a loopback address: the decisions are recorded
    // before either is contacted, which is all the replay needs.
    let key_dir = tempfile::tempdir().expect("create a temporary directory");
    let key_file = key_dir.path().join("model.key");
    std::fs::write(&key_file, "stub-key").expect("write the model key");
    let policy = r#"
@id("call-models")
permit (principal, action == Warden::Action::"call_model", resource);

@id("tickets-get")
permit (principal, action == Warden::Action::"route:tickets", resource)
when { context.method == "GET" };
"#;
    let mut setup = Setup::new(vec![Upstream::new("testkit", "testkit")], policy);
    // These lines follow the [limits] table, so each header opens a table
    // of its own.
    setup.limits = vec![
        "[llm.stub]".to_owned(),
        "kind = \"openai\"".to_owned(),
        "base_url = \"http://127.0.0.1:9\"".to_owned(),
        format!("api_key_file = {:?}", path_str(&key_file)),
        "[http.tickets]".to_owned(),
        "url = \"http://127.0.0.1:9/api\"".to_owned(),
        "methods = [\"GET\"]".to_owned(),
        "classes = [\"read\"]".to_owned(),
        "query_params = [\"status\"]".to_owned(),
    ];
    let mut warden = Warden::start(setup).await;
    let task = warden.task().await;
    // Only the recorded decisions matter below: the calls themselves fail
    // after them, so their responses are not checked.
    warden
        .http
        .post(format!("{}/llm/stub/v1/chat/completions", warden.base))
        .bearer_auth(&task.token)
        .json(&json!({
            "model": "gpt-4o-mini",
            "max_tokens": 500,
            "messages": [{ "role": "user", "content": "hi" }]
        }))
        .send()
        .await
        .expect("POST a model call");
    for path in ["queues/support?status=open", "other"] {
        warden
            .http
            .get(format!("{}/http/tickets/{path}", warden.base))
            .bearer_auth(&task.token)
            .send()
            .await
            .expect("GET a route");
    }
    let decisions = |records: &[Value]| {
        records
            .iter()
            .filter(|record| {
                record["kind"] == "model.decision" || record["kind"] == "http.decision"
            })
            .map(|record| record["seq"].as_i64().expect("seq"))
            .collect::<Vec<i64>>()
    };
    let records = warden
        .trace(&task.id, |records| decisions(records).len() == 3)
        .await;
    let seqs = decisions(&records);
    assert_eq!(seqs.len(), 3, "{records:?}");
    let allowed = records
        .iter()
        .filter(|record| record["decision"] == "allow")
        .filter(|record| seqs.contains(&record["seq"].as_i64().unwrap_or_default()))
        .count();
    assert_eq!(allowed, 3, "every recorded step was allowed: {records:?}");
    warden.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while warden.is_running() {
        assert!(Instant::now() < deadline, "warden did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let candidate = warden.files.dir.path().join("candidate");
    std::fs::create_dir_all(&candidate).expect("create the candidate directory");
    std::fs::write(candidate.join("base.cedar"), BASE_POLICY).expect("write base.cedar");
    std::fs::write(candidate.join("test.cedar"), policy).expect("write test.cedar");
    // Each forbid matches one recorded step, each by another of its fields.
    let forbids = r#"
@id("small-models")
forbid (principal, action == Warden::Action::"call_model", resource)
when { context.max_tokens > 100 && context.model == "gpt-4o-mini" };

@id("open-queue")
forbid (principal, action == Warden::Action::"route:tickets", resource)
when { context.query has status && context.query.status == "open" && context.path_text == "/queues/support" };

@id("second-request")
forbid (principal, action == Warden::Action::"route:tickets", resource)
when { context.memory.calls == 1 && context.destination.port == 9 && context.destination.host == "127.0.0.1" };
"#;
    std::fs::write(candidate.join("candidate.cedar"), forbids).expect("write candidate.cedar");

    let output = warden.files.run(&[
        "policy",
        "replay",
        "--policies",
        path_str(&candidate),
        "--json",
    ]);

    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    let report: Value = serde_json::from_str(&text).expect("replay --json prints JSON");
    let changed: Vec<(i64, Value)> = report["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|record| {
            (
                record["seq"].as_i64().expect("seq"),
                record["candidate"]["policy_ids"].clone(),
            )
        })
        .collect();
    assert_eq!(
        changed,
        vec![
            (seqs[0], json!(["small-models"])),
            (seqs[1], json!(["open-queue"])),
            (seqs[2], json!(["second-request"])),
        ],
        "{report}"
    );
    assert_eq!(
        report["transitions"],
        json!({ "allow->deny": 3 }),
        "{report}"
    );
}
