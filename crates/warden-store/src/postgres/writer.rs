//! The audit writer of the PostgreSQL backend: one task per store that
//! takes queued records in batches and appends each batch to the shared
//! hash chain in one transaction.
//!
//! [`AuditWriter::append`] never waits for the database: it puts a record
//! on a bounded queue and returns (group commit). A batch first locks the
//! single row of `audit_head`, so batches from every replica are appended
//! one after another, each continuing the chain from the head it read.
//!
//! While the database is unreachable the writer keeps its batch and
//! retries it with backoff, and new records wait in the queue; records are
//! dropped and counted only when the queue is full. Each batch carries an
//! id stored with it, so a retry after a commit whose outcome was lost
//! with the connection finds the batch instead of appending it twice.
//! Flushes fail at once during such an outage.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::postgres::PgPool;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};
use warden_core::Decision;

use super::sql::{self, AUDIT_COLUMNS, DbError};
use crate::check::exceeds_depth;
use crate::lost::LostRecords;
use crate::{AuditObserver, AuditRecord, GENESIS_HASH, NewAuditRecord, StoreError, record_hash};

/// First wait before retrying a batch that failed; it doubles up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Maximum wait between two attempts to commit a batch.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Attempts of a batch that fails although the database is reachable, for
/// example because it rejects a value. After the last one the batch is
/// dropped and counted.
const STATEMENT_ATTEMPTS: u32 = 3;

/// Time a stopping writer keeps retrying an unreachable database before
/// it drops what is left.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Age, in seconds, after which ids of committed batches are deleted; a
/// retry of a batch comes long before.
const BATCH_ID_RETENTION_SECONDS: i64 = 3600;

/// Maximum nesting of arrays and objects in a record's `detail`, so every
/// stored record parses back.
const MAX_DETAIL_DEPTH: usize = warden_core::json::MAX_DEPTH;

/// Batch limits of the audit writer.
#[derive(Clone, Copy, Debug)]
pub(super) struct BatchSettings {
    /// Maximum records per transaction.
    pub(super) max_records: usize,
    /// Time the writer waits for more records after the first one of a
    /// batch arrives.
    pub(super) window: Duration,
}

/// The sending side of the audit queue and the handle of its writer task.
pub(super) struct AuditWriter {
    sender: mpsc::Sender<Message>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The last commit error while the writer cannot reach the database.
    failure: watch::Receiver<Option<String>>,
    store: String,
    lost: Arc<LostRecords>,
}

impl AuditWriter {
    /// Starts the writer task on `pool` with a queue of `capacity` records;
    /// `observer` receives every committed batch.
    pub(super) fn start(
        pool: PgPool,
        capacity: usize,
        settings: BatchSettings,
        store: String,
        lost: Arc<LostRecords>,
        observer: Option<Arc<dyn AuditObserver>>,
    ) -> AuditWriter {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let (failure_sender, failure) = watch::channel(None);
        let writer = Writer {
            pool,
            settings,
            store: store.clone(),
            lost: Arc::clone(&lost),
            observer,
            failure: failure_sender,
            batch_prefix: uuid::Uuid::new_v4().simple().to_string(),
            batches: 0,
            failed_records: 0,
            last_failure: None,
            last_prune: None,
        };
        let task = tokio::spawn(writer.run(receiver));
        AuditWriter {
            sender,
            task: Mutex::new(Some(task)),
            failure,
            store,
            lost,
        }
    }

    /// Queues `record` for the writer, or counts it as lost when the queue
    /// is full or the writer has stopped.
    pub(super) fn append(&self, mut record: NewAuditRecord) {
        if exceeds_depth(&record.detail, MAX_DETAIL_DEPTH) {
            warn!(
                store = %self.store,
                task.id = %record.task_id,
                "audit record detail is nested too deeply; storing the record without it"
            );
            record.detail = serde_json::json!({
                "error": format!("detail was nested deeper than {MAX_DETAIL_DEPTH} levels and was not stored"),
            });
        }
        replace_nul(&mut record);
        match self.sender.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.lost.add(1, &self.store, "audit queue is full"),
            Err(TrySendError::Closed(_)) => {
                self.lost.add(1, &self.store, "audit writer has stopped")
            }
        }
    }

    /// Waits until every record queued before the call is committed. Fails
    /// at once while the database is unreachable, leaving the records
    /// queued.
    pub(super) async fn flush(&self) -> Result<(), StoreError> {
        let mut failure = self.failure.clone();
        if let Some(message) = failure.borrow_and_update().clone() {
            return Err(self.unreachable(message));
        }
        let (ack, done) = oneshot::channel();
        tokio::select! {
            sent = self.sender.send(Message::Flush(ack)) => {
                if sent.is_err() {
                    return Err(self.stopped());
                }
            }
            message = next_failure(&mut failure) => return Err(self.unreachable(message)),
        }
        tokio::select! {
            ack = done => self.outcome(ack.ok()),
            message = next_failure(&mut failure) => Err(self.unreachable(message)),
        }
    }

    /// Commits every queued record, then stops the writer task and waits
    /// for it. Closing a closed writer does nothing.
    pub(super) async fn close(&self) -> Result<(), StoreError> {
        let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Ok(());
        };
        let (ack, done) = oneshot::channel();
        let ack = if self.sender.send(Message::Stop(ack)).await.is_ok() {
            done.await.ok()
        } else {
            None
        };
        if let Err(join_error) = task.await {
            error!(store = %self.store, error = %join_error, "the audit writer task failed");
        }
        self.outcome(ack)
    }

    /// Returns true while the writer task runs.
    pub(super) fn is_running(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|task| !task.is_finished())
    }

    /// Returns the last commit error while the database is unreachable.
    pub(super) fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Returns the error for a flush or close that found no writer.
    pub(super) fn stopped(&self) -> StoreError {
        StoreError::WriterStopped {
            store: self.store.clone(),
        }
    }

    fn unreachable(&self, message: String) -> StoreError {
        StoreError::Unavailable {
            store: self.store.clone(),
            operation: "flush the audit log".to_owned(),
            source: format!("{message}; the queued audit records are kept and retried").into(),
        }
    }

    fn outcome(&self, ack: Option<Ack>) -> Result<(), StoreError> {
        match ack {
            Some(Ack::Committed) => Ok(()),
            Some(Ack::Failed { records, message }) => Err(StoreError::AuditWrite {
                store: self.store.clone(),
                records,
                message,
            }),
            None => Err(self.stopped()),
        }
    }
}

/// Waits until the writer reports a failure and returns it; waits forever
/// when the writer is gone.
async fn next_failure(failure: &mut watch::Receiver<Option<String>>) -> String {
    loop {
        if let Some(message) = failure.borrow_and_update().clone() {
            return message;
        }
        if failure.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Replaces NUL characters in the text fields of `record` with U+FFFD,
/// because PostgreSQL text cannot hold NUL. It runs before the record is
/// hashed, so the stored record verifies. `detail` is stored as JSON text,
/// which escapes NUL, and is left as it is.
fn replace_nul(record: &mut NewAuditRecord) {
    let clean = |text: &mut String| {
        if text.contains('\0') {
            *text = text.replace('\0', "\u{FFFD}");
        }
    };
    for text in [
        &mut record.trace_id,
        &mut record.span_id,
        &mut record.task_id,
        &mut record.agent,
        &mut record.user,
        &mut record.kind,
    ] {
        clean(text);
    }
    for text in [
        &mut record.parent_span_id,
        &mut record.target,
        &mut record.reason,
    ]
    .into_iter()
    .flatten()
    {
        clean(text);
    }
    record.policy_ids.iter_mut().for_each(clean);
}

enum Message {
    Record(Box<NewAuditRecord>),
    Flush(oneshot::Sender<Ack>),
    Stop(oneshot::Sender<Ack>),
}

/// The writer's acknowledgement of a flush or stop request.
enum Ack {
    /// Every batch since the previous acknowledgement was committed.
    Committed,
    /// Some batches since the previous acknowledgement were dropped.
    Failed { records: u64, message: String },
}

/// A request that ends the current batch.
enum Control {
    Flush(oneshot::Sender<Ack>),
    Stop(oneshot::Sender<Ack>),
}

struct Writer {
    pool: PgPool,
    settings: BatchSettings,
    store: String,
    lost: Arc<LostRecords>,
    observer: Option<Arc<dyn AuditObserver>>,
    failure: watch::Sender<Option<String>>,
    /// Random prefix of this writer's batch ids.
    batch_prefix: String,
    /// Batches attempted so far, the suffix of batch ids.
    batches: u64,
    /// Records dropped since the last acknowledgement.
    failed_records: u64,
    last_failure: Option<String>,
    last_prune: Option<Instant>,
}

/// Position of a committed batch in the chain.
struct Appended {
    /// Seq of the last record of the batch.
    last_seq: i64,
    /// Hash of the record before the batch, and of each record of it.
    prev_hash: String,
    hashes: Vec<String>,
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<Message>) {
        info!(store = %self.store, "audit writer started");
        let mut batch = Vec::with_capacity(self.settings.max_records);
        while let Some(first) = receiver.recv().await {
            let mut control = take(first, &mut batch);
            if control.is_none() {
                control = self.gather(&mut receiver, &mut batch).await;
            }
            let stopping = matches!(control, Some(Control::Stop(_)));
            if !batch.is_empty() {
                self.commit(&mut batch, stopping).await;
                batch.clear();
            }
            match control {
                None => {}
                Some(Control::Flush(ack)) => {
                    // A flusher that gave up waiting is no error.
                    ack.send(self.take_ack()).ok();
                }
                Some(Control::Stop(ack)) => {
                    ack.send(self.take_ack()).ok();
                    receiver.close();
                    break;
                }
            }
        }
        // Records queued after a stop request are never written.
        let mut abandoned = 0_u64;
        while let Ok(message) = receiver.try_recv() {
            if matches!(message, Message::Record(_)) {
                abandoned += 1;
            }
        }
        if abandoned > 0 {
            self.lost.add(
                abandoned,
                &self.store,
                "records arrived after the writer stopped",
            );
        }
        info!(store = %self.store, "audit writer stopped");
    }

    /// Adds records to `batch` until it is full, the batch window has
    /// passed or a flush or stop request arrives; returns that request.
    /// The writer sleeps through the window, so appends never wake it.
    async fn gather(
        &self,
        receiver: &mut mpsc::Receiver<Message>,
        batch: &mut Vec<NewAuditRecord>,
    ) -> Option<Control> {
        let deadline = tokio::time::Instant::now() + self.settings.window;
        loop {
            while batch.len() < self.settings.max_records {
                match receiver.try_recv() {
                    Ok(message) => {
                        if let Some(control) = take(message, batch) {
                            return Some(control);
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return None,
                }
            }
            if batch.len() >= self.settings.max_records || tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Commits `batch`. While the database is unreachable it retries with
    /// backoff, for ever unless `stopping`; a batch that fails otherwise is
    /// dropped and counted after [`STATEMENT_ATTEMPTS`].
    async fn commit(&mut self, batch: &mut Vec<NewAuditRecord>, stopping: bool) {
        self.batches += 1;
        let batch_id = format!("{}-{}", self.batch_prefix, self.batches);
        let started = Instant::now();
        let mut delay = FIRST_RETRY_DELAY;
        let mut statement_failures = 0;
        let mut retry = false;
        loop {
            let attempt = insert_batch(&self.pool, batch, &batch_id, retry).await;
            retry = true;
            let failure = match attempt {
                Ok(appended) => {
                    if self.failure.borrow().is_some() {
                        info!(store = %self.store, "audit writer reached the database again");
                        self.failure.send_replace(None);
                    }
                    debug!(
                        store = %self.store,
                        audit.records = batch.len(),
                        audit.seq = appended.last_seq,
                        "audit batch committed"
                    );
                    self.notify(batch, appended);
                    self.prune().await;
                    return;
                }
                Err(failure) => failure,
            };
            let unreachable = failure.is_connection_error();
            let message = failure
                .into_store_error(&self.store, "commit audit batch".into())
                .to_string();
            if unreachable {
                if self.failure.borrow().is_none() {
                    error!(
                        store = %self.store,
                        error = %message,
                        audit.records = batch.len(),
                        "audit writer cannot reach the database; keeping the records and retrying"
                    );
                }
                self.failure.send_replace(Some(message.clone()));
                if !(stopping && started.elapsed() >= STOP_TIMEOUT) {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                    continue;
                }
            } else {
                statement_failures += 1;
                if statement_failures < STATEMENT_ATTEMPTS {
                    warn!(
                        store = %self.store,
                        error = %message,
                        attempt = statement_failures,
                        "audit batch commit failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                    continue;
                }
            }
            let records = u64::try_from(batch.len()).unwrap_or(u64::MAX);
            error!(
                store = %self.store,
                error = %message,
                audit.records = records,
                "audit batch commit failed after retries; records dropped"
            );
            self.lost
                .add(records, &self.store, "audit batch commit failed");
            self.failed_records = self.failed_records.saturating_add(records);
            self.last_failure = Some(message);
            return;
        }
    }

    /// Deletes ids of batches committed more than
    /// [`BATCH_ID_RETENTION_SECONDS`] ago, at most once a minute.
    async fn prune(&mut self) {
        if self
            .last_prune
            .is_some_and(|at| at.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        self.last_prune = Some(Instant::now());
        let cutoff = now_unix() - BATCH_ID_RETENTION_SECONDS;
        let pruned = sqlx::query("DELETE FROM audit_batches WHERE committed_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await;
        if let Err(error) = pruned {
            debug!(store = %self.store, %error, "pruning old audit batch ids failed");
        }
    }

    /// Hands the committed `batch` to the observer as stored records. A
    /// panic in the observer is caught and logged, so it cannot stop the
    /// writer.
    fn notify(&self, batch: &mut Vec<NewAuditRecord>, appended: Appended) {
        let Some(observer) = &self.observer else {
            return;
        };
        let count = i64::try_from(batch.len()).unwrap_or(i64::MAX);
        let mut seq = appended.last_seq.saturating_sub(count);
        let mut prev_hash = appended.prev_hash;
        let records: Vec<AuditRecord> = batch
            .drain(..)
            .zip(appended.hashes)
            .map(|(record, hash)| {
                seq += 1;
                AuditRecord {
                    seq,
                    record,
                    prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
                    hash,
                }
            })
            .collect();
        let delivered = std::panic::catch_unwind(AssertUnwindSafe(|| observer.committed(&records)));
        if delivered.is_err() {
            error!(
                store = %self.store,
                audit.seq = appended.last_seq,
                "audit observer panicked; the committed batch was not observed"
            );
        }
    }

    fn take_ack(&mut self) -> Ack {
        match self.last_failure.take() {
            None => Ack::Committed,
            Some(message) => Ack::Failed {
                records: std::mem::take(&mut self.failed_records),
                message,
            },
        }
    }
}

/// Appends `records` after the head of the chain in one transaction that
/// locks the head row, and records `batch_id` with it. On a `retry`, a
/// batch whose id is stored already was committed by an earlier attempt,
/// and its place is read back instead.
async fn insert_batch(
    pool: &PgPool,
    records: &[NewAuditRecord],
    batch_id: &str,
    retry: bool,
) -> Result<Appended, DbError> {
    let mut transaction = pool.begin().await?;
    if retry {
        let committed: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM audit_batches WHERE batch_id = $1")
                .bind(batch_id)
                .fetch_optional(&mut *transaction)
                .await?;
        if let Some(last_seq) = committed {
            transaction.commit().await?;
            return read_back(pool, last_seq, records.len()).await;
        }
    }
    let (mut seq, mut prev_hash): (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
            .fetch_optional(&mut *transaction)
            .await?
            .unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
    let batch_prev_hash = prev_hash.clone();

    let mut columns = Columns::with_capacity(records.len());
    let mut hashes = Vec::with_capacity(records.len());
    for record in records {
        seq += 1;
        let hash = record_hash(&prev_hash, seq, record);
        columns.push(seq, record, &prev_hash, &hash);
        hashes.push(hash.clone());
        prev_hash = hash;
    }
    sqlx::query(&format!(
        "INSERT INTO audit ({AUDIT_COLUMNS}) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
            $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
            $12::text[], $13::text[], $14::text[], $15::text[], $16::text[])"
    ))
    .bind(columns.seq)
    .bind(columns.time_us)
    .bind(columns.trace_id)
    .bind(columns.span_id)
    .bind(columns.parent_span_id)
    .bind(columns.task_id)
    .bind(columns.agent)
    .bind(columns.user)
    .bind(columns.kind)
    .bind(columns.target)
    .bind(columns.decision)
    .bind(columns.policy_ids)
    .bind(columns.reason)
    .bind(columns.detail)
    .bind(columns.prev_hash)
    .bind(columns.hash)
    .execute(&mut *transaction)
    .await?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&prev_hash)
        .execute(&mut *transaction)
        .await?;
    sqlx::query("INSERT INTO audit_batches (batch_id, last_seq, committed_at) VALUES ($1, $2, $3)")
        .bind(batch_id)
        .bind(seq)
        .bind(now_unix())
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(Appended {
        last_seq: seq,
        prev_hash: batch_prev_hash,
        hashes,
    })
}

/// Reads back where a batch of `count` records ending at `last_seq` landed.
async fn read_back(pool: &PgPool, last_seq: i64, count: usize) -> Result<Appended, DbError> {
    let first_seq = last_seq - i64::try_from(count).unwrap_or(i64::MAX) + 1;
    let stored = sql::select_audit_range(pool, first_seq - 1, count).await?;
    let prev_hash = stored
        .first()
        .map(|record| record.prev_hash.clone())
        .unwrap_or_else(|| GENESIS_HASH.to_owned());
    Ok(Appended {
        last_seq,
        prev_hash,
        hashes: stored.into_iter().map(|record| record.hash).collect(),
    })
}

/// The columns of a batch as arrays, for one `INSERT ... UNNEST`.
#[derive(Default)]
struct Columns {
    seq: Vec<i64>,
    time_us: Vec<i64>,
    trace_id: Vec<String>,
    span_id: Vec<String>,
    parent_span_id: Vec<Option<String>>,
    task_id: Vec<String>,
    agent: Vec<String>,
    user: Vec<String>,
    kind: Vec<String>,
    target: Vec<Option<String>>,
    decision: Vec<Option<String>>,
    policy_ids: Vec<String>,
    reason: Vec<Option<String>>,
    detail: Vec<String>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
}

impl Columns {
    fn with_capacity(capacity: usize) -> Columns {
        Columns {
            seq: Vec::with_capacity(capacity),
            ..Columns::default()
        }
    }

    fn push(&mut self, seq: i64, record: &NewAuditRecord, prev_hash: &str, hash: &str) {
        self.seq.push(seq);
        self.time_us.push(record.time_us);
        self.trace_id.push(record.trace_id.clone());
        self.span_id.push(record.span_id.clone());
        self.parent_span_id.push(record.parent_span_id.clone());
        self.task_id.push(record.task_id.clone());
        self.agent.push(record.agent.clone());
        self.user.push(record.user.clone());
        self.kind.push(record.kind.clone());
        self.target.push(record.target.clone());
        self.decision.push(
            record
                .decision
                .map(|decision| Decision::as_str(decision).to_owned()),
        );
        self.policy_ids
            .push(Value::from(record.policy_ids.clone()).to_string());
        self.reason.push(record.reason.clone());
        self.detail.push(record.detail.to_string());
        self.prev_hash.push(prev_hash.to_owned());
        self.hash.push(hash.to_owned());
    }
}

/// Adds a record to `batch`, or returns the flush or stop request.
fn take(message: Message, batch: &mut Vec<NewAuditRecord>) -> Option<Control> {
    match message {
        Message::Record(record) => {
            batch.push(*record);
            None
        }
        Message::Flush(ack) => Some(Control::Flush(ack)),
        Message::Stop(ack) => Some(Control::Stop(ack)),
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> NewAuditRecord {
        NewAuditRecord {
            time_us: 1,
            trace_id: "trace".into(),
            span_id: "span".into(),
            parent_span_id: Some("pa\0rent".into()),
            task_id: "task".into(),
            agent: "agent".into(),
            user: "al\0ice".into(),
            kind: "tool.decision".into(),
            target: None,
            decision: None,
            policy_ids: vec!["p\0".into()],
            reason: None,
            detail: serde_json::json!({"text": "a\u{0}b"}),
        }
    }

    #[test]
    fn replace_nul_cleans_text_fields() {
        let mut cleaned = record();

        replace_nul(&mut cleaned);

        assert_eq!(cleaned.user, "al\u{FFFD}ice");
        assert_eq!(cleaned.parent_span_id.as_deref(), Some("pa\u{FFFD}rent"));
        assert_eq!(cleaned.policy_ids, vec!["p\u{FFFD}".to_owned()]);
    }

    #[test]
    fn replace_nul_keeps_detail() {
        let mut cleaned = record();

        replace_nul(&mut cleaned);

        assert_eq!(cleaned.detail, record().detail);
    }

    #[test]
    fn lost_records_counts_every_add() {
        let lost = LostRecords::new();
        lost.add(2, "test store", "test");
        lost.add(3, "test store", "test");

        assert_eq!(lost.total(), 5);
    }
}
