//! The `cachesync` command: parses arguments, sets up logging, and calls the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use cachesync::bench::storm::ReadStormOptions;
use cachesync::config::Config;

/// Keep a Redis cache in sync with MySQL/MariaDB — by dual-write, RabbitMQ or binlog
/// replay — and measure which strategy to use.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sync daemon with the configured strategy until SIGINT/SIGTERM.
    ///
    /// Checks the configured tables against MySQL and connects to Redis first; every
    /// problem found is printed, one per line. Metrics are served on `metrics.listen`
    /// under /metrics. The first signal drains (up to 30 s), a second one quits at once.
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// (Re)load tables into Redis.
    ///
    /// When a daemon of this config answers on its API ([api]), it snapshots the tables
    /// online while it keeps syncing (every table without --table), and the progress is
    /// printed until they are done. Otherwise, with --table, the same online snapshot runs
    /// here. Otherwise, for the binlog strategy: load every table from one consistent
    /// read and record its binlog position as the checkpoint, so the next `run` tails from
    /// there — after the server purged the binlog, or to rebuild the cache of a stopped
    /// daemon (other strategies: the online snapshot of every table).
    Snapshot {
        #[command(flatten)]
        config: ConfigArg,
        /// A `database.table` to snapshot online (repeatable); every table when left out.
        #[arg(long = "table", value_name = "DATABASE.TABLE")]
        tables: Vec<String>,
        /// Return once the daemon has started the snapshot instead of waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Check MySQL binlog settings, grants, tables, Redis and RabbitMQ, and print what to
    /// change. Exits non-zero when the configured strategy cannot work.
    Doctor {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Compare every configured table in MySQL with Redis (canonical encoding, version
    /// bookkeeping left out) and print the missing, extra and different keys. Exits 1 when
    /// they differ. `--repair` rewrites the divergent keys from MySQL, never over a newer
    /// version, and exits 0 when that fixed everything.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// Rewrite missing and different keys from MySQL and delete extra ones.
        #[arg(long)]
        repair: bool,
        /// Rows per MySQL batch and Redis pipeline.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        batch: u64,
        /// Example keys printed per kind of divergence and table.
        #[arg(long, default_value_t = 5)]
        examples: usize,
    },
    /// Measure: the sync strategies side by side (`--scenario strategies`, the default),
    /// the read path's guards against the classic cache failures (`--scenario read-storm`),
    /// or what reading the binlog costs the database's own writers (`--scenario overhead`).
    ///
    /// strategies: runs the strategies on one seeded workload and prints a comparison:
    /// write latency, propagation (commit → Redis, seen from outside), stale reads,
    /// divergence after the drain, what a fault did, and the CPU µs per change of
    /// cachesync (its own threads), Redis, MySQL and RabbitMQ (local servers, from /proc). Uses the services in the config
    /// (mysql.url, redis.url, amqp.url; its [[tables]] are not used): creates
    /// `DATABASE.items` with KEYS rows, and for each strategy in turn loads Redis, starts the
    /// strategy, runs WRITERS writers at RATE and READERS readers for DURATION, drains, and
    /// compares Redis with MySQL. Metrics are served on metrics.listen while it runs. Turns
    /// on Redis keyspace notifications (K$g) to observe writes. Everything it creates is
    /// removed at the end. Logs only errors and its own progress (the strategies retry
    /// loudly under a fault; RUST_LOG=warn shows that). Defaults take about 100 s.
    ///
    /// read-storm: reads rows through the cache-aside read path (as `GET` in the API does,
    /// without HTTP) and reproduces each failure with its guards off and then on —
    /// breakdown: STORM_HOT_REQUESTS concurrent reads of one hot key that has just expired
    /// (guards: single-flight + Redis mutex); penetration: STORM_MISSING_REQUESTS reads of
    /// STORM_MISSING_KEYS ids that do not exist (negative caching, Bloom filter);
    /// avalanche: STORM_EXPIRY_KEYS keys cached with one TTL and read once each right after
    /// it ends (TTL jitter). It prints, per case and guard setting, the MySQL queries the
    /// reads caused, p50/p99/max read latency and errors. Queries are counted by MariaDB
    /// itself (information_schema.USER_STATISTICS, `SET GLOBAL userstat = 1`) for a MySQL
    /// user `cachesync_storm` it re-creates, so mysql.url must be a MariaDB user allowed to
    /// CREATE USER, GRANT and SET GLOBAL. Uses the config's mysql.url and redis.url only;
    /// re-creates `DATABASE.items` with STORM_EXPIRY_KEYS rows and writes Redis keys under
    /// `cachesync:storm:`; removes the table, the keys and the user at the end. Takes about
    /// a minute at the default sizes.
    ///
    /// overhead: a built-in OLTP write workload (sysbench is not used) — WRITERS
    /// connections each committing transactions of 4 row changes (UPDATE of an indexed
    /// column, UPDATE of a non-indexed column, DELETE + INSERT of one row) on
    /// `DATABASE.items` with KEYS rows, as fast as they go — for DURATION in each of three
    /// phases, interleaved over ROUNDS: alone (nothing reads the binlog), the raw binlog
    /// reader as the floor (`mariadb-binlog --read-from-remote-server --raw --stop-never`,
    /// or mysqlbinlog; `n/a` when neither is on PATH), and cachesync's binlog strategy
    /// syncing the table into redis.url. Prints per phase transactions/s, row changes/s,
    /// the ratio to alone, transaction p50/p99 latency, aborted transactions and the CPU
    /// µs per row change of cachesync, Redis, MySQL and the raw reader; medians over the
    /// rounds with their ranges. Needs a row binlog and a user allowed to replicate.
    /// dual-write, mq and write-back are not measured: their writes go through cachesync.
    Bench(Box<BenchArgs>),
}

/// `--help` heading of the flags only `--scenario strategies` uses.
const STRATEGIES_HEADING: &str = "Strategies options (--scenario strategies)";

/// `cachesync bench` flags (boxed in [`Command`]: they outweigh every other command).
#[derive(clap::Args)]
struct BenchArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// What to measure: `strategies` (the sync strategies on one write and read workload),
    /// `read-storm` (the read path's cache failure guards, each off and on) or `overhead`
    /// (an OLTP write workload alone, beside a raw binlog reader, and beside cachesync).
    #[arg(long, value_enum, default_value_t = Scenario::Strategies)]
    scenario: Scenario,
    /// Comma-separated strategies, each with optional modifiers: dual-write,
    /// dual-write:versioned, mq, mq:outbox, mq:versioned, binlog, binlog:versioned,
    /// binlog:invalidate, write-back (its propagation is followed into MySQL).
    #[arg(long, help_heading = STRATEGIES_HEADING, value_delimiter = ',', default_value = "dual-write,mq,binlog")]
    strategies: Vec<cachesync::bench::workload::Variant>,
    /// Measured time per strategy (overhead: per phase) (30s, 500ms, 2m).
    #[arg(long, default_value = "30s", value_parser = cachesync::bench::workload::parse_duration)]
    duration: Duration,
    /// Run every strategy ROUNDS times, interleaved (A B C A B C …), so neither the order
    /// nor a noisy moment of the machine favours one. Each figure is then the median of
    /// the rounds, with the range (lowest–highest round) in a second table and in the
    /// JSON's `range`; counts of errors, losses and divergence are the worst round's.
    /// overhead: the three phases likewise.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Concurrent writer tasks (overhead: MySQL connections running transactions)
    /// [default: 16; 8 for overhead].
    #[arg(long)]
    writers: Option<usize>,
    /// Writes per second over all writers, or `max`.
    #[arg(long, help_heading = STRATEGIES_HEADING, default_value = "1000")]
    rate: cachesync::bench::workload::Rate,
    /// Rows in the bench table (ids 1..=KEYS).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// How writers and readers pick keys: `uniform` or `zipf:S` (key 1 hottest).
    #[arg(long, help_heading = STRATEGIES_HEADING, default_value = "zipf:0.99")]
    hot_key_skew: cachesync::bench::workload::Skew,
    /// Concurrent reader tasks reading rows from Redis (0: none).
    #[arg(long, help_heading = STRATEGIES_HEADING, default_value_t = 4)]
    readers: usize,
    /// Reads per second over all readers, or `max`.
    #[arg(long, help_heading = STRATEGIES_HEADING, default_value = "2000")]
    read_rate: cachesync::bench::workload::Rate,
    /// Seed of the key sequence; the same seed gives every strategy the same writes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// A fault at a third of the run: none, redis-restart (Redis connections cut and
    /// refused), daemon-crash (strategy killed without drain, restarted), broker-drop
    /// (RabbitMQ connections cut and refused; mq only), redis-data-loss (every Redis key of
    /// the strategy's run deleted at once, as a restart without persistence leaves them;
    /// or --fault-command restarts Redis).
    #[arg(long, help_heading = STRATEGIES_HEADING, default_value = "none")]
    fault: cachesync::bench::faults::Fault,
    /// With --fault redis-data-loss: a shell command that kills and restarts the Redis
    /// process at redis.url, run instead of deleting the keys (e.g. to measure what an
    /// append-only file keeps); the bench waits until Redis answers again.
    #[arg(long, help_heading = STRATEGIES_HEADING)]
    fault_command: Option<String>,
    /// How long the fault lasts.
    #[arg(long, help_heading = STRATEGIES_HEADING, default_value = "5s", value_parser = cachesync::bench::workload::parse_duration)]
    fault_duration: Duration,
    /// After the writers stop, how long to wait for Redis to catch up.
    #[arg(long, help_heading = STRATEGIES_HEADING, default_value = "30s", value_parser = cachesync::bench::workload::parse_duration)]
    drain_timeout: Duration,
    /// The MySQL database of the scenario's table (created if missing) [default:
    /// cachesync_bench; cachesync_storm for read-storm].
    #[arg(long)]
    database: Option<String>,
    /// Redis key prefix of the bench keys.
    #[arg(long, help_heading = STRATEGIES_HEADING, default_value = "cachesync:bench")]
    key_prefix: String,
    /// Also write the table printed on stdout as Markdown to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the full report (every figure, per strategy or storm case) as JSON to
    /// this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// strategies only: also draw the run as an SVG (FILE must end in .svg) — the
    /// write-latency and propagation-latency CDFs per strategy (write-back's propagation
    /// is cache → MySQL) and acknowledged writes/s over time; with --rounds, the median
    /// round's. The path is checked before the bench starts.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// No live progress line (strategies, overhead), no per-case lines (read-storm).
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    storm: StormArgs,
}

/// Which `cachesync bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// The sync strategies side by side on one seeded workload.
    Strategies,
    /// The read path's guards against cache breakdown, penetration and avalanche.
    ReadStorm,
    /// An OLTP write workload alone, beside a raw binlog reader, and beside cachesync.
    Overhead,
}

/// `cachesync bench --scenario read-storm` sizes; the defaults are issue #7's.
#[derive(clap::Args)]
#[command(next_help_heading = "Read-storm options (--scenario read-storm)")]
struct StormArgs {
    /// Breakdown: concurrent reads of the one hot key, all started right after it expired.
    #[arg(long, default_value_t = 1_000)]
    storm_hot_requests: usize,
    /// Penetration: reads of ids that do not exist.
    #[arg(long, default_value_t = 20_000)]
    storm_missing_requests: usize,
    /// Penetration: distinct missing ids those reads cycle through.
    #[arg(long, default_value_t = 2_000)]
    storm_missing_keys: usize,
    /// Avalanche: rows in the table, all cached with one TTL and read once each after it.
    #[arg(long, default_value_t = 50_000)]
    storm_expiry_keys: usize,
    /// Reads in flight at once in the penetration and avalanche cases.
    #[arg(long, default_value_t = 256)]
    storm_concurrency: usize,
    /// Avalanche: the TTL every key is cached with (500ms, 2s).
    #[arg(long, default_value = "2s", value_parser = cachesync::bench::workload::parse_duration)]
    storm_expiry_ttl: Duration,
    /// Avalanche with the guard on: up to this much added to each key's TTL at random.
    #[arg(long, default_value = "8s", value_parser = cachesync::bench::workload::parse_duration)]
    storm_expiry_jitter: Duration,
}

impl StormArgs {
    fn options(&self, database: Option<String>) -> ReadStormOptions {
        ReadStormOptions {
            database: database.unwrap_or_else(|| ReadStormOptions::default().database),
            hot_requests: self.storm_hot_requests,
            missing_requests: self.storm_missing_requests,
            missing_keys: self.storm_missing_keys,
            expiry_keys: self.storm_expiry_keys,
            concurrency: self.storm_concurrency,
            expiry_ttl: self.storm_expiry_ttl,
            expiry_jitter: self.storm_expiry_jitter,
        }
    }
}

/// `--config FILE`, shared by every command.
#[derive(clap::Args)]
struct ConfigArg {
    /// The TOML config file; every key can be overridden by CACHESYNC__SECTION__KEY.
    #[arg(
        long,
        short,
        default_value = "config/cachesync.toml",
        env = "CACHESYNC_CONFIG"
    )]
    config: PathBuf,
}

impl ConfigArg {
    /// The validated config; every problem when it is not.
    fn load(&self) -> cachesync::Result<Config> {
        Config::load(&self.config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| log_filter(&cli.command).into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(cli.command.run()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => fail(&e.to_string()),
    }
}

/// What is logged by default (`RUST_LOG` overrides it).
fn log_filter(command: &Command) -> &'static str {
    match command {
        // The benchmark prints its own progress; the strategies' info lines would bury it.
        Command::Bench(args) if args.scenario == Scenario::ReadStorm => {
            if args.quiet {
                "warn"
            } else {
                "warn,cachesync::bench::storm=info"
            }
        }
        // Faults make the strategies log every retry (hundreds of lines a second, and
        // lapin's connection errors); the report counts what they did. RUST_LOG=warn shows
        // them.
        Command::Bench(_) => "error,lapin=off,cachesync::bench=info",
        _ => "info",
    }
}

impl Command {
    /// Runs the command; `Ok(false)` when it ran and the answer is "no" (doctor found a
    /// problem, verify found divergent keys).
    async fn run(self) -> cachesync::Result<bool> {
        match self {
            Command::Run { config } => {
                cachesync::cmd::run::run(config.load()?, CancellationToken::new()).await?;
                Ok(true)
            }
            Command::Snapshot {
                config,
                tables,
                no_wait,
            } => {
                let done =
                    cachesync::cmd::snapshot::snapshot(&config.load()?, &tables, !no_wait).await?;
                println!("{done}");
                Ok(true)
            }
            Command::Doctor { config } => {
                let path = config.config.clone();
                Ok(cachesync::cmd::doctor::run(&config.load()?, &path).await)
            }
            Command::Verify {
                config,
                repair,
                batch,
                examples,
            } => {
                let config = config.load()?;
                let options = cachesync::cmd::verify::Options {
                    batch: batch as usize,
                    examples,
                    repair,
                    strategy: config.strategy,
                    skip_keys: vec![config.deployment_keys().checkpoint],
                    checkpoint_key: config
                        .strategy
                        .tails_binlog()
                        .then(|| config.deployment_keys().checkpoint),
                };
                cachesync::cmd::verify::run(&config, &options).await
            }
            Command::Bench(args) => args.run().await.map(|()| true),
        }
    }
}

impl BenchArgs {
    async fn run(self) -> cachesync::Result<()> {
        let BenchArgs {
            config,
            scenario,
            strategies,
            duration,
            rounds,
            writers,
            rate,
            keys,
            hot_key_skew,
            readers,
            read_rate,
            seed,
            fault,
            fault_duration,
            fault_command,
            drain_timeout,
            database,
            key_prefix,
            out,
            json,
            plot,
            quiet,
            storm,
        } = self;
        // Before the config: a flag the scenario ignores would otherwise cost a run.
        if plot.is_some() && scenario != Scenario::Strategies {
            return Err(cachesync::Error::Config(vec![format!(
                "--plot: only --scenario strategies draws a plot, not --scenario {}",
                clap::ValueEnum::to_possible_value(&scenario)
                    .expect("a named scenario")
                    .get_name()
            )]));
        }
        let config = config.load()?;
        let files = cachesync::bench::report::ReportFiles {
            markdown: out,
            json,
            plot,
        };
        if scenario == Scenario::ReadStorm {
            let options = storm.options(database);
            return cachesync::bench::storm::run_and_report(&config, &options, &files).await;
        }
        let options = cachesync::bench::Options {
            variants: strategies,
            duration,
            writers: writers.unwrap_or(if scenario == Scenario::Overhead {
                8
            } else {
                16
            }),
            rate: rate.0,
            keys,
            skew: hot_key_skew,
            readers,
            read_rate: read_rate.0,
            seed,
            fault,
            fault_duration,
            fault_command,
            drain_timeout,
            database: database.unwrap_or_else(|| "cachesync_bench".to_owned()),
            key_prefix,
            progress: !quiet,
            rounds,
        };
        if scenario == Scenario::Overhead {
            return cachesync::bench::overhead::run_and_report(&config, &options, &files).await;
        }
        cachesync::bench::run_and_report(&config, &options, &files).await
    }
}

/// Prints each line of `message` as an error and returns the failure exit code.
fn fail(message: &str) -> ExitCode {
    for line in message.lines() {
        eprintln!("error: {line}");
    }
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn bench_args(args: &[&str]) -> BenchArgs {
        let cli = Cli::try_parse_from([&["cachesync", "bench"], args].concat())
            .unwrap_or_else(|e| panic!("{e}"));
        match cli.command {
            Command::Bench(args) => *args,
            _ => unreachable!("parsed a bench command"),
        }
    }

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_help_explains_both_scenarios_and_the_storm_flags() {
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("bench")
            .unwrap()
            .render_long_help()
            .to_string();
        for needle in [
            "--scenario <SCENARIO>",
            "read-storm",
            "strategies",
            "Read-storm options (--scenario read-storm)",
            "--storm-hot-requests",
            "--storm-missing-requests",
            "--storm-missing-keys",
            "--storm-expiry-keys",
            "--storm-concurrency",
            "--storm-expiry-ttl",
            "--storm-expiry-jitter",
            "USER_STATISTICS",
            "--rounds <ROUNDS>",
            "interleaved",
            "overhead",
            "mariadb-binlog",
        ] {
            assert!(help.contains(needle), "{needle:?} not in\n{help}");
        }
    }

    #[test]
    fn bench_runs_the_strategies_unless_told_otherwise() {
        let args = bench_args(&[]);
        assert_eq!(args.scenario, Scenario::Strategies);
        assert_eq!(args.database, None);
    }

    #[test]
    fn read_storm_defaults_are_the_scenario_defaults() {
        let args = bench_args(&["--scenario", "read-storm"]);
        assert_eq!(args.scenario, Scenario::ReadStorm);
        let options = args.storm.options(args.database);
        assert_eq!(
            serde_json::to_value(&options).unwrap(),
            serde_json::to_value(ReadStormOptions::default()).unwrap()
        );
        options.validate().unwrap();
    }

    #[test]
    fn read_storm_flags_set_the_options() {
        let args = bench_args(&[
            "--scenario=read-storm",
            "--database=storm_x",
            "--storm-hot-requests=10",
            "--storm-missing-requests=20",
            "--storm-missing-keys=5",
            "--storm-expiry-keys=100",
            "--storm-concurrency=4",
            "--storm-expiry-ttl=1s",
            "--storm-expiry-jitter=500ms",
        ]);
        let o = args.storm.options(args.database);
        assert_eq!(o.database, "storm_x");
        assert_eq!(
            (
                o.hot_requests,
                o.missing_requests,
                o.missing_keys,
                o.expiry_keys,
                o.concurrency
            ),
            (10, 20, 5, 100, 4)
        );
        assert_eq!(o.expiry_ttl, Duration::from_secs(1));
        assert_eq!(o.expiry_jitter, Duration::from_millis(500));
        o.validate().unwrap();

        let args = bench_args(&[
            "--scenario=read-storm",
            "--database=bad-name",
            "--storm-hot-requests=0",
            "--storm-expiry-ttl=500ms",
        ]);
        let problems = args.storm.options(args.database).validate().unwrap_err();
        assert_eq!(
            problems.to_string().lines().collect::<Vec<_>>(),
            [
                "--storm-hot-requests: must be at least 1",
                "--storm-expiry-ttl: must be at least 1s, got 500ms",
                "--database: \"bad-name\" must be letters, digits and underscores",
            ]
        );
    }
}
