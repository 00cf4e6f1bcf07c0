//! Tests of checkpoint signing and verification, of the checkpointer and
//! its task, and of whole-log verification, against real SQLite stores.

use std::path::{Path, PathBuf};

use serde_json::json;
use warden_store::{NewAuditRecord, SqliteStore};

use super::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("warden-checkpoint-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("create temporary directory");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A leftover directory under the system temp dir is harmless.
        std::fs::remove_dir_all(&self.0).ok();
    }
}

struct Fixture {
    dir: TempDir,
    store: Arc<dyn Store>,
}

fn fixture() -> Fixture {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.path().join("warden.db")).expect("open store");
    Fixture {
        dir,
        store: Arc::new(store),
    }
}

impl Fixture {
    /// Loads the key at `name` in the fixture's directory, creating it on
    /// first use, so two calls return the same key.
    fn key(&self, name: &str) -> SigningKey {
        SigningKey::load_or_create(&self.dir.path().join(name)).expect("load key")
    }

    fn checkpointer(&self, key_name: &str) -> Checkpointer {
        Checkpointer::new(Arc::clone(&self.store), self.key(key_name)).expect("checkpointer")
    }

    async fn append(&self, range: std::ops::Range<i64>) {
        for index in range {
            self.store.append(record(index));
        }
        self.store.flush().await.expect("flush");
    }

    async fn head(&self) -> (i64, String) {
        self.store
            .audit_head()
            .await
            .expect("load head")
            .expect("log is not empty")
    }
}

fn record(index: i64) -> NewAuditRecord {
    NewAuditRecord {
        time_us: 1_700_000_000_000_000 + index,
        trace_id: TRACE.into(),
        span_id: format!("{index:016x}"),
        parent_span_id: None,
        task_id: "task-1".into(),
        agent: "spiffe://acme.test/agent/support-bot".into(),
        user: "alice".into(),
        kind: "tool.decision".into(),
        target: Some("files__read_file".into()),
        decision: Some(warden_core::Decision::Allow),
        policy_ids: vec!["read-notes".into()],
        reason: None,
        detail: json!({"index": index}),
    }
}

/// An edit of one stored checkpoint field.
type Change = fn(&mut Checkpoint);

fn jwks_of(key: &SigningKey) -> Jwks {
    Jwks::from_json(&checkpoint_jwks(key)).expect("JWK set")
}

fn signed(key: &SigningKey) -> Checkpoint {
    sign_checkpoint(key, 42, &"ab".repeat(32), 1_767_225_600).expect("sign")
}

#[test]
fn checkpoint_payload_is_canonical_json() {
    assert_eq!(
        checkpoint_payload(3, "ab", 5),
        r#"{"created_at":5,"hash":"ab","seq":3}"#
    );
}

#[test]
fn sign_checkpoint_verifies_with_own_key() {
    let key = SigningKey::generate().expect("generate key");
    let checkpoint = signed(&key);

    assert_eq!(checkpoint.seq, 42);
    assert_eq!(checkpoint.hash, "ab".repeat(32));
    assert_eq!(checkpoint.created_at, 1_767_225_600);
    verify_checkpoint(&checkpoint, &jwks_of(&key)).expect("valid checkpoint");
}

#[test]
fn verify_checkpoint_rejects_other_key() {
    let key = SigningKey::generate().expect("generate key");
    let other = SigningKey::generate().expect("generate key");

    let error = verify_checkpoint(&signed(&key), &jwks_of(&other)).expect_err("other key");

    assert!(
        matches!(&error, CheckpointError::UnknownKey { kid, .. } if kid == key.kid()),
        "{error}"
    );
    assert!(error.to_string().contains(other.kid()), "{error}");
}

#[test]
fn verify_checkpoint_rejects_changed_fields() {
    let key = SigningKey::generate().expect("generate key");
    let keys = jwks_of(&key);
    let original = signed(&key);
    let changes: [(&str, Change); 3] = [
        ("seq", |checkpoint| checkpoint.seq += 1),
        ("hash", |checkpoint| checkpoint.hash = "cd".repeat(32)),
        ("created_at", |checkpoint| checkpoint.created_at -= 60),
    ];

    for (field, change) in changes {
        let mut changed = original.clone();
        change(&mut changed);
        let error = verify_checkpoint(&changed, &keys).expect_err("changed field rejected");
        assert!(
            matches!(error, CheckpointError::PayloadMismatch { .. }),
            "{field}: {error}"
        );
    }
}

#[test]
fn verify_checkpoint_rejects_altered_signature() {
    let key = SigningKey::generate().expect("generate key");
    let mut checkpoint = signed(&key);
    let (signing_input, signature) = checkpoint
        .signature
        .rsplit_once('.')
        .expect("three segments");
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    bytes[10] ^= 0x01;
    checkpoint.signature = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(bytes));

    let error = verify_checkpoint(&checkpoint, &jwks_of(&key)).expect_err("altered signature");

    assert!(
        matches!(error, CheckpointError::InvalidSignature { .. }),
        "{error}"
    );
}

#[test]
fn verify_checkpoint_rejects_token_type() {
    let key = SigningKey::generate().expect("generate key");
    let payload = checkpoint_payload(42, &"ab".repeat(32), 1_767_225_600);
    let checkpoint = Checkpoint {
        seq: 42,
        hash: "ab".repeat(32),
        created_at: 1_767_225_600,
        signature: key.sign_jws("JWT", payload.as_bytes()).expect("sign"),
    };

    let error = verify_checkpoint(&checkpoint, &jwks_of(&key)).expect_err("JWT typ");

    assert!(
        matches!(error, CheckpointError::Malformed { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("typ"), "{error}");
}

#[test]
fn verify_checkpoint_ignores_keys_for_other_uses() {
    let key = SigningKey::generate().expect("generate key");
    let svid_keys =
        Jwks::from_json(&json!({"keys": [key.public_jwk(Some("jwt-svid"))]})).expect("JWK set");

    let error = verify_checkpoint(&signed(&key), &svid_keys).expect_err("jwt-svid key");

    assert!(
        matches!(error, CheckpointError::UnknownKey { .. }),
        "{error}"
    );
}

#[test]
fn verify_checkpoint_rejects_malformed_signatures() {
    let key = SigningKey::generate().expect("generate key");
    let keys = jwks_of(&key);
    let cases = [
        "".to_owned(),
        "one.two".to_owned(),
        "a.b.c.d".to_owned(),
        "!!.e30.AA".to_owned(),
        format!("{}.e30.AA", URL_SAFE_NO_PAD.encode("[1]")),
        format!("{}.e30.AA", "a".repeat(MAX_SIGNATURE_BYTES)),
    ];

    for signature in cases {
        let checkpoint = Checkpoint {
            signature: signature.clone(),
            ..signed(&key)
        };
        let error = verify_checkpoint(&checkpoint, &keys).expect_err("malformed rejected");
        assert!(
            matches!(error, CheckpointError::Malformed { .. }),
            "{signature:?}: {error}"
        );
    }
}

#[test]
fn task_tokens_reject_checkpoint_signature() {
    let dir = TempDir::new();
    let path = dir.path().join("task-tokens.pk8");
    let key = SigningKey::load_or_create(&path).expect("create key");
    let tokens = warden_identity::TaskTokens::new(
        SigningKey::load(&path).expect("load key"),
        "warden".into(),
        "warden".into(),
        0,
    );

    let checkpoint = signed(&key);

    assert!(
        tokens
            .verify(&checkpoint.signature, checkpoint.created_at)
            .is_err()
    );
}

#[tokio::test]
async fn checkpointer_skips_empty_log() {
    let fixture = fixture();
    let checkpointer = fixture.checkpointer("key.pk8");

    let written = checkpointer.checkpoint(1_000).await.expect("checkpoint");

    assert_eq!(written, None);
    assert!(fixture.store.checkpoints().await.expect("load").is_empty());
}

#[tokio::test]
async fn checkpointer_signs_head() {
    let fixture = fixture();
    fixture.append(0..5).await;
    let checkpointer = fixture.checkpointer("key.pk8");

    let written = checkpointer
        .checkpoint(1_000)
        .await
        .expect("checkpoint")
        .expect("a checkpoint is written");

    let (head_seq, head_hash) = fixture.head().await;
    assert_eq!(written.seq, head_seq);
    assert_eq!(written.hash, head_hash);
    assert_eq!(written.created_at, 1_000);
    assert_eq!(
        fixture.store.checkpoints().await.expect("load"),
        std::slice::from_ref(&written)
    );
    verify_checkpoint(&written, &jwks_of(&fixture.key("key.pk8"))).expect("valid signature");
}

#[tokio::test]
async fn checkpointer_skips_unchanged_head() {
    let fixture = fixture();
    fixture.append(0..3).await;
    let checkpointer = fixture.checkpointer("key.pk8");
    checkpointer.checkpoint(1_000).await.expect("first");

    let second = checkpointer.checkpoint(1_060).await.expect("second");

    assert_eq!(second, None);
    assert_eq!(fixture.store.checkpoints().await.expect("load").len(), 1);
}

#[tokio::test]
async fn checkpointer_follows_moving_head() {
    let fixture = fixture();
    fixture.append(0..3).await;
    let checkpointer = fixture.checkpointer("key.pk8");
    checkpointer.checkpoint(1_000).await.expect("first");
    fixture.append(3..8).await;

    let second = checkpointer
        .checkpoint(1_060)
        .await
        .expect("second")
        .expect("head moved");

    assert_eq!(second.seq, 8);
    let seqs: Vec<i64> = fixture
        .store
        .checkpoints()
        .await
        .expect("load")
        .iter()
        .map(|checkpoint| checkpoint.seq)
        .collect();
    assert_eq!(seqs, [3, 8]);
}

#[tokio::test]
async fn checkpointer_verifies_many_pages() {
    let fixture = fixture();
    let count = i64::try_from(PAGE_RECORDS).expect("small") + 7;
    fixture.append(0..count).await;
    let checkpointer = fixture.checkpointer("key.pk8");

    let written = checkpointer
        .checkpoint(1_000)
        .await
        .expect("checkpoint")
        .expect("a checkpoint is written");

    assert_eq!(written.seq, count);
}

#[tokio::test]
async fn checkpointer_resumes_from_stored_checkpoint() {
    let fixture = fixture();
    fixture.append(0..4).await;
    fixture
        .checkpointer("key.pk8")
        .checkpoint(1_000)
        .await
        .expect("first run");
    let restarted = fixture.checkpointer("key.pk8");

    let unchanged = restarted.checkpoint(1_060).await.expect("after restart");
    fixture.append(4..6).await;
    let moved = restarted
        .checkpoint(1_120)
        .await
        .expect("after new records");

    assert_eq!(unchanged, None);
    assert_eq!(moved.map(|checkpoint| checkpoint.seq), Some(6));
}

#[tokio::test]
async fn checkpointer_with_new_key_starts_at_head() {
    let fixture = fixture();
    fixture.append(0..4).await;
    fixture
        .checkpointer("old.pk8")
        .checkpoint(1_000)
        .await
        .expect("old key");
    let replaced = fixture.checkpointer("new.pk8");

    let unchanged = replaced.checkpoint(1_060).await.expect("new key");
    fixture.append(4..5).await;
    let moved = replaced
        .checkpoint(1_120)
        .await
        .expect("new records")
        .expect("head moved");

    assert_eq!(unchanged, None);
    verify_checkpoint(&moved, &jwks_of(&fixture.key("new.pk8"))).expect("signed by new key");
}

#[tokio::test]
async fn checkpoint_task_writes_periodically_and_at_finish() {
    let fixture = fixture();
    fixture.append(0..2).await;
    let checkpointer = Arc::new(fixture.checkpointer("key.pk8"));

    let task = CheckpointTask::start(Arc::clone(&checkpointer), Duration::from_millis(100));
    wait_for_checkpoint(&fixture, 2).await;
    fixture.append(2..5).await;
    wait_for_checkpoint(&fixture, 5).await;
    fixture.append(5..6).await;
    task.finish().await;

    let seqs: Vec<i64> = fixture
        .store
        .checkpoints()
        .await
        .expect("load")
        .iter()
        .map(|checkpoint| checkpoint.seq)
        .collect();
    assert_eq!(seqs.first(), Some(&2));
    assert_eq!(seqs.last(), Some(&6));
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
}

#[tokio::test]
async fn checkpoint_task_zero_interval_finish_only() {
    let fixture = fixture();
    fixture.append(0..3).await;
    let checkpointer = Arc::new(fixture.checkpointer("key.pk8"));

    let task = CheckpointTask::start(checkpointer, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = fixture.store.checkpoints().await.expect("load").len();
    task.finish().await;

    assert_eq!(before, 0);
    assert_eq!(fixture.store.checkpoints().await.expect("load").len(), 1);
}

/// Waits up to 10 s until the store contains a checkpoint of `seq`.
async fn wait_for_checkpoint(fixture: &Fixture, seq: i64) {
    for _ in 0..200 {
        let checkpoints = fixture.store.checkpoints().await.expect("load");
        if checkpoints.iter().any(|checkpoint| checkpoint.seq == seq) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no checkpoint of seq {seq} after 10 s");
}

#[tokio::test]
async fn verify_audit_log_accepts_untouched_log() {
    let fixture = fixture();
    fixture.append(0..4).await;
    let checkpointer = fixture.checkpointer("key.pk8");
    checkpointer.checkpoint(1_000).await.expect("checkpoint");
    fixture.append(4..6).await;

    let verdict = verify_audit_log(fixture.store.as_ref(), &jwks_of(&fixture.key("key.pk8")))
        .await
        .expect("verify");

    let (head_seq, head_hash) = fixture.head().await;
    assert_eq!(
        verdict,
        AuditLogVerdict::Valid(AuditLogSummary {
            records: 6,
            head_seq,
            head_hash,
            checkpoints: 1,
            newest_checkpoint: Some(4),
        })
    );
}

#[tokio::test]
async fn verify_audit_log_accepts_empty_log() {
    let fixture = fixture();

    let verdict = verify_audit_log(fixture.store.as_ref(), &jwks_of(&fixture.key("key.pk8")))
        .await
        .expect("verify");

    assert_eq!(
        verdict,
        AuditLogVerdict::Valid(AuditLogSummary {
            records: 0,
            head_seq: 0,
            head_hash: GENESIS_HASH.to_owned(),
            checkpoints: 0,
            newest_checkpoint: None,
        })
    );
}

#[tokio::test]
async fn verify_audit_log_names_forged_checkpoint() {
    let fixture = fixture();
    fixture.append(0..5).await;
    let records = fixture.store.audit_range(0, 10).await.expect("load");
    let forger = SigningKey::generate().expect("generate key");
    let forged = sign_checkpoint(&forger, 3, &records[2].hash, 1_000).expect("sign");
    fixture
        .store
        .insert_checkpoint(&forged)
        .await
        .expect("the store does not check signatures");

    let verdict = verify_audit_log(fixture.store.as_ref(), &jwks_of(&fixture.key("key.pk8")))
        .await
        .expect("verify");

    let AuditLogVerdict::Invalid(defect) = verdict else {
        panic!("forged checkpoint accepted: {verdict:?}");
    };
    assert_eq!(defect.seq, 3);
    assert!(defect.message.contains(forger.kid()), "{}", defect.message);
}

#[tokio::test]
async fn verify_audit_log_reports_lowest_bad_checkpoint() {
    let fixture = fixture();
    fixture.append(0..3).await;
    let checkpointer = fixture.checkpointer("key.pk8");
    checkpointer.checkpoint(1_000).await.expect("checkpoint");
    fixture.append(3..6).await;
    let records = fixture.store.audit_range(0, 10).await.expect("load");
    let bogus = Checkpoint {
        seq: 2,
        hash: records[1].hash.clone(),
        created_at: 900,
        signature: "e30.e30.AA".into(),
    };
    fixture
        .store
        .insert_checkpoint(&bogus)
        .await
        .expect("insert");

    let verdict = verify_audit_log(fixture.store.as_ref(), &jwks_of(&fixture.key("key.pk8")))
        .await
        .expect("verify");

    let AuditLogVerdict::Invalid(defect) = verdict else {
        panic!("bogus checkpoint accepted: {verdict:?}");
    };
    assert_eq!(defect.seq, 2);
}
