//! The overhead scenario (`cachesync bench --scenario overhead`): what attaching to the
//! binlog costs the database's own writers.
//!
//! An OLTP write workload — in the spirit of sysbench's `oltp_write_only`, built in so
//! the bench needs nothing else installed (sysbench is not used even when present: its
//! figures would come from another table and another client) — runs in three phases of
//! `duration` each:
//!
//! | phase | what reads the binlog |
//! |---|---|
//! | alone | nothing: the database on its own |
//! | raw binlog reader (floor) | `mariadb-binlog --read-from-remote-server --raw --stop-never` (or `mysqlbinlog`), writing the stream to a scratch directory: what merely streaming the binlog costs |
//! | cachesync binlog | the binlog strategy started as the daemon starts it, syncing the table into Redis |
//!
//! With `rounds` above one the phases run interleaved (A B C A B C …) and each figure is
//! the median over the rounds, with its range. The strategies whose writes go through
//! cachesync (dual-write, mq, write-back) are not measured here: this workload writes
//! MySQL directly, as an application does beside a binlog reader.
//!
//! Each of `writers` connections runs transactions of [`CHANGES_PER_TRANSACTION`] row
//! changes on the bench table (`items`, `keys` rows, plus an index on `updated`) as fast
//! as they commit: an UPDATE of the indexed column, an UPDATE of a non-indexed column, and
//! a DELETE and re-INSERT of one row, each by primary key, the ids drawn uniformly and
//! taken in ascending order so that transactions lock rows in one order. A transaction
//! that fails (a deadlock on the secondary index) is rolled back, counted as aborted and
//! not retried. CPU is counted as in [`super::cost`], per row change committed, plus the
//! raw reader's process (`/proc/<pid>/stat`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use mysql_async::prelude::Queryable;
use mysql_async::{Pool, TxOpts};
use rand::Rng;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::Options;
use super::cost::{self, CpuSample, CpuUsed, Pids};
use super::faults::Fault;
use super::harness::{ProgressOut, STOP_LIMIT, start_daemon};
use super::report::{Quantiles, ReportFiles, cpu, median, micros, ms, range_text, whole};
use super::setup::{self, Names};
use super::workload::{Variant, task_rng};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::change::unix_micros;
use crate::model::table::quote_ident;
use crate::strategy::binlog::server::{binary_log_status, binlog_settings};

/// Row changes one transaction commits: two UPDATEs, a DELETE and an INSERT.
pub const CHANGES_PER_TRANSACTION: u64 = 4;

/// The binlog readers tried for the floor phase, in order.
const READERS: &[&str] = &["mariadb-binlog", "mysqlbinlog"];

/// How long the raw reader gets to connect before the phase starts: one that has exited
/// by then (bad credentials, an unknown option) makes the phase `n/a`.
const READER_SETTLE: Duration = Duration::from_millis(500);

/// One phase of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Alone,
    RawReader,
    Cachesync,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Alone, Phase::RawReader, Phase::Cachesync];

    pub fn title(self) -> &'static str {
        match self {
            Phase::Alone => "alone",
            Phase::RawReader => "raw binlog reader (floor)",
            Phase::Cachesync => "cachesync binlog",
        }
    }
}

/// CPU µs per committed row change of each process; `None` (JSON `null`, `n/a`): not
/// running in this phase, or not measured (a remote service).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct CpuPerRowChange {
    pub cachesync: Option<f64>,
    pub redis: Option<f64>,
    pub mysql: Option<f64>,
    /// The raw binlog reader's process.
    pub reader: Option<f64>,
}

/// One phase: one round's figures, or the medians of several.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub phase: Phase,
    pub title: &'static str,
    /// Why the phase did not run (`n/a: mariadb-binlog not found`); its figures are then
    /// zero.
    pub unavailable: Option<String>,
    pub rounds: usize,
    /// Committed transactions (summed over the rounds).
    pub transactions: u64,
    /// Rolled back transactions (summed over the rounds).
    pub aborted: u64,
    pub first_error: Option<String>,
    pub transactions_per_s: f64,
    pub row_changes_per_s: f64,
    /// `transactions_per_s` over the alone phase's (both medians); `None` when either is
    /// missing.
    pub ratio_to_alone: Option<f64>,
    pub txn_p50_ms: f64,
    pub txn_p99_ms: f64,
    pub cpu_us_per_row_change: CpuPerRowChange,
    /// Per figure of [`FIGURES`]: the lowest and highest round.
    pub range: std::collections::BTreeMap<&'static str, [f64; 2]>,
}

impl PhaseReport {
    fn unavailable(phase: Phase, reason: String) -> PhaseReport {
        PhaseReport {
            phase,
            title: phase.title(),
            unavailable: Some(reason),
            rounds: 0,
            transactions: 0,
            aborted: 0,
            first_error: None,
            transactions_per_s: 0.0,
            row_changes_per_s: 0.0,
            ratio_to_alone: None,
            txn_p50_ms: 0.0,
            txn_p99_ms: 0.0,
            cpu_us_per_row_change: CpuPerRowChange::default(),
            range: Default::default(),
        }
    }

    /// A phase's rounds summed up: each figure the median, with its range; counts summed.
    fn of_rounds(phase: Phase, rounds: Vec<PhaseReport>) -> PhaseReport {
        let ran: Vec<PhaseReport> = rounds
            .iter()
            .filter(|r| r.unavailable.is_none())
            .cloned()
            .collect();
        let Some(first) = ran.first() else {
            let reason = rounds.into_iter().find_map(|r| r.unavailable);
            return PhaseReport::unavailable(phase, reason.unwrap_or_default());
        };
        let mut report = first.clone();
        report.rounds = ran.len();
        report.transactions = ran.iter().map(|r| r.transactions).sum();
        report.aborted = ran.iter().map(|r| r.aborted).sum();
        report.first_error = ran.iter().find_map(|r| r.first_error.clone());
        for (name, get, set) in FIGURES {
            let mut values: Vec<f64> = ran.iter().filter_map(get).collect();
            if let Some(m) = median(&mut values) {
                report
                    .range
                    .insert(name, [values[0], values[values.len() - 1]]);
                set(&mut report, m);
            }
        }
        report
    }
}

type Figure = (
    &'static str,
    fn(&PhaseReport) -> Option<f64>,
    fn(&mut PhaseReport, f64),
);

/// The figures reported as medians over the rounds.
const FIGURES: &[Figure] = &[
    (
        "transactions_per_s",
        |r| Some(r.transactions_per_s),
        |r, v| r.transactions_per_s = v,
    ),
    (
        "row_changes_per_s",
        |r| Some(r.row_changes_per_s),
        |r, v| r.row_changes_per_s = v,
    ),
    (
        "txn_p50_ms",
        |r| Some(r.txn_p50_ms),
        |r, v| r.txn_p50_ms = v,
    ),
    (
        "txn_p99_ms",
        |r| Some(r.txn_p99_ms),
        |r, v| r.txn_p99_ms = v,
    ),
    (
        "cpu_us_per_row_change.cachesync",
        |r| r.cpu_us_per_row_change.cachesync,
        |r, v| r.cpu_us_per_row_change.cachesync = Some(v),
    ),
    (
        "cpu_us_per_row_change.redis",
        |r| r.cpu_us_per_row_change.redis,
        |r, v| r.cpu_us_per_row_change.redis = Some(v),
    ),
    (
        "cpu_us_per_row_change.mysql",
        |r| r.cpu_us_per_row_change.mysql,
        |r, v| r.cpu_us_per_row_change.mysql = Some(v),
    ),
    (
        "cpu_us_per_row_change.reader",
        |r| r.cpu_us_per_row_change.reader,
        |r, v| r.cpu_us_per_row_change.reader = Some(v),
    ),
];

/// The workload every phase ran.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadWorkload {
    pub duration_s: f64,
    pub writers: usize,
    pub keys: u64,
    pub rounds: usize,
    pub seed: u64,
    pub changes_per_transaction: u64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadReport {
    pub cachesync_version: &'static str,
    pub started_unix_s: u64,
    pub cores: usize,
    pub load_average_before: String,
    pub load_average_after: String,
    /// `SELECT VERSION()`.
    pub mysql_version: String,
    /// The raw reader's program, when one was found.
    pub reader_program: Option<String>,
    pub workload: OverheadWorkload,
    /// alone, raw reader, cachesync — in that order.
    pub phases: Vec<PhaseReport>,
}

impl OverheadReport {
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let w = &self.workload;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "### cachesync bench --scenario overhead: {} writers, {} rows, {} s per phase, {} round{}",
            w.writers,
            w.keys,
            w.duration_s,
            w.rounds,
            if w.rounds == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            out,
            "\nBuilt-in OLTP write transactions of {} row changes each (UPDATE of an indexed \
             column, UPDATE of a non-indexed column, DELETE + INSERT of one row), closed loop, \
             on {}. {}{} cores, load average {} before, {} after. dual-write, mq and write-back \
             are not measured: their writes go through cachesync, not this workload.\n",
            w.changes_per_transaction,
            self.mysql_version,
            if w.rounds > 1 {
                "Phases interleaved; each figure the median round's (ranges below). "
            } else {
                ""
            },
            self.cores,
            self.load_average_before,
            self.load_average_after,
        );
        let _ = writeln!(
            out,
            "| phase | txn/s | row changes/s | vs alone | txn p50 / p99 ms | aborted | CPU µs/row change cachesync / Redis / MySQL / reader |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for p in &self.phases {
            if let Some(reason) = &p.unavailable {
                let _ = writeln!(out, "| {} | {reason} | | | | | |", p.title);
                continue;
            }
            let c = &p.cpu_us_per_row_change;
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {} | {} / {} | {} | {} / {} / {} / {} |",
                p.title,
                p.transactions_per_s,
                p.row_changes_per_s,
                p.ratio_to_alone
                    .map_or("n/a".to_owned(), |r| format!("{r:.2}×")),
                ms(p.txn_p50_ms),
                ms(p.txn_p99_ms),
                p.aborted,
                micros(c.cachesync),
                micros(c.redis),
                micros(c.mysql),
                micros(c.reader),
            );
        }
        if w.rounds > 1 {
            let _ = writeln!(
                out,
                "\nRange over the rounds (lowest–highest):\n\n| phase | txn/s | txn p99 ms | CPU µs/row change cachesync / MySQL / reader |\n|---|---:|---:|---:|"
            );
            for p in self.phases.iter().filter(|p| p.unavailable.is_none()) {
                let range = |name: &str, show: fn(f64) -> String| range_text(&p.range, name, show);
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} / {} / {} |",
                    p.title,
                    range("transactions_per_s", whole),
                    range("txn_p99_ms", ms),
                    range("cpu_us_per_row_change.cachesync", cpu),
                    range("cpu_us_per_row_change.mysql", cpu),
                    range("cpu_us_per_row_change.reader", cpu),
                );
            }
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }
}

/// The binlog variant the cachesync phase runs.
fn binlog_variant() -> Variant {
    "binlog".parse().expect("binlog is a variant")
}

/// `cachesync bench --scenario overhead`: runs the phases, prints the table and writes the
/// files asked for.
pub async fn run_and_report(config: &Config, options: &Options, files: &ReportFiles) -> Result<()> {
    options.validate()?;
    crate::metrics::install(config.metrics_listen)?;
    eprintln!(
        "cachesync bench: overhead on {} — alone, raw binlog reader, cachesync binlog; {:?} each, {} round{}",
        crate::redact::redact_url(&config.mysql_url),
        options.duration,
        options.rounds,
        if options.rounds == 1 { "" } else { "s" },
    );
    let report = run(config, options).await?;
    files.print_and_write(&report.markdown(), &report.json())
}

/// Runs the three phases `options.rounds` times, interleaved. Uses `duration`,
/// `writers`, `keys`, `seed`, `database`, `key_prefix`, `progress` and `rounds` of
/// `options`; the rest is the strategies scenario's.
pub async fn run(config: &Config, options: &Options) -> Result<OverheadReport> {
    let options = &Options {
        variants: vec![binlog_variant()],
        fault: Fault::None,
        fault_command: None,
        ..options.clone()
    };
    options.validate()?;
    let started_unix_s = unix_micros(SystemTime::now()) / 1_000_000;
    let load_average_before = setup::load_average();
    let pool = crate::mysql::pool(&config.mysql_url)?;
    let daemon_runtime = cost::daemon_runtime()?;
    let outcome = async {
        let mysql_version = check_server(&pool, &config.mysql_url).await?;
        prepare(&pool, options).await?;
        let reader_program = find_reader();
        let pids = Pids::find(config, &pool).await;
        let scratch = std::env::temp_dir().join(format!(
            "cachesync-overhead-{}-{}",
            std::process::id(),
            started_unix_s
        ));
        let context = Context {
            config,
            options,
            pool: &pool,
            pids,
            daemon: daemon_runtime.handle().clone(),
            reader_program: reader_program.clone(),
            scratch: scratch.clone(),
        };
        let mut rounds: Vec<Vec<PhaseReport>> = vec![Vec::new(); Phase::ALL.len()];
        let ran = async {
            for round in 1..=options.rounds {
                for (phase, runs) in Phase::ALL.into_iter().zip(&mut rounds) {
                    info!(phase = phase.title(), round, "bench overhead: running");
                    runs.push(context.phase(phase, round).await?);
                }
            }
            Ok::<(), Error>(())
        }
        .await;
        std::fs::remove_dir_all(&scratch).ok();
        ran?;
        let mut phases: Vec<PhaseReport> = Phase::ALL
            .into_iter()
            .zip(rounds)
            .map(|(phase, runs)| PhaseReport::of_rounds(phase, runs))
            .collect();
        let alone = phases[0].transactions_per_s;
        for p in &mut phases {
            p.ratio_to_alone =
                (p.unavailable.is_none() && alone > 0.0).then(|| p.transactions_per_s / alone);
        }
        Ok::<_, Error>(OverheadReport {
            cachesync_version: env!("CARGO_PKG_VERSION"),
            started_unix_s,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_average_before,
            load_average_after: setup::load_average(),
            mysql_version,
            reader_program: reader_program.map(|p| p.display().to_string()),
            workload: OverheadWorkload {
                duration_s: options.duration.as_secs_f64(),
                writers: options.writers,
                keys: options.keys,
                rounds: options.rounds,
                seed: options.seed,
                changes_per_transaction: CHANGES_PER_TRANSACTION,
            },
            phases,
        })
    }
    .await;
    setup::drop_bench_tables(&pool, &options.database).await;
    pool.disconnect().await.ok();
    daemon_runtime.shutdown_background();
    outcome
}

/// The server's version, once it is known to write a row binlog: without one neither the
/// raw reader nor cachesync has anything to read, and the scenario stops before any phase
/// with what to change.
async fn check_server(pool: &Pool, url: &str) -> Result<String> {
    let mut conn = crate::mysql::get_conn(pool, url).await?;
    let settings = binlog_settings(&mut conn).await;
    if !settings.wrong.is_empty() {
        let mut problems = vec![
            "bench --scenario overhead: the server's binlog cannot be read as the binlog strategy \
             needs it:"
                .to_owned(),
        ];
        problems.extend(settings.wrong);
        return Err(Error::Config(problems));
    }
    conn.query_first("SELECT VERSION()")
        .await
        .map_err(|e| Error::mysql("reading the server version", e))
        .map(Option::unwrap_or_default)
}

/// The bench table, plus the secondary index the workload's indexed UPDATE maintains.
async fn prepare(pool: &Pool, options: &Options) -> Result<()> {
    setup::prepare_table(pool, &options.database, options.keys).await?;
    let sql = format!(
        "ALTER TABLE {}.items ADD INDEX items_updated (updated)",
        quote_ident(&options.database)
    );
    let mut conn = pool
        .get_conn()
        .await
        .map_err(|e| Error::mysql("bench: connecting to MySQL", e))?;
    conn.query_drop(&sql)
        .await
        .map_err(|e| Error::mysql(format!("bench: preparing the table ({sql})"), e))
}

/// The first of [`READERS`] on `PATH`.
fn find_reader() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    READERS.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// What every phase shares.
struct Context<'a> {
    config: &'a Config,
    options: &'a Options,
    pool: &'a Pool,
    pids: Pids,
    daemon: tokio::runtime::Handle,
    reader_program: Option<PathBuf>,
    scratch: PathBuf,
}

impl Context<'_> {
    async fn phase(&self, phase: Phase, round: usize) -> Result<PhaseReport> {
        let label = format!("{} round {round}/{}", phase.title(), self.options.rounds);
        match phase {
            Phase::Alone => self.measure(phase, &label, None).await,
            Phase::RawReader => {
                let Some(program) = &self.reader_program else {
                    return Ok(PhaseReport::unavailable(
                        phase,
                        format!("n/a: {} not found on PATH", READERS.join(" or ")),
                    ));
                };
                let mut reader = match RawReader::start(program, self).await? {
                    Ok(reader) => reader,
                    Err(reason) => return Ok(PhaseReport::unavailable(phase, reason)),
                };
                let measured = self.measure(phase, &label, reader.pid()).await;
                reader.stop().await;
                measured
            }
            Phase::Cachesync => {
                let variant = binlog_variant();
                let names = Names::new(self.options, &variant);
                setup::clear_redis(&self.config.redis_url, &names.redis_prefix).await?;
                let config =
                    setup::variant_config(self.config, self.options, &variant, &names, None)?;
                let daemon = start_daemon(&self.daemon, &config).await?;
                // Measure once its initial snapshot is done: that is not the steady cost.
                let measured = async {
                    if daemon.snapshots_online() {
                        daemon.wait_loaded(setup::START_LIMIT).await?;
                    }
                    self.measure(phase, &label, None).await
                }
                .await;
                let services = daemon.services().clone();
                match tokio::time::timeout(STOP_LIMIT, daemon.stop()).await {
                    Ok(stopped) => stopped?,
                    Err(_) => {
                        tracing::warn!("bench: the strategy did not stop within {STOP_LIMIT:?}")
                    }
                }
                services.pool.disconnect().await.ok();
                setup::clear_redis(&self.config.redis_url, &names.redis_prefix).await?;
                measured
            }
        }
    }

    /// Runs the workload for `duration` and reports it, with the CPU of the daemon's
    /// threads (only the cachesync phase runs any), the services and `reader`.
    async fn measure(&self, phase: Phase, label: &str, reader: Option<u32>) -> Result<PhaseReport> {
        let o = self.options;
        let counters = Arc::new(WorkCounters::default());
        let stop = CancellationToken::new();
        let cpu_before = CpuSample::take(&self.pids);
        let reader_before = reader.and_then(cost::process_cpu);
        let began = Instant::now();
        let writers: Vec<JoinHandle<Result<WriterResult>>> = (0..o.writers)
            .map(|index| {
                tokio::spawn(writer(
                    index,
                    o.clone(),
                    self.pool.clone(),
                    counters.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        let progress = o.progress.then(|| {
            tokio::spawn(progress_line(
                label.to_owned(),
                o.duration,
                began,
                counters.clone(),
                stop.clone(),
            ))
        });
        tokio::time::sleep(o.duration).await;
        stop.cancel();
        let mut latencies = Vec::new();
        let mut first_error = None;
        for joined in writers {
            let result = joined.await.map_err(|e| Error::Io {
                context: "bench: a writer task".to_owned(),
                source: std::io::Error::other(e.to_string()),
            })??;
            latencies.extend(result.latencies_us);
            first_error = first_error.or(result.first_error);
        }
        let elapsed = began.elapsed().as_secs_f64();
        let used = CpuSample::take(&self.pids).since(&cpu_before);
        let reader_used = reader
            .and_then(cost::process_cpu)
            .zip(reader_before)
            .map(|(after, before)| after.saturating_sub(before));
        if let Some(progress) = progress {
            progress.await.ok();
        }
        let transactions = latencies.len() as u64;
        let changes = transactions * CHANGES_PER_TRANSACTION;
        let per = used.per_change(changes);
        // The reader is one more process, per row change the same way.
        let reader = CpuUsed {
            redis: reader_used,
            ..CpuUsed::default()
        }
        .per_change(changes)
        .redis;
        let quantiles = Quantiles::of_micros(&mut latencies);
        Ok(PhaseReport {
            phase,
            title: phase.title(),
            unavailable: None,
            rounds: 1,
            transactions,
            aborted: counters.aborted.load(Ordering::Relaxed),
            first_error,
            transactions_per_s: transactions as f64 / elapsed,
            row_changes_per_s: changes as f64 / elapsed,
            ratio_to_alone: None,
            txn_p50_ms: quantiles.p50,
            txn_p99_ms: quantiles.p99,
            cpu_us_per_row_change: CpuPerRowChange {
                // Only the cachesync phase runs a daemon; elsewhere its threads are idle
                // and would read as a misleading zero.
                cachesync: per.cachesync.filter(|_| phase == Phase::Cachesync),
                redis: per.redis,
                mysql: per.mysql,
                reader,
            },
            range: Default::default(),
        })
    }
}

/// The floor: a plain binlog client streaming the binlog from the current position into
/// a scratch directory, killed when dropped.
struct RawReader {
    child: tokio::process::Child,
}

impl RawReader {
    /// Starts `program`; `Ok(Err(reason))` when it cannot run here (it exited at once).
    async fn start(
        program: &Path,
        context: &Context<'_>,
    ) -> Result<std::result::Result<RawReader, String>> {
        let opts = mysql_async::Opts::from_url(&context.config.mysql_url)
            .map_err(|e| Error::Config(vec![format!("mysql.url: {e}")]))?;
        let mut conn = crate::mysql::get_conn(context.pool, &context.config.mysql_url).await?;
        let position = binary_log_status(&mut conn).await?.ok_or_else(|| {
            Error::Config(vec![
                "the server writes no binlog (log_bin is OFF)".to_owned(),
            ])
        })?;
        drop(conn);
        std::fs::create_dir_all(&context.scratch).map_err(|source| Error::Io {
            context: format!("creating {}", context.scratch.display()),
            source,
        })?;
        let mut command = tokio::process::Command::new(program);
        command
            .arg("--read-from-remote-server")
            .arg("--raw")
            .arg("--stop-never")
            .arg(format!("--host={}", opts.ip_or_hostname()))
            .arg(format!("--port={}", opts.tcp_port()))
            .arg(format!("--user={}", opts.user().unwrap_or_default()))
            // The same replica id as the cachesync phase's: the phases never overlap, and
            // it stays clear of a daemon running beside the bench (see `variant_config`).
            .arg(format!(
                "--stop-never-slave-server-id={}",
                context.config.binlog.server_id.wrapping_add(1).max(1)
            ))
            .arg(format!("--start-position={}", position.pos))
            // A trailing slash: the files keep their names inside the directory.
            .arg(format!("--result-file={}/", context.scratch.display()))
            .arg(&position.file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Through the environment, so the password is not in the process list.
        if let Some(password) = opts.pass() {
            command.env("MYSQL_PWD", password);
        }
        let name = program.file_name().map_or_else(
            || program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return Ok(Err(format!("n/a: {name} did not start: {e}"))),
        };
        tokio::time::sleep(READER_SETTLE).await;
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use tokio::io::AsyncReadExt as _;
                pipe.read_to_string(&mut stderr).await.ok();
            }
            return Ok(Err(format!(
                "n/a: {name} exited ({status}): {}",
                stderr.trim()
            )));
        }
        Ok(Ok(RawReader { child }))
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn stop(&mut self) {
        self.child.kill().await.ok();
    }
}

/// Counters the writers share with the progress line.
#[derive(Default)]
struct WorkCounters {
    transactions: AtomicU64,
    aborted: AtomicU64,
}

#[derive(Default)]
struct WriterResult {
    latencies_us: Vec<u64>,
    first_error: Option<String>,
}

/// One connection running transactions until `stop`; a transaction in flight then
/// finishes and counts.
async fn writer(
    index: usize,
    options: Options,
    pool: Pool,
    counters: Arc<WorkCounters>,
    stop: CancellationToken,
) -> Result<WriterResult> {
    let mut rng = task_rng(options.seed, 3, index as u64);
    let mut conn = pool
        .get_conn()
        .await
        .map_err(|e| Error::mysql("bench: connecting to MySQL", e))?;
    let db = quote_ident(&options.database);
    let indexed = format!("UPDATE {db}.items SET updated = ? WHERE id = ?");
    let plain = format!("UPDATE {db}.items SET payload = ? WHERE id = ?");
    let delete = format!("DELETE FROM {db}.items WHERE id = ?");
    let insert = format!("INSERT INTO {db}.items (id, payload, updated) VALUES (?, ?, ?)");
    let mut result = WriterResult::default();
    let mut n: u64 = 0;
    while !stop.is_cancelled() {
        n += 1;
        let mut ids = [0; 3].map(|_| rng.random_range(1..=options.keys));
        ids.sort_unstable();
        let payload = format!("oltp {index} {n}");
        let updated = mysql_async::Value::Date(
            2026,
            1,
            1,
            (n / 3600 % 24) as u8,
            (n / 60 % 60) as u8,
            (n % 60) as u8,
            (index as u32 * 1000 + (n % 1000) as u32) % 1_000_000,
        );
        let started = Instant::now();
        let outcome = async {
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            tx.exec_drop(&indexed, (updated.clone(), ids[0])).await?;
            tx.exec_drop(&plain, (&payload, ids[1])).await?;
            tx.exec_drop(&delete, (ids[2],)).await?;
            tx.exec_drop(&insert, (ids[2], &payload, updated)).await?;
            tx.commit().await
        }
        .await;
        match outcome {
            Ok(()) => {
                result
                    .latencies_us
                    .push(started.elapsed().as_micros() as u64);
                counters.transactions.fetch_add(1, Ordering::Relaxed);
            }
            // The dropped transaction rolled back; the next one goes on.
            Err(e) => {
                counters.aborted.fetch_add(1, Ordering::Relaxed);
                result.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(result)
}

/// The progress line (see [`ProgressOut`]).
async fn progress_line(
    label: String,
    duration: Duration,
    began: Instant,
    counters: Arc<WorkCounters>,
    stop: CancellationToken,
) {
    let out = ProgressOut::new();
    let (mut last_count, mut last) = (0, Instant::now());
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(out.every()) => {}
        }
        let count = counters.transactions.load(Ordering::Relaxed);
        let rate = (count - last_count) as f64 / last.elapsed().as_secs_f64();
        (last_count, last) = (count, Instant::now());
        let line = format!(
            "[overhead: {label}] {:>3.0}/{} s  {count} transactions ({rate:.0}/s, {} aborted)",
            began.elapsed().as_secs_f64().min(duration.as_secs_f64()),
            duration.as_secs(),
            counters.aborted.load(Ordering::Relaxed),
        );
        out.print(&line);
    }
    out.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(tps: f64, cachesync: Option<f64>) -> PhaseReport {
        PhaseReport {
            transactions: 10,
            transactions_per_s: tps,
            row_changes_per_s: tps * CHANGES_PER_TRANSACTION as f64,
            cpu_us_per_row_change: CpuPerRowChange {
                cachesync,
                ..Default::default()
            },
            unavailable: None,
            rounds: 1,
            ..PhaseReport::unavailable(Phase::Cachesync, String::new())
        }
    }

    #[test]
    fn rounds_give_medians_with_their_range_and_summed_counts() {
        let r = PhaseReport::of_rounds(
            Phase::Cachesync,
            vec![
                round(300.0, Some(5.0)),
                round(100.0, Some(9.0)),
                round(200.0, Some(7.0)),
            ],
        );
        assert_eq!((r.rounds, r.transactions), (3, 30));
        assert_eq!(r.transactions_per_s, 200.0);
        assert_eq!(r.range["transactions_per_s"], [100.0, 300.0]);
        assert_eq!(r.cpu_us_per_row_change.cachesync, Some(7.0));
        assert_eq!(r.range["cpu_us_per_row_change.cachesync"], [5.0, 9.0]);
        assert!(!r.range.contains_key("cpu_us_per_row_change.reader"));
    }

    #[test]
    fn a_phase_that_never_ran_keeps_its_reason() {
        let r = PhaseReport::of_rounds(
            Phase::RawReader,
            vec![PhaseReport::unavailable(
                Phase::RawReader,
                "n/a: mariadb-binlog not found".to_owned(),
            )],
        );
        assert_eq!(
            r.unavailable.as_deref(),
            Some("n/a: mariadb-binlog not found")
        );
        assert_eq!(r.ratio_to_alone, None);
    }
}
