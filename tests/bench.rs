//! `cachesync bench` against real MariaDB, Redis and RabbitMQ: short runs under hot-key
//! contention (8 keys, zipf skew, 8 writers), with and without faults. The tests assert
//! what must hold whatever the machine's speed, never timings:
//!
//! - every reported count agrees with the raw samples it came from;
//! - the ordered variants (binlog, versioned dual-write, outbox mq) end with Redis equal to
//!   MySQL and every acknowledged change seen in Redis, never going backwards;
//! - under `redis-restart`, `daemon-crash` and `broker-drop`, binlog and `mq:outbox` lose
//!   nothing and report a recovery time;
//! - interleaved rounds report each figure's median within its range, and the CPU per
//!   change of cachesync and Redis;
//! - the CLI prints the table and writes the Markdown and JSON reports, and `--plot`
//!   draws a well-formed SVG naming every strategy (refused by other scenarios, and
//!   for an unwritable path before anything runs);
//! - `--scenario overhead` runs its three phases (alone, raw binlog reader, cachesync)
//!   with figures that agree with each other.
//!
//! Run `scripts/services.sh up` first. Each test uses its own database, Redis key prefix,
//! RabbitMQ names and replica server id.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cachesync::bench::faults::Fault;
use cachesync::bench::report::{BenchReport, Quantiles, VariantReport};
use cachesync::bench::{self, Options};
use cachesync::config::{Config, RawConfig};
use mysql_async::prelude::Queryable;

/// A replica id no other test of this run announces (the binlog variants replicate).
fn server_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Even ids: the bench's replica takes `server_id + 1`.
    300_000 + (std::process::id() % 10_000) * 20 + 2 * NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The services of the test suite; the table entry is required by the config format and
/// not used by the bench.
fn config() -> Config {
    let tree = serde_json::json!({
        "strategy": "binlog",
        "mysql": { "url": common::mysql_url() },
        "redis": { "url": common::redis_url() },
        "amqp": { "url": common::amqp_url() },
        "metrics": { "listen": "127.0.0.1:0" },
        "binlog": { "server_id": server_id() },
        "tables": [{ "name": "unused.unused", "key": "unused:{id}" }],
    });
    RawConfig::from_tree(tree).unwrap().validate().unwrap()
}

/// A short run with hot-key contention: 8 rows, zipf 1.1 (the hottest key takes about a
/// third of the writes), 8 writers and 2 readers.
fn options(name: &str, variants: &str, fault: Fault) -> Options {
    let unique = common::unique(name);
    Options {
        variants: variants.split(',').map(|v| v.parse().unwrap()).collect(),
        duration: Duration::from_secs(3),
        writers: 8,
        rate: Some(400.0),
        keys: 8,
        skew: "zipf:1.1".parse().unwrap(),
        readers: 2,
        read_rate: Some(400.0),
        seed: 7,
        fault,
        fault_duration: Duration::from_secs(1),
        fault_command: None,
        drain_timeout: Duration::from_secs(60),
        database: unique.clone(),
        key_prefix: format!("cachesync:test:{unique}"),
        progress: false,
        rounds: 1,
    }
}

async fn run(options: &Options) -> BenchReport {
    let outcome = bench::run(&config(), options).await;
    // The bench drops its tables; the test's database is the test's to drop.
    let mut conn = common::mysql_conn().await;
    conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", options.database))
        .await
        .unwrap();
    match outcome {
        Ok(report) => report,
        Err(e) => panic!(
            "bench {:?} failed: {e} (start the services with `scripts/services.sh up`)",
            options.variants
        ),
    }
}

/// Quantiles in ms recomputed from raw µs samples must be what the report says.
fn assert_quantiles_match(what: &str, reported: &Quantiles, raw: &[u64]) {
    assert_eq!(reported.count, raw.len(), "{what}: count");
    assert!(
        reported.p50 <= reported.p99
            && reported.p99 <= reported.p999
            && reported.p999 <= reported.max,
        "{what}: quantiles are monotone: {reported:?}"
    );
    let max_ms = raw.iter().max().map_or(0.0, |&us| us as f64 / 1000.0);
    assert!(
        (reported.max - max_ms).abs() < 1e-9,
        "{what}: max {} ms, the samples' max {max_ms} ms",
        reported.max
    );
    if let Some(&min) = raw.iter().min() {
        assert!(
            reported.p50 >= min as f64 / 1000.0,
            "{what}: p50 below the smallest sample"
        );
    }
}

/// Every count of `r` agrees with the raw samples and the other counts.
fn assert_consistent(r: &VariantReport) {
    let name = &r.strategy;
    assert!(
        r.writes > 0,
        "{name}: no write succeeded: {:?}",
        r.first_error
    );
    assert_eq!(
        r.writes,
        r.samples.write_us.len() as u64,
        "{name}: writes vs samples"
    );
    assert_quantiles_match(
        &format!("{name} write latency"),
        &r.write_latency_ms,
        &r.samples.write_us,
    );
    assert_quantiles_match(
        &format!("{name} propagation"),
        &r.propagation_ms,
        &r.samples.propagation_us,
    );
    assert_eq!(
        r.propagation_ms.count as u64 + r.unpropagated,
        r.writes,
        "{name}: every acknowledged write is either seen in Redis or counted unpropagated"
    );
    assert!(
        (r.writes_per_s - r.writes as f64 / r.elapsed_s).abs() < 1e-6,
        "{name}: writes/s is writes over elapsed"
    );
    // The per-second series (the plot's throughput panel) count the same events as the
    // samples, each once.
    assert_eq!(
        r.writes_each_second.iter().sum::<u64>(),
        r.samples.write_us.len() as u64,
        "{name}: writes per second sum to the writes"
    );
    assert_eq!(
        r.propagated_each_second.iter().sum::<u64>(),
        r.samples.propagation_us.len() as u64,
        "{name}: propagated per second sum to the propagated"
    );
    assert!(r.reads > 0, "{name}: the readers read");
    assert!(
        r.stale_reads + r.read_misses <= r.reads,
        "{name}: stale and missed reads are reads"
    );
    assert_eq!(
        r.staleness_ms.count as u64, r.stale_reads,
        "{name}: one staleness per stale read"
    );
    assert_quantiles_match(
        &format!("{name} staleness"),
        &r.staleness_ms,
        &r.samples.staleness_us,
    );
    assert!(
        (r.stale_fraction - r.stale_reads as f64 / r.reads as f64).abs() < 1e-12,
        "{name}: stale fraction"
    );
    let d = &r.divergent;
    assert_eq!(
        d.total,
        d.missing + d.extra + d.different,
        "{name}: divergent total"
    );
    assert!(
        d.examples.len() as u64 <= d.total.min(5),
        "{name}: examples are of divergent keys"
    );
    // The guard's figures are the applier's: write-back's applier only refreshes rows
    // after a flush, so they would not describe the application's writes.
    let guarded = r.ordered && r.propagation_to == "Redis";
    assert_eq!(
        r.applied_twice.is_some(),
        guarded,
        "{name}: replays are counted when ordered"
    );
    assert_eq!(
        r.guard_drops.is_some(),
        guarded,
        "{name}: guard drops are counted when ordered"
    );
    assert!(
        r.lost_in_mysql <= r.writes,
        "{name}: lost in MySQL are acknowledged writes"
    );
}

/// What an ordered variant promises: Redis ends equal to MySQL, every acknowledged change
/// arrived, and no key ever went back to an older version.
fn assert_nothing_lost(r: &VariantReport) {
    let name = &r.strategy;
    assert!(r.ordered, "{name} is an ordered variant");
    assert!(
        r.drained,
        "{name}: the drain ended with changes still missing"
    );
    assert_eq!(
        r.unpropagated, 0,
        "{name}: acknowledged changes never seen in Redis"
    );
    assert_eq!(
        r.divergent.total, 0,
        "{name}: Redis differs from MySQL after the drain: {:?}",
        r.divergent
    );
    assert_eq!(
        r.out_of_order, 0,
        "{name}: a key went back to an older version"
    );
}

/// The report's other renderings carry the same figures.
fn assert_renderings(report: &BenchReport) {
    let markdown = report.markdown();
    let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), report.results.len());
    for (r, j) in report.results.iter().zip(results) {
        assert!(
            markdown.contains(&format!("| {} |", r.strategy)),
            "{} in:\n{markdown}",
            r.strategy
        );
        assert_eq!(j["strategy"], r.strategy.as_str());
        assert_eq!(j["writes"], r.writes);
        assert_eq!(j["unpropagated"], r.unpropagated);
        assert_eq!(j["divergent"]["total"], r.divergent.total);
        assert!(
            j.get("samples").is_none(),
            "raw samples stay out of the JSON"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_hot_key_contention_the_ordered_strategies_end_equal_to_mysql() {
    let options = options(
        "bench_hot",
        "dual-write,dual-write:versioned,mq:outbox,binlog,write-back",
        Fault::None,
    );
    let report = run(&options).await;
    eprintln!("{}", report.markdown());
    assert_eq!(report.results.len(), 5);
    assert!(
        report.workload.hottest_key_share > 0.25,
        "key 1 is hot: {:?}",
        report.workload
    );
    for r in &report.results {
        assert_consistent(r);
        assert_eq!(r.write_errors, 0, "{}: {:?}", r.strategy, r.first_error);
        assert!(r.fault.is_none());
        if r.ordered {
            assert_nothing_lost(r);
        }
        assert_eq!(
            r.lost_in_mysql, 0,
            "{}: MySQL has every acknowledged write",
            r.strategy
        );
    }
    // Write-back's propagation is to MySQL, the others' to Redis.
    assert_eq!(report.results[4].propagation_to, "MySQL");
    assert!(
        report.results[..4]
            .iter()
            .all(|r| r.propagation_to == "Redis")
    );
    // Plain dual-write may or may not lose its race in 3 s; it is reported either way.
    assert!(!report.results[0].ordered);
    assert_renderings(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rounds_report_the_median_within_its_range_and_the_cpu_per_change() {
    let mut options = options("bench_rounds", "binlog,mq", Fault::None);
    options.duration = Duration::from_secs(2);
    options.rounds = 2;
    let report = run(&options).await;
    eprintln!("{}", report.markdown());
    assert_eq!(report.workload.rounds, 2);
    assert_eq!(
        report.results.len(),
        2,
        "one summary per strategy, not per round"
    );
    for r in &report.results {
        let name = &r.strategy;
        assert_eq!(r.rounds, 2, "{name}");
        assert!(r.writes > 0, "{name}: {:?}", r.first_error);
        assert_eq!(r.write_errors, 0, "{name}: {:?}", r.first_error);
        if r.ordered {
            assert_nothing_lost(r);
        }
        for (figure, median) in [
            ("writes_per_s", Some(r.writes_per_s)),
            ("write_latency_ms.p50", Some(r.write_latency_ms.p50)),
            ("propagation_ms.p99", Some(r.propagation_ms.p99)),
            ("cpu_us_per_change.cachesync", r.cpu_us_per_change.cachesync),
            ("cpu_us_per_change.redis", r.cpu_us_per_change.redis),
        ] {
            let [lo, hi] = r.range[figure];
            let median = median.unwrap_or_else(|| panic!("{name}: no {figure}"));
            assert!(
                lo <= median && median <= hi,
                "{name}: {figure} median {median} outside the rounds' range {lo}–{hi}"
            );
        }
        // Both processes did work for every change in the window: the daemon's threads
        // (binlog: its tailer; mq: the publishing writes and the consumer) and Redis.
        for (process, cpu) in [
            ("cachesync", r.cpu_us_per_change.cachesync),
            ("redis", r.cpu_us_per_change.redis),
        ] {
            assert!(
                cpu.is_some_and(|us| us > 0.0),
                "{name}: {process} CPU per change {cpu:?}"
            );
        }
    }
    let markdown = report.markdown();
    assert!(markdown.contains("Range over the rounds"), "{markdown}");
    assert!(markdown.contains("CPU µs/change"), "{markdown}");
    let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
    for j in json["results"].as_array().unwrap() {
        assert!(
            j["cpu_us_per_change"]["cachesync"].as_f64().unwrap() > 0.0,
            "{j}"
        );
        assert!(
            j["cpu_us_per_change"]["redis"].as_f64().unwrap() > 0.0,
            "{j}"
        );
        assert_eq!(
            j["range"]["writes_per_s"].as_array().unwrap().len(),
            2,
            "{j}"
        );
    }
    assert_eq!(json["workload"]["rounds"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_overhead_scenario_reports_three_phases_side_by_side() {
    use cachesync::bench::overhead::{self, CHANGES_PER_TRANSACTION, Phase};
    let mut options = options("bench_overhead", "binlog", Fault::None);
    options.duration = Duration::from_secs(2);
    options.keys = 1000;
    options.writers = 4;
    let outcome = overhead::run(&config(), &options).await;
    let mut conn = common::mysql_conn().await;
    conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", options.database))
        .await
        .unwrap();
    let report = outcome.unwrap_or_else(|e| {
        panic!("bench --scenario overhead failed: {e} (start the services with `scripts/services.sh up`)")
    });
    let markdown = report.markdown();
    eprintln!("{markdown}");
    assert_eq!(
        report.phases.iter().map(|p| p.phase).collect::<Vec<_>>(),
        Phase::ALL
    );
    let alone = report.phases[0].transactions_per_s;
    for p in &report.phases {
        let name = p.title;
        // The test services have mariadb-binlog (the MariaDB client); a machine without it
        // reports that phase as n/a, which is what it is for.
        if p.phase == Phase::RawReader && p.unavailable.is_some() && report.reader_program.is_none()
        {
            assert!(
                p.unavailable.as_deref().unwrap().contains("not found"),
                "{p:?}"
            );
            continue;
        }
        assert_eq!(p.unavailable, None, "{name}");
        assert_eq!(p.rounds, 1, "{name}");
        assert!(p.transactions > 0, "{name}: {:?}", p.first_error);
        assert!(p.transactions_per_s > 0.0, "{name}");
        // The figures agree with each other.
        let changes = p.transactions_per_s * CHANGES_PER_TRANSACTION as f64;
        assert!(
            (p.row_changes_per_s - changes).abs() < 1e-6 * changes,
            "{name}: {} row changes/s for {} txn/s",
            p.row_changes_per_s,
            p.transactions_per_s
        );
        let ratio = p
            .ratio_to_alone
            .unwrap_or_else(|| panic!("{name}: no ratio"));
        assert!(
            (ratio - p.transactions_per_s / alone).abs() < 1e-9,
            "{name}: ratio {ratio} is not {} / {alone}",
            p.transactions_per_s
        );
        assert!(
            p.txn_p50_ms > 0.0 && p.txn_p50_ms <= p.txn_p99_ms,
            "{name}: {p:?}"
        );
        let cpu = p.cpu_us_per_row_change;
        // Only the cachesync phase runs the daemon, only the floor the raw reader.
        assert_eq!(
            cpu.cachesync.is_some(),
            p.phase == Phase::Cachesync,
            "{name}: cachesync CPU {cpu:?}"
        );
        assert_eq!(
            cpu.reader.is_some(),
            p.phase == Phase::RawReader,
            "{name}: reader CPU {cpu:?}"
        );
        if p.phase == Phase::Cachesync {
            assert!(cpu.cachesync.unwrap() > 0.0, "{name}: {cpu:?}");
        }
        assert!(markdown.contains(&format!("| {name} |")), "{markdown}");
    }
    assert_eq!(report.phases[0].ratio_to_alone, Some(1.0));
    let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
    assert_eq!(json["phases"].as_array().unwrap().len(), 3);
    assert_eq!(json["phases"][2]["phase"], "cachesync");
    assert_eq!(
        json["workload"]["changes_per_transaction"],
        CHANGES_PER_TRANSACTION
    );
}

/// A fault run: every variant consistent, the ones named in `lossless` lose nothing and
/// recover.
async fn fault_run(name: &str, fault: Fault, variants: &str, lossless: &[&str]) -> BenchReport {
    let options = options(name, variants, fault);
    let report = run(&options).await;
    // Shown with --nocapture, and by a failing test's output.
    eprintln!("{}", report.markdown());
    for r in &report.results {
        assert_consistent(r);
        let outcome = r.fault.as_ref().expect("a fault run reports the fault");
        assert_eq!(outcome.kind, fault.to_string());
        if lossless.contains(&r.strategy.as_str()) {
            assert!(outcome.applies, "{}: the fault hit it", r.strategy);
            assert_nothing_lost(r);
            assert!(
                outcome.recovery_s.is_some(),
                "{}: every change committed before the fault's end arrived",
                r.strategy
            );
        }
    }
    assert_renderings(&report);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_loses_nothing_with_binlog_or_the_outbox() {
    fault_run(
        "bench_redis",
        Fault::RedisRestart,
        "binlog,mq:outbox",
        &["binlog", "mq:outbox"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_crash_loses_nothing_with_binlog_or_the_outbox() {
    let report = fault_run(
        "bench_crash",
        Fault::DaemonCrash,
        "binlog,mq:outbox",
        &["binlog", "mq:outbox"],
    )
    .await;
    // With the daemon down, binlog writers still commit; mq writers have nowhere to go.
    let binlog = &report.results[0];
    assert_eq!(binlog.fault.as_ref().unwrap().rejected_writes, 0);
    let mq = &report.results[1];
    assert!(
        mq.fault.as_ref().unwrap().rejected_writes > 0,
        "{:?}",
        mq.fault
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_data_loss_costs_write_back_its_unflushed_writes_and_the_others_nothing_in_mysql() {
    let report = fault_run(
        "bench_loss",
        Fault::RedisDataLoss,
        "write-back,binlog,dual-write:versioned",
        &[],
    )
    .await;
    for r in &report.results {
        let fault = r.fault.as_ref().unwrap();
        assert!(
            fault.applies && fault.duration_s == 0.0,
            "{}: {fault:?}",
            r.strategy
        );
    }
    let write_back = &report.results[0];
    // Seen from MySQL during the run and counted against MySQL at the end: one figure.
    assert_eq!(
        write_back.lost_in_mysql, write_back.unpropagated,
        "write-back: the observer and the final count disagree"
    );
    for r in &report.results[1..] {
        assert_eq!(r.lost_in_mysql, 0, "{}: MySQL lost nothing", r.strategy);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_drop_loses_nothing_with_the_outbox_and_does_not_touch_binlog() {
    let report = fault_run(
        "bench_broker",
        Fault::BrokerDrop,
        "mq:outbox,binlog",
        &["mq:outbox"],
    )
    .await;
    let binlog = &report.results[1];
    assert!(
        !binlog.fault.as_ref().unwrap().applies,
        "binlog has no broker"
    );
    assert_nothing_lost(binlog);
}

/// A small `cachesync bench` CLI run (50 keys, 2 writers at 100/s, 1 reader) against the
/// test services, in its own database and key prefix; the caller adds its flags to
/// `command`.
struct CliRun {
    dir: tempfile::TempDir,
    unique: String,
    command: std::process::Command,
}

impl CliRun {
    fn new(name: &str, strategies: &str, duration: &str) -> CliRun {
        let dir = tempfile::tempdir().unwrap();
        let unique = common::unique(name);
        let config = common::write_config(
            dir.path(),
            &format!(
                "{}\n[binlog]\nserver_id = {}\n",
                common::config_toml(
                    "binlog",
                    "[[tables]]\nname = \"unused.unused\"\nkey = \"unused:{id}\""
                ),
                server_id()
            ),
        );
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cachesync"));
        command.args(["bench", "--config"]).arg(&config).args([
            "--strategies",
            strategies,
            "--duration",
            duration,
            "--keys",
            "50",
            "--writers",
            "2",
            "--rate",
            "100",
            "--readers",
            "1",
            "--read-rate",
            "100",
            "--database",
            &unique,
            "--key-prefix",
            &format!("cachesync:test:{unique}"),
            "--quiet",
        ]);
        CliRun {
            dir,
            unique,
            command,
        }
    }

    /// A file in the run's temporary directory.
    fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Runs it, drops its database, asserts it succeeded; its stdout. The directory
    /// stays for the caller to read.
    async fn output(&mut self) -> String {
        let output = self.command.output().unwrap();
        common::mysql_conn()
            .await
            .query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.unique))
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

#[tokio::test]
async fn the_cli_prints_the_table_and_writes_markdown_and_json() {
    let mut run = CliRun::new("bench_cli", "binlog:versioned", "1s");
    let (md, json) = (run.file("report.md"), run.file("report.json"));
    run.command.arg("--out").arg(&md).arg("--json").arg(&json);
    let stdout = run.output().await;
    assert!(
        stdout.contains("| binlog:versioned |"),
        "the table on stdout:\n{stdout}"
    );
    let markdown = std::fs::read_to_string(&md).unwrap();
    assert!(markdown.contains("| binlog:versioned |"), "{markdown}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["results"][0]["strategy"], "binlog:versioned");
    assert_eq!(report["results"][0]["divergent"]["total"], 0);
    assert_eq!(report["workload"]["keys"], 50);
}

#[tokio::test]
async fn the_cli_draws_the_plot_of_every_strategy() {
    let mut run = CliRun::new("bench_plot", "binlog,dual-write:versioned", "2s");
    let (svg, json) = (run.file("plot.svg"), run.file("report.json"));
    run.command.arg("--plot").arg(&svg).arg("--json").arg(&json);
    run.output().await;
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_well_formed(&text);
    for wanted in [
        "binlog",
        "dual-write:versioned",
        bench::plot::WRITE_PANEL,
        bench::plot::PROPAGATION_PANEL,
        bench::plot::THROUGHPUT_PANEL,
        "2 writers at 100 writes/s",
    ] {
        assert!(text.contains(wanted), "{wanted:?} in the SVG");
    }
    // The throughput panel's series is in the JSON too.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for r in report["results"].as_array().unwrap() {
        let each: u64 = r["writes_each_second"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(each, r["writes"].as_u64().unwrap(), "{}", r["strategy"]);
        assert!(r["propagated_each_second"].is_array());
    }
}

/// A structural XML check (no XML parser among the dev-dependencies): one `<svg>` root
/// holding everything, and every element opened is closed in order.
fn assert_well_formed(text: &str) {
    let body = text.trim();
    let body = body
        .strip_prefix("<?xml")
        .map_or(body, |rest| &rest[rest.find("?>").unwrap() + 2..])
        .trim();
    assert!(
        body.starts_with("<svg"),
        "starts with <svg: {}",
        &body[..80.min(body.len())]
    );
    assert!(body.ends_with("</svg>"), "ends with </svg>");
    let mut open: Vec<&str> = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find('<') {
        let end = start + rest[start..].find('>').expect("every tag is closed");
        let tag = &rest[start + 1..end];
        assert!(!tag.contains('<'), "a tag inside a tag: {tag}");
        let name = |t: &str| {
            t.split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap()
                .to_owned()
        };
        if let Some(closing) = tag.strip_prefix('/') {
            assert_eq!(
                open.pop().map(name),
                Some(closing.trim().to_owned()),
                "closing {closing}"
            );
        } else if !tag.ends_with('/') {
            open.push(tag);
        }
        rest = &rest[end + 1..];
        if open.is_empty() {
            assert!(rest.trim().is_empty(), "nothing after the root element");
        }
    }
    assert!(open.is_empty(), "unclosed elements: {open:?}");
    for (at, _) in body.match_indices('&') {
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#"]
                .iter()
                .any(|entity| body[at..].starts_with(entity)),
            "a bare & at {at}"
        );
    }
}

/// A valid config whose services are nowhere (port 1): a failure that connected names
/// `127.0.0.1:1`.
fn nowhere_config(dir: &std::path::Path) -> std::path::PathBuf {
    common::write_config(
        dir,
        "strategy = \"binlog\"\n[mysql]\nurl = \"mysql://root@127.0.0.1:1\"\n\
         [redis]\nurl = \"redis://127.0.0.1:1\"\n\
         [[tables]]\nname = \"unused.unused\"\nkey = \"unused:{id}\"\n",
    )
}

#[test]
fn plot_is_refused_by_other_scenarios_and_for_an_unwritable_path_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let config = nowhere_config(dir.path());
    // `cachesync bench --config CONFIG ARGS… --plot PATH`: its stderr, once it failed
    // without connecting to anything.
    let refused = |args: &[&str], path: &std::path::Path| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cachesync"))
            .args(["bench", "--config"])
            .arg(&config)
            .args(args)
            .arg("--plot")
            .arg(path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "{stderr}");
        assert!(
            !stderr.contains("127.0.0.1:1"),
            "nothing connected:\n{stderr}"
        );
        stderr
    };
    let plot = dir.path().join("plot.svg");
    for scenario in ["overhead", "read-storm"] {
        let stderr = refused(&["--scenario", scenario], &plot);
        assert!(
            stderr.contains("--plot") && stderr.contains(&format!("--scenario {scenario}")),
            "{stderr}"
        );
    }
    let missing = dir.path().join("no-such-dir").join("plot.svg");
    for path in [missing, dir.path().join("plot.png")] {
        // A long run: only a check before it starts makes the test quick.
        let stderr = refused(&["--duration", "100s"], &path);
        assert!(
            stderr.contains("--plot") && stderr.contains(&path.display().to_string()),
            "the path is named:\n{stderr}"
        );
        assert!(!path.exists(), "no file left behind");
    }
}

#[test]
fn bad_bench_options_are_named_before_anything_connects() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cachesync"))
        .args(["bench", "--strategies", "dual-write,carrier-pigeon"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("carrier-pigeon"), "{stderr}");

    // A valid config pointing nowhere: the option problems come first, all of them.
    let dir = tempfile::tempdir().unwrap();
    let config = nowhere_config(dir.path());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cachesync"))
        .args(["bench", "--config"])
        .arg(&config)
        .args([
            "--duration",
            "3s",
            "--fault",
            "redis-restart",
            "--fault-duration",
            "5s",
        ])
        .args(["--writers", "0", "--database", "no-dashes", "--rounds", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for flag in ["--fault-duration", "--writers", "--database", "--rounds"] {
        assert!(stderr.contains(flag), "{flag} is named in:\n{stderr}");
    }
    assert!(
        !stderr.contains("127.0.0.1:1"),
        "nothing connected:\n{stderr}"
    );
}
