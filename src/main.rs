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
        }
    })
}

/// Prints each line of `message` as an error and returns the failure exit code.
fn fail(message: &str) -> ExitCode {
    for line in message.lines() {
        eprintln!("error: {line}");
    }
    ExitCode::FAILURE
}
