//! The tamper-evident audit log end to end. A real `warden serve` writes
//! audit records and signed checkpoints over two runs, each ended by
//! SIGTERM. Then `warden audit verify` checks copies of its database that
//! the tests edit as an attacker with write access to the file would.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use serde_json::{Value, json};
use support::{DevKey, Setup, Warden, warden_command};
use warden_store::{AuditRecord, SqliteStore, Store, record_hash};

/// Max time a gateway may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Max time a restarted gateway may take to return 200 on `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Tool calls made in each run.
const CALLS_PER_RUN: usize = 3;

/// A gateway's audit log after two runs, each ended by SIGTERM, so each
/// run wrote a final checkpoint.
struct Log {
    warden: Warden,
    /// Seqs of the stored checkpoints, oldest first.
    checkpoints: Vec<i64>,
    /// Seq of the newest record.
    head: i64,
}

/// A copy of a log's database with a configuration that points at it.
struct Copy {
    _dir: tempfile::TempDir,
    db: PathBuf,
    config: PathBuf,
}

/// How a test edits the database, given the records as written.
type Tamper = Box<dyn Fn(&Connection, &[AuditRecord])>;

impl Log {
    /// Runs a gateway twice on one data directory, with tool calls in
    /// each run, and stops each run with SIGTERM.
    async fn write() -> Log {
        let mut warden = Warden::start(Setup::permissive()).await;
        call_tools(&warden, "first run").await;
        stop(&mut warden).await;

        let mut second = restart(&warden, "second-run.log").await;
        call_tools(&warden, "second run").await;
        terminate(&mut second, &warden).await;

        let checkpoints = checkpoint_seqs(&store_path(&warden));
        let head = head_seq(&store_path(&warden));
        // Each run writes a final checkpoint, and a periodic one after 60 s.
        assert!(
            checkpoints.len() >= 2,
            "each run writes a final checkpoint; log of the first run:\n{}",
            warden.log()
        );
        assert_eq!(checkpoints.last(), Some(&head));
        Log {
            warden,
            checkpoints,
            head,
        }
    }

    /// Returns the seq of the first checkpoint.
    fn first_checkpoint(&self) -> i64 {
        self.checkpoints[0]
    }

    /// Returns the seq of the first checkpoint that covers `seq`.
    fn checkpoint_covering(&self, seq: i64) -> i64 {
        *self
            .checkpoints
            .iter()
            .find(|&&checkpoint| checkpoint >= seq)
            .expect("the last checkpoint covers every record")
    }

    /// Copies the database (with its WAL) to a new directory, and writes a
    /// configuration that is the gateway's plus `[store] path` of the copy.
    fn copy(&self) -> Copy {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let db = dir.path().join("warden.db");
        let source = store_path(&self.warden);
        std::fs::copy(&source, &db).expect("copy the database");
        let wal = PathBuf::from(format!("{}-wal", source.display()));
        if wal.exists() {
            std::fs::copy(&wal, format!("{}-wal", db.display())).expect("copy the WAL");
        }
        Connection::open(&db)
            .expect("open the copy")
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("fold the WAL into the copy");

        let config = dir.path().join("warden.toml");
        let original =
            std::fs::read_to_string(&self.warden.files.config).expect("read the configuration");
        let store = db.to_str().expect("temporary paths are UTF-8");
        std::fs::write(
            &config,
            format!("{original}\n[store]\npath = {}\n", json!(store)),
        )
        .expect("write the configuration of the copy");
        Copy {
            _dir: dir,
            db,
            config,
        }
    }
}

impl Copy {
    /// Loads every audit record of the copy.
    async fn records(&self) -> Vec<AuditRecord> {
        let store = SqliteStore::open_read_only(&self.db).expect("open the copy read-only");
        store
            .audit_range(0, usize::MAX)
            .await
            .expect("load the records")
    }

    /// Runs `warden audit verify ARGS` on the copy.
    fn verify(&self, args: &[&str]) -> Output {
        verify(&self.config, args)
    }
}

/// Starts a task and makes [`CALLS_PER_RUN`] tool calls in it.
async fn call_tools(warden: &Warden, text: &str) {
    let task = warden.task().await;
    let session = warden.session(&task).await;
    for index in 0..CALLS_PER_RUN {
        let reply = session
            .call_tool(
                "testkit__echo",
                json!({ "text": format!("{text} {index}") }),
            )
            .await;
        assert_eq!(reply["result"]["isError"], json!(false), "{reply}");
    }
}

/// Sends SIGTERM to the harness's gateway and waits until it exits.
async fn stop(warden: &mut Warden) {
    warden.signal("TERM");
    let deadline = Instant::now() + STOP_TIMEOUT;
    while warden.is_running() {
        assert!(
            Instant::now() < deadline,
            "warden serve still runs {STOP_TIMEOUT:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `warden serve` again on the stopped gateway's configuration,
/// logging to `log_name` in its directory, and waits until it is healthy.
async fn restart(warden: &Warden, log_name: &str) -> Child {
    let log = warden.files.dir.path().join(log_name);
    let mut child = warden_command(&["serve"])
        .arg("--config")
        .arg(&warden.files.config)
        .env("WARDEN_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the log file"))
        .spawn()
        .expect("spawn warden serve");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let healthy = warden
            .http
            .get(format!("{}/healthz", warden.base))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if healthy {
            return child;
        }
        let exited = child.try_wait().expect("poll warden serve").is_some();
        if exited || Instant::now() > deadline {
            child.kill().ok();
            panic!(
                "restarted warden serve did not become healthy; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGTERM to a gateway started by [`restart`] and waits until it
/// exits.
async fn terminate(child: &mut Child, warden: &Warden) {
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
    let deadline = Instant::now() + STOP_TIMEOUT;
    while child.try_wait().expect("poll warden serve").is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!(
                "restarted warden serve on {} still runs {STOP_TIMEOUT:?} after SIGTERM",
                warden.base
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Returns the gateway's database file.
fn store_path(warden: &Warden) -> PathBuf {
    warden.files.dir.path().join("data").join("warden.db")
}

/// Reads the seqs of the stored checkpoints, oldest first.
fn checkpoint_seqs(db: &Path) -> Vec<i64> {
    let conn = Connection::open(db).expect("open the database");
    let mut statement = conn
        .prepare("SELECT seq FROM audit_checkpoints ORDER BY seq")
        .expect("prepare");
    statement
        .query_map([], |row| row.get(0))
        .expect("query checkpoints")
        .collect::<rusqlite::Result<Vec<i64>>>()
        .expect("read checkpoints")
}

/// Reads the seq of the newest record.
fn head_seq(db: &Path) -> i64 {
    Connection::open(db)
        .expect("open the database")
        .query_row("SELECT max(seq) FROM audit", [], |row| row.get(0))
        .expect("read the head")
}

/// Runs `warden audit verify ARGS --config CONFIG`.
fn verify(config: &Path, args: &[&str]) -> Output {
    let mut command = warden_command(&["audit", "verify"]);
    command.args(args).arg("--config").arg(config);
    command.output().expect("run warden audit verify")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Returns N of `audit log invalid: first bad record is seq N: ...`.
fn named_seq(output: &Output) -> Option<i64> {
    let text = stdout(output);
    let rest = text.strip_prefix("audit log invalid: first bad record is seq ")?;
    rest.split(':').next()?.parse().ok()
}

/// Inserts `record` as a row, with its seq, links and hash as given.
fn insert_record(conn: &Connection, record: &AuditRecord) {
    let row = &record.record;
    conn.execute(
        "INSERT INTO audit (seq, time_us, trace_id, span_id, parent_span_id, task_id, agent,
            user, kind, target, decision, policy_ids, reason, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            record.seq,
            row.time_us,
            row.trace_id,
            row.span_id,
            row.parent_span_id,
            row.task_id,
            row.agent,
            row.user,
            row.kind,
            row.target,
            row.decision.map(|decision| decision.as_str()),
            Value::from(row.policy_ids.clone()).to_string(),
            row.reason,
            row.detail.to_string(),
            record.prev_hash,
            record.hash,
        ],
    )
    .expect("insert a forged record");
}

/// Changes the user of the record at `seq`, then recomputes its hash and
/// the links and hashes of every later record, so the chain verifies.
fn rebuild_after_edit(conn: &Connection, records: &[AuditRecord], seq: i64) {
    let mut rebuilt = records.to_vec();
    let start = rebuilt
        .iter()
        .position(|record| record.seq == seq)
        .expect("record to edit exists");
    rebuilt[start].record.user = "mallory@evil.test".into();
    conn.execute(
        "UPDATE audit SET user = ?1 WHERE seq = ?2",
        params![rebuilt[start].record.user, seq],
    )
    .expect("edit the record");
    let mut prev_hash = if start == 0 {
        warden_store::GENESIS_HASH.to_owned()
    } else {
        rebuilt[start - 1].hash.clone()
    };
    for record in &mut rebuilt[start..] {
        record.prev_hash.clone_from(&prev_hash);
        record.hash = record_hash(&prev_hash, record.seq, &record.record);
        conn.execute(
            "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            params![record.prev_hash, record.hash, record.seq],
        )
        .expect("rehash a record");
        prev_hash.clone_from(&record.hash);
    }
}

/// Returns `signature` with one character of its signature segment
/// replaced.
fn altered_signature(signature: &str) -> String {
    let mut characters: Vec<char> = signature.chars().collect();
    let index = characters.len() - 10;
    characters[index] = if characters[index] == 'A' { 'B' } else { 'A' };
    characters.into_iter().collect()
}

#[tokio::test]
async fn audit_verify_accepts_untouched_log() {
    let log = Log::write().await;
    let copy = log.copy();
    let head_hash = copy.records().await.last().expect("records").hash.clone();

    let output = copy.verify(&[]);
    let json_output = copy.verify(&["--json"]);

    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_eq!(
        stdout(&output).trim_end(),
        format!(
            "audit log valid: {head} records, head {head} {head_hash}, {count} checkpoints, newest at seq {head}",
            head = log.head,
            count = log.checkpoints.len()
        )
    );
    let report: Value = serde_json::from_str(&stdout(&json_output)).expect("JSON report");
    assert_eq!(
        report,
        json!({
            "valid": true,
            "records": log.head,
            "head_seq": log.head,
            "head_hash": head_hash,
            "checkpoints": log.checkpoints.len(),
            "newest_checkpoint_seq": log.head,
        })
    );
}

#[tokio::test]
async fn audit_verify_names_first_bad_record() {
    let log = Log::write().await;
    let first = log.first_checkpoint();
    let head = log.head;
    assert!(
        first > 4 && head > first + 2,
        "each run writes several records: checkpoints {:?}, head {head}",
        log.checkpoints
    );

    let cases: Vec<(&str, i64, Tamper)> = vec![
        (
            "edited field",
            2,
            Box::new(|conn, _| {
                conn.execute_batch("UPDATE audit SET user = 'mallory@evil.test' WHERE seq = 2")
                    .expect("edit");
            }),
        ),
        (
            "deleted middle record",
            3,
            Box::new(|conn, _| {
                conn.execute_batch("DELETE FROM audit WHERE seq = 3")
                    .expect("delete");
            }),
        ),
        (
            "inserted record",
            4,
            Box::new(|conn, records| {
                // Move records 4.. up by one, then forge a record at seq 4
                // that links to record 3 and carries a correct hash.
                conn.execute_batch(
                    "UPDATE audit SET seq = -(seq + 1) WHERE seq >= 4;
                     UPDATE audit SET seq = -seq WHERE seq < 0;",
                )
                .expect("make room");
                let mut forged = records[3].clone();
                forged.record.reason = Some("approved by the security team".into());
                forged.prev_hash.clone_from(&records[2].hash);
                forged.hash = record_hash(&forged.prev_hash, 4, &forged.record);
                insert_record(conn, &forged);
            }),
        ),
        (
            "swapped records",
            3,
            Box::new(|conn, _| {
                conn.execute_batch(
                    "UPDATE audit SET seq = -1 WHERE seq = 3;
                     UPDATE audit SET seq = 3 WHERE seq = 4;
                     UPDATE audit SET seq = 4 WHERE seq = -1;",
                )
                .expect("swap");
            }),
        ),
        (
            "deleted newest records",
            head - 1,
            Box::new(move |conn, _| {
                conn.execute("DELETE FROM audit WHERE seq >= ?1", [head - 1])
                    .expect("truncate");
            }),
        ),
        (
            "deleted every record",
            1,
            Box::new(|conn, _| {
                conn.execute_batch("DELETE FROM audit").expect("empty");
            }),
        ),
        (
            "rebuilt chain after an edit before the first checkpoint",
            first,
            Box::new(|conn, records| rebuild_after_edit(conn, records, 2)),
        ),
        (
            "rebuilt chain after an edit after the first checkpoint",
            log.checkpoint_covering(first + 1),
            Box::new(move |conn, records| rebuild_after_edit(conn, records, first + 1)),
        ),
        (
            "altered checkpoint signature",
            first,
            Box::new(move |conn, _| {
                let signature: String = conn
                    .query_row(
                        "SELECT signature FROM audit_checkpoints WHERE seq = ?1",
                        [first],
                        |row| row.get(0),
                    )
                    .expect("read the signature");
                conn.execute(
                    "UPDATE audit_checkpoints SET signature = ?1 WHERE seq = ?2",
                    params![altered_signature(&signature), first],
                )
                .expect("alter the signature");
            }),
        ),
        (
            "checkpoint moved to an earlier record",
            first - 1,
            Box::new(move |conn, records| {
                let earlier = &records[usize::try_from(first - 2).expect("seq above 1")];
                conn.execute(
                    "UPDATE audit_checkpoints SET seq = ?1, hash = ?2 WHERE seq = ?3",
                    params![earlier.seq, earlier.hash, first],
                )
                .expect("move the checkpoint");
            }),
        ),
    ];

    for (name, expected_seq, tamper) in cases {
        let copy = log.copy();
        let records = copy.records().await;
        tamper(
            &Connection::open(&copy.db).expect("open the copy"),
            &records,
        );

        let output = copy.verify(&[]);

        assert_eq!(
            output.status.code(),
            Some(1),
            "{name}: verify must fail; output:\n{}{}",
            stdout(&output),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            named_seq(&output),
            Some(expected_seq),
            "{name}: wrong first bad record; output:\n{}",
            stdout(&output)
        );
    }
}

#[tokio::test]
async fn audit_verify_uses_published_jwks() {
    let log = Log::write().await;
    let jwks_output = log.warden.files.run(&["audit", "jwks"]);
    assert!(
        jwks_output.status.success(),
        "warden audit jwks failed: {}",
        String::from_utf8_lossy(&jwks_output.stderr)
    );
    let published = log.warden.files.dir.path().join("checkpoint-keys.json");
    std::fs::write(&published, &jwks_output.stdout).expect("write the JWK set");
    let foreign = log.warden.files.dir.path().join("foreign-keys.json");
    let foreign_keys = json!({ "keys": [DevKey::generate().public_jwk] });
    std::fs::write(&foreign, foreign_keys.to_string()).expect("write the JWK set");
    let copy = log.copy();

    let with_published = copy.verify(&["--jwks", published.to_str().expect("UTF-8 path")]);
    let with_foreign = copy.verify(&["--jwks", foreign.to_str().expect("UTF-8 path")]);

    assert_eq!(
        with_published.status.code(),
        Some(0),
        "{}",
        stdout(&with_published)
    );
    assert_eq!(
        with_foreign.status.code(),
        Some(1),
        "{}",
        stdout(&with_foreign)
    );
    assert_eq!(named_seq(&with_foreign), Some(log.first_checkpoint()));
    assert!(
        stdout(&with_foreign).contains("--jwks"),
        "{}",
        stdout(&with_foreign)
    );
}

#[tokio::test]
async fn checkpoint_refuses_chain_rebuilt_while_running() {
    let mut warden = Warden::start(Setup::permissive()).await;
    call_tools(&warden, "first run").await;
    stop(&mut warden).await;
    let db = store_path(&warden);
    let first = checkpoint_seqs(&db);
    assert_eq!(first.len(), 1, "the first run writes one checkpoint");

    let mut second = restart(&warden, "second-run.log").await;
    call_tools(&warden, "second run").await;
    let records = settled_records(&db).await;
    let conn = Connection::open(&db).expect("open the live database");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("set the busy timeout");
    rebuild_after_edit(&conn, &records, 2);
    drop(conn);
    terminate(&mut second, &warden).await;

    let log = std::fs::read_to_string(warden.files.dir.path().join("second-run.log"))
        .expect("read the log");
    assert!(log.contains("audit checkpoint failed"), "{log}");
    assert!(log.contains("not signing a checkpoint"), "{log}");
    assert_eq!(checkpoint_seqs(&db), first);
    let output = warden.files.run(&["audit", "verify"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert_eq!(named_seq(&output), Some(first[0]));
}

/// Loads the records of a running gateway's database once two reads
/// 200 ms apart return the same head, so every record is committed.
async fn settled_records(db: &Path) -> Vec<AuditRecord> {
    let store = SqliteStore::open_read_only(db).expect("open the database read-only");
    let mut previous = None;
    for _ in 0..50 {
        let head = store.audit_head().await.expect("load the head");
        if head.is_some() && head == previous {
            return store
                .audit_range(0, usize::MAX)
                .await
                .expect("load the records");
        }
        previous = head;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the audit head kept moving for 10 s");
}
