//! Streaming answers: the provider's server-sent events go to the agent
//! line by line, scrubbed of the provider's key, while Warden reads usage
//! and tool calls from them and records the call when the stream ends.

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use serde_json::Value;

use super::wire::StreamReader;
use super::{Finished, MAX_LINE_BYTES};
use crate::outbound::describe_error;

/// Streams the provider's events to the agent line by line, removing the
/// provider's key from each line, and records the call when the stream
/// ends or the agent goes away.
pub(super) fn stream_body(
    response: reqwest::Response,
    secret: Option<String>,
    finished: Finished,
) -> Body {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let kind = finished.kind;
    let status = response.status().as_u16();
    tokio::spawn(async move {
        let secrets: Vec<String> = secret.into_iter().collect();
        let mut reader = StreamReader::new(kind);
        let mut upstream = response.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        let mut assembled = AssembledText::new(&secrets);
        let mut error = None;
        // After the agent leaves, the rest is still read (not sent) so the
        // usage at the end of the stream counts against the budget.
        let mut agent_gone = false;
        while let Some(chunk) = upstream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(failure) => {
                    error = Some(format!("the stream broke: {}", describe_error(&failure)));
                    break;
                }
            };
            pending.extend_from_slice(&chunk);
            let complete = match pending.iter().rposition(|b| *b == b'\n') {
                Some(end) => end + 1,
                None if pending.len() > MAX_LINE_BYTES => pending.len(),
                None => continue,
            };
            let lines: Vec<u8> = pending.drain(..complete).collect();
            for line in lines.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                reader.line(line);
                assembled.line(line);
            }
            if agent_gone {
                continue;
            }
            // A key spread over several events is caught once the text
            // assembled so far contains it; the stream ends before the
            // event that completes it.
            if assembled.leaked() {
                error = Some(
                    "the provider's answer spelled out its API key; Warden cut the stream"
                        .to_owned(),
                );
                tracing::error!(task.id = %finished.claims.task_id, provider = %finished.provider_name, "model answer contained the provider key; stream cut");
                agent_gone = true;
                continue;
            }
            let (out, _) = finished.state.redact(Bytes::from(lines), &secrets);
            if sender.send(Ok(out)).await.is_err() {
                error = Some("the agent closed the stream".to_owned());
                agent_gone = true;
            }
        }
        if !pending.is_empty() {
            reader.line(&pending);
            assembled.line(&pending);
            if !agent_gone && !assembled.leaked() {
                let (out, _) = finished.state.redact(Bytes::from(pending), &secrets);
                // The agent may be gone; the record is written either way.
                sender.send(Ok(out)).await.ok();
            }
        }
        drop(sender);
        let summary = reader.finish();
        let error =
            error.or_else(|| (status >= 400).then(|| format!("provider answered {status}")));
        finished
            .record(Some(status), summary, error.as_deref())
            .await;
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
}

/// The decoded text of a stream's events, kept as long as needed to find
/// a secret spread over several of them.
struct AssembledText {
    secrets: Vec<String>,
    tail: String,
    keep: usize,
    leaked: bool,
}

impl AssembledText {
    fn new(secrets: &[String]) -> AssembledText {
        let keep = secrets.iter().map(String::len).max().unwrap_or(0) * 2;
        AssembledText {
            secrets: secrets.to_vec(),
            tail: String::new(),
            keep,
            leaked: false,
        }
    }

    /// Adds the strings of one `data:` line's JSON, as a client decodes them.
    fn line(&mut self, line: &[u8]) {
        if self.secrets.is_empty() || self.leaked {
            return;
        }
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let Ok(event) = serde_json::from_slice::<Value>(data.trim_ascii()) else {
            return;
        };
        let mut strings = Vec::new();
        collect_strings(&event, &mut strings);
        for text in strings {
            self.tail.push_str(text);
            if self
                .secrets
                .iter()
                .any(|secret| self.tail.contains(secret.as_str()))
            {
                self.leaked = true;
                return;
            }
        }
        if self.tail.len() > self.keep {
            let mut cut = self.tail.len() - self.keep;
            while !self.tail.is_char_boundary(cut) {
                cut += 1;
            }
            self.tail.drain(..cut);
        }
    }

    fn leaked(&self) -> bool {
        self.leaked
    }
}

fn collect_strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(text) => out.push(text),
        Value::Array(items) => items.iter().for_each(|item| collect_strings(item, out)),
        Value::Object(members) => members
            .values()
            .for_each(|member| collect_strings(member, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn assembled_text_finds_a_key_spread_over_events() {
        let secrets = vec!["sk-secret-0123456789".to_owned()];
        let mut assembled = AssembledText::new(&secrets);
        for piece in ["sk-sec", "ret-01234", "56789"] {
            assert!(!assembled.leaked());
            let line = format!(
                "data: {}",
                json!({"choices": [{"delta": {"content": piece}}]})
            );
            assembled.line(line.as_bytes());
        }
        assert!(assembled.leaked());
    }

    #[test]
    fn assembled_text_reads_escaped_spellings() {
        let secrets = vec!["sk-secret-0123456789".to_owned()];
        let mut assembled = AssembledText::new(&secrets);
        assembled.line(br#"data: {"content": "sk-secret-0123456789"}"#);
        assert!(assembled.leaked());
    }
}
