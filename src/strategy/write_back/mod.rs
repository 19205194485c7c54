//! Write-back: the application writes the cache; a queue carries each change to MySQL
//! later, in batches.
//!
//! The textbook's third pattern ("the application only writes the cache; fastest, but
//! asynchronous writes risk loss and inconsistency"), built so the risk is exactly the
//! one it names and no other:
//!
//! - **The cache and the queue never disagree.** A write reads the row the cache holds
//!   (or MySQL's, when the cache has none), merges the columns the write sets, draws a
//!   new version, and in **one script call** (`redis/write_back.lua`) writes the row and
//!   appends the change to a Redis stream — if the cache still holds the version the
//!   merge was based on. Otherwise it reads again and retries: concurrent writers of one
//!   row, in any number of processes, never lose each other's columns, and a row's
//!   versions grow along the queue. Versions come from a counter in Redis that never
//!   goes below the clock in µs, so they keep growing after Redis lost the counter.
//!   ([`crate::redis::queue`] says why a Redis stream and not RabbitMQ.)
//! - **Reads see the application's own writes at once**: `GET` reads the cache first, and
//!   a cache-aside fill never lands over a row the cache holds or has deleted (a
//!   tombstone blocks it), so MySQL's older image cannot come back.
//! - **The flusher** ([`flusher`]) takes up to `batch_size` changes (or what arrived
//!   within `max_delay_ms`), coalesces each row's changes into its last (a delete and the
//!   upserts after it), commits them to MySQL in one transaction, refreshes the cache
//!   with the rows as committed (defaults, triggers, coercions) at the same version, and
//!   only then acknowledges them. A crash before the acknowledgement flushes them again:
//!   the writes are idempotent upserts and deletes. One flusher applies the queue in
//!   order, so an older value never overwrites a newer one in MySQL; a table with a
//!   `version_column` also gets each change's version there.
//! - **A change MySQL refuses** (a duplicate UNIQUE value, a value out of range, a
//!   missing table) goes to the dead-letter stream with the reason, is counted
//!   (`cachesync_dead_lettered_total`), and the cache key is repaired from MySQL unless a
//!   newer write has replaced it — the write was acknowledged to the application before
//!   the database said no, which is the price of write-back.
//! - **What is lost**: changes still queued when Redis loses its data (a restart without
//!   persistence, a failover to an empty replica). `appendonly yes` with `appendfsync
//!   everysec` bounds that to about a second of writes; `cachesync doctor` says when
//!   Redis runs without it.
//!
//! Only `format = "json"` tables in `write` mode; one flusher per queue (a second daemon
//! on the same `write_back.stream` would flush concurrently and could reorder a row's
//! changes across the two).

pub mod config;
mod flusher;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;

use self::config::WriteBackConfig;
use super::{RedisOutcome, Services, StrategyKind, SyncStrategy, WriteReceipt};
use crate::error::{Error, Result};
use crate::model::cell::{Cell, Encoded};
use crate::model::change::{Applied, Op, RowWrite, unix_micros};
use crate::model::event::ChangeEvent;
use crate::model::table::SyncedTable;
use crate::redis::keyspace::{split_version, tombstone_key};
use crate::redis::queue::{CacheWrite, ChangeQueue};
use crate::redis::{Applier, RedisConn};

/// Attempts of one write when other writers of the row keep winning the race.
const MAX_ATTEMPTS: usize = 64;

/// Lock stripes that serialise writers of one row inside this process (writers in other
/// processes are serialised by the script's compare-and-set).
const STRIPES: usize = 256;

/// The write-back strategy.
pub struct WriteBack {
    pool: mysql_async::Pool,
    mysql_url: String,
    redis_url: String,
    applier: Applier,
    /// The queue on the applier's connection (writes never block on it).
    queue: ChangeQueue,
    tables: HashMap<String, Arc<SyncedTable>>,
    config: WriteBackConfig,
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl WriteBack {
    pub fn new(
        services: &Services,
        config: WriteBackConfig,
        tombstone_ttl: std::time::Duration,
    ) -> WriteBack {
        WriteBack {
            pool: services.pool.clone(),
            mysql_url: services.mysql_url.clone(),
            redis_url: services.redis_url.clone(),
            queue: ChangeQueue::new(
                services.applier.connection(),
                config.queue.clone(),
                tombstone_ttl,
            ),
            applier: services.applier.clone(),
            tables: services
                .tables
                .iter()
                .map(|t| (t.name(), t.clone()))
                .collect(),
            config,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// The row the cache holds for `key` and the version it holds it at; a deleted row
    /// (a tombstone) is `(version, None)`; a row the cache does not know is read from
    /// MySQL and comes back as `(None, row)`.
    async fn current(
        &self,
        table: &SyncedTable,
        key: &str,
        key_params: Vec<mysql_async::Value>,
    ) -> Result<(Option<u64>, Option<Vec<Cell>>)> {
        let mut conn: RedisConn = self.applier.connection();
        let tomb = tombstone_key(key);
        let (doc, tombstone): (Option<Vec<u8>>, Option<u64>) = redis::pipe()
            .cmd("GET")
            .arg(key)
            .cmd("GET")
            .arg(tomb.as_deref().unwrap_or(key))
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("reading key {key} of {}", table.name()), e))?;
        if let Some(doc) = doc {
            let (version, body) = split_version(&doc);
            return Ok((version, Some(table.decode_stored_json(&body)?)));
        }
        if tomb.is_some()
            && let Some(version) = tombstone
        {
            return Ok((Some(version), None));
        }
        let mut mysql = crate::mysql::get_conn(&self.pool, &self.mysql_url).await?;
        let found: Option<mysql_async::Row> = mysql
            .exec_first(table.sql.select_by_key.as_str(), key_params)
            .await
            .map_err(|e| Error::mysql(format!("reading {key} of {}", table.name()), e))?;
        Ok((
            None,
            found.map(|row| table.decode_sql_row(&row)).transpose()?,
        ))
    }
}

impl SyncStrategy for WriteBack {
    fn kind(&self) -> StrategyKind {
        StrategyKind::WriteBack
    }

    /// Writes the cache and queues the change (see the module doc); returns once both
    /// are in Redis — before MySQL has the change.
    async fn write(&self, write: RowWrite) -> Result<WriteReceipt> {
        let table = write.table.clone();
        let key_params = write.key_params()?;
        let key_row = crate::mysql::write::key_only_row(&table, &write)?;
        let key = table.key_of(&key_row);
        let stripe = &self.stripes[stripe_of(&key)];
        let _serialised = stripe.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let (base, current) = self.current(&table, &key, key_params.clone()).await?;
            let at_us = unix_micros(SystemTime::now());
            let version = self.queue.next_version(at_us).await?;
            let row = match write.op {
                Op::Upsert => Some(merged(&table, current, &write, version)?),
                Op::Delete => None,
            };
            let doc = row
                .as_ref()
                .map(|row| match table.encoder.encode(row, None) {
                    Encoded::Json(doc) => doc,
                    Encoded::Hash(_) => {
                        unreachable!("write-back tables are json (checked at start)")
                    }
                });
            let mut event = ChangeEvent::of_write(&write, at_us).map_err(Error::InvalidWrite)?;
            event.version = Some(version);
            let written = self
                .queue
                .write(
                    &key,
                    base,
                    version,
                    doc.as_deref(),
                    &event.to_bytes(),
                    at_us,
                )
                .await?;
            if written == CacheWrite::Done {
                return Ok(WriteReceipt {
                    committed_at_us: at_us,
                    version: Some(version),
                    redis: RedisOutcome::Applied(Applied {
                        written: 1,
                        ..Applied::default()
                    }),
                    row,
                });
            }
        }
        Err(Error::Strategy {
            strategy: StrategyKind::WriteBack.name(),
            reason: format!(
                "key {key} of {} changed under {MAX_ATTEMPTS} attempts in a row; nothing was written",
                table.name()
            ),
        })
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        // The flusher blocks on the stream: a connection of its own.
        let conn = crate::redis::connection::connect(&self.redis_url).await?;
        let queue = ChangeQueue::new(conn, self.config.queue.clone(), std::time::Duration::ZERO);
        flusher::Flusher {
            pool: self.pool.clone(),
            mysql_url: self.mysql_url.clone(),
            queue,
            applier: self.applier.clone(),
            tables: self.tables.clone(),
            batch_size: self.config.batch_size,
            max_delay: self.config.max_delay,
        }
        .run(shutdown)
        .await
    }
}

/// The lock stripe of `key`.
fn stripe_of(key: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() as usize) % STRIPES
}

/// The row after `write`: `current` (or, for a new row, NULLs) with the columns the
/// write sets, and the version column (if the table has one) at `version`.
fn merged(
    table: &SyncedTable,
    current: Option<Vec<Cell>>,
    write: &RowWrite,
    version: u64,
) -> Result<Vec<Cell>> {
    let names = table.encoder.names();
    let mut row = current.unwrap_or_else(|| vec![Cell::Null; names.len()]);
    for (name, value) in &write.values {
        let Some(position) = names.iter().position(|n| n == name) else {
            // A column that is not synced: MySQL gets it, the cache does not hold it.
            continue;
        };
        row[position] =
            crate::model::decode::from_sql(&table.types[position], value).map_err(|reason| {
                Error::InvalidWrite(format!("column {name} of {}: {reason}", table.name()))
            })?;
    }
    if let Some(position) = table.version_column {
        row[position] = Cell::UInt(version);
    }
    Ok(row)
}
