//! Online snapshots: a table copied from MySQL into Redis in primary-key chunks while the
//! strategy keeps running — for a table added to the config, a table asked for
//! (`cachesync snapshot --table`, `POST /v1/snapshots`), and every table after Redis lost
//! its data ([`watch`], and the binlog strategy's checkpoint).
//!
//! # How it works
//!
//! A chunk is a primary-key range of at most `snapshot.chunk_rows` keys, read with keyset
//! pagination (`WHERE pk > <last key> ORDER BY pk LIMIT n`, [`crate::model::table::ChunkSql`])
//! — a plain consistent read, no table lock, no long transaction — and written to Redis
//! through the shared [`Applier`] concurrently with the strategy's own writes, which never
//! wait for it: the stream pauses for nothing, and shares Redis with at most one chunk's
//! pipeline at a time. After each chunk, the progress record in Redis ([`record`]) moves
//! to the chunk's last key, so a daemon that crashes resumes where it was.
//!
//! # Why a chunk row never overwrites a newer change
//!
//! The strategy's changes and the chunks reach Redis in any order, so each chunk row must
//! lose against every change committed after it was read, whichever arrives first. That
//! is the version guard's job when the chunk row can carry a version of the strategy's
//! own version domain, and the read path's fill lease's when it cannot ([`Stamp`], chosen
//! per table by [`crate::strategy::StrategyKind::snapshot_stamp`]):
//!
//! - [`Stamp::ConsistentRead`] (binlog; versions are binlog positions
//!   `file_seq << 32 | offset`). Each chunk is read inside its own
//!   `START TRANSACTION WITH CONSISTENT SNAPSHOT` whose binlog position P the server
//!   reports for that very read view (MariaDB's `binlog_snapshot_file/position`), and
//!   its rows are stamped with version(P). The read view holds exactly the transactions
//!   logged before P, so every change already in the chunk has a smaller version (the
//!   chunk row wins, and equals or is newer than it) and every change not in it is logged
//!   after P with a larger one (it wins, whichever lands first). This is DBLog's
//!   watermark argument with the server placing the watermark: P is the low and the high
//!   watermark at once, so no key of the chunk has to be dropped and the chunk needs no
//!   help from the tailer. A low watermark read with `SHOW MASTER STATUS` before the
//!   `SELECT` would *not* do: a transaction can be in the binlog before it is visible
//!   to a new read view (binlog write, then engine commit), and its older image would
//!   then be written at a version above its own. (MySQL has no
//!   `binlog_snapshot_position`; there each chunk opens its read view under a brief
//!   `FLUSH TABLES WITH READ LOCK`, as the full snapshot does — a global pause of a few
//!   ms per chunk rather than no lock.) The stream must keep applying every change
//!   logged after the first chunk's P; it does, because a snapshot only runs while the
//!   tail resumes from a checkpoint at or before it.
//! - [`Stamp::RowVersion`] (dual-write, mq `direct`, on a table with a `version_column`):
//!   the synced changes carry the version column, which grows with every change of a row,
//!   so the chunk row carries the value it read: anything committed after the read is
//!   larger.
//! - [`Stamp::Lease`] (no version the row itself carries: no `version_column`, or the mq
//!   outbox whose versions are outbox ids): the chunk reads its keys first, takes the
//!   read path's lease on each key's read marker, then reads the rows and fills each
//!   only while its marker still holds the lease ([`Applier::refill`]). Every synced
//!   change deletes the marker in the same script call that writes it, so a change that
//!   reached Redis after the lease voids the fill, and one that reached Redis before it
//!   was committed before the rows were read and is part of what they show. The fill
//!   keeps the version the key already carries, so an older late change is still
//!   refused. What a lease cannot do: a key the fill writes while absent carries no
//!   version, so an *older* change still in flight (an event queued in the broker
//!   before the rows were read) can replace it for a moment until the newer one
//!   arrives — the same window as any read-path fill. Tables with a `version_column`
//!   (and mq `direct`) do not have it.
//!
//! # Completeness
//!
//! A row that exists when the last chunk is read was either inside a chunk's range when
//! the chunk was read (then it was copied, or a change newer than the copy reached Redis),
//! or moved into an already copied range later — by an insert or a primary-key change,
//! which is a change the strategy delivers. Rows deleted after their chunk are deleted by
//! their change, which a copy cannot undo (it is older).
//!
//! # Progress
//!
//! Logged every 2 s (rows done / estimated total, rows/s) and exported as
//! `cachesync_snapshot_rows_done`, `cachesync_snapshot_rows_total` and
//! `cachesync_snapshot_running` per table; `GET /v1/snapshots` shows the record.

pub mod chunk;
pub mod config;
pub mod record;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use self::config::SnapshotConfig;
use self::record::Entry;
use crate::error::{Error, Result, Retry};
use crate::metrics as m;
use crate::model::table::{Mode, SyncedTable};
use crate::redis::keyspace::DeploymentKeys;
use crate::redis::{Applier, RedisConn};

/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// How often an idle worker looks at the progress record for requests made by another
/// process (`cachesync snapshot --table` without an API, another daemon).
const IDLE_POLL: Duration = Duration::from_secs(5);

/// How a table's chunk rows are kept from overwriting newer synced changes (the module
/// doc says why each holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// Each chunk in its own consistent read, stamped with the version of its binlog
    /// position ([`ConsistentRead`]).
    ConsistentRead,
    /// Each row stamped with its `version_column`.
    RowVersion,
    /// Each row filled under a read lease that every synced change voids.
    Lease,
}

/// Opens a consistent-read transaction whose rows can be stamped with one version: every
/// change committed after the read view carries a larger version, every change visible
/// in it a smaller one (the binlog strategy's binlog position of the read view).
pub trait ConsistentRead: Send + Sync {
    /// Starts the transaction on `conn` and returns the version of its read view; the
    /// caller ends it.
    fn begin<'a>(&'a self, conn: &'a mut mysql_async::Conn) -> BoxFuture<'a, Result<u64>>;
}

/// A table an online snapshot can copy, and how.
pub struct Planned {
    pub table: Arc<SyncedTable>,
    pub stamp: Stamp,
}

/// What a snapshot request did for one table.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Requested {
    pub table: String,
    /// `started`, or `running` when a snapshot of the table was already under way (it
    /// carries on from where it is).
    pub state: &'static str,
}

/// One table's snapshot as `GET /v1/snapshots` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub table: String,
    pub reason: String,
    pub rows_done: u64,
    /// Estimated from `information_schema` until the snapshot ends.
    pub rows_total: Option<u64>,
    /// Over this process's part of the run; `None` when no chunk was copied here yet.
    pub rows_per_s: Option<u64>,
    pub requested_at_ms: u64,
    /// Set when the last attempt failed with an error retrying cannot fix.
    pub error: Option<String>,
}

/// A table's snapshot as this process runs it.
#[derive(Debug, Clone, Default)]
struct Live {
    total: Option<u64>,
    rate: Option<u64>,
    error: Option<String>,
}

/// The online snapshots of one deployment: requests, the worker that copies chunks, and
/// their progress. Cheap to clone.
#[derive(Clone)]
pub struct Snapshots {
    inner: Arc<Inner>,
}

struct Inner {
    pool: mysql_async::Pool,
    mysql_url: String,
    applier: Applier,
    redis: RedisConn,
    keys: DeploymentKeys,
    settings: SnapshotConfig,
    /// The `strategy` label of the metrics.
    strategy: &'static str,
    /// Configured tables in `write` mode, in config order.
    tables: Vec<Planned>,
    consistent: Option<Arc<dyn ConsistentRead>>,
    wake: Notify,
    live: Mutex<HashMap<String, Live>>,
}

/// What [`Snapshots::new`] needs.
pub struct Setup {
    pub pool: mysql_async::Pool,
    pub mysql_url: String,
    pub applier: Applier,
    pub keys: DeploymentKeys,
    pub settings: SnapshotConfig,
    pub strategy: &'static str,
    /// Every configured table with its stamp; `invalidate` tables are left out (readers
    /// fill their keys).
    pub tables: Vec<Planned>,
    /// Required when a table's stamp is [`Stamp::ConsistentRead`].
    pub consistent: Option<Arc<dyn ConsistentRead>>,
}

impl Snapshots {
    pub fn new(setup: Setup) -> Result<Snapshots> {
        let Setup {
            pool,
            mysql_url,
            applier,
            keys,
            settings,
            strategy,
            tables,
            consistent,
        } = setup;
        if consistent.is_none()
            && let Some(p) = tables.iter().find(|p| p.stamp == Stamp::ConsistentRead)
        {
            return Err(Error::Strategy {
                strategy,
                reason: format!(
                    "online snapshots of {} need a consistent read",
                    p.table.name()
                ),
            });
        }
        let tables = tables
            .into_iter()
            .filter(|p| p.table.config.mode == Mode::Write)
            .collect();
        Ok(Snapshots {
            inner: Arc::new(Inner {
                redis: applier.connection(),
                pool,
                mysql_url,
                applier,
                keys,
                settings,
                strategy,
                tables,
                consistent,
                wake: Notify::new(),
                live: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The keys of the deployment.
    pub fn keys(&self) -> &DeploymentKeys {
        &self.inner.keys
    }

    /// The `strategy` label of the metrics.
    pub fn strategy(&self) -> &'static str {
        self.inner.strategy
    }

    /// The names of the tables an online snapshot can copy (configured, `write` mode).
    pub fn table_names(&self) -> Vec<String> {
        self.inner.tables.iter().map(|p| p.table.name()).collect()
    }

    /// Checks that every name in `names` is a table an online snapshot can copy; the
    /// error says which is not and why.
    pub fn check(&self, names: &[String]) -> std::result::Result<(), UnknownTable> {
        for name in names {
            if !self.inner.tables.iter().any(|p| &p.table.name() == name) {
                return Err(UnknownTable {
                    name: name.clone(),
                    configured: self.table_names(),
                });
            }
        }
        Ok(())
    }

    /// New progress-record entries for `names` (every table when empty), for a caller
    /// that writes them in its own script together with something else (the binlog
    /// strategy's first checkpoint, the deployment marker).
    pub fn entries(&self, names: &[String], reason: &str) -> Vec<(String, String)> {
        let text = Entry::new(reason).to_text();
        self.inner
            .tables
            .iter()
            .map(|p| p.table.name())
            .filter(|name| names.is_empty() || names.contains(name))
            .map(|name| (name, text.clone()))
            .collect()
    }

    /// Asks for online snapshots of `names` (every table when empty); a table whose
    /// snapshot is already running keeps going. The worker starts at once.
    pub async fn request(&self, names: &[String], reason: &str) -> Result<Vec<Requested>> {
        self.check(names)
            .map_err(|e| Error::Config(vec![e.to_string()]))?;
        let entries = self.entries(names, reason);
        let mut redis = self.inner.redis.clone();
        let added = record::request(&mut redis, &self.inner.keys.snapshots, &entries).await?;
        let mut live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner());
        let requested = entries
            .iter()
            .zip(added)
            .map(|((table, _), added)| {
                // A new request retries a table whose last attempt failed.
                if let Some(l) = live.get_mut(table) {
                    l.error = None;
                }
                Requested {
                    table: table.clone(),
                    state: if added { "started" } else { "running" },
                }
            })
            .collect();
        drop(live);
        self.wake();
        Ok(requested)
    }

    /// Makes the worker look at the progress record now.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The configured tables whose snapshot is not finished, with their record entry.
    async fn pending(&self) -> Result<Vec<(usize, String)>> {
        let mut redis = self.inner.redis.clone();
        let entries = record::read(&mut redis, &self.inner.keys.snapshots).await?;
        let mut pending: Vec<(usize, String)> = entries
            .into_iter()
            .filter_map(|(table, entry)| {
                // Entries of tables this config does not sync belong to another process
                // of the deployment (or a table since removed): not ours to copy.
                let index = self
                    .inner
                    .tables
                    .iter()
                    .position(|p| p.table.name() == table)?;
                Some((index, entry))
            })
            .collect();
        pending.sort_by_key(|(index, _)| *index);
        Ok(pending)
    }

    /// The tables whose snapshot is not finished.
    pub async fn pending_tables(&self) -> Result<Vec<String>> {
        Ok(self
            .pending()
            .await?
            .into_iter()
            .map(|(i, _)| self.inner.tables[i].table.name())
            .collect())
    }

    /// The snapshots not finished, as the progress record and this process know them.
    pub async fn status(&self) -> Result<Vec<Progress>> {
        let pending = self.pending().await?;
        let live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner());
        Ok(pending
            .into_iter()
            .map(|(i, text)| {
                let table = self.inner.tables[i].table.name();
                let entry = Entry::parse(&text).unwrap_or_else(|_| Entry::new("unreadable"));
                let here = live.get(&table).cloned().unwrap_or_default();
                Progress {
                    rows_total: here.total.map(|t| t.max(entry.done)),
                    rows_done: entry.done,
                    rows_per_s: here.rate,
                    reason: entry.reason,
                    requested_at_ms: entry.since_ms,
                    error: here.error,
                    table,
                }
            })
            .collect())
    }

    /// Waits until the strategy has started (its checkpoint or marker is in Redis) and
    /// no configured table has a snapshot pending, at most `limit`: a freshly started
    /// daemon has loaded Redis.
    pub async fn wait_loaded(&self, limit: Duration) -> Result<()> {
        let began = Instant::now();
        loop {
            let mut redis = self.inner.redis.clone();
            let started: i64 = redis::cmd("EXISTS")
                .arg(&self.inner.keys.checkpoint)
                .arg(&self.inner.keys.marker)
                .query_async(&mut redis)
                .await
                .map_err(|e| Error::redis("reading the deployment's keys", e))?;
            let pending = if started > 0 {
                self.pending_tables().await?
            } else {
                vec!["(not started)".to_owned()]
            };
            if pending.is_empty() {
                return Ok(());
            }
            if began.elapsed() > limit {
                return Err(Error::Strategy {
                    strategy: self.inner.strategy,
                    reason: format!(
                        "online snapshots of {} not done within {limit:?}",
                        pending.join(", ")
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The worker: copies the pending snapshots, one table at a time in config order,
    /// until `shutdown` (a snapshot in progress stops after its current chunk and resumes
    /// there on the next start).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let mut retry_reading = Retry::new(
            "cannot read the online snapshot record; retrying",
            &shutdown,
        );
        loop {
            let pending = match self.pending().await {
                Ok(pending) => pending,
                Err(e) => {
                    if !retry_reading.again(e).await? {
                        return Ok(());
                    }
                    continue;
                }
            };
            let failed: HashSet<String> = {
                let live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner());
                live.iter()
                    .filter(|(_, l)| l.error.is_some())
                    .map(|(t, _)| t.clone())
                    .collect()
            };
            let todo: Vec<(usize, String)> = pending
                .into_iter()
                .filter(|(i, _)| !failed.contains(&self.inner.tables[*i].table.name()))
                .collect();
            if todo.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = self.inner.wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
            for (index, entry) in todo {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                let planned = &self.inner.tables[index];
                let table = planned.table.name();
                let copied = self.copy_table(planned, entry, &shutdown).await;
                // Done, paused, handed over or failed: not running here any more.
                metrics::gauge!(m::SNAPSHOT_RUNNING, "strategy" => self.inner.strategy, "table" => table.clone()).set(0.0);
                if let Err(e) = copied {
                    error!(
                        table,
                        error = %e,
                        "online snapshot stopped: the table stays incomplete in Redis until it is asked for again (cachesync snapshot --table) or the daemon restarts"
                    );
                    let mut live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner());
                    live.entry(table).or_default().error = Some(e.to_string());
                }
            }
        }
    }

    /// Copies `planned` from where `entry` says, chunk by chunk, until the table ends, its
    /// record entry changes under it, or `shutdown`.
    async fn copy_table(
        &self,
        planned: &Planned,
        mut held: String,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let inner = &self.inner;
        let table = planned.table.name();
        let strategy = inner.strategy;
        let table_label = table.clone();
        let mut entry = Entry::parse(&held).map_err(|reason| Error::Strategy {
            strategy: inner.strategy,
            reason: format!(
                "the online snapshot record of {table} in {} is unreadable ({reason}); delete that field to start over",
                inner.keys.snapshots
            ),
        })?;
        let mut conn = crate::mysql::get_conn(&inner.pool, &inner.mysql_url).await?;
        let total = crate::mysql::schema::estimated_rows(&mut conn, &planned.table).await;
        self.set_live(&table, |l| {
            l.total = total;
            l.rate = None;
            l.error = None;
        });
        metrics::gauge!(m::SNAPSHOT_RUNNING, "strategy" => strategy, "table" => table_label.clone()).set(1.0);
        metrics::gauge!(m::SNAPSHOT_ROWS_DONE, "strategy" => strategy, "table" => table_label.clone())
            .set(entry.done as f64);
        metrics::gauge!(m::SNAPSHOT_ROWS_TOTAL, "strategy" => strategy, "table" => table_label.clone())
            .set(total.unwrap_or(0).max(entry.done) as f64);
        info!(
            table,
            reason = entry.reason,
            rows_done = entry.done,
            total = total.map_or_else(|| "?".to_owned(), |t| format!("~{t}")),
            resumed = entry.after.is_some(),
            stamp = ?planned.stamp,
            "online snapshot {}",
            if entry.after.is_some() { "resumed" } else { "started" }
        );
        let started = Instant::now();
        let mut last_report = started;
        let mut copied_here: u64 = 0;
        let chunk_rows = inner.settings.chunk_rows;
        loop {
            if shutdown.is_cancelled() {
                info!(
                    table,
                    rows_done = entry.done,
                    "online snapshot paused by shutdown; it resumes on the next start"
                );
                return Ok(());
            }
            if let Some(rate) = inner.settings.max_rows_per_second {
                let due = Duration::from_secs_f64(copied_here as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::select! {
                        _ = shutdown.cancelled() => continue,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
            let mut retry = Retry::new("online snapshot chunk failed; retrying", shutdown);
            let copied = loop {
                let attempt = chunk::copy(
                    &mut conn,
                    &inner.applier,
                    inner.consistent.as_deref(),
                    planned,
                    entry.after.as_deref(),
                    chunk_rows,
                )
                .await;
                match attempt {
                    Ok(copied) => break copied,
                    Err(e) => {
                        let transient = e.is_transient();
                        if !retry.again(e).await? {
                            return Ok(());
                        }
                        if transient {
                            // The connection may be the broken part.
                            conn = crate::mysql::get_conn(&inner.pool, &inner.mysql_url).await?;
                        }
                    }
                }
            };
            copied_here += copied.keys as u64;
            entry.done += copied.keys as u64;
            let finished = copied.last_chunk;
            if let Some(last) = copied.last {
                entry.after = Some(last);
            }
            let next = (!finished).then(|| entry.to_text());
            let mut redis = inner.redis.clone();
            let moved = record::advance(
                &mut redis,
                &inner.keys.snapshots,
                &table,
                &held,
                next.as_deref(),
            )
            .await?;
            if !moved {
                info!(
                    table,
                    "the online snapshot record of the table changed under this worker (a new request after a data loss, or another process); re-reading it"
                );
                return Ok(());
            }
            let seconds = started.elapsed().as_secs_f64().max(1e-3);
            let rate = (copied_here as f64 / seconds) as u64;
            self.set_live(&table, |l| l.rate = Some(rate));
            metrics::gauge!(m::SNAPSHOT_ROWS_DONE, "strategy" => strategy, "table" => table_label.clone())
                .set(entry.done as f64);
            if finished {
                metrics::gauge!(m::SNAPSHOT_ROWS_TOTAL, "strategy" => strategy, "table" => table_label.clone())
                    .set(entry.done as f64);
                self.inner
                    .live
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&table);
                info!(
                    table,
                    rows = entry.done,
                    seconds = format!("{seconds:.1}"),
                    rows_per_s = rate,
                    "online snapshot done"
                );
                return Ok(());
            }
            held = next.unwrap_or_default();
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                info!(
                    table,
                    rows = entry.done,
                    total =
                        total.map_or_else(|| "?".to_owned(), |t| format!("~{}", t.max(entry.done))),
                    rows_per_s = rate,
                    "online snapshot progress"
                );
            }
            if copied.applied.stale > 0 {
                tracing::debug!(
                    table,
                    skipped = copied.applied.stale,
                    "chunk rows older than what Redis holds were skipped"
                );
            }
        }
    }

    fn set_live(&self, table: &str, update: impl FnOnce(&mut Live)) {
        let mut live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner());
        update(live.entry(table.to_owned()).or_default());
    }

    /// Runs the snapshots of `names` (every table when empty) in this process until they
    /// are done: `cachesync snapshot --table` when no daemon answers. Safe next to a
    /// running daemon: the chunks are guarded as the daemon's own are.
    pub async fn run_now(&self, names: &[String], reason: &str) -> Result<()> {
        self.request(names, reason).await?;
        let wanted: Vec<String> = if names.is_empty() {
            self.table_names()
        } else {
            names.to_vec()
        };
        let stop = CancellationToken::new();
        let worker = {
            let this = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move { this.run(stop).await })
        };
        let outcome = loop {
            let pending = self.pending_tables().await?;
            let failed = {
                let live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner());
                wanted.iter().find_map(|t| {
                    live.get(t)
                        .and_then(|l| l.error.clone())
                        .map(|e| (t.clone(), e))
                })
            };
            if let Some((table, e)) = failed {
                break Err(Error::Strategy {
                    strategy: self.inner.strategy,
                    reason: format!("the online snapshot of {table} failed: {e}"),
                });
            }
            if !wanted.iter().any(|t| pending.contains(t)) {
                break Ok(());
            }
            if worker.is_finished() {
                break Err(Error::Strategy {
                    strategy: self.inner.strategy,
                    reason: "the snapshot worker stopped".to_owned(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        stop.cancel();
        let ran = worker.await.map_err(|e| Error::Strategy {
            strategy: self.inner.strategy,
            reason: format!("the snapshot worker failed: {e}"),
        })?;
        outcome.and(ran)
    }
}

/// A table name an online snapshot cannot copy.
#[derive(Debug, Clone)]
pub struct UnknownTable {
    pub name: String,
    pub configured: Vec<String>,
}

impl std::fmt::Display for UnknownTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is not a configured table in write mode (invalidate tables are filled by readers); tables: {}",
            self.name,
            self.configured.join(", ")
        )
    }
}

/// Counts and reports a data loss of Redis noticed by `strategy` (`what` says how).
pub fn report_loss(strategy: &'static str, what: &str) {
    metrics::counter!(m::REDIS_DATA_LOSS, "strategy" => strategy).increment(1);
    warn!(
        strategy,
        "Redis lost data ({what}); rebuilding every table from MySQL online (progress: cachesync_snapshot_rows_done, GET /v1/snapshots)"
    );
}
