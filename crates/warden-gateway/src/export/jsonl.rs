//! JSON-lines export: appends every committed audit record and every
//! checkpoint to a file, one JSON object per line.
//!
//! A record line is `{"type":"record", ...}` with the fields of
//! [`AuditRecord`]; a checkpoint line is `{"type":"checkpoint", "seq",
//! "hash", "created_at", "signature"}`.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warden_store::{AuditRecord, Checkpoint};

use super::DestinationState;

/// One line waiting to be written.
pub(super) enum Line {
    /// A committed audit record.
    Record(Arc<AuditRecord>),
    /// A stored checkpoint of the audit chain.
    Checkpoint(Checkpoint),
}

/// The JSON-lines file, open for appending.
pub(super) struct JsonlFile {
    file: Arc<File>,
    path: PathBuf,
    /// A failed write left a line without its line break, so the next
    /// write starts with one to keep the following lines whole.
    broken_line: bool,
}

/// Counters of the JSON-lines destination.
pub(super) struct JsonlCounters {
    /// Record lines.
    pub(super) records: Arc<DestinationState>,
    /// Checkpoint lines.
    pub(super) checkpoints: Arc<DestinationState>,
}

impl JsonlFile {
    /// Opens `path` for appending, creating it with mode 0600 and its
    /// missing parent directories with mode 0700.
    pub(super) fn open(path: &Path) -> anyhow::Result<JsonlFile> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(parent).with_context(|| {
                format!(
                    "cannot create directory {} for export.jsonl_path; check its permissions or choose another path",
                    parent.display()
                )
            })?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).with_context(|| {
            format!(
                "cannot open export.jsonl_path {} for appending; check its permissions or choose another path",
                path.display()
            )
        })?;
        warn_if_shared(&file, path);
        Ok(JsonlFile {
            file: Arc::new(file),
            path: path.to_owned(),
            broken_line: false,
        })
    }

    /// Returns the file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `lines` in one write and counts each line as written or
    /// failed.
    async fn write(&mut self, lines: &[Line], counters: &JsonlCounters) {
        let mut buffer = Vec::new();
        if self.broken_line {
            buffer.push(b'\n');
        }
        // End offset in `buffer` of each line, with the line's counter.
        let mut ends = Vec::with_capacity(lines.len());
        for line in lines {
            let counter = match line {
                Line::Record(_) => &counters.records,
                Line::Checkpoint(_) => &counters.checkpoints,
            };
            let before = buffer.len();
            match encode(line, &mut buffer) {
                Ok(()) => ends.push((buffer.len(), counter)),
                Err(error) => {
                    buffer.truncate(before);
                    counter.count_failed(1);
                    counter.log_failure(&format!("cannot encode a line as JSON: {error}"));
                }
            }
        }
        if ends.is_empty() {
            return;
        }

        let file = Arc::clone(&self.file);
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = write_all(&file, &buffer);
            (buffer, outcome)
        })
        .await;
        let (buffer, (written, result)) = match outcome {
            Ok(done) => done,
            Err(error) => {
                for (_, counter) in &ends {
                    counter.count_failed(1);
                }
                counters
                    .records
                    .log_failure(&format!("the file write task ended early: {error}"));
                return;
            }
        };
        for (end, counter) in &ends {
            if *end <= written {
                counter.count_sent(1);
            } else {
                counter.count_failed(1);
            }
        }
        if let Err(error) = result {
            if written > 0 {
                self.broken_line = buffer.get(written - 1) != Some(&b'\n');
            }
            counters.records.log_failure(&format!(
                "cannot append to {}: {error}",
                self.path.display()
            ));
        } else {
            self.broken_line = false;
        }
    }
}

/// Runs the JSON-lines worker until `stop` is cancelled and the queue is
/// empty. Each batch is whatever the queue holds, up to `max_lines`, and
/// reaches the operating system before the next batch is taken.
pub(super) async fn run(
    mut queue: mpsc::Receiver<Line>,
    mut file: JsonlFile,
    counters: JsonlCounters,
    max_lines: usize,
    stop: CancellationToken,
) {
    let max_lines = max_lines.max(1);
    let mut batch = Vec::with_capacity(max_lines);
    let mut draining = false;
    loop {
        tokio::select! {
            received = queue.recv_many(&mut batch, max_lines) => {
                if received == 0 {
                    break;
                }
            }
            () = stop.cancelled(), if !draining => {
                queue.close();
                draining = true;
                continue;
            }
        }
        file.write(&batch, &counters).await;
        let records = batch
            .iter()
            .filter(|line| matches!(line, Line::Record(_)))
            .count() as u64;
        counters.records.settle(records);
        counters.checkpoints.settle(batch.len() as u64 - records);
        batch.clear();
    }
    tracing::debug!(exporter = "jsonl", "JSON-lines export stopped");
}

#[derive(Serialize)]
struct RecordLine<'a> {
    #[serde(rename = "type")]
    line_type: &'static str,
    #[serde(flatten)]
    record: &'a AuditRecord,
}

#[derive(Serialize)]
struct CheckpointLine<'a> {
    #[serde(rename = "type")]
    line_type: &'static str,
    #[serde(flatten)]
    checkpoint: &'a Checkpoint,
}

/// Appends `line` and its line break to `buffer`.
fn encode(line: &Line, buffer: &mut Vec<u8>) -> serde_json::Result<()> {
    match line {
        Line::Record(record) => serde_json::to_writer(
            &mut *buffer,
            &RecordLine {
                line_type: "record",
                record,
            },
        )?,
        Line::Checkpoint(checkpoint) => serde_json::to_writer(
            &mut *buffer,
            &CheckpointLine {
                line_type: "checkpoint",
                checkpoint,
            },
        )?,
    }
    buffer.push(b'\n');
    Ok(())
}

/// Writes all of `buffer` and returns how many bytes were written, also
/// when a write fails part way.
fn write_all(mut file: &File, buffer: &[u8]) -> (usize, std::io::Result<()>) {
    let mut written = 0;
    while written < buffer.len() {
        match file.write(&buffer[written..]) {
            Ok(0) => {
                return (
                    written,
                    Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
                );
            }
            Ok(count) => written += count,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return (written, Err(error)),
        }
    }
    (written, Ok(()))
}

/// Logs a warning when an existing file is readable or writable by other
/// users: the audit log names users, agents and tools.
fn warn_if_shared(file: &File, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(metadata) = file.metadata()
            && metadata.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", metadata.permissions().mode() & 0o777),
                "export.jsonl_path is accessible to other users; restrict it with chmod 600"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (file, path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_all_reports_bytes_written() {
        let path = std::env::temp_dir().join(format!("warden-jsonl-{}", uuid::Uuid::new_v4()));
        let file = JsonlFile::open(&path).expect("file opens");
        let (written, result) = write_all(&file.file, b"{}\n{}\n");
        assert_eq!(written, 6);
        assert!(result.is_ok());
        let text = std::fs::read_to_string(&path).expect("file reads");
        assert_eq!(text, "{}\n{}\n");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn open_rejects_directory_path() {
        let error = JsonlFile::open(&std::env::temp_dir())
            .err()
            .expect("a directory cannot be opened for appending");
        assert!(error.to_string().contains("export.jsonl_path"), "{error}");
    }
}
