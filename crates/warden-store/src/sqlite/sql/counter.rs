//! SQL statements on the `counters` table: integer counters grouped by
//! scope.
//!
//! An addition reads and writes each counter inside one `IMMEDIATE`
//! transaction, which takes SQLite's write lock before the first read, so
//! concurrent additions from any connection or process are serialised and
//! none is lost.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::DbError;

/// Adds each `(name, delta)` to the counter `name` of `scope`, creating
/// missing counters at 0, and returns every counter of `scope` afterwards.
/// A sum beyond the range of `i64` saturates at its bound.
pub(in crate::sqlite) fn add_counters(
    conn: &mut Connection,
    scope: &str,
    deltas: &[(String, i64)],
) -> Result<BTreeMap<String, i64>, DbError> {
    let transaction = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut select = transaction
            .prepare_cached("SELECT value FROM counters WHERE scope = ?1 AND name = ?2")?;
        let mut upsert = transaction.prepare_cached(
            "INSERT INTO counters (scope, name, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (scope, name) DO UPDATE SET value = excluded.value",
        )?;
        for (name, delta) in deltas {
            let current: i64 = select
                .query_row(params![scope, name], |row| row.get(0))
                .optional()?
                .unwrap_or(0);
            upsert.execute(params![scope, name, current.saturating_add(*delta)])?;
        }
    }
    let counters = select_counters(&transaction, scope)?;
    transaction.commit()?;
    Ok(counters)
}

/// Returns every counter of `scope`.
pub(in crate::sqlite) fn select_counters(
    conn: &Connection,
    scope: &str,
) -> Result<BTreeMap<String, i64>, DbError> {
    let counters = conn
        .prepare_cached("SELECT name, value FROM counters WHERE scope = ?1")?
        .query_map([scope], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<BTreeMap<String, i64>>>()?;
    Ok(counters)
}
