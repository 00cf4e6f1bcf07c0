//! Two stores on the same data, as two gateway replicas share one
//! PostgreSQL database (or, for SQLite, two processes share one file).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::sync::broadcast::Receiver;
use warden_core::Decision;
use warden_store::{ApprovalRecord, GENESIS_HASH, Store, StoreError, StoreEvent, verify_chain};

use crate::fixtures::{
    CREATED, TOOL, TRACE_A, all_records, append_and_flush, insert_pending, ls, pending, record,
    task,
};
use crate::harness::Harness;

/// Time within which an event must reach another store.
const EVENT_DEADLINE: Duration = Duration::from_secs(1);

/// Waits up to [`EVENT_DEADLINE`] for an event that `wanted` accepts.
async fn wait_for_event(
    events: &mut Receiver<StoreEvent>,
    wanted: impl Fn(&StoreEvent) -> bool,
) -> StoreEvent {
    let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
    loop {
        let received = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("event arrives within one second")
            .expect("event channel open");
        if wanted(&received) {
            return received;
        }
    }
}

pub async fn task_from_one_store_usable_on_other(harness: &mut Harness) {
    let other = harness.open_another().await;
    let stored = task("task-1", None, TRACE_A, 1_000);

    harness
        .store
        .insert_task(&stored)
        .await
        .expect("insert task");

    assert_eq!(other.task("task-1").await.expect("load task"), Some(stored));
    other
        .insert_task(&task("child", Some("task-1"), TRACE_A, 1_001))
        .await
        .expect("delegate on the other store");
    other.close().await.expect("close second store");
}

pub async fn revocation_reaches_other_store(harness: &mut Harness) {
    let other = harness.open_another().await;
    let events = other.events();
    assert_eq!(
        events.is_some(),
        harness.is_postgres(),
        "only PostgreSQL publishes events"
    );
    harness
        .store
        .insert_task(&task("root", None, TRACE_A, 1_000))
        .await
        .expect("insert root");
    harness
        .store
        .insert_task(&task("child", Some("root"), TRACE_A, 1_001))
        .await
        .expect("insert child");

    harness
        .store
        .revoke_task("root", 2_000)
        .await
        .expect("revoke");

    if let Some(mut events) = events {
        let event = wait_for_event(&mut events, |event| {
            matches!(event, StoreEvent::TaskRevoked { .. })
        })
        .await;
        assert_eq!(
            event,
            StoreEvent::TaskRevoked {
                task_ids: vec!["root".into(), "child".into()],
                revoked_at: 2_000
            }
        );
    }
    let child = other.task("child").await.expect("load").expect("exists");
    assert_eq!(child.revoked_at, Some(2_000));
    other.close().await.expect("close second store");
}

pub async fn approval_decision_reaches_other_store(harness: &mut Harness) {
    let other = harness.open_another().await;
    let events = other.events();
    insert_pending(harness.store.as_ref()).await;

    harness
        .store
        .decide_approval("a-1", true, "bob@acme.test", None, CREATED + 1)
        .await
        .expect("approve");

    if let Some(mut events) = events {
        let event = wait_for_event(&mut events, |event| {
            matches!(event, StoreEvent::ApprovalDecided { .. })
        })
        .await;
        assert_eq!(
            event,
            StoreEvent::ApprovalDecided {
                approval_id: "a-1".into()
            }
        );
    }
    assert!(
        other
            .consume_approval("a-1", CREATED + 2)
            .await
            .expect("consume"),
        "the approval is usable on the other store"
    );
    other.close().await.expect("close second store");
}

/// Returns the store for request `index`: alternately the harness's and
/// `other`.
fn pick(harness: &Harness, other: &Arc<dyn Store>, index: usize) -> Arc<dyn Store> {
    if index.is_multiple_of(2) {
        Arc::clone(&harness.store)
    } else {
        Arc::clone(other)
    }
}

pub async fn concurrent_decisions_across_stores_one_wins(harness: &mut Harness) {
    let other = harness.open_another().await;
    insert_pending(harness.store.as_ref()).await;
    let count = 8;
    let barrier = Arc::new(Barrier::new(count));

    let handles: Vec<_> = (0..count)
        .map(|index| {
            let store = pick(harness, &other, index);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                let approver = format!("approver-{index}");
                store
                    .decide_approval("a-1", index % 4 < 2, &approver, None, CREATED + 1)
                    .await
            })
        })
        .collect();
    let mut outcomes: Vec<Result<ApprovalRecord, StoreError>> = Vec::new();
    for handle in handles {
        outcomes.push(handle.await.expect("decision task finished"));
    }

    let (wins, losses): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(Result::is_ok);
    assert_eq!(wins.len(), 1, "exactly one decision succeeds");
    let winner = wins
        .into_iter()
        .next()
        .expect("one winner")
        .expect("winner is Ok");
    for loss in losses {
        match loss.expect_err("loser is Err") {
            StoreError::ApprovalConflict { status, .. } => assert_eq!(status, winner.status),
            other => panic!("expected a conflict, got {other}"),
        }
    }
    let stored = other.approval("a-1", CREATED + 2).await.expect("load");
    assert_eq!(stored, Some(winner));
    other.close().await.expect("close second store");
}

pub async fn concurrent_consumes_across_stores_succeed_once(harness: &mut Harness) {
    let other = harness.open_another().await;
    insert_pending(harness.store.as_ref()).await;
    harness
        .store
        .decide_approval("a-1", true, "bob@acme.test", None, CREATED + 1)
        .await
        .expect("approve");
    let count = 8;
    let barrier = Arc::new(Barrier::new(count));

    let handles: Vec<_> = (0..count)
        .map(|index| {
            let store = pick(harness, &other, index);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                store.consume_approval("a-1", CREATED + 2).await
            })
        })
        .collect();
    let mut successes = 0;
    for handle in handles {
        if handle
            .await
            .expect("consume task finished")
            .expect("consume")
        {
            successes += 1;
        }
    }

    assert_eq!(successes, 1);
    other.close().await.expect("close second store");
}

pub async fn identical_calls_across_stores_share_one_request(harness: &mut Harness) {
    let other = harness.open_another().await;
    let count = 8;
    let barrier = Arc::new(Barrier::new(count));

    let handles: Vec<_> = (0..count)
        .map(|index| {
            let store = pick(harness, &other, index);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let candidate =
                    pending(&format!("candidate-{index}"), "task-1", TOOL, ls(), CREATED);
                barrier.wait().await;
                store.open_approval(&candidate, CREATED).await
            })
        })
        .collect();
    let mut opened = Vec::new();
    for handle in handles {
        opened.push(
            handle
                .await
                .expect("open task finished")
                .expect("open approval"),
        );
    }

    let created = opened.iter().filter(|(_, created)| *created).count();
    assert_eq!(created, 1, "one request is stored");
    let first_id = &opened[0].0.approval_id;
    assert!(
        opened
            .iter()
            .all(|(record, _)| &record.approval_id == first_id),
        "every call shares the stored request"
    );
    let listed = harness
        .store
        .approvals(None, 100, CREATED)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    other.close().await.expect("close second store");
}

pub async fn counters_across_stores_lose_nothing(harness: &mut Harness) {
    let other = harness.open_another().await;
    let scopes = 4;
    let additions = 25;

    let handles: Vec<_> = (0..scopes * additions)
        .map(|index| {
            let store = pick(harness, &other, index);
            tokio::spawn(async move {
                let scope = format!("scope-{}", index % scopes);
                store
                    .add_counters(&scope, &[("model.calls", 1), ("model.tokens", 7)])
                    .await
            })
        })
        .collect();
    for handle in handles {
        handle
            .await
            .expect("addition finished")
            .expect("add counters");
    }

    for scope in 0..scopes {
        let counters = other
            .counters(&format!("scope-{scope}"))
            .await
            .expect("load counters");
        assert_eq!(counters.get("model.calls"), Some(&25), "scope-{scope}");
        assert_eq!(counters.get("model.tokens"), Some(&175), "scope-{scope}");
    }
    other.close().await.expect("close second store");
}

pub async fn appends_from_two_stores_form_one_chain(harness: &mut Harness) {
    let other = harness.open_another().await;
    let per_store = 400;

    let writers: Vec<_> = [Arc::clone(&harness.store), Arc::clone(&other)]
        .into_iter()
        .enumerate()
        .map(|(writer, store)| {
            tokio::spawn(async move {
                for index in 0..per_store {
                    let task_id = format!("task-{writer}");
                    store.append(record(TRACE_A, &task_id, index, Some(Decision::Allow)));
                    if index % 20 == 0 {
                        // Let batches of both stores interleave.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                store.flush().await
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer finished").expect("flush");
    }

    let records = all_records(harness.store.as_ref()).await;
    let seqs: Vec<i64> = records.iter().map(|stored| stored.seq).collect();
    let expected: Vec<i64> = (1..=2 * per_store).collect();
    assert_eq!(seqs, expected, "one chain without gaps");
    assert_eq!(verify_chain(&records, GENESIS_HASH), Ok(()));
    for writer in ["task-0", "task-1"] {
        let written = records
            .iter()
            .filter(|stored| stored.record.task_id == writer)
            .count();
        assert_eq!(written, 400, "{writer}");
    }
    other.close().await.expect("close second store");
}

pub async fn read_only_store_reads_and_rejects_writes(harness: &mut Harness) {
    append_and_flush(harness.store.as_ref(), 3).await;
    harness
        .store
        .insert_task(&task("task-1", None, TRACE_A, 1_000))
        .await
        .expect("insert task");
    let reader = harness.open_read_only();

    let records = all_records(reader.as_ref()).await;
    let loaded = reader.task("task-1").await.expect("load task");
    let write = reader
        .insert_task(&task("task-2", None, TRACE_A, 1_001))
        .await
        .expect_err("write rejected");
    reader.append(record(TRACE_A, "task-1", 9, None));

    assert_eq!(records.len(), 3);
    assert!(loaded.is_some());
    assert!(matches!(write, StoreError::ReadOnly { .. }), "{write}");
    assert_eq!(reader.dropped_records(), 1);
    assert!(reader.events().is_none());
    reader.ping().await.expect("ping a read-only store");
}
