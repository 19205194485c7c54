//! The change event: a versioned JSON document any producer can publish — what the mq
//! strategy sends through RabbitMQ and the write-back strategy queues in Redis.
//!
//! ```json
//! {"schema":"cachesync.change.v1","table":"shop.users","op":"upsert",
//!  "row":{"id":1,"email":"ada@example.com","balance":"12.5000"},
//!  "version":42,"committed_at_us":1764000000000000}
//! ```
//!
//! - `schema`: always `cachesync.change.v1`; a consumer rejects others (dead letter).
//! - `table`: a configured `database.table`.
//! - `op`: `upsert` or `delete`.
//! - `row`: the row in the canonical JSON encoding (`docs/encoding.md`): for an
//!   upsert every synced column, for a delete at least the primary-key columns.
//! - `version` (optional, u64): orders changes of one row; Redis keeps the newest. The
//!   outbox id, or the table's `version_column`. Without it the change is unguarded.
//! - `committed_at_us` (optional): commit time, µs since the Unix epoch, for
//!   `propagation_seconds`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use serde_json::value::RawValue;

use super::cell::Cell;
use super::change::{Change, Op, RowWrite};
use super::json::RawObject;
use super::table::SyncedTable;

/// The `schema` value of this version of the format.
pub const SCHEMA: &str = "cachesync.change.v1";

/// A change event as it travels through the broker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChangeEvent {
    pub schema: String,
    pub table: String,
    pub op: EventOp,
    /// Column → value, each value's JSON text kept exactly (a `JSON` column's numbers).
    pub row: RawObject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at_us: Option<u64>,
}

/// A cell as an event member. `write_json` writes valid JSON (a JSON column's canonical
/// document, a number, a string): taken as raw text, nothing is re-parsed or rounded.
fn raw_json(cell: &Cell) -> Box<RawValue> {
    let mut text = Vec::new();
    cell.write_json(&mut text);
    String::from_utf8(text)
        .ok()
        .and_then(|t| RawValue::from_string(t).ok())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventOp {
    Upsert,
    Delete,
}

impl ChangeEvent {
    /// The event for a committed change of `row` (the table's synced cells).
    pub fn new(
        table: &SyncedTable,
        op: Op,
        row: &[Cell],
        version: Option<u64>,
        committed_at_us: Option<u64>,
    ) -> ChangeEvent {
        let mut members = Vec::with_capacity(row.len());
        for (i, (cell, name)) in row.iter().zip(table.encoder.names()).enumerate() {
            // A delete needs only the key; leave the other (NULL) cells out.
            if op == Op::Delete && !table.is_key_position(i) {
                continue;
            }
            members.push((name.clone(), raw_json(cell)));
        }
        ChangeEvent {
            schema: SCHEMA.to_owned(),
            table: table.name(),
            op: match op {
                Op::Upsert => EventOp::Upsert,
                Op::Delete => EventOp::Delete,
            },
            row: RawObject(members),
            version,
            committed_at_us,
        }
    }

    /// The event of a write the application asked for, before MySQL has it: the columns
    /// it sets (any column of the table, synced or not), in the canonical JSON encoding.
    /// `Err` names a value that does not fit its column.
    pub fn of_write(write: &RowWrite, at_us: u64) -> Result<ChangeEvent, String> {
        let table = &write.table;
        let mut members = Vec::with_capacity(write.values.len());
        for (name, value) in &write.values {
            let position = table
                .schema
                .position(name)
                .ok_or_else(|| format!("{name} is not a column of {}", table.name()))?;
            let ty = table.schema.columns[position]
                .ty
                .as_ref()
                .map_err(|declared| {
                    format!("column {name} has type {declared}, which cachesync cannot encode")
                })?;
            let cell = super::decode::from_sql(ty, value)
                .map_err(|reason| format!("column {name} of {}: {reason}", table.name()))?;
            members.push((name.clone(), raw_json(&cell)));
        }
        Ok(ChangeEvent {
            schema: SCHEMA.to_owned(),
            table: table.name(),
            op: match write.op {
                Op::Upsert => EventOp::Upsert,
                Op::Delete => EventOp::Delete,
            },
            row: RawObject(members),
            version: None,
            committed_at_us: Some(at_us),
        })
    }

    /// The write this event asks of `table` (its `table` field already resolved), checked
    /// as the API checks a body: known columns, values that fit, the whole primary key.
    pub fn to_write(&self, table: &std::sync::Arc<SyncedTable>) -> Result<RowWrite, String> {
        let op = match self.op {
            EventOp::Upsert => Op::Upsert,
            EventOp::Delete => Op::Delete,
        };
        Ok(RowWrite {
            table: table.clone(),
            op,
            values: super::params::row_values(table, op, &self.row)?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads an event and turns it into a change of one of `tables`. `Err` says why the
    /// message cannot be applied (it goes to the dead-letter queue, unless the table's
    /// plan was stale: [`Unapplicable::shape_of`]).
    pub fn parse(
        payload: &[u8],
        tables: &HashMap<String, Arc<SyncedTable>>,
    ) -> Result<Parsed, Unapplicable> {
        let event: ChangeEvent = serde_json::from_slice(payload)
            .map_err(|e| Unapplicable::malformed(format!("not a change event: {e}")))?;
        if event.schema != SCHEMA {
            return Err(Unapplicable::malformed(format!(
                "unknown schema {:?} (expected {SCHEMA})",
                event.schema
            )));
        }
        let table = tables.get(&event.table).ok_or_else(|| {
            Unapplicable::malformed(format!("table {} is not configured", event.table))
        })?;
        let mut row = Vec::with_capacity(table.types.len());
        for (i, (name, ty)) in table.encoder.names().iter().zip(&table.types).enumerate() {
            let cell = match event.row.get(name) {
                Some(value) => crate::model::decode::from_json(ty, value).map_err(|e| {
                    Unapplicable::shape(&event.table, format!("{}.{name}: {e}", event.table))
                })?,
                None if event.op == EventOp::Delete && !table.is_key_position(i) => Cell::Null,
                None => {
                    return Err(Unapplicable::shape(
                        &event.table,
                        format!("{}: the row has no {name}", event.table),
                    ));
                }
            };
            row.push(cell);
        }
        let names = table.encoder.names();
        let unplanned = event.row.0.iter().any(|(name, _)| !names.contains(name));
        Ok(Parsed {
            change: Change {
                table: table.clone(),
                op: match event.op {
                    EventOp::Upsert => Op::Upsert,
                    EventOp::Delete => Op::Delete,
                },
                row,
                version: event.version,
                committed_at_us: event.committed_at_us,
            },
            unplanned,
        })
    }
}

/// A change event read into a change.
#[derive(Debug)]
pub struct Parsed {
    pub change: Change,
    /// The row had columns the table's plan does not sync. Other producers may send
    /// whole rows (they are ignored); after a DDL that added a column, the plan is stale.
    pub unplanned: bool,
}

/// Why a change event cannot be applied.
#[derive(Debug)]
pub struct Unapplicable {
    pub reason: String,
    /// The configured table whose plan the row does not fit (a planned column missing,
    /// a value of another type): a DDL may have changed it since it was planned.
    pub shape_of: Option<String>,
}

impl Unapplicable {
    fn malformed(reason: String) -> Unapplicable {
        Unapplicable {
            reason,
            shape_of: None,
        }
    }

    fn shape(table: &str, reason: String) -> Unapplicable {
        Unapplicable {
            reason,
            shape_of: Some(table.to_owned()),
        }
    }
}

impl std::fmt::Display for Unapplicable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}
