//! Row changes: what the application asks for ([`RowWrite`]), what is committed and on its
//! way to Redis ([`Change`]), what applying a batch did ([`Applied`]), and what could not
//! be decoded at all ([`DeadLetter`]).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::cell::Cell;
use super::table::{Mode, SyncedTable};
use crate::error::Error;

/// What a change does to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Upsert,
    Delete,
}

/// One committed row change on its way to Redis.
#[derive(Debug, Clone)]
pub struct Change {
    pub table: Arc<SyncedTable>,
    pub op: Op,
    /// The row's synced cells (`SyncedTable::selected` order). For a delete only the
    /// primary-key cells matter.
    pub row: Vec<Cell>,
    /// Orders changes of one row; `None` writes unconditionally.
    pub version: Option<u64>,
    /// When the change was committed in MySQL (µs since the Unix epoch), for the
    /// propagation-latency histogram.
    pub committed_at_us: Option<u64>,
}

impl Change {
    /// What the change does to Redis: its own op, or a delete for a table in
    /// `invalidate` mode (readers refill those keys themselves). The one place that
    /// decides it, so it holds for every strategy.
    pub fn redis_op(&self) -> Op {
        match self.table.config.mode {
            Mode::Write => self.op,
            Mode::Invalidate => Op::Delete,
        }
    }
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Changes written: newer than what Redis held (or unversioned).
    pub written: usize,
    /// Changes written again at the version Redis already held: a redelivery or a replay
    /// after a crash. Harmless (same bytes), and counted so it can be seen.
    pub replayed: usize,
    /// Changes skipped because Redis already held a newer version of the row.
    pub stale: usize,
}

/// A row change the application asks for.
#[derive(Debug, Clone)]
pub struct RowWrite {
    pub table: Arc<SyncedTable>,
    pub op: Op,
    /// Column name → value. An upsert names the columns it sets (at least the primary
    /// key); a delete names exactly the primary-key columns.
    pub values: Vec<(String, mysql_async::Value)>,
}

impl RowWrite {
    /// The write's primary-key values in primary-key order (the `?` of the table's
    /// statements); `Err` names a primary-key column the write leaves out.
    pub fn key_params(&self) -> crate::error::Result<Vec<mysql_async::Value>> {
        self.table
            .schema
            .primary_key_names()
            .into_iter()
            .map(|pk| {
                self.values
                    .iter()
                    .find(|(n, _)| n == pk)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        crate::error::Error::InvalidWrite(format!(
                            "primary-key column {pk} of {} is missing",
                            self.table.name()
                        ))
                    })
            })
            .collect()
    }
}

/// Microseconds since the Unix epoch: the unit of every commit and propagation time.
pub fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A row change read from MySQL that cannot be decoded (an invalid JSON document stored
/// past its CHECK constraint, text that is not UTF-8, ...), as recorded in the dead-letter
/// list. It never stops the stream: the row's key is removed when it can be named, so
/// readers fall back to MySQL, and `verify --repair` (or the row's next change) fills it
/// once the row is fixed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// Where it was read: `binlog` (the stream) or `snapshot` (a table scan).
    pub source: String,
    /// `database.table`.
    pub table: String,
    /// The row's Redis key, when its key columns decode (that key was removed).
    pub key: Option<String>,
    /// The column that could not be decoded; `*` for the whole row image.
    pub column: String,
    pub reason: String,
    /// Where in the binlog (`file:position` of the event's end, or of the snapshot).
    pub position: String,
    /// When it was recorded, µs since the Unix epoch.
    pub at_us: u64,
}

impl DeadLetter {
    /// The dead letter of a row of `table` whose decoding failed with `error`; `key_row`
    /// holds its key cells when those decoded.
    pub fn new(
        source: &str,
        table: &SyncedTable,
        key_row: Option<&[Cell]>,
        error: &Error,
        position: String,
    ) -> DeadLetter {
        let (column, reason) = match error {
            Error::Decode { column, reason, .. } => (column.clone(), reason.clone()),
            other => ("*".to_owned(), other.to_string()),
        };
        DeadLetter {
            source: source.to_owned(),
            table: table.name(),
            key: key_row.map(|row| table.key_of(row)),
            column,
            reason,
            position,
            at_us: unix_micros(SystemTime::now()),
        }
    }
}

/// The version a change of `row` carries, from `table`'s version column: an upsert's is
/// the row's; a delete's is one more than the deleted row's, because the delete is a newer
/// change of the row than the row it removes — so its tombstone refuses every image of
/// that row (a late write, an online snapshot's chunk read before the delete), while a
/// repair that re-read MySQL at the tombstone's version still lands.
pub fn version_of_change(table: &SyncedTable, op: Op, row: &[Cell]) -> Option<u64> {
    let version = table.version_of(row)?;
    Some(match op {
        Op::Delete => version.saturating_add(1),
        Op::Upsert => version,
    })
}
