//! One variant's run, phase by phase: [`Stage::prepare`] (table, Redis, broker, the
//! fault's proxy, the strategy started as the daemon starts it, the observer), [`Load`]
//! (writers, readers, the progress line), the fault at a third of the run, the drain,
//! and the figures ([`VariantReport`]).
//!
//! The daemon runs on its own runtime (see [`super::cost`]) so its CPU can be counted
//! apart from the load generator's: it is started there, and the write calls of the
//! strategies whose writes go through cachesync run there too, as the sidecar API would
//! run them; a binlog application's write is its own commit and stays with the writers.

use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::runtime::Handle;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::cost::{CpuSample, CpuUsed, Pids};
use super::faults::{self, Fault, Proxy};
use super::observer::{self, Ack, AckSender, Ledger, Observed, Observer, Watch, row_version};
use super::report::{Divergent, FaultOutcome, Quantiles, Samples, VariantReport, per_second};
use super::setup::{self, Names};
use super::workload::{KeyPicker, Pacer, Variant, task_rng};
use super::{Options, READS, STALE_READS};
use crate::cmd::run::Daemon;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::model::cell::Cell;
use crate::model::change::{Applied, Op, RowWrite, unix_micros};
use crate::model::table::{SyncedTable, quote_ident};
use crate::redis::RedisConn;
use crate::strategy::{Services, Strategy, SyncStrategy};

/// How long a stopping strategy may take to finish what it holds.
pub(super) const STOP_LIMIT: Duration = Duration::from_secs(30);

/// The strategy instance writers use, and the token that cuts their calls on a crash.
#[derive(Clone)]
struct Epoch {
    /// `None` while the daemon is down.
    strategy: Option<Arc<Strategy>>,
    crash: CancellationToken,
}

/// Counters the writer and reader tasks share with the progress line.
#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    write_errors: AtomicU64,
    interrupted: AtomicU64,
    rejected: AtomicU64,
    reads: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
}

/// What one writer task measured.
#[derive(Default)]
struct WriterResult {
    latencies_us: Vec<u64>,
    /// When each acknowledged write returned, µs since the Unix epoch (the writes/s
    /// series).
    acked_unix_us: Vec<u64>,
    first_error: Option<String>,
}

/// Where the daemon runs and which service processes' CPU is counted.
pub(super) struct Host {
    /// The daemon's own runtime.
    pub daemon: Handle,
    pub pids: Pids,
}

/// Runs `variant` on the workload of `options` and measures it.
pub(super) async fn run_variant(
    config: &Config,
    options: &Options,
    variant: Variant,
    pool: &mysql_async::Pool,
    picker: &KeyPicker,
    host: &Host,
) -> Result<VariantReport> {
    let (stage, daemon, observer) = Stage::prepare(config, options, variant, pool, host).await?;
    info!(strategy = %variant, "bench: running");
    let mut load = Load::start(&stage, daemon, &observer, options, picker, pool, host).await?;
    let fault = load.fault(&stage, options).await?;
    let measured = load.finish(options, observer).await?;
    let daemon = measured.daemon;
    let services = daemon.services().clone();
    let applied = services.applier.totals();
    match tokio::time::timeout(STOP_LIMIT, daemon.stop()).await {
        Ok(stopped) => stopped?,
        Err(_) => tracing::warn!("bench: the strategy did not stop within {STOP_LIMIT:?}"),
    }
    let divergent = divergence(&services, &variant, &stage.names).await;
    services.pool.disconnect().await.ok();
    let lost_in_mysql = lost_in_mysql(pool, &options.database, &measured.figures.ledger).await?;
    let mut report = report(&variant, measured.figures, fault, applied, divergent?);
    report.lost_in_mysql = lost_in_mysql;
    stage.clean_up(config).await?;
    Ok(report)
}

/// A variant ready to run: its table, its Redis keys, its broker topology, the fault's
/// proxy and the config its strategy runs with.
struct Stage {
    variant: Variant,
    names: Names,
    proxy: Option<Proxy>,
    /// The config the strategy runs with (also for a restart after a crash).
    config: Config,
    /// Redis as the bench's own readers reach it: never through the fault's proxy.
    redis_url: String,
    /// `--fault-command`.
    fault_command: Option<String>,
    /// The daemon's own runtime (also for a restart after a crash).
    daemon_runtime: Handle,
    table: Arc<SyncedTable>,
    /// Position of the `v` column in the table's rows.
    v_position: usize,
}

impl Stage {
    /// Prepares the run and starts the strategy (as the daemon would) and the observer.
    async fn prepare(
        config: &Config,
        options: &Options,
        variant: Variant,
        pool: &mysql_async::Pool,
        host: &Host,
    ) -> Result<(Stage, Daemon, Observer)> {
        let names = Names::new(options, &variant);
        setup::prepare_table(pool, &options.database, options.keys).await?;
        setup::clear_redis(&config.redis_url, &names.redis_prefix).await?;
        if variant.kind.needs_broker()
            && let Some(amqp) = &config.amqp
        {
            setup::reset_amqp(&amqp.url, &names.amqp).await?;
        }
        // The fault proxy sits between the strategy and the service it cuts.
        let proxy = match options.fault {
            Fault::RedisRestart => {
                Some(Proxy::start(faults::service_addr(&config.redis_url, 6379).await?).await?)
            }
            Fault::BrokerDrop if variant.kind.needs_broker() => {
                let url = &config.amqp.as_ref().expect("checked in run").url;
                Some(Proxy::start(faults::service_addr(url, 5672).await?).await?)
            }
            _ => None,
        };
        let variant_config =
            setup::variant_config(config, options, &variant, &names, proxy.as_ref())?;
        let daemon = start_daemon(&host.daemon, &variant_config).await?;
        let table = daemon.services().tables[0].clone();
        let v_position = table
            .encoder
            .names()
            .iter()
            .position(|n| n == "v")
            .expect("the bench table has a v column");
        // Measure once Redis holds the table, as a cache that was in use when the run
        // began: the strategy loads it itself (online snapshot of a fresh deployment), or,
        // for one that fills its cache row by row, the bench does before any write.
        if daemon.snapshots_online() {
            daemon.wait_loaded(setup::START_LIMIT).await?;
        } else if !variant.invalidate {
            setup::warm(daemon.services(), &table).await?;
        }
        // Where the application's write lands first is not what is measured: write-back
        // writes the cache, so its changes are followed into MySQL.
        let mysql = variant.kind.redis_holds_unflushed_writes().then(|| {
            (
                pool.clone(),
                format!("{}.items", quote_ident(&options.database)),
            )
        });
        let observer = Observer::start(Watch {
            redis_url: config.redis_url.clone(),
            prefix: names.row_prefix.clone(),
            invalidate: variant.invalidate,
            mysql,
        })
        .await?;
        let stage = Stage {
            variant,
            names,
            proxy,
            config: variant_config,
            redis_url: config.redis_url.clone(),
            fault_command: options.fault_command.clone(),
            daemon_runtime: host.daemon.clone(),
            table,
            v_position,
        };
        Ok((stage, daemon, observer))
    }

    /// Removes the variant's keys and queues.
    async fn clean_up(&self, config: &Config) -> Result<()> {
        setup::clear_redis(&config.redis_url, &self.names.redis_prefix).await?;
        if self.variant.kind.needs_broker()
            && let Some(amqp) = &config.amqp
        {
            setup::reset_amqp(&amqp.url, &self.names.amqp).await?;
        }
        Ok(())
    }
}

/// The workload running against a started strategy.
struct Load {
    variant: Variant,
    /// The running strategy; swapped for a new one by a daemon crash.
    daemon: Arc<Mutex<Option<Daemon>>>,
    epoch: watch::Sender<Epoch>,
    counters: Arc<Counters>,
    live: Arc<observer::Live>,
    stop_writers: CancellationToken,
    stop_readers: CancellationToken,
    ledger: Arc<Ledger>,
    writers: Vec<JoinHandle<WriterResult>>,
    readers: Vec<JoinHandle<Result<Vec<u64>>>>,
    progress: Option<JoinHandle<()>>,
    began: Instant,
    /// `began` on the wall clock, where the per-second series count from.
    began_unix_us: u64,
    /// What crashed instances' appliers did.
    crashed: Applied,
    pids: Pids,
    /// CPU counters when the writers started.
    cpu_began: CpuSample,
}

/// What the workload measured once it stopped and drained.
struct Measured {
    daemon: Daemon,
    figures: Figures,
}

/// The raw figures of a run, before quantiles.
struct Figures {
    samples: Samples,
    /// When each acknowledged write returned (µs since the epoch), and `began` then.
    acked_unix_us: Vec<u64>,
    began_unix_us: u64,
    first_error: Option<String>,
    elapsed: Duration,
    drain: Duration,
    drained: bool,
    observed: Observed,
    counters: Arc<Counters>,
    /// What crashed instances' appliers did.
    crashed: Applied,
    ledger: Arc<Ledger>,
    /// CPU used from the writers' start to the drain's end.
    cpu: CpuUsed,
}

impl Load {
    /// Starts the writers, the readers and the progress line against `daemon`.
    async fn start(
        stage: &Stage,
        daemon: Daemon,
        observer: &Observer,
        options: &Options,
        picker: &KeyPicker,
        pool: &mysql_async::Pool,
        host: &Host,
    ) -> Result<Load> {
        let variant = stage.variant;
        let (epoch, epoch_rx) = watch::channel(Epoch {
            strategy: Some(daemon.strategy().clone()),
            crash: CancellationToken::new(),
        });
        let counters = Arc::new(Counters::default());
        let ledger = Arc::new(Ledger::new(options.keys));
        let stop_writers = CancellationToken::new();
        let stop_readers = CancellationToken::new();
        let cpu_began = CpuSample::take(&host.pids);
        let began = Instant::now();
        let began_unix_us = unix_micros(SystemTime::now());
        let writers = (0..options.writers)
            .map(|index| {
                tokio::spawn(writer(
                    index,
                    options.clone(),
                    variant,
                    stage.table.clone(),
                    stage.v_position,
                    picker.clone(),
                    pool.clone(),
                    host.daemon.clone(),
                    epoch_rx.clone(),
                    observer.sender(),
                    ledger.clone(),
                    counters.clone(),
                    stop_writers.clone(),
                ))
            })
            .collect();
        let redis = crate::redis::connection::connect(&stage.redis_url).await?;
        let readers = (0..options.readers)
            .map(|index| {
                tokio::spawn(reader(
                    index,
                    options.clone(),
                    variant.name(),
                    stage.names.row_prefix.clone(),
                    picker.clone(),
                    redis.clone(),
                    ledger.clone(),
                    counters.clone(),
                    stop_readers.clone(),
                ))
            })
            .collect();
        let progress = options.progress.then(|| {
            tokio::spawn(progress_line(
                variant.name(),
                options.duration,
                began,
                counters.clone(),
                observer.live.clone(),
                stop_readers.clone(),
            ))
        });
        Ok(Load {
            variant,
            daemon: Arc::new(Mutex::new(Some(daemon))),
            epoch,
            counters,
            live: observer.live.clone(),
            ledger,
            stop_writers,
            stop_readers,
            writers,
            readers,
            progress,
            began,
            began_unix_us,
            crashed: Applied::default(),
            pids: host.pids,
            cpu_began,
        })
    }

    /// The fault, if any, at a third of the run; returns once it is over.
    async fn fault(&mut self, stage: &Stage, options: &Options) -> Result<Option<FaultOutcome>> {
        let Some(at) = options.fault_at() else {
            return Ok(None);
        };
        tokio::time::sleep_until((self.began + at).into()).await;
        let applies = fault_applies(options.fault, &self.variant);
        let at_s = self.began.elapsed().as_secs_f64();
        // Losing data is a moment, not a span.
        let duration = match options.fault {
            Fault::RedisDataLoss => Duration::ZERO,
            _ => options.fault_duration,
        };
        if applies {
            info!(fault = %options.fault, "bench: fault");
            self.inject(options.fault, duration, stage).await?;
        }
        Ok(Some(FaultOutcome {
            kind: options.fault.to_string(),
            applies,
            at_s,
            duration_s: if applies { duration.as_secs_f64() } else { 0.0 },
            end_us: unix_micros(SystemTime::now()),
            recovery_s: None,
            interrupted_writes: 0,
            rejected_writes: 0,
        }))
    }

    /// Injects `fault` for `duration` and returns once it is over.
    async fn inject(&mut self, fault: Fault, duration: Duration, stage: &Stage) -> Result<()> {
        match fault {
            Fault::None => Ok(()),
            Fault::RedisRestart | Fault::BrokerDrop => {
                let proxy = stage
                    .proxy
                    .as_ref()
                    .expect("a proxy is started for network faults");
                proxy.cut();
                tokio::time::sleep(duration).await;
                proxy.restore();
                Ok(())
            }
            Fault::RedisDataLoss => match &stage.fault_command {
                Some(command) => restart_redis(command, &stage.redis_url).await,
                None => setup::lose_redis_data(&stage.redis_url, &stage.names.redis_prefix)
                    .await
                    .map(drop),
            },
            Fault::DaemonCrash => {
                let mut slot = self.daemon.lock().await;
                let old = self.epoch.send_replace(Epoch {
                    strategy: None,
                    crash: CancellationToken::new(),
                });
                // Cut the write calls in flight, then the background work: nothing drains.
                old.crash.cancel();
                if let Some(instance) = slot.take() {
                    let applied = instance.services().applier.totals();
                    instance.abort();
                    self.crashed.written += applied.written;
                    self.crashed.replayed += applied.replayed;
                    self.crashed.stale += applied.stale;
                }
                drop(old);
                tokio::time::sleep(duration).await;
                let restarted = start_daemon(&stage.daemon_runtime, &stage.config).await?;
                self.epoch.send_replace(Epoch {
                    strategy: Some(restarted.strategy().clone()),
                    crash: CancellationToken::new(),
                });
                *slot = Some(restarted);
                Ok(())
            }
        }
    }

    /// Stops the writers at the end of the run, drains until every acknowledged change
    /// was seen (or the drain limit), then stops the readers and the observer.
    async fn finish(self, options: &Options, observer: Observer) -> Result<Measured> {
        tokio::time::sleep_until((self.began + options.duration).into()).await;
        self.stop_writers.cancel();
        let mut samples = Samples::default();
        let mut first_error = None;
        let mut acked_unix_us = Vec::new();
        for w in self.writers {
            let result = w.await.map_err(|e| task_failed("a writer", e))?;
            samples.write_us.extend(result.latencies_us);
            acked_unix_us.extend(result.acked_unix_us);
            first_error = first_error.or(result.first_error);
        }
        let elapsed = self.began.elapsed();
        let drain_began = Instant::now();
        let drained = loop {
            if self.live.pending.load(Ordering::Relaxed) == 0 {
                break true;
            }
            if drain_began.elapsed() >= options.drain_timeout {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let drain = drain_began.elapsed();
        let cpu = CpuSample::take(&self.pids).since(&self.cpu_began);
        self.stop_readers.cancel();
        for r in self.readers {
            let staleness = r.await.map_err(|e| task_failed("a reader", e))??;
            samples.staleness_us.extend(staleness);
        }
        if let Some(p) = self.progress {
            let _ = p.await;
        }
        let observed = observer.finish().await?;
        let daemon = self
            .daemon
            .lock()
            .await
            .take()
            .expect("the strategy is running");
        Ok(Measured {
            daemon,
            figures: Figures {
                samples,
                acked_unix_us,
                began_unix_us: self.began_unix_us,
                first_error,
                elapsed,
                drain,
                drained,
                observed,
                counters: self.counters,
                crashed: self.crashed,
                ledger: self.ledger,
                cpu,
            },
        })
    }
}

/// The variant's report from its raw figures.
fn report(
    variant: &Variant,
    figures: Figures,
    mut fault: Option<FaultOutcome>,
    applied: Applied,
    divergent: Divergent,
) -> VariantReport {
    let Figures {
        mut samples,
        acked_unix_us,
        began_unix_us,
        first_error,
        elapsed,
        drain,
        drained,
        observed,
        counters,
        crashed,
        ledger: _,
        cpu,
    } = figures;
    samples.propagation_us = observed.propagated.iter().map(|p| p.micros()).collect();
    if let Some(f) = &mut fault {
        f.interrupted_writes = counters.interrupted.load(Ordering::Relaxed);
        f.rejected_writes = counters.rejected.load(Ordering::Relaxed);
        f.recovery_s = recovery(&observed, f.end_us);
    }
    let guard_figures = variant.ordered() && !variant.kind.redis_holds_unflushed_writes();
    let writes = samples.write_us.len() as u64;
    let reads = counters.reads.load(Ordering::Relaxed);
    let stale_reads = counters.stale.load(Ordering::Relaxed);
    VariantReport {
        strategy: variant.name(),
        propagation_to: if variant.kind.redis_holds_unflushed_writes() {
            "MySQL"
        } else {
            "Redis"
        },
        lost_in_mysql: 0,
        coupling: variant.kind.coupling(),
        application_must: variant.application_duty(),
        ordered: variant.ordered(),
        writes,
        write_errors: counters.write_errors.load(Ordering::Relaxed),
        first_error,
        elapsed_s: elapsed.as_secs_f64(),
        writes_per_s: writes as f64 / elapsed.as_secs_f64(),
        write_latency_ms: Quantiles::of_micros(&mut samples.write_us),
        propagation_ms: Quantiles::of_micros(&mut samples.propagation_us),
        unpropagated: observed.unseen.len() as u64,
        out_of_order: observed.out_of_order,
        // The guard's figures tell races between the changes a strategy applies; the
        // write-back applier only refreshes rows after a flush (at versions the cache
        // already holds), so they would say nothing about the application's writes.
        applied_twice: guard_figures.then_some((applied.replayed + crashed.replayed) as u64),
        guard_drops: guard_figures.then_some((applied.stale + crashed.stale) as u64),
        reads,
        read_misses: counters.misses.load(Ordering::Relaxed),
        stale_reads,
        stale_fraction: if reads == 0 {
            0.0
        } else {
            stale_reads as f64 / reads as f64
        },
        staleness_ms: Quantiles::of_micros(&mut samples.staleness_us),
        drain_s: drain.as_secs_f64(),
        drained,
        divergent,
        fault,
        observer_notifications: observed.notifications,
        observer_reads: observed.reads,
        observer_read_mean_us: if observed.reads == 0 {
            0.0
        } else {
            observed.read_micros as f64 / observed.reads as f64
        },
        cpu_us_per_change: cpu.per_change(writes),
        rounds: 1,
        range: Default::default(),
        writes_each_second: per_second(began_unix_us, acked_unix_us),
        propagated_each_second: per_second(
            began_unix_us,
            observed.propagated.iter().map(|p| p.seen_us),
        ),
        samples,
    }
}
/// Acknowledged writes whose version MySQL does not hold after the drain: what the
/// application was told is written and the database never got (write-back's risk).
async fn lost_in_mysql(pool: &mysql_async::Pool, database: &str, ledger: &Ledger) -> Result<u64> {
    use mysql_async::prelude::Queryable;
    let mut conn = pool
        .get_conn()
        .await
        .map_err(|e| Error::mysql("bench: connecting to MySQL", e))?;
    let rows: Vec<(u64, u64)> = conn
        .query(format!("SELECT id, v FROM {}.items", quote_ident(database)))
        .await
        .map_err(|e| Error::mysql("bench: reading the rows' versions", e))?;
    let held: std::collections::HashMap<u64, u64> = rows.into_iter().collect();
    Ok((1..=ledger.keys())
        .map(|id| ledger.acked_above(id, held.get(&id).copied().unwrap_or(0)))
        .sum())
}

/// From the fault's end until every change committed before it was seen in Redis;
/// `None` when some never were.
fn recovery(observed: &Observed, fault_end_us: u64) -> Option<f64> {
    if observed
        .unseen
        .iter()
        .any(|a| a.committed_us < fault_end_us)
    {
        return None;
    }
    let last_seen = observed
        .propagated
        .iter()
        .filter(|p| p.committed_us < fault_end_us)
        .map(|p| p.seen_us.saturating_sub(fault_end_us))
        .max()
        .unwrap_or(0);
    Some(last_seen as f64 / 1e6)
}

/// Compares the bench table with Redis the way `verify` does, and exports the count.
async fn divergence(services: &Services, variant: &Variant, names: &Names) -> Result<Divergent> {
    let verified = crate::cmd::verify::verify(
        &services.tables,
        &services.pool,
        &services.applier,
        &crate::cmd::verify::Options {
            batch: 1000,
            examples: 5,
            repair: false,
            strategy: variant.kind,
            skip_keys: vec![names.checkpoint_key.clone()],
            // Counting only: nothing is repaired.
            checkpoint_key: None,
        },
    )
    .await?;
    let table = verified.tables.into_iter().next().unwrap_or_default();
    let mut examples = table.different.examples.clone();
    examples.extend(table.missing.examples.iter().cloned());
    examples.extend(table.extra.examples.iter().cloned());
    examples.truncate(5);
    let divergent = Divergent {
        missing: table.missing.count,
        extra: table.extra.count,
        different: table.different.count,
        total: table.found(),
        examples,
    };
    metrics::gauge!(m::DIVERGENT_KEYS, "strategy" => variant.name(), "table" => table.table.clone())
        .set(divergent.total as f64);
    Ok(divergent)
}

/// Starts the strategy as the daemon does, on the daemon's runtime: every task it spawns
/// (its background work, the Redis and MySQL connections' own tasks) lives there.
pub(super) async fn start_daemon(runtime: &Handle, config: &Config) -> Result<Daemon> {
    let config = config.clone();
    runtime
        .spawn(async move { Daemon::start(&config).await })
        .await
        .map_err(|e| task_failed("the daemon's start", e))?
}

fn task_failed(what: &str, e: tokio::task::JoinError) -> Error {
    Error::Io {
        context: format!("bench: {what} task"),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Runs `command` (`sh -c`), which restarts the Redis at `redis_url`, and waits until
/// Redis answers again (at most a minute).
async fn restart_redis(command: &str, redis_url: &str) -> Result<()> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .await
        .map_err(|source| Error::Io {
            context: format!("bench: running --fault-command {command:?}"),
            source,
        })?;
    if !status.success() {
        return Err(Error::Io {
            context: format!("bench: --fault-command {command:?}"),
            source: std::io::Error::other(format!("it exited with {status}")),
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match crate::redis::connection::connect(redis_url).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Whether `fault` has something to act on in `variant`.
fn fault_applies(fault: Fault, variant: &Variant) -> bool {
    match fault {
        Fault::None => false,
        Fault::RedisRestart | Fault::DaemonCrash | Fault::RedisDataLoss => true,
        Fault::BrokerDrop => variant.kind.needs_broker(),
    }
}

/// One writer: upserts rows picked from the shared distribution at its share of the
/// rate until `stop`.
#[allow(clippy::too_many_arguments)]
async fn writer(
    index: usize,
    options: Options,
    variant: Variant,
    table: Arc<SyncedTable>,
    v_position: usize,
    picker: KeyPicker,
    pool: mysql_async::Pool,
    daemon: Handle,
    mut epoch: watch::Receiver<Epoch>,
    acks: AckSender,
    ledger: Arc<Ledger>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> WriterResult {
    let mut rng = task_rng(options.seed, 1, index as u64);
    let mut pacer = Pacer::new(options.rate, options.writers, index);
    let mut result = WriterResult::default();
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = pacer.wait() => {}
        }
        if stop.is_cancelled() {
            break;
        }
        n += 1;
        let id = picker.pick(&mut rng);
        let write = RowWrite {
            table: table.clone(),
            op: Op::Upsert,
            values: vec![
                ("id".to_owned(), mysql_async::Value::UInt(id)),
                (
                    "payload".to_owned(),
                    mysql_async::Value::from(format!("writer {index} write {n}")),
                ),
                (
                    "updated".to_owned(),
                    mysql_async::Value::Date(
                        2026,
                        1,
                        1,
                        0,
                        (n / 60 % 60) as u8,
                        (n % 60) as u8,
                        (n % 1_000_000) as u32,
                    ),
                ),
            ],
        };
        let current = epoch.borrow_and_update().clone();
        let started = Instant::now();
        let outcome = match &current.strategy {
            // A binlog application writes MySQL on its own connections, daemon up or
            // down: none of that work is cachesync's. (Written through the strategy's
            // pool, whose connection tasks and pool recycler live on the daemon's
            // runtime, the writes' I/O and connection resets were counted as cachesync's
            // CPU — most of binlog's figure at 1000 writes/s.)
            _ if !variant.kind.writes_need_the_daemon() => Some(
                crate::mysql::write::commit(&pool, &write)
                    .await
                    .map(|written| (unix_micros(SystemTime::now()), written.into_upserted())),
            ),
            // The write goes through cachesync: it runs on the daemon's threads, whose CPU
            // is cachesync's, as a write through the sidecar API would.
            Some(strategy) => {
                let strategy = strategy.clone();
                let mut call = daemon.spawn(async move { strategy.write(write).await });
                tokio::select! {
                    joined = &mut call => Some(
                        joined
                            .map_err(|e| task_failed("a write", e))
                            .and_then(|outcome| outcome)
                            .map(|r| (r.committed_at_us, r.row)),
                    ),
                    _ = current.crash.cancelled() => {
                        call.abort();
                        counters.interrupted.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            }
            None => {
                // Every write this writer would have made while the daemon is down is
                // refused; it waits for the restart instead of spinning on errors.
                let down = Instant::now();
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = epoch.changed() => {}
                }
                counters
                    .rejected
                    .fetch_add(pacer.slots_in(down.elapsed()), Ordering::Relaxed);
                None
            }
        };
        let latency = started.elapsed().as_micros() as u64;
        match outcome {
            None => {}
            Some(Ok((committed_us, row))) => {
                let v = row.as_deref().and_then(|row| match row.get(v_position) {
                    Some(Cell::UInt(v)) => Some(*v),
                    Some(Cell::Int(v)) => u64::try_from(*v).ok(),
                    _ => None,
                });
                let Some(v) = v else {
                    counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    result
                        .first_error
                        .get_or_insert_with(|| "the write returned no row version".to_owned());
                    continue;
                };
                result.latencies_us.push(latency);
                result.acked_unix_us.push(unix_micros(SystemTime::now()));
                counters.writes.fetch_add(1, Ordering::Relaxed);
                ledger.record(id, v, committed_us);
                acks.ack(Ack {
                    id,
                    v,
                    committed_us,
                });
            }
            Some(Err(e)) => {
                counters.write_errors.fetch_add(1, Ordering::Relaxed);
                result.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    result
}

/// One reader: reads rows from Redis at its share of the read rate and judges each
/// against the newest version acknowledged when the read began. Returns the staleness
/// (µs) of every stale read.
#[allow(clippy::too_many_arguments)]
async fn reader(
    index: usize,
    options: Options,
    strategy: String,
    row_prefix: String,
    picker: KeyPicker,
    mut redis: RedisConn,
    ledger: Arc<Ledger>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> Result<Vec<u64>> {
    let mut rng = task_rng(options.seed, 2, index as u64);
    let mut pacer = Pacer::new(options.read_rate, options.readers.max(1), index);
    let mut staleness = Vec::new();
    let reads = metrics::counter!(READS, "strategy" => strategy.clone());
    let stale = metrics::counter!(STALE_READS, "strategy" => strategy);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = pacer.wait() => {}
        }
        let id = picker.pick(&mut rng);
        let newest = ledger.newest(id);
        let value: Option<Vec<u8>> = match redis::cmd("GET")
            .arg(format!("{row_prefix}{id}"))
            .query_async(&mut redis)
            .await
            .map_err(|e| Error::redis("bench reader: GET", e))
        {
            Ok(value) => value,
            // A Redis restarted by --fault-command drops the reader's connection: a read
            // that did not happen is not a read; the connection manager reconnects.
            Err(e) if e.is_transient() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let now = unix_micros(SystemTime::now());
        counters.reads.fetch_add(1, Ordering::Relaxed);
        reads.increment(1);
        let Some(held) = value.as_deref().and_then(row_version) else {
            counters.misses.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if newest.is_some_and(|newest| held < newest) {
            counters.stale.fetch_add(1, Ordering::Relaxed);
            stale.increment(1);
            let since = ledger.stale_since(id, held).unwrap_or(now);
            staleness.push(now.saturating_sub(since));
        }
    }
    Ok(staleness)
}

/// The live progress line on stderr: every second on a terminal (rewriting one line),
/// every 5 s otherwise.
async fn progress_line(
    strategy: String,
    duration: Duration,
    began: Instant,
    counters: Arc<Counters>,
    live: Arc<observer::Live>,
    stop: CancellationToken,
) {
    let out = ProgressOut::new();
    let mut last_writes = 0;
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(out.every()) => {}
        }
        let writes = counters.writes.load(Ordering::Relaxed);
        let rate = (writes - last_writes) as f64 / last.elapsed().as_secs_f64();
        last_writes = writes;
        last = Instant::now();
        let reads = counters.reads.load(Ordering::Relaxed).max(1);
        let line = format!(
            "[{strategy}] {:>3.0}/{} s  {writes} writes ({rate:.0}/s, {} errors)  not yet in Redis {}  max propagation {:.1} ms  stale reads {:.2}%",
            began.elapsed().as_secs_f64().min(duration.as_secs_f64()),
            duration.as_secs(),
            counters.write_errors.load(Ordering::Relaxed),
            live.pending.load(Ordering::Relaxed),
            live.max_recent_us.swap(0, Ordering::Relaxed) as f64 / 1e3,
            counters.stale.load(Ordering::Relaxed) as f64 * 100.0 / reads as f64,
        );
        out.print(&line);
    }
    out.end();
}

/// Where a live progress line goes: stderr, every second rewriting one line on a
/// terminal, every 5 s as a new line otherwise (a log file keeps them all).
pub(super) struct ProgressOut {
    terminal: bool,
}

impl ProgressOut {
    pub(super) fn new() -> ProgressOut {
        ProgressOut {
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Time between two lines.
    pub(super) fn every(&self) -> Duration {
        Duration::from_secs(if self.terminal { 1 } else { 5 })
    }

    pub(super) fn print(&self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the rewritten line on a terminal.
    pub(super) fn end(&self) {
        if self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}
