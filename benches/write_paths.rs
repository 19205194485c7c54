//! Write-path throughput: what each strategy costs the application per write, as
//! requests/s and latency percentiles of [`SyncStrategy::write`] at a fixed concurrency.
//!
//! `scripts/services.sh up && cargo bench --bench write_paths`
//!
//! Environment: `CACHESYNC_BENCH_CONCURRENCY` writer tasks (default 16),
//! `CACHESYNC_BENCH_SECONDS` measured per path and round (default 5, after 1 s of
//! warm-up), `CACHESYNC_BENCH_ROUNDS` rounds over all paths (default 3; interleaving the
//! paths spreads drift and neighbours' load over all of them; the table shows each path's
//! median round and the range),
//! `CACHESYNC_BENCH_ROWS` rows written at random (default 10 000), `CACHESYNC_BENCH_HOT_ROWS`
//! rows of the contended runs (default 8), `CACHESYNC_BENCH_ONLY` a comma-separated list of
//! path names to run (default all), and the test services' `CACHESYNC_TEST_*_URL`.
//!
//! Every write is one upsert of a random row of a 5-column table (`INSERT … ON DUPLICATE
//! KEY UPDATE`, read back `FOR UPDATE`, commit) that already holds every row. A trigger
//! bumps the row's `v` on every update, so `v` grows in commit order and can serve as the
//! `version_column` even between racing writers. Paths:
//!
//! - `mysql-only`: `cachesync::sqlwrite::commit` alone — the baseline;
//! - `binlog`: the binlog strategy's write (the commit alone), with its tailer running as
//!   the daemon would — on this machine it competes for the same CPU;
//! - `dual-write`, `dual-write+version`: commit, then the Redis write, without / with
//!   `version_column`;
//! - `mq-direct`, `mq-outbox`: the mq strategy's write (commit + confirmed publish; commit
//!   with an outbox row + the relay's confirm), its consumer running;
//! - `dual-write hot`, `dual-write+version hot`: the two dual-writes on only
//!   `CACHESYNC_BENCH_HOT_ROWS` rows, where writers of one row race. After each
//!   dual-write run the bench compares every key in Redis with its row's `SELECT`
//!   encoding ("stale keys after"): a lost race leaves an unversioned key stale until the
//!   row's next write; with the version the guard drops the older image instead (counted
//!   as "guard drops": how often writers of one row reached Redis out of commit order).
//!
//! Everything lives in the database `cs_bench_write` and Redis keys `bench:wp:*`, and is
//! removed at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cachesync::applier::Op;
use cachesync::config::{Config, RawConfig};
use cachesync::daemon::Services;
use cachesync::row::Encoded;
use cachesync::schema::SyncedTable;
use cachesync::strategy::{RedisOutcome, RowWrite, Strategy, SyncStrategy, WriteReceipt};
use mysql_async::Value;
use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;

const DB: &str = "cs_bench_write";
const KEY_PREFIX: &str = "bench:wp";
const CHECKPOINT_KEY: &str = "bench:wp:checkpoint";
const AMQP_NAME: &str = "cachesync.bench.wp";
const WARM_UP: Duration = Duration::from_secs(1);

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// One write path to measure.
struct PathSpec {
    name: &'static str,
    /// `None`: MySQL only (no strategy).
    strategy: Option<&'static str>,
    versioned: bool,
    hot: bool,
    /// `amqp.publish` for mq.
    publish: Option<&'static str>,
}

const PATHS: &[PathSpec] = &[
    PathSpec {
        name: "mysql-only",
        strategy: None,
        versioned: false,
        hot: false,
        publish: None,
    },
    PathSpec {
        name: "binlog",
        strategy: Some("binlog"),
        versioned: false,
        hot: false,
        publish: None,
    },
    PathSpec {
        name: "dual-write",
        strategy: Some("dual-write"),
        versioned: false,
        hot: false,
        publish: None,
    },
    PathSpec {
        name: "dual-write+version",
        strategy: Some("dual-write"),
        versioned: true,
        hot: false,
        publish: None,
    },
    // The mq strategy (the lead's, issue #4): both publish modes, through
    // `Strategy::build` like the others.
    PathSpec {
        name: "mq-direct",
        strategy: Some("mq"),
        versioned: false,
        hot: false,
        publish: Some("direct"),
    },
    PathSpec {
        name: "mq-outbox",
        strategy: Some("mq"),
        versioned: false,
        hot: false,
        publish: Some("outbox"),
    },
    PathSpec {
        name: "dual-write hot",
        strategy: Some("dual-write"),
        versioned: false,
        hot: true,
        publish: None,
    },
    PathSpec {
        name: "dual-write+version hot",
        strategy: Some("dual-write"),
        versioned: true,
        hot: true,
        publish: None,
    },
];

/// What one run measured.
struct Outcome {
    name: &'static str,
    rows: u64,
    writes: u64,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
    /// Write latencies in µs, sorted.
    latencies: Vec<u32>,
    /// Dual-write: writes whose Redis part is pending (queued for repair).
    pending: u64,
    /// Dual-write: older images the version guard dropped (a race that was stopped).
    guard_drops: u64,
    /// Dual-write: keys whose Redis value differs from their row's SELECT encoding
    /// afterwards (stale).
    divergent: Option<u64>,
    skipped: Option<String>,
}

impl Outcome {
    fn skipped(name: &'static str, rows: u64, why: String) -> Outcome {
        Outcome {
            name,
            rows,
            writes: 0,
            errors: 0,
            first_error: None,
            seconds: 0.0,
            latencies: Vec::new(),
            pending: 0,
            guard_drops: 0,
            divergent: None,
            skipped: Some(why),
        }
    }

    fn rate(&self) -> f64 {
        self.writes as f64 / self.seconds
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        Duration::from_micros(u64::from(self.latencies[i - 1]))
    }
}

/// A path's round of median throughput, and the range of throughput over its rounds.
fn median_round(mut runs: Vec<Outcome>) -> (Outcome, String) {
    if let Some(i) = runs.iter().position(|o| o.skipped.is_some()) {
        return (runs.swap_remove(i), String::new());
    }
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let range = format!("{:.0}–{:.0}", runs[0].rate(), runs[runs.len() - 1].rate());
    let mid = runs.len() / 2;
    (runs.swap_remove(mid), range)
}

/// `/proc/loadavg`'s three averages: the bench shares the machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The write being measured: the baseline or a strategy.
enum WritePath {
    MysqlOnly(mysql_async::Pool),
    Strategy(Box<Strategy>),
}

impl WritePath {
    async fn write(&self, write: RowWrite) -> cachesync::Result<Option<WriteReceipt>> {
        match self {
            WritePath::MysqlOnly(pool) => cachesync::sqlwrite::commit(pool, &write)
                .await
                .map(|_| None),
            WritePath::Strategy(s) => s.write(write).await.map(Some),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing extra but
    // must not run a minutes-long benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        println!("write_paths: run with `cargo bench --bench write_paths`");
        return Ok(());
    }
    let concurrency: usize = env_or("CACHESYNC_BENCH_CONCURRENCY", "16").parse()?;
    let seconds: f64 = env_or("CACHESYNC_BENCH_SECONDS", "5").parse()?;
    let rounds: usize = env_or("CACHESYNC_BENCH_ROUNDS", "3").parse()?;
    let rows: u64 = env_or("CACHESYNC_BENCH_ROWS", "10000").parse()?;
    let hot_rows: u64 = env_or("CACHESYNC_BENCH_HOT_ROWS", "8").parse()?;
    let only = std::env::var("CACHESYNC_BENCH_ONLY").ok();
    let mysql_url = env_or("CACHESYNC_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3307");
    let redis_url = env_or("CACHESYNC_TEST_REDIS_URL", "redis://127.0.0.1:6380");
    let amqp_url = env_or(
        "CACHESYNC_TEST_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    );
    anyhow::ensure!(
        concurrency > 0 && rows > 0 && hot_rows > 0 && seconds > 0.0 && rounds > 0,
        "concurrency, rows, hot rows, seconds and rounds must be positive"
    );

    let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&mysql_url)?).await?;
    conn.query_drop(format!("DROP DATABASE IF EXISTS {DB}"))
        .await?;
    conn.query_drop(format!("CREATE DATABASE {DB}")).await?;
    conn.query_drop(format!(
        "CREATE TABLE {DB}.items (id INT PRIMARY KEY, v BIGINT UNSIGNED NOT NULL DEFAULT 1, \
         name VARCHAR(32) NOT NULL, price DECIMAL(10,2) NOT NULL, updated DATETIME(6) NOT NULL)"
    ))
    .await?;
    conn.query_drop(format!(
        "CREATE TRIGGER {DB}.items_version BEFORE UPDATE ON {DB}.items \
         FOR EACH ROW SET NEW.v = OLD.v + 1"
    ))
    .await?;
    conn.query_drop("SET SESSION max_recursive_iterations = 100000000")
        .await?;

    println!(
        "write_paths: {concurrency} writers, {rounds} rounds of {seconds} s per path after {} s \
         warm-up, {rows} rows ({hot_rows} in the hot runs); load average {}",
        WARM_UP.as_secs(),
        load_average()
    );
    let specs: Vec<&PathSpec> = PATHS
        .iter()
        .filter(|spec| {
            only.as_deref()
                .is_none_or(|only| only.split(',').any(|n| n.trim() == spec.name))
        })
        .collect();
    let mut outcomes: Vec<Vec<Outcome>> = specs.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        println!("round {round} of {rounds}");
        for (spec, runs) in specs.iter().zip(&mut outcomes) {
            let rows = if spec.hot { hot_rows } else { rows };
            prefill(&mut conn, rows).await?;
            clear_redis(&redis_url).await?;
            let config = config_for(spec, &mysql_url, &redis_url, &amqp_url)?;
            let outcome = match measure(spec, &config, rows, concurrency, seconds).await {
                Ok(outcome) => outcome,
                Err(e) => Outcome::skipped(spec.name, rows, format!("{e:#}")),
            };
            print_line(&outcome);
            runs.push(outcome);
        }
    }
    println!("load average at the end: {}", load_average());
    let medians: Vec<(Outcome, String)> = outcomes.into_iter().map(median_round).collect();
    print_table(&medians, concurrency, rounds);

    // Leave nothing behind.
    clear_redis(&redis_url).await?;
    conn.query_drop(format!("DROP DATABASE {DB}")).await?;
    if specs.iter().any(|spec| spec.strategy == Some("mq")) {
        delete_amqp_topology(&amqp_url).await;
    }
    Ok(())
}

/// Empties the table and fills it with `rows` rows, so every measured write is an update.
async fn prefill(conn: &mut mysql_async::Conn, rows: u64) -> anyhow::Result<()> {
    conn.query_drop(format!("TRUNCATE {DB}.items")).await?;
    conn.query_drop(format!(
        "INSERT INTO {DB}.items (id, name, price, updated) \
         WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {rows}) \
         SELECT i, CONCAT('item ', i), i / 100, NOW(6) FROM seq"
    ))
    .await?;
    Ok(())
}

fn config_for(
    spec: &PathSpec,
    mysql_url: &str,
    redis_url: &str,
    amqp_url: &str,
) -> anyhow::Result<Config> {
    let mut table = serde_json::json!({
        "name": format!("{DB}.items"),
        "key": format!("{KEY_PREFIX}:{}:{{id}}", spec.name.replace([' ', '+'], "-")),
    });
    if spec.versioned {
        table["version_column"] = "v".into();
    }
    let mut tree = serde_json::json!({
        "strategy": spec.strategy.unwrap_or("dual-write"),
        "mysql": { "url": mysql_url },
        "redis": { "url": redis_url },
        "binlog": { "server_id": 31_338, "checkpoint_key": CHECKPOINT_KEY },
        "tables": [table],
    });
    if let Some(publish) = spec.publish {
        tree["amqp"] = serde_json::json!({
            "url": amqp_url,
            "exchange": AMQP_NAME,
            "queue": AMQP_NAME,
            "dead_letter_queue": format!("{AMQP_NAME}.dlq"),
            "publish": publish,
            "outbox_table": format!("{DB}.outbox"),
        });
    }
    Ok(RawConfig::from_tree(tree)
        .map_err(|p| anyhow::anyhow!("{p:?}"))?
        .validate()?)
}

async fn measure(
    spec: &PathSpec,
    config: &Config,
    rows: u64,
    concurrency: usize,
    seconds: f64,
) -> anyhow::Result<Outcome> {
    let services = Services::connect(config).await?;
    let table = services.tables[0].clone();
    let path = Arc::new(match spec.strategy {
        None => WritePath::MysqlOnly(services.pool.clone()),
        Some(_) => WritePath::Strategy(Box::new(Strategy::build(config, &services)?)),
    });
    let shutdown = CancellationToken::new();
    let background = match &*path {
        WritePath::Strategy(_) => {
            let path = path.clone();
            let shutdown = shutdown.clone();
            Some(tokio::spawn(async move {
                match &*path {
                    WritePath::Strategy(s) => s.run(shutdown).await,
                    WritePath::MysqlOnly(_) => Ok(()),
                }
            }))
        }
        WritePath::MysqlOnly(_) => None,
    };
    if spec.strategy == Some("binlog") {
        // The tailer snapshots the table first; measure once it tails.
        let mut redis = services.applier.connection();
        let began = Instant::now();
        while redis::cmd("GET")
            .arg(CHECKPOINT_KEY)
            .query_async::<Option<String>>(&mut redis)
            .await?
            .is_none()
        {
            anyhow::ensure!(
                began.elapsed() < Duration::from_secs(60),
                "the binlog strategy did not start tailing"
            );
            if background.as_ref().is_some_and(|t| t.is_finished()) {
                anyhow::bail!("the binlog strategy stopped before tailing");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Warm-up (connections, scripts, the outbox table), then the measured run.
    run_writers(&path, &table, rows, concurrency, WARM_UP).await;
    let began = Instant::now();
    let writers = run_writers(
        &path,
        &table,
        rows,
        concurrency,
        Duration::from_secs_f64(seconds),
    )
    .await;
    let elapsed = began.elapsed().as_secs_f64();

    let mut outcome = Outcome {
        name: spec.name,
        rows,
        writes: 0,
        errors: 0,
        first_error: None,
        seconds: elapsed,
        latencies: Vec::new(),
        pending: 0,
        guard_drops: 0,
        divergent: None,
        skipped: None,
    };
    for w in writers {
        outcome.writes += w.latencies.len() as u64;
        outcome.errors += w.errors;
        outcome.first_error = outcome.first_error.or(w.first_error);
        outcome.latencies.extend(w.latencies);
        outcome.pending += w.pending;
        outcome.guard_drops += w.guard_drops;
    }
    outcome.latencies.sort_unstable();
    if spec.strategy == Some("dual-write") {
        outcome.divergent = Some(divergent_keys(&services, &table).await?);
    }

    shutdown.cancel();
    if let Some(task) = background {
        match tokio::time::timeout(Duration::from_secs(30), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("{}: background work ended with: {e}", spec.name),
            Ok(Err(e)) => eprintln!("{}: background task failed: {e}", spec.name),
            Err(_) => eprintln!("{}: background work did not stop within 30 s", spec.name),
        }
    }
    drop(path);
    services.pool.disconnect().await.ok();
    Ok(outcome)
}

#[derive(Default)]
struct WriterResult {
    latencies: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    pending: u64,
    guard_drops: u64,
}

/// `concurrency` tasks writing random rows back to back for `duration`.
async fn run_writers(
    path: &Arc<WritePath>,
    table: &Arc<SyncedTable>,
    rows: u64,
    concurrency: usize,
    duration: Duration,
) -> Vec<WriterResult> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let path = path.clone();
            let table = table.clone();
            tokio::spawn(async move {
                let mut result = WriterResult::default();
                while Instant::now() < deadline {
                    let n = SEQ.fetch_add(1, Ordering::Relaxed);
                    let id = rand::random_range(1..=rows);
                    let write = RowWrite {
                        table: table.clone(),
                        op: Op::Upsert,
                        values: vec![
                            ("id".to_owned(), Value::Int(id as i64)),
                            ("name".to_owned(), Value::from(format!("item {id} #{n}"))),
                            (
                                "price".to_owned(),
                                Value::from(format!("{}.{:02}", n % 10_000, n % 100)),
                            ),
                            (
                                "updated".to_owned(),
                                Value::Date(2025, 1, 1, 0, 0, 0, (n % 1_000_000) as u32),
                            ),
                        ],
                    };
                    let started = Instant::now();
                    let outcome = path.write(write).await;
                    let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    match outcome {
                        Ok(receipt) => {
                            result.latencies.push(micros);
                            if let Some(receipt) = receipt
                                && let WritePath::Strategy(strategy) = &*path
                                && let Strategy::DualWrite(_) = **strategy
                            {
                                match receipt.redis {
                                    RedisOutcome::Applied(applied) => {
                                        result.guard_drops += applied.stale as u64
                                    }
                                    RedisOutcome::Pending => result.pending += 1,
                                    RedisOutcome::Background => {}
                                }
                            }
                        }
                        Err(e) => {
                            result.errors += 1;
                            result.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                result
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("writer task"));
    }
    results
}

/// Keys Redis holds whose value is not what their row's `SELECT` encodes to.
async fn divergent_keys(services: &Services, table: &SyncedTable) -> anyhow::Result<u64> {
    let mut conn = services.pool.get_conn().await?;
    let rows: Vec<mysql_async::Row> = conn.query(&table.select_sql).await?;
    let mut redis = services.applier.connection();
    let mut divergent = 0;
    for chunk in rows.chunks(1000) {
        let mut cells = Vec::with_capacity(chunk.len());
        for row in chunk {
            cells.push(table.decode_sql_row(row)?);
        }
        let keys: Vec<String> = cells.iter().map(|c| table.key_of(c)).collect();
        let cached: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut redis)
            .await?;
        for (row, cached) in cells.iter().zip(cached) {
            let expected = match table.encoder.encode(row, table.version_of(row)) {
                Encoded::Json(bytes) => bytes,
                Encoded::Hash(_) => unreachable!("json table"),
            };
            // A row the run never wrote has no key (dual-write does not fill the cache):
            // a miss, not stale.
            if cached.is_some_and(|cached| cached != expected) {
                divergent += 1;
            }
        }
    }
    Ok(divergent)
}

async fn clear_redis(redis_url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url)?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    for pattern in [format!("{KEY_PREFIX}:*"), format!("{{{KEY_PREFIX}:*")] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut redis)
            .await?;
        for chunk in keys.chunks(10_000) {
            let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut redis).await?;
        }
    }
    Ok(())
}

/// Removes the exchanges and queues the mq runs declared.
async fn delete_amqp_topology(amqp_url: &str) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let cleanup = async {
        let conn =
            lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        for queue in [AMQP_NAME.to_owned(), format!("{AMQP_NAME}.dlq")] {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [AMQP_NAME.to_owned(), format!("{AMQP_NAME}.dead")] {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        conn.close(0, "bench done".into()).await?;
        Ok::<(), lapin::Error>(())
    };
    if let Err(e) = cleanup.await {
        eprintln!("removing the bench's RabbitMQ exchanges and queues: {e}");
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn print_line(o: &Outcome) {
    match &o.skipped {
        Some(why) => println!("{:<24} skipped: {why}", o.name),
        None => println!(
            "{:<24} {:>8.0} writes/s  p50 {} ms  p99 {} ms  p99.9 {} ms  ({} writes, {} errors{})",
            o.name,
            o.rate(),
            ms(o.quantile(0.5)),
            ms(o.quantile(0.99)),
            ms(o.quantile(0.999)),
            o.writes,
            o.errors,
            o.first_error
                .as_deref()
                .map(|e| format!("; first: {e}"))
                .unwrap_or_default()
        ),
    }
}

/// The summary as a Markdown table: each path's median round, ratios against
/// `mysql-only`'s median round.
fn print_table(outcomes: &[(Outcome, String)], concurrency: usize, rounds: usize) {
    let base = outcomes
        .iter()
        .map(|(o, _)| o)
        .find(|o| o.name == "mysql-only" && o.skipped.is_none());
    println!();
    println!(
        "| write path ({concurrency} writers, median of {rounds}) | rows | writes/s | range | vs mysql-only | p50 ms | p99 ms | p99.9 ms | max ms | errors | Redis pending | guard drops | stale keys after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (o, range) in outcomes {
        if let Some(why) = &o.skipped {
            println!("| {} | {} | skipped: {why} ||||||||||||", o.name, o.rows);
            continue;
        }
        let ratio = base.map_or("—".to_owned(), |b| format!("{:.2}×", o.rate() / b.rate()));
        let dual = o.divergent.is_some();
        let or_dash = |v: String| if dual { v } else { "—".to_owned() };
        println!(
            "| {} | {} | {:.0} | {range} | {ratio} | {} | {} | {} | {} | {} | {} | {} | {} |",
            o.name,
            o.rows,
            o.rate(),
            ms(o.quantile(0.5)),
            ms(o.quantile(0.99)),
            ms(o.quantile(0.999)),
            ms(o.quantile(1.0)),
            o.errors,
            or_dash(o.pending.to_string()),
            or_dash(o.guard_drops.to_string()),
            o.divergent.map_or("—".to_owned(), |d| d.to_string()),
        );
    }
}
