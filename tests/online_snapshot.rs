//! Never silently incomplete (issue 12), against the real `cachesync` binary, MariaDB and
//! Redis:
//!
//! - `redis_restarted_empty_mid_stream_*`: a private Redis is killed (`kill -9`) and
//!   started again empty while writers run, for binlog, dual-write (with and without a
//!   version column), mq `direct` with a version column and mq `outbox`. Redis must equal
//!   MySQL row for row afterwards, the writers must never fail, the loss must be counted
//!   once in `cachesync_redis_data_loss_total`, and a reader polling Redis must never see
//!   a row's `ver` column go back (nothing older overwrote anything newer). The time from
//!   the restart until every row is back is printed.
//! - `a_table_added_to_the_config_is_snapshotted_online`: a daemon syncing one table is
//!   restarted with a second (20,000 rows) while writers change it; all its rows arrive,
//!   nothing regresses.
//! - `a_crash_mid_snapshot_resumes_from_the_last_chunk`: `kill -9` during an online
//!   snapshot; the restarted daemon resumes from the recorded chunk.
//! - `an_online_snapshot_on_request_keeps_the_stream_going`: `cachesync snapshot --table`
//!   against a running daemon (through its API) while writers run; then the same with no
//!   daemon. Rows default to 20,000 (`CACHESYNC_TEST_SNAPSHOT_ROWS`, writes/s
//!   `CACHESYNC_TEST_SNAPSHOT_RATE`, default 300); the stream's max lag and the daemon's
//!   peak RSS are printed. `a_million_row_online_snapshot` (ignored: run it by name) is the
//!   same at 1,000,000 rows and 1000 writes/s.
//! - `checkpoints_of_another_server_or_the_old_shared_key_are_refused` and
//!   `doctor_fails_when_redis_may_evict_cachesyncs_keys`.
//!
//! Needs the test MariaDB and Redis (`scripts/services.sh up`) and `redis-server` on the
//! PATH for the private servers. Every test has its own database, key prefix and
//! deployment `name`; tests that lose Redis' data or change its settings use a private
//! Redis. The tests of this file run one at a time (they are heavy for a 2-core machine).
//!
//! ```text
//! cargo test --test online_snapshot -- --nocapture
//! cargo test --release --test online_snapshot a_million_row_online_snapshot -- --ignored --nocapture
//! ```

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use common::daemon::{RunningDaemon, proc_kib, sample};
use common::redis_server::PrivateRedis;
use common::{TestDb, free_port, mysql_url, unique, write_config};

/// One test of this file at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Redis = redis::aio::MultiplexedConnection;

async fn redis_at(url: &str) -> Redis {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap_or_else(|e| {
            panic!("Redis at {url} is not reachable ({e}): start it with `scripts/services.sh up`")
        })
}

fn random_server_id() -> u32 {
    200_000 + rand::rng().random_range(0..1_000_000_000)
}

async fn delete_matching(redis: &mut Redis, pattern: &str) {
    let keys = common::scan_keys(redis, pattern).await;
    for chunk in keys.chunks(5_000) {
        let _: () = redis::cmd("UNLINK")
            .arg(chunk)
            .query_async(redis)
            .await
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// The table, its writers, and the reader that watches versions
// ---------------------------------------------------------------------------------------

/// `items (id, ver, note)`: `ver` grows by one with every change of a row.
async fn create_items(db: &mut TestDb, table: &str, rows: u64) {
    db.exec(&format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, ver BIGINT NOT NULL, note VARCHAR(64) NOT NULL)"
    ))
    .await;
    db.exec("SET SESSION max_recursive_iterations = 1000000")
        .await;
    const STEP: u64 = 50_000;
    for base in (0..rows).step_by(STEP as usize) {
        let n = STEP.min(rows - base);
        db.exec(&format!(
            "INSERT INTO {table} (id, ver, note) \
             WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {n}) \
             SELECT {base} + i, 1, CONCAT('row ', {base} + i) FROM seq"
        ))
        .await;
    }
}

/// What the writers did.
#[derive(Default)]
struct WriteStats {
    ok: AtomicU64,
    errors: AtomicU64,
    /// ms since the test's epoch of the last successful write.
    last_ok_ms: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

/// How the writers write.
#[derive(Clone)]
enum WritePath {
    /// SQL against MySQL (binlog).
    Sql { db: String, table: String },
    /// `PUT`/`DELETE` through the daemon's API (dual-write, mq).
    Api { port: u16, table: String },
}

/// `writers` tasks changing rows `1..=rows` of the table (each writer owns the ids
/// `≡ w mod writers`, so a row's `ver` only grows), inserting new rows and deleting some,
/// at about `rate` operations per second in all, until `stop`.
fn start_writers(
    path: WritePath,
    rows: u64,
    writers: u64,
    rate: u64,
    epoch: Instant,
    stop: CancellationToken,
) -> (Arc<WriteStats>, Vec<tokio::task::JoinHandle<()>>) {
    let stats = Arc::new(WriteStats::default());
    let tasks = (0..writers)
        .map(|w| {
            let (path, stats, stop) = (path.clone(), stats.clone(), stop.clone());
            tokio::spawn(async move {
                let pause = Duration::from_secs_f64(writers as f64 / rate as f64);
                let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
                let mut versions: HashMap<u64, u64> = HashMap::new();
                let mut deleted: Vec<u64> = Vec::new();
                let mut next_new = rows + 1 + w;
                let mut sql = match &path {
                    WritePath::Sql { db, .. } => {
                        let mut conn = common::mysql_conn().await;
                        conn.query_drop(format!("USE `{db}`")).await.unwrap();
                        Some(conn)
                    }
                    WritePath::Api { .. } => None,
                };
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut ticker = tokio::time::interval(pause);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.is_cancelled() {
                    ticker.tick().await;
                    let roll = rng.random_range(0..100);
                    // 90% updates of an existing row, 7% inserts, 3% deletes.
                    let (id, op) = if roll < 7 {
                        let id = next_new;
                        next_new += writers;
                        (id, "insert")
                    } else {
                        let id = loop {
                            let id = rng.random_range(0..rows.div_ceil(writers)) * writers + w + 1;
                            if id <= rows && !deleted.contains(&id) {
                                break id;
                            }
                        };
                        (id, if roll < 10 { "delete" } else { "update" })
                    };
                    let ver = versions.get(&id).copied().unwrap_or(1) + 1;
                    let note = format!("w{w} v{ver}");
                    let outcome: Result<(), String> = match (&path, &mut sql) {
                        (WritePath::Sql { table, .. }, Some(conn)) => {
                            let statement = match op {
                                "insert" => format!(
                                    "INSERT INTO {table} (id, ver, note) VALUES ({id}, {ver}, '{note}')"
                                ),
                                "delete" => format!("DELETE FROM {table} WHERE id = {id}"),
                                _ => format!(
                                    "UPDATE {table} SET ver = {ver}, note = '{note}' WHERE id = {id}"
                                ),
                            };
                            conn.query_drop(statement).await.map_err(|e| e.to_string())
                        }
                        (WritePath::Api { port, table }, _) => {
                            let url = format!("http://127.0.0.1:{port}/v1/tables/{table}/rows");
                            let request = if op == "delete" {
                                http.delete(&url).json(&serde_json::json!({ "id": id }))
                            } else {
                                http.put(&url).json(
                                    &serde_json::json!({ "id": id, "ver": ver, "note": note }),
                                )
                            };
                            match request.send().await {
                                Ok(answer) if answer.status().is_success() => Ok(()),
                                Ok(answer) => Err(format!(
                                    "{} {}",
                                    answer.status(),
                                    answer.text().await.unwrap_or_default()
                                )),
                                Err(e) => Err(e.to_string()),
                            }
                        }
                        _ => unreachable!(),
                    };
                    match outcome {
                        Ok(()) => {
                            versions.insert(id, ver);
                            if op == "delete" {
                                deleted.push(id);
                            }
                            stats.ok.fetch_add(1, Ordering::Relaxed);
                            stats
                                .last_ok_ms
                                .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            stats.first_error.lock().unwrap().get_or_insert(e);
                        }
                    }
                }
            })
        })
        .collect();
    (stats, tasks)
}

/// What the version watcher saw.
#[derive(Default)]
struct Watched {
    reads: u64,
    /// `id: ver seen after a newer ver` — must stay empty.
    regressions: Vec<String>,
}

/// Reads random rows (ids `1..=rows`) from Redis until `stop`, and records any row whose
/// `ver` is below one seen before. A missing key is not a regression (Redis may have lost
/// it, or the row was deleted).
fn watch_versions(
    redis_url: String,
    key_prefix: String,
    rows: u64,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Watched> {
    tokio::spawn(async move {
        let mut watched = Watched::default();
        let mut highest: HashMap<u64, u64> = HashMap::new();
        let mut redis: Option<Redis> = None;
        while !stop.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if redis.is_none() {
                let client = redis::Client::open(redis_url.as_str()).unwrap();
                redis = client.get_multiplexed_async_connection().await.ok();
                continue;
            }
            let ids: Vec<u64> = {
                let mut rng = rand::rng();
                (0..100).map(|_| rng.random_range(1..=rows)).collect()
            };
            let keys: Vec<String> = ids.iter().map(|id| format!("{key_prefix}{id}")).collect();
            let docs: Vec<Option<String>> = match redis::cmd("MGET")
                .arg(&keys)
                .query_async(redis.as_mut().unwrap())
                .await
            {
                Ok(docs) => docs,
                Err(_) => {
                    redis = None;
                    continue;
                }
            };
            for (id, doc) in ids.iter().zip(docs) {
                let Some(doc) = doc else { continue };
                let json: serde_json::Value = serde_json::from_str(&doc).unwrap();
                let ver = json["ver"].as_u64().unwrap();
                watched.reads += 1;
                let seen = highest.entry(*id).or_insert(0);
                if ver < *seen {
                    watched
                        .regressions
                        .push(format!("id {id}: ver {ver} after {seen}: {doc}"));
                }
                *seen = (*seen).max(ver);
            }
        }
        watched
    })
}

/// The rows of the table whose Redis key (`<key_prefix><id>`) differs from MySQL, and the
/// keys Redis has for rows MySQL does not: empty when Redis equals MySQL row for row.
async fn differences(
    conn: &mut mysql_async::Conn,
    table: &str,
    redis: &mut Redis,
    key_prefix: &str,
) -> Vec<String> {
    let rows: Vec<(u64, u64, String)> = conn
        .query(format!("SELECT id, ver, note FROM {table} ORDER BY id"))
        .await
        .unwrap();
    let mut differing = Vec::new();
    for chunk in rows.chunks(2_000) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|(id, _, _)| format!("{key_prefix}{id}"))
            .collect();
        let docs: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(redis)
            .await
            .unwrap();
        for ((id, ver, note), doc) in chunk.iter().zip(docs) {
            let expected = serde_json::json!({ "id": id, "ver": ver, "note": note });
            let got: Option<serde_json::Value> = doc.as_deref().map(|d| {
                let mut json: serde_json::Value = serde_json::from_str(d).unwrap();
                json.as_object_mut().unwrap().remove("_cachesync_v");
                json
            });
            if got.as_ref() != Some(&expected) {
                differing.push(format!("id {id}: MySQL {expected}, Redis {doc:?}"));
            }
        }
    }
    let ids: std::collections::HashSet<String> = rows
        .iter()
        .map(|(id, _, _)| format!("{key_prefix}{id}"))
        .collect();
    for key in common::scan_keys(redis, &format!("{key_prefix}*")).await {
        if !ids.contains(&key) {
            differing.push(format!("{key}: in Redis, not in MySQL"));
        }
    }
    differing
}

/// How long Redis took to equal MySQL, as [`wait_equal`] saw it.
struct Equal {
    after: Duration,
    /// Comparisons made; 1: equal at the first, so `after` is the comparison's own time.
    comparisons: u32,
}

impl std::fmt::Display for Equal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.comparisons == 1 {
            write!(f, "at the first comparison (which took {:?})", self.after)
        } else {
            write!(
                f,
                "{:?} later ({} comparisons)",
                self.after, self.comparisons
            )
        }
    }
}

/// Waits (at most `limit`) until Redis equals MySQL for the table.
async fn wait_equal(
    conn: &mut mysql_async::Conn,
    table: &str,
    redis: &mut Redis,
    key_prefix: &str,
    limit: Duration,
    what: &str,
) -> Equal {
    let began = Instant::now();
    let mut comparisons = 0;
    loop {
        let differing = differences(conn, table, redis, key_prefix).await;
        comparisons += 1;
        if differing.is_empty() {
            return Equal {
                after: began.elapsed(),
                comparisons,
            };
        }
        assert!(
            began.elapsed() < limit,
            "{what}: Redis still differs from MySQL after {limit:?} ({} rows), e.g.\n{}",
            differing.len(),
            differing[..differing.len().min(10)].join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many rows of the table have no key in Redis.
async fn missing(
    conn: &mut mysql_async::Conn,
    table: &str,
    redis: &mut Redis,
    key_prefix: &str,
) -> usize {
    let ids: Vec<u64> = conn.query(format!("SELECT id FROM {table}")).await.unwrap();
    let mut missing = 0;
    for chunk in ids.chunks(5_000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("EXISTS").arg(format!("{key_prefix}{id}"));
        }
        let exists: Vec<i64> = match pipe.query_async(redis).await {
            Ok(exists) => exists,
            Err(_) => return ids.len(),
        };
        missing += exists.iter().filter(|e| **e == 0).count();
    }
    missing
}

// ---------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------

struct Deployment {
    name: String,
    strategy: &'static str,
    redis_url: String,
    metrics_port: u16,
    api_port: Option<u16>,
    /// Extra top-level sections (`[amqp]`, `[binlog]` additions).
    extra: String,
    tables: String,
}

impl Deployment {
    fn toml(&self) -> String {
        let api = self
            .api_port
            .map(|p| format!("[api]\nlisten = \"127.0.0.1:{p}\"\n"))
            .unwrap_or_default();
        format!(
            "name = \"{}\"\nstrategy = \"{}\"\n[mysql]\nurl = \"{}\"\n[redis]\nurl = \"{}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{}\"\n[snapshot]\nchunk_rows = 500\nloss_check_interval_ms = 200\n\
             {api}{}\n{}",
            self.name,
            self.strategy,
            mysql_url(),
            self.redis_url,
            self.metrics_port,
            self.extra,
            self.tables
        )
    }

    fn write(&self, dir: &Path) -> std::path::PathBuf {
        write_config(dir, &self.toml())
    }
}

fn table_toml(db: &str, table: &str, key_prefix: &str, extra: &str) -> String {
    format!(
        "[[tables]]\nname = \"{db}.{table}\"\nkey = \"{key_prefix}{{id}}\"\nformat = \"json\"\n{extra}\n"
    )
}

/// Waits (at most `limit`) until the daemon has loaded Redis: its checkpoint or marker is
/// there, no online snapshot is pending, and every row has its key.
#[allow(clippy::too_many_arguments)]
async fn wait_loaded(
    daemon: &mut RunningDaemon,
    redis: &mut Redis,
    name: &str,
    conn: &mut mysql_async::Conn,
    table: &str,
    key_prefix: &str,
    limit: Duration,
) -> Duration {
    let began = Instant::now();
    let checkpoint = format!("cachesync:{{{name}}}:checkpoint");
    let marker = format!("cachesync:{{{name}}}:marker");
    let record = format!("cachesync:{{{name}}}:snapshots");
    loop {
        daemon.assert_alive();
        let started: i64 = redis::cmd("EXISTS")
            .arg(&checkpoint)
            .arg(&marker)
            .query_async(redis)
            .await
            .unwrap_or(0);
        let pending: i64 = redis::cmd("EXISTS")
            .arg(&record)
            .query_async(redis)
            .await
            .unwrap_or(1);
        if started > 0 && pending == 0 && missing(conn, table, redis, key_prefix).await == 0 {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < limit,
            "Redis not loaded within {limit:?}\n--- stderr ---\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 1. Redis restarted empty mid-stream
// ---------------------------------------------------------------------------------------

const LOSS_ROWS: u64 = 3_000;

#[derive(Clone, Copy)]
struct LossCase {
    strategy: &'static str,
    /// `version_column = "ver"` on the table.
    versioned: bool,
    /// mq: `direct` or `outbox`.
    publish: Option<&'static str>,
    /// Whether a reader may never see `ver` go back (the table's changes carry a
    /// version the rebuild's fills are guarded by, see `crate::snapshot`).
    ordered: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_mid_stream_binlog() {
    redis_loss(LossCase {
        strategy: "binlog",
        versioned: false,
        publish: None,
        ordered: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_mid_stream_dual_write() {
    redis_loss(LossCase {
        strategy: "dual-write",
        versioned: true,
        publish: None,
        ordered: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_mid_stream_dual_write_without_versions() {
    redis_loss(LossCase {
        strategy: "dual-write",
        versioned: false,
        publish: None,
        // One writer per row writes Redis right after its commit, and the rebuild fills
        // under a lease every synced write voids: nothing older can land either.
        ordered: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_mid_stream_mq() {
    redis_loss(LossCase {
        strategy: "mq",
        versioned: true,
        publish: Some("direct"),
        ordered: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_mid_stream_mq_outbox() {
    redis_loss(LossCase {
        strategy: "mq",
        versioned: true,
        publish: Some("outbox"),
        // Outbox events carry outbox ids the rows do not hold: the rebuild fills under a
        // lease, and an older event still queued may briefly replace a fill (documented).
        ordered: false,
    })
    .await;
}

async fn redis_loss(case: LossCase) {
    let _serial = SERIAL.lock().await;
    let label = format!(
        "{}{}{}",
        case.strategy,
        if case.versioned { " versioned" } else { "" },
        case.publish.map(|p| format!(" {p}")).unwrap_or_default()
    );
    let redis_server = tokio::task::spawn_blocking(|| PrivateRedis::start(&[]))
        .await
        .unwrap();
    let mut redis_server = redis_server;
    let mut db = TestDb::create("loss").await;
    create_items(&mut db, "items", LOSS_ROWS).await;
    let prefix = unique("loss");
    let key_prefix = format!("{prefix}:t:");
    let dir = tempfile::tempdir().unwrap();
    let api_port = (case.strategy != "binlog").then(free_port);
    let mut extra = String::new();
    if case.strategy == "binlog" {
        extra.push_str(&format!("[binlog]\nserver_id = {}\n", random_server_id()));
    }
    if let Some(publish) = case.publish {
        extra.push_str(&format!(
            "[amqp]\nurl = \"{}\"\nexchange = \"{prefix}.x\"\nqueue = \"{prefix}.q\"\n\
             dead_letter_queue = \"{prefix}.dead\"\npublish = \"{publish}\"\noutbox_table = \"{}.outbox\"\n",
            common::amqp_url(),
            db.name
        ));
    }
    let deployment = Deployment {
        name: prefix.clone(),
        strategy: case.strategy,
        redis_url: redis_server.url(),
        metrics_port: free_port(),
        api_port,
        extra,
        tables: table_toml(
            &db.name,
            "items",
            &key_prefix,
            if case.versioned {
                "version_column = \"ver\""
            } else {
                ""
            },
        ),
    };
    let config = deployment.write(dir.path());
    let mut daemon = RunningDaemon::start(
        dir.path(),
        &config,
        deployment.metrics_port,
        Duration::from_secs(300),
    );
    let mut redis = redis_at(&redis_server.url()).await;
    let loaded = wait_loaded(
        &mut daemon,
        &mut redis,
        &prefix,
        &mut db.conn,
        "items",
        &key_prefix,
        Duration::from_secs(120),
    )
    .await;
    println!("{label}: first start loaded {LOSS_ROWS} rows online in {loaded:?}");

    let epoch = Instant::now();
    let stop = CancellationToken::new();
    let path = match api_port {
        None => WritePath::Sql {
            db: db.name.clone(),
            table: "items".to_owned(),
        },
        Some(port) => WritePath::Api {
            port,
            table: format!("{}.items", db.name),
        },
    };
    let (stats, writers) = start_writers(path, LOSS_ROWS, 4, 200, epoch, stop.clone());
    let watcher = watch_versions(
        redis_server.url(),
        key_prefix.clone(),
        LOSS_ROWS,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Redis dies and comes back empty.
    let ok_before = stats.ok.load(Ordering::Relaxed);
    tokio::task::block_in_place(|| redis_server.kill9());
    let killed_at = epoch.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| redis_server.start_again());
    let restarted = Instant::now();
    let ok_at_restart = stats.ok.load(Ordering::Relaxed);
    let mut redis = redis_at(&redis_server.url()).await;

    // Every row back (with the writers still running): the rebuild's bound.
    let rebuilt = loop {
        daemon.assert_alive();
        let pending: i64 = redis::cmd("EXISTS")
            .arg(format!("cachesync:{{{prefix}}}:snapshots"))
            .query_async(&mut redis)
            .await
            .unwrap_or(1);
        if pending == 0 && missing(&mut db.conn, "items", &mut redis, &key_prefix).await == 0 {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(90),
            "{label}: Redis not rebuilt 90 s after its restart\n--- stderr ---\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ok_at_rebuilt = stats.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.cancel();
    for writer in writers {
        writer.await.unwrap();
    }
    let watched = watcher.await.unwrap();
    let converged = wait_equal(
        &mut db.conn,
        "items",
        &mut redis,
        &key_prefix,
        Duration::from_secs(60),
        &label,
    )
    .await;
    let body = daemon.metrics().unwrap_or_default();
    let losses = sample(
        &body,
        &format!(
            "cachesync_redis_data_loss_total{{strategy=\"{}\"}}",
            case.strategy
        ),
    );
    let stderr = daemon.stderr();
    daemon.kill9();

    println!(
        "{label}: Redis killed at {killed_at:?}, back empty 0.5 s later; every row back {rebuilt:?} \
         after the restart (writers running); equal to MySQL {converged} after the writers \
         stopped; writes ok {} ({} before the kill, {} while Redis was down, {} during the \
         rebuild), errors {}; {} version reads, {} regressions; data losses counted {losses:?}",
        stats.ok.load(Ordering::Relaxed),
        ok_before,
        ok_at_restart - ok_before,
        ok_at_rebuilt - ok_at_restart,
        stats.errors.load(Ordering::Relaxed),
        watched.reads,
        watched.regressions.len(),
    );
    assert_eq!(
        stats.errors.load(Ordering::Relaxed),
        0,
        "{label}: writes failed: {:?}",
        stats.first_error.lock().unwrap()
    );
    assert!(
        ok_at_rebuilt > ok_at_restart && ok_at_restart > ok_before,
        "{label}: the writers stalled (ok {ok_before} before the kill, {ok_at_restart} at the \
         restart, {ok_at_rebuilt} when rebuilt)"
    );
    assert_eq!(
        losses,
        Some(1.0),
        "{label}: the loss was not counted once\n{stderr}"
    );
    assert!(
        stderr.contains("Redis lost data"),
        "{label}: no warning about the loss\n{stderr}"
    );
    assert!(
        watched.reads > 1_000,
        "{label}: the version reader read too little"
    );
    if case.ordered {
        assert!(
            watched.regressions.is_empty(),
            "{label}: an older row replaced a newer one: {:?}",
            &watched.regressions[..watched.regressions.len().min(10)]
        );
    }
    if case.publish.is_some() {
        common::delete_amqp_topology(&prefix).await;
    }
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------
// 2. A table added to the config
// ---------------------------------------------------------------------------------------

const ADDED_ROWS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_to_the_config_is_snapshotted_online() {
    let _serial = SERIAL.lock().await;
    let mut db = TestDb::create("added").await;
    create_items(&mut db, "first", 100).await;
    create_items(&mut db, "second", ADDED_ROWS).await;
    let prefix = unique("added");
    let (first_keys, second_keys) = (format!("{prefix}:a:"), format!("{prefix}:b:"));
    let dir = tempfile::tempdir().unwrap();
    let mut deployment = Deployment {
        name: prefix.clone(),
        strategy: "binlog",
        redis_url: common::redis_url(),
        metrics_port: free_port(),
        api_port: None,
        extra: format!("[binlog]\nserver_id = {}\n", random_server_id()),
        tables: table_toml(&db.name, "first", &first_keys, ""),
    };
    let config = deployment.write(dir.path());
    let mut redis = redis_at(&common::redis_url()).await;
    let mut daemon = RunningDaemon::start(
        dir.path(),
        &config,
        deployment.metrics_port,
        Duration::from_secs(300),
    );
    wait_loaded(
        &mut daemon,
        &mut redis,
        &prefix,
        &mut db.conn,
        "first",
        &first_keys,
        Duration::from_secs(60),
    )
    .await;
    daemon.stop();
    let checkpoint_key = format!("cachesync:{{{prefix}}}:checkpoint");
    let checkpoint: String = redis::cmd("GET")
        .arg(&checkpoint_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        checkpoint.contains(&format!("tables={}.first", db.name))
            && checkpoint.contains(" server="),
        "the checkpoint names the server and the synced tables: {checkpoint}"
    );

    // The writers change the new table across the restart and during its snapshot.
    let epoch = Instant::now();
    let stop = CancellationToken::new();
    let (stats, writers) = start_writers(
        WritePath::Sql {
            db: db.name.clone(),
            table: "second".to_owned(),
        },
        ADDED_ROWS,
        4,
        300,
        epoch,
        stop.clone(),
    );
    let watcher = watch_versions(
        common::redis_url(),
        second_keys.clone(),
        ADDED_ROWS,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    deployment
        .tables
        .push_str(&table_toml(&db.name, "second", &second_keys, ""));
    let config = deployment.write(dir.path());
    let restarted = Instant::now();
    let mut daemon = RunningDaemon::start(
        dir.path(),
        &config,
        deployment.metrics_port,
        Duration::from_secs(300),
    );
    let record = format!("cachesync:{{{prefix}}}:snapshots");
    let loaded = loop {
        daemon.assert_alive();
        let pending: i64 = redis::cmd("EXISTS")
            .arg(&record)
            .query_async(&mut redis)
            .await
            .unwrap();
        if pending == 0
            && daemon.stderr().contains("online snapshot done")
            && missing(&mut db.conn, "second", &mut redis, &second_keys).await == 0
        {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(120),
            "the added table was not loaded within 120 s\n--- stderr ---\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    for writer in writers {
        writer.await.unwrap();
    }
    let watched = watcher.await.unwrap();
    let converged = wait_equal(
        &mut db.conn,
        "second",
        &mut redis,
        &second_keys,
        Duration::from_secs(60),
        "added table",
    )
    .await;
    wait_equal(
        &mut db.conn,
        "first",
        &mut redis,
        &first_keys,
        Duration::from_secs(10),
        "first table",
    )
    .await;
    let table = format!("{}.second", db.name);
    let body = daemon.metrics().unwrap_or_default();
    let done = sample(
        &body,
        &format!("cachesync_snapshot_rows_done{{strategy=\"binlog\",table=\"{table}\"}}"),
    );
    let total = sample(
        &body,
        &format!("cachesync_snapshot_rows_total{{strategy=\"binlog\",table=\"{table}\"}}"),
    );
    let running = sample(
        &body,
        &format!("cachesync_snapshot_running{{strategy=\"binlog\",table=\"{table}\"}}"),
    );
    let stderr = daemon.stderr();
    daemon.kill9();
    let checkpoint: String = redis::cmd("GET")
        .arg(&checkpoint_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    println!(
        "added table: {ADDED_ROWS} rows loaded online {loaded:?} after the restart with {} writes \
         meanwhile ({} errors); equal to MySQL {converged} after the writers stopped; {} \
         version reads, {} regressions; rows_done {done:?} rows_total {total:?}",
        stats.ok.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed),
        watched.reads,
        watched.regressions.len()
    );
    assert!(
        stderr.contains("tables added to the config since the checkpoint"),
        "{stderr}"
    );
    assert!(stderr.contains("resuming from the checkpoint"), "{stderr}");
    assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
    assert!(
        watched.regressions.is_empty(),
        "{:?}",
        &watched.regressions[..watched.regressions.len().min(10)]
    );
    assert!(
        done.is_some_and(|d| d >= ADDED_ROWS as f64),
        "rows_done {done:?}"
    );
    assert_eq!(done, total, "rows_total is exact once the snapshot is done");
    assert_eq!(running, Some(0.0));
    assert!(
        checkpoint.contains(&format!("{}.first", db.name)) && checkpoint.contains(&table),
        "the checkpoint names both tables now: {checkpoint}"
    );
    let _: () = redis::cmd("DEL")
        .arg(&checkpoint_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    delete_matching(&mut redis, &format!("{prefix}:*")).await;
    delete_matching(&mut redis, &format!("{{{prefix}:*")).await;
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------
// 3. A crash mid-snapshot
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_snapshot_resumes_from_the_last_chunk() {
    let _serial = SERIAL.lock().await;
    const ROWS: u64 = 20_000;
    let mut db = TestDb::create("resume").await;
    create_items(&mut db, "items", ROWS).await;
    let prefix = unique("resume");
    let key_prefix = format!("{prefix}:t:");
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment {
        name: prefix.clone(),
        strategy: "binlog",
        redis_url: common::redis_url(),
        metrics_port: free_port(),
        api_port: None,
        // Slow enough (about 5 s) to be killed in the middle.
        extra: format!("[binlog]\nserver_id = {}\n", random_server_id()),
        tables: table_toml(&db.name, "items", &key_prefix, ""),
    };
    let toml = deployment.toml().replace(
        "chunk_rows = 500",
        "chunk_rows = 500\nmax_rows_per_second = 4000",
    );
    let config = write_config(dir.path(), &toml);
    let mut redis = redis_at(&common::redis_url()).await;
    let record = format!("cachesync:{{{prefix}}}:snapshots");
    let table = format!("{}.items", db.name);
    let mut daemon = RunningDaemon::start(
        dir.path(),
        &config,
        deployment.metrics_port,
        Duration::from_secs(300),
    );
    let began = Instant::now();
    let done_at_kill = loop {
        daemon.assert_alive();
        let entry: Option<String> = redis::cmd("HGET")
            .arg(&record)
            .arg(&table)
            .query_async(&mut redis)
            .await
            .unwrap();
        let done = entry
            .and_then(|e| serde_json::from_str::<serde_json::Value>(&e).ok())
            .and_then(|e| e["done"].as_u64())
            .unwrap_or(0);
        if done >= 5_000 {
            break done;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the snapshot did not reach 5000 rows\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    daemon.kill9();
    let mut daemon = RunningDaemon::start(
        dir.path(),
        &config,
        deployment.metrics_port,
        Duration::from_secs(300),
    );
    wait_loaded(
        &mut daemon,
        &mut redis,
        &prefix,
        &mut db.conn,
        "items",
        &key_prefix,
        Duration::from_secs(120),
    )
    .await;
    wait_equal(
        &mut db.conn,
        "items",
        &mut redis,
        &key_prefix,
        Duration::from_secs(30),
        "resumed snapshot",
    )
    .await;
    let stderr = daemon.stderr();
    daemon.kill9();
    let resumed_at = stderr
        .lines()
        .find(|l| l.contains("online snapshot resumed"))
        .unwrap_or_else(|| panic!("the restarted daemon did not resume the snapshot\n{stderr}"));
    let rows_done: u64 = resumed_at
        .split("rows_done=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rows_done in {resumed_at:?}"));
    println!(
        "resume: killed with {done_at_kill} rows recorded; the restart resumed at {rows_done}"
    );
    assert!(
        rows_done >= done_at_kill,
        "resumed at {rows_done}, below the {done_at_kill} recorded before the kill"
    );
    assert!(
        !stderr.contains("online snapshot started"),
        "the restart started over\n{stderr}"
    );
    let _: () = redis::cmd("DEL")
        .arg(format!("cachesync:{{{prefix}}}:checkpoint"))
        .query_async(&mut redis)
        .await
        .unwrap();
    delete_matching(&mut redis, &format!("{prefix}:*")).await;
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------
// 4. `cachesync snapshot --table` against a running daemon (and without one)
// ---------------------------------------------------------------------------------------

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_snapshot_on_request_keeps_the_stream_going() {
    on_request(
        env_u64("CACHESYNC_TEST_SNAPSHOT_ROWS", 20_000),
        env_u64("CACHESYNC_TEST_SNAPSHOT_RATE", 300),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "1M rows: minutes of work; run it by name (see the module doc)"]
async fn a_million_row_online_snapshot() {
    on_request(1_000_000, 1_000).await;
}

/// Runs the `cachesync` binary to completion (at most `limit`): exit code, stdout, stderr.
async fn cli(args: Vec<String>, limit: Duration) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = common::cachesync_command(&args);
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        cmd.stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + limit;
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() > deadline {
                child.kill().ok();
                child.wait().ok();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (
            code,
            std::fs::read_to_string(out).unwrap_or_default(),
            std::fs::read_to_string(err).unwrap_or_default(),
        )
    })
    .await
    .unwrap()
}

async fn on_request(rows: u64, rate: u64) {
    let _serial = SERIAL.lock().await;
    let redis_server = tokio::task::spawn_blocking(|| PrivateRedis::start(&[]))
        .await
        .unwrap();
    let mut db = TestDb::create("ondemand").await;
    let filled = Instant::now();
    create_items(&mut db, "items", rows).await;
    println!("on request: {rows} rows inserted in {:?}", filled.elapsed());
    let prefix = unique("ondemand");
    let key_prefix = format!("{prefix}:t:");
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment {
        name: prefix.clone(),
        strategy: "binlog",
        redis_url: redis_server.url(),
        metrics_port: free_port(),
        api_port: Some(free_port()),
        // The heartbeat gives the lag sub-second resolution.
        extra: format!(
            "[binlog]\nserver_id = {}\nheartbeat_table = \"{}.heartbeat\"\n",
            random_server_id(),
            db.name
        ),
        tables: table_toml(&db.name, "items", &key_prefix, ""),
    };
    let toml = deployment
        .toml()
        .replace("chunk_rows = 500", "chunk_rows = 1000");
    let config = write_config(dir.path(), &toml);
    let config_arg = config.to_str().unwrap().to_owned();
    let mut redis = redis_at(&redis_server.url()).await;
    let limit = Duration::from_secs(30 * 60);
    let mut daemon = RunningDaemon::start(dir.path(), &config, deployment.metrics_port, limit);
    let loaded = wait_loaded(
        &mut daemon,
        &mut redis,
        &prefix,
        &mut db.conn,
        "items",
        &key_prefix,
        limit,
    )
    .await;
    println!("on request: the first start loaded {rows} rows online in {loaded:?}");

    // Writers at `rate`; the table's keys are lost (as if damaged); a snapshot is asked
    // for through the daemon's API.
    let epoch = Instant::now();
    let stop = CancellationToken::new();
    let (stats, writers) = start_writers(
        WritePath::Sql {
            db: db.name.clone(),
            table: "items".to_owned(),
        },
        rows,
        8,
        rate,
        epoch,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    delete_matching(&mut redis, &format!("{key_prefix}*")).await;
    let pid = daemon.pid();
    let sampling = CancellationToken::new();
    let sampler = {
        let sampling = sampling.clone();
        let port = deployment.metrics_port;
        tokio::spawn(async move {
            let (mut max_lag, mut max_rss, mut scrapes) = (0.0f64, 0u64, 0u64);
            while !sampling.is_cancelled() {
                if let Some(body) =
                    tokio::task::spawn_blocking(move || common::http_get(port, "/metrics"))
                        .await
                        .unwrap()
                    && let Some(lag) = sample(&body, "cachesync_lag_seconds{strategy=\"binlog\"}")
                {
                    max_lag = max_lag.max(lag);
                    scrapes += 1;
                }
                max_rss = max_rss.max(proc_kib(pid, "VmRSS").unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (max_lag, max_rss, scrapes)
        })
    };
    let asked = Instant::now();
    let (code, stdout, stderr) = cli(
        vec![
            "snapshot".into(),
            "--config".into(),
            config_arg.clone(),
            "--table".into(),
            format!("{}.items", db.name),
        ],
        limit,
    )
    .await;
    let took = asked.elapsed();
    sampling.cancel();
    let (max_lag, max_rss, scrapes) = sampler.await.unwrap();
    assert_eq!(
        code,
        Some(0),
        "cachesync snapshot --table failed\n{stdout}\n{stderr}\n--- daemon ---\n{}",
        daemon.stderr()
    );
    assert!(
        stdout.contains("online snapshot on the running daemon"),
        "{stdout}"
    );
    assert!(stdout.contains("finished the online snapshot"), "{stdout}");
    stop.cancel();
    for writer in writers {
        writer.await.unwrap();
    }
    let converged = wait_equal(
        &mut db.conn,
        "items",
        &mut redis,
        &key_prefix,
        Duration::from_secs(120),
        "on request",
    )
    .await;
    let hwm = proc_kib(pid, "VmHWM").unwrap_or(0);
    let (code, verify_out, verify_err) = cli(
        vec!["verify".into(), "--config".into(), config_arg.clone()],
        limit,
    )
    .await;
    assert_eq!(
        code,
        Some(0),
        "verify found differences\n{verify_out}\n{verify_err}"
    );
    println!(
        "on request: online snapshot of {rows} rows asked through the API took {took:?} \
         ({:.0} rows/s) with {} writes at ~{rate}/s meanwhile ({} errors); max stream lag \
         {max_lag:.3} s over {scrapes} scrapes; daemon RSS max {:.1} MiB during it, VmHWM {:.1} \
         MiB since start; Redis equal to MySQL {converged} after the writers stopped; verify: in sync",
        rows as f64 / took.as_secs_f64(),
        stats.ok.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed),
        max_rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
    );
    assert_eq!(
        stats.errors.load(Ordering::Relaxed),
        0,
        "{:?}",
        stats.first_error.lock().unwrap()
    );
    assert!(scrapes > 0, "no lag in any scrape");

    // The API names what it cannot snapshot, and lists nothing once all is done.
    let api = format!(
        "http://127.0.0.1:{}/v1/snapshots",
        deployment.api_port.unwrap()
    );
    let http = reqwest::Client::new();
    let refused = http
        .post(&api)
        .json(&serde_json::json!({ "tables": ["nope.nothing"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let body = refused.text().await.unwrap();
    assert!(
        body.contains("nope.nothing is not a configured table") && body.contains(&db.name),
        "{body}"
    );
    let listed: serde_json::Value = http.get(&api).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed, serde_json::json!({ "snapshots": [] }));

    // No daemon: the same command runs the snapshot itself.
    daemon.stop();
    delete_matching(&mut redis, &format!("{key_prefix}*")).await;
    let (code, stdout, stderr) = cli(
        vec![
            "snapshot".into(),
            "--config".into(),
            config_arg,
            "--table".into(),
            format!("{}.items", db.name),
        ],
        limit,
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("online snapshot done"), "{stdout}");
    assert_eq!(
        missing(&mut db.conn, "items", &mut redis, &key_prefix).await,
        0
    );
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------
// 5. Checkpoint identity, the old shared key, eviction
// ---------------------------------------------------------------------------------------

/// Starts the daemon and waits for it to exit (a refused start): its exit code and stderr.
fn start_to_exit(
    dir: &std::path::Path,
    config: &std::path::Path,
    metrics_port: u16,
) -> (Option<i32>, String) {
    let mut daemon = RunningDaemon::start(dir, config, metrics_port, Duration::from_secs(60));
    let code = daemon.wait_exit(Duration::from_secs(60));
    (code, daemon.stderr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_of_another_server_or_the_old_shared_key_are_refused() {
    let _serial = SERIAL.lock().await;
    // The old shared key lives in a private Redis: other tests' daemons must not see it.
    let redis_server = tokio::task::spawn_blocking(|| PrivateRedis::start(&[]))
        .await
        .unwrap();
    let mut db = TestDb::create("identity").await;
    create_items(&mut db, "items", 10).await;
    let prefix = unique("identity");
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment {
        name: prefix.clone(),
        strategy: "binlog",
        redis_url: redis_server.url(),
        metrics_port: free_port(),
        api_port: None,
        extra: format!("[binlog]\nserver_id = {}\n", random_server_id()),
        tables: table_toml(&db.name, "items", &format!("{prefix}:t:"), ""),
    };
    let config = deployment.write(dir.path());
    let mut redis = redis_at(&redis_server.url()).await;
    let checkpoint_key = format!("cachesync:{{{prefix}}}:checkpoint");

    let _: () = redis::cmd("SET")
        .arg(&checkpoint_key)
        .arg(format!(
            "binlog.000001:4 server=id:999@elsewhere:3306 tables={}.items",
            db.name
        ))
        .query_async(&mut redis)
        .await
        .unwrap();
    let (code, stderr) = start_to_exit(dir.path(), &config, deployment.metrics_port);
    assert_eq!(
        code,
        Some(1),
        "a checkpoint of another server was not refused\n{stderr}"
    );
    assert!(
        stderr.contains("was written against MySQL server id:999@elsewhere:3306")
            && stderr.contains("delete the key"),
        "{stderr}"
    );

    let _: () = redis::cmd("DEL")
        .arg(&checkpoint_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("cachesync:checkpoint:binlog")
        .arg("binlog.000001:4")
        .query_async(&mut redis)
        .await
        .unwrap();
    let (code, stderr) = start_to_exit(dir.path(), &config, deployment.metrics_port);
    assert_eq!(
        code,
        Some(1),
        "the old shared checkpoint key was adopted or ignored\n{stderr}"
    );
    assert!(
        stderr.contains("found a checkpoint at the old shared key cachesync:checkpoint:binlog")
            && stderr.contains("RENAME"),
        "{stderr}"
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&checkpoint_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(exists, 0, "a refused start wrote a checkpoint");
    println!(
        "identity: {}",
        stderr.lines().find(|l| l.contains("error")).unwrap_or("")
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_when_redis_may_evict_cachesyncs_keys() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut db = TestDb::create("doctor").await;
    create_items(&mut db, "items", 10).await;
    for (policy, fails) in [
        ("allkeys-lru", true),
        ("volatile-lru", false),
        ("noeviction", false),
    ] {
        let redis_server = tokio::task::spawn_blocking(move || {
            PrivateRedis::start(&["--maxmemory", "64mb", "--maxmemory-policy", policy])
        })
        .await
        .unwrap();
        let toml = format!(
            "strategy = \"dual-write\"\n[mysql]\nurl = \"{}\"\n[redis]\nurl = \"{}\"\n\
             [[tables]]\nname = \"{}.items\"\nkey = \"doctor:{{id}}\"\n",
            mysql_url(),
            redis_server.url(),
            db.name
        );
        let config = write_config(dir.path(), &toml);
        let (code, stdout, stderr) = cli(
            vec![
                "doctor".into(),
                "--config".into(),
                config.to_str().unwrap().to_owned(),
            ],
            Duration::from_secs(60),
        )
        .await;
        let line = stdout
            .lines()
            .find(|l| l.contains("maxmemory-policy"))
            .unwrap_or_else(|| {
                panic!("doctor said nothing about maxmemory-policy\n{stdout}\n{stderr}")
            });
        println!("doctor with {policy}: {line}");
        if fails {
            assert_eq!(code, Some(1), "{stdout}");
            assert!(
                line.starts_with("  FAIL") && line.contains("maxmemory-policy noeviction"),
                "{line}"
            );
        } else {
            assert!(!line.contains("FAIL"), "{line}");
        }
    }
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------
// 6. Redis back on an older copy; a checkpoint another process moved
// ---------------------------------------------------------------------------------------

/// Waits (at most 30 s) until the daemon's `cachesync_redis_data_loss_total` is `n`.
async fn wait_losses(daemon: &mut RunningDaemon, strategy: &str, n: f64) {
    let series = format!("cachesync_redis_data_loss_total{{strategy=\"{strategy}\"}}");
    let began = Instant::now();
    loop {
        daemon.assert_alive();
        if daemon.sample(&series) == Some(n) {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{series} did not reach {n}\n--- stderr ---\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_copy_is_a_loss_and_a_checkpoint_moved_by_another_process_stops_binlog() {
    let _serial = SERIAL.lock().await;
    const ROWS: u64 = 500;
    let mut redis = redis_at(&common::redis_url()).await;

    // binlog: the checkpoint goes back (as in a copy of Redis from before the last
    // batches): the tail replays from it; then one that jumps ahead stops the daemon.
    let mut db = TestDb::create("older").await;
    create_items(&mut db, "items", ROWS).await;
    let prefix = unique("older");
    let key_prefix = format!("{prefix}:t:");
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment {
        name: prefix.clone(),
        strategy: "binlog",
        redis_url: common::redis_url(),
        metrics_port: free_port(),
        api_port: None,
        extra: format!("[binlog]\nserver_id = {}\n", random_server_id()),
        tables: table_toml(&db.name, "items", &key_prefix, ""),
    };
    let config = deployment.write(dir.path());
    let checkpoint_key = format!("cachesync:{{{prefix}}}:checkpoint");
    let mut daemon = RunningDaemon::start(
        dir.path(),
        &config,
        deployment.metrics_port,
        Duration::from_secs(120),
    );
    wait_loaded(
        &mut daemon,
        &mut redis,
        &prefix,
        &mut db.conn,
        "items",
        &key_prefix,
        Duration::from_secs(60),
    )
    .await;
    let old: String = redis::cmd("GET")
        .arg(&checkpoint_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    db.exec("UPDATE items SET ver = ver + 1, note = 'after the copy' WHERE id <= 100")
        .await;
    wait_equal(
        &mut db.conn,
        "items",
        &mut redis,
        &key_prefix,
        Duration::from_secs(30),
        "before the rewind",
    )
    .await;
    let _: () = redis::cmd("SET")
        .arg(&checkpoint_key)
        .arg(&old)
        .query_async(&mut redis)
        .await
        .unwrap();
    wait_losses(&mut daemon, "binlog", 1.0).await;
    db.exec("UPDATE items SET ver = ver + 1, note = 'after the rewind' WHERE id > 400")
        .await;
    wait_equal(
        &mut db.conn,
        "items",
        &mut redis,
        &key_prefix,
        Duration::from_secs(30),
        "after the rewind",
    )
    .await;
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("Redis came back from an older copy"),
        "{stderr}"
    );
    let now: String = redis::cmd("GET")
        .arg(&checkpoint_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    let ahead = now.replacen(now.split(':').next().unwrap(), "binlog.999999", 1);
    let _: () = redis::cmd("SET")
        .arg(&checkpoint_key)
        .arg(&ahead)
        .query_async(&mut redis)
        .await
        .unwrap();
    let code = daemon.wait_exit(Duration::from_secs(30));
    let stderr = daemon.stderr();
    assert_eq!(
        code,
        Some(1),
        "a checkpoint moved ahead by someone else did not stop the daemon\n{stderr}"
    );
    assert!(
        stderr.contains("another process rewrote the checkpoint"),
        "{stderr}"
    );
    println!("older copy (binlog): replayed from {old:?}; stopped on {ahead:?}");
    let _: () = redis::cmd("DEL")
        .arg(&checkpoint_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    delete_matching(&mut redis, &format!("{prefix}:*")).await;
    db.drop_db().await;

    // dual-write: the marker's beat goes back (a copy older than the last check): the
    // tables are rebuilt.
    let mut db = TestDb::create("older_dw").await;
    create_items(&mut db, "items", ROWS).await;
    let prefix = unique("older_dw");
    let key_prefix = format!("{prefix}:t:");
    let deployment = Deployment {
        name: prefix.clone(),
        strategy: "dual-write",
        redis_url: common::redis_url(),
        metrics_port: free_port(),
        api_port: None,
        extra: String::new(),
        tables: table_toml(&db.name, "items", &key_prefix, "version_column = \"ver\""),
    };
    let config = deployment.write(dir.path());
    let marker = format!("cachesync:{{{prefix}}}:marker");
    let mut daemon = RunningDaemon::start(
        dir.path(),
        &config,
        deployment.metrics_port,
        Duration::from_secs(120),
    );
    wait_loaded(
        &mut daemon,
        &mut redis,
        &prefix,
        &mut db.conn,
        "items",
        &key_prefix,
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // A row the "copy" lacks, and the copy's older beat.
    let _: () = redis::cmd("DEL")
        .arg(format!("{key_prefix}7"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&marker)
        .arg("beat")
        .arg(1)
        .query_async(&mut redis)
        .await
        .unwrap();
    wait_losses(&mut daemon, "dual-write", 1.0).await;
    wait_equal(
        &mut db.conn,
        "items",
        &mut redis,
        &key_prefix,
        Duration::from_secs(30),
        "after the rollback",
    )
    .await;
    let stderr = daemon.stderr();
    daemon.kill9();
    assert!(
        stderr.contains("Redis came back from an older copy"),
        "{stderr}"
    );
    let _: () = redis::cmd("DEL")
        .arg(&marker)
        .query_async(&mut redis)
        .await
        .unwrap();
    delete_matching(&mut redis, &format!("{prefix}:*")).await;
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------
// 7. A primary key that cannot be paged
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_keyed_by_an_enum_is_read_whole() {
    let _serial = SERIAL.lock().await;
    // Members out of alphabetical order: the index sorts by member number, a comparison
    // with the text read back sorts by text. Paged one row at a time, `kind > 'b'` would
    // skip 'a'.
    let mut db = TestDb::create("enum_key").await;
    db.exec("CREATE TABLE kinds (kind ENUM('b','a','c') PRIMARY KEY, label VARCHAR(8) NOT NULL)")
        .await;
    db.exec("INSERT INTO kinds VALUES ('b', 'bee'), ('a', 'ay'), ('c', 'cee')")
        .await;
    let prefix = unique("enum_key");
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment {
        name: prefix.clone(),
        strategy: "binlog",
        redis_url: common::redis_url(),
        metrics_port: free_port(),
        api_port: None,
        extra: format!("[binlog]\nserver_id = {}\n", random_server_id()),
        tables: format!(
            "[[tables]]\nname = \"{}.kinds\"\nkey = \"{prefix}:k:{{kind}}\"\n",
            db.name
        ),
    };
    let toml = deployment
        .toml()
        .replace("chunk_rows = 500", "chunk_rows = 1");
    let config = write_config(dir.path(), &toml);
    let mut redis = redis_at(&common::redis_url()).await;
    let mut daemon = RunningDaemon::start(
        dir.path(),
        &config,
        deployment.metrics_port,
        Duration::from_secs(60),
    );
    let record = format!("cachesync:{{{prefix}}}:snapshots");
    let began = Instant::now();
    loop {
        daemon.assert_alive();
        let pending: i64 = redis::cmd("EXISTS")
            .arg(&record)
            .query_async(&mut redis)
            .await
            .unwrap();
        if pending == 0 && daemon.stderr().contains("online snapshot done") {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.kill9();
    let keys = common::scan_keys(&mut redis, &format!("{prefix}:k:*")).await;
    assert_eq!(
        keys,
        ["a", "b", "c"].map(|k| format!("{prefix}:k:{k}")),
        "every row of the ENUM-keyed table"
    );
    let _: () = redis::cmd("DEL")
        .arg(format!("cachesync:{{{prefix}}}:checkpoint"))
        .query_async(&mut redis)
        .await
        .unwrap();
    delete_matching(&mut redis, &format!("{prefix}:*")).await;
    db.drop_db().await;
}
