//! gRPC against HTTP: writes/s and latency percentiles of the same row upsert sent
//! through the sidecar's HTTP `PUT`, the gRPC `Put`, and the gRPC `Write` stream, at the
//! same concurrency, against one in-process API (dual-write strategy).
//!
//! `scripts/services.sh up && cargo bench --bench api_protocols`
//!
//! Environment: `CACHESYNC_BENCH_CONCURRENCY` writes outstanding at once (default 16),
//! `CACHESYNC_BENCH_SECONDS` measured per protocol and round (default 5, after 1 s of
//! warm-up), `CACHESYNC_BENCH_ROUNDS` rounds over the protocols (default 3, interleaved;
//! the table shows each protocol's median round by writes/s), `CACHESYNC_BENCH_ROWS` rows
//! written at random (default 10 000), and the test services' `CACHESYNC_TEST_*_URL`.
//!
//! The same concurrency means the same number of writes outstanding: `http-put` and
//! `grpc-put` run that many clients, each waiting for its answer before the next write
//! (HTTP/1.1 keep-alive connections; one HTTP/2 connection for gRPC); `grpc-write-stream`
//! runs one `Write` stream that keeps that many requests unanswered
//! (`grpc.max_in_flight` is set to the same number). A write's latency is from the
//! client sending it to the client reading its answer. Clients and server share this
//! process and the machine's cores, as a sidecar and its application do.
//!
//! Everything lives in the database `cs_bench_api` and the Redis keys `bench:api:*`, and
//! is removed at the end.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachesync::api::grpc::pb::cache_sync_client::CacheSyncClient;
use cachesync::api::grpc::{self, GrpcConfig, pb};
use cachesync::api::{self, ApiState, Readiness};
use cachesync::bench::report::Quantiles;
use cachesync::bench::setup::clear_redis;
use cachesync::cmd::connect::connect;
use cachesync::cmd::run::Daemon;
use cachesync::config::RawConfig;
use mysql_async::prelude::Queryable;
use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const DB: &str = "cs_bench_api";
const KEY_PREFIX: &str = "bench:api";
const WARM_UP: Duration = Duration::from_secs(1);
const PROTOCOLS: &[&str] = &["http-put", "grpc-put", "grpc-write-stream"];

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// One protocol's run: writes answered and their latencies (µs).
struct Run {
    writes: u64,
    seconds: f64,
    latencies: Vec<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.writes as f64 / self.seconds
    }
}

/// What the writers send to.
#[derive(Clone)]
struct Target {
    http: reqwest::Client,
    rows_url: String,
    grpc: CacheSyncClient<Channel>,
    table: String,
    rows: u64,
    concurrency: usize,
}

impl Target {
    /// A random row's upsert, as the JSON both APIs take.
    fn row(&self) -> String {
        let id = rand::rng().random_range(1..=self.rows);
        format!(r#"{{"id":{id},"name":"row {id}","qty":{}}}"#, id % 97)
    }

    /// Runs `protocol` for `length`; the writes answered and their latencies.
    async fn run(&self, protocol: &str, length: Duration) -> anyhow::Result<Run> {
        let started = Instant::now();
        let until = started + length;
        let latencies = match protocol {
            "grpc-write-stream" => self.write_stream(until).await?,
            _ => {
                let mut writers = tokio::task::JoinSet::new();
                for _ in 0..self.concurrency {
                    let target = self.clone();
                    let protocol = protocol.to_owned();
                    writers.spawn(async move { target.one_at_a_time(&protocol, until).await });
                }
                let mut all = Vec::new();
                while let Some(done) = writers.join_next().await {
                    all.extend(done??);
                }
                all
            }
        };
        Ok(Run {
            writes: latencies.len() as u64,
            seconds: started.elapsed().as_secs_f64(),
            latencies,
        })
    }

    /// One writer of `http-put` or `grpc-put`: a write, its answer, the next.
    async fn one_at_a_time(&self, protocol: &str, until: Instant) -> anyhow::Result<Vec<u64>> {
        let mut latencies = Vec::new();
        let mut grpc = self.grpc.clone();
        while Instant::now() < until {
            let row = self.row();
            let sent = Instant::now();
            if protocol == "http-put" {
                let answer = self
                    .http
                    .put(&self.rows_url)
                    .header("content-type", "application/json")
                    .body(row)
                    .send()
                    .await?;
                anyhow::ensure!(answer.status().is_success(), "PUT: {}", answer.status());
                answer.bytes().await?;
            } else {
                grpc.put(pb::PutRequest {
                    table: self.table.clone(),
                    row_json: row,
                })
                .await?;
            }
            latencies.push(sent.elapsed().as_micros() as u64);
        }
        Ok(latencies)
    }

    /// `grpc-write-stream`: one stream with `concurrency` writes unanswered at all times.
    async fn write_stream(&self, until: Instant) -> anyhow::Result<Vec<u64>> {
        let (requests, inbound) = tokio::sync::mpsc::channel::<pb::WriteRequest>(self.concurrency);
        let outstanding = Arc::new(Semaphore::new(self.concurrency));
        // Results come in request order, so the oldest send time is the answered one's.
        let sent_at: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
        let sender = tokio::spawn({
            let (target, outstanding, sent_at) =
                (self.clone(), outstanding.clone(), sent_at.clone());
            async move {
                let mut id = 0;
                while Instant::now() < until {
                    let Ok(slot) = outstanding.clone().acquire_owned().await else {
                        break;
                    };
                    slot.forget();
                    id += 1;
                    let request = pb::WriteRequest {
                        id,
                        table: target.table.clone(),
                        op: pb::Op::Upsert as i32,
                        row_json: target.row(),
                    };
                    sent_at.lock().unwrap().push_back(Instant::now());
                    if requests.send(request).await.is_err() {
                        break;
                    }
                }
            }
        });
        let stream = futures_util::stream::unfold(inbound, |mut inbound| async move {
            inbound.recv().await.map(|request| (request, inbound))
        });
        let mut results = self.grpc.clone().write(stream).await?.into_inner();
        let mut latencies = Vec::new();
        while let Some(result) = results.message().await? {
            let sent = sent_at.lock().unwrap().pop_front();
            anyhow::ensure!(
                matches!(result.outcome, Some(pb::write_result::Outcome::Receipt(_))),
                "write {}: {:?}",
                result.id,
                result.outcome
            );
            if let Some(sent) = sent {
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            outstanding.add_permits(1);
        }
        sender.await?;
        Ok(latencies)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` must not run it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("api_protocols: run with `cargo bench --bench api_protocols`");
        return Ok(());
    }
    let concurrency: usize = env_or("CACHESYNC_BENCH_CONCURRENCY", "16").parse()?;
    let seconds: f64 = env_or("CACHESYNC_BENCH_SECONDS", "5").parse()?;
    let rounds: usize = env_or("CACHESYNC_BENCH_ROUNDS", "3").parse()?;
    let rows: u64 = env_or("CACHESYNC_BENCH_ROWS", "10000").parse()?;
    let mysql_url = env_or("CACHESYNC_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3307");
    let redis_url = env_or("CACHESYNC_TEST_REDIS_URL", "redis://127.0.0.1:6380");
    anyhow::ensure!(
        concurrency > 0 && rows > 0 && seconds > 0.0 && rounds > 0,
        "concurrency, rows, seconds and rounds must be positive"
    );

    let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&mysql_url)?).await?;
    conn.query_drop(format!("DROP DATABASE IF EXISTS {DB}"))
        .await?;
    conn.query_drop(format!("CREATE DATABASE {DB}")).await?;
    conn.query_drop(format!(
        "CREATE TABLE {DB}.items (id BIGINT PRIMARY KEY, name VARCHAR(32) NOT NULL, \
         qty INT NOT NULL)"
    ))
    .await?;
    clear_redis(&redis_url, KEY_PREFIX).await?;
    let config = RawConfig::from_tree(serde_json::json!({
        "name": KEY_PREFIX,
        "strategy": "dual-write",
        "mysql": { "url": mysql_url },
        "redis": { "url": redis_url },
        "tables": [{ "name": format!("{DB}.items"), "key": format!("{KEY_PREFIX}:{{id}}") }],
    }))
    .map_err(|p| anyhow::anyhow!("{p:?}"))?
    .validate()?;

    let daemon = Daemon::start_on(&config, connect(&config).await?)?;
    let readiness = Readiness::new(
        daemon.services().pool.clone(),
        &config.mysql_url,
        &config.redis_url,
        None,
    )?;
    let state = ApiState::new(
        daemon.strategy().clone(),
        daemon.services().tables.clone(),
        readiness,
        None,
    );
    let shutdown = CancellationToken::new();
    let http_listener = api::bind("127.0.0.1:0".parse()?).await?;
    let grpc_listener = grpc::bind("127.0.0.1:0".parse()?).await?;
    let http_addr = http_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_server = tokio::spawn(api::serve(http_listener, state.clone(), shutdown.clone()));
    let grpc_server = tokio::spawn(grpc::serve(
        grpc_listener,
        state,
        GrpcConfig {
            max_in_flight: concurrency,
            ..GrpcConfig::default()
        },
        shutdown.clone(),
    ));
    let target = Target {
        http: reqwest::Client::new(),
        rows_url: format!("http://{http_addr}/v1/tables/{DB}.items/rows"),
        grpc: CacheSyncClient::connect(format!("http://{grpc_addr}")).await?,
        table: format!("{DB}.items"),
        rows,
        concurrency,
    };

    println!(
        "api_protocols: {concurrency} writes outstanding, {seconds} s per protocol and round, \
         {rounds} rounds, {rows} rows"
    );
    let mut runs: Vec<Vec<Run>> = PROTOCOLS.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (i, protocol) in PROTOCOLS.iter().enumerate() {
            target.run(protocol, WARM_UP).await?;
            let run = target
                .run(protocol, Duration::from_secs_f64(seconds))
                .await?;
            println!("round {round} {protocol}: {:.0} writes/s", run.rate());
            runs[i].push(run);
        }
    }

    println!();
    println!("| protocol | writes/s (median round; range) | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for (protocol, mut runs) in PROTOCOLS.iter().zip(runs) {
        runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        let (low, high) = (runs[0].rate(), runs[runs.len() - 1].rate());
        let median = &mut runs[rounds / 2];
        let rate = median.rate();
        let q = Quantiles::of_micros(&mut median.latencies);
        println!(
            "| {protocol} | {rate:.0} ({low:.0}–{high:.0}) | {:.2} | {:.2} |",
            q.p50, q.p99
        );
    }

    shutdown.cancel();
    http_server.await??;
    grpc_server.await??;
    daemon.stop().await?;
    clear_redis(&redis_url, KEY_PREFIX).await?;
    conn.query_drop(format!("DROP DATABASE {DB}")).await?;
    Ok(())
}
