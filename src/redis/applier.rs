//! The Redis side, shared by every strategy: batches of row changes applied with a
//! per-key version guard, in one round trip per batch.
//!
//! Each change runs [`APPLY_LUA`] (by `EVALSHA`, pipelined): the script compares the
//! change's version with the one stored *in the row's own key* and writes only if the
//! change is not older. Keeping the version in the same key — the reserved first JSON
//! member or hash field `_cachesync_v` — makes the compare-and-set one atomic script call
//! on one key, so it stays correct under concurrent writers and in Redis Cluster.
//!
//! Deletes delete the key (the contract) but must not let an older, late upsert of the
//! same row bring it back, so a versioned delete leaves a *tombstone*: a small key holding
//! the delete's version for `redis.tombstone_ttl` seconds, named so it lives in the same
//! cluster slot as the row key (see [`tombstone_key`]). A later upsert clears it.
//!
//! A table in `invalidate` mode gets a delete for every change, whichever strategy sent
//! it ([`Change::redis_op`]): that is decided here, once, for all of them.
//!
//! Strategies never talk to Redis for rows themselves; they hand [`Change`]s to
//! [`Applier::apply`], which also records the shared metrics (events applied,
//! propagation latency, errors), so no strategy can forget them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;

use super::bloom::Bloom;
use super::connection::{RedisConn, connect};
use super::keyspace::{DEAD_LETTER_CAP, fill_key, tombstone_key};
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::model::cell::{Cell, Encoded, Format};
use crate::model::change::{Applied, Change, DeadLetter, Op, unix_micros};
use crate::model::table::{Mode, SyncedTable, UndecodableRow};
use crate::mysql::scan::TableScan;

/// The version-guarded write of one or more changes, optionally with a checkpoint.
///
/// KEYS: the checkpoint key when `ARGV[1]` is not empty, then for each change its row key,
/// its tombstone key and its read-marker key ([`fill_key`]) — the row key again in place
/// of either when it cannot share the row key's slot.
/// `ARGV[1]`: the checkpoint value or empty; `ARGV[2]`: tombstone TTL in ms; `ARGV[3]`:
/// the value the checkpoint must hold for anything to be written, or empty for no check
/// (then the script returns just `-1` when it does not); then for each change: `u`/`d`, the version as decimal text or empty, `j`/`h`, the TTL in ms (0 =
/// none), the number N of payload arguments, and N payload arguments (the JSON document,
/// or the hash's field/value pairs).
///
/// Every `u`/`d` change also deletes the row's read marker: the read path's fill lease
/// and its "no such row" marker (see [`crate::read`]). That is what keeps a cache-aside
/// fill from overwriting a newer synced value whatever the version domain: a fill holds a
/// lease taken *before* its MySQL read and writes only while the lease is intact, so any
/// synced change (upsert or delete, versioned or not) that reaches Redis after the read
/// began voids the fill, and one that reached Redis before it is visible to the read.
///
/// The read path's fills use the same script with op `f` (fill a missing key), `r`
/// (refresh a present key early) or `n` (remember that the row does not exist for TTL
/// ms); for them the version slot carries the lease token. A fill writes only while the
/// read marker still holds its token; `f` also only when the key is absent and no tombstone
/// stands (the row is deleted here). `f` writes
/// unversioned; `r` keeps the version the value it replaces carries (the row it read is at
/// least that new), so a late older change is still refused after a refresh.
///
/// Returns one result per change: 1 written (newer than what Redis held), 2 written again
/// at the same version (a replay or redelivery: same bytes), 0 skipped (older, or a fill
/// whose lease was lost). The checkpoint is set last, so it moves only when every change
/// of the call is in — a script runs atomically, and one that fails part-way has not
/// reached the checkpoint.
pub const APPLY_LUA: &str = include_str!("apply.lua");

/// What [`APPLY_LUA`] returns, alone, when the checkpoint is not the expected one.
const MOVED: i64 = -1;

/// Appends the keys of `change` to a script call, in the layout [`APPLY_LUA`] reads:
/// its row key, tombstone key and read-marker key (the row key again in place of one
/// that cannot share its slot).
///
/// Keys and arguments go straight into the command's one buffer, not through a vector
/// of small vectors per change: a catch-up writes millions of them.
fn push_keys(cmd: &mut redis::Cmd, change: &Change) {
    let key = change.table.key_of(&change.row);
    let tomb = tombstone_key(&key);
    let marker = fill_key(&key);
    cmd.arg(&key)
        .arg(tomb.as_deref().unwrap_or(&key))
        .arg(marker.as_deref().unwrap_or(&key));
}

/// Appends the arguments of `change` to a script call, in the layout [`APPLY_LUA`]
/// reads: `u`/`d`, the version or empty, `j`/`h`, the TTL in ms, the number N of payload
/// arguments and the N payload arguments.
fn push_args(cmd: &mut redis::Cmd, change: &Change, rng: &mut impl Rng) {
    let table = &change.table;
    let op = change.redis_op();
    cmd.arg(match op {
        Op::Upsert => "u",
        Op::Delete => "d",
    });
    match change.version {
        Some(v) => cmd.arg(itoa::Buffer::new().format(v)),
        None => cmd.arg(""),
    };
    cmd.arg(match table.config.format {
        Format::Json => "j",
        Format::Hash => "h",
    })
    .arg(itoa::Buffer::new().format(row_ttl_ms(table, rng)));
    match op {
        Op::Delete => cmd.arg("0"),
        Op::Upsert => match table.encoder.encode(&change.row, change.version) {
            Encoded::Json(doc) => cmd.arg("1").arg(doc),
            Encoded::Hash(fields) => cmd
                .arg(itoa::Buffer::new().format(fields.len()))
                .arg(fields),
        },
    };
}

/// The TTL of a row key in ms (0 = none): the table's `ttl` plus up to `ttl_jitter` at
/// random, so keys written together do not expire together.
fn row_ttl_ms(table: &SyncedTable, rng: &mut impl Rng) -> u64 {
    table.config.ttl.map_or(0, |ttl| {
        let jitter = table.config.ttl_jitter.as_millis() as u64;
        ttl.as_millis() as u64
            + if jitter > 0 {
                rng.random_range(0..=jitter)
            } else {
                0
            }
    })
}

/// What a read-path fill ([`Applier::fill`]) writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillOp {
    /// The row read from MySQL, into a key that is missing.
    Fill,
    /// The row read from MySQL, over the key's current value (early refresh).
    Refresh,
    /// "No such row" into the read marker, for the given TTL.
    Absent(Duration),
}

/// Applies change batches to Redis. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct Applier {
    conn: RedisConn,
    script: Arc<redis::Script>,
    /// The `strategy` label of the metrics this applier records.
    strategy: &'static str,
    tombstone_ttl_ms: u64,
    /// What every batch of this applier (and its clones) did: the daemon's summary at
    /// stop, and a count of its own for a caller that runs several appliers in one
    /// process, where the process-wide metrics mix them (the benchmark).
    totals: Arc<AppliedTotals>,
}

/// Running sums of [`Applied`].
#[derive(Debug, Default)]
struct AppliedTotals {
    written: std::sync::atomic::AtomicUsize,
    replayed: std::sync::atomic::AtomicUsize,
    stale: std::sync::atomic::AtomicUsize,
}

impl Applier {
    /// Connects to Redis at `url` and loads the script; `strategy` labels its metrics.
    pub async fn connect(
        url: &str,
        tombstone_ttl: Duration,
        strategy: &'static str,
    ) -> Result<Applier> {
        let conn = connect(url).await?;
        let applier = Applier {
            conn,
            script: Arc::new(redis::Script::new(APPLY_LUA)),
            strategy,
            tombstone_ttl_ms: tombstone_ttl.as_millis() as u64,
            totals: Arc::default(),
        };
        applier
            .load_script()
            .await
            .map_err(|e| Error::redis("loading the apply script", e))?;
        Ok(applier)
    }

    /// The connection, for callers that read what the applier wrote (verify, tests).
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    /// What all batches applied so far did, summed.
    pub fn totals(&self) -> Applied {
        use std::sync::atomic::Ordering::Relaxed;
        Applied {
            written: self.totals.written.load(Relaxed),
            replayed: self.totals.replayed.load(Relaxed),
            stale: self.totals.stale.load(Relaxed),
        }
    }

    async fn load_script(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(APPLY_LUA)
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
    }

    /// Applies `changes` in order, in one pipelined round trip, and records metrics.
    ///
    /// When Redis has forgotten the script (restart, `SCRIPT FLUSH`) part-way through a
    /// batch, the script is loaded again and the batch resumes at the first change that
    /// failed, in order, so the result is the same as an uninterrupted run. After any
    /// other error the prefix that was written stays written and the error names the
    /// first change that was not; re-applying the whole batch is harmless (a change of
    /// the same version writes the same bytes), so the caller may simply retry it.
    pub async fn apply(&self, changes: &[Change]) -> Result<Applied> {
        /// Reloads allowed per batch: one is normal after a restart, more means someone
        /// keeps flushing scripts.
        const MAX_RELOADS: usize = 3;
        if let Err(e) = self.remember_in_bloom(changes).await {
            for change in changes {
                metrics::counter!(m::APPLY_ERRORS, "strategy" => self.strategy, "table" => change.table.name())
                    .increment(1);
            }
            return Err(e);
        }
        let mut conn = self.conn.clone();
        let mut results: Vec<i64> = Vec::with_capacity(changes.len());
        let mut reloads = 0;
        while results.len() < changes.len() {
            let rest = &changes[results.len()..];
            let replies: Vec<redis::RedisResult<Vec<i64>>> = match self
                .pipeline(rest)
                .ignore_errors()
                .query_async(&mut conn)
                .await
            {
                Ok(replies) => replies,
                Err(e) => return Err(self.failed(changes, &results, e)),
            };
            for reply in replies {
                match reply {
                    Ok(result) => results.extend(result),
                    Err(e)
                        if e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                            && reloads < MAX_RELOADS =>
                    {
                        reloads += 1;
                        if let Err(e) = self.load_script().await {
                            return Err(self.failed(changes, &results, e));
                        }
                        break;
                    }
                    Err(e) => return Err(self.failed(changes, &results, e)),
                }
            }
        }
        Ok(self.record(changes, &results))
    }

    /// Records what was written before a failure and describes the first change that
    /// was not.
    fn failed(&self, changes: &[Change], results: &[i64], e: redis::RedisError) -> Error {
        self.record(&changes[..results.len()], results);
        for change in &changes[results.len()..] {
            metrics::counter!(m::APPLY_ERRORS, "strategy" => self.strategy, "table" => change.table.name())
                .increment(1);
        }
        let context = match changes.get(results.len()) {
            Some(first) => format!(
                "writing key {} of {} ({} of {} changes in the batch were written)",
                first.table.key_of(&first.row),
                first.table.name(),
                results.len(),
                changes.len()
            ),
            // A checkpoint-only call (no changes).
            None => format!("writing a batch of {} changes", changes.len()),
        };
        Error::redis(context, e)
    }

    /// The read path's version-safe fill of `key` (see [`APPLY_LUA`]): writes `row`
    /// (with the table's TTL and jitter; unversioned, except that a refresh keeps the
    /// version of the value it replaces) or the "absent" marker only while
    /// the read marker of `key` still holds `token`, the lease taken before the row was
    /// read from MySQL. `Ok(false)`: a synced change (or another reader) came first and
    /// nothing was written.
    pub async fn fill(
        &self,
        table: &SyncedTable,
        key: &str,
        op: FillOp,
        token: &str,
        row: Option<&[Cell]>,
    ) -> Result<bool> {
        let Some(marker) = fill_key(key) else {
            return Ok(false);
        };
        let (code, ttl_ms, payload): (&str, u64, Vec<Vec<u8>>) = match (op, row) {
            (FillOp::Absent(ttl), _) => ("n", ttl.as_millis() as u64, Vec::new()),
            (FillOp::Fill | FillOp::Refresh, Some(row)) => (
                if op == FillOp::Fill { "f" } else { "r" },
                row_ttl_ms(table, &mut rand::rng()),
                match table.encoder.encode(row, None) {
                    Encoded::Json(doc) => vec![doc],
                    Encoded::Hash(fields) => fields,
                },
            ),
            (_, None) => return Ok(false),
        };
        let cmd = self.fill_cmd(table, key, &marker, code, token, ttl_ms, payload);
        let mut conn = self.conn.clone();
        let mut outcome = cmd.query_async::<Vec<i64>>(&mut conn).await;
        if let Err(e) = &outcome
            && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        {
            self.load_script()
                .await
                .map_err(|e| Error::redis("loading the apply script", e))?;
            outcome = cmd.query_async::<Vec<i64>>(&mut conn).await;
        }
        let results = outcome
            .map_err(|e| Error::redis(format!("filling key {key} of {}", table.name()), e))?;
        Ok(results.first() == Some(&1))
    }

    /// The script call of one fill (see [`Applier::fill`]).
    #[allow(clippy::too_many_arguments)]
    fn fill_cmd(
        &self,
        table: &SyncedTable,
        key: &str,
        marker: &str,
        code: &str,
        token: &str,
        ttl_ms: u64,
        payload: Vec<Vec<u8>>,
    ) -> redis::Cmd {
        let format = match table.config.format {
            Format::Json => "j",
            Format::Hash => "h",
        };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(3)
            .arg(key)
            // A fill of a missing key refuses to land over a tombstone (see above).
            .arg(tombstone_key(key).unwrap_or_else(|| key.to_owned()))
            .arg(marker)
            .arg("")
            .arg(self.tombstone_ttl_ms)
            .arg("")
            .arg(code)
            .arg(token)
            .arg(format)
            .arg(ttl_ms)
            .arg(payload.len())
            .arg(payload);
        cmd
    }

    /// Many refills of rows of `table` at once, pipelined: `(key, lease token, row)`
    /// each, written like [`FillOp::Refresh`] — over whatever the key holds, keeping the
    /// version it carries — only while the key's read marker still holds the token (an
    /// online snapshot without versions, see [`crate::snapshot`]). Returns for each
    /// whether it was written (`false`: a synced change came after the lease). Added to
    /// the table's Bloom filter first, like every upsert.
    pub async fn refill(
        &self,
        table: &Arc<SyncedTable>,
        fills: &[(String, String, Vec<Cell>)],
    ) -> Result<Vec<bool>> {
        if fills.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(bloom) = Bloom::of(table) {
            let mut pipe = redis::pipe();
            for (key, _, _) in fills {
                bloom.add_to(&mut pipe, key);
            }
            let mut conn = self.conn.clone();
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| Error::redis("adding keys to the Bloom filter", e))?;
        }
        let mut pipe = redis::pipe();
        {
            let mut rng = rand::rng();
            for (key, token, row) in fills {
                let marker = fill_key(key).unwrap_or_else(|| key.clone());
                let payload = match table.encoder.encode(row, None) {
                    Encoded::Json(doc) => vec![doc],
                    Encoded::Hash(fields) => fields,
                };
                let ttl_ms = row_ttl_ms(table, &mut rng);
                pipe.add_command(self.fill_cmd(table, key, &marker, "r", token, ttl_ms, payload));
            }
        }
        let mut conn = self.conn.clone();
        let mut outcome = pipe.query_async::<Vec<Vec<i64>>>(&mut conn).await;
        if let Err(e) = &outcome
            && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        {
            // A script that is not loaded fails before it runs: nothing was filled.
            self.load_script()
                .await
                .map_err(|e| Error::redis("loading the apply script", e))?;
            outcome = pipe.query_async::<Vec<Vec<i64>>>(&mut conn).await;
        }
        let results = outcome.map_err(|e| {
            Error::redis(
                format!("refilling {} keys of {}", fills.len(), table.name()),
                e,
            )
        })?;
        let written: Vec<bool> = results.iter().map(|r| r.first() == Some(&1)).collect();
        let n = written.iter().filter(|w| **w).count() as u64;
        metrics::counter!(m::EVENTS_APPLIED, "strategy" => self.strategy, "table" => table.name())
            .increment(n);
        Ok(written)
    }

    /// Adds the keys of `changes` to their tables' Bloom filters (tables with
    /// `read.bloom`), before the rows themselves are written: a row visible in Redis is
    /// always in its filter. Upserts are added; deletes are not (a Bloom filter cannot
    /// forget), except in `invalidate` mode, where every change arrives as a delete.
    async fn remember_in_bloom(&self, changes: &[Change]) -> Result<()> {
        if !changes.iter().any(|c| c.table.config.read.bloom.is_some()) {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for change in changes {
            let table = &change.table;
            let Some(bloom) = Bloom::of(table) else {
                continue;
            };
            if change.op == Op::Delete && table.config.mode == Mode::Write {
                continue;
            }
            bloom.add_to(&mut pipe, &table.key_of(&change.row));
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| Error::redis("adding keys to the Bloom filter", e))
    }

    /// One script call per change, pipelined: each call touches one row key and its
    /// tombstone and read marker only, so the batch works on Redis Cluster.
    fn pipeline(&self, changes: &[Change]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        let mut rng = rand::rng();
        for change in changes {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(self.script.get_hash()).arg(3);
            push_keys(&mut cmd, change);
            cmd.arg("").arg(self.tombstone_ttl_ms).arg("");
            push_args(&mut cmd, change, &mut rng);
            pipe.add_command(cmd);
        }
        pipe
    }

    /// Applies `changes` and sets `checkpoint_key` to `checkpoint` in one atomic script
    /// call: after a crash either both are in Redis or neither is. (All keys go to one
    /// call, so this needs a standalone Redis or keys sharing one cluster slot.)
    pub async fn apply_with_checkpoint(
        &self,
        changes: &[Change],
        checkpoint_key: &str,
        checkpoint: &str,
    ) -> Result<Applied> {
        self.apply_with_checkpoint_if(changes, checkpoint_key, checkpoint, None)
            .await
    }

    /// [`Applier::apply_with_checkpoint`], only if `checkpoint_key` still holds
    /// `expected` (when given): the check and the writes are one script call, so when the
    /// checkpoint is not the one this process last wrote — Redis lost it, came back from
    /// an older copy, or someone else writes it — nothing is written and the error is
    /// [`Error::CheckpointMoved`].
    pub async fn apply_with_checkpoint_if(
        &self,
        changes: &[Change],
        checkpoint_key: &str,
        checkpoint: &str,
        expected: Option<&str>,
    ) -> Result<Applied> {
        if let Err(e) = self.remember_in_bloom(changes).await {
            for change in changes {
                metrics::counter!(m::APPLY_ERRORS, "strategy" => self.strategy, "table" => change.table.name())
                    .increment(1);
            }
            return Err(e);
        }
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(1 + 3 * changes.len())
            .arg(checkpoint_key);
        for change in changes {
            push_keys(&mut cmd, change);
        }
        cmd.arg(checkpoint)
            .arg(self.tombstone_ttl_ms)
            .arg(expected.unwrap_or(""));
        {
            // ThreadRng is not Send: keep it out of the awaits below.
            let mut rng = rand::rng();
            for change in changes {
                push_args(&mut cmd, change, &mut rng);
            }
        }
        let mut conn = self.conn.clone();
        let mut outcome = cmd.query_async::<Vec<i64>>(&mut conn).await;
        if let Err(e) = &outcome
            && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        {
            // Nothing ran: a script that is not loaded fails before it starts.
            if let Err(e) = self.load_script().await {
                return Err(self.failed(changes, &[], e));
            }
            outcome = cmd.query_async::<Vec<i64>>(&mut conn).await;
        }
        match outcome {
            // The script's answer when the checkpoint was not `expected`.
            Ok(results) if results.first() == Some(&MOVED) => Err(Error::CheckpointMoved {
                key: checkpoint_key.to_owned(),
            }),
            Ok(results) => Ok(self.record(changes, &results)),
            Err(e) => Err(self.failed(changes, &[], e)),
        }
    }

    /// Writes every row of `table` (read from MySQL on `conn`, `batch` rows per read and
    /// pipeline, progress logged as `what`) to Redis, each at the version `version_of`
    /// gives it: the version guard still keeps a newer value that is already there.
    ///
    /// A row that cannot be decoded does not stop the load: its key is deleted (at the
    /// version `version_of` gives its key cells), so no older value of it is served, and
    /// it is returned for the caller to record.
    pub async fn load_table(
        &self,
        conn: &mut mysql_async::Conn,
        table: &Arc<SyncedTable>,
        batch: usize,
        what: &'static str,
        version_of: impl Fn(&[Cell]) -> Option<u64>,
    ) -> Result<Vec<UndecodableRow>> {
        let mut scan = TableScan::open(conn, table, batch, what).await?;
        let mut undecodable = Vec::new();
        while let Some(batch) = scan.next_batch().await? {
            let removals = batch.undecodable.iter().filter_map(|u| {
                let key_row = u.key_row.clone()?;
                Some(Change {
                    table: table.clone(),
                    op: Op::Delete,
                    version: version_of(&key_row),
                    row: key_row,
                    committed_at_us: None,
                })
            });
            let changes: Vec<Change> = batch
                .rows
                .into_iter()
                .map(|row| Change {
                    table: table.clone(),
                    op: Op::Upsert,
                    version: version_of(&row),
                    row,
                    committed_at_us: None,
                })
                .chain(removals)
                .collect();
            self.apply(&changes).await?;
            undecodable.extend(batch.undecodable);
        }
        Ok(undecodable)
    }

    /// Records `letters` in the dead-letter list `list_key`, newest first, keeping the
    /// newest [`DEAD_LETTER_CAP`] (one JSON object per entry, see [`DeadLetter`]).
    pub async fn record_dead_letters(&self, list_key: &str, letters: &[DeadLetter]) -> Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for letter in letters {
            let entry = serde_json::to_string(letter).unwrap_or_default();
            pipe.cmd("LPUSH").arg(list_key).arg(entry).ignore();
        }
        pipe.cmd("LTRIM")
            .arg(list_key)
            .arg(0)
            .arg(DEAD_LETTER_CAP - 1)
            .ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("recording dead letters in {list_key}"), e))
    }

    fn record(&self, changes: &[Change], results: &[i64]) -> Applied {
        let now_us = unix_micros(SystemTime::now());
        let mut applied = Applied::default();
        // Batches are mostly one table: count runs instead of allocating a label per change.
        let mut run: Option<(&Arc<SyncedTable>, u64)> = None;
        let flush = |table: &Arc<SyncedTable>, n: u64| {
            metrics::counter!(m::EVENTS_APPLIED, "strategy" => self.strategy, "table" => table.name())
                .increment(n);
        };
        for (change, result) in changes.iter().zip(results) {
            match result {
                1 => applied.written += 1,
                2 => applied.replayed += 1,
                _ => applied.stale += 1,
            }
            if let Some(committed) = change.committed_at_us {
                let seconds = now_us.saturating_sub(committed) as f64 / 1e6;
                metrics::histogram!(m::PROPAGATION, "strategy" => self.strategy, "table" => change.table.name())
                    .record(seconds);
            }
            match &mut run {
                Some((table, n)) if Arc::ptr_eq(table, &change.table) => *n += 1,
                _ => {
                    if let Some((table, n)) = run.take() {
                        flush(table, n);
                    }
                    run = Some((&change.table, 1));
                }
            }
        }
        if let Some((table, n)) = run {
            flush(table, n);
        }
        {
            use std::sync::atomic::Ordering::Relaxed;
            self.totals.written.fetch_add(applied.written, Relaxed);
            self.totals.replayed.fetch_add(applied.replayed, Relaxed);
            self.totals.stale.fetch_add(applied.stale, Relaxed);
        }
        if applied.replayed > 0 {
            metrics::counter!(m::REPLAYED_CHANGES, "strategy" => self.strategy)
                .increment(applied.replayed as u64);
        }
        if applied.stale > 0 {
            metrics::counter!(m::STALE_CHANGES_SKIPPED, "strategy" => self.strategy)
                .increment(applied.stale as u64);
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_checkpoint_only_call_is_an_error_not_a_panic() {
        // Nothing listens on port 1: connecting fails, so build the applier lazily.
        let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(Duration::from_millis(200)));
        let Ok(conn) = redis::aio::ConnectionManager::new_lazy_with_config(client, config) else {
            panic!("a lazy connection manager builds without connecting")
        };
        let applier = Applier {
            conn,
            script: Arc::new(redis::Script::new(APPLY_LUA)),
            strategy: "binlog",
            tombstone_ttl_ms: 1000,
            totals: Arc::default(),
        };
        let outcome = applier
            .apply_with_checkpoint(&[], "ckpt", "binlog.000001:4")
            .await;
        assert!(outcome.is_err());
    }
}
