//! Dual-write: the application's write commits to MySQL, then writes Redis.
//!
//! Lowest propagation latency and no moving parts, but the two writes are not atomic:
//! if Redis fails after the commit the cache stays stale until the next write of that
//! row, and two concurrent writers of one row can reach MySQL and Redis in opposite
//! orders. A configured `version_column` lets the applier's guard stop the second
//! problem; nothing but a retry stops the first. (Retry with backoff and the sidecar
//! write API come with issue #4.)
//!
//! The Redis value is not built from the request but read back from MySQL inside the
//! writing transaction (the row is locked by the write, so what is read is what
//! commits): defaults, triggers and type coercion are reflected exactly as a `SELECT`
//! would show them.

use std::time::{Instant, SystemTime};

use mysql_async::prelude::Queryable;
use mysql_async::{Params, TxOpts, Value};
use tokio_util::sync::CancellationToken;

use super::{RowWrite, StrategyKind, SyncStrategy, WriteReceipt};
use crate::applier::{Applier, Change, Op, unix_micros};
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::schema::{SyncedTable, quote_ident};

/// The dual-write strategy.
pub struct DualWrite {
    pool: mysql_async::Pool,
    applier: Applier,
}

impl DualWrite {
    pub fn new(pool: mysql_async::Pool, applier: Applier) -> DualWrite {
        DualWrite { pool, applier }
    }

    /// Commits `write` to MySQL and returns the committed row image (`None` for a
    /// delete or an upsert whose row is gone).
    async fn commit_to_mysql(&self, write: &RowWrite) -> Result<Option<Vec<crate::row::Cell>>> {
        let table = &write.table;
        let sql = SqlWrite::build(table, write)?;
        let mut conn = self
            .pool
            .get_conn()
            .await
            .map_err(|e| Error::mysql("dual-write: connecting", e))?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|e| Error::mysql("dual-write: BEGIN", e))?;
        tx.exec_drop(&sql.statement, Params::Positional(sql.params))
            .await
            .map_err(|e| Error::mysql(format!("dual-write: writing {}", table.name()), e))?;
        let row = match write.op {
            Op::Delete => None,
            Op::Upsert => {
                let found: Option<mysql_async::Row> = tx
                    .exec_first(&sql.select_by_key, Params::Positional(sql.key_params))
                    .await
                    .map_err(|e| {
                        Error::mysql(format!("dual-write: reading back {}", table.name()), e)
                    })?;
                found.map(|r| table.decode_sql_row(&r)).transpose()?
            }
        };
        tx.commit()
            .await
            .map_err(|e| Error::mysql("dual-write: COMMIT", e))?;
        Ok(row)
    }
}

impl SyncStrategy for DualWrite {
    fn kind(&self) -> StrategyKind {
        StrategyKind::DualWrite
    }

    async fn write(&self, write: RowWrite) -> Result<WriteReceipt> {
        let started = Instant::now();
        let table = write.table.clone();
        let image = self.commit_to_mysql(&write).await?;
        let committed_at_us = unix_micros(SystemTime::now());
        let (op, row) = match image {
            Some(row) => (Op::Upsert, row),
            // A delete only needs the key: the primary-key cells, others NULL.
            None => (Op::Delete, key_only_row(&table, &write)?),
        };
        let version = table.version_of(&row);
        let change = Change {
            table: table.clone(),
            op,
            row,
            version,
            committed_at_us: Some(committed_at_us),
        };
        let applied = self.applier.apply(std::slice::from_ref(&change)).await?;
        metrics::histogram!(m::WRITE_DURATION, "strategy" => self.kind().name(), "table" => table.name())
            .record(started.elapsed().as_secs_f64());
        Ok(WriteReceipt {
            committed_at_us,
            version,
            applied: Some(applied),
        })
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        // The writer does all the work; there is nothing in the background to drain.
        shutdown.cancelled().await;
        Ok(())
    }
}

/// The SQL of one write, with parameters: values never reach the statement text.
struct SqlWrite {
    statement: String,
    params: Vec<Value>,
    select_by_key: String,
    key_params: Vec<Value>,
}

impl SqlWrite {
    fn build(table: &SyncedTable, write: &RowWrite) -> Result<SqlWrite> {
        let schema = &table.schema;
        let invalid = |reason: String| Error::Strategy {
            strategy: "dual-write",
            reason,
        };
        for (name, _) in &write.values {
            if schema.position(name).is_none() {
                return Err(invalid(format!(
                    "{name} is not a column of {}",
                    table.name()
                )));
            }
        }
        let pk_names: Vec<&str> = schema
            .primary_key
            .iter()
            .map(|&i| schema.columns[i].name.as_str())
            .collect();
        let mut key_params = Vec::with_capacity(pk_names.len());
        for pk in &pk_names {
            let value = write
                .values
                .iter()
                .find(|(n, _)| n == pk)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    invalid(format!(
                        "primary-key column {pk} of {} is missing",
                        table.name()
                    ))
                })?;
            key_params.push(value);
        }
        let table_sql = format!(
            "{}.{}",
            quote_ident(&schema.database),
            quote_ident(&schema.table)
        );
        let key_where = pk_names
            .iter()
            .map(|c| format!("{} = ?", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let select_by_key = format!("{} WHERE {key_where} FOR UPDATE", table.select_sql);
        let (statement, params) = match write.op {
            Op::Delete => (
                format!("DELETE FROM {table_sql} WHERE {key_where}"),
                key_params.clone(),
            ),
            Op::Upsert => {
                let columns: Vec<String> =
                    write.values.iter().map(|(n, _)| quote_ident(n)).collect();
                let updates: Vec<String> = write
                    .values
                    .iter()
                    .filter(|(n, _)| !pk_names.contains(&n.as_str()))
                    .map(|(n, _)| {
                        let c = quote_ident(n);
                        format!("{c} = VALUES({c})")
                    })
                    .collect();
                let placeholders = vec!["?"; columns.len()].join(", ");
                let statement = if updates.is_empty() {
                    // Only key columns: nothing to update when the row exists.
                    format!(
                        "INSERT IGNORE INTO {table_sql} ({}) VALUES ({placeholders})",
                        columns.join(", ")
                    )
                } else {
                    format!(
                        "INSERT INTO {table_sql} ({}) VALUES ({placeholders}) ON DUPLICATE KEY UPDATE {}",
                        columns.join(", "),
                        updates.join(", ")
                    )
                };
                (
                    statement,
                    write.values.iter().map(|(_, v)| v.clone()).collect(),
                )
            }
        };
        Ok(SqlWrite {
            statement,
            params,
            select_by_key,
            key_params,
        })
    }
}

/// A row holding only the primary-key cells of `write` (other cells NULL), enough to
/// render the key of a deleted row.
fn key_only_row(table: &SyncedTable, write: &RowWrite) -> Result<Vec<crate::row::Cell>> {
    let mut row = vec![crate::row::Cell::Null; table.types.len()];
    for (name, value) in &write.values {
        if let Some(pos) = table.encoder.names().iter().position(|n| n == name) {
            row[pos] = crate::decode::from_sql(&table.types[pos], value).map_err(|reason| {
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
