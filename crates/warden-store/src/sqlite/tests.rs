//! Tests of the SQLite backend against real database files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, params};
use serde_json::json;
use tempfile::TempDir;
use warden_core::Decision;

use super::*;
use crate::{ChainError, GENESIS_HASH, record_hash, verify_chain};

const TRACE_A: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACE_B: &str = "0af7651916cd43dd8448eb211c80319c";

struct Fixture {
    _dir: TempDir,
    path: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("create temporary directory");
    let path = dir.path().join("state").join("warden.db");
    Fixture { _dir: dir, path }
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path).expect("open store")
}

fn task(task_id: &str, parent: Option<&str>, trace_id: &str, created_at: i64) -> TaskRecord {
    TaskRecord {
        task_id: task_id.into(),
        agent: "spiffe://acme.test/agent/support-bot".into(),
        user: "alice".into(),
        intent: format!("intent of {task_id}"),
        tools: vec!["fs__read_file".into(), "mail__send_email".into()],
        trace_id: trace_id.into(),
        parent_task_id: parent.map(str::to_owned),
        created_at,
        expires_at: created_at + 600,
        revoked_at: None,
    }
}

fn record(trace_id: &str, task_id: &str, index: i64, decision: Option<Decision>) -> NewAuditRecord {
    NewAuditRecord {
        time_us: 1_700_000_000_000_000 + index,
        trace_id: trace_id.into(),
        span_id: format!("{index:016x}"),
        parent_span_id: (index > 0).then(|| format!("{:016x}", index - 1)),
        task_id: task_id.into(),
        agent: "spiffe://acme.test/agent/support-bot".into(),
        user: "alice".into(),
        kind: "tool.decision".into(),
        target: Some("fs__read_file".into()),
        decision,
        policy_ids: vec!["read-public".into(), "default".into()],
        reason: decision.map(|decision| format!("{decision} by policy")),
        detail: json!({
            "arguments_sha256": "9f86d081884c7d659a2feaa0c55ad015",
            "duration_ms": 0.1 + 0.2,
            "index": index,
            "note": "grüße \u{1F600} \"quoted\"",
        }),
    }
}

async fn append_and_flush(store: &SqliteStore, count: i64) {
    for index in 0..count {
        store.append(record(TRACE_A, "task-1", index, Some(Decision::Allow)));
    }
    store.flush().await.expect("flush");
}

async fn all_records(store: &SqliteStore) -> Vec<AuditRecord> {
    store.audit_range(0, usize::MAX).await.expect("load audit")
}

/// Runs `statements` on the database file through a separate connection,
/// as an attacker with file access would.
fn tamper(path: &Path, statements: &str) {
    let conn = Connection::open(path).expect("open database for tampering");
    conn.execute_batch(statements)
        .expect("tamper with database");
}

/// Appends five records, closes the store, runs `statements` on the file
/// and returns the chain error that verification reports.
async fn tampered_chain_error(statements: impl FnOnce(&Path)) -> ChainError {
    let fixture = fixture();
    {
        let store = open(&fixture.path);
        append_and_flush(&store, 5).await;
        store.close().await.expect("close store");
    }
    statements(&fixture.path);

    let store = SqliteStore::open_read_only(&fixture.path).expect("open read-only");
    let records = all_records(&store).await;
    verify_chain(&records, GENESIS_HASH).expect_err("tampering detected")
}

#[tokio::test]
async fn task_round_trip() {
    let fixture = fixture();
    let store = open(&fixture.path);
    let mut stored = task("task-1", None, TRACE_A, 1_000);
    stored.revoked_at = Some(1_100);

    store.insert_task(&stored).await.expect("insert task");

    let loaded = store.task("task-1").await.expect("load task");
    assert_eq!(loaded, Some(stored));
}

#[tokio::test]
async fn task_unknown_id_is_none() {
    let fixture = fixture();
    let store = open(&fixture.path);

    assert_eq!(store.task("missing").await.expect("load task"), None);
}

#[tokio::test]
async fn insert_task_rejects_duplicate_id() {
    let fixture = fixture();
    let store = open(&fixture.path);
    store
        .insert_task(&task("task-1", None, TRACE_A, 1_000))
        .await
        .expect("insert task");

    let error = store
        .insert_task(&task("task-1", None, TRACE_B, 2_000))
        .await
        .expect_err("duplicate rejected");

    assert!(matches!(error, StoreError::TaskExists { .. }), "{error}");
}

#[tokio::test]
async fn insert_task_rejects_unknown_parent() {
    let fixture = fixture();
    let store = open(&fixture.path);

    let error = store
        .insert_task(&task("child", Some("ghost"), TRACE_A, 1_000))
        .await
        .expect_err("unknown parent rejected");

    assert!(
        matches!(error, StoreError::ParentNotFound { .. }),
        "{error}"
    );
    assert_eq!(store.task("child").await.expect("load task"), None);
}

#[tokio::test]
async fn insert_task_rejects_revoked_parent() {
    let fixture = fixture();
    let store = open(&fixture.path);
    store
        .insert_task(&task("root", None, TRACE_A, 1_000))
        .await
        .expect("insert root");
    store.revoke_task("root", 1_050).await.expect("revoke root");

    let error = store
        .insert_task(&task("child", Some("root"), TRACE_A, 1_100))
        .await
        .expect_err("revoked parent rejected");

    assert!(
        matches!(
            error,
            StoreError::ParentRevoked {
                revoked_at: 1_050,
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn revoke_cascades_to_descendants_only() {
    let fixture = fixture();
    let store = open(&fixture.path);
    let tree = [
        task("root", None, TRACE_A, 1_000),
        task("child", Some("root"), TRACE_A, 1_001),
        task("grandchild", Some("child"), TRACE_A, 1_002),
        task("great-grandchild", Some("grandchild"), TRACE_A, 1_003),
        task("sibling", Some("root"), TRACE_A, 1_004),
        task("other-root", None, TRACE_B, 1_005),
        task("other-child", Some("other-root"), TRACE_B, 1_006),
    ];
    for entry in &tree {
        store.insert_task(entry).await.expect("insert task");
    }

    let revoked = store.revoke_task("child", 2_000).await.expect("revoke");

    assert_eq!(revoked, ["child", "grandchild", "great-grandchild"]);
    for id in ["root", "sibling", "other-root", "other-child"] {
        let loaded = store.task(id).await.expect("load").expect("task exists");
        assert_eq!(loaded.revoked_at, None, "task {id} must stay live");
    }
    for id in ["child", "grandchild", "great-grandchild"] {
        let loaded = store.task(id).await.expect("load").expect("task exists");
        assert_eq!(loaded.revoked_at, Some(2_000), "task {id} must be revoked");
    }
}

#[tokio::test]
async fn revoke_skips_tasks_already_revoked() {
    let fixture = fixture();
    let store = open(&fixture.path);
    store
        .insert_task(&task("root", None, TRACE_A, 1_000))
        .await
        .expect("insert root");
    store
        .insert_task(&task("child", Some("root"), TRACE_A, 1_001))
        .await
        .expect("insert child");
    store
        .insert_task(&task("sibling", Some("root"), TRACE_A, 1_002))
        .await
        .expect("insert sibling");
    store
        .revoke_task("child", 2_000)
        .await
        .expect("revoke child");

    let revoked = store.revoke_task("root", 3_000).await.expect("revoke root");
    let again = store
        .revoke_task("root", 4_000)
        .await
        .expect("revoke again");

    assert_eq!(revoked, ["root", "sibling"]);
    assert!(again.is_empty());
    let child = store.task("child").await.expect("load").expect("exists");
    assert_eq!(child.revoked_at, Some(2_000));
}

#[tokio::test]
async fn revoke_unknown_task_returns_empty() {
    let fixture = fixture();
    let store = open(&fixture.path);

    let revoked = store.revoke_task("missing", 1_000).await.expect("revoke");

    assert!(revoked.is_empty());
}

#[tokio::test]
async fn tasks_lists_newest_first() {
    let fixture = fixture();
    let store = open(&fixture.path);
    for (id, created_at) in [("old", 1_000), ("new", 3_000), ("middle", 2_000)] {
        store
            .insert_task(&task(id, None, TRACE_A, created_at))
            .await
            .expect("insert task");
    }

    let all: Vec<String> = store
        .tasks(10)
        .await
        .expect("list")
        .into_iter()
        .map(|task| task.task_id)
        .collect();
    let limited = store.tasks(2).await.expect("list");

    assert_eq!(all, ["new", "middle", "old"]);
    assert_eq!(limited.len(), 2);
}

#[tokio::test]
async fn append_flush_trace_in_order() {
    let fixture = fixture();
    let store = open(&fixture.path);
    let mut expected = Vec::new();
    for index in 0..10 {
        let trace_id = if index % 3 == 0 { TRACE_B } else { TRACE_A };
        let decision = [
            None,
            Some(Decision::Allow),
            Some(Decision::Deny),
            Some(Decision::Hold),
        ][usize::try_from(index % 4).expect("small index")];
        let submitted = record(trace_id, "task-1", index, decision);
        if trace_id == TRACE_A {
            expected.push(submitted.clone());
        }
        store.append(submitted);
    }
    store.flush().await.expect("flush");

    let trace = store.trace(TRACE_A).await.expect("load trace");

    let records: Vec<NewAuditRecord> = trace.iter().map(|stored| stored.record.clone()).collect();
    assert_eq!(records, expected);
    assert!(trace.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    assert_eq!(store.dropped_records(), 0);
}

#[tokio::test]
async fn trace_unknown_id_is_empty() {
    let fixture = fixture();
    let store = open(&fixture.path);
    append_and_flush(&store, 2).await;

    assert!(store.trace(TRACE_B).await.expect("load trace").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_chain_without_gaps() {
    let fixture = fixture();
    // Producers share the store as the gateway does, behind `dyn Store`.
    let store: Arc<dyn Store> = Arc::new(open(&fixture.path));
    let producers = 8;
    let per_producer = 250;

    let handles: Vec<_> = (0..producers)
        .map(|producer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for index in 0..per_producer {
                    let task_id = format!("task-{producer}");
                    store.append(record(TRACE_A, &task_id, index, Some(Decision::Allow)));
                    if index % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("producer finished");
    }
    store.flush().await.expect("flush");

    let records = store.audit_range(0, usize::MAX).await.expect("load audit");
    let seqs: Vec<i64> = records.iter().map(|stored| stored.seq).collect();
    let expected: Vec<i64> = (1..=producers * per_producer).collect();
    assert_eq!(seqs, expected);
    assert_eq!(verify_chain(&records, GENESIS_HASH), Ok(()));
    assert_eq!(store.dropped_records(), 0);
}

#[tokio::test]
async fn audit_range_pages_chain_together() {
    let fixture = fixture();
    let store = open(&fixture.path);
    append_and_flush(&store, 25).await;

    let mut after_seq = 0;
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut pages = 0;
    loop {
        let page = store.audit_range(after_seq, 10).await.expect("load page");
        let Some(last) = page.last() else { break };
        assert_eq!(verify_chain(&page, &prev_hash), Ok(()), "page {pages}");
        after_seq = last.seq;
        prev_hash = last.hash.clone();
        pages += 1;
    }

    assert_eq!(pages, 3);
    assert_eq!(after_seq, 25);
}

#[tokio::test]
async fn chain_detects_edited_record() {
    let error = tampered_chain_error(|path| {
        tamper(path, "UPDATE audit SET decision = 'deny' WHERE seq = 3");
    })
    .await;

    assert!(matches!(error, ChainError::Hash { .. }), "{error}");
    assert_eq!(error.seq(), 3);
}

#[tokio::test]
async fn chain_detects_deleted_record() {
    let error = tampered_chain_error(|path| {
        tamper(path, "DELETE FROM audit WHERE seq = 3");
    })
    .await;

    assert!(
        matches!(error, ChainError::Sequence { expected: 3, .. }),
        "{error}"
    );
    assert_eq!(error.seq(), 4);
}

#[tokio::test]
async fn chain_detects_inserted_record() {
    let error = tampered_chain_error(|path| {
        // Move records 3.. up by one, then forge a record at seq 3 that
        // links correctly to record 2 and carries a correct hash.
        tamper(
            path,
            "UPDATE audit SET seq = -(seq + 1) WHERE seq >= 3;
             UPDATE audit SET seq = -seq WHERE seq < 0;",
        );
        let conn = Connection::open(path).expect("open database");
        let prev_hash: String = conn
            .query_row("SELECT hash FROM audit WHERE seq = 2", [], |row| row.get(0))
            .expect("read hash of record 2");
        let forged = record(TRACE_A, "task-1", 99, Some(Decision::Allow));
        let hash = record_hash(&prev_hash, 3, &forged);
        conn.execute(
            "INSERT INTO audit (seq, time_us, trace_id, span_id, parent_span_id, task_id,
                agent, user, kind, target, decision, policy_ids, reason, detail,
                prev_hash, hash)
             VALUES (3, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'allow', ?10, ?11, ?12, ?13, ?14)",
            params![
                forged.time_us,
                forged.trace_id,
                forged.span_id,
                forged.parent_span_id,
                forged.task_id,
                forged.agent,
                forged.user,
                forged.kind,
                forged.target,
                serde_json::Value::from(forged.policy_ids.clone()).to_string(),
                forged.reason,
                forged.detail.to_string(),
                prev_hash,
                hash,
            ],
        )
        .expect("insert forged record");
    })
    .await;

    assert!(matches!(error, ChainError::Link { .. }), "{error}");
    assert_eq!(error.seq(), 4);
}

#[tokio::test]
async fn chain_detects_reordered_records() {
    let error = tampered_chain_error(|path| {
        tamper(
            path,
            "UPDATE audit SET seq = -1 WHERE seq = 2;
             UPDATE audit SET seq = 2 WHERE seq = 3;
             UPDATE audit SET seq = 3 WHERE seq = -1;",
        );
    })
    .await;

    assert!(matches!(error, ChainError::Link { .. }), "{error}");
    assert_eq!(error.seq(), 2);
}

#[tokio::test]
async fn chain_survives_untampered_round_trip() {
    let fixture = fixture();
    let store = open(&fixture.path);
    append_and_flush(&store, 5).await;

    let records = all_records(&store).await;

    assert_eq!(verify_chain(&records, GENESIS_HASH), Ok(()));
}

#[tokio::test]
async fn corrupt_detail_names_record() {
    let fixture = fixture();
    {
        let store = open(&fixture.path);
        append_and_flush(&store, 3).await;
    }
    tamper(
        &fixture.path,
        "UPDATE audit SET detail = '{not json' WHERE seq = 2",
    );
    let store = SqliteStore::open_read_only(&fixture.path).expect("open read-only");

    let error = store
        .trace(TRACE_A)
        .await
        .expect_err("corrupt row reported");

    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("audit record 2"), "{error}");
}

#[tokio::test]
async fn reopen_continues_chain() {
    let fixture = fixture();
    {
        let store = open(&fixture.path);
        append_and_flush(&store, 3).await;
    }
    let store = open(&fixture.path);
    append_and_flush(&store, 3).await;

    let records = all_records(&store).await;

    let seqs: Vec<i64> = records.iter().map(|stored| stored.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(verify_chain(&records, GENESIS_HASH), Ok(()));
}

#[tokio::test]
async fn drop_commits_queued_records() {
    let fixture = fixture();
    {
        let store = open(&fixture.path);
        for index in 0..20 {
            store.append(record(TRACE_A, "task-1", index, None));
        }
    }
    let store = SqliteStore::open_read_only(&fixture.path).expect("open read-only");

    assert_eq!(all_records(&store).await.len(), 20);
}

#[tokio::test]
async fn read_only_sees_committed_records() {
    let fixture = fixture();
    let writer = open(&fixture.path);
    writer
        .insert_task(&task("task-1", None, TRACE_A, 1_000))
        .await
        .expect("insert task");
    append_and_flush(&writer, 4).await;

    let reader = SqliteStore::open_read_only(&fixture.path).expect("open read-only");
    append_and_flush(&writer, 2).await;

    assert_eq!(reader.trace(TRACE_A).await.expect("load trace").len(), 6);
    assert!(reader.task("task-1").await.expect("load task").is_some());
    reader.ping().await.expect("ping");
}

#[tokio::test]
async fn read_only_rejects_writes() {
    let fixture = fixture();
    drop(open(&fixture.path));
    let reader = SqliteStore::open_read_only(&fixture.path).expect("open read-only");

    let insert = reader
        .insert_task(&task("task-1", None, TRACE_A, 1_000))
        .await
        .expect_err("insert rejected");
    let revoke = reader
        .revoke_task("task-1", 1_000)
        .await
        .expect_err("revoke rejected");
    reader.append(record(TRACE_A, "task-1", 0, None));

    assert!(matches!(insert, StoreError::ReadOnly { .. }), "{insert}");
    assert!(matches!(revoke, StoreError::ReadOnly { .. }), "{revoke}");
    assert_eq!(reader.dropped_records(), 1);
}

#[tokio::test]
async fn read_only_open_missing_file_fails() {
    let fixture = fixture();

    let error = SqliteStore::open_read_only(&fixture.path)
        .err()
        .expect("missing file rejected");

    assert!(matches!(error, StoreError::NotFound { .. }), "{error}");
    assert!(
        !fixture.path.exists(),
        "read-only open must not create the file"
    );
}

#[tokio::test]
async fn traces_summary_counts_denials() {
    let fixture = fixture();
    let store = open(&fixture.path);
    store
        .insert_task(&task("task-a", None, TRACE_A, 1_000))
        .await
        .expect("insert task a");
    store
        .insert_task(&task("task-a-child", Some("task-a"), TRACE_A, 1_010))
        .await
        .expect("insert delegated task");
    store
        .insert_task(&task("task-b", None, TRACE_B, 2_000))
        .await
        .expect("insert task b");
    let decisions = [
        (TRACE_A, "task-a", Some(Decision::Allow)),
        (TRACE_A, "task-a", Some(Decision::Deny)),
        (TRACE_A, "task-a-child", Some(Decision::Deny)),
        (TRACE_A, "task-a-child", Some(Decision::Hold)),
        (TRACE_A, "task-a", None),
        (TRACE_B, "task-b", Some(Decision::Allow)),
    ];
    for (index, (trace_id, task_id, decision)) in decisions.into_iter().enumerate() {
        let index = i64::try_from(index).expect("small index");
        store.append(record(trace_id, task_id, index, decision));
    }
    store.flush().await.expect("flush");

    let summaries = store.traces(10).await.expect("list traces");

    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0].trace_id, TRACE_B);
    assert_eq!(summaries[0].records, 1);
    assert_eq!(summaries[0].denials, 0);
    let trace_a = &summaries[1];
    assert_eq!(trace_a.task_id, "task-a");
    assert_eq!(trace_a.intent, "intent of task-a");
    assert_eq!(trace_a.started_at, 1_000);
    assert_eq!(trace_a.records, 5);
    assert_eq!(trace_a.denials, 2);
    assert_eq!(store.traces(1).await.expect("list traces").len(), 1);
}

#[tokio::test]
async fn open_is_idempotent_and_uses_wal() {
    let fixture = fixture();
    drop(open(&fixture.path));
    drop(open(&fixture.path));

    let conn = Connection::open(&fixture.path).expect("open database");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("read user_version");
    let journal_mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .expect("read journal_mode");
    assert_eq!(version, sql::SCHEMA_VERSION);
    assert_eq!(journal_mode, "wal");
}

#[tokio::test]
async fn open_rejects_newer_schema() {
    let fixture = fixture();
    drop(open(&fixture.path));
    tamper(&fixture.path, "PRAGMA user_version = 99");

    let writable = SqliteStore::open(&fixture.path)
        .err()
        .expect("open rejected");
    let read_only = SqliteStore::open_read_only(&fixture.path)
        .err()
        .expect("read-only open rejected");

    assert!(
        matches!(writable, StoreError::NewerSchema { found: 99, .. }),
        "{writable}"
    );
    assert!(
        matches!(read_only, StoreError::NewerSchema { found: 99, .. }),
        "{read_only}"
    );
}

#[tokio::test]
async fn read_only_open_rejects_unmigrated_file() {
    let fixture = fixture();
    std::fs::create_dir_all(fixture.path.parent().expect("parent")).expect("create dir");
    Connection::open(&fixture.path).expect("create empty database");

    let error = SqliteStore::open_read_only(&fixture.path)
        .err()
        .expect("unmigrated file rejected");

    assert!(
        matches!(error, StoreError::OutdatedSchema { found: 0, .. }),
        "{error}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn open_creates_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = fixture();
    drop(open(&fixture.path));

    let mode = std::fs::metadata(&fixture.path)
        .expect("stat database")
        .permissions()
        .mode();

    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn open_error_names_path_and_fix() {
    let fixture = fixture();
    std::fs::create_dir_all(fixture.path.parent().expect("parent")).expect("create dir");
    let blocker = fixture.path.parent().expect("parent").join("file");
    std::fs::write(&blocker, b"not a directory").expect("write file");
    let path = blocker.join("warden.db");

    let error = SqliteStore::open(&path).err().expect("open fails");
    let message = error.to_string();

    assert!(matches!(error, StoreError::CreateDir { .. }), "{message}");
    assert!(
        message.contains(&blocker.display().to_string()),
        "{message}"
    );
    assert!(message.contains("[store] path"), "{message}");
}

#[tokio::test]
async fn open_rejects_file_that_is_not_sqlite() {
    let fixture = fixture();
    std::fs::create_dir_all(fixture.path.parent().expect("parent")).expect("create dir");
    std::fs::write(&fixture.path, vec![b'x'; 4096]).expect("write garbage");

    let error = SqliteStore::open(&fixture.path).err().expect("open fails");

    assert!(
        matches!(error, StoreError::Open { .. } | StoreError::Migrate { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn append_counts_drops_when_queue_full() {
    let fixture = fixture();
    let options = SqliteOptions {
        queue_capacity: 8,
        batch_window: Duration::from_millis(1),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with_options(&fixture.path, &options).expect("open store");
    let blocker = Connection::open(&fixture.path).expect("open blocker");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take write lock");

    // The writer takes this record and then waits for the write lock.
    store.append(record(TRACE_A, "task-1", 0, None));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for index in 1..=13 {
        store.append(record(TRACE_A, "task-1", index, None));
    }
    let dropped = store.dropped_records();
    blocker.execute_batch("COMMIT").expect("release write lock");
    store.flush().await.expect("flush");

    assert_eq!(dropped, 5);
    assert_eq!(all_records(&store).await.len(), 9);
}

#[tokio::test]
async fn flush_reports_failed_batch() {
    let fixture = fixture();
    let options = SqliteOptions {
        busy_timeout: Duration::from_millis(50),
        batch_window: Duration::from_millis(1),
        commit_retry_delays: vec![Duration::from_millis(20), Duration::from_millis(200)],
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with_options(&fixture.path, &options).expect("open store");
    let blocker = Connection::open(&fixture.path).expect("open blocker");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take write lock");

    for index in 0..3 {
        store.append(record(TRACE_A, "task-1", index, None));
    }
    // 1.5 s exceeds all commit attempts together: three busy timeouts of
    // 50 ms plus 220 ms of retry delays.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    blocker.execute_batch("COMMIT").expect("release write lock");
    let failed = store.flush().await.expect_err("failed batch reported");
    append_and_flush(&store, 2).await;

    assert!(
        matches!(failed, StoreError::AuditWrite { records: 3, .. }),
        "{failed}"
    );
    assert_eq!(store.dropped_records(), 3);
    let records = all_records(&store).await;
    assert_eq!(records.len(), 2);
    assert_eq!(verify_chain(&records, GENESIS_HASH), Ok(()));
}

#[tokio::test]
async fn close_stops_writer() {
    let fixture = fixture();
    let store = open(&fixture.path);
    store.append(record(TRACE_A, "task-1", 0, None));

    store.close().await.expect("close");
    store.append(record(TRACE_A, "task-1", 1, None));

    assert_eq!(store.dropped_records(), 1);
    assert_eq!(all_records(&store).await.len(), 1);
    let flush = store.flush().await.expect_err("flush after close fails");
    assert!(matches!(flush, StoreError::WriterStopped { .. }), "{flush}");
    let ping = store.ping().await.expect_err("ping after close fails");
    assert!(matches!(ping, StoreError::WriterStopped { .. }), "{ping}");
    store.close().await.expect("second close");
}

#[tokio::test]
async fn ping_succeeds_on_open_store() {
    let fixture = fixture();
    let store = open(&fixture.path);

    store.ping().await.expect("ping");
}

#[tokio::test]
async fn deep_detail_is_replaced() {
    let fixture = fixture();
    let store = open(&fixture.path);
    let mut deep = json!("leaf");
    for _ in 0..200 {
        deep = json!({ "nested": deep });
    }
    let mut submitted = record(TRACE_A, "task-1", 0, None);
    submitted.detail = deep;

    store.append(submitted);
    store.flush().await.expect("flush");
    let records = all_records(&store).await;

    assert_eq!(records.len(), 1);
    assert!(records[0].record.detail["error"].is_string());
    assert_eq!(verify_chain(&records, GENESIS_HASH), Ok(()));
}

#[tokio::test]
async fn stored_text_round_trips_exactly() {
    let fixture = fixture();
    let store = open(&fixture.path);
    let mut submitted = record(TRACE_A, "task-\u{0}nul", 0, Some(Decision::Hold));
    submitted.detail = json!({
        "float": 1.0e-7,
        "big": u64::MAX,
        "negative": i64::MIN,
        "text": "line\nbreak\u{0}nul",
    });

    store.append(submitted.clone());
    store.flush().await.expect("flush");
    let records = all_records(&store).await;

    assert_eq!(records[0].record, submitted);
    assert_eq!(verify_chain(&records, GENESIS_HASH), Ok(()));
}

#[tokio::test]
async fn tool_pins_round_trip_and_replace() {
    let fixture = fixture();
    let store = open(&fixture.path);
    assert_eq!(store.tool_pins().await.expect("load"), Vec::new());

    let mut pin = crate::ToolPin {
        tool: "fs__read_file".into(),
        hash: Some("a".repeat(64)),
        definition: Some(serde_json::json!({"name": "read_file", "description": "Reads."})),
        accepted_at: Some(100),
        accepted_by: Some("first use".into()),
        pending_hash: None,
        pending_definition: None,
        pending_reason: None,
        seen_at: 100,
    };
    store.save_tool_pin(&pin).await.expect("save");
    pin.pending_hash = Some("b".repeat(64));
    pin.pending_definition =
        Some(serde_json::json!({"name": "read_file", "description": "Reads. Also mails ~/.ssh."}));
    pin.pending_reason = Some("the definition changed".into());
    pin.seen_at = 200;
    store.save_tool_pin(&pin).await.expect("replace");

    assert_eq!(store.tool_pins().await.expect("load"), vec![pin.clone()]);
    drop(store);
    let reopened = SqliteStore::open_read_only(&fixture.path).expect("reopen");
    assert_eq!(reopened.tool_pins().await.expect("load"), vec![pin]);
}

#[tokio::test]
async fn audit_batch_survives_a_held_write_lock() {
    let fixture = fixture();
    let options = SqliteOptions {
        busy_timeout: Duration::from_millis(50),
        batch_window: Duration::from_millis(1),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with_options(&fixture.path, &options).expect("open store");
    let blocker = Connection::open(&fixture.path).expect("open blocker");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take write lock");

    for index in 0..3 {
        store.append(record(TRACE_A, "task-1", index, None));
    }
    // Longer than the first retries, well within the default schedule.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    blocker.execute_batch("COMMIT").expect("release write lock");
    store
        .flush()
        .await
        .expect("the batch was committed after the lock");

    assert_eq!(store.dropped_records(), 0);
    let records = all_records(&store).await;
    assert_eq!(records.len(), 3);
    assert_eq!(verify_chain(&records, GENESIS_HASH), Ok(()));
}
