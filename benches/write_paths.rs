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
//! - `mysql-only`: `cachesync::mysql::write::commit` alone — the baseline;
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

use cachesync::bench::setup::{clear_redis, load_average, reset_amqp};
use cachesync::cmd::connect::connect;
use cachesync::cmd::run::Daemon;
use cachesync::cmd::verify::{self, verify};
use cachesync::config::{Config, RawConfig};
use cachesync::model::change::{Op, RowWrite};
use cachesync::model::table::SyncedTable;
use cachesync::strategy::{RedisOutcome, Services, Strategy, SyncStrategy, WriteReceipt};
use mysql_async::Value;
use mysql_async::prelude::Queryable;

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

/// The write being measured: the baseline or a strategy.
enum WritePath {
    MysqlOnly(mysql_async::Pool),
    Strategy(Arc<Strategy>),
}

impl WritePath {
    async fn write(&self, write: RowWrite) -> cachesync::Result<Option<WriteReceipt>> {
        match self {
            WritePath::MysqlOnly(pool) => cachesync::mysql::write::commit(pool, &write)
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
            clear_redis(&redis_url, KEY_PREFIX).await?;
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
    clear_redis(&redis_url, KEY_PREFIX).await?;
    conn.query_drop(format!("DROP DATABASE {DB}")).await?;
    if specs.iter().any(|spec| spec.strategy == Some("mq"))
        && let Err(e) = reset_amqp(&amqp_url, AMQP_NAME).await
    {
        eprintln!("removing the bench's RabbitMQ exchanges and queues: {e}");
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
        // Its own deployment (marker, snapshot progress), cleared with its keys.
        "name": KEY_PREFIX,
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
    let services = connect(config).await?;
    let table = services.tables[0].clone();
    // The strategy runs as the daemon runs it: its background work (tailer, consumer,
    // relay, repairs) competes for the same cores as its writes.
    let daemon = match spec.strategy {
        None => None,
        Some(_) => Some(Daemon::start_on(config, services.clone())?),
    };
    let path = Arc::new(match &daemon {
        None => WritePath::MysqlOnly(services.pool.clone()),
        Some(daemon) => WritePath::Strategy(daemon.strategy().clone()),
    });
    if let Some(daemon) = &daemon {
        // A fresh deployment loads the table online first; measure once it is loaded.
        daemon.wait_loaded(Duration::from_secs(300)).await?;
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
        outcome.divergent = Some(stale_keys(&services).await?);
    }

    drop(path);
    if let Some(daemon) = daemon {
        match tokio::time::timeout(Duration::from_secs(30), daemon.stop()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("{}: background work ended with: {e}", spec.name),
            Err(_) => eprintln!("{}: background work did not stop within 30 s", spec.name),
        }
    }
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

/// Keys Redis holds whose value is not what their row's `SELECT` encodes to (`verify`'s
/// "different"; a row the run never wrote has no key — dual-write does not fill the
/// cache — which is a miss, not stale).
async fn stale_keys(services: &Services) -> anyhow::Result<u64> {
    let options = verify::Options {
        strategy: cachesync::strategy::StrategyKind::DualWrite,
        ..verify::Options::default()
    };
    let report = verify(
        &services.tables,
        &services.pool,
        &services.applier,
        &options,
    )
    .await?;
    Ok(report.tables.iter().map(|t| t.different.count).sum())
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
