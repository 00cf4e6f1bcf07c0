//! Counters exported at `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters.
#[derive(Default)]
pub struct Metrics {
    /// Decisions that allowed a step.
    pub allowed: AtomicU64,
    /// Decisions that denied a step.
    pub denied: AtomicU64,
    /// Decisions that held a step for approval.
    pub held: AtomicU64,
    /// Tasks started.
    pub tasks_started: AtomicU64,
    /// Requests rejected for authentication.
    pub auth_failures: AtomicU64,
    /// Upstream requests that failed (timeout, crash, protocol error).
    pub upstream_errors: AtomicU64,
}

impl Metrics {
    /// Counts one decision.
    pub fn count_decision(&self, decision: warden_core::Decision) {
        let counter = match decision {
            warden_core::Decision::Allow => &self.allowed,
            warden_core::Decision::Deny => &self.denied,
            warden_core::Decision::Hold => &self.held,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the counters; `dropped_audit` comes from the store.
    pub fn render(&self, dropped_audit: u64) -> String {
        let mut out = String::new();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP warden_decisions_total Policy decisions by outcome."
        );
        let _ = writeln!(out, "# TYPE warden_decisions_total counter");
        for (label, counter) in [
            ("allow", &self.allowed),
            ("deny", &self.denied),
            ("hold", &self.held),
        ] {
            let _ = writeln!(
                out,
                "warden_decisions_total{{decision=\"{label}\"}} {}",
                load(counter)
            );
        }
        for (name, help, value) in [
            (
                "warden_tasks_started_total",
                "Tasks started.",
                load(&self.tasks_started),
            ),
            (
                "warden_auth_failures_total",
                "Requests rejected for authentication.",
                load(&self.auth_failures),
            ),
            (
                "warden_upstream_errors_total",
                "Upstream requests that failed.",
                load(&self.upstream_errors),
            ),
            (
                "warden_audit_dropped_total",
                "Audit records dropped because the writer queue was full.",
                dropped_audit,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}
