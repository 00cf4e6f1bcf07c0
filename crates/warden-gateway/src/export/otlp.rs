//! OTLP/HTTP export: batches audit records, posts them as OTLP JSON and
//! retries the failures that the OTLP specification calls retryable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warden_store::AuditRecord;

use super::DestinationState;
use super::span::{self, SpanSource};

/// Retries of one request after its first attempt.
const MAX_RETRIES: u32 = 2;
/// Delay before the first retry when the endpoint sends no `Retry-After`;
/// it doubles for the next retry.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Maximum delay honoured from a `Retry-After` header, so that a throttling
/// endpoint cannot stall export for long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Largest response body read, in bytes; the rest is ignored.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Maximum length of response text quoted in an error message, in characters.
const MAX_QUOTED_CHARS: usize = 200;

/// An OTLP/HTTP traces endpoint with its headers.
pub(super) struct OtlpClient {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    /// The endpoint without user info or query, for messages and logs.
    label: String,
    headers: HeaderMap,
    first_backoff: Duration,
}

/// Error of an export request that is not retried further.
#[derive(Debug, thiserror::Error)]
pub(super) enum ExportError {
    /// The endpoint returned an error status.
    #[error("OTLP endpoint {endpoint} returned HTTP {status}: {body}")]
    Status {
        /// The endpoint, without credentials.
        endpoint: String,
        /// The HTTP status.
        status: StatusCode,
        /// The start of the response body.
        body: String,
    },
    /// The request did not complete: no connection, a timeout or a reset.
    #[error("OTLP endpoint {endpoint} is unreachable: {source}")]
    Transport {
        /// The endpoint, without credentials.
        endpoint: String,
        /// The transport error.
        source: reqwest::Error,
    },
}

impl OtlpClient {
    /// Builds a client for `endpoint`, with each header of `headers_env`
    /// set to the value of the environment variable it names, as returned
    /// by `lookup`. Retries start after `first_backoff`.
    pub(super) fn new(
        endpoint: &str,
        headers_env: &BTreeMap<String, String>,
        timeout: Duration,
        lookup: &dyn Fn(&str) -> Option<String>,
        first_backoff: Duration,
    ) -> anyhow::Result<OtlpClient> {
        let endpoint = reqwest::Url::parse(endpoint).with_context(|| {
            format!(
                "export.otlp_endpoint {endpoint:?} is not a URL; write the full traces URL, e.g. \"http://127.0.0.1:4318/v1/traces\""
            )
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("warden/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, variable) in headers_env {
            let header = HeaderName::from_bytes(name.as_bytes()).with_context(|| {
                format!("export.otlp_headers_env: {name:?} is not a valid HTTP header name")
            })?;
            let Some(value) = lookup(variable).filter(|value| !value.is_empty()) else {
                bail!(
                    "environment variable {variable} is not set or empty, but export.otlp_headers_env takes OTLP header {name} from it; set it or remove the entry"
                );
            };
            let mut value = HeaderValue::from_str(&value).with_context(|| {
                format!(
                    "environment variable {variable} is not a valid value for OTLP header {name}; remove control characters and line breaks from it"
                )
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        // Redirects are not followed, so the headers never reach a host
        // other than the configured one.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .context("cannot build the OTLP HTTP client")?;
        Ok(OtlpClient {
            client,
            label: endpoint_label(&endpoint),
            endpoint,
            headers,
            first_backoff,
        })
    }

    /// Posts one `ExportTraceServiceRequest` body and returns the number of
    /// spans that the endpoint rejected in a partial success.
    ///
    /// HTTP 429, 502, 503 and 504 and transport errors are retried up to
    /// [`MAX_RETRIES`] times, after `Retry-After` (at most
    /// [`MAX_RETRY_AFTER`]) or an exponential backoff with jitter. Other
    /// statuses fail at once.
    pub(super) async fn export(&self, body: bytes::Bytes) -> Result<u64, ExportError> {
        let mut attempt = 0;
        loop {
            let (error, retry_after) = match self.post(body.clone()).await {
                Ok(response) if response.status().is_success() => {
                    return Ok(rejected_spans(&read_bounded(response).await));
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let text = read_bounded(response).await;
                    let error = ExportError::Status {
                        endpoint: self.label.clone(),
                        status,
                        body: quote(&text),
                    };
                    if !is_retryable(status) {
                        return Err(error);
                    }
                    (error, retry_after)
                }
                Err(source) => (
                    ExportError::Transport {
                        endpoint: self.label.clone(),
                        source,
                    },
                    None,
                ),
            };
            if attempt == MAX_RETRIES {
                return Err(error);
            }
            let delay =
                retry_after.unwrap_or_else(|| jittered(self.first_backoff * 2u32.pow(attempt)));
            attempt += 1;
            tracing::debug!(
                exporter = "otlp",
                %error,
                attempt,
                delay_ms = delay.as_millis() as u64,
                "OTLP export failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn post(&self, body: bytes::Bytes) -> Result<reqwest::Response, reqwest::Error> {
        self.client
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
    }

    /// Returns the endpoint without credentials or query.
    pub(super) fn label(&self) -> &str {
        &self.label
    }
}

/// Settings of the OTLP worker.
pub(super) struct Batching {
    /// Maximum spans per request.
    pub(super) max_spans: usize,
    /// Maximum time the first span of a batch waits for more.
    pub(super) interval: Duration,
}

/// Runs the OTLP worker until `stop` is cancelled and the queue is empty.
///
/// A batch is sent when it contains `max_spans` spans or when its first
/// span has waited `interval`. After `stop`, the queue takes no more
/// records and its contents are sent without waiting.
pub(super) async fn run(
    mut queue: mpsc::Receiver<Arc<AuditRecord>>,
    client: OtlpClient,
    source: SpanSource,
    state: Arc<DestinationState>,
    batching: Batching,
    stop: CancellationToken,
) {
    let max_spans = batching.max_spans.max(1);
    let mut batch = Vec::with_capacity(max_spans);
    let mut draining = false;
    loop {
        tokio::select! {
            received = queue.recv_many(&mut batch, max_spans) => {
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
        let deadline = tokio::time::Instant::now() + batching.interval;
        while !draining && batch.len() < max_spans {
            let room = max_spans - batch.len();
            tokio::select! {
                received = tokio::time::timeout_at(deadline, queue.recv_many(&mut batch, room)) => {
                    match received {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                () = stop.cancelled() => {
                    queue.close();
                    draining = true;
                }
            }
        }
        send_batch(&client, &source, &state, &mut batch).await;
    }
    tracing::debug!(exporter = "otlp", "OTLP export stopped");
}

/// Encodes and posts `batch`, empties it and counts the outcome.
async fn send_batch(
    client: &OtlpClient,
    source: &SpanSource,
    state: &DestinationState,
    batch: &mut Vec<Arc<AuditRecord>>,
) {
    let taken = batch.len() as u64;
    let mut spans = Vec::with_capacity(batch.len());
    let mut invalid = 0u64;
    for record in batch.drain(..) {
        match span::encode(&record) {
            Some(span) => spans.push(span),
            None => {
                invalid += 1;
                tracing::warn!(
                    exporter = "otlp",
                    audit.seq = record.seq,
                    trace.id = %record.record.trace_id,
                    span.id = %record.record.span_id,
                    "audit record has an invalid trace or span id; it is not exported"
                );
            }
        }
    }
    state.count_failed(invalid);
    let count = spans.len() as u64;
    if count > 0 {
        match serde_json::to_vec(&source.request(spans)) {
            Ok(body) => match client.export(body.into()).await {
                Ok(rejected) => {
                    state.count_sent(count.saturating_sub(rejected));
                    if rejected > 0 {
                        state.count_failed(rejected);
                        state.log_failure(&format!(
                            "{} accepted the request but rejected {rejected} spans",
                            client.label()
                        ));
                    }
                }
                Err(error) => {
                    state.count_failed(count);
                    state.log_failure(&error.to_string());
                }
            },
            Err(error) => {
                state.count_failed(count);
                state.log_failure(&format!("cannot encode spans as JSON: {error}"));
            }
        }
    }
    state.settle(taken);
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of a response body.
async fn read_bounded(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_RESPONSE_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_RESPONSE_BYTES {
            break;
        }
    }
    body
}

/// Returns `partialSuccess.rejectedSpans` of an `ExportTraceServiceResponse`,
/// or 0 when the body has none. The count is an int64, so it may come as a
/// decimal string or as a number.
fn rejected_spans(body: &[u8]) -> u64 {
    let Ok(response) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    match &response["partialSuccess"]["rejectedSpans"] {
        Value::String(text) => text.parse().unwrap_or(0),
        Value::Number(number) => number.as_u64().unwrap_or(0),
        _ => 0,
    }
}

fn is_retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// Returns a `Retry-After` delay given in seconds, capped at
/// [`MAX_RETRY_AFTER`]. An HTTP date is ignored and the backoff applies.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// Scales `delay` by a random factor between 0.5 and 1, so that replicas
/// that failed together do not retry together.
fn jittered(delay: Duration) -> Duration {
    let random = uuid::Uuid::new_v4().as_u128() as u16;
    delay.mul_f64(0.5 + f64::from(random) / f64::from(u16::MAX) / 2.0)
}

/// Returns the first [`MAX_QUOTED_CHARS`] characters of a response body.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let mut quoted: String = text.chars().take(MAX_QUOTED_CHARS).collect();
    if quoted.len() < text.len() {
        quoted.push_str("...");
    }
    quoted
}

/// Returns scheme, host, port and path of `url`, leaving out user info and
/// query, where credentials may sit.
fn endpoint_label(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_spans_reads_string_and_number() {
        assert_eq!(
            rejected_spans(br#"{"partialSuccess":{"rejectedSpans":"3"}}"#),
            3
        );
        assert_eq!(
            rejected_spans(br#"{"partialSuccess":{"rejectedSpans":4}}"#),
            4
        );
        assert_eq!(rejected_spans(b"{}"), 0);
        assert_eq!(rejected_spans(b""), 0);
        assert_eq!(rejected_spans(b"not json"), 0);
    }

    #[test]
    fn retryable_statuses_follow_otlp() {
        for code in [429, 502, 503, 504] {
            let status = StatusCode::from_u16(code).expect("valid status");
            assert!(is_retryable(status), "{code}");
        }
        for code in [400, 401, 403, 404, 413, 500] {
            let status = StatusCode::from_u16(code).expect("valid status");
            assert!(!is_retryable(status), "{code}");
        }
    }

    #[test]
    fn retry_after_is_capped() {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("3600"),
        );
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn jittered_stays_between_half_and_full() {
        for _ in 0..100 {
            let delay = jittered(Duration::from_millis(1000));
            assert!(delay >= Duration::from_millis(500), "{delay:?}");
            assert!(delay <= Duration::from_millis(1000), "{delay:?}");
        }
    }

    #[test]
    fn endpoint_label_drops_credentials() {
        let url = reqwest::Url::parse("https://user:secret@otel.example:4318/v1/traces?key=abc")
            .expect("valid URL");
        assert_eq!(endpoint_label(&url), "https://otel.example:4318/v1/traces");
    }

    #[test]
    fn new_rejects_missing_header_variable() {
        let headers = BTreeMap::from([("x-api-key".to_owned(), "OTLP_KEY".to_owned())]);
        let error = OtlpClient::new(
            "http://127.0.0.1:4318/v1/traces",
            &headers,
            Duration::from_secs(1),
            &|_| None,
            FIRST_BACKOFF,
        )
        .err()
        .expect("a missing variable is an error");
        let message = error.to_string();
        assert!(message.contains("OTLP_KEY"), "{message}");
        assert!(message.contains("x-api-key"), "{message}");
    }

    #[test]
    fn new_rejects_header_value_with_line_break() {
        let headers = BTreeMap::from([("x-api-key".to_owned(), "OTLP_KEY".to_owned())]);
        let error = OtlpClient::new(
            "http://127.0.0.1:4318/v1/traces",
            &headers,
            Duration::from_secs(1),
            &|_| Some("secret\r\nx-injected: 1".into()),
            FIRST_BACKOFF,
        )
        .err()
        .expect("a line break in a header value is an error");
        let message = format!("{error:#}");
        assert!(message.contains("OTLP_KEY"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }
}
