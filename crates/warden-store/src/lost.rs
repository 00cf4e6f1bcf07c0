//! The count of audit records that never reached the database, shared by
//! the audit writers of every backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::warn;

/// Minimum time between two warnings about lost records.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Count of audit records that never reached the database, with a
/// rate-limited warning.
pub(crate) struct LostRecords {
    total: AtomicU64,
    /// Milliseconds since `clock` at the last warning; `u64::MAX` before
    /// the first.
    last_warning_ms: AtomicU64,
    clock: Instant,
}

impl LostRecords {
    /// Creates a zero count.
    pub(crate) fn new() -> LostRecords {
        LostRecords {
            total: AtomicU64::new(0),
            last_warning_ms: AtomicU64::new(u64::MAX),
            clock: Instant::now(),
        }
    }

    /// Returns the number of records lost so far.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts `records` lost records and warns unless a warning was logged
    /// in the last [`WARNING_INTERVAL`].
    pub(crate) fn add(&self, records: u64, store: &str, reason: &'static str) {
        let total = self
            .total
            .fetch_add(records, Ordering::Relaxed)
            .saturating_add(records);
        let now_ms = u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last_ms = self.last_warning_ms.load(Ordering::Relaxed);
        let interval_ms = u64::try_from(WARNING_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        let due = last_ms == u64::MAX || now_ms.saturating_sub(last_ms) >= interval_ms;
        if due
            && self
                .last_warning_ms
                .compare_exchange(last_ms, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(
                store = %store,
                audit.lost_total = total,
                reason,
                "audit records lost"
            );
        }
    }
}
