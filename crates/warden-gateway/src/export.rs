//! Export of audit records as trace spans.
//!
//! Every committed audit record is one span of its task's trace. The
//! [`Exporter`] is the store's [`AuditObserver`]: the audit writer hands it
//! each committed batch, and it puts the records on one bounded queue per
//! destination, an OTLP/HTTP endpoint (OTLP JSON, in batches) and a
//! JSON-lines file. One background task per destination empties its queue.
//!
//! Export never makes a request wait. A record that finds its queue full
//! is dropped, and a batch that still fails after its retries is given up.
//! Both are counted for `/metrics`. Each destination logs drops at most
//! once per [`LOG_INTERVAL`], and failures likewise.

mod jsonl;
mod otlp;
mod span;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warden_config::ExportConfig;
use warden_store::{AuditObserver, AuditRecord, Checkpoint};

use self::jsonl::{JsonlCounters, JsonlFile, Line};
use self::otlp::{Batching, OtlpClient};
use self::span::SpanSource;

/// Maximum time [`Exporter::shutdown`] waits for the queues to empty.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Minimum time between two warnings about drops or failures of one
/// destination.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counts of one export destination since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportCounts {
    /// Spans or lines delivered: accepted by the OTLP endpoint, or written
    /// to the file.
    pub sent: u64,
    /// Spans or lines dropped because their queue was full or export had
    /// stopped.
    pub dropped: u64,
    /// Spans or lines that failed: rejected by the endpoint, still failing
    /// after the retries, not written to the file, or still queued when
    /// shutdown gave up waiting.
    pub failed: u64,
}

/// Exports committed audit records as spans to the configured
/// destinations.
pub struct Exporter {
    otlp: Option<Queue<Arc<AuditRecord>>>,
    jsonl: Option<JsonlQueue>,
    stop: CancellationToken,
    workers: Mutex<Vec<Worker>>,
}

impl Exporter {
    /// Starts export to the destinations in `config` on the current tokio
    /// runtime and returns `None` when none is configured.
    ///
    /// OTLP header values are read from the environment here, once.
    ///
    /// # Errors
    ///
    /// Fails when no tokio runtime is running, when a variable named in
    /// `otlp_headers_env` is not set or contains an invalid header value, when
    /// the endpoint is not a URL, when the JSON-lines file cannot be opened
    /// for appending, or when `queue_capacity` is 0.
    pub fn start(config: &ExportConfig) -> anyhow::Result<Option<Arc<Exporter>>> {
        Exporter::start_with(
            config,
            &StartOptions {
                lookup: &|name| std::env::var(name).ok(),
                first_backoff: otlp::FIRST_BACKOFF,
            },
        )
    }

    /// Returns the counts of the OTLP destination, when it is configured.
    pub fn otlp_counts(&self) -> Option<ExportCounts> {
        self.otlp.as_ref().map(|queue| queue.state.counts())
    }

    /// Returns the counts of audit record lines in the JSON-lines file,
    /// when it is configured.
    pub fn jsonl_counts(&self) -> Option<ExportCounts> {
        self.jsonl.as_ref().map(|queue| queue.records.counts())
    }

    /// Returns the counts of checkpoint lines in the JSON-lines file, when
    /// it is configured.
    pub fn jsonl_checkpoint_counts(&self) -> Option<ExportCounts> {
        self.jsonl.as_ref().map(|queue| queue.checkpoints.counts())
    }

    /// Stops taking records and exports what the queues hold, waiting at
    /// most [`SHUTDOWN_TIMEOUT`]. Records still queued after that are
    /// counted as failed. Records committed after this call are dropped.
    ///
    /// Call it after the store's last commit and checkpoint, so that they
    /// are exported too.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        let deadline = tokio::time::Instant::now() + SHUTDOWN_TIMEOUT;
        for mut worker in workers {
            if tokio::time::timeout_at(deadline, &mut worker.task)
                .await
                .is_ok()
            {
                continue;
            }
            worker.task.abort();
            for state in &worker.states {
                let lost = state.pending.swap(0, Ordering::Relaxed);
                state.count_failed(lost);
                tracing::warn!(
                    exporter = state.exporter,
                    lost,
                    timeout_seconds = SHUTDOWN_TIMEOUT.as_secs(),
                    "export did not finish before the shutdown timeout; queued {} are lost",
                    state.items
                );
            }
        }
        tracing::info!("span export stopped");
    }

    fn start_with(
        config: &ExportConfig,
        options: &StartOptions<'_>,
    ) -> anyhow::Result<Option<Arc<Exporter>>> {
        if config.otlp_endpoint.is_none() && config.jsonl_path.is_none() {
            return Ok(None);
        }
        if config.queue_capacity == 0 {
            bail!("export.queue_capacity is 0; set it to at least 1");
        }
        let runtime = tokio::runtime::Handle::try_current()
            .context("span export needs a running tokio runtime")?;

        // Everything that can fail comes first, so that an error leaves no
        // task running.
        let client = match &config.otlp_endpoint {
            Some(endpoint) => Some(OtlpClient::new(
                endpoint,
                &config.otlp_headers_env,
                Duration::from_secs(config.timeout_seconds),
                options.lookup,
                options.first_backoff,
            )?),
            None => None,
        };
        let file = match &config.jsonl_path {
            Some(path) => Some(JsonlFile::open(path)?),
            None => None,
        };

        let stop = CancellationToken::new();
        let mut workers = Vec::new();
        let otlp = client.map(|client| {
            tracing::info!(exporter = "otlp", endpoint = %client.label(), "span export started");
            let (sender, receiver) = mpsc::channel(config.queue_capacity);
            let state = Arc::new(DestinationState::new("otlp", "spans"));
            let task = runtime.spawn(otlp::run(
                receiver,
                client,
                SpanSource::new(&config.service_name),
                Arc::clone(&state),
                Batching {
                    max_spans: config.batch_max_spans,
                    interval: Duration::from_millis(config.batch_interval_ms),
                },
                stop.clone(),
            ));
            workers.push(Worker {
                task,
                states: vec![Arc::clone(&state)],
            });
            Queue { sender, state }
        });
        let jsonl = file.map(|file| {
            tracing::info!(exporter = "jsonl", path = %file.path().display(), "span export started");
            let (sender, receiver) = mpsc::channel(config.queue_capacity);
            let records = Arc::new(DestinationState::new("jsonl", "record lines"));
            let checkpoints = Arc::new(DestinationState::new("jsonl", "checkpoint lines"));
            let counters = JsonlCounters {
                records: Arc::clone(&records),
                checkpoints: Arc::clone(&checkpoints),
            };
            let task = runtime.spawn(jsonl::run(
                receiver,
                file,
                counters,
                config.batch_max_spans,
                stop.clone(),
            ));
            workers.push(Worker {
                task,
                states: vec![Arc::clone(&records), Arc::clone(&checkpoints)],
            });
            JsonlQueue {
                sender,
                records,
                checkpoints,
            }
        });
        Ok(Some(Arc::new(Exporter {
            otlp,
            jsonl,
            stop,
            workers: Mutex::new(workers),
        })))
    }
}

impl AuditObserver for Exporter {
    fn committed(&self, records: &[AuditRecord]) {
        for record in records {
            let record = Arc::new(record.clone());
            if let Some(otlp) = &self.otlp {
                offer(&otlp.sender, &otlp.state, Arc::clone(&record));
            }
            if let Some(jsonl) = &self.jsonl {
                offer(&jsonl.sender, &jsonl.records, Line::Record(record));
            }
        }
    }

    fn checkpointed(&self, checkpoint: &Checkpoint) {
        if let Some(jsonl) = &self.jsonl {
            offer(
                &jsonl.sender,
                &jsonl.checkpoints,
                Line::Checkpoint(checkpoint.clone()),
            );
        }
    }
}

/// Inputs of [`Exporter::start_with`] that tests replace.
struct StartOptions<'a> {
    /// Returns the value of an environment variable.
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Delay before the first OTLP retry.
    first_backoff: Duration,
}

/// The sending side of one destination's queue.
struct Queue<T> {
    sender: mpsc::Sender<T>,
    state: Arc<DestinationState>,
}

/// The sending side of the JSON-lines queue, which carries record and
/// checkpoint lines with separate counts.
struct JsonlQueue {
    sender: mpsc::Sender<Line>,
    records: Arc<DestinationState>,
    checkpoints: Arc<DestinationState>,
}

/// A destination's background task and the counts it settles.
struct Worker {
    task: JoinHandle<()>,
    states: Vec<Arc<DestinationState>>,
}

/// Puts `item` on a queue without waiting, or counts it as dropped.
fn offer<T>(sender: &mpsc::Sender<T>, state: &DestinationState, item: T) {
    // `pending` counts up first, so the worker never settles more than
    // was counted.
    state.pending.fetch_add(1, Ordering::Relaxed);
    if let Err(error) = sender.try_send(item) {
        state.settle(1);
        let dropped = state.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if state.drop_log.allow() {
            let reason = match error {
                mpsc::error::TrySendError::Full(_) => "the export queue is full",
                mpsc::error::TrySendError::Closed(_) => "export has stopped",
            };
            tracing::warn!(
                exporter = state.exporter,
                dropped_total = dropped,
                "dropping {} because {reason}; raise export.queue_capacity or check the destination",
                state.items
            );
        }
    }
}

/// Counts and log limits of one destination, shared by the queue's sender
/// and its worker.
pub(crate) struct DestinationState {
    /// Destination name in metrics and logs: `otlp` or `jsonl`.
    exporter: &'static str,
    /// Plural noun for the counted items in log messages, e.g. `spans`.
    items: &'static str,
    sent: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// Items queued or in a batch, not yet counted as sent or failed.
    pending: AtomicU64,
    drop_log: LogLimiter,
    failure_log: LogLimiter,
}

impl DestinationState {
    fn new(exporter: &'static str, items: &'static str) -> DestinationState {
        DestinationState {
            exporter,
            items,
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            drop_log: LogLimiter::new(),
            failure_log: LogLimiter::new(),
        }
    }

    fn counts(&self) -> ExportCounts {
        ExportCounts {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    fn count_sent(&self, count: u64) {
        self.sent.fetch_add(count, Ordering::Relaxed);
    }

    fn count_failed(&self, count: u64) {
        self.failed.fetch_add(count, Ordering::Relaxed);
    }

    /// Marks `count` items as no longer pending.
    fn settle(&self, count: u64) {
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |pending| {
                Some(pending.saturating_sub(count))
            });
    }

    /// Logs an export failure, unless one was logged less than
    /// [`LOG_INTERVAL`] ago.
    fn log_failure(&self, error: &str) {
        if self.failure_log.allow() {
            tracing::warn!(
                exporter = self.exporter,
                %error,
                failed_total = self.failed.load(Ordering::Relaxed),
                "span export failed; the {} are not exported",
                self.items
            );
        }
    }
}

/// Lets one message through per [`LOG_INTERVAL`].
struct LogLimiter {
    origin: Instant,
    /// Milliseconds after `origin` from which the next message may pass.
    next_ms: AtomicU64,
}

impl LogLimiter {
    fn new() -> LogLimiter {
        LogLimiter {
            origin: Instant::now(),
            next_ms: AtomicU64::new(0),
        }
    }

    fn allow(&self) -> bool {
        let now = self.origin.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + LOG_INTERVAL.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests;
