//! `cachesync bench`: the strategies side by side on one workload, with numbers.
//!
//! For each variant in turn the benchmark builds the same table (`{database}.items`: an
//! id, a version `v` that a trigger bumps on every update — so `v` follows commit order
//! even between racing writers — a payload and a timestamp), fills it with `keys` rows,
//! loads Redis from it, starts the strategy as the daemon would, and then runs the
//! identical workload: `writers` tasks upserting rows drawn from the same seeded key
//! distribution at the same rate, `readers` tasks reading keys from Redis. Meanwhile an
//! [`observer`] outside the strategy sees every change arrive in Redis. Writers stop after
//! `duration`; the run drains until every acknowledged change was seen (or the drain
//! limit), stops the strategy, and compares every key with MySQL (`verify`).
//!
//! With `rounds` above one the variants run interleaved (A B C A B C …), so a noisy
//! moment of the machine or the order of the runs favours none of them, and each figure
//! is reported as its median over the rounds with its range.
//!
//! Module map: [`harness`] (one variant's run, phase by phase), [`setup`] (the bench
//! table, a variant's config, cleaning up), [`workload`] (variants, key skew, pacing),
//! [`observer`] (propagation, order and staleness bookkeeping), [`faults`] (fault kinds
//! and the loopback proxy), [`cost`] (CPU per change of each process), [`report`]
//! (figures from raw samples, rounds summed up; terminal/Markdown/JSON), [`plot`]
//! (`--plot`: the report as an SVG of latency CDFs and writes/s over time), the read
//! path's scenario, [`storm`], and what reading the binlog costs the database's own
//! writers, [`overhead`].

pub mod cost;
pub mod faults;
mod harness;
pub mod observer;
pub mod overhead;
pub mod plot;
pub mod report;
pub mod setup;
pub mod storm;
pub mod workload;

use std::time::{Duration, SystemTime};

use tracing::info;

use self::faults::Fault;
use self::report::{BenchReport, ReportFiles, VariantReport};
use self::workload::{KeyPicker, Skew, Variant};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::model::change::unix_micros;

/// Counter, label `strategy` (the variant): bench reads that saw an older version than
/// the newest committed one.
pub const STALE_READS: &str = "cachesync_stale_reads_total";
/// Counter, label `strategy` (the variant): bench reads made.
pub const READS: &str = "cachesync_reads_total";

/// Describes the bench's own metrics (HELP lines), next to the daemon's.
pub fn describe_metrics() {
    metrics::describe_counter!(
        STALE_READS,
        "Benchmark reads older than the newest committed version"
    );
    metrics::describe_counter!(READS, "Benchmark reads");
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub variants: Vec<Variant>,
    pub duration: Duration,
    pub writers: usize,
    /// Writes/s over all writers; `None`: as fast as they go.
    pub rate: Option<f64>,
    pub keys: u64,
    pub skew: Skew,
    pub readers: usize,
    /// Reads/s over all readers; `None`: as fast as they go.
    pub read_rate: Option<f64>,
    pub seed: u64,
    pub fault: Fault,
    pub fault_duration: Duration,
    /// With `redis-data-loss`: a shell command that kills and restarts the Redis process
    /// at `redis.url` (run instead of deleting the variant's keys); the bench waits for
    /// it to exit and for Redis to answer again.
    pub fault_command: Option<String>,
    pub drain_timeout: Duration,
    /// The database the bench table lives in (created if missing; the table is dropped
    /// at the end).
    pub database: String,
    /// Redis keys are `{key_prefix}:{variant}:item:{id}`; RabbitMQ names
    /// `cachesync.bench.{variant}`.
    pub key_prefix: String,
    /// Print a live progress line on stderr.
    pub progress: bool,
    /// How many times each variant runs, interleaved (A B C A B C …); figures are the
    /// median over the rounds, with their range.
    pub rounds: usize,
}

impl Options {
    /// Checks the numbers before anything connects; lists every problem.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.variants.is_empty() {
            problems.push("--strategies: name at least one strategy".to_owned());
        }
        if self.duration.is_zero() {
            problems.push("--duration: must be more than 0".to_owned());
        }
        if self.rounds == 0 {
            problems.push("--rounds: must be at least 1".to_owned());
        }
        if self.writers == 0 {
            problems.push("--writers: must be at least 1".to_owned());
        }
        if self.keys == 0 || self.keys > 10_000_000 {
            problems.push("--keys: must be between 1 and 10000000".to_owned());
        }
        if self.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
            problems.push("--rate: must be more than 0, or `max`".to_owned());
        }
        if self.read_rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
            problems.push("--read-rate: must be more than 0, or `max`".to_owned());
        }
        // Data loss is a moment: its --fault-duration does not apply.
        if !matches!(self.fault, Fault::None | Fault::RedisDataLoss)
            && self.fault_duration >= self.duration.mul_f64(2.0 / 3.0)
        {
            problems.push(
                "--fault-duration: the fault starts at a third of --duration and must end before it"
                    .to_owned(),
            );
        }
        for name in [&self.database] {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                problems.push(format!(
                    "--database: {name:?} must be letters, digits and underscores"
                ));
            }
        }
        if self.fault_command.is_some() && self.fault != Fault::RedisDataLoss {
            problems.push("--fault-command: only --fault redis-data-loss runs it".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems))
        }
    }

    pub fn fault_at(&self) -> Option<Duration> {
        (self.fault != Fault::None).then(|| self.duration / 3)
    }
}

/// `cachesync bench --scenario strategies`: serves metrics, runs every variant, prints the
/// comparison and writes the files asked for.
pub async fn run_and_report(config: &Config, options: &Options, files: &ReportFiles) -> Result<()> {
    options.validate()?;
    if let Some(path) = &files.plot {
        plot::check_writable(path)?;
    }
    crate::metrics::install(config.metrics_listen)?;
    describe_metrics();
    eprintln!(
        "cachesync bench: {} for {:?} each, {} round{}; metrics on http://{}/metrics",
        options
            .variants
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(", "),
        options.duration,
        options.rounds,
        if options.rounds == 1 { "" } else { "s" },
        config.metrics_listen
    );
    let report = run(config, options).await?;
    files.print_and_write(&report.markdown(), &report.json())?;
    if let Some(path) = &files.plot {
        plot::write_svg(&report, path)?;
    }
    Ok(())
}

/// Runs every variant of `options` against the services named in `config` (its tables
/// are not used) and returns the report. Metrics go to whatever recorder is installed.
pub async fn run(config: &Config, options: &Options) -> Result<BenchReport> {
    options.validate()?;
    if options.variants.iter().any(|v| v.kind.needs_broker()) && config.amqp.is_none() {
        return Err(Error::Config(vec![
            "amqp.url: the mq strategy is benchmarked against RabbitMQ; set it in the config or \
             leave mq out of --strategies"
                .to_owned(),
        ]));
    }
    let picker = KeyPicker::new(&options.skew, options.keys);
    let started_unix_s = unix_micros(SystemTime::now()) / 1_000_000;
    let load_average_before = setup::load_average();
    let pool = crate::mysql::pool(&config.mysql_url)?;
    let daemon_runtime = cost::daemon_runtime()?;
    let host = harness::Host {
        daemon: daemon_runtime.handle().clone(),
        pids: cost::Pids::find(config, &pool).await,
    };
    // Per variant, its rounds.
    let mut rounds: Vec<Vec<VariantReport>> = vec![Vec::new(); options.variants.len()];
    for variant in &options.variants {
        register_series(variant, &options.database);
    }
    let outcome = async {
        for round in 1..=options.rounds {
            for (variant, runs) in options.variants.iter().zip(&mut rounds) {
                info!(strategy = %variant, round, "bench: preparing");
                runs.push(
                    harness::run_variant(config, options, *variant, &pool, &picker, &host).await?,
                );
            }
        }
        Ok::<(), Error>(())
    }
    .await;
    // Leave nothing behind, whatever happened.
    setup::drop_bench_tables(&pool, &options.database).await;
    pool.disconnect().await.ok();
    // Every daemon has stopped; what is left of their tasks goes with the runtime (which
    // must not be dropped by blocking inside this one).
    daemon_runtime.shutdown_background();
    outcome?;
    let results = rounds.into_iter().map(VariantReport::of_rounds).collect();
    Ok(BenchReport {
        cachesync_version: env!("CARGO_PKG_VERSION"),
        started_unix_s,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average_before,
        load_average_after: setup::load_average(),
        workload: report::Workload {
            duration_s: options.duration.as_secs_f64(),
            writers: options.writers,
            rate: options.rate,
            keys: options.keys,
            skew: options.skew.to_string(),
            hottest_key_share: picker.hottest_share(),
            readers: options.readers,
            read_rate: options.read_rate,
            seed: options.seed,
            fault: options.fault.to_string(),
            fault_at_s: options.fault_at().map(|d| d.as_secs_f64()),
            fault_duration_s: options.fault_duration.as_secs_f64(),
            drain_timeout_s: options.drain_timeout.as_secs_f64(),
            rounds: options.rounds,
        },
        results,
    })
}

/// The bench's own series, present from the start.
fn register_series(variant: &Variant, database: &str) {
    let name = variant.name();
    metrics::counter!(READS, "strategy" => name.clone()).increment(0);
    metrics::counter!(STALE_READS, "strategy" => name.clone()).increment(0);
    metrics::gauge!(m::DIVERGENT_KEYS, "strategy" => name, "table" => format!("{database}.items"))
        .set(0.0);
}
