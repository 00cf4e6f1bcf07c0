//! The audit hash chain.
//!
//! Each stored record carries `prev_hash`, the hash of the record before
//! it, and `hash`, computed by [`record_hash`] as
//! `sha256_hex(prev_hash + "\n" + canonical JSON of {seq, record fields})`.
//! The first record links to [`GENESIS_HASH`]. Changing, removing, adding
//! or moving a record therefore breaks the chain at that record or at the
//! one after it. [`verify_chain`] names the record where the check fails,
//! and [`first_bad_seq`] finds the record that was actually changed.

use serde_json::{Map, Value};
use warden_core::json::canonical;
use warden_core::sha256_hex;

use crate::{AuditRecord, ChainError, NewAuditRecord};

/// The `prev_hash` of the first audit record: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Computes the hash of the record stored at `seq` after a record whose
/// hash is `prev_hash`.
///
/// The hashed JSON object has the keys `seq` and every field of
/// [`NewAuditRecord`], with `null` for absent optional fields, exactly as
/// serde serialises an [`AuditRecord`] without `prev_hash` and `hash`.
pub fn record_hash(prev_hash: &str, seq: i64, record: &NewAuditRecord) -> String {
    let mut input = String::with_capacity(prev_hash.len() + 512);
    input.push_str(prev_hash);
    input.push('\n');
    input.push_str(&canonical(&hashed_fields(seq, record)));
    sha256_hex(input.as_bytes())
}

/// Verifies the hash chain; returns the seq of the first bad record, if any.
///
/// `records` must be consecutive and in seq order, as
/// [`Store::audit_range`](crate::Store::audit_range) returns them.
/// `expected_prev` is the hash of the record before the first one, or
/// [`GENESIS_HASH`] when the slice starts the log. With [`GENESIS_HASH`]
/// the first record must have seq 1.
///
/// NOTE: the hash is unkeyed, so the chain detects changes made without
/// recomputing it, but a writer with access to the database can rebuild a
/// consistent chain, and removing the newest records leaves a valid but
/// shorter chain. Signed checkpoints of the head ([`crate::Checkpoint`]),
/// or a copy of the head exported elsewhere (OTLP, JSON lines), catch both.
pub fn verify_chain(records: &[AuditRecord], expected_prev: &str) -> Result<(), ChainError> {
    let mut prev_hash = expected_prev.to_owned();
    let mut expected_seq = (expected_prev == GENESIS_HASH).then_some(1);

    for stored in records {
        if let Some(expected) = expected_seq
            && stored.seq != expected
        {
            return Err(ChainError::Sequence {
                seq: stored.seq,
                expected,
            });
        }
        if stored.prev_hash != prev_hash {
            return Err(ChainError::Link {
                seq: stored.seq,
                expected: prev_hash,
                found: stored.prev_hash.clone(),
            });
        }
        let computed = record_hash(&prev_hash, stored.seq, &stored.record);
        if computed != stored.hash {
            return Err(ChainError::Hash {
                seq: stored.seq,
                stored: stored.hash.clone(),
                computed,
            });
        }
        prev_hash.clone_from(&stored.hash);
        expected_seq = stored.seq.checked_add(1);
    }
    Ok(())
}

/// Returns the seq of the first record that was changed, removed, inserted
/// or moved, given the error of [`verify_chain`] and the record it names.
///
/// - A seq gap names the missing seq.
/// - A content change names the record itself.
/// - A broken link names the record before it when the record still
///   hashes correctly from its own `prev_hash` at its seq, or at the seq
///   before (it was pushed up one place by an inserted record): then the
///   record itself is as it was written, and its predecessor is new or
///   changed. Otherwise the record itself was changed or moved.
pub fn first_bad_seq(error: &ChainError, record: &AuditRecord) -> i64 {
    match error {
        ChainError::Sequence { expected, .. } => *expected,
        ChainError::Hash { seq, .. } => *seq,
        ChainError::Link { seq, .. } => {
            let hashes_at =
                |at: i64| record_hash(&record.prev_hash, at, &record.record) == record.hash;
            let predecessor = seq - 1;
            if predecessor >= 1 && (hashes_at(*seq) || hashes_at(predecessor)) {
                predecessor
            } else {
                *seq
            }
        }
    }
}

/// Builds the JSON object that [`record_hash`] hashes. It is built by hand,
/// not through serde, so a serde attribute added later cannot silently
/// change the hashes of records already stored.
fn hashed_fields(seq: i64, record: &NewAuditRecord) -> Value {
    let optional = |value: &Option<String>| value.clone().map_or(Value::Null, Value::String);
    let policy_ids = record
        .policy_ids
        .iter()
        .cloned()
        .map(Value::String)
        .collect();
    let decision = record
        .decision
        .map_or(Value::Null, |decision| decision.as_str().into());

    let mut fields = Map::new();
    fields.insert("seq".into(), seq.into());
    fields.insert("time_us".into(), record.time_us.into());
    fields.insert("trace_id".into(), record.trace_id.clone().into());
    fields.insert("span_id".into(), record.span_id.clone().into());
    fields.insert("parent_span_id".into(), optional(&record.parent_span_id));
    fields.insert("task_id".into(), record.task_id.clone().into());
    fields.insert("agent".into(), record.agent.clone().into());
    fields.insert("user".into(), record.user.clone().into());
    fields.insert("kind".into(), record.kind.clone().into());
    fields.insert("target".into(), optional(&record.target));
    fields.insert("decision".into(), decision);
    fields.insert("policy_ids".into(), Value::Array(policy_ids));
    fields.insert("reason".into(), optional(&record.reason));
    fields.insert("detail".into(), record.detail.clone());
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use warden_core::Decision;

    use super::*;

    fn sample(index: i64) -> NewAuditRecord {
        NewAuditRecord {
            time_us: 1_700_000_000_000_000 + index,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: format!("{index:016x}"),
            parent_span_id: Some("00f067aa0ba902b7".into()),
            task_id: "task-1".into(),
            agent: "spiffe://acme.test/agent/support-bot".into(),
            user: "alice".into(),
            kind: "tool.decision".into(),
            target: Some("fs__read_file".into()),
            decision: Some(if index % 2 == 0 {
                Decision::Allow
            } else {
                Decision::Deny
            }),
            policy_ids: vec!["default-deny".into()],
            reason: None,
            detail: json!({"arguments_sha256": "ab", "duration_ms": 0.125, "index": index}),
        }
    }

    fn chain(length: i64) -> Vec<AuditRecord> {
        let mut prev_hash = GENESIS_HASH.to_owned();
        (1..=length)
            .map(|seq| {
                let record = sample(seq);
                let hash = record_hash(&prev_hash, seq, &record);
                let stored = AuditRecord {
                    seq,
                    record,
                    prev_hash: prev_hash.clone(),
                    hash: hash.clone(),
                };
                prev_hash = hash;
                stored
            })
            .collect()
    }

    #[test]
    fn record_hash_covers_serde_form() {
        let stored = &chain(1)[0];
        let mut serialized = serde_json::to_value(stored).expect("serialize record");
        let object = serialized.as_object_mut().expect("record is an object");
        object.remove("prev_hash");
        object.remove("hash");

        assert_eq!(serialized, hashed_fields(stored.seq, &stored.record));
    }

    #[test]
    fn record_hash_depends_on_prev_hash_and_seq() {
        let record = sample(1);
        let base = record_hash(GENESIS_HASH, 1, &record);

        assert_eq!(base.len(), 64);
        assert_ne!(base, record_hash(&"1".repeat(64), 1, &record));
        assert_ne!(base, record_hash(GENESIS_HASH, 2, &record));
    }

    #[test]
    fn verify_chain_accepts_valid_chain() {
        assert_eq!(verify_chain(&chain(5), GENESIS_HASH), Ok(()));
    }

    #[test]
    fn verify_chain_accepts_empty_slice() {
        assert_eq!(verify_chain(&[], GENESIS_HASH), Ok(()));
    }

    #[test]
    fn verify_chain_accepts_later_page() {
        let records = chain(6);
        let (first, second) = records.split_at(3);

        assert_eq!(verify_chain(second, &first[2].hash), Ok(()));
    }

    #[test]
    fn verify_chain_detects_edit() {
        let mut records = chain(5);
        records[2].record.decision = Some(Decision::Allow);
        records[2].record.reason = Some("edited".into());

        let error = verify_chain(&records, GENESIS_HASH).expect_err("edit detected");
        assert!(matches!(error, ChainError::Hash { .. }), "{error}");
        assert_eq!(error.seq(), 3);
    }

    #[test]
    fn verify_chain_detects_rehashed_edit_at_next_record() {
        let mut records = chain(5);
        records[2].record.target = Some("fs__write_file".into());
        records[2].hash = record_hash(&records[2].prev_hash, 3, &records[2].record);

        let error = verify_chain(&records, GENESIS_HASH).expect_err("edit detected");
        assert!(matches!(error, ChainError::Link { .. }), "{error}");
        assert_eq!(error.seq(), 4);
        assert_eq!(first_bad_seq(&error, &records[3]), 3);
    }

    #[test]
    fn verify_chain_detects_delete() {
        let mut records = chain(5);
        records.remove(1);

        let error = verify_chain(&records, GENESIS_HASH).expect_err("delete detected");
        assert_eq!(
            error,
            ChainError::Sequence {
                seq: 3,
                expected: 2
            }
        );
        assert_eq!(first_bad_seq(&error, &records[1]), 2);
    }

    #[test]
    fn verify_chain_detects_delete_of_first() {
        let mut records = chain(3);
        records.remove(0);

        let error = verify_chain(&records, GENESIS_HASH).expect_err("delete detected");
        assert_eq!(error.seq(), 2);
    }

    #[test]
    fn verify_chain_detects_insert() {
        let mut records = chain(4);
        let forged_record = sample(99);
        let forged = AuditRecord {
            seq: 3,
            hash: record_hash(&records[1].hash, 3, &forged_record),
            prev_hash: records[1].hash.clone(),
            record: forged_record,
        };
        records.insert(2, forged);
        for (index, stored) in records.iter_mut().enumerate().skip(3) {
            stored.seq = i64::try_from(index).expect("small index") + 1;
        }

        let error = verify_chain(&records, GENESIS_HASH).expect_err("insert detected");
        assert!(matches!(error, ChainError::Link { .. }), "{error}");
        assert_eq!(error.seq(), 4);
        assert_eq!(first_bad_seq(&error, &records[3]), 3);
    }

    #[test]
    fn verify_chain_detects_reorder() {
        let mut records = chain(5);
        records.swap(1, 2);
        records[1].seq = 2;
        records[2].seq = 3;

        let error = verify_chain(&records, GENESIS_HASH).expect_err("reorder detected");
        assert!(matches!(error, ChainError::Link { .. }), "{error}");
        assert_eq!(error.seq(), 2);
        assert_eq!(first_bad_seq(&error, &records[1]), 2);
    }

    #[test]
    fn first_bad_seq_of_edit_is_record() {
        let mut records = chain(4);
        records[1].record.user = "mallory".into();

        let error = verify_chain(&records, GENESIS_HASH).expect_err("edit detected");

        assert_eq!(first_bad_seq(&error, &records[1]), 2);
    }

    #[test]
    fn first_bad_seq_of_renumbered_delete_is_gap() {
        let mut records = chain(5);
        records.remove(2);
        for stored in records.iter_mut().skip(2) {
            stored.seq -= 1;
        }

        let error = verify_chain(&records, GENESIS_HASH).expect_err("delete detected");

        assert!(matches!(error, ChainError::Link { seq: 3, .. }), "{error}");
        assert_eq!(first_bad_seq(&error, &records[2]), 3);
    }

    #[test]
    fn first_bad_seq_of_edited_link_is_record() {
        let mut records = chain(4);
        records[2].prev_hash = "1".repeat(64);

        let error = verify_chain(&records, GENESIS_HASH).expect_err("edit detected");

        assert!(matches!(error, ChainError::Link { seq: 3, .. }), "{error}");
        assert_eq!(first_bad_seq(&error, &records[2]), 3);
    }

    #[test]
    fn verify_chain_detects_wrong_start() {
        let records = chain(3);

        let error = verify_chain(&records[1..], GENESIS_HASH).expect_err("wrong start");
        assert_eq!(error.seq(), 2);
    }
}
