//! Several `warden serve` replicas on one PostgreSQL database behave as
//! one gateway: tasks, revocations, approvals, counters and the audit
//! chain are shared, and a database outage denies decisions until the
//! database returns, losing no acknowledged audit record.
//!
//! The tests need `WARDEN_TEST_POSTGRES_URL`; without it they print
//! `skipped: WARDEN_TEST_POSTGRES_URL unset` and pass. The outage test also
//! starts a PostgreSQL server of its own with `initdb` and `pg_ctl`.

mod cluster;
mod model;
mod postgres;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use warden_store::{AuditRecord, PostgresStore, Store};

use cluster::{ClusterFiles, Replica, Session, echoed};
use postgres::{PrivatePostgres, TestDatabase};

/// Time within which a revocation on one replica must take effect on
/// another.
const PROPAGATION_DEADLINE: Duration = Duration::from_secs(1);

/// Starts two replicas on a new database of the test server; `None` when
/// the test is skipped.
async fn two_replicas(
    extra_config: &str,
) -> Option<(TestDatabase, ClusterFiles, Replica, Replica)> {
    let server = postgres::server_url()?;
    let database = TestDatabase::create(&server).await;
    let files = ClusterFiles::new(&database.url, extra_config);
    // The first replica creates the keys and the schema, so the second
    // starts on both.
    let first = files.start_replica().await;
    let second = files.start_replica().await;
    Some((database, files, first, second))
}

/// Loads every audit record of the database at `url`.
async fn audit_log(url: &str) -> Vec<AuditRecord> {
    let store = PostgresStore::open_read_only(url).expect("open the database read-only");
    store
        .audit_range(0, usize::MAX)
        .await
        .expect("load the audit log")
}

/// Returns the texts of the echo calls that were allowed, by their
/// decision records.
fn allowed_echo_texts(records: &[AuditRecord]) -> BTreeSet<String> {
    records
        .iter()
        .filter(|stored| {
            stored.record.kind == "tool.decision"
                && stored.record.target.as_deref() == Some("testkit__echo")
                && stored.record.decision == Some(warden_core::Decision::Allow)
        })
        .filter_map(|stored| stored.record.detail["arguments"]["text"].as_str())
        .map(str::to_owned)
        .collect()
}

/// Polls the audit log until `ready` holds for it or 15 s pass, and
/// returns the last log read.
async fn wait_for_audit(url: &str, ready: impl Fn(&[AuditRecord]) -> bool) -> Vec<AuditRecord> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let records = audit_log(url).await;
        if ready(&records) || Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stdout_of(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_works_on_other_replica() {
    let Some((_database, _files, first, second)) = two_replicas("").await else {
        return;
    };
    let task = first.start_task().await;

    let on_second = second
        .session(&task)
        .await
        .echo("hello from the second")
        .await;
    let on_first = first
        .session(&task)
        .await
        .echo("hello from the first")
        .await;

    assert!(echoed(&on_second, "hello from the second"), "{on_second:?}");
    assert!(echoed(&on_first, "hello from the first"), "{on_first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_other_replica_quickly() {
    let Some((_database, _files, first, second)) = two_replicas("").await else {
        return;
    };
    let task = first.start_task().await;
    let session = second.session(&task).await;
    // The second replica now caches the task as live.
    let before = session.echo("before").await;
    assert!(echoed(&before, "before"), "{before:?}");

    assert_eq!(first.end_task(&task).await, 200);
    let ended = Instant::now();
    let refused = loop {
        let reply = session.echo("after").await;
        if reply.0 == 401 {
            break reply;
        }
        assert!(
            ended.elapsed() < PROPAGATION_DEADLINE,
            "the second replica still accepts the task {:?} after its revocation: {reply:?}",
            ended.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert!(refused.1.to_string().contains("was ended"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_releases_call_on_other_replica() {
    let Some((_database, _files, first, second)) = two_replicas("").await else {
        return;
    };
    let task = first.start_task().await;
    let session = second.session(&task).await;

    let held = tokio::spawn(async move { session.echo("needs approval").await });
    let deadline = Instant::now() + Duration::from_secs(10);
    let approval_id = loop {
        let (status, body) = first
            .admin(Method::GET, "/v1/approvals?status=pending")
            .await;
        assert_eq!(status, 200, "{body}");
        if let Some(id) = body["approvals"][0]["approval_id"].as_str() {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "no approval request appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, body) = first
        .admin(
            Method::POST,
            &format!("/v1/approvals/{approval_id}/approve"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let approved = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the held call returns after the approval")
        .expect("the held call finished");

    assert!(echoed(&reply, "needs approval"), "{reply:?}");
    assert!(
        approved.elapsed() < PROPAGATION_DEADLINE,
        "the call was released {:?} after the approval",
        approved.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_keeps_counters_and_chain() {
    let model_url = model::start().await;
    let key_dir = tempfile::tempdir().expect("create a temporary directory");
    let key_file = key_dir.path().join("model.key");
    std::fs::write(&key_file, "stub-key").expect("write the model key");
    let extra = format!(
        "[llm.stub]\nkind = \"openai\"\nbase_url = \"{model_url}\"\napi_key_file = {:?}\n",
        key_file.display().to_string()
    );
    let Some((database, _files, first, second)) = two_replicas(&extra).await else {
        return;
    };
    let replicas = Arc::new([first, second]);
    let tasks = 4;
    let calls = 25;
    let model_calls = 10;

    let mut work = Vec::new();
    for task_index in 0..tasks {
        let task = replicas[task_index % 2].start_task().await;
        let sessions = [
            replicas[0].session(&task).await,
            replicas[1].session(&task).await,
        ];
        for call in 0..calls {
            let session = sessions[call % 2].clone();
            let text = format!("task-{task_index}-call-{call}");
            work.push(tokio::spawn(async move {
                let reply = session.echo(&text).await;
                assert!(echoed(&reply, &text), "{text}: {reply:?}");
            }));
        }
        for call in 0..model_calls {
            let (replicas, task) = (Arc::clone(&replicas), task.clone());
            work.push(tokio::spawn(async move {
                let status = replicas[call % 2].model_call(&task).await;
                assert_eq!(status, 200, "model call {call} of {}", task.id);
            }));
        }
    }
    for handle in work {
        handle.await.expect("a call failed");
    }

    let records = wait_for_audit(&database.url, |records| {
        allowed_echo_texts(records).len() == tasks * calls
    })
    .await;
    assert_eq!(allowed_echo_texts(&records).len(), tasks * calls);
    let store = PostgresStore::open_read_only(&database.url).expect("open read-only");
    let roots: BTreeSet<&str> = records
        .iter()
        .filter(|stored| stored.record.kind == "task.start")
        .map(|stored| stored.record.task_id.as_str())
        .collect();
    assert_eq!(roots.len(), tasks);
    for task_id in roots {
        let counters = store.counters(task_id).await.expect("load counters");
        let count = |name: &str| counters.get(name).copied().unwrap_or(0);
        let calls = i64::try_from(model_calls).expect("small count");
        assert_eq!(count("model.stub.calls"), calls, "{task_id}: {counters:?}");
        assert_eq!(
            count("model.stub.input_tokens"),
            calls * model::INPUT_TOKENS,
            "{task_id}: {counters:?}"
        );
        assert_eq!(
            count("model.stub.output_tokens"),
            calls * model::OUTPUT_TOKENS,
            "{task_id}: {counters:?}"
        );
    }
    let verified = replicas[1].run(&["audit", "verify"]);
    assert!(verified.status.success(), "{}", stdout_of(&verified));
    assert!(
        stdout_of(&verified).contains("audit log valid"),
        "{}",
        stdout_of(&verified)
    );

    database
        .execute("UPDATE audit SET reason = 'edited afterwards' WHERE seq = 5")
        .await;
    let tampered = replicas[0].run(&["audit", "verify"]);
    assert!(!tampered.status.success(), "{}", stdout_of(&tampered));
    assert!(
        stdout_of(&tampered).contains("seq 5"),
        "{}",
        stdout_of(&tampered)
    );
}

/// Calls the echo tool every 20 ms until `stop` is set, and records each
/// call's text with whether the gateway allowed it and returned its result.
async fn run_load(
    session: Session,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<(String, bool)>>>,
) {
    let mut index = 0;
    while !stop.load(Ordering::Relaxed) {
        let text = format!("load-{index}");
        let reply = session.echo(&text).await;
        outcomes
            .lock()
            .expect("outcomes lock")
            .push((text.clone(), echoed(&reply, &text)));
        index += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `/readyz` until it returns `status` or `timeout` passes; returns
/// the last body.
async fn wait_for_readyz(replica: &Replica, status: u16, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (found, body) = replica.readyz().await;
        if found == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still returns {found} {body}, not {status}; log:\n{}",
            replica.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restart_denies_then_resumes() {
    if postgres::server_url().is_none() {
        return;
    }
    let Some(server) = PrivatePostgres::start() else {
        return;
    };
    let files = ClusterFiles::new(&server.url(), "");
    let replica = files.start_replica().await;
    let task = replica.start_task().await;
    let session = replica.session(&task).await;
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let load = tokio::spawn(run_load(
        session.clone(),
        Arc::clone(&stop),
        Arc::clone(&outcomes),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;

    tokio::task::block_in_place(|| server.stop_server());
    let unready = wait_for_readyz(&replica, 503, Duration::from_secs(10)).await;
    // Past the task cache's age, every call needs the store.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let denied = session.echo("during the outage").await;
    tokio::task::block_in_place(|| server.start_server());
    wait_for_readyz(&replica, 200, Duration::from_secs(20)).await;
    let resumed_deadline = Instant::now() + Duration::from_secs(10);
    let resumed = loop {
        let reply = session.echo("after the outage").await;
        if echoed(&reply, "after the outage") || Instant::now() > resumed_deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load finished");

    let problems = unready["problems"].to_string();
    assert!(problems.contains("store"), "{unready}");
    assert_eq!(denied.0, 503, "{denied:?}");
    let message = denied.1["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("store is unavailable"), "{denied:?}");
    assert!(echoed(&resumed, "after the outage"), "{resumed:?}");
    let outcomes = outcomes.lock().expect("outcomes lock").clone();
    let acknowledged: BTreeSet<String> = outcomes
        .iter()
        .filter(|(_, allowed)| *allowed)
        .map(|(text, _)| text.clone())
        .chain(["after the outage".to_owned()])
        .collect();
    assert!(
        outcomes.iter().any(|(_, allowed)| !allowed),
        "no call was denied during the outage"
    );
    let records = wait_for_audit(&server.url(), |records| {
        acknowledged.is_subset(&allowed_echo_texts(records))
    })
    .await;
    let recorded = allowed_echo_texts(&records);
    let missing: Vec<&String> = acknowledged.difference(&recorded).collect();
    assert!(
        missing.is_empty(),
        "acknowledged calls without audit records: {missing:?}"
    );
    let verified = replica.run(&["audit", "verify"]);
    assert!(verified.status.success(), "{}", stdout_of(&verified));
}
