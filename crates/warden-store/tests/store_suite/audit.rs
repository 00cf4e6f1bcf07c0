//! The audit log: group commit, the hash chain and its tamper evidence.

use std::sync::Arc;

use serde_json::json;
use warden_core::Decision;
use warden_store::{ChainError, GENESIS_HASH, NewAuditRecord, StoreError, verify_chain};

use crate::fixtures::{TRACE_A, TRACE_B, all_records, append_and_flush, record, task};
use crate::harness::Harness;

pub async fn append_flush_trace_in_order(harness: &mut Harness) {
    let store = &harness.store;
    let mut expected = Vec::new();
    for index in 0..10 {
        let trace_id = if index % 3 == 0 { TRACE_B } else { TRACE_A };
        let decision = [
            None,
            Some(Decision::Allow),
            Some(Decision::Deny),
            Some(Decision::Hold),
        ][usize::try_from(index % 4).expect("small index")];
        let submitted = record(trace_id, "task-1", index, decision);
        if trace_id == TRACE_A {
            expected.push(submitted.clone());
        }
        store.append(submitted);
    }
    store.flush().await.expect("flush");

    let trace = store.trace(TRACE_A).await.expect("load trace");

    let records: Vec<NewAuditRecord> = trace.iter().map(|stored| stored.record.clone()).collect();
    assert_eq!(records, expected);
    assert!(trace.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    assert_eq!(store.dropped_records(), 0);
}

pub async fn trace_unknown_id_is_empty(harness: &mut Harness) {
    append_and_flush(harness.store.as_ref(), 2).await;

    let trace = harness.store.trace(TRACE_B).await.expect("load trace");

    assert!(trace.is_empty());
}

pub async fn concurrent_appends_chain_without_gaps(harness: &mut Harness) {
    let store = Arc::clone(&harness.store);
    let producers = 8;
    let per_producer = 250;

    let handles: Vec<_> = (0..producers)
        .map(|producer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for index in 0..per_producer {
                    let task_id = format!("task-{producer}");
                    store.append(record(TRACE_A, &task_id, index, Some(Decision::Allow)));
                    if index % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("producer finished");
    }
    store.flush().await.expect("flush");

    let records = all_records(store.as_ref()).await;
    let seqs: Vec<i64> = records.iter().map(|stored| stored.seq).collect();
    let expected: Vec<i64> = (1..=producers * per_producer).collect();
    assert_eq!(seqs, expected);
    assert_eq!(verify_chain(&records, GENESIS_HASH), Ok(()));
    assert_eq!(store.dropped_records(), 0);
}

pub async fn audit_range_pages_chain_together(harness: &mut Harness) {
    let store = &harness.store;
    append_and_flush(store.as_ref(), 25).await;

    let mut after_seq = 0;
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut pages = 0;
    loop {
        let page = store.audit_range(after_seq, 10).await.expect("load page");
        let Some(last) = page.last() else { break };
        assert_eq!(verify_chain(&page, &prev_hash), Ok(()), "page {pages}");
        after_seq = last.seq;
        prev_hash = last.hash.clone();
        pages += 1;
    }

    assert_eq!(pages, 3);
    assert_eq!(after_seq, 25);
}

/// Appends five records, runs `statements` on the data behind the store
/// and returns the chain error that verification of the whole log reports.
async fn tampered_chain_error(harness: &mut Harness, statements: &str) -> ChainError {
    append_and_flush(harness.store.as_ref(), 5).await;
    harness.execute(statements).await;

    let records = all_records(harness.open_read_only().as_ref()).await;
    verify_chain(&records, GENESIS_HASH).expect_err("tampering detected")
}

pub async fn chain_detects_edited_record(harness: &mut Harness) {
    let error =
        tampered_chain_error(harness, "UPDATE audit SET decision = 'deny' WHERE seq = 3").await;

    assert!(matches!(error, ChainError::Hash { .. }), "{error}");
    assert_eq!(error.seq(), 3);
}

pub async fn chain_detects_deleted_record(harness: &mut Harness) {
    let error = tampered_chain_error(harness, "DELETE FROM audit WHERE seq = 3").await;

    assert!(
        matches!(error, ChainError::Sequence { expected: 3, .. }),
        "{error}"
    );
    assert_eq!(error.seq(), 4);
}

pub async fn chain_detects_reordered_records(harness: &mut Harness) {
    let error = tampered_chain_error(
        harness,
        "UPDATE audit SET seq = -1 WHERE seq = 2;
         UPDATE audit SET seq = 2 WHERE seq = 3;
         UPDATE audit SET seq = 3 WHERE seq = -1;",
    )
    .await;

    assert!(matches!(error, ChainError::Link { .. }), "{error}");
    assert_eq!(error.seq(), 2);
}

pub async fn reopen_continues_chain(harness: &mut Harness) {
    append_and_flush(harness.store.as_ref(), 3).await;
    harness.reopen().await;
    append_and_flush(harness.store.as_ref(), 3).await;

    let records = all_records(harness.store.as_ref()).await;

    let seqs: Vec<i64> = records.iter().map(|stored| stored.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(verify_chain(&records, GENESIS_HASH), Ok(()));
}

pub async fn traces_summary_counts_denials(harness: &mut Harness) {
    let store = &harness.store;
    for (id, parent, trace, created_at) in [
        ("task-a", None, TRACE_A, 1_000),
        ("task-a-child", Some("task-a"), TRACE_A, 1_010),
        ("task-b", None, TRACE_B, 2_000),
    ] {
        store
            .insert_task(&task(id, parent, trace, created_at))
            .await
            .expect("insert task");
    }
    let decisions = [
        (TRACE_A, "task-a", Some(Decision::Allow)),
        (TRACE_A, "task-a", Some(Decision::Deny)),
        (TRACE_A, "task-a-child", Some(Decision::Deny)),
        (TRACE_A, "task-a-child", Some(Decision::Hold)),
        (TRACE_A, "task-a", None),
        (TRACE_B, "task-b", Some(Decision::Allow)),
    ];
    for (index, (trace_id, task_id, decision)) in decisions.into_iter().enumerate() {
        let index = i64::try_from(index).expect("small index");
        store.append(record(trace_id, task_id, index, decision));
    }
    store.flush().await.expect("flush");

    let summaries = store.traces(10).await.expect("list traces");

    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0].trace_id, TRACE_B);
    assert_eq!(summaries[0].records, 1);
    assert_eq!(summaries[0].denials, 0);
    let trace_a = &summaries[1];
    assert_eq!(trace_a.task_id, "task-a");
    assert_eq!(trace_a.intent, "intent of task-a");
    assert_eq!(trace_a.started_at, 1_000);
    assert_eq!(trace_a.records, 5);
    assert_eq!(trace_a.denials, 2);
    assert_eq!(store.traces(1).await.expect("list traces").len(), 1);
}

pub async fn audit_head_is_newest_record(harness: &mut Harness) {
    let store = &harness.store;
    assert_eq!(store.audit_head().await.expect("load head"), None);
    append_and_flush(store.as_ref(), 4).await;

    let head = store.audit_head().await.expect("load head");

    let records = all_records(store.as_ref()).await;
    assert_eq!(head, Some((4, records[3].hash.clone())));
}

pub async fn close_stops_writer(harness: &mut Harness) {
    let store = &harness.store;
    store.append(record(TRACE_A, "task-1", 0, None));

    store.close().await.expect("close");
    store.append(record(TRACE_A, "task-1", 1, None));

    assert_eq!(store.dropped_records(), 1);
    assert_eq!(all_records(store.as_ref()).await.len(), 1);
    let flush = store.flush().await.expect_err("flush after close fails");
    assert!(matches!(flush, StoreError::WriterStopped { .. }), "{flush}");
    let ping = store.ping().await.expect_err("ping after close fails");
    assert!(matches!(ping, StoreError::WriterStopped { .. }), "{ping}");
    store.close().await.expect("second close");
}

pub async fn deep_detail_is_replaced(harness: &mut Harness) {
    let store = &harness.store;
    let mut deep = json!("leaf");
    for _ in 0..200 {
        deep = json!({ "nested": deep });
    }
    let mut submitted = record(TRACE_A, "task-1", 0, None);
    submitted.detail = deep;
    let mut numbers = record(TRACE_A, "task-1", 1, Some(Decision::Hold));
    numbers.detail = json!({
        "float": 1.0e-7,
        "big": u64::MAX,
        "negative": i64::MIN,
        "text": "line\nbreak\u{0}nul",
    });

    store.append(submitted);
    store.append(numbers.clone());
    store.flush().await.expect("flush");
    let records = all_records(store.as_ref()).await;

    assert_eq!(records.len(), 2);
    assert!(records[0].record.detail["error"].is_string());
    assert_eq!(records[1].record, numbers);
    assert_eq!(verify_chain(&records, GENESIS_HASH), Ok(()));
}

/// PostgreSQL text cannot hold NUL, so that backend stores U+FFFD in its
/// place, before hashing; SQLite keeps NUL. The chain verifies on both.
pub async fn nul_in_text_keeps_chain_valid(harness: &mut Harness) {
    let store = &harness.store;
    let mut submitted = record(TRACE_A, "task-1", 0, Some(Decision::Deny));
    submitted.user = "al\0ice".into();
    submitted.reason = Some("reason\0".into());

    store.append(submitted.clone());
    store.flush().await.expect("flush");
    let records = all_records(store.as_ref()).await;

    let expected_user = if harness.is_postgres() {
        "al\u{FFFD}ice"
    } else {
        "al\0ice"
    };
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].record.user, expected_user);
    assert_eq!(records[0].record.detail, submitted.detail);
    assert_eq!(verify_chain(&records, GENESIS_HASH), Ok(()));
}
