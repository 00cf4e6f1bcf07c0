//! Delivery of new approval requests to a webhook.
//!
//! Each request is POSTed as JSON with two headers so that a Slack or
//! ticketing bridge can check it came from Warden and is fresh:
//! `X-Warden-Timestamp` (unix seconds) and
//! `X-Warden-Signature: sha256=HEX`, the HMAC-SHA256 of
//! `TIMESTAMP + "." + BODY` under the configured key. Delivery runs on a
//! background task with a bounded queue: a failing webhook is retried with
//! exponential backoff and logged, and never delays a call.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

/// Attempts per request before it is dropped.
pub const MAX_ATTEMPTS: u32 = 5;
/// Requests queued for delivery before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 1024;

/// A webhook sender.
pub struct Webhook {
    queue: mpsc::Sender<Value>,
}

impl Webhook {
    /// Starts the delivery task. Call from inside a tokio runtime.
    pub fn start(url: String, key: Vec<u8>) -> Webhook {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(deliver(url, key, receiver, Duration::from_secs(1)));
        Webhook { queue }
    }

    /// Queues one payload; drops it with a warning when the queue is full.
    pub fn send(&self, payload: Value) {
        if self.queue.try_send(payload).is_err() {
            tracing::warn!("approval webhook queue is full; dropped one notification");
        }
    }
}

/// Returns the signature header value for `body` sent at `timestamp`.
pub fn signature(key: &[u8], timestamp: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, format!("{timestamp}.{body}").as_bytes());
    format!("sha256={}", hex::encode(tag.as_ref()))
}

async fn deliver(
    url: String,
    key: Vec<u8>,
    mut receiver: mpsc::Receiver<Value>,
    first_backoff: Duration,
) {
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook HTTP client; approval notifications are off");
            return;
        }
    };
    while let Some(payload) = receiver.recv().await {
        let body = payload.to_string();
        let approval_id = payload["approval_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut backoff = first_backoff;
        for attempt in 1..=MAX_ATTEMPTS {
            let timestamp = crate::auth::now_unix();
            let result = client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-warden-timestamp", timestamp.to_string())
                .header("x-warden-signature", signature(&key, timestamp, &body))
                .body(body.clone())
                .send()
                .await;
            let failure = match result {
                Ok(response) if response.status().is_success() => None,
                Ok(response) => Some(format!("HTTP {}", response.status().as_u16())),
                Err(error) => Some(error.to_string()),
            };
            let Some(failure) = failure else {
                tracing::debug!(approval.id = %approval_id, "approval webhook delivered");
                break;
            };
            if attempt == MAX_ATTEMPTS {
                tracing::error!(approval.id = %approval_id, error = %failure, attempts = attempt, "approval webhook failed; giving up on this notification");
                break;
            }
            tracing::warn!(approval.id = %approval_id, error = %failure, attempt, retry_in_ms = backoff.as_millis() as u64, "approval webhook failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_known_vector() {
        // HMAC-SHA256 of "1.{}" under "key", computed independently with
        // `printf '1.{}' | openssl dgst -sha256 -hmac key`.
        let value = signature(b"key", 1, "{}");
        assert_eq!(
            value,
            "sha256=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }

    #[test]
    fn signature_changes_with_timestamp() {
        assert_ne!(signature(b"key", 1, "{}"), signature(b"key", 2, "{}"));
    }
}
