//! `cachesync verify`: compares Redis with MySQL using the canonical encoding, and with
//! `--repair` rewrites the keys that differ.
//!
//! # Comparing
//!
//! For each configured table, its `SELECT` is streamed (binary protocol) in batches of
//! [`Options::batch`] rows. Each batch's rows are encoded as the applier would write them
//! (`encoder.encode(cells, None)`), and the batch's keys are read from Redis in one
//! pipeline (`GET` for `json`, `HGETALL` for `hash`). cachesync's version bookkeeping
//! (`_cachesync_v`: the first JSON member, or the hash field) is left out; the rest must be
//! equal byte for byte. A key of the wrong type counts as *different*. In `invalidate` mode
//! a missing key is fine (readers fill it), a present one must match.
//!
//! *Extra* keys are keys in Redis that match the table's key template but no row produced:
//! the template becomes a `SCAN MATCH` pattern (literal parts escaped, `*` for each
//! placeholder), and each candidate that really parses as the template is checked against
//! the set of keys the rows produced. That set is held in memory (a `HashSet<String>`,
//! roughly keys × key length bytes per table — some hundred MB for tens of millions of
//! rows); acceptable for this version. cachesync's own companion keys (tombstones, read
//! markers: [`crate::redis::keyspace`]) and the binlog checkpoint key are skipped. Templates of two tables must not overlap: a key of
//! one table that also fits another table's template counts as extra for that table.
//!
//! # Repairing without regressing
//!
//! A concurrent writer may land a newer value at any time, so a repair must never
//! overwrite a newer version. For every divergent key, in this order:
//!
//! 1. read the version Redis holds *now* for the key (its `_cachesync_v`, or for a missing
//!    key its tombstone's version) and, for a strategy that tails the binlog
//!    ([`Options::checkpoint_key`]), the checkpoint's version; V is the larger;
//! 2. re-read the row from MySQL by primary key with a locking read
//!    (`LOCK IN SHARE MODE`): a replica can receive a binlog event — and Redis hold its
//!    change — a moment before InnoDB's commit makes it visible to a plain read, and the
//!    locking read waits for that commit. A lock held longer than 2 s belongs to a later
//!    transaction, whose change reaches Redis with a newer version; the re-read then reads
//!    without locking;
//! 3. apply it through the [`Applier`] with version V: an upsert when the row exists,
//!    a delete when it does not (or always a delete for an `invalidate` table). Without
//!    any version the write is unversioned.
//!
//! Redis trails MySQL, so the row read in step 2 is at least as new as whatever Redis held
//! in step 1; the equal version is accepted by the guard (written as a replay), and any
//! change that lands after step 1 carries a newer version and wins: with the binlog, every
//! change applied after the checkpoint read in step 1 lies beyond it. The checkpoint's
//! version is what lets a key Redis holds no version for (a row inserted behind the
//! binlog's back, whose tombstone expired) be repaired with a version all the same. The
//! one window left is an unversioned key of a strategy without versions (dual-write or
//! mq without a `version_column` or outbox): a change landing between steps 2 and 3 is
//! overwritten (the next change of the row fixes it). After repairing, the repaired keys
//! are compared again and what is still divergent is reported.
//! With `--repair` the divergent keys of a table are also held until the scan of that
//! table ends (key and primary-key cells each), so repair memory grows with the
//! divergence, not the table.
//!
//! The `cachesync_divergent_keys{strategy, table}` gauge is set after each table (to what
//! is left after repair when repairing).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use tracing::info;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::cell::{Cell, Encoded, Format, VERSION_FIELD};
use crate::model::change::{Change, Op};
use crate::model::column::ColumnType;
use crate::model::table::{Mode, SyncedTable};
use crate::mysql::lookup::{ReadMode, is_lock_wait_timeout};
use crate::mysql::scan::TableScan;
use crate::redis::keyspace::{split_version, tombstone_key};
use crate::redis::rows::scan_page;
use crate::redis::{Applier, RedisConn};
use crate::strategy::StrategyKind;
use crate::strategy::binlog::position::Checkpoint;

/// `cachesync verify`: connects, compares every configured table and prints the report;
/// whether Redis is (now) in sync.
pub async fn run(config: &Config, options: &Options) -> Result<bool> {
    let services = super::connect::connect(config).await?;
    let report = verify(&services.tables, &services.pool, &services.applier, options).await;
    services.pool.disconnect().await.ok();
    let report = report?;
    print!("{report}");
    Ok(report.divergent() == 0)
}

/// What [`verify`] does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows per MySQL batch and Redis pipeline.
    pub batch: usize,
    /// Example keys kept per kind of divergence and table.
    pub examples: usize,
    /// Rewrite divergent keys from MySQL.
    pub repair: bool,
    /// The `strategy` label of the gauge.
    pub strategy: StrategyKind,
    /// Keys that are not rows even when they match a template (the binlog checkpoint).
    pub skip_keys: Vec<String>,
    /// The binlog checkpoint's key, for a strategy that tails the binlog: repairs write
    /// at least its version (see the module doc).
    pub checkpoint_key: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            batch: 1000,
            examples: 5,
            repair: false,
            strategy: StrategyKind::Binlog,
            skip_keys: Vec::new(),
            checkpoint_key: None,
        }
    }
}

/// How many keys diverge one way, with a few of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Divergence {
    pub count: u64,
    /// Up to [`Options::examples`] keys, in the order found.
    pub examples: Vec<String>,
}

impl Divergence {
    fn add(&mut self, key: &str, examples: usize) {
        self.count += 1;
        if self.examples.len() < examples {
            self.examples.push(key.to_owned());
        }
    }
}

/// One table's result.
#[derive(Debug, Clone, Default)]
pub struct TableReport {
    /// `database.table`.
    pub table: String,
    /// Rows read from MySQL.
    pub rows: u64,
    /// Rows whose key is absent from Redis (never counted for `invalidate` tables).
    pub missing: Divergence,
    /// Keys matching the template that no row produced.
    pub extra: Divergence,
    /// Keys whose value differs from the row's encoding (or has the wrong type).
    pub different: Divergence,
    /// Rows that cannot be decoded (a poison row: an invalid JSON document, ...). Their
    /// keys must be absent — the sync stream removes them — so a key that is there counts
    /// as different too; these are reported, not counted as divergent: the cache is
    /// right, the row needs fixing in MySQL. Examples read `key (column: reason)`.
    pub undecodable: Divergence,
    /// With `--repair`: keys rewritten or deleted.
    pub repaired: u64,
    /// With `--repair`: repaired keys that still differ when compared again.
    pub remaining: Option<u64>,
}

impl TableReport {
    /// Keys found divergent (before any repair).
    pub fn found(&self) -> u64 {
        self.missing.count + self.extra.count + self.different.count
    }

    /// Keys divergent now: after repair when repairing.
    pub fn divergent(&self) -> u64 {
        self.remaining.unwrap_or_else(|| self.found())
    }
}

/// The result of a run over all tables.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub tables: Vec<TableReport>,
}

impl Report {
    /// Keys divergent now, over all tables.
    pub fn divergent(&self) -> u64 {
        self.tables.iter().map(TableReport::divergent).sum()
    }
}

/// The printed report: a line per table, example keys, what a repair left, and the
/// verdict (`in sync` or `N divergent keys`).
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .tables
            .iter()
            .map(|t| t.table.len())
            .chain([5])
            .max()
            .unwrap_or(5);
        // The undecodable column only when there is something in it: the usual output
        // keeps the columns scripts already read.
        let undecodable: u64 = self.tables.iter().map(|t| t.undecodable.count).sum();
        let last = |n: u64| {
            if undecodable > 0 {
                format!("  {n:>11}")
            } else {
                String::new()
            }
        };
        writeln!(
            f,
            "{:<width$}  {:>10}  {:>8}  {:>8}  {:>9}{}",
            "table",
            "rows",
            "missing",
            "extra",
            "different",
            if undecodable > 0 { "  undecodable" } else { "" }
        )?;
        for t in &self.tables {
            writeln!(
                f,
                "{:<width$}  {:>10}  {:>8}  {:>8}  {:>9}{}",
                t.table,
                t.rows,
                t.missing.count,
                t.extra.count,
                t.different.count,
                last(t.undecodable.count)
            )?;
        }
        for t in &self.tables {
            for (kind, divergence) in [
                ("missing", &t.missing),
                ("extra", &t.extra),
                ("different", &t.different),
                ("undecodable", &t.undecodable),
            ] {
                for key in &divergence.examples {
                    writeln!(f, "  {} {kind}: {key}", t.table)?;
                }
            }
            if let Some(remaining) = t.remaining {
                writeln!(
                    f,
                    "  {}: repaired {} keys, {remaining} still divergent",
                    t.table, t.repaired
                )?;
            }
        }
        if undecodable > 0 {
            writeln!(
                f,
                "{undecodable} rows cannot be decoded: not cached (readers fall back to MySQL); \
                 fix them in MySQL"
            )?;
        }
        match self.divergent() {
            0 => writeln!(f, "in sync"),
            n => writeln!(f, "{n} divergent keys"),
        }
    }
}

/// A divergent key and the primary-key cells that name its row.
pub(crate) struct Divergent {
    pub(crate) key: String,
    pub(crate) row: Vec<Cell>,
}

/// Compares every table in `tables` with Redis and, with `options.repair`, repairs.
pub async fn verify(
    tables: &[Arc<SyncedTable>],
    pool: &mysql_async::Pool,
    applier: &Applier,
    options: &Options,
) -> Result<Report> {
    let mut report = Report::default();
    let mut conn = pool
        .get_conn()
        .await
        .map_err(|e| Error::mysql("connecting for verify", e))?;
    let mut redis = applier.connection();
    let options = Options {
        batch: options.batch.max(1),
        ..options.clone()
    };
    for table in tables {
        let mut table_report = TableReport {
            table: table.name(),
            ..TableReport::default()
        };
        let mut divergent = Vec::new();
        let seen = scan_rows(
            &mut conn,
            &mut redis,
            table,
            &options,
            &mut table_report,
            &mut divergent,
        )
        .await?;
        scan_extra(
            &mut redis,
            table,
            &options,
            &seen,
            &mut table_report,
            &mut divergent,
        )
        .await?;
        drop(seen);
        if options.repair && !divergent.is_empty() {
            let mut remaining = 0;
            for chunk in divergent.chunks(options.batch) {
                remaining += repair(
                    &mut conn,
                    &mut redis,
                    applier,
                    table,
                    chunk,
                    options.checkpoint_key.as_deref(),
                )
                .await?;
                table_report.repaired += chunk.len() as u64;
            }
            table_report.remaining = Some(remaining);
        } else if options.repair {
            table_report.remaining = Some(0);
        }
        metrics::gauge!(crate::metrics::DIVERGENT_KEYS, "strategy" => options.strategy.name(), "table" => table.name())
            .set(table_report.divergent() as f64);
        info!(
            table = %table_report.table,
            rows = table_report.rows,
            missing = table_report.missing.count,
            extra = table_report.extra.count,
            different = table_report.different.count,
            repaired = table_report.repaired,
            "verify done"
        );
        report.tables.push(table_report);
    }
    conn.disconnect().await.ok();
    Ok(report)
}

/// Streams the table's rows, compares them batch by batch, and returns the keys they
/// produced.
async fn scan_rows(
    conn: &mut mysql_async::Conn,
    redis: &mut RedisConn,
    table: &Arc<SyncedTable>,
    options: &Options,
    report: &mut TableReport,
    divergent: &mut Vec<Divergent>,
) -> Result<HashSet<String>> {
    let mut scan = TableScan::open(conn, table, options.batch, "verify").await?;
    let mut seen = HashSet::new();
    while let Some(scanned) = scan.next_batch().await? {
        report.rows += scanned.len() as u64;
        let mut batch: Vec<(String, Expected)> = scanned
            .rows
            .into_iter()
            .map(|cells| (table.key_of(&cells), Expected::Row(cells)))
            .collect();
        for undecodable in scanned.undecodable {
            let (column, reason) = match &undecodable.error {
                Error::Decode { column, reason, .. } => (column.clone(), reason.clone()),
                other => ("*".to_owned(), other.to_string()),
            };
            match undecodable.key_row {
                Some(key_row) => {
                    let key = table.key_of(&key_row);
                    report
                        .undecodable
                        .add(&format!("{key} ({column}: {reason})"), options.examples);
                    batch.push((key, Expected::Absent(key_row)));
                }
                None => report.undecodable.add(
                    &format!("a row whose key cannot be decoded either ({column}: {reason})"),
                    options.examples,
                ),
            }
        }
        compare_batch(redis, table, &batch, options, report, divergent).await?;
        seen.extend(batch.into_iter().map(|(key, _)| key));
    }
    Ok(seen)
}

/// What a key of a scanned row should hold.
enum Expected {
    /// The row's encoding.
    Row(Vec<Cell>),
    /// Nothing: the row cannot be decoded, so its key must be absent (its key cells).
    Absent(Vec<Cell>),
}

/// Compares one batch of rows with Redis.
async fn compare_batch(
    redis: &mut RedisConn,
    table: &SyncedTable,
    batch: &[(String, Expected)],
    options: &Options,
    report: &mut TableReport,
    divergent: &mut Vec<Divergent>,
) -> Result<()> {
    let keys: Vec<&str> = batch.iter().map(|(key, _)| key.as_str()).collect();
    let stored = fetch(redis, table, &keys).await?;
    for ((key, expected), stored) in batch.iter().zip(stored) {
        let (verdict, cells) = match expected {
            Expected::Row(cells) => (judge(table, cells, &stored), cells),
            Expected::Absent(key_row) => (
                match stored {
                    Stored::Missing => Verdict::Same,
                    _ => Verdict::Different,
                },
                key_row,
            ),
        };
        // A cache filled row by row (write-back) misses rows nobody read or wrote yet.
        let verdict = match verdict {
            Verdict::Missing if options.strategy.redis_holds_unflushed_writes() => Verdict::Same,
            verdict => verdict,
        };
        let record = match verdict {
            Verdict::Same => false,
            Verdict::Missing => {
                report.missing.add(key, options.examples);
                true
            }
            Verdict::Different => {
                report.different.add(key, options.examples);
                true
            }
        };
        if record && options.repair {
            divergent.push(Divergent {
                key: key.clone(),
                row: cells.clone(),
            });
        }
    }
    Ok(())
}

/// The rows of `batch` (key, cells) whose Redis key does not hold them, by index, with
/// how they differ.
pub(crate) async fn differing(
    redis: &mut RedisConn,
    table: &SyncedTable,
    batch: &[(String, Vec<Cell>)],
) -> Result<Vec<(usize, Verdict)>> {
    let keys: Vec<&str> = batch.iter().map(|(key, _)| key.as_str()).collect();
    let stored = fetch(redis, table, &keys).await?;
    Ok(batch
        .iter()
        .zip(stored)
        .enumerate()
        .filter_map(
            |(i, ((_, cells), stored))| match judge(table, cells, &stored) {
                Verdict::Same => None,
                verdict => Some((i, verdict)),
            },
        )
        .collect())
}

/// How a key differs from its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Same,
    Missing,
    Different,
}

/// How the key of a row (`cells`) compares with it.
fn judge(table: &SyncedTable, cells: &[Cell], stored: &Stored) -> Verdict {
    match stored {
        Stored::Missing if table.config.mode == Mode::Invalidate => Verdict::Same,
        Stored::Missing => Verdict::Missing,
        Stored::WrongType => Verdict::Different,
        Stored::Json(doc) => match table.encoder.encode(cells, None) {
            Encoded::Json(expected) if split_version(doc).1 == expected => Verdict::Same,
            _ => Verdict::Different,
        },
        Stored::Hash(fields) => match table.encoder.encode(cells, None) {
            Encoded::Hash(expected) => {
                let mut actual = fields.clone();
                actual.remove(VERSION_FIELD.as_bytes());
                let expected: HashMap<Vec<u8>, Vec<u8>> = expected
                    .chunks(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect();
                if actual == expected {
                    Verdict::Same
                } else {
                    Verdict::Different
                }
            }
            Encoded::Json(_) => Verdict::Different,
        },
    }
}

/// A key as Redis holds it.
enum Stored {
    Missing,
    /// Not the type the table's format writes.
    WrongType,
    Json(Vec<u8>),
    Hash(HashMap<Vec<u8>, Vec<u8>>),
}

/// Reads `keys` of `table` in one pipeline.
async fn fetch(redis: &mut RedisConn, table: &SyncedTable, keys: &[&str]) -> Result<Vec<Stored>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let command = match table.config.format {
        Format::Json => "GET",
        Format::Hash => "HGETALL",
    };
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd(command).arg(*key);
    }
    let replies: Vec<redis::RedisResult<redis::Value>> = pipe
        .ignore_errors()
        .query_async(redis)
        .await
        .map_err(|e| Error::redis(format!("reading the keys of {}", table.name()), e))?;
    replies
        .into_iter()
        .zip(keys)
        .map(|(reply, key)| match reply {
            Ok(redis::Value::Nil) => Ok(Stored::Missing),
            Ok(value) => Ok(match table.config.format {
                Format::Json => match value {
                    redis::Value::BulkString(doc) => Stored::Json(doc),
                    _ => Stored::WrongType,
                },
                Format::Hash => match redis::from_redis_value::<HashMap<Vec<u8>, Vec<u8>>>(value) {
                    Ok(fields) if fields.is_empty() => Stored::Missing,
                    Ok(fields) => Stored::Hash(fields),
                    Err(_) => Stored::WrongType,
                },
            }),
            Err(e) if e.code() == Some("WRONGTYPE") => Ok(Stored::WrongType),
            Err(e) => Err(Error::redis(format!("reading key {key}"), e)),
        })
        .collect()
}

/// Finds keys matching the table's template that no row produced.
async fn scan_extra(
    redis: &mut RedisConn,
    table: &SyncedTable,
    options: &Options,
    seen: &HashSet<String>,
    report: &mut TableReport,
    divergent: &mut Vec<Divergent>,
) -> Result<()> {
    let pattern = table.key.scan_pattern(|_| None);
    let what = format!("scanning the keys of {}", table.name());
    let mut cursor: u64 = 0;
    loop {
        let (next, keys) = scan_page(redis, cursor, &pattern, &what).await?;
        for key in keys {
            if seen.contains(&key) || options.skip_keys.contains(&key) {
                continue;
            }
            let Some(row) = key_row(table, &key) else {
                continue;
            };
            report.extra.add(&key, options.examples);
            if options.repair {
                divergent.push(Divergent { key, row });
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(())
}

/// The row `key` of `table` names, as far as the key tells: its placeholder cells as
/// text, the rest NULL (enough to re-read the row and to render the key again); `None`
/// when `key` does not fit the template.
pub(crate) fn key_row(table: &SyncedTable, key: &str) -> Option<Vec<Cell>> {
    // The exact inverse of rendering (see `crate::model::key`): a key that does not split
    // is not one of this table's.
    let parts = table.config.key.split_key(key)?;
    let mut row = vec![Cell::Null; table.types.len()];
    for (column, text) in parts {
        let position = table.encoder.names().iter().position(|n| n == column)?;
        row[position] = Cell::Text(text);
    }
    Some(row)
}

/// Of `items`, the keys that still differ from their rows (read again from MySQL, a
/// consistent read, and from Redis): a divergence seen once may only have been a change
/// on its way to Redis.
pub(crate) async fn still_divergent(
    conn: &mut mysql_async::Conn,
    redis: &mut RedisConn,
    table: &SyncedTable,
    items: Vec<Divergent>,
) -> Result<Vec<Divergent>> {
    let mut rows = Vec::with_capacity(items.len());
    for item in &items {
        rows.push(read_row(conn, table, item, ReadMode::Plain).await?);
    }
    let keys: Vec<&str> = items.iter().map(|d| d.key.as_str()).collect();
    let stored = fetch(redis, table, &keys).await?;
    Ok(items
        .into_iter()
        .zip(rows.iter().zip(&stored))
        .filter(|(_, (row, stored))| !agrees(table, row.as_deref(), stored))
        .map(|(item, _)| item)
        .collect())
}

/// Whether Redis holds what the row (`None`: no row) says it should.
fn agrees(table: &SyncedTable, row: Option<&[Cell]>, stored: &Stored) -> bool {
    match row {
        Some(cells) => matches!(judge(table, cells, stored), Verdict::Same),
        None => matches!(stored, Stored::Missing),
    }
}

/// How long a repair's locking re-read waits for a row lock before it reads without one
/// (seconds; see the module doc).
const LOCK_WAIT_S: u32 = 2;

/// Repairs `chunk` (see the module doc) and returns how many keys still differ.
/// `checkpoint_key`: the binlog checkpoint, whose version is a floor for the repairs'.
pub(crate) async fn repair(
    conn: &mut mysql_async::Conn,
    redis: &mut RedisConn,
    applier: &Applier,
    table: &Arc<SyncedTable>,
    chunk: &[Divergent],
    checkpoint_key: Option<&str>,
) -> Result<u64> {
    // 1. The versions Redis holds now, and the checkpoint's.
    let floor = match checkpoint_key {
        Some(key) => checkpoint_version(redis, key).await?,
        None => None,
    };
    let versions: Vec<Option<u64>> = current_versions(redis, table, chunk)
        .await?
        .into_iter()
        .map(|own| own.max(floor))
        .collect();
    // 2. The rows as MySQL has them now: a locking read, so a transaction whose binlog
    // event is already in Redis but whose commit is not yet visible is waited for.
    conn.query_drop(format!(
        "SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_S}"
    ))
    .await
    .map_err(|e| Error::mysql("preparing the repair's re-reads", e))?;
    let mut rows = Vec::with_capacity(chunk.len());
    for item in chunk {
        let row = match read_row(conn, table, item, ReadMode::Shared).await {
            // Held longer than a commit takes: a later transaction's lock, whose change
            // reaches Redis with a newer version; the committed row is what to write.
            Err(e) if is_lock_wait_timeout(&e) => {
                read_row(conn, table, item, ReadMode::Plain).await?
            }
            row => row?,
        };
        rows.push(row);
    }
    conn.query_drop("SET SESSION innodb_lock_wait_timeout = DEFAULT")
        .await
        .ok();
    // 3. Write them with the versions of step 1.
    let changes: Vec<Change> = chunk
        .iter()
        .zip(&rows)
        .zip(&versions)
        .map(|((item, row), version)| match row {
            Some(cells) if table.config.mode == Mode::Write => Change {
                table: table.clone(),
                op: Op::Upsert,
                row: cells.clone(),
                version: *version,
                committed_at_us: None,
            },
            _ => Change {
                table: table.clone(),
                op: Op::Delete,
                row: item.row.clone(),
                version: *version,
                committed_at_us: None,
            },
        })
        .collect();
    applier.apply(&changes).await?;
    // Compare again.
    let keys: Vec<&str> = chunk.iter().map(|d| d.key.as_str()).collect();
    let stored = fetch(redis, table, &keys).await?;
    Ok(rows
        .iter()
        .zip(&stored)
        .filter(|(row, stored)| !agrees(table, row.as_deref(), stored))
        .count() as u64)
}

/// The version of the binlog checkpoint stored at `key`, if any.
async fn checkpoint_version(redis: &mut RedisConn, key: &str) -> Result<Option<u64>> {
    let stored: Option<String> = redis::cmd("GET")
        .arg(key)
        .query_async(redis)
        .await
        .map_err(|e| Error::redis("reading the binlog checkpoint", e))?;
    Ok(stored
        .as_deref()
        .and_then(Checkpoint::parse)
        .map(|c| c.position.version()))
}

/// The version each key holds now: its `_cachesync_v`, else its tombstone's.
async fn current_versions(
    redis: &mut RedisConn,
    table: &SyncedTable,
    chunk: &[Divergent],
) -> Result<Vec<Option<u64>>> {
    let mut pipe = redis::pipe();
    for item in chunk {
        match table.config.format {
            Format::Json => pipe.cmd("GET").arg(&item.key),
            Format::Hash => pipe.cmd("HGET").arg(&item.key).arg(VERSION_FIELD),
        };
        match tombstone_key(&item.key) {
            Some(tomb) => pipe.cmd("GET").arg(tomb),
            None => pipe.cmd("ECHO").arg(""),
        };
    }
    let replies: Vec<redis::RedisResult<redis::Value>> = pipe
        .ignore_errors()
        .query_async(redis)
        .await
        .map_err(|e| Error::redis(format!("reading versions of {}", table.name()), e))?;
    let number = |reply: &redis::RedisResult<redis::Value>| -> Option<Vec<u8>> {
        match reply {
            Ok(redis::Value::BulkString(bytes)) => Some(bytes.clone()),
            _ => None,
        }
    };
    Ok(replies
        .chunks(2)
        .map(|pair| {
            let own = number(&pair[0]).and_then(|bytes| match table.config.format {
                Format::Json => split_version(&bytes).0,
                Format::Hash => std::str::from_utf8(&bytes).ok()?.parse().ok(),
            });
            own.or_else(|| {
                number(&pair[1]).and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
            })
        })
        .collect())
}

/// Re-reads the row a divergent key names, by primary key; `None` when no row has this
/// key.
pub(crate) async fn read_row(
    conn: &mut mysql_async::Conn,
    table: &SyncedTable,
    item: &Divergent,
    mode: ReadMode,
) -> Result<Option<Vec<Cell>>> {
    let Some(params) = key_params(table, &item.row) else {
        // A key text that is not a value of the column: no row has this key.
        return Ok(None);
    };
    let sql = match mode {
        ReadMode::Plain => table.sql.select_by_key.as_str(),
        ReadMode::Shared => table.sql.select_shared.as_str(),
    };
    let row: Option<mysql_async::Row> = conn
        .exec_first(sql, params)
        .await
        .map_err(|e| Error::mysql(format!("re-reading {} of {}", item.key, table.name()), e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    // An undecodable row is repaired as absent: its key must not hold a value.
    let Ok(cells) = table.decode_sql_row_or_key(&row) else {
        return Ok(None);
    };
    // `user:01` finds the row of `user:1`, which does not own `user:01`.
    Ok((table.key_of(&cells) == item.key).then_some(cells))
}

/// The primary-key cells of `row` as query parameters, in key order; `None` when one is
/// not a value of its column (a key text that no row can render).
pub(crate) fn key_params(table: &SyncedTable, row: &[Cell]) -> Option<Vec<mysql_async::Value>> {
    table
        .key_positions
        .iter()
        .map(|&i| sql_param(&table.types[i], &row[i]))
        .collect()
}

/// A primary-key cell as a query parameter. Cells parsed back from an extra key are
/// text; they are converted to the column's type, `None` when they do not fit it.
fn sql_param(ty: &ColumnType, cell: &Cell) -> Option<mysql_async::Value> {
    use mysql_async::Value;
    Some(match (ty, cell) {
        (_, Cell::Null) => return None,
        (_, Cell::Int(v)) => Value::Int(*v),
        (_, Cell::UInt(v)) => Value::UInt(*v),
        (_, Cell::Float(v)) => Value::Float(*v),
        (_, Cell::Double(v)) => Value::Double(*v),
        (_, Cell::Bytes(b)) => Value::Bytes(b.clone()),
        (ColumnType::Int { unsigned: true, .. }, Cell::Text(t)) => Value::UInt(t.parse().ok()?),
        (ColumnType::Int { .. }, Cell::Text(t)) => Value::Int(t.parse().ok()?),
        (ColumnType::Binary { .. }, Cell::Text(hex)) => Value::Bytes(unhex(hex)?),
        (_, Cell::Text(t) | Cell::Json(t)) => Value::Bytes(t.as_bytes().to_vec()),
    })
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_unhex() {
        assert_eq!(unhex("0001ff"), Some(vec![0, 1, 255]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
