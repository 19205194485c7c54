//! Binlog replay throughput: a backlog of row changes already in the binlog, replayed
//! into Redis by the binlog strategy, in row changes per second.
//!
//! `scripts/services.sh up && cargo bench --bench binlog_replay`
//! (`CACHESYNC_BENCH_ROWS` sets the backlog, default 500 000; `CACHESYNC_BENCH_TXN_ROWS`
//! the rows per transaction, default 50 000 — `1` is a backlog of single-row
//! transactions, each its own commit in the binlog). Two phases on the same
//! backlog show what bounds the pipeline:
//! 1. read + decode only (the tailer's batches are counted and dropped);
//! 2. the whole strategy: read, decode, encode, version-guarded Lua writes with the
//!    checkpoint, until the checkpoint passes the backlog's end.

use std::time::{Duration, Instant};

use cachesync::cmd::connect::connect;
use cachesync::cmd::run::Daemon;
use cachesync::config::{Config, RawConfig};
use cachesync::strategy::binlog::position::{BinlogPosition, Checkpoint, StoredCheckpoint};
use cachesync::strategy::binlog::tail::{Batch, Tailer};
use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;

const DB: &str = "cs_bench_replay";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing extra but
    // must not run a minute-long benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        println!("binlog_replay: run with `cargo bench --bench binlog_replay`");
        return Ok(());
    }
    let rows: u64 = env_or("CACHESYNC_BENCH_ROWS", "500000").parse()?;
    let txn_rows: u64 = env_or("CACHESYNC_BENCH_TXN_ROWS", "50000").parse()?;
    anyhow::ensure!(txn_rows > 0, "CACHESYNC_BENCH_TXN_ROWS must be at least 1");
    let mysql_url = env_or("CACHESYNC_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3307");
    let redis_url = env_or("CACHESYNC_TEST_REDIS_URL", "redis://127.0.0.1:6380");

    let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&mysql_url)?).await?;
    conn.query_drop(format!("DROP DATABASE IF EXISTS {DB}"))
        .await?;
    conn.query_drop(format!("CREATE DATABASE {DB}")).await?;
    conn.query_drop(format!(
        "CREATE TABLE {DB}.items (id INT PRIMARY KEY, v INT NOT NULL, name VARCHAR(32) NOT NULL, \
         price DECIMAL(10,2) NOT NULL, updated DATETIME(6) NOT NULL)"
    ))
    .await?;
    let start: mysql_async::Row = conn
        .query_first("SHOW MASTER STATUS")
        .await?
        .expect("binlog on");
    let start = BinlogPosition::new(start.get::<String, _>(0).unwrap(), start.get(1).unwrap());
    println!("writing a backlog of {rows} row changes ...");
    let began = Instant::now();
    conn.query_drop("SET SESSION max_recursive_iterations = 100000000")
        .await?;
    // Transactions of `txn_rows` rows (50k by default: like a busy server, not one giant
    // statement; 1: one commit per row).
    let mut id = 0;
    while id < rows {
        let n = (rows - id).min(txn_rows);
        conn.query_drop(format!(
            "INSERT INTO {DB}.items WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {n}) \
             SELECT {id} + i, i, CONCAT('item ', {id} + i), i / 100, NOW(6) FROM seq"
        ))
        .await?;
        id += n;
    }
    let end: mysql_async::Row = conn
        .query_first("SHOW MASTER STATUS")
        .await?
        .expect("binlog on");
    let end = BinlogPosition::new(end.get::<String, _>(0).unwrap(), end.get(1).unwrap());
    println!(
        "backlog written in {:.1}s: {start} .. {end}",
        began.elapsed().as_secs_f64()
    );

    let checkpoint_key = "cachesync:bench:replay:checkpoint";
    let tree = serde_json::json!({
        "strategy": "binlog",
        "mysql": { "url": mysql_url },
        "redis": { "url": redis_url },
        "binlog": { "server_id": 31_337, "checkpoint_key": checkpoint_key, "batch_size": 2000 },
        "tables": [{ "name": format!("{DB}.items"), "key": "bench:replay:{id}", "format": "json" }],
    });
    let config: Config = RawConfig::from_tree(tree)
        .map_err(|p| anyhow::anyhow!("{p:?}"))?
        .validate()?;
    let services = connect(&config).await?;

    // Phase 1: read and decode only; the consumer stops the tailer at the backlog's end.
    let shutdown = CancellationToken::new();
    let (out, mut batches) = tokio::sync::mpsc::channel::<Batch>(4);
    let counter = {
        let shutdown = shutdown.clone();
        let end = end.clone();
        tokio::spawn(async move {
            let mut changes = 0u64;
            while let Some(batch) = batches.recv().await {
                changes += batch.changes.len() as u64;
                if batch.checkpoint.as_ref().is_some_and(|c| c.position >= end) {
                    shutdown.cancel();
                }
            }
            changes
        })
    };
    let mut tailer = Tailer::new(
        config.mysql_url.clone(),
        config.binlog.server_id,
        config.binlog.batch_size,
        services.pool.clone(),
        &services.tables,
        None,
        Checkpoint::at(start.clone()),
    );
    let began = Instant::now();
    if let Err(e) = tailer.run(&out, &shutdown).await {
        anyhow::bail!("tailing failed: {e}");
    }
    let decode_secs = began.elapsed().as_secs_f64();
    drop(out);
    let decoded = counter.await?;
    println!(
        "read + decode:        {decoded} row changes in {decode_secs:.2}s = {:.0} rows/s",
        decoded as f64 / decode_secs
    );

    // Phase 2: the whole strategy into Redis, resuming from a checkpoint at the start.
    let mut redis = services.applier.connection();
    let _: () = redis::cmd("SET")
        .arg(checkpoint_key)
        .arg(start.to_string())
        .query_async(&mut redis)
        .await?;
    let began = Instant::now();
    let mut daemon = Daemon::start_on(&config, services.clone())?;
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let stored: Option<String> = redis::cmd("GET")
            .arg(checkpoint_key)
            .query_async(&mut redis)
            .await?;
        if stored
            .and_then(|s| StoredCheckpoint::parse(&s))
            .is_some_and(|c| c.checkpoint.position >= end)
        {
            break;
        }
        if daemon.is_finished() {
            anyhow::bail!("the strategy stopped early: {:?}", daemon.finished().await);
        }
    }
    let apply_secs = began.elapsed().as_secs_f64();
    daemon.stop().await?;
    println!(
        "binlog -> Redis:      {rows} row changes in {apply_secs:.2}s = {:.0} rows/s (read, decode, encode, guarded writes, checkpoints)",
        rows as f64 / apply_secs
    );

    // Leave nothing behind.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("bench:replay:*")
        .query_async(&mut redis)
        .await?;
    for chunk in keys.chunks(10_000) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut redis).await?;
    }
    let _: () = redis::cmd("DEL")
        .arg(checkpoint_key)
        .query_async(&mut redis)
        .await?;
    conn.query_drop(format!("DROP DATABASE {DB}")).await?;
    Ok(())
}
