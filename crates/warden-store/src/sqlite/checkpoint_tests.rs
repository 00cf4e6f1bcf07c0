//! Tests of the audit head, checkpoints, counters, the audit observer and
//! the schema version 3 migration in the SQLite backend, against real
//! database files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;

use rusqlite::Connection;
use serde_json::json;
use tempfile::TempDir;
use warden_core::Decision;

use super::*;
use crate::{GENESIS_HASH, verify_chain};

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

fn record(index: i64) -> NewAuditRecord {
    NewAuditRecord {
        time_us: 1_700_000_000_000_000 + index,
        trace_id: TRACE_A.into(),
        span_id: format!("{index:016x}"),
        parent_span_id: None,
        task_id: "task-1".into(),
        agent: "spiffe://acme.test/agent/support-bot".into(),
        user: "alice".into(),
        kind: "tool.decision".into(),
        target: Some("fs__read_file".into()),
        decision: Some(Decision::Allow),
        policy_ids: vec!["read-public".into()],
        reason: None,
        detail: json!({"index": index}),
    }
}

async fn append_and_flush(store: &SqliteStore, range: std::ops::Range<i64>) {
    for index in range {
        store.append(record(index));
    }
    store.flush().await.expect("flush");
}

/// Builds a checkpoint of the record at `seq` in `store`. Its signature is
/// a placeholder, because the store does not check signatures.
async fn checkpoint_of(store: &SqliteStore, seq: i64) -> Checkpoint {
    let records = store.audit_range(seq - 1, 1).await.expect("load record");
    let stored = records.first().expect("record exists");
    assert_eq!(stored.seq, seq);
    Checkpoint {
        seq,
        hash: stored.hash.clone(),
        created_at: 1_000 + seq,
        signature: format!("header.payload.signature-{seq}"),
    }
}

/// An observer that keeps what it is given.
#[derive(Default)]
struct Recorder {
    batches: Mutex<Vec<Vec<AuditRecord>>>,
    checkpoints: Mutex<Vec<Checkpoint>>,
}

impl AuditObserver for Recorder {
    fn committed(&self, records: &[AuditRecord]) {
        self.batches
            .lock()
            .expect("recorder lock")
            .push(records.to_vec());
    }

    fn checkpointed(&self, checkpoint: &Checkpoint) {
        self.checkpoints
            .lock()
            .expect("recorder lock")
            .push(checkpoint.clone());
    }
}

impl Recorder {
    fn records(&self) -> Vec<AuditRecord> {
        self.batches
            .lock()
            .expect("recorder lock")
            .iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// An observer that panics on every batch.
struct Panicker;

impl AuditObserver for Panicker {
    fn committed(&self, _records: &[AuditRecord]) {
        panic!("observer failure in test");
    }
}

fn open_observed(path: &Path, observer: Arc<dyn AuditObserver>) -> SqliteStore {
    let options = SqliteOptions {
        observer: Some(observer),
        ..SqliteOptions::default()
    };
    SqliteStore::open_with_options(path, &options).expect("open store")
}

#[tokio::test]
async fn audit_head_of_empty_log_is_none() {
    let fixture = fixture();
    let store = open(&fixture.path);

    assert_eq!(store.audit_head().await.expect("load head"), None);
}

#[tokio::test]
async fn audit_head_is_newest_record() {
    let fixture = fixture();
    let store = open(&fixture.path);
    append_and_flush(&store, 0..7).await;

    let head = store.audit_head().await.expect("load head");

    let records = store.audit_range(0, 100).await.expect("load audit");
    let newest = records.last().expect("records stored");
    assert_eq!(head, Some((7, newest.hash.clone())));
}

#[tokio::test]
async fn checkpoints_round_trip_in_seq_order() {
    let fixture = fixture();
    let store = open(&fixture.path);
    append_and_flush(&store, 0..6).await;
    let late = checkpoint_of(&store, 5).await;
    let early = checkpoint_of(&store, 2).await;

    store.insert_checkpoint(&late).await.expect("insert late");
    store.insert_checkpoint(&early).await.expect("insert early");

    let loaded = store.checkpoints().await.expect("load checkpoints");
    assert_eq!(loaded, [early, late]);
}

#[tokio::test]
async fn checkpoints_of_new_store_are_empty() {
    let fixture = fixture();
    let store = open(&fixture.path);

    assert!(store.checkpoints().await.expect("load").is_empty());
}

#[tokio::test]
async fn insert_checkpoint_keeps_first_of_same_seq() {
    let fixture = fixture();
    let store = open(&fixture.path);
    append_and_flush(&store, 0..3).await;
    let first = checkpoint_of(&store, 3).await;
    let mut second = first.clone();
    second.created_at += 60;
    second.signature = "another.signature.value".into();

    store.insert_checkpoint(&first).await.expect("insert first");
    store
        .insert_checkpoint(&second)
        .await
        .expect("second insert is no error");

    assert_eq!(store.checkpoints().await.expect("load"), [first]);
}

#[tokio::test]
async fn insert_checkpoint_rejects_unknown_seq() {
    let fixture = fixture();
    let store = open(&fixture.path);
    append_and_flush(&store, 0..3).await;
    let mut beyond = checkpoint_of(&store, 3).await;
    beyond.seq = 4;

    let error = store
        .insert_checkpoint(&beyond)
        .await
        .expect_err("checkpoint beyond the head rejected");

    assert!(
        matches!(error, StoreError::InvalidCheckpoint { seq: 4, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("no audit record"), "{error}");
    assert!(store.checkpoints().await.expect("load").is_empty());
}

#[tokio::test]
async fn insert_checkpoint_rejects_wrong_hash() {
    let fixture = fixture();
    let store = open(&fixture.path);
    append_and_flush(&store, 0..3).await;
    let mut wrong = checkpoint_of(&store, 2).await;
    wrong.hash = "f".repeat(64);

    let error = store
        .insert_checkpoint(&wrong)
        .await
        .expect_err("checkpoint with another hash rejected");

    assert!(
        matches!(error, StoreError::InvalidCheckpoint { seq: 2, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("warden audit verify"), "{error}");
    assert!(store.checkpoints().await.expect("load").is_empty());
}

#[tokio::test]
async fn insert_checkpoint_notifies_observer_once() {
    let fixture = fixture();
    let recorder = Arc::new(Recorder::default());
    let store = open_observed(&fixture.path, recorder.clone());
    append_and_flush(&store, 0..2).await;
    let checkpoint = checkpoint_of(&store, 2).await;

    store.insert_checkpoint(&checkpoint).await.expect("insert");
    store.insert_checkpoint(&checkpoint).await.expect("repeat");

    let seen = recorder.checkpoints.lock().expect("recorder lock").clone();
    assert_eq!(seen, [checkpoint]);
}

#[tokio::test]
async fn read_only_store_reads_checkpoints_and_counters() {
    let fixture = fixture();
    let writer = open(&fixture.path);
    append_and_flush(&writer, 0..4).await;
    let checkpoint = checkpoint_of(&writer, 4).await;
    writer.insert_checkpoint(&checkpoint).await.expect("insert");
    writer
        .add_counters(TRACE_A, &[("model.calls", 2)])
        .await
        .expect("add");

    let reader = SqliteStore::open_read_only(&fixture.path).expect("open read-only");

    assert_eq!(reader.checkpoints().await.expect("load"), [checkpoint]);
    assert_eq!(
        reader.counters(TRACE_A).await.expect("load")["model.calls"],
        2
    );
    assert_eq!(
        reader.audit_head().await.expect("head").map(|(seq, _)| seq),
        Some(4)
    );
}

#[tokio::test]
async fn read_only_store_rejects_checkpoint_and_counter_writes() {
    let fixture = fixture();
    {
        let writer = open(&fixture.path);
        append_and_flush(&writer, 0..1).await;
    }
    let reader = SqliteStore::open_read_only(&fixture.path).expect("open read-only");
    let checkpoint = checkpoint_of(&reader, 1).await;

    let insert = reader
        .insert_checkpoint(&checkpoint)
        .await
        .expect_err("checkpoint rejected");
    let add = reader
        .add_counters(TRACE_A, &[("model.calls", 1)])
        .await
        .expect_err("counter addition rejected");

    assert!(matches!(insert, StoreError::ReadOnly { .. }), "{insert}");
    assert!(matches!(add, StoreError::ReadOnly { .. }), "{add}");
}

#[tokio::test]
async fn add_counters_start_at_zero_and_return_scope() {
    let fixture = fixture();
    let store = open(&fixture.path);

    let first = store
        .add_counters(TRACE_A, &[("model.calls", 1), ("model.tokens", 120)])
        .await
        .expect("first addition");
    let second = store
        .add_counters(TRACE_A, &[("model.tokens", 30)])
        .await
        .expect("second addition");

    assert_eq!(first.get("model.calls"), Some(&1));
    assert_eq!(first.get("model.tokens"), Some(&120));
    assert_eq!(second.get("model.calls"), Some(&1));
    assert_eq!(second.get("model.tokens"), Some(&150));
    assert_eq!(second.len(), 2);
}

#[tokio::test]
async fn add_counters_applies_repeated_name_twice() {
    let fixture = fixture();
    let store = open(&fixture.path);

    let counters = store
        .add_counters(TRACE_A, &[("model.calls", 1), ("model.calls", 2)])
        .await
        .expect("add");

    assert_eq!(counters.get("model.calls"), Some(&3));
}

#[tokio::test]
async fn add_counters_keeps_scopes_apart() {
    let fixture = fixture();
    let store = open(&fixture.path);
    store
        .add_counters(TRACE_A, &[("model.calls", 5)])
        .await
        .expect("add to scope a");

    let other = store
        .add_counters(TRACE_B, &[("model.calls", 1)])
        .await
        .expect("add to scope b");

    assert_eq!(other.get("model.calls"), Some(&1));
    assert_eq!(
        store
            .counters(TRACE_A)
            .await
            .expect("load")
            .get("model.calls"),
        Some(&5)
    );
}

#[tokio::test]
async fn add_counters_with_no_deltas_returns_scope() {
    let fixture = fixture();
    let store = open(&fixture.path);
    store
        .add_counters(TRACE_A, &[("model.calls", 4)])
        .await
        .expect("add");

    let counters = store.add_counters(TRACE_A, &[]).await.expect("add nothing");

    assert_eq!(counters.get("model.calls"), Some(&4));
}

#[tokio::test]
async fn add_counters_saturates_at_i64_bounds() {
    let fixture = fixture();
    let store = open(&fixture.path);
    store
        .add_counters(TRACE_A, &[("up", i64::MAX - 1), ("down", i64::MIN + 1)])
        .await
        .expect("add near bounds");

    let counters = store
        .add_counters(TRACE_A, &[("up", 10), ("down", -10)])
        .await
        .expect("add beyond bounds");

    assert_eq!(counters.get("up"), Some(&i64::MAX));
    assert_eq!(counters.get("down"), Some(&i64::MIN));
}

#[tokio::test]
async fn counters_of_unknown_scope_are_empty() {
    let fixture = fixture();
    let store = open(&fixture.path);

    assert!(store.counters(TRACE_B).await.expect("load").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_counters_concurrently_loses_nothing() {
    let fixture = fixture();
    let store: Arc<dyn Store> = Arc::new(open(&fixture.path));
    // A second store on the same file writes through another connection,
    // as a second gateway process would.
    let other: Arc<dyn Store> = Arc::new(open(&fixture.path));
    let workers = 8;
    let additions = 25;

    let handles: Vec<_> = (0..workers)
        .map(|worker| {
            let store = if worker % 2 == 0 {
                Arc::clone(&store)
            } else {
                Arc::clone(&other)
            };
            tokio::spawn(async move {
                for _ in 0..additions {
                    store
                        .add_counters(TRACE_A, &[("model.calls", 1), ("model.tokens", 10)])
                        .await
                        .expect("add");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("worker finished");
    }

    let counters = store.counters(TRACE_A).await.expect("load");
    assert_eq!(counters.get("model.calls"), Some(&(workers * additions)));
    assert_eq!(
        counters.get("model.tokens"),
        Some(&(workers * additions * 10))
    );
}

#[tokio::test]
async fn observer_sees_committed_records_as_stored() {
    let fixture = fixture();
    let recorder = Arc::new(Recorder::default());
    let store = open_observed(&fixture.path, recorder.clone());
    append_and_flush(&store, 0..5).await;
    append_and_flush(&store, 5..12).await;

    let observed = recorder.records();

    let stored = store.audit_range(0, 100).await.expect("load audit");
    assert_eq!(observed, stored);
    assert_eq!(verify_chain(&observed, GENESIS_HASH), Ok(()));
    assert!(recorder.batches.lock().expect("recorder lock").len() >= 2);
}

#[tokio::test]
async fn observer_continues_chain_after_reopen() {
    let fixture = fixture();
    {
        let store = open(&fixture.path);
        append_and_flush(&store, 0..3).await;
    }
    let recorder = Arc::new(Recorder::default());
    let store = open_observed(&fixture.path, recorder.clone());
    append_and_flush(&store, 3..5).await;

    let observed = recorder.records();

    let stored = store.audit_range(0, 100).await.expect("load audit");
    assert_eq!(observed, stored[3..]);
    assert_eq!(observed[0].prev_hash, stored[2].hash);
}

#[tokio::test]
async fn observer_panic_keeps_writer_running() {
    let fixture = fixture();
    let store = open_observed(&fixture.path, Arc::new(Panicker));

    append_and_flush(&store, 0..2).await;
    append_and_flush(&store, 2..4).await;

    store.ping().await.expect("writer still runs");
    let stored = store.audit_range(0, 100).await.expect("load audit");
    assert_eq!(stored.len(), 4);
    assert_eq!(store.dropped_records(), 0);
}

#[test]
fn options_debug_shows_observer_presence() {
    let options = SqliteOptions {
        observer: Some(Arc::new(Recorder::default())),
        ..SqliteOptions::default()
    };

    let with = format!("{options:?}");
    let without = format!("{:?}", SqliteOptions::default());

    assert!(with.contains("observer: Some"), "{with}");
    assert!(without.contains("observer: None"), "{without}");
}

/// Creates a database at `path` as a build with schema version 2 left it,
/// with three chained audit records.
fn create_version_2_store(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("create dir");
    let mut conn = Connection::open(path).expect("create database");
    for migration in &sql::MIGRATIONS[..2] {
        conn.execute_batch(migration).expect("create old schema");
    }
    conn.pragma_update(None, "user_version", 2)
        .expect("set user_version");
    let records: Vec<NewAuditRecord> = (0..3).map(record).collect();
    sql::insert_audit_batch(&mut conn, &records, false).expect("insert audit records");
}

#[tokio::test]
async fn open_migrates_version_2_store() {
    let fixture = fixture();
    create_version_2_store(&fixture.path);
    let outdated = SqliteStore::open_read_only(&fixture.path)
        .err()
        .expect("read-only open of version 2 rejected");

    let store = open(&fixture.path);

    assert!(
        matches!(outdated, StoreError::OutdatedSchema { found: 2, .. }),
        "{outdated}"
    );
    let records = store.audit_range(0, 100).await.expect("load audit");
    assert_eq!(records.len(), 3);
    assert_eq!(verify_chain(&records, GENESIS_HASH), Ok(()));
    let checkpoint = checkpoint_of(&store, 3).await;
    store
        .insert_checkpoint(&checkpoint)
        .await
        .expect("insert checkpoint after migration");
    store
        .add_counters(TRACE_A, &[("model.calls", 1)])
        .await
        .expect("add counter after migration");
    let reader = SqliteStore::open_read_only(&fixture.path).expect("read-only open");
    assert_eq!(reader.checkpoints().await.expect("load"), [checkpoint]);
}
