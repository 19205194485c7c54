//! Reading some rows of a synced table, each statement short: one row by primary key,
//! the rows holding given values in other columns (a foreign key's), and a page of rows
//! in primary-key order. What the binlog strategy's cascades and continuous verification
//! read; every statement is the table's, built once in [`crate::model::table::TableSql`].

use mysql_async::Value;
use mysql_async::prelude::Queryable;

use crate::error::{Error, Result};
use crate::model::cell::Cell;
use crate::model::table::{SyncedTable, TableSql};

/// A canonical cell as a statement parameter. Temporal, DECIMAL, ENUM and SET cells are
/// their canonical text, which MySQL reads back as the same value (the pool's sessions
/// run in UTC, the encoding's time zone).
pub fn cell_param(cell: &Cell) -> Value {
    match cell {
        Cell::Null => Value::NULL,
        Cell::Int(v) => Value::Int(*v),
        Cell::UInt(v) => Value::UInt(*v),
        Cell::Float(v) => Value::Float(*v),
        Cell::Double(v) => Value::Double(*v),
        Cell::Text(s) | Cell::Json(s) => Value::Bytes(s.as_bytes().to_vec()),
        Cell::Bytes(b) => Value::Bytes(b.clone()),
    }
}

/// The primary-key cells of `row` (a synced row) as parameters, in key order.
fn key_params(table: &SyncedTable, row: &[Cell]) -> Vec<Value> {
    table
        .key_positions
        .iter()
        .map(|&i| cell_param(&row[i]))
        .collect()
}

fn decode_all(table: &SyncedTable, rows: &[mysql_async::Row]) -> Result<Vec<Vec<Cell>>> {
    rows.iter().map(|r| table.decode_sql_row(r)).collect()
}

/// How a look-up reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// A consistent (non-locking) read.
    Plain,
    /// `LOCK IN SHARE MODE`: waits for transactions holding the rows to end, then reads
    /// the latest committed version. A binlog event can reach a replica a moment before
    /// InnoDB's commit makes the transaction visible (the binlog is written first), and a
    /// locking read is how a reader that saw the event also sees its rows.
    Shared,
}

/// The row whose primary key `row` holds, as MySQL has it now; `None` when there is no
/// such row (or the row found renders another key: a case- or pad-insensitive collation
/// matched `A` for `a`, and the key `a` has no row of its own).
pub async fn by_key(
    conn: &mut mysql_async::Conn,
    table: &SyncedTable,
    row: &[Cell],
    mode: ReadMode,
) -> Result<Option<Vec<Cell>>> {
    let sql = match mode {
        ReadMode::Plain => table.sql.select_by_key.as_str(),
        ReadMode::Shared => table.sql.select_shared.as_str(),
    };
    let found: Option<mysql_async::Row> = conn
        .exec_first(sql, key_params(table, row))
        .await
        .map_err(|e| {
            Error::mysql(
                format!("re-reading {} of {}", table.key_of(row), table.name()),
                e,
            )
        })?;
    let Some(found) = found else {
        return Ok(None);
    };
    let cells = table.decode_sql_row(&found)?;
    Ok((table.key_of(&cells) == table.key_of(row)).then_some(cells))
}

/// The rows `sql` (a [`TableSql::select_where`] statement, perhaps locking) finds for
/// `values`.
pub async fn by_columns(
    conn: &mut mysql_async::Conn,
    table: &SyncedTable,
    sql: &str,
    values: &[Cell],
) -> Result<Vec<Vec<Cell>>> {
    let params: Vec<Value> = values.iter().map(cell_param).collect();
    let rows: Vec<mysql_async::Row> = conn
        .exec(sql, params)
        .await
        .map_err(|e| Error::mysql(format!("reading rows of {}", table.name()), e))?;
    decode_all(table, &rows)
}

/// The rows of the primary keys `keys` (each its key's values in key order) that exist,
/// [`TableSql::KEYS_PER_LOOKUP`] keys per statement (a consistent read).
pub async fn by_keys(
    conn: &mut impl Queryable,
    table: &SyncedTable,
    keys: &[Vec<Value>],
) -> Result<Vec<Vec<Cell>>> {
    let mut found = Vec::new();
    for chunk in keys.chunks(TableSql::KEYS_PER_LOOKUP) {
        let mut params = Vec::with_capacity(TableSql::KEYS_PER_LOOKUP * table.key_positions.len());
        for i in 0..TableSql::KEYS_PER_LOOKUP {
            // A short chunk repeats its last key: one statement text for every call.
            params.extend(chunk[i.min(chunk.len() - 1)].iter().cloned());
        }
        let rows: Vec<mysql_async::Row> = conn
            .exec(table.sql.select_by_keys.as_str(), params)
            .await
            .map_err(|e| Error::mysql(format!("looking up keys of {}", table.name()), e))?;
        found.extend(decode_all(table, &rows)?);
    }
    Ok(found)
}

/// Whether `e` is a lock wait that timed out (MySQL error 1205).
pub fn is_lock_wait_timeout(e: &Error) -> bool {
    matches!(e, Error::Mysql { source: mysql_async::Error::Server(s), .. } if s.code == 1205)
}

/// Up to `limit` rows in primary-key order after the row `after` (the first page when
/// `None`), with the online snapshot's keyset statements ([`crate::model::table::ChunkSql`]).
/// Each page is its own short statement, so a slow walk over a big table holds no read
/// view open between pages. A table whose key cannot be paged is read whole, at once:
/// the caller stops after it (see [`pages`]).
pub async fn page(
    conn: &mut mysql_async::Conn,
    table: &SyncedTable,
    after: Option<&[Cell]>,
    limit: usize,
) -> Result<Vec<Vec<Cell>>> {
    let sql = &table.sql.chunks;
    let (statement, mut params) = match after {
        None => (&sql.rows_first, Vec::new()),
        Some(row) => (&sql.rows_after, sql.after_params(&key_params(table, row))),
    };
    if sql.paged {
        params.push(Value::UInt(limit as u64));
    } else {
        params.clear();
    }
    let rows: Vec<mysql_async::Row> = conn
        .exec(statement.as_str(), params)
        .await
        .map_err(|e| Error::mysql(format!("reading a page of {}", table.name()), e))?;
    decode_all(table, &rows)
}

/// Whether a page of `read` rows (of at most `limit`) may have more after it.
pub fn pages(table: &SyncedTable, read: usize, limit: usize) -> bool {
    table.sql.chunks.paged && read >= limit
}
