//! SQL statements on the `tool_pins` table: one row per qualified tool
//! name with the accepted definition and, while a change waits for an
//! operator, the pending one.

use rusqlite::{Connection, params};
use serde_json::Value;

use super::DbError;
use crate::ToolPin;

/// Stores `pin`, replacing the row of the same tool.
pub(in crate::sqlite) fn save_tool_pin(conn: &Connection, pin: &ToolPin) -> Result<(), DbError> {
    let text = |value: &Option<Value>| value.as_ref().map(Value::to_string);
    conn.prepare_cached(
        "INSERT INTO tool_pins (tool, hash, definition, accepted_at, accepted_by,
             pending_hash, pending_definition, pending_reason, seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (tool) DO UPDATE SET
             hash = excluded.hash, definition = excluded.definition,
             accepted_at = excluded.accepted_at, accepted_by = excluded.accepted_by,
             pending_hash = excluded.pending_hash,
             pending_definition = excluded.pending_definition,
             pending_reason = excluded.pending_reason, seen_at = excluded.seen_at",
    )?
    .execute(params![
        pin.tool,
        pin.hash,
        text(&pin.definition),
        pin.accepted_at,
        pin.accepted_by,
        pin.pending_hash,
        text(&pin.pending_definition),
        pin.pending_reason,
        pin.seen_at,
    ])?;
    Ok(())
}

/// Returns every pin, by tool name.
pub(in crate::sqlite) fn select_tool_pins(conn: &Connection) -> Result<Vec<ToolPin>, DbError> {
    let mut statement = conn.prepare_cached(
        "SELECT tool, hash, definition, accepted_at, accepted_by, pending_hash,
                pending_definition, pending_reason, seen_at
         FROM tool_pins ORDER BY tool",
    )?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, Option<String>>(1)?,
            row.get::<_, Option<String>>(2)?,
            row.get::<_, Option<i64>>(3)?,
            row.get::<_, Option<String>>(4)?,
            row.get::<_, Option<String>>(5)?,
            row.get::<_, Option<String>>(6)?,
            row.get::<_, Option<String>>(7)?,
            row.get::<_, i64>(8)?,
        ))
    })?;
    let mut pins = Vec::new();
    for row in rows {
        let (
            tool,
            hash,
            definition,
            accepted_at,
            accepted_by,
            pending_hash,
            pending,
            reason,
            seen_at,
        ) = row?;
        let parse = |text: Option<String>, column: &str| -> Result<Option<Value>, DbError> {
            text.map(|text| {
                serde_json::from_str(&text).map_err(|error| DbError::Corrupt {
                    row: format!("tool pin {tool}"),
                    message: format!("{column} is not JSON: {error}"),
                })
            })
            .transpose()
        };
        pins.push(ToolPin {
            definition: parse(definition, "definition")?,
            pending_definition: parse(pending, "pending_definition")?,
            tool,
            hash,
            accepted_at,
            accepted_by,
            pending_hash,
            pending_reason: reason,
            seen_at,
        });
    }
    Ok(pins)
}
