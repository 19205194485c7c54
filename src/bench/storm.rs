//! The read-storm scenario: reproduces the three classic cache failures against the
//! configured MySQL and Redis, each with its guards off and on, and reports what MySQL
//! saw (queries), what readers saw (p50/p99 latency) and errors.
//!
//! | case | what happens |
//! |---|---|
//! | breakdown | `hot_requests` concurrent reads of one hot key that has just expired |
//! | penetration | `missing_requests` reads of `missing_keys` ids that do not exist, `concurrency` at a time |
//! | avalanche | `expiry_keys` keys cached with one TTL; right after it ends every key is read once, `concurrency` at a time |
//!
//! The scenario works in its own database (`options.database`, created and refilled on
//! every run: table `items`, `expiry_keys` rows) and key prefix `cachesync:storm:`.
//! MySQL queries are counted on MySQL's side: the reads run as a dedicated MySQL user,
//! `cachesync_storm` (re-created each run; needs a user allowed to `CREATE USER`,
//! `GRANT` and `SET GLOBAL userstat = 1` — MariaDB only), and the count is
//! `information_schema.USER_STATISTICS.SELECT_COMMANDS` less the `SELECT`s the driver
//! runs per connection it opens (calibrated on one connection first). Reads call the
//! library's read path directly (as the API handler does), so latency excludes HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::Pool;
use mysql_async::prelude::Queryable;
use serde::Serialize;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::report::ReportFiles;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::cell::Format;
use crate::model::change::{Change, Op};
use crate::model::key::KeyTemplate;
use crate::model::table::{
    BloomConfig, Mode, ReadConfig, SyncedTable, TableConfig, TableSchema, quote_ident,
};
use crate::read::{Answer, ReadPath};
use crate::redis::Applier;

/// The MySQL user the scenario reads as, so MariaDB counts exactly its queries.
const STORM_USER: &str = "cachesync_storm";
/// Time between two readings of `USER_STATISTICS` that must agree (see [`statistics`]).
const SETTLE: Duration = Duration::from_millis(20);
/// Key prefix of the scenario's rows.
const KEY_PREFIX: &str = "cachesync:storm:";

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct ReadStormOptions {
    /// Database the scenario creates and fills (dropped and re-created tables only).
    pub database: String,
    /// Concurrent reads of the one hot key.
    pub hot_requests: usize,
    /// Reads of ids that do not exist.
    pub missing_requests: usize,
    /// Distinct ids those reads use.
    pub missing_keys: usize,
    /// Rows in the table and keys that expire together.
    pub expiry_keys: usize,
    /// Reads in flight at once in the penetration and avalanche cases.
    pub concurrency: usize,
    /// TTL of the keys of the avalanche case.
    pub expiry_ttl: Duration,
    /// Jitter added to that TTL with the avalanche guard on.
    pub expiry_jitter: Duration,
}

impl Default for ReadStormOptions {
    fn default() -> Self {
        ReadStormOptions {
            database: "cachesync_storm".to_owned(),
            hot_requests: 1_000,
            missing_requests: 20_000,
            missing_keys: 2_000,
            expiry_keys: 50_000,
            concurrency: 256,
            expiry_ttl: Duration::from_secs(2),
            expiry_jitter: Duration::from_secs(8),
        }
    }
}

impl ReadStormOptions {
    /// Checks the sizes before anything connects; lists every problem (named by the
    /// `cachesync bench` flag that sets it).
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        for (flag, value) in [
            ("--storm-hot-requests", self.hot_requests),
            ("--storm-missing-requests", self.missing_requests),
            ("--storm-missing-keys", self.missing_keys),
            ("--storm-expiry-keys", self.expiry_keys),
            ("--storm-concurrency", self.concurrency),
        ] {
            if value == 0 {
                problems.push(format!("{flag}: must be at least 1"));
            }
        }
        if self.expiry_keys > 10_000_000 {
            problems.push("--storm-expiry-keys: must be at most 10000000".to_owned());
        }
        if self.expiry_ttl < Duration::from_secs(1) {
            problems.push(format!(
                "--storm-expiry-ttl: must be at least 1s, got {:?}",
                self.expiry_ttl
            ));
        }
        let db = &self.database;
        if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            problems.push(format!(
                "--database: {db:?} must be letters, digits and underscores"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems))
        }
    }
}

/// One case with one guard setting.
#[derive(Debug, Clone, Serialize)]
pub struct StormRow {
    /// `breakdown`, `penetration` or `avalanche`.
    pub case: &'static str,
    /// The guards on, in words (`off` for none).
    pub guards: String,
    pub requests: u64,
    /// `SELECT`s MySQL counted for the reads.
    pub mysql_queries: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    /// Wall time of the case's reads.
    pub seconds: f64,
}

/// The scenario's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ReadStormReport {
    pub options: ReadStormOptions,
    /// `SELECT VERSION()` of the server.
    pub mysql_version: String,
    pub rows: Vec<StormRow>,
}

impl ReadStormReport {
    /// The report as a Markdown table.
    pub fn to_markdown(&self) -> String {
        let o = &self.options;
        let mut out = format!(
            "Read storm on {} — breakdown: {} concurrent reads of one expired key; penetration: \
             {} reads of {} missing ids, {} in flight; avalanche: {} keys with a {} s TTL read \
             once right after it ends, {} in flight. MySQL queries as MariaDB counted them; \
             seconds: wall time of the case's reads.\n\n",
            self.mysql_version,
            o.hot_requests,
            o.missing_requests,
            o.missing_keys,
            o.concurrency,
            o.expiry_keys,
            o.expiry_ttl.as_secs_f64(),
            o.concurrency,
        );
        out.push_str(
            "| case | guards | requests | MySQL queries | p50 ms | p99 ms | max ms | errors | seconds |\n",
        );
        out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.2} |\n",
                r.case,
                r.guards,
                r.requests,
                r.mysql_queries,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.errors,
                r.seconds
            ));
        }
        out
    }
}

/// `cachesync bench --scenario read-storm`: serves metrics, runs the storm, prints its
/// table and writes the files asked for.
pub async fn run_and_report(
    config: &Config,
    options: &ReadStormOptions,
    files: &ReportFiles,
) -> Result<()> {
    options.validate()?;
    crate::metrics::install(config.metrics_listen)?;
    eprintln!(
        "cachesync bench: read storm on {} and {} (database {}); metrics on http://{}/metrics",
        crate::redact::redact_url(&config.mysql_url),
        crate::redact::redact_url(&config.redis_url),
        options.database,
        config.metrics_listen
    );
    let report = run(config, options).await?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| Error::Io {
        context: "encoding the report as JSON".to_owned(),
        source: std::io::Error::other(e),
    })?;
    files.print_and_write(&report.to_markdown(), &json)
}

/// Runs every case with its guards off and on; see the module doc.
pub async fn run(config: &Config, options: &ReadStormOptions) -> Result<ReadStormReport> {
    let admin = crate::mysql::pool(&config.mysql_url)?;
    let mut conn = crate::mysql::get_conn(&admin, &config.mysql_url).await?;
    let outcome = async {
        let mysql_version: String = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| Error::mysql("reading the server version", e))?
            .unwrap_or_default();
        info!(
            rows = options.expiry_keys,
            database = %options.database,
            "read storm: filling the table"
        );
        prepare_table(&mut conn, options).await?;
        let schema = crate::mysql::schema::read_table(&mut conn, &options.database, "items")
            .await?
            .ok_or_else(|| storm_error(format!("{}.items vanished", options.database)))?;
        let applier = Applier::connect(
            &config.redis_url,
            config.tombstone_ttl,
            config.strategy.name(),
        )
        .await?;
        let counter = Counter::create(&mut conn, &config.mysql_url, &options.database).await?;
        let storm = Storm {
            options,
            schema,
            applier,
            counter,
        };
        let rows = storm.run_all(&mut conn).await;
        storm.counter.drop_user(&mut conn).await;
        storm.clean_up(&mut conn).await;
        Ok(ReadStormReport {
            options: options.clone(),
            mysql_version,
            rows: rows?,
        })
    }
    .await;
    drop(conn);
    admin.disconnect().await.ok();
    outcome
}

fn storm_error(reason: String) -> Error {
    Error::Strategy {
        strategy: "read-storm",
        reason,
    }
}

/// (Re)creates `<database>.items` with `expiry_keys` rows.
async fn prepare_table(conn: &mut mysql_async::Conn, options: &ReadStormOptions) -> Result<()> {
    let db = quote_ident(&options.database);
    let statements = [
        format!("CREATE DATABASE IF NOT EXISTS {db}"),
        format!("DROP TABLE IF EXISTS {db}.items"),
        format!(
            "CREATE TABLE {db}.items (id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(64) NOT NULL, \
             price DECIMAL(10,2) NOT NULL, updated_at DATETIME(6) NOT NULL)"
        ),
    ];
    for sql in &statements {
        conn.query_drop(sql)
            .await
            .map_err(|e| Error::mysql(format!("preparing the storm table: {sql}"), e))?;
    }
    let rows = options.expiry_keys.max(2) as u64;
    for start in (1..=rows).step_by(5_000) {
        let values: Vec<String> = (start..=(start + 4_999).min(rows))
            .map(|id| format!("({id}, 'item {id}', {}.{:02}, NOW(6))", id % 1000, id % 100))
            .collect();
        conn.query_drop(format!(
            "INSERT INTO {db}.items (id, name, price, updated_at) VALUES {}",
            values.join(", ")
        ))
        .await
        .map_err(|e| Error::mysql("filling the storm table", e))?;
    }
    Ok(())
}

/// The dedicated MySQL user the reads run as, and MariaDB's count of its `SELECT`s.
///
/// MariaDB keeps a user's statistics across `DROP USER` (until `FLUSH USER_STATISTICS`,
/// which would reset every user's and is not ours to do), so everything is a difference
/// of two readings: the calibration as much as each case's count.
struct Counter {
    pool: Pool,
    /// `SELECT`s the driver runs per server connection it opens.
    per_connection: u64,
}

impl Counter {
    async fn create(conn: &mut mysql_async::Conn, url: &str, database: &str) -> Result<Counter> {
        let db = quote_ident(database);
        for sql in [
            "SET GLOBAL userstat = 1".to_owned(),
            format!("DROP USER IF EXISTS '{STORM_USER}'@'%'"),
            format!("CREATE USER '{STORM_USER}'@'%'"),
            format!("GRANT SELECT ON {db}.* TO '{STORM_USER}'@'%'"),
        ] {
            conn.query_drop(&sql).await.map_err(|e| {
                Error::mysql(
                    format!(
                        "{sql} (the read storm counts queries with MariaDB's userstat as its own user)"
                    ),
                    e,
                )
            })?;
        }
        // The daemon's pool settings, as the storm's own user.
        let opts = crate::mysql::pool_opts(url)?
            .user(Some(STORM_USER))
            .pass(None::<String>);
        let pool_of = || Pool::new(opts.clone());
        // Calibrate on one connection of a throw-away pool.
        let start = statistics(conn).await?;
        let probe = pool_of();
        let probed = probe.get_conn().await;
        drop(probed.map_err(|e| Error::mysql(format!("connecting as {STORM_USER}"), e))?);
        probe.disconnect().await.ok();
        let end = statistics(conn).await?;
        let (selects, connections) = (
            end.selects.saturating_sub(start.selects),
            end.connections.saturating_sub(start.connections),
        );
        if connections == 0 || selects % connections != 0 {
            return Err(storm_error(format!(
                "information_schema.USER_STATISTICS counted {selects} SELECTs over {connections} \
                 connections for a connection that ran none: cannot count queries"
            )));
        }
        Ok(Counter {
            pool: pool_of(),
            per_connection: selects / connections,
        })
    }

    /// MariaDB's counters of the user now.
    async fn reading(&self, conn: &mut mysql_async::Conn) -> Result<Statistics> {
        statistics(conn).await
    }

    /// The reads' `SELECT`s since `before`: all the user's `SELECT`s less those the
    /// driver ran on the connections opened meanwhile.
    async fn queries_since(&self, conn: &mut mysql_async::Conn, before: Statistics) -> Result<u64> {
        let now = statistics(conn).await?;
        let selects = now.selects.saturating_sub(before.selects);
        let connections = now.connections.saturating_sub(before.connections);
        Ok(selects.saturating_sub(connections * self.per_connection))
    }

    async fn drop_user(&self, conn: &mut mysql_async::Conn) {
        self.pool.clone().disconnect().await.ok();
        let _ = conn
            .query_drop(format!("DROP USER IF EXISTS '{STORM_USER}'@'%'"))
            .await;
    }
}

/// `SELECT_COMMANDS` and `TOTAL_CONNECTIONS` of [`STORM_USER`] (zero before it has any).
#[derive(Debug, Clone, Copy)]
struct Statistics {
    selects: u64,
    connections: u64,
}

/// The user's counters once they have settled: MariaDB adds a statement to
/// `USER_STATISTICS` when it has finished the command, after the client may already have
/// the answer, so a reading taken right after a read can miss that read. Two readings
/// [`SETTLE`] apart that agree are taken as settled.
async fn statistics(conn: &mut mysql_async::Conn) -> Result<Statistics> {
    let mut last = statistics_now(conn).await?;
    loop {
        tokio::time::sleep(SETTLE).await;
        let now = statistics_now(conn).await?;
        if (now.selects, now.connections) == (last.selects, last.connections) {
            return Ok(now);
        }
        last = now;
    }
}

async fn statistics_now(conn: &mut mysql_async::Conn) -> Result<Statistics> {
    let row: Option<(u64, u64)> = conn
        .exec_first(
            "SELECT SELECT_COMMANDS, TOTAL_CONNECTIONS FROM information_schema.USER_STATISTICS \
             WHERE USER = ?",
            (STORM_USER,),
        )
        .await
        .map_err(|e| Error::mysql("reading information_schema.USER_STATISTICS", e))?;
    let (selects, connections) = row.unwrap_or((0, 0));
    Ok(Statistics {
        selects,
        connections,
    })
}

struct Storm<'a> {
    options: &'a ReadStormOptions,
    schema: TableSchema,
    applier: Applier,
    counter: Counter,
}

/// Which guards a case runs with.
struct Guards {
    name: &'static str,
    read: ReadConfig,
    ttl: Duration,
    jitter: Duration,
}

impl Guards {
    /// `read` with keys that outlive the case (breakdown, penetration).
    fn new(name: &'static str, read: ReadConfig) -> Guards {
        Guards {
            name,
            read,
            ttl: Duration::from_secs(3600),
            jitter: Duration::ZERO,
        }
    }
}

/// Every guard off; each case switches on the ones it measures.
fn guards_off() -> ReadConfig {
    ReadConfig {
        negative_ttl: None,
        single_flight: false,
        lock: false,
        ..ReadConfig::default()
    }
}

/// The breakdown guards: single-flight and the Redis mutex, with a wait that covers a
/// MySQL read under a storm.
fn breakdown_guards() -> ReadConfig {
    ReadConfig {
        single_flight: true,
        lock: true,
        lock_wait: Duration::from_secs(5),
        lock_ttl: Duration::from_secs(5),
        ..guards_off()
    }
}

impl Storm<'_> {
    async fn run_all(&self, admin: &mut mysql_async::Conn) -> Result<Vec<StormRow>> {
        let o = self.options;
        let negative = Some(Duration::from_secs(60));
        let bloom = Some(BloomConfig {
            expected_rows: (o.expiry_keys as u64).max(1_000),
            fp_rate: 0.01,
        });
        let mut rows = Vec::new();
        for guards in [
            Guards::new("off", guards_off()),
            Guards::new(
                "single-flight",
                ReadConfig {
                    lock: false,
                    ..breakdown_guards()
                },
            ),
            Guards::new(
                "Redis mutex",
                ReadConfig {
                    single_flight: false,
                    ..breakdown_guards()
                },
            ),
            Guards::new("single-flight + Redis mutex", breakdown_guards()),
        ] {
            rows.push(done(self.breakdown(admin, &guards).await?));
        }
        for guards in [
            Guards::new("off", guards_off()),
            Guards::new(
                "negative caching",
                ReadConfig {
                    negative_ttl: negative,
                    ..guards_off()
                },
            ),
            Guards::new(
                "negative caching + single-flight + Redis mutex",
                ReadConfig {
                    negative_ttl: negative,
                    ..breakdown_guards()
                },
            ),
            Guards::new(
                "Bloom filter",
                ReadConfig {
                    bloom,
                    ..guards_off()
                },
            ),
            Guards::new(
                "Bloom filter + negative caching",
                ReadConfig {
                    negative_ttl: negative,
                    bloom,
                    ..guards_off()
                },
            ),
        ] {
            rows.push(done(self.penetration(admin, &guards).await?));
        }
        for guards in [
            Guards {
                name: "off (no jitter)",
                read: guards_off(),
                ttl: o.expiry_ttl,
                jitter: Duration::ZERO,
            },
            Guards {
                name: "TTL jitter",
                read: guards_off(),
                ttl: o.expiry_ttl,
                jitter: o.expiry_jitter,
            },
        ] {
            rows.push(done(self.avalanche(admin, &guards).await?));
        }
        Ok(rows)
    }

    /// The table planned with `guards`.
    fn table(&self, guards: &Guards) -> Result<Arc<SyncedTable>> {
        let key = KeyTemplate::parse(&format!("{KEY_PREFIX}item:{{id}}"))
            .map_err(|e| storm_error(format!("key template: {e}")))?;
        let config = TableConfig {
            index: 0,
            database: self.options.database.clone(),
            table: "items".to_owned(),
            key,
            format: Format::Json,
            columns: None,
            ttl: Some(guards.ttl.max(Duration::from_secs(1))),
            ttl_jitter: guards.jitter,
            version_column: None,
            mode: Mode::Write,
            read: guards.read.clone(),
        };
        SyncedTable::plan(&config, self.schema.clone())
            .map(Arc::new)
            .map_err(Error::Config)
    }

    async fn reads(&self, table: &Arc<SyncedTable>) -> Arc<ReadPath> {
        ReadPath::new(
            self.counter.pool.clone(),
            &format!("mysql://{STORM_USER}@…"),
            self.applier.clone(),
            std::slice::from_ref(table),
        )
    }

    async fn clear_redis(&self) -> Result<()> {
        let mut redis = self.applier.connection();
        for pattern in [
            format!("{KEY_PREFIX}*"),
            format!("{{{KEY_PREFIX}*"),
            format!("cachesync:bloom:{{{}.items}}*", self.options.database),
        ] {
            crate::redis::connection::delete_matching(
                &mut redis,
                &pattern,
                "clearing the storm keys",
            )
            .await?;
        }
        Ok(())
    }

    /// Removes the scenario's Redis keys and table (failures only logged).
    async fn clean_up(&self, admin: &mut mysql_async::Conn) {
        if let Err(e) = self.clear_redis().await {
            warn!(error = %e, "could not remove the read storm's Redis keys");
        }
        let table = format!("{}.items", quote_ident(&self.options.database));
        if let Err(e) = admin
            .query_drop(format!("DROP TABLE IF EXISTS {table}"))
            .await
        {
            warn!(error = %e, "could not drop the read storm's table {table}");
        }
    }

    /// One hot key, just expired, `hot_requests` readers at once.
    async fn breakdown(&self, admin: &mut mysql_async::Conn, guards: &Guards) -> Result<StormRow> {
        let table = self.table(guards)?;
        let reads = self.reads(&table).await;
        self.clear_redis().await?;
        warm(&reads, &table).await;
        self.clear_redis().await?;
        let before = self.counter.reading(admin).await?;
        let n = self.options.hot_requests;
        let ids = vec![1u64; n];
        // Released together once all are spawned: with warm MySQL connections the first
        // read can fill Redis before the last is spawned, and the storm would not happen.
        let sample = read_all(&reads, &table, ids, n, Start::Together).await;
        let queries = self.counter.queries_since(admin, before).await?;
        Ok(sample.row("breakdown", guards.name, queries))
    }

    /// Reads of ids that do not exist.
    async fn penetration(
        &self,
        admin: &mut mysql_async::Conn,
        guards: &Guards,
    ) -> Result<StormRow> {
        let table = self.table(guards)?;
        let reads = self.reads(&table).await;
        self.clear_redis().await?;
        if guards.read.bloom.is_some() {
            reads.build_bloom_filters().await?;
        }
        warm(&reads, &table).await;
        let before = self.counter.reading(admin).await?;
        let o = self.options;
        let first_missing = 1_000_000_000u64;
        let ids = (0..o.missing_requests)
            .map(|i| first_missing + (i % o.missing_keys.max(1)) as u64)
            .collect();
        let sample = read_all(&reads, &table, ids, o.concurrency, Start::InOrder).await;
        let queries = self.counter.queries_since(admin, before).await?;
        Ok(sample.row("penetration", guards.name, queries))
    }

    /// `expiry_keys` keys written by the sync path with one TTL (plus jitter when on),
    /// read once each right after the TTL.
    async fn avalanche(&self, admin: &mut mysql_async::Conn, guards: &Guards) -> Result<StormRow> {
        let table = self.table(guards)?;
        let reads = self.reads(&table).await;
        self.clear_redis().await?;
        warm(&reads, &table).await;
        let o = self.options;
        // Cache every row as the sync stream would (one version, TTL plus jitter).
        let mut conn = self
            .counter
            .pool
            .get_conn()
            .await
            .map_err(|e| Error::mysql("reading the storm table", e))?;
        let mut scan =
            crate::mysql::scan::TableScan::open(&mut conn, &table, 5_000, "read storm").await?;
        while let Some(batch) = scan.next_batch().await? {
            let changes: Vec<Change> = batch
                .rows
                .into_iter()
                .map(|row| Change {
                    table: table.clone(),
                    op: Op::Upsert,
                    row,
                    version: None,
                    committed_at_us: None,
                })
                .collect();
            self.applier.apply(&changes).await?;
        }
        drop(scan);
        drop(conn);
        // Wait until the common TTL has run out for every key, the last written included.
        let until =
            Instant::now() + table.config.ttl.unwrap_or_default() + Duration::from_millis(100);
        tokio::time::sleep_until(until.into()).await;
        let before = self.counter.reading(admin).await?;
        let ids = (1..=o.expiry_keys as u64).collect();
        let sample = read_all(&reads, &table, ids, o.concurrency, Start::InOrder).await;
        let queries = self.counter.queries_since(admin, before).await?;
        Ok(sample.row("avalanche", guards.name, queries))
    }
}

/// Logs a finished case (the progress of a run).
fn done(row: StormRow) -> StormRow {
    info!(
        case = row.case,
        guards = %row.guards,
        requests = row.requests,
        mysql_queries = row.mysql_queries,
        p99_ms = format_args!("{:.2}", row.p99_ms),
        errors = row.errors,
        "read storm case done"
    );
    row
}

/// One read of a row that does not exist, so the read path's pool has a connection
/// before the case starts (connection set-up is subtracted from the counts anyway).
async fn warm(reads: &Arc<ReadPath>, table: &SyncedTable) {
    let name = table.name();
    let _ = reads.get(&name, &[("id".to_owned(), "0".to_owned())]).await;
}

/// Latencies and errors of a batch of reads.
struct Sample {
    latencies: Vec<Duration>,
    errors: u64,
    wall: Duration,
}

impl Sample {
    fn row(mut self, case: &'static str, guards: &str, mysql_queries: u64) -> StormRow {
        self.latencies.sort_unstable();
        let at = |q: f64| {
            if self.latencies.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies.len() as f64 * q).ceil() as usize)
                .clamp(1, self.latencies.len())
                - 1;
            self.latencies[i].as_secs_f64() * 1e3
        };
        StormRow {
            case,
            guards: guards.to_owned(),
            requests: (self.latencies.len() as u64) + self.errors,
            mysql_queries,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
            errors: self.errors,
            seconds: self.wall.as_secs_f64(),
        }
    }
}

/// How [`read_all`] starts its reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Each as soon as it has a concurrency slot, in the order given.
    InOrder,
    /// All at one moment, once every task is spawned (`concurrency` must cover them).
    Together,
}

/// Reads `ids`, at most `concurrency` at a time. `Start::InOrder`: started in the order
/// given (a read takes its slot before its task is spawned, so the scheduler cannot
/// reorder them: two reads of one id are in flight together only when the ids say so).
async fn read_all(
    reads: &Arc<ReadPath>,
    table: &SyncedTable,
    ids: Vec<u64>,
    concurrency: usize,
    start: Start,
) -> Sample {
    let name = table.name();
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let (go_tx, go_rx) = tokio::sync::watch::channel(start == Start::InOrder);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(ids.len());
    for id in ids {
        let permit = limit.clone().acquire_owned().await;
        // Latency runs from the read's issue, scheduling of its task included.
        let issued = Instant::now();
        let (reads, name, mut go) = (reads.clone(), name.clone(), go_rx.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let _ = go.wait_for(|&go| go).await;
            let begun = match start {
                Start::InOrder => issued,
                Start::Together => Instant::now(),
            };
            let outcome = reads.get(&name, &[("id".to_owned(), id.to_string())]).await;
            (begun.elapsed(), outcome)
        }));
    }
    go_tx.send_replace(true);
    let mut sample = Sample {
        latencies: Vec::with_capacity(tasks.len()),
        errors: 0,
        wall: Duration::ZERO,
    };
    for task in tasks {
        match task.await {
            Ok((latency, Ok(Answer::Found(_) | Answer::Absent))) => sample.latencies.push(latency),
            _ => sample.errors += 1,
        }
    }
    sample.wall = started.elapsed();
    sample
}
