//! One chunk of an online snapshot: a bounded primary-key range read from MySQL and
//! written to Redis under the table's [`Stamp`] (the module doc of [`super`] says why
//! each keeps a chunk row from overwriting a newer change).

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Row, Value};

use super::{ConsistentRead, Planned, Stamp};
use crate::error::{Error, Result};
use crate::model::cell::Cell;
use crate::model::change::{Applied, Change, Op};
use crate::model::decode::from_sql;
use crate::model::table::SyncedTable;
use crate::redis::keyspace::fill_key;
use crate::redis::{Applier, RedisConn};

/// How long a chunk's read leases live: they must outlast one chunk's MySQL read and
/// Redis fill. A lease that expired first only makes its fill count as lost (the row
/// is then read again by the next snapshot, not overwritten by an old image).
const LEASE_TTL_MS: u64 = 30_000;

/// Compare-and-delete of a lease nobody used (its row was deleted between the key read
/// and the row read).
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// What one chunk did.
#[derive(Debug, Default)]
pub struct Copied {
    /// Primary keys read (rows, or keys under a lease).
    pub keys: usize,
    /// The table ends with this chunk: fewer keys than asked for, or a table read in one
    /// chunk (not `paged`, see [`crate::model::table::ChunkSql`]).
    pub last_chunk: bool,
    /// The primary key of the last row, where the next chunk starts.
    pub last: Option<Vec<Value>>,
    /// Rows written to Redis, rows Redis already had newer (or a synced change voided
    /// the lease of).
    pub applied: Applied,
}

/// Copies the chunk of `planned` after `after` (from the start when `None`), at most
/// `limit` primary keys.
pub async fn copy(
    conn: &mut mysql_async::Conn,
    applier: &Applier,
    consistent: Option<&dyn ConsistentRead>,
    planned: &Planned,
    after: Option<&[Value]>,
    limit: usize,
) -> Result<Copied> {
    let table = &planned.table;
    match planned.stamp {
        Stamp::ConsistentRead => {
            let consistent = consistent.ok_or_else(|| Error::Strategy {
                strategy: "snapshot",
                reason: format!("{} needs a consistent read and none is set", table.name()),
            })?;
            let version = consistent.begin(conn).await?;
            let rows = read_rows(conn, table, after, limit).await;
            // Read-only: ending the transaction cannot lose anything.
            let ended = conn
                .query_drop("COMMIT")
                .await
                .map_err(|e| Error::mysql("ending an online snapshot chunk", e));
            let rows = rows?;
            ended?;
            write_versioned(applier, table, rows, limit, |_| Some(version)).await
        }
        Stamp::RowVersion => {
            let rows = read_rows(conn, table, after, limit).await?;
            write_versioned(applier, table, rows, limit, |row| table.version_of(row)).await
        }
        Stamp::Lease => copy_leased(conn, applier, table, after, limit).await,
    }
}

/// `SELECT` of up to `limit` rows after `after`, in primary-key order.
async fn read_rows(
    conn: &mut mysql_async::Conn,
    table: &SyncedTable,
    after: Option<&[Value]>,
    limit: usize,
) -> Result<Vec<Row>> {
    let sql = &table.sql.chunks;
    let (statement, mut params) = match after {
        None => (&sql.rows_first, Vec::new()),
        Some(key) => (&sql.rows_after, sql.after_params(key)),
    };
    if sql.paged {
        params.push(Value::UInt(limit as u64));
    } else {
        params.clear();
    }
    conn.exec(statement.as_str(), params)
        .await
        .map_err(|e| Error::mysql(format!("reading a chunk of {}", table.name()), e))
}

/// The primary-key values of a row of synced columns, in key order: where the next chunk
/// starts.
fn key_of_row(table: &SyncedTable, row: &Row) -> Vec<Value> {
    table
        .key_positions
        .iter()
        .map(|&p| row.as_ref(p).cloned().unwrap_or(Value::NULL))
        .collect()
}

/// Writes `rows` as version-guarded upserts, each at the version `version_of` gives.
async fn write_versioned(
    applier: &Applier,
    table: &std::sync::Arc<SyncedTable>,
    rows: Vec<Row>,
    limit: usize,
    version_of: impl Fn(&[Cell]) -> Option<u64>,
) -> Result<Copied> {
    let last = rows.last().map(|row| key_of_row(table, row));
    let mut changes = Vec::with_capacity(rows.len().min(limit));
    for row in &rows {
        let cells = table.decode_sql_row(row)?;
        changes.push(Change {
            table: table.clone(),
            op: Op::Upsert,
            version: version_of(&cells),
            row: cells,
            committed_at_us: None,
        });
    }
    let applied = applier.apply(&changes).await?;
    Ok(Copied {
        keys: rows.len(),
        last_chunk: rows.len() < limit || !table.sql.chunks.paged,
        last,
        applied,
    })
}

/// A chunk under read leases: the keys first, a lease on each key's read marker, then
/// the rows, each filled only while its lease is intact (see [`Applier::refill`]).
async fn copy_leased(
    conn: &mut mysql_async::Conn,
    applier: &Applier,
    table: &std::sync::Arc<SyncedTable>,
    after: Option<&[Value]>,
    limit: usize,
) -> Result<Copied> {
    let sql = &table.sql.chunks;
    let context = || format!("reading a chunk of {}", table.name());
    let (statement, mut params) = match after {
        None => (&sql.keys_first, Vec::new()),
        Some(key) => (&sql.keys_after, sql.after_params(key)),
    };
    if sql.paged {
        params.push(Value::UInt(limit as u64));
    } else {
        params.clear();
    }
    let keys: Vec<Row> = conn
        .exec(statement.as_str(), params)
        .await
        .map_err(|e| Error::mysql(context(), e))?;
    let Some(last_row) = keys.last() else {
        return Ok(Copied {
            last_chunk: true,
            ..Copied::default()
        });
    };
    let last: Vec<Value> = (0..table.key_positions.len())
        .map(|i| last_row.as_ref(i).cloned().unwrap_or(Value::NULL))
        .collect();

    // The Redis key of each primary key, and a lease on its read marker, taken before
    // the rows are read.
    let chunk_token = format!("lease:snapshot:{:032x}", rand::random::<u128>());
    let mut leases: HashMap<String, String> = HashMap::with_capacity(keys.len());
    let mut pipe = redis::pipe();
    for (i, key_row) in keys.iter().enumerate() {
        let key = table.key_of(&key_only_cells(table, key_row)?);
        let Some(marker) = fill_key(&key) else {
            // No marker can share the key's slot: such a row cannot be filled safely;
            // the synced changes of the row are what writes it.
            continue;
        };
        let token = format!("{chunk_token}:{i}");
        pipe.cmd("SET")
            .arg(&marker)
            .arg(&token)
            .arg("PX")
            .arg(LEASE_TTL_MS)
            .ignore();
        leases.insert(key, token);
    }
    let mut redis: RedisConn = applier.connection();
    pipe.query_async::<()>(&mut redis)
        .await
        .map_err(|e| Error::redis(format!("taking read leases on {}", table.name()), e))?;

    let (statement, mut params) = match after {
        None => (&sql.rows_upto, Vec::new()),
        Some(key) => (&sql.rows_between, sql.after_params(key)),
    };
    if sql.paged {
        params.extend(sql.after_params(&last));
    } else {
        params.clear();
    }
    let rows: Vec<Row> = conn
        .exec(statement.as_str(), params)
        .await
        .map_err(|e| Error::mysql(context(), e))?;
    let mut fills = Vec::with_capacity(rows.len());
    for row in &rows {
        let cells = table.decode_sql_row(row)?;
        let key = table.key_of(&cells);
        // A row inserted after the keys were read has no lease: its insert reaches
        // Redis through the strategy.
        if let Some(token) = leases.remove(&key) {
            fills.push((key, token, cells));
        }
    }
    let written = applier.refill(table, &fills).await?;
    // Leases of rows deleted in between: give them back (a delete that reached Redis
    // already removed its marker, so this only clears the ones still ours).
    if !leases.is_empty() {
        let mut pipe = redis::pipe();
        for (key, token) in &leases {
            if let Some(marker) = fill_key(key) {
                pipe.cmd("EVAL")
                    .arg(RELEASE_LUA)
                    .arg(1)
                    .arg(marker)
                    .arg(token)
                    .ignore();
            }
        }
        pipe.query_async::<()>(&mut redis)
            .await
            .map_err(|e| Error::redis(format!("releasing read leases on {}", table.name()), e))?;
    }
    let filled = written.iter().filter(|w| **w).count();
    Ok(Copied {
        keys: keys.len(),
        last_chunk: keys.len() < limit || !sql.paged,
        last: Some(last),
        applied: Applied {
            written: filled,
            replayed: 0,
            stale: written.len() - filled,
        },
    })
}

/// A row of synced cells holding only the primary key (others NULL), from a row of
/// primary-key columns in key order: enough to render the row's Redis key.
fn key_only_cells(table: &SyncedTable, key_row: &Row) -> Result<Vec<Cell>> {
    let mut cells = vec![Cell::Null; table.types.len()];
    for (i, &position) in table.key_positions.iter().enumerate() {
        let value = key_row.as_ref(i).unwrap_or(&Value::NULL);
        cells[position] =
            from_sql(&table.types[position], value).map_err(|reason| Error::Decode {
                table: table.name(),
                column: table.encoder.names()[position].clone(),
                reason,
            })?;
    }
    Ok(cells)
}
