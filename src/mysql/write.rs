//! The application's row write in MySQL, shared by every strategy's write path.
//!
//! Values only ever travel as statement parameters. An upsert is `INSERT … ON DUPLICATE
//! KEY UPDATE` (so it names every `NOT NULL` column without a default); the committed row
//! is read back in the same transaction (`FOR UPDATE`: the write holds the row lock, so
//! what is read is what commits), which makes defaults, triggers and type coercion part
//! of the image a strategy sends on. A delete first reads the row it is about to delete
//! (`FOR UPDATE`, key columns), so Redis is keyed by the row MySQL changed, not by the
//! request's spelling of its key: under a case- or accent-insensitive collation
//! `DELETE {"code":"ABC"}` removes row `abc`, whose key is `…:abc`.

use mysql_async::prelude::Queryable;
use mysql_async::{Params, TxOpts, Value};

use crate::error::{Error, Result};
use crate::model::cell::Cell;
use crate::model::change::{Op, RowWrite};
use crate::model::table::{SyncedTable, quote_ident};

/// A write as it will commit, read back inside its transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// The row as it commits: defaults, triggers and coercions included.
    Upserted(Vec<Cell>),
    /// The key cells and version (every other cell NULL) of the row the delete removed,
    /// as MySQL spells them; `None` when no row matched.
    Deleted(Option<Vec<Cell>>),
}

impl Written {
    /// The committed row of an upsert.
    pub fn upserted(&self) -> Option<&[Cell]> {
        match self {
            Written::Upserted(row) => Some(row),
            Written::Deleted(_) => None,
        }
    }

    pub fn into_upserted(self) -> Option<Vec<Cell>> {
        match self {
            Written::Upserted(row) => Some(row),
            Written::Deleted(_) => None,
        }
    }

    /// What the change does to Redis and the row that names its key: the committed row
    /// of an upsert; the deleted row's key cells; when a delete matched no row, the key
    /// the request named (nothing changed in MySQL, and removing that key is harmless:
    /// no row can own it, or the delete would have matched it).
    pub fn change_row(self, table: &SyncedTable, write: &RowWrite) -> Result<(Op, Vec<Cell>)> {
        match self {
            Written::Upserted(row) => Ok((Op::Upsert, row)),
            Written::Deleted(Some(key_row)) => Ok((Op::Delete, key_row)),
            Written::Deleted(None) => Ok((Op::Delete, key_only_row(table, write)?)),
        }
    }
}

/// Commits `write` to MySQL and returns what it wrote ([`Written`]).
pub async fn commit(pool: &mysql_async::Pool, write: &RowWrite) -> Result<Written> {
    let mut conn = pool
        .get_conn()
        .await
        .map_err(|e| Error::mysql("writing a row: connecting", e))?;
    let mut tx = conn
        .start_transaction(TxOpts::default())
        .await
        .map_err(|e| Error::mysql("writing a row: BEGIN", e))?;
    let written = write_in(&mut tx, write).await?;
    tx.commit()
        .await
        .map_err(|e| Error::mysql("writing a row: COMMIT", e))?;
    Ok(written)
}

/// Makes `write` inside the open transaction `tx` and returns what it wrote as it will
/// commit, so a caller can add its own statements (an outbox row) before committing.
pub async fn write_in(tx: &mut mysql_async::Transaction<'_>, write: &RowWrite) -> Result<Written> {
    let table = &write.table;
    let sql = SqlWrite::build(table, write)?;
    if write.op == Op::Delete {
        // The row about to go, as MySQL spells its key; locked until the commit.
        let found: Option<mysql_async::Row> = tx
            .exec_first(
                table.sql.select_for_update.as_str(),
                Params::Positional(sql.key_params.clone()),
            )
            .await
            .map_err(|e| {
                Error::mysql(format!("reading the row to delete of {}", table.name()), e)
            })?;
        // Key cells and the version only: a row whose other columns cannot be decoded is
        // still deletable, and the delete carries the row's version (its tombstone must
        // outrank the row it removes).
        let key_row = found
            .map(|row| table.decode_sql_key_and_version(&row))
            .transpose()?;
        tx.exec_drop(&sql.statement, Params::Positional(sql.params))
            .await
            .map_err(|e| Error::mysql(format!("writing a row of {}", table.name()), e))?;
        return Ok(Written::Deleted(key_row));
    }
    tx.exec_drop(&sql.statement, Params::Positional(sql.params))
        .await
        .map_err(|e| Error::mysql(format!("writing a row of {}", table.name()), e))?;
    let found: Option<mysql_async::Row> = tx
        .exec_first(
            table.sql.select_for_update.as_str(),
            Params::Positional(sql.key_params),
        )
        .await
        .map_err(|e| {
            Error::mysql(
                format!("reading back the written row of {}", table.name()),
                e,
            )
        })?;
    // `ON DUPLICATE KEY UPDATE` fires on *any* unique key: when this primary key is new
    // but a UNIQUE secondary value is taken, it updated that other row. The caller drops
    // `tx` on this error, which rolls that back.
    match found {
        Some(row) => table.decode_sql_row(&row).map(Written::Upserted),
        None => Err(Error::Conflict(format!(
            "writing a row of {}: no row has the written primary key afterwards: another \
             row already holds one of its unique values (duplicate entry on a UNIQUE \
             secondary index), or MySQL converted the key value; nothing was written",
            table.name()
        ))),
    }
}

/// The SQL of one write, with parameters: values never reach the statement text.
struct SqlWrite {
    statement: String,
    params: Vec<Value>,
    /// The primary-key values, in primary-key order (for [`crate::model::table::TableSql`]).
    key_params: Vec<Value>,
}

impl SqlWrite {
    fn build(table: &SyncedTable, write: &RowWrite) -> Result<SqlWrite> {
        let schema = &table.schema;
        let invalid = |reason: String| Error::InvalidWrite(reason);
        for (name, _) in &write.values {
            if schema.position(name).is_none() {
                return Err(invalid(format!(
                    "{name} is not a column of {}",
                    table.name()
                )));
            }
        }
        let key_params = write.key_params()?;
        let (statement, params) = match write.op {
            Op::Delete => (table.sql.delete_by_key.clone(), key_params.clone()),
            Op::Upsert => (
                upsert_statement(table, &column_names(write), 1),
                write.values.iter().map(|(_, v)| v.clone()).collect(),
            ),
        };
        Ok(SqlWrite {
            statement,
            params,
            key_params,
        })
    }
}

/// The columns `write` names, in its order.
fn column_names(write: &RowWrite) -> Vec<&str> {
    write.values.iter().map(|(n, _)| n.as_str()).collect()
}

/// `INSERT INTO t (columns) VALUES (…), … ON DUPLICATE KEY UPDATE …` for `rows` rows.
fn upsert_statement(table: &SyncedTable, columns: &[&str], rows: usize) -> String {
    let pk_names = table.schema.primary_key_names();
    let table_sql = &table.sql.table;
    let quoted: Vec<String> = columns.iter().map(|n| quote_ident(n)).collect();
    let updates: Vec<String> = columns
        .iter()
        .filter(|n| !pk_names.contains(n))
        .map(|n| {
            let c = quote_ident(n);
            format!("{c} = VALUES({c})")
        })
        .collect();
    let row = format!("({})", vec!["?"; columns.len()].join(", "));
    let values = vec![row; rows].join(", ");
    let update = if updates.is_empty() {
        // Only key columns: nothing to update when the row exists. Not `INSERT IGNORE`,
        // which would also turn strict-mode errors (a NOT NULL column without default)
        // into warnings.
        let c = quote_ident(pk_names[0]);
        format!("{c} = {c}")
    } else {
        updates.join(", ")
    };
    format!(
        "INSERT INTO {table_sql} ({}) VALUES {values} ON DUPLICATE KEY UPDATE {update}",
        quoted.join(", ")
    )
}

/// Rows per multi-row upsert of [`upsert_many_in`].
pub const UPSERTS_PER_STATEMENT: usize = 50;

/// Upserts `writes` — upserts of `table` naming the same columns in the same order, of
/// distinct rows — inside `tx`, [`UPSERTS_PER_STATEMENT`] rows per statement, and reads
/// them back in [`TableSql::select_by_keys`](crate::model::table::TableSql) look-ups:
/// two statements per 50 rows instead of two per row. Returns each row as it will commit,
/// in `writes`' order.
///
/// A row not found under its own key afterwards is a [`Error::Conflict`], as for
/// [`write_in`]; it also covers what only this form can meet (two spellings of one key
/// under a case-insensitive collation). The caller drops `tx` and writes the rows one
/// by one with [`write_in`] to find which, so nothing of the statement stays.
pub async fn upsert_many_in(
    tx: &mut mysql_async::Transaction<'_>,
    table: &SyncedTable,
    writes: &[&RowWrite],
) -> Result<Vec<Vec<Cell>>> {
    let Some(first) = writes.first() else {
        return Ok(Vec::new());
    };
    let columns = column_names(first);
    for write in writes {
        if write.op != Op::Upsert || column_names(write) != columns {
            return Err(Error::InvalidWrite(format!(
                "a multi-row upsert of {} takes upserts of the same columns",
                table.name()
            )));
        }
    }
    // Validates the columns and the key once, with the one-row form's messages.
    SqlWrite::build(table, first)?;
    let mut keys = Vec::with_capacity(writes.len());
    let mut wanted = Vec::with_capacity(writes.len());
    for write in writes {
        keys.push(write.key_params()?);
        wanted.push(table.key_of(&key_only_row(table, write)?));
    }
    for chunk in writes.chunks(UPSERTS_PER_STATEMENT) {
        let params: Vec<Value> = chunk
            .iter()
            .flat_map(|w| w.values.iter().map(|(_, v)| v.clone()))
            .collect();
        tx.exec_drop(
            upsert_statement(table, &columns, chunk.len()),
            Params::Positional(params),
        )
        .await
        .map_err(|e| Error::mysql(format!("writing rows of {}", table.name()), e))?;
    }
    let mut found: std::collections::HashMap<String, Vec<Cell>> =
        crate::mysql::lookup::by_keys(tx, table, &keys)
            .await?
            .into_iter()
            .map(|row| (table.key_of(&row), row))
            .collect();
    wanted
        .iter()
        .map(|key| {
            found.remove(key).ok_or_else(|| {
                Error::Conflict(format!(
                    "writing rows of {}: no row has the written key {key} afterwards: another \
                     row already holds one of its unique values, or MySQL spells the key \
                     differently",
                    table.name()
                ))
            })
        })
        .collect()
}

/// A row holding only the primary-key cells of `write` (other cells NULL), enough to
/// render the key of a deleted row.
pub fn key_only_row(table: &SyncedTable, write: &RowWrite) -> Result<Vec<Cell>> {
    let mut row = vec![Cell::Null; table.types.len()];
    for (name, value) in &write.values {
        if let Some(pos) = table.encoder.names().iter().position(|n| n == name) {
            row[pos] =
                crate::model::decode::from_sql(&table.types[pos], value).map_err(|reason| {
                    Error::Decode {
                        table: table.name(),
                        column: name.clone(),
                        reason,
                    }
                })?;
        }
    }
    Ok(row)
}
