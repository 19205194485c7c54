//! The `cachesync` command: parses arguments, sets up logging, and calls the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use cachesync::config::Config;
use cachesync::doctor::{self, Severity};

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
    /// Load every configured table into Redis from one consistent read and record its
    /// binlog position as the checkpoint, so the next `run` of the binlog strategy tails
    /// from there. Use it for a first start (`run` does it by itself when there is no
    /// checkpoint), after the server purged the binlog, or to rebuild the cache.
    Snapshot {
        #[command(flatten)]
        config: ConfigArg,
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
    /// The validated config, or the exit code after printing every problem.
    fn load(&self) -> Result<Config, ExitCode> {
        Config::load(&self.config).map_err(|e| fail(&e.to_string()))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
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
    runtime.block_on(async {
        match cli.command {
            Command::Run { config } => {
                let config = match config.load() {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                match cachesync::daemon::run(config, CancellationToken::new()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(&e.to_string()),
                }
            }
            Command::Snapshot { config } => {
                let config = match config.load() {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                match cachesync::daemon::snapshot(&config).await {
                    Ok(position) => {
                        println!(
                            "snapshot done at {position}; `cachesync run` continues from there"
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e.to_string()),
                }
            }
            Command::Doctor { config: arg } => {
                let config = match arg.load() {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let path = &arg.config;
                println!(
                    "cachesync doctor: strategy {} from {}",
                    config.strategy,
                    path.display()
                );
                let report = doctor::check(&config).await;
                for finding in &report.findings {
                    println!("  {finding}");
                }
                match report.problems() {
                    0 => {
                        let notes = report
                            .findings
                            .iter()
                            .filter(|f| f.severity == Severity::Note)
                            .count();
                        println!("all good for strategy {} ({notes} notes)", config.strategy);
                        ExitCode::SUCCESS
                    }
                    n => {
                        println!("{n} problem(s) stop strategy {}", config.strategy);
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Verify {
                config,
                repair,
                batch,
                examples,
            } => {
                let config = match config.load() {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let options = cachesync::verify::Options {
                    batch: batch as usize,
                    examples,
                    repair,
                    strategy: config.strategy,
                    skip_keys: vec![config.binlog.checkpoint_key.clone()],
                };
                match verify(&config, &options).await {
                    Ok(report) => print_verify(&report),
                    Err(e) => fail(&e.to_string()),
                }
            }
        }
    })
}

/// Connects and runs `verify` over the configured tables.
async fn verify(
    config: &Config,
    options: &cachesync::verify::Options,
) -> cachesync::Result<cachesync::verify::Report> {
    let services = cachesync::daemon::Services::connect(config).await?;
    let report =
        cachesync::verify::verify(&services.tables, &services.pool, &services.applier, options)
            .await;
    services.pool.disconnect().await.ok();
    report
}

/// Prints the verify report; exit 0 when Redis is (now) in sync.
fn print_verify(report: &cachesync::verify::Report) -> ExitCode {
    let width = report
        .tables
        .iter()
        .map(|t| t.table.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    println!(
        "{:<width$}  {:>10}  {:>8}  {:>8}  {:>9}",
        "table", "rows", "missing", "extra", "different"
    );
    for t in &report.tables {
        println!(
            "{:<width$}  {:>10}  {:>8}  {:>8}  {:>9}",
            t.table, t.rows, t.missing.count, t.extra.count, t.different.count
        );
    }
    for t in &report.tables {
        for (kind, divergence) in [
            ("missing", &t.missing),
            ("extra", &t.extra),
            ("different", &t.different),
        ] {
            for key in &divergence.examples {
                println!("  {} {kind}: {key}", t.table);
            }
        }
        if let Some(remaining) = t.remaining {
            println!(
                "  {}: repaired {} keys, {remaining} still divergent",
                t.table, t.repaired
            );
        }
    }
    match report.divergent() {
        0 => {
            println!("in sync");
            ExitCode::SUCCESS
        }
        n => {
            println!("{n} divergent keys");
            ExitCode::FAILURE
        }
    }
}

/// Prints each line of `message` as an error and returns the failure exit code.
fn fail(message: &str) -> ExitCode {
    for line in message.lines() {
        eprintln!("error: {line}");
    }
    ExitCode::FAILURE
}
