//! Continuous verification (anti-entropy): what `cachesync verify --repair` does, run
//! inside `cachesync run` next to the strategy, forever, at a chosen cost. On when the
//! config has a `[verify]` section ([`crate::config::verify`]), for any strategy.
//!
//! # Why
//!
//! Some writes reach no strategy: one made with `SET sql_log_bin = 0`, a fix made on a
//! replica, changes made while cachesync could not read the binlog it needed, a cascade
//! that dual-write or mq never saw. Nothing else notices them. This measures cache
//! consistency instead of assuming it — the figure Meta's Polaris made famous — per
//! table: keys checked, found divergent, repaired.
//!
//! # A pass
//!
//! With the binlog strategy the first pass waits for the checkpoint (the start-up
//! snapshot's end). Then every `interval` a pass walks every configured table, at most `rows_per_second` keys a
//! second in all:
//!
//! 1. MySQL → Redis: the rows in primary-key order, `batch` rows per short statement
//!    ([`crate::mysql::lookup::page`]: no read view stays open across a slow pass), each
//!    page compared with its Redis keys in one pipeline exactly as `verify` compares
//!    (a missing key, or a value that differs from the row's encoding) — except that a
//!    missing key of a table with a `ttl` may simply have expired, and is left alone;
//! 2. Redis → MySQL: the table's keys by `SCAN`, looked up by primary key 50 to a
//!    statement — a key without a row is *extra* (a row deleted behind the strategy's
//!    back).
//!
//! A key found divergent may only be a change on its way through the strategy, so it is
//! given `grace_ms`, compared again, and only then counted
//! (`cachesync_verify_divergent_found_total`), logged with its table and key, and — with
//! `repair` — rewritten by `verify`'s repair, which never regresses a newer value
//! (version-guarded, locking re-read, the binlog checkpoint as floor: see
//! [`super::verify`]). A key equal to MySQL afterwards counts in
//! `cachesync_verify_repaired_total`. A table whose check fails (MySQL or Redis away) is
//! logged and tried again next pass; the strategy is never disturbed.
//!
//! # Cost
//!
//! Per key checked: one row of a primary-key range read (phase 1) or one index look-up
//! in a statement of 50 (phase 2), and a Redis read. What that costs the database is measured in
//! `docs/operations.md` (rows/s checked against MariaDB's CPU).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::verify::{self, Divergent, Verdict};
use crate::config::verify::VerifyConfig;
use crate::error::Result;
use crate::metrics as m;
use crate::model::cell::Cell;
use crate::model::table::SyncedTable;
use crate::mysql::lookup;
use crate::redis::rows::scan_page;
use crate::redis::{Applier, RedisConn};
use crate::strategy::Services;

/// What one run of continuous verification needs besides its settings.
pub struct Target {
    pub services: Services,
    /// The `strategy` label of the metrics.
    pub strategy: &'static str,
    /// The binlog checkpoint's key when the strategy tails the binlog: a floor for the
    /// repairs' versions, and not a row.
    pub checkpoint_key: Option<String>,
}

/// Runs passes until `shutdown`.
pub async fn run(target: Target, config: VerifyConfig, shutdown: CancellationToken) {
    info!(
        interval_s = config.interval.as_secs(),
        rows_per_second = config.rows_per_second,
        repair = config.repair,
        "continuous verification on"
    );
    if let Some(key) = &target.checkpoint_key
        && !wait_for_checkpoint(&target, key, &shutdown).await
    {
        return;
    }
    loop {
        let started = Instant::now();
        // The rate holds across the tables of a pass; each pass starts afresh.
        let mut pace = Pace::new(config.rows_per_second);
        for table in &target.services.tables {
            let mut check = TableCheck {
                target: &target,
                config: &config,
                table,
                pace: &mut pace,
                shutdown: &shutdown,
                counts: Counts::default(),
            };
            match check.run().await {
                Ok(()) => {
                    let counts = check.counts;
                    if shutdown.is_cancelled() {
                        return;
                    }
                    metrics::counter!(m::VERIFY_PASSES, "strategy" => target.strategy, "table" => table.name())
                        .increment(1);
                    info!(
                        table = %table.name(),
                        checked = counts.checked,
                        divergent = counts.divergent,
                        repaired = counts.repaired,
                        "continuous verification pass done"
                    );
                }
                Err(e) => warn!(
                    table = %table.name(),
                    error = %e,
                    "continuous verification of the table failed; the next pass tries again"
                ),
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until((started + config.interval).into()) => {}
        }
    }
}

/// Waits until the binlog checkpoint exists: until then the strategy is still loading
/// the tables, and every key would look missing. `false` on shutdown.
async fn wait_for_checkpoint(target: &Target, key: &str, shutdown: &CancellationToken) -> bool {
    let mut redis = target.services.applier.connection();
    loop {
        let exists: redis::RedisResult<bool> =
            redis::cmd("EXISTS").arg(key).query_async(&mut redis).await;
        if let Ok(true) = exists {
            return true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Spaces work so that at most `rate` keys a second are checked.
struct Pace {
    rate: f64,
    started: Instant,
    done: u64,
}

impl Pace {
    fn new(rate: u64) -> Pace {
        Pace {
            rate: rate as f64,
            started: Instant::now(),
            done: 0,
        }
    }

    /// Waits until `n` more keys are within the rate; `false` on shutdown.
    async fn take(&mut self, n: usize, shutdown: &CancellationToken) -> bool {
        self.done += n as u64;
        let due = self.started + Duration::from_secs_f64(self.done as f64 / self.rate);
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep_until(due.into()) => true,
        }
    }
}

/// One table's pass so far.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    checked: u64,
    divergent: u64,
    repaired: u64,
}

/// One pass over one table.
struct TableCheck<'a> {
    target: &'a Target,
    config: &'a VerifyConfig,
    table: &'a Arc<SyncedTable>,
    pace: &'a mut Pace,
    shutdown: &'a CancellationToken,
    counts: Counts,
}

impl TableCheck<'_> {
    async fn run(&mut self) -> Result<()> {
        let services = &self.target.services;
        let mut conn = crate::mysql::get_conn(&services.pool, &services.mysql_url).await?;
        let mut redis = services.applier.connection();
        if self.rows_to_keys(&mut conn, &mut redis).await? {
            self.keys_to_rows(&mut conn, &mut redis).await?;
        }
        Ok(())
    }

    /// Phase 1: every row, a page at a time, against its key. `false` on shutdown.
    async fn rows_to_keys(
        &mut self,
        conn: &mut mysql_async::Conn,
        redis: &mut RedisConn,
    ) -> Result<bool> {
        let table = self.table;
        let mut after: Option<Vec<Cell>> = None;
        loop {
            let rows = lookup::page(conn, table, after.as_deref(), self.config.batch).await?;
            let full = lookup::pages(table, rows.len(), self.config.batch);
            let Some(last) = rows.last() else {
                return Ok(true);
            };
            after = Some(last.clone());
            if !self.pace.take(rows.len(), self.shutdown).await {
                return Ok(false);
            }
            let batch: Vec<(String, Vec<Cell>)> =
                rows.into_iter().map(|r| (table.key_of(&r), r)).collect();
            let found = verify::differing(redis, table, &batch).await?;
            self.checked(batch.len());
            // A table with a TTL loses keys by design: a missing key may have expired.
            let expires = table.config.ttl.is_some();
            let items = found
                .into_iter()
                .filter(|(_, verdict)| !(expires && *verdict == Verdict::Missing))
                .map(|(i, _)| Divergent {
                    key: batch[i].0.clone(),
                    row: batch[i].1.clone(),
                })
                .collect();
            if !self.settle(conn, redis, items).await? {
                return Ok(false);
            }
            if !full {
                return Ok(true);
            }
        }
    }

    /// Phase 2: every key of the table's template, looked up in MySQL.
    async fn keys_to_rows(
        &mut self,
        conn: &mut mysql_async::Conn,
        redis: &mut RedisConn,
    ) -> Result<()> {
        let table = self.table;
        let pattern = table.key.scan_pattern(|_| None);
        let what = format!("scanning the keys of {}", table.name());
        let mut cursor = 0;
        loop {
            let (next, keys) = scan_page(redis, cursor, &pattern, &what).await?;
            let keys: Vec<String> = keys
                .into_iter()
                .filter(|k| self.target.checkpoint_key.as_ref() != Some(k))
                .collect();
            if !self.pace.take(keys.len(), self.shutdown).await {
                return Ok(());
            }
            // Keys that cannot name a row are extra as they are; the others are looked up
            // together, many per statement.
            let mut items = Vec::new();
            let mut candidates = Vec::new();
            let mut params = Vec::new();
            for key in &keys {
                let Some(row) = verify::key_row(table, key) else {
                    continue;
                };
                let item = Divergent {
                    key: key.clone(),
                    row,
                };
                match verify::key_params(table, &item.row) {
                    Some(p) => {
                        params.push(p);
                        candidates.push(item);
                    }
                    None => items.push(item),
                }
            }
            let found: HashSet<String> = lookup::by_keys(conn, table, &params)
                .await?
                .iter()
                .map(|row| table.key_of(row))
                .collect();
            items.extend(candidates.into_iter().filter(|d| !found.contains(&d.key)));
            self.checked(keys.len());
            if !self.settle(conn, redis, items).await? {
                return Ok(());
            }
            cursor = next;
            if cursor == 0 {
                return Ok(());
            }
        }
    }

    fn checked(&mut self, n: usize) {
        self.counts.checked += n as u64;
        metrics::counter!(m::VERIFY_CHECKED, "strategy" => self.target.strategy, "table" => self.table.name())
            .increment(n as u64);
    }

    /// Gives divergent `items` the grace period, counts those still divergent and
    /// repairs them. `false` on shutdown.
    async fn settle(
        &mut self,
        conn: &mut mysql_async::Conn,
        redis: &mut RedisConn,
        items: Vec<Divergent>,
    ) -> Result<bool> {
        if items.is_empty() {
            return Ok(true);
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(self.config.grace) => {}
        }
        let table = self.table;
        let still = verify::still_divergent(conn, redis, table, items).await?;
        if still.is_empty() {
            return Ok(true);
        }
        let strategy = self.target.strategy;
        self.counts.divergent += still.len() as u64;
        metrics::counter!(m::VERIFY_DIVERGENT, "strategy" => strategy, "table" => table.name())
            .increment(still.len() as u64);
        for item in &still {
            warn!(table = %table.name(), key = %item.key, repair = self.config.repair, "continuous verification: the key differs from MySQL");
        }
        if self.config.repair {
            let applier: &Applier = &self.target.services.applier;
            let remaining = verify::repair(
                conn,
                redis,
                applier,
                table,
                &still,
                self.target.checkpoint_key.as_deref(),
            )
            .await?;
            let repaired = still.len() as u64 - remaining;
            self.counts.repaired += repaired;
            metrics::counter!(m::VERIFY_REPAIRED, "strategy" => strategy, "table" => table.name())
                .increment(repaired);
            if remaining > 0 {
                warn!(table = %table.name(), remaining, "continuous verification: keys still differ after repair (changed meanwhile?); the next pass looks again");
            }
        }
        Ok(true)
    }
}
