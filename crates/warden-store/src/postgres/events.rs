//! Store events across replicas with PostgreSQL `LISTEN`/`NOTIFY`.
//!
//! A revocation or an approval decision sends a notification on
//! [`CHANNEL`] inside its transaction, so PostgreSQL delivers it to every
//! listening connection when, and only when, the change commits. Each
//! store runs one listener task that turns notifications into
//! [`StoreEvent`]s on a broadcast channel.
//!
//! Notifications sent while a listener's connection is down are lost. When
//! the listener loses its connection it publishes [`StoreEvent::Resync`],
//! so subscribers drop what they cached, and it reconnects with backoff.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::{PgListener, PgPool};
use sqlx::{Postgres, Transaction};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::StoreEvent;

/// The notification channel of Warden's store events.
pub(super) const CHANNEL: &str = "warden_events";

/// Maximum payload bytes per notification. PostgreSQL rejects payloads of
/// 8000 bytes or more, so a long list of revoked ids is split.
const MAX_PAYLOAD_BYTES: usize = 7000;

/// Maximum wait between two reconnection attempts of the listener.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// Announces revoked tasks in `transaction`; sends nothing for no ids.
pub(super) async fn notify_revoked(
    transaction: &mut Transaction<'_, Postgres>,
    task_ids: &[String],
    revoked_at: i64,
) -> Result<(), sqlx::Error> {
    for chunk in revoked_payloads(task_ids, revoked_at) {
        notify(transaction, &chunk).await?;
    }
    Ok(())
}

/// Announces a decided approval in `transaction`.
pub(super) async fn notify_decided(
    transaction: &mut Transaction<'_, Postgres>,
    approval_id: &str,
) -> Result<(), sqlx::Error> {
    let payload = json!({ "approval_decided": approval_id }).to_string();
    if payload.len() > MAX_PAYLOAD_BYTES {
        // An id this long cannot be announced; waiting calls find the
        // decision when they poll.
        return notify(transaction, &json!({ "resync": true }).to_string()).await;
    }
    notify(transaction, &payload).await
}

/// Listens on [`CHANNEL`] and starts the task that publishes events on
/// `sender` until it is aborted. Fails when the first `LISTEN` fails.
pub(super) async fn start_listener(
    pool: PgPool,
    sender: broadcast::Sender<StoreEvent>,
    store: String,
) -> Result<JoinHandle<()>, sqlx::Error> {
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(tokio::spawn(async move {
        run(listener, sender, store).await;
    }))
}

async fn run(mut listener: PgListener, sender: broadcast::Sender<StoreEvent>, store: String) {
    let mut delay = Duration::from_millis(50);
    let mut connected = true;
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                if !connected {
                    info!(store = %store, "store event listener reconnected");
                    connected = true;
                    delay = Duration::from_millis(50);
                }
                match parse(notification.payload()) {
                    // No subscriber is no error.
                    Some(event) => drop(sender.send(event)),
                    None => debug!(store = %store, "ignoring an unknown store notification"),
                }
            }
            Ok(None) => {
                warn!(store = %store, "store event listener lost its connection; reconnecting");
                connected = false;
                sender.send(StoreEvent::Resync).ok();
            }
            Err(error) => {
                if connected {
                    warn!(store = %store, %error, "store event listener cannot reach the database; retrying");
                    connected = false;
                }
                sender.send(StoreEvent::Resync).ok();
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
            }
        }
    }
}

async fn notify(
    transaction: &mut Transaction<'_, Postgres>,
    payload: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

/// Splits revoked ids into payloads of at most [`MAX_PAYLOAD_BYTES`]; an id
/// that does not fit alone becomes a resync payload.
fn revoked_payloads(task_ids: &[String], revoked_at: i64) -> Vec<String> {
    let payload = |ids: &[&String]| json!({ "task_revoked": ids, "revoked_at": revoked_at });
    let mut payloads = Vec::new();
    let mut chunk: Vec<&String> = Vec::new();
    for id in task_ids {
        chunk.push(id);
        if payload(&chunk).to_string().len() > MAX_PAYLOAD_BYTES {
            chunk.pop();
            if !chunk.is_empty() {
                payloads.push(payload(&chunk).to_string());
            }
            chunk = vec![id];
            if payload(&chunk).to_string().len() > MAX_PAYLOAD_BYTES {
                payloads.push(json!({ "resync": true }).to_string());
                chunk.clear();
            }
        }
    }
    if !chunk.is_empty() {
        payloads.push(payload(&chunk).to_string());
    }
    payloads
}

/// Parses a notification payload; `None` when it is not one of Warden's.
fn parse(payload: &str) -> Option<StoreEvent> {
    let value: Value = serde_json::from_str(payload).ok()?;
    if let Some(ids) = value.get("task_revoked") {
        let task_ids = ids
            .as_array()?
            .iter()
            .map(|id| id.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        let revoked_at = value.get("revoked_at")?.as_i64()?;
        return Some(StoreEvent::TaskRevoked {
            task_ids,
            revoked_at,
        });
    }
    if let Some(id) = value.get("approval_decided") {
        return Some(StoreEvent::ApprovalDecided {
            approval_id: id.as_str()?.to_owned(),
        });
    }
    if value.get("resync").is_some() {
        return Some(StoreEvent::Resync);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_payloads_round_trip() {
        let ids = vec!["a".to_owned(), "b".to_owned()];

        let payloads = revoked_payloads(&ids, 42);

        assert_eq!(payloads.len(), 1);
        assert_eq!(
            parse(&payloads[0]),
            Some(StoreEvent::TaskRevoked {
                task_ids: ids,
                revoked_at: 42
            })
        );
    }

    #[test]
    fn revoked_payloads_split_long_lists() {
        let ids: Vec<String> = (0..1000)
            .map(|i| format!("task-{i:05}-{}", "x".repeat(20)))
            .collect();

        let payloads = revoked_payloads(&ids, 7);

        assert!(payloads.len() > 1, "{} payloads", payloads.len());
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD_BYTES));
        let parsed: Vec<String> = payloads
            .iter()
            .filter_map(|p| parse(p))
            .flat_map(|event| match event {
                StoreEvent::TaskRevoked { task_ids, .. } => task_ids,
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(parsed, ids);
    }

    #[test]
    fn revoked_payload_of_huge_id_is_resync() {
        let ids = vec!["x".repeat(MAX_PAYLOAD_BYTES)];

        let payloads = revoked_payloads(&ids, 7);

        assert_eq!(parse(&payloads[0]), Some(StoreEvent::Resync));
    }

    #[test]
    fn parse_ignores_foreign_payloads() {
        assert_eq!(parse("hello"), None);
        assert_eq!(parse("{\"other\": 1}"), None);
    }

    #[test]
    fn parse_reads_decided_approval() {
        assert_eq!(
            parse("{\"approval_decided\": \"ap-1\"}"),
            Some(StoreEvent::ApprovalDecided {
                approval_id: "ap-1".into()
            })
        );
    }
}
