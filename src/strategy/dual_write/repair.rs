//! The dual-write repair queue: keys whose Redis write failed after the commit, and the
//! task that repairs them by re-reading their rows (see the parent module's doc for why
//! a repair never regresses a key).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use mysql_async::prelude::Queryable;
use mysql_async::{Params, TxOpts, Value};
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use super::DualWriteOptions;
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::model::cell::Cell;
use crate::model::change::{Applied, Change, Op, unix_micros};
use crate::model::table::SyncedTable;
use crate::redis::Applier;
use crate::strategy::StrategyKind;

/// Longest pause between repair attempts while the daemon drains.
const DRAIN_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How many stale keys a log line names.
const KEYS_SHOWN: usize = 10;

/// Logs the keys left stale if the drain is cut short.
pub(super) struct LeftStaleOnDrop<'a>(pub(super) Option<&'a Repairs>);

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
pub(super) async fn apply_within(
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

/// A key waiting for repair.
pub(super) struct Pending {
    pub(super) table: Arc<SyncedTable>,
    /// Primary-key values, in primary-key order.
    pub(super) key_params: Vec<Value>,
    /// The key cells (others NULL): renders the key, and is the row of a delete.
    pub(super) key_row: Vec<Cell>,
    /// When the first write that left the key stale committed; the repair's
    /// `cachesync_propagation_seconds` sample measures from it (how long it was stale).
    pub(super) first_committed_at_us: u64,
    /// Not repaired before this (unless draining).
    pub(super) not_before: Instant,
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
pub(super) struct Counters {
    pub(super) failed_attempts: AtomicU64,
    pub(super) queued: AtomicU64,
    pub(super) repaired: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) abandoned: AtomicU64,
}

/// State shared by the writers and the repair task.
pub(super) struct Repairs {
    queue: Mutex<Queue>,
    /// Wakes the repair task: a key was queued, or the drain began.
    pub(super) wake: Notify,
    /// The number of pending keys (for `run`'s drain to wait on).
    pub(super) pending: watch::Sender<usize>,
    pub(super) draining: AtomicBool,
    pub(super) counters: Counters,
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
    pub(super) fn enqueue(
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
    pub(super) fn report_left_stale(&self, why: &str) {
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
pub(super) async fn repair_worker(
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
            table.sql.select_shared.as_str(),
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
