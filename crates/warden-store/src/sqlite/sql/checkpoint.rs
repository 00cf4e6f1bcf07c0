//! SQL statements on the `audit_checkpoints` table and on the head of the
//! audit chain.
//!
//! A checkpoint row is stored only when the audit record at its seq exists
//! and has its hash. The check runs in the insert's transaction, so the
//! table never contains a checkpoint that contradicts the chain.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::DbError;
use crate::Checkpoint;

/// Outcome of an [`insert_checkpoint`] call that did not fail.
#[derive(Debug, PartialEq)]
pub(in crate::sqlite) enum CheckpointInsert {
    /// The checkpoint was stored.
    Inserted,
    /// A checkpoint of the same seq was stored before; nothing changed.
    Exists,
    /// No audit record has the checkpoint's seq.
    NoRecord,
    /// The audit record at the checkpoint's seq has another hash.
    HashMismatch {
        /// The hash of the stored record.
        stored: String,
    },
}

/// Returns the seq and hash of the newest audit record.
pub(in crate::sqlite) fn select_audit_head(
    conn: &Connection,
) -> Result<Option<(i64, String)>, DbError> {
    let head = conn
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(head)
}

/// Stores `checkpoint` unless its seq has one already, after checking that
/// the audit record at its seq has its hash.
pub(in crate::sqlite) fn insert_checkpoint(
    conn: &mut Connection,
    checkpoint: &Checkpoint,
) -> Result<CheckpointInsert, DbError> {
    let transaction = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let record_hash: Option<String> = transaction
        .query_row(
            "SELECT hash FROM audit WHERE seq = ?1",
            [checkpoint.seq],
            |row| row.get(0),
        )
        .optional()?;
    match record_hash {
        None => return Ok(CheckpointInsert::NoRecord),
        Some(stored) if stored != checkpoint.hash => {
            return Ok(CheckpointInsert::HashMismatch { stored });
        }
        Some(_) => {}
    }

    let inserted = transaction.execute(
        "INSERT INTO audit_checkpoints (seq, hash, created_at, signature)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (seq) DO NOTHING",
        params![
            checkpoint.seq,
            checkpoint.hash,
            checkpoint.created_at,
            checkpoint.signature
        ],
    )?;
    transaction.commit()?;
    Ok(if inserted == 1 {
        CheckpointInsert::Inserted
    } else {
        CheckpointInsert::Exists
    })
}

/// Loads every checkpoint, in seq order.
pub(in crate::sqlite) fn select_checkpoints(conn: &Connection) -> Result<Vec<Checkpoint>, DbError> {
    let checkpoints = conn
        .prepare_cached(
            "SELECT seq, hash, created_at, signature FROM audit_checkpoints ORDER BY seq",
        )?
        .query_map([], |row| {
            Ok(Checkpoint {
                seq: row.get(0)?,
                hash: row.get(1)?,
                created_at: row.get(2)?,
                signature: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(checkpoints)
}
