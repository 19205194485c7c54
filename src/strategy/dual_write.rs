//! Dual-write: the application's write commits to MySQL, then writes Redis.
//!
//! Lowest propagation latency and no moving parts, but the two writes are not atomic, and
//! this module does not pretend otherwise:
//!
//! - **Redis fails after the commit.** The row is committed; the key is stale. The write
//!   retries the Redis write briefly ([`DualWriteOptions::inline_attempts`] tries within
//!   [`DualWriteOptions::inline_budget`], 3 tries / 200 ms by default), so a blip costs the
//!   caller a few milliseconds and a dead Redis never blocks it for long. If Redis still
//!   fails with a retryable error (connection refused or dropped, timeout, `LOADING`,
//!   `READONLY`, …), the key goes into a bounded in-process **repair queue** and the write
//!   returns `Ok` with [`RedisOutcome::Pending`]: committed, Redis pending. A
//!   background task retries the queue with exponential backoff (100 ms → 1 s) until
//!   Redis is back. Every failed Redis attempt — inline or repair — is counted in
//!   `cachesync_apply_errors_total` (by the applier, or here when an attempt is cut off by
//!   its time limit) and in [`RepairStats::failed_attempts`]; the keys still stale are
//!   [`DualWrite::pending_repairs`].
//!
//!   What is left stale, and when: a pending key serves its previous value (or nothing)
//!   until its repair lands. When the queue is full ([`DualWriteOptions::repair_capacity`]
//!   distinct keys; writes of a key already queued share its entry) the write returns an
//!   error saying the row is committed and its key stale, logged at `error` — memory does
//!   not grow. A non-retryable Redis error (`WRONGTYPE`, `OOM`, a script error) is not
//!   queued: the write returns the error, and the key stays stale until the next
//!   successful write of that row. On shutdown, [`SyncStrategy::run`] drains the queue
//!   (retrying at most 1 s apart) until it is empty or the daemon's drain limit stops it;
//!   then the keys left stale are logged. The queue is in memory: a crash loses it, and
//!   those keys stay stale until their rows are written again (`cachesync verify`, issue
//!   #5, finds them).
//!
//! - **Repairs re-read the row.** A repair does not replay the image the failed write
//!   carried: by the time Redis is back the row may have been written again, and for a
//!   table without `version_column` replaying the old image would overwrite the newer
//!   value. Instead the repair reads the row's *current* state by primary key
//!   (`select_sql … WHERE pk = ? LOCK IN SHARE MODE`) and writes that (or deletes the key
//!   when the row is gone). The shared lock is held until Redis answered (at most
//!   [`DualWriteOptions::repair_apply_timeout`]), so a writer that commits after the
//!   repair's read also reaches Redis after the repair: a repair never regresses a key,
//!   versioned or not. (The lock makes writers of that one row wait for one Redis round
//!   trip.) Re-reading also makes many failed writes of one row one repair.
//!
//! - **Concurrent writers of one row** can reach Redis in the opposite order of their
//!   commits (A commits, B commits, B writes Redis, A writes Redis). With a
//!   `version_column` the applier's guard drops A's older image; without one A's image
//!   wins and the key stays stale until the next write of the row. No retry fixes this;
//!   only a version does.
//!
//! The Redis value is not built from the request but is the committed row read back by
//! [`crate::sqlwrite::commit`], exactly as a `SELECT` shows it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use mysql_async::prelude::Queryable;
use mysql_async::{Params, TxOpts, Value};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{RedisOutcome, RowWrite, StrategyKind, SyncStrategy, WriteReceipt};
use crate::applier::{Applied, Applier, Change, Op, unix_micros};
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::row::Cell;
use crate::schema::{SyncedTable, quote_ident};

/// Retry and repair settings of [`DualWrite`]. The defaults suit a Redis on the same
/// network; tests shorten or lengthen them.
#[derive(Debug, Clone)]
pub struct DualWriteOptions {
    /// Redis attempts inside the write call before the key is handed to the repair queue.
    pub inline_attempts: u32,
    /// Most time the write call spends on Redis (all inline attempts and pauses).
    pub inline_budget: Duration,
    /// Pause after the first failed inline attempt; doubles after each.
    pub inline_backoff: Duration,
    /// Most distinct keys waiting for repair; beyond it writes fail loudly.
    pub repair_capacity: usize,
    /// First repair delay after a failure (also how long a queued key waits before its
    /// first repair); doubles per failed repair up to `repair_backoff_max`.
    pub repair_backoff_min: Duration,
    pub repair_backoff_max: Duration,
    /// Most time one repair's Redis write may take while it holds the row's shared lock.
    pub repair_apply_timeout: Duration,
}

impl Default for DualWriteOptions {
    fn default() -> Self {
        DualWriteOptions {
            inline_attempts: 3,
            inline_budget: Duration::from_millis(200),
            inline_backoff: Duration::from_millis(20),
            repair_capacity: 10_000,
            repair_backoff_min: Duration::from_millis(100),
            repair_backoff_max: crate::error::Backoff::MAX,
            repair_apply_timeout: Duration::from_secs(1),
        }
    }
}

/// Longest pause between repair attempts while the daemon drains.
const DRAIN_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How many stale keys a log line names.
const KEYS_SHOWN: usize = 10;

/// What the repair path did so far (since [`DualWrite`] was built).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// Redis writes of rows that failed, inline or during a repair; each one is also
    /// counted in `cachesync_apply_errors_total`.
    pub failed_attempts: u64,
    /// Writes that returned with their key queued for repair (Redis pending).
    pub queued: u64,
    /// Repairs that reached Redis.
    pub repaired: u64,
    /// Writes refused a repair because the queue was full: committed, key left stale,
    /// the write returned an error.
    pub rejected: u64,
    /// Repairs given up after a non-retryable error: key left stale.
    pub abandoned: u64,
    /// Keys waiting for (or in) a repair right now.
    pub pending: usize,
}

/// The dual-write strategy.
pub struct DualWrite {
    pool: mysql_async::Pool,
    applier: Applier,
    options: DualWriteOptions,
    repairs: Arc<Repairs>,
    /// The repair task, started by the first write that needs it.
    worker: OnceLock<JoinHandle<()>>,
}

impl DualWrite {
    /// Dual-write with the default [`DualWriteOptions`].
    pub fn new(pool: mysql_async::Pool, applier: Applier) -> DualWrite {
        DualWrite::with_options(pool, applier, DualWriteOptions::default())
    }

    pub fn with_options(
        pool: mysql_async::Pool,
        applier: Applier,
        options: DualWriteOptions,
    ) -> DualWrite {
        DualWrite {
            pool,
            applier,
            options,
            repairs: Arc::new(Repairs::default()),
            worker: OnceLock::new(),
        }
    }

    /// Keys whose Redis value may be stale because a write's Redis part failed and its
    /// repair has not landed yet.
    pub fn pending_repairs(&self) -> usize {
        *self.repairs.pending.borrow()
    }

    /// Counters of the Redis-failure path.
    pub fn stats(&self) -> RepairStats {
        let c = &self.repairs.counters;
        RepairStats {
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            repaired: c.repaired.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            abandoned: c.abandoned.load(Ordering::Relaxed),
            pending: self.pending_repairs(),
        }
    }

    /// The inline part: a few quick attempts within the budget.
    async fn apply_inline(&self, change: &Change) -> Result<Applied> {
        let deadline = Instant::now() + self.options.inline_budget;
        let mut pause = self.options.inline_backoff;
        let mut attempt = 1;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = apply_within(&self.applier, &self.repairs, change, left).await;
            match outcome {
                Ok(applied) => return Ok(applied),
                Err(e)
                    if e.is_transient()
                        && attempt < self.options.inline_attempts
                        && Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues `change`'s key for repair, starting the repair task if needed.
    fn queue_repair(&self, write: &RowWrite, change: &Change, failure: &Error) -> Result<()> {
        let table = &change.table;
        let key = table.key_of(&change.row);
        let key_params = key_params(write)?;
        let key_row: Vec<Cell> = change
            .row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if is_key_position(table, i) {
                    cell.clone()
                } else {
                    Cell::Null
                }
            })
            .collect();
        let pending = Pending {
            table: table.clone(),
            key_params,
            key_row,
            first_committed_at_us: change.committed_at_us.unwrap_or(0),
            not_before: Instant::now() + self.options.repair_backoff_min,
        };
        match self
            .repairs
            .enqueue(key.clone(), pending, self.options.repair_capacity)
        {
            Ok(waiting) => {
                self.repairs.counters.queued.fetch_add(1, Ordering::Relaxed);
                warn!(
                    table = %table.name(),
                    key = %key,
                    error = %failure,
                    pending = waiting,
                    "Redis write failed after the commit; the key is stale until its repair lands"
                );
                self.worker.get_or_init(|| {
                    tokio::spawn(repair_worker(
                        self.repairs.clone(),
                        self.pool.clone(),
                        self.applier.clone(),
                        self.options.clone(),
                    ))
                });
                self.repairs.wake.notify_one();
                Ok(())
            }
            Err(full) => {
                self.repairs
                    .counters
                    .rejected
                    .fetch_add(1, Ordering::Relaxed);
                let reason = format!(
                    "the row of {} is committed in MySQL but Redis key {key} is stale: writing it \
                     failed ({failure}) and the repair queue is full ({full} keys pending); the \
                     key stays stale until the next successful write of this row",
                    table.name()
                );
                error!("{reason}");
                Err(Error::Strategy {
                    strategy: StrategyKind::DualWrite.name(),
                    reason,
                })
            }
        }
    }
}

impl Drop for DualWrite {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.get() {
            worker.abort();
        }
        self.repairs.report_left_stale("dual-write stopped");
    }
}

impl SyncStrategy for DualWrite {
    fn kind(&self) -> StrategyKind {
        StrategyKind::DualWrite
    }

    async fn write(&self, write: RowWrite) -> Result<WriteReceipt> {
        let started = Instant::now();
        let table = write.table.clone();
        let image = crate::sqlwrite::commit(&self.pool, &write).await?;
        let committed_at_us = unix_micros(SystemTime::now());
        let (op, row) = match image {
            Some(row) => (Op::Upsert, row),
            // A delete only needs the key: the primary-key cells, others NULL.
            None => (Op::Delete, crate::sqlwrite::key_only_row(&table, &write)?),
        };
        let version = table.version_of(&row);
        let change = Change {
            table: table.clone(),
            op,
            row,
            version,
            committed_at_us: Some(committed_at_us),
        };
        let redis = match self.apply_inline(&change).await {
            Ok(applied) => RedisOutcome::Applied(applied),
            Err(e) if e.is_transient() => {
                self.queue_repair(&write, &change, &e)?;
                RedisOutcome::Pending
            }
            Err(e) => {
                return Err(Error::Strategy {
                    strategy: StrategyKind::DualWrite.name(),
                    reason: format!(
                        "the row of {} is committed in MySQL but Redis key {} was not written, \
                         and this error is not retried: {e}; the key stays stale until the next \
                         successful write of this row",
                        table.name(),
                        table.key_of(&change.row)
                    ),
                });
            }
        };
        metrics::histogram!(m::WRITE_DURATION, "strategy" => self.kind().name(), "table" => table.name())
            .record(started.elapsed().as_secs_f64());
        Ok(WriteReceipt {
            committed_at_us,
            version,
            redis,
            row: (op == Op::Upsert).then_some(change.row),
        })
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        // Writers do the work; in the background only repairs run (their task starts
        // with the first failed write). On shutdown, drain them.
        shutdown.cancelled().await;
        let pending = self.pending_repairs();
        if pending == 0 {
            return Ok(());
        }
        info!(pending, "draining the dual-write repair queue");
        self.repairs.draining.store(true, Ordering::Relaxed);
        self.repairs.wake.notify_one();
        // Dropped before the queue is empty (the daemon's drain limit): say what is stale.
        let mut left_stale = LeftStaleOnDrop(Some(&self.repairs));
        let mut pending = self.repairs.pending.subscribe();
        let _ = pending.wait_for(|&n| n == 0).await;
        left_stale.0 = None;
        info!("dual-write repair queue drained");
        Ok(())
    }
}

/// Logs the keys left stale if the drain is cut short.
struct LeftStaleOnDrop<'a>(Option<&'a Repairs>);

impl Drop for LeftStaleOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(repairs) = self.0 {
            repairs.report_left_stale("drain limit reached");
        }
    }
}

/// Applies `change` within `limit`; counts a failure once (the applier counts its own
/// errors in `cachesync_apply_errors_total`; an attempt cut off by the limit is counted
/// here, since the applier never saw it end).
async fn apply_within(
    applier: &Applier,
    repairs: &Repairs,
    change: &Change,
    limit: Duration,
) -> Result<Applied> {
    let outcome = match tokio::time::timeout(limit, applier.apply(std::slice::from_ref(change)))
        .await
    {
        Ok(outcome) => outcome,
        Err(_) => {
            metrics::counter!(m::APPLY_ERRORS, "strategy" => StrategyKind::DualWrite.name(), "table" => change.table.name())
                .increment(1);
            Err(Error::Redis {
                context: format!(
                    "writing key {} of {}",
                    change.table.key_of(&change.row),
                    change.table.name()
                ),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} ms", limit.as_millis()),
                )
                .into(),
            })
        }
    };
    if outcome.is_err() {
        repairs
            .counters
            .failed_attempts
            .fetch_add(1, Ordering::Relaxed);
    }
    outcome
}

/// The write's primary-key values in primary-key order, for the repair's `WHERE`.
fn key_params(write: &RowWrite) -> Result<Vec<Value>> {
    let schema = &write.table.schema;
    schema
        .primary_key
        .iter()
        .map(|&i| {
            let name = &schema.columns[i].name;
            write
                .values
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    Error::InvalidWrite(format!(
                        "primary-key column {name} of {} is missing",
                        write.table.name()
                    ))
                })
        })
        .collect()
}

fn is_key_position(table: &SyncedTable, i: usize) -> bool {
    table
        .selected
        .get(i)
        .is_some_and(|column| table.schema.primary_key.contains(column))
}

/// `select_sql WHERE pk = ? … LOCK IN SHARE MODE`: the row's current state, locked
/// against writers until the repair's Redis write is done. (`LOCK IN SHARE MODE` works on
/// MariaDB and MySQL alike.)
fn locked_select_sql(table: &SyncedTable) -> String {
    let schema = &table.schema;
    let key_where = schema
        .primary_key
        .iter()
        .map(|&i| format!("{} = ?", quote_ident(&schema.columns[i].name)))
        .collect::<Vec<_>>()
        .join(" AND ");
    format!("{} WHERE {key_where} LOCK IN SHARE MODE", table.select_sql)
}

/// A key waiting for repair.
struct Pending {
    table: Arc<SyncedTable>,
    /// Primary-key values, in primary-key order.
    key_params: Vec<Value>,
    /// The key cells (others NULL): renders the key, and is the row of a delete.
    key_row: Vec<Cell>,
    /// When the first write that left the key stale committed; the repair's
    /// `cachesync_propagation_seconds` sample measures from it (how long it was stale).
    first_committed_at_us: u64,
    /// Not repaired before this (unless draining).
    not_before: Instant,
}

#[derive(Default)]
struct Queue {
    /// Keys in repair order; each is in `entries` exactly once.
    order: VecDeque<String>,
    entries: HashMap<String, Pending>,
    /// The key being repaired (taken out of `entries`, so a write failing meanwhile
    /// queues it again instead of merging into a repair that may have read too early).
    in_flight: Option<String>,
}

impl Queue {
    fn pending(&self) -> usize {
        self.entries.len() + usize::from(self.in_flight.is_some())
    }
}

#[derive(Default)]
struct Counters {
    failed_attempts: AtomicU64,
    queued: AtomicU64,
    repaired: AtomicU64,
    rejected: AtomicU64,
    abandoned: AtomicU64,
}

/// State shared by the writers and the repair task.
struct Repairs {
    queue: Mutex<Queue>,
    /// Wakes the repair task: a key was queued, or the drain began.
    wake: Notify,
    /// The number of pending keys (for `run`'s drain to wait on).
    pending: watch::Sender<usize>,
    draining: AtomicBool,
    counters: Counters,
}

impl Default for Repairs {
    fn default() -> Self {
        Repairs {
            queue: Mutex::default(),
            wake: Notify::new(),
            pending: watch::channel(0).0,
            draining: AtomicBool::new(false),
            counters: Counters::default(),
        }
    }
}

impl Repairs {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock; a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, queue: &Queue) {
        let pending = queue.pending();
        self.pending.send_replace(pending);
        metrics::gauge!(m::REPAIRS_PENDING, "strategy" => StrategyKind::DualWrite.name())
            .set(pending as f64);
    }

    /// Queues `key`; a key already queued keeps its place and its first commit time.
    /// `Err(pending)` when the queue is full.
    fn enqueue(
        &self,
        key: String,
        pending: Pending,
        capacity: usize,
    ) -> std::result::Result<usize, usize> {
        let mut queue = self.lock();
        if !queue.entries.contains_key(&key) {
            if queue.entries.len() >= capacity {
                return Err(queue.pending());
            }
            queue.order.push_back(key.clone());
            queue.entries.insert(key, pending);
        }
        self.publish(&queue);
        Ok(queue.pending())
    }

    /// When the head of the queue is due, if there is one.
    fn head_due(&self) -> Option<Instant> {
        let queue = self.lock();
        let key = queue.order.front()?;
        queue.entries.get(key).map(|p| p.not_before)
    }

    /// Takes the head of the queue and marks it in flight.
    fn take_head(&self) -> Option<(String, Pending)> {
        let mut queue = self.lock();
        let key = queue.order.pop_front()?;
        let pending = queue.entries.remove(&key)?;
        queue.in_flight = Some(key.clone());
        Some((key, pending))
    }

    /// Ends the in-flight repair; `retry` puts its key back at the head (merged with a
    /// write that queued it meanwhile).
    fn finish(&self, key: String, retry: Option<Pending>) {
        let mut queue = self.lock();
        queue.in_flight = None;
        if let Some(pending) = retry {
            match queue.entries.get_mut(&key) {
                Some(queued) => {
                    queued.first_committed_at_us = queued
                        .first_committed_at_us
                        .min(pending.first_committed_at_us);
                }
                None => {
                    queue.order.push_front(key.clone());
                    queue.entries.insert(key, pending);
                }
            }
        }
        self.publish(&queue);
    }

    /// Logs the keys still pending, if any, as left stale.
    fn report_left_stale(&self, why: &str) {
        let queue = self.lock();
        let pending = queue.pending();
        if pending == 0 {
            return;
        }
        let keys: Vec<&str> = queue
            .in_flight
            .iter()
            .chain(queue.order.iter())
            .take(KEYS_SHOWN)
            .map(String::as_str)
            .collect();
        error!(
            pending,
            keys = %keys.join(" "),
            "{why}: {pending} Redis keys left stale (their rows are committed in MySQL; they \
             stay stale until the rows are written again)"
        );
    }
}

/// The repair task: takes due keys in order, re-reads their rows and writes them to
/// Redis; after a failure waits (100 ms doubling to 5 s; at most 1 s apart while
/// draining) before the next attempt.
async fn repair_worker(
    repairs: Arc<Repairs>,
    pool: mysql_async::Pool,
    applier: Applier,
    options: DualWriteOptions,
) {
    let mut backoff = options.repair_backoff_min;
    let mut retry_at = Instant::now();
    loop {
        let Some(due) = repairs.head_due() else {
            repairs.wake.notified().await;
            continue;
        };
        let draining = repairs.draining.load(Ordering::Relaxed);
        let at = if draining {
            retry_at.min(Instant::now() + DRAIN_BACKOFF_MAX)
        } else {
            retry_at.max(due)
        };
        if at > Instant::now() {
            // A queued key or the drain's start may change what is due: look again.
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = repairs.wake.notified() => continue,
            }
        }
        let Some((key, pending)) = repairs.take_head() else {
            continue;
        };
        match repair_once(&pool, &applier, &repairs, &pending, &options).await {
            Ok(_) => {
                repairs.counters.repaired.fetch_add(1, Ordering::Relaxed);
                let stale_ms = unix_micros(SystemTime::now())
                    .saturating_sub(pending.first_committed_at_us)
                    / 1000;
                repairs.finish(key.clone(), None);
                info!(
                    key = %key,
                    stale_ms,
                    pending = *repairs.pending.borrow(),
                    "repaired a stale Redis key"
                );
                backoff = options.repair_backoff_min;
                retry_at = Instant::now();
            }
            Err(e) if e.is_transient() => {
                repairs.finish(key.clone(), Some(pending));
                let max = if repairs.draining.load(Ordering::Relaxed) {
                    DRAIN_BACKOFF_MAX.min(options.repair_backoff_max)
                } else {
                    options.repair_backoff_max
                };
                backoff = backoff.min(max);
                warn!(
                    key = %key,
                    error = %e,
                    pending = *repairs.pending.borrow(),
                    retry_in_ms = backoff.as_millis() as u64,
                    "repair of a stale Redis key failed; retrying"
                );
                retry_at = Instant::now() + backoff;
                backoff = (backoff * 2).min(max);
            }
            Err(e) => {
                repairs.counters.abandoned.fetch_add(1, Ordering::Relaxed);
                repairs.finish(key.clone(), None);
                error!(
                    key = %key,
                    error = %e,
                    "repair of a stale Redis key failed with an error retrying cannot fix; the \
                     key stays stale until its row is written again"
                );
            }
        }
    }
}

/// One repair: read the row's current state under a shared lock, write it to Redis (or
/// delete the key when the row is gone), release the lock.
async fn repair_once(
    pool: &mysql_async::Pool,
    applier: &Applier,
    repairs: &Repairs,
    pending: &Pending,
    options: &DualWriteOptions,
) -> Result<Applied> {
    let table = &pending.table;
    let mut conn = pool
        .get_conn()
        .await
        .map_err(|e| Error::mysql("repairing a stale key: connecting", e))?;
    let mut tx = conn
        .start_transaction(TxOpts::default())
        .await
        .map_err(|e| Error::mysql("repairing a stale key: BEGIN", e))?;
    let found: Option<mysql_async::Row> = tx
        .exec_first(
            locked_select_sql(table),
            Params::Positional(pending.key_params.clone()),
        )
        .await
        .map_err(|e| {
            Error::mysql(
                format!("repairing a stale key: reading the row of {}", table.name()),
                e,
            )
        })?;
    let change = match found {
        Some(row) => {
            let row = table.decode_sql_row(&row)?;
            Change {
                table: table.clone(),
                op: Op::Upsert,
                version: table.version_of(&row),
                row,
                committed_at_us: Some(pending.first_committed_at_us),
            }
        }
        // Gone: delete the key, unconditionally (like a dual-write delete).
        None => Change {
            table: table.clone(),
            op: Op::Delete,
            row: pending.key_row.clone(),
            version: None,
            committed_at_us: Some(pending.first_committed_at_us),
        },
    };
    let outcome = apply_within(applier, repairs, &change, options.repair_apply_timeout).await;
    // Read-only: ending it releases the shared lock. If that fails the connection is
    // dropped, which releases it too.
    tx.rollback().await.ok();
    outcome
}
