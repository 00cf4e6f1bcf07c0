//! Signed checkpoints of the chain's head, and counters per scope.

use warden_store::{Checkpoint, Store, StoreError};

use crate::fixtures::{TRACE_A, TRACE_B, all_records, append_and_flush};
use crate::harness::Harness;

/// Builds a checkpoint of the record at `seq`. Its signature is a
/// placeholder, because the store does not check signatures.
async fn checkpoint_of(store: &dyn Store, seq: i64) -> Checkpoint {
    let records = all_records(store).await;
    let stored = records
        .iter()
        .find(|record| record.seq == seq)
        .expect("record exists");
    Checkpoint {
        seq,
        hash: stored.hash.clone(),
        created_at: 1_000 + seq,
        signature: format!("header.payload.signature-{seq}"),
    }
}

pub async fn checkpoints_round_trip_in_seq_order(harness: &mut Harness) {
    let store = harness.store.as_ref();
    assert!(store.checkpoints().await.expect("load").is_empty());
    append_and_flush(store, 6).await;
    let late = checkpoint_of(store, 5).await;
    let early = checkpoint_of(store, 2).await;

    store.insert_checkpoint(&late).await.expect("insert late");
    store.insert_checkpoint(&early).await.expect("insert early");

    let loaded = store.checkpoints().await.expect("load checkpoints");
    assert_eq!(loaded, [early, late]);
}

pub async fn insert_checkpoint_keeps_first_of_same_seq(harness: &mut Harness) {
    let store = harness.store.as_ref();
    append_and_flush(store, 3).await;
    let first = checkpoint_of(store, 3).await;
    let mut second = first.clone();
    second.created_at += 60;
    second.signature = "another.signature.value".into();

    store.insert_checkpoint(&first).await.expect("insert first");
    store
        .insert_checkpoint(&second)
        .await
        .expect("second insert is no error");

    assert_eq!(store.checkpoints().await.expect("load"), [first]);
}

pub async fn insert_checkpoint_rejects_unknown_seq_and_wrong_hash(harness: &mut Harness) {
    let store = harness.store.as_ref();
    append_and_flush(store, 3).await;
    let mut beyond = checkpoint_of(store, 3).await;
    beyond.seq = 4;
    let mut wrong = checkpoint_of(store, 2).await;
    wrong.hash = "f".repeat(64);

    let beyond_error = store
        .insert_checkpoint(&beyond)
        .await
        .expect_err("checkpoint beyond the head rejected");
    let wrong_error = store
        .insert_checkpoint(&wrong)
        .await
        .expect_err("checkpoint with another hash rejected");

    assert!(
        matches!(beyond_error, StoreError::InvalidCheckpoint { seq: 4, .. }),
        "{beyond_error}"
    );
    assert!(
        matches!(wrong_error, StoreError::InvalidCheckpoint { seq: 2, .. }),
        "{wrong_error}"
    );
    assert!(store.checkpoints().await.expect("load").is_empty());
}

pub async fn add_counters_start_at_zero_and_return_scope(harness: &mut Harness) {
    let store = harness.store.as_ref();
    assert!(store.counters(TRACE_A).await.expect("load").is_empty());

    let first = store
        .add_counters(TRACE_A, &[("model.calls", 1), ("model.tokens", 120)])
        .await
        .expect("first addition");
    let second = store
        .add_counters(TRACE_A, &[("model.tokens", 30)])
        .await
        .expect("second addition");
    let unchanged = store.add_counters(TRACE_A, &[]).await.expect("add nothing");

    assert_eq!(first.get("model.calls"), Some(&1));
    assert_eq!(first.get("model.tokens"), Some(&120));
    assert_eq!(second.get("model.calls"), Some(&1));
    assert_eq!(second.get("model.tokens"), Some(&150));
    assert_eq!(second.len(), 2);
    assert_eq!(unchanged, second);
}

pub async fn add_counters_applies_repeated_name_twice(harness: &mut Harness) {
    let counters = harness
        .store
        .add_counters(TRACE_A, &[("model.calls", 1), ("a", 7), ("model.calls", 2)])
        .await
        .expect("add");

    assert_eq!(counters.get("model.calls"), Some(&3));
    assert_eq!(counters.get("a"), Some(&7));
}

pub async fn add_counters_keeps_scopes_apart(harness: &mut Harness) {
    let store = harness.store.as_ref();
    store
        .add_counters(TRACE_A, &[("model.calls", 5)])
        .await
        .expect("add to scope a");

    let other = store
        .add_counters(TRACE_B, &[("model.calls", 1)])
        .await
        .expect("add to scope b");

    assert_eq!(other.get("model.calls"), Some(&1));
    let scope_a = store.counters(TRACE_A).await.expect("load");
    assert_eq!(scope_a.get("model.calls"), Some(&5));
}

pub async fn add_counters_saturates_at_i64_bounds(harness: &mut Harness) {
    let store = harness.store.as_ref();
    store
        .add_counters(TRACE_A, &[("up", i64::MAX - 1), ("down", i64::MIN + 1)])
        .await
        .expect("add near bounds");

    let counters = store
        .add_counters(TRACE_A, &[("up", 10), ("down", -10)])
        .await
        .expect("add beyond bounds");

    assert_eq!(counters.get("up"), Some(&i64::MAX));
    assert_eq!(counters.get("down"), Some(&i64::MIN));
}

pub async fn tool_pins_round_trip_and_replace(harness: &mut Harness) {
    let store = harness.store.as_ref();
    assert!(store.tool_pins().await.expect("load").is_empty());

    let mut pin = warden_store::ToolPin {
        tool: "fs__read_file".into(),
        hash: Some("a".repeat(64)),
        definition: Some(
            serde_json::json!({"name": "read_file", "description": "Reads \u{200B}."}),
        ),
        accepted_at: Some(100),
        accepted_by: Some("first use".into()),
        pending_hash: None,
        pending_definition: None,
        pending_reason: None,
        seen_at: 100,
    };
    store.save_tool_pin(&pin).await.expect("save");
    pin.pending_hash = Some("b".repeat(64));
    pin.pending_definition = Some(serde_json::json!({"name": "read_file", "n": 1.5}));
    pin.pending_reason = Some("the definition changed".into());
    pin.seen_at = 200;
    store.save_tool_pin(&pin).await.expect("replace");
    let other = warden_store::ToolPin {
        tool: "a__b".into(),
        hash: None,
        definition: None,
        accepted_at: None,
        accepted_by: None,
        ..pin.clone()
    };
    store.save_tool_pin(&other).await.expect("save another");

    assert_eq!(store.tool_pins().await.expect("load"), vec![other, pin]);
}
