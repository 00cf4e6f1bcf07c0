//! The audit writer: one thread that takes queued records in batches,
//! chains their hashes and commits each batch in one transaction.
//!
//! [`AuditQueue::append`] never waits for disk: it puts a record on a
//! bounded queue and returns, and the writer commits whatever has gathered
//! while the previous commit ran (group commit). Flush and stop requests
//! travel through the same queue, so they are answered only after every
//! record queued before them is committed. After each commit the writer
//! hands the committed records, with their seq and hashes, to the
//! [`AuditObserver`] when one is set.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::sql;
use crate::check::exceeds_depth;
use crate::lost::LostRecords;
use crate::{AuditObserver, AuditRecord, NewAuditRecord, StoreError};

/// Maximum nesting of arrays and objects in a record's `detail`. SQLite
/// stores any depth, but serde_json refuses to parse more than 128 levels,
/// so a deeper detail would make the stored record unreadable.
const MAX_DETAIL_DEPTH: usize = warden_core::json::MAX_DEPTH;

/// Batch limits of the audit writer.
#[derive(Clone, Debug)]
pub(super) struct BatchSettings {
    /// Maximum records per transaction.
    pub(super) max_records: usize,
    /// Time the writer waits for more records after the first one of a
    /// batch arrives.
    pub(super) window: Duration,
    /// Waits between commit attempts of one batch; after the last attempt
    /// fails the batch is dropped and counted.
    pub(super) retry_delays: Vec<Duration>,
}

/// The sending side of the audit queue and the handle of its writer thread.
pub(super) struct AuditQueue {
    sender: SyncSender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
    store: String,
    lost: Arc<LostRecords>,
}

impl AuditQueue {
    /// Starts the writer thread on `conn` with a queue of `capacity`
    /// records; `observer` receives every committed batch.
    pub(super) fn start(
        conn: Connection,
        capacity: usize,
        settings: BatchSettings,
        store: String,
        lost: Arc<LostRecords>,
        observer: Option<Arc<dyn AuditObserver>>,
    ) -> std::io::Result<AuditQueue> {
        let (sender, receiver) = mpsc::sync_channel(capacity.max(1));
        let writer = Writer {
            conn,
            settings,
            store: store.clone(),
            lost: Arc::clone(&lost),
            observer,
            failed_records: 0,
            last_failure: None,
        };
        let thread = std::thread::Builder::new()
            .name("warden-audit-writer".into())
            .spawn(move || writer.run(receiver))?;
        Ok(AuditQueue {
            sender,
            thread: Mutex::new(Some(thread)),
            store,
            lost,
        })
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
        match self.sender.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.lost.add(1, &self.store, "audit queue is full"),
            Err(TrySendError::Disconnected(_)) => {
                self.lost.add(1, &self.store, "audit writer has stopped")
            }
        }
    }

    /// Waits until every record queued before the call is committed.
    pub(super) async fn flush(&self) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        if !self.send_control(Message::Flush(ack)).await {
            return Err(self.stopped());
        }
        self.outcome(done.await.ok())
    }

    /// Commits every queued record, then stops and joins the writer thread.
    /// Closing a closed queue does nothing.
    pub(super) async fn close(&self) -> Result<(), StoreError> {
        let Some(thread) = self.take_thread() else {
            return Ok(());
        };
        let (ack, done) = oneshot::channel();
        let ack = if self.send_control(Message::Stop(Some(ack))).await {
            done.await.ok()
        } else {
            None
        };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => error!(store = %self.store, "audit writer thread panicked"),
            Err(join_error) => {
                error!(store = %self.store, error = %join_error, "joining the audit writer failed")
            }
        }
        self.outcome(ack)
    }

    /// Returns true while the writer thread runs.
    pub(super) fn is_running(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
    }

    /// Returns the error for a flush or close that found no writer.
    pub(super) fn stopped(&self) -> StoreError {
        StoreError::WriterStopped {
            store: self.store.clone(),
        }
    }

    fn take_thread(&self) -> Option<JoinHandle<()>> {
        self.thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Sends a flush or stop request; returns false when the writer is gone.
    /// A full queue is waited on from a blocking thread.
    async fn send_control(&self, message: Message) -> bool {
        match self.sender.try_send(message) {
            Ok(()) => true,
            Err(TrySendError::Disconnected(_)) => false,
            Err(TrySendError::Full(message)) => {
                let sender = self.sender.clone();
                let sent = tokio::task::spawn_blocking(move || sender.send(message)).await;
                matches!(sent, Ok(Ok(())))
            }
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

impl Drop for AuditQueue {
    /// Commits queued records and joins the writer, blocking the caller.
    fn drop(&mut self) {
        let Some(thread) = self.take_thread() else {
            return;
        };
        if self.sender.send(Message::Stop(None)).is_err() {
            debug!(store = %self.store, "audit writer was already stopped");
        }
        if thread.join().is_err() {
            error!(store = %self.store, "audit writer thread panicked");
        }
    }
}

enum Message {
    Record(Box<NewAuditRecord>),
    Flush(oneshot::Sender<Ack>),
    Stop(Option<oneshot::Sender<Ack>>),
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
    Stop(Option<oneshot::Sender<Ack>>),
}

struct Writer {
    conn: Connection,
    settings: BatchSettings,
    store: String,
    lost: Arc<LostRecords>,
    observer: Option<Arc<dyn AuditObserver>>,
    /// Records dropped since the last acknowledgement.
    failed_records: u64,
    last_failure: Option<String>,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Message>) {
        info!(store = %self.store, "audit writer started");
        let mut batch = Vec::with_capacity(self.settings.max_records);

        while let Ok(first) = receiver.recv() {
            let mut control = take(first, &mut batch);
            if control.is_none() {
                control = self.gather(&receiver, &mut batch);
            }
            if !batch.is_empty() {
                self.commit(&mut batch);
                batch.clear();
            }
            match control {
                None => {}
                Some(Control::Flush(ack)) => {
                    // A flusher that gave up waiting is no error.
                    ack.send(self.take_ack()).ok();
                }
                Some(Control::Stop(ack)) => {
                    if let Some(ack) = ack {
                        ack.send(self.take_ack()).ok();
                    }
                    break;
                }
            }
        }

        // Records queued after a stop request are never written.
        let abandoned = receiver
            .try_iter()
            .filter(|message| matches!(message, Message::Record(_)))
            .count();
        if abandoned > 0 {
            let abandoned = u64::try_from(abandoned).unwrap_or(u64::MAX);
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
    ///
    /// The writer sleeps through the window instead of waiting on the
    /// channel, so a request thread that appends a record never has to wake
    /// it: one wake-up per batch, not one per record. A flush therefore
    /// waits up to one window.
    fn gather(
        &self,
        receiver: &Receiver<Message>,
        batch: &mut Vec<NewAuditRecord>,
    ) -> Option<Control> {
        let deadline = Instant::now() + self.settings.window;
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
            let remaining = deadline.saturating_duration_since(Instant::now());
            if batch.len() >= self.settings.max_records || remaining.is_zero() {
                return None;
            }
            std::thread::sleep(remaining);
        }
    }

    /// Commits `batch`, retrying after the configured delays; drops and counts it
    /// when every attempt fails. A committed batch is moved out of `batch`
    /// to the observer, when one is set.
    fn commit(&mut self, batch: &mut Vec<NewAuditRecord>) {
        let mut attempt = 0;
        loop {
            match sql::insert_audit_batch(&mut self.conn, batch, self.observer.is_some()) {
                Ok(appended) => {
                    debug!(
                        store = %self.store,
                        audit.records = batch.len(),
                        audit.seq = appended.last_seq,
                        "audit batch committed"
                    );
                    self.notify(batch, appended);
                    return;
                }
                Err(failure) => {
                    let message = failure
                        .into_store_error(&self.store, "commit audit batch".into())
                        .to_string();
                    if let Some(delay) = self.settings.retry_delays.get(attempt) {
                        warn!(
                            store = %self.store,
                            error = %message,
                            attempt = attempt + 1,
                            "audit batch commit failed; retrying"
                        );
                        std::thread::sleep(*delay);
                        attempt += 1;
                        continue;
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
        }
    }

    /// Hands the committed `batch` to the observer as stored records.
    ///
    /// A panic in the observer is caught and logged, so it cannot stop the
    /// writer and with it the audit log.
    fn notify(&self, batch: &mut Vec<NewAuditRecord>, appended: sql::AppendedBatch) {
        let Some(observer) = &self.observer else {
            return;
        };
        let last_seq = appended.last_seq;
        let count = i64::try_from(batch.len()).unwrap_or(i64::MAX);
        let mut seq = last_seq.saturating_sub(count);
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
                audit.seq = last_seq,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_records_counts_every_add() {
        let lost = LostRecords::new();
        lost.add(2, "test store", "test");
        lost.add(3, "test store", "test");

        assert_eq!(lost.total(), 5);
    }
}
