//! Counters exported at `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::export::{ExportCounts, Exporter};

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
    /// Span export, whose counts are rendered when it is set.
    exporter: OnceLock<Arc<Exporter>>,
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

    /// Sets the span exporter whose counts [`Metrics::render`] adds. Only
    /// the first call takes effect.
    pub fn set_exporter(&self, exporter: Arc<Exporter>) {
        let _ = self.exporter.set(exporter);
    }

    /// Returns the span exporter, if one was set.
    pub fn exporter(&self) -> Option<&Arc<Exporter>> {
        self.exporter.get()
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
        if let Some(exporter) = self.exporter.get() {
            render_export(&mut out, exporter);
        }
        out
    }
}

/// Renders the span export counts of each configured destination.
fn render_export(out: &mut String, exporter: &Exporter) {
    let spans = [
        ("otlp", exporter.otlp_counts()),
        ("jsonl", exporter.jsonl_counts()),
    ];
    let _ = writeln!(
        out,
        "# HELP warden_export_spans_total Audit records exported as spans (OTLP) or lines (JSON lines), by outcome."
    );
    let _ = writeln!(out, "# TYPE warden_export_spans_total counter");
    for (name, counts) in spans {
        if let Some(counts) = counts {
            write_counts(out, "warden_export_spans_total", name, counts);
        }
    }
    if let Some(counts) = exporter.jsonl_checkpoint_counts() {
        let _ = writeln!(
            out,
            "# HELP warden_export_checkpoints_total Audit checkpoints exported as lines, by outcome."
        );
        let _ = writeln!(out, "# TYPE warden_export_checkpoints_total counter");
        write_counts(out, "warden_export_checkpoints_total", "jsonl", counts);
    }
}

fn write_counts(out: &mut String, metric: &str, exporter: &str, counts: ExportCounts) {
    for (outcome, value) in [
        ("sent", counts.sent),
        ("dropped", counts.dropped),
        ("failed", counts.failed),
    ] {
        let _ = writeln!(
            out,
            "{metric}{{exporter=\"{exporter}\",outcome=\"{outcome}\"}} {value}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_without_exporter_has_no_export_lines() {
        let text = Metrics::default().render(0);
        assert!(!text.contains("warden_export"), "{text}");
        assert!(text.contains("warden_audit_dropped_total 0"), "{text}");
    }

    #[tokio::test]
    async fn render_adds_counts_of_configured_destinations() {
        let directory =
            std::env::temp_dir().join(format!("warden-metrics-{}", uuid::Uuid::new_v4()));
        let config = warden_config::ExportConfig {
            jsonl_path: Some(directory.join("export.jsonl")),
            ..warden_config::ExportConfig::default()
        };
        let exporter = Exporter::start(&config)
            .expect("exporter starts")
            .expect("a destination is configured");
        let metrics = Metrics::default();
        metrics.set_exporter(Arc::clone(&exporter));
        let text = metrics.render(0);
        exporter.shutdown().await;
        let _ = std::fs::remove_dir_all(&directory);

        for outcome in ["sent", "dropped", "failed"] {
            let line =
                format!("warden_export_spans_total{{exporter=\"jsonl\",outcome=\"{outcome}\"}} 0");
            assert!(text.contains(&line), "{line} missing from {text}");
            let line = format!(
                "warden_export_checkpoints_total{{exporter=\"jsonl\",outcome=\"{outcome}\"}} 0"
            );
            assert!(text.contains(&line), "{line} missing from {text}");
        }
        assert!(!text.contains("exporter=\"otlp\""), "{text}");
        assert!(
            text.contains("# TYPE warden_export_spans_total counter"),
            "{text}"
        );
    }
}
