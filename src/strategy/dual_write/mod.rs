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
//! [`crate::mysql::write::commit`], exactly as a `SELECT` shows it. The repair queue and
//! its task live in [`repair`].

mod repair;

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use self::repair::{LeftStaleOnDrop, Pending, Repairs, apply_within, repair_worker};
use super::{RedisOutcome, StrategyKind, SyncStrategy, WriteReceipt};
use crate::error::{Error, Result};
use crate::model::cell::Cell;
use crate::model::change::{Applied, Change, Op, RowWrite, unix_micros};
use crate::redis::Applier;
use crate::snapshot::Snapshots;

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
    /// Keeps Redis complete: loads it online when it is empty or lost its data, and
    /// snapshots tables on request ([`crate::snapshot::watch`]). `None` when built for
    /// the write path only.
    snapshots: Option<Snapshots>,
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
            snapshots: None,
        }
    }

    /// Also keeps Redis complete with `snapshots` while [`SyncStrategy::run`] runs.
    pub fn with_snapshots(mut self, snapshots: Snapshots) -> DualWrite {
        self.snapshots = Some(snapshots);
        self
    }

    pub fn snapshots(&self) -> Option<&Snapshots> {
        self.snapshots.as_ref()
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
        let key_params = write.key_params()?;
        let key_row: Vec<Cell> = change
            .row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if table.is_key_position(i) {
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
        let table = write.table.clone();
        let written = crate::mysql::write::commit(&self.pool, &write).await?;
        let committed_at_us = unix_micros(SystemTime::now());
        // Keyed by the row MySQL changed; a delete carries its key cells and a version
        // above the deleted row's (its tombstone then refuses every image of that row).
        let (op, row) = written.change_row(&table, &write)?;
        let version = crate::model::change::version_of_change(&table, op, &row);
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
        Ok(WriteReceipt {
            committed_at_us,
            version,
            redis,
            row: (op == Op::Upsert).then_some(change.row),
        })
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        // Writers do the work; in the background only repairs run (their task starts
        // with the first failed write), and the online snapshots that keep Redis
        // complete. On shutdown, drain the repairs.
        let keeper = self
            .snapshots
            .clone()
            .map(|s| crate::snapshot::watch::spawn(s, shutdown.clone()));
        shutdown.cancelled().await;
        if let Some(keeper) = keeper {
            keeper.await.map_err(|e| Error::Strategy {
                strategy: StrategyKind::DualWrite.name(),
                reason: format!("the snapshot task failed: {e}"),
            })??;
        }
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
