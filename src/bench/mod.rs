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
//! Module map: [`workload`] (variants, key skew, pacing), [`observer`] (propagation,
//! order and staleness bookkeeping), [`faults`] (fault kinds and the loopback proxy),
//! [`report`] (figures from raw samples; terminal/Markdown/JSON).

pub mod faults;
pub mod observer;
pub mod report;
pub mod workload;

use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use mysql_async::prelude::Queryable;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use self::faults::{Fault, Proxy};
use self::observer::{Ack, AckSender, Ledger, Observer, Watch, row_version};
use self::report::{BenchReport, Divergent, FaultOutcome, Quantiles, Samples, VariantReport};
use self::workload::{KeyPicker, Pacer, Skew, Variant, task_rng};
use crate::applier::{Applied, Op, unix_micros};
use crate::config::{Config, PublishMode, RawConfig};
use crate::daemon::Services;
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::row::Cell;
use crate::schema::{SyncedTable, quote_ident};
use crate::strategy::{RowWrite, Strategy, StrategyKind, SyncStrategy};

/// How long the binlog strategy may take to snapshot the bench table and start tailing.
const START_LIMIT: Duration = Duration::from_secs(120);
/// The binlog variants' heartbeat table, in the bench database.
const HEARTBEAT_TABLE: &str = "heartbeat";
/// How long a stopping strategy may take to finish what it holds.
const STOP_LIMIT: Duration = Duration::from_secs(30);

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
    pub drain_timeout: Duration,
    /// The database the bench table lives in (created if missing; the table is dropped
    /// at the end).
    pub database: String,
    /// Redis keys are `{key_prefix}:{variant}:item:{id}`; RabbitMQ names
    /// `cachesync.bench.{variant}`.
    pub key_prefix: String,
    /// Print a live progress line on stderr.
    pub progress: bool,
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
        if self.fault != Fault::None && self.fault_duration >= self.duration.mul_f64(2.0 / 3.0) {
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
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems))
        }
    }

    fn fault_at(&self) -> Option<Duration> {
        (self.fault != Fault::None).then(|| self.duration / 3)
    }
}

/// Runs every variant of `options` against the services named in `config` (its tables
/// are not used) and returns the report. Metrics go to whatever recorder is installed.
pub async fn run(config: &Config, options: &Options) -> Result<BenchReport> {
    options.validate()?;
    if options.variants.iter().any(|v| v.kind == StrategyKind::Mq) && config.amqp.is_none() {
        return Err(Error::Config(vec![
            "amqp.url: the mq strategy is benchmarked against RabbitMQ; set it in the config or \
             leave mq out of --strategies"
                .to_owned(),
        ]));
    }
    let picker = KeyPicker::new(&options.skew, options.keys);
    let started_unix_s = unix_micros(SystemTime::now()) / 1_000_000;
    let load_average_before = load_average();
    let pool = crate::mysql::pool(&config.mysql_url)?;
    let mut results = Vec::with_capacity(options.variants.len());
    for variant in &options.variants {
        register_series(variant, &options.database);
    }
    let outcome = async {
        for variant in &options.variants {
            info!(strategy = %variant, "bench: preparing");
            results.push(run_variant(config, options, *variant, &pool, &picker).await?);
        }
        Ok::<(), Error>(())
    }
    .await;
    // Leave nothing behind, whatever happened.
    drop_bench_tables(&pool, &options.database).await;
    pool.disconnect().await.ok();
    outcome?;
    Ok(BenchReport {
        cachesync_version: env!("CARGO_PKG_VERSION"),
        started_unix_s,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average_before,
        load_average_after: load_average(),
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
        },
        results,
    })
}

/// The bench's own series, present from the start.
fn register_series(variant: &Variant, database: &str) {
    let name = variant.name();
    metrics::counter!(m::READS, "strategy" => name.clone()).increment(0);
    metrics::counter!(m::STALE_READS, "strategy" => name.clone()).increment(0);
    metrics::gauge!(m::DIVERGENT_KEYS, "strategy" => name, "table" => format!("{database}.items"))
        .set(0.0);
}

/// `/proc/loadavg`'s three averages: the bench shares the machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Names one variant's things.
struct Names {
    slug: String,
    /// Redis key of row `id` is `{row_prefix}{id}`.
    row_prefix: String,
    /// Everything of this variant in Redis starts with this.
    redis_prefix: String,
    checkpoint_key: String,
    amqp: String,
}

impl Names {
    fn new(options: &Options, variant: &Variant) -> Names {
        let slug = variant.slug();
        let redis_prefix = format!("{}:{slug}:", options.key_prefix);
        Names {
            row_prefix: format!("{redis_prefix}item:"),
            checkpoint_key: format!("{redis_prefix}checkpoint"),
            amqp: format!(
                "cachesync.bench.{}.{slug}",
                options.key_prefix.replace(':', ".")
            ),
            redis_prefix,
            slug,
        }
    }
}

/// The strategy instance writers use, and the token that cuts their calls on a crash.
#[derive(Clone)]
struct Epoch {
    /// `None` while the daemon is down.
    strategy: Option<Arc<Strategy>>,
    crash: CancellationToken,
}

/// The running strategy: its instance, background task and connections.
struct Running {
    strategy: Arc<Strategy>,
    services: Services,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Running {
    async fn start(config: &Config) -> Result<Running> {
        let services = Services::connect(config).await?;
        let strategy = Arc::new(Strategy::build(config, &services)?);
        let stop = CancellationToken::new();
        let task = {
            let strategy = strategy.clone();
            let stop = stop.clone();
            tokio::spawn(async move { strategy.run(stop).await })
        };
        Ok(Running {
            strategy,
            services,
            stop,
            task,
        })
    }

    /// Stops the way SIGTERM would: finish what is held, within [`STOP_LIMIT`].
    async fn stop(self) -> Result<Services> {
        self.stop.cancel();
        match tokio::time::timeout(STOP_LIMIT, self.task).await {
            Ok(Ok(outcome)) => outcome?,
            Ok(Err(e)) => {
                return Err(Error::Strategy {
                    strategy: self.strategy.kind().name(),
                    reason: format!("its task failed: {e}"),
                });
            }
            Err(_) => tracing::warn!("bench: the strategy did not stop within {STOP_LIMIT:?}"),
        }
        Ok(self.services)
    }

    /// Stops the way `kill -9` would: no drain; the tasks stop at their next await.
    /// Returns what its applier did until then.
    fn crash(self) -> Applied {
        self.task.abort();
        self.services.applier.totals()
    }
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
    first_error: Option<String>,
}

async fn run_variant(
    config: &Config,
    options: &Options,
    variant: Variant,
    pool: &mysql_async::Pool,
    picker: &KeyPicker,
) -> Result<VariantReport> {
    let names = Names::new(options, &variant);
    prepare_table(pool, &options.database, options.keys).await?;
    clear_redis(&config.redis_url, &names.redis_prefix).await?;
    if variant.kind == StrategyKind::Mq
        && let Some(amqp) = &config.amqp
    {
        reset_amqp(&amqp.url, &names.amqp).await?;
    }

    // The fault proxy sits between the strategy and the service it cuts.
    let proxy = match options.fault {
        Fault::RedisRestart => {
            Some(Proxy::start(faults::service_addr(&config.redis_url, 6379).await?).await?)
        }
        Fault::BrokerDrop if variant.kind == StrategyKind::Mq => {
            let url = &config.amqp.as_ref().expect("checked in run").url;
            Some(Proxy::start(faults::service_addr(url, 5672).await?).await?)
        }
        _ => None,
    };
    let variant_config = variant_config(config, options, &variant, &names, proxy.as_ref())?;

    let running = Running::start(&variant_config).await?;
    let table = running.services.tables[0].clone();
    let v_position = table
        .encoder
        .names()
        .iter()
        .position(|n| n == "v")
        .expect("the bench table has a v column");
    if variant.kind == StrategyKind::Binlog {
        wait_for_tailing(&running, &names.checkpoint_key).await?;
    } else if !variant.invalidate {
        warm(&running.services, &table).await?;
    }
    let observer = Observer::start(Watch {
        redis_url: config.redis_url.clone(),
        prefix: names.row_prefix.clone(),
        invalidate: variant.invalidate,
    })
    .await?;
    info!(strategy = %variant, "bench: running");

    let (epoch_tx, epoch_rx) = watch::channel(Epoch {
        strategy: Some(running.strategy.clone()),
        crash: CancellationToken::new(),
    });
    let running = Arc::new(tokio::sync::Mutex::new(Some(running)));
    let counters = Arc::new(Counters::default());
    let ledger = Arc::new(Ledger::new(options.keys));
    let stop_writers = CancellationToken::new();
    let stop_readers = CancellationToken::new();
    let began = Instant::now();

    let writers: Vec<_> = (0..options.writers)
        .map(|index| {
            tokio::spawn(writer(
                index,
                options.clone(),
                variant,
                table.clone(),
                v_position,
                picker.clone(),
                pool.clone(),
                epoch_rx.clone(),
                observer.sender(),
                ledger.clone(),
                counters.clone(),
                stop_writers.clone(),
            ))
        })
        .collect();
    let redis = crate::applier::connect_redis(&config.redis_url).await?;
    let readers: Vec<_> = (0..options.readers)
        .map(|index| {
            tokio::spawn(reader(
                index,
                options.clone(),
                variant.name(),
                names.row_prefix.clone(),
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

    // The fault, if any, at a third of the run.
    let mut fault_outcome = None;
    let mut fault_end_us = None;
    // What crashed instances' appliers did.
    let mut crashed = Applied::default();
    let run_for = tokio::time::sleep(options.duration);
    tokio::pin!(run_for);
    if let Some(at) = options.fault_at() {
        tokio::time::sleep(at).await;
        let applies = fault_applies(options.fault, &variant);
        let at_s = began.elapsed().as_secs_f64();
        if applies {
            info!(fault = %options.fault, "bench: fault");
            inject(
                options.fault,
                options.fault_duration,
                proxy.as_ref(),
                &running,
                &epoch_tx,
                &variant_config,
                &mut crashed,
            )
            .await?;
        }
        fault_end_us = Some(unix_micros(SystemTime::now()));
        fault_outcome = Some(FaultOutcome {
            kind: options.fault.to_string(),
            applies,
            at_s,
            duration_s: if applies {
                options.fault_duration.as_secs_f64()
            } else {
                0.0
            },
            recovery_s: None,
            interrupted_writes: 0,
            rejected_writes: 0,
        });
    }
    run_for.await;
    stop_writers.cancel();
    let mut samples = Samples::default();
    let mut first_error = None;
    for w in writers {
        let result = w.await.map_err(|e| task_failed("a writer", e))?;
        samples.write_us.extend(result.latencies_us);
        first_error = first_error.or(result.first_error);
    }
    let elapsed = began.elapsed();

    // Drain: until every acknowledged change was seen, or the limit.
    let drain_began = Instant::now();
    let drained = loop {
        if observer.live.pending.load(Ordering::Relaxed) == 0 {
            break true;
        }
        if drain_began.elapsed() >= options.drain_timeout {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let drain = drain_began.elapsed();
    stop_readers.cancel();
    for r in readers {
        let staleness = r.await.map_err(|e| task_failed("a reader", e))??;
        samples.staleness_us.extend(staleness);
    }
    if let Some(p) = progress {
        let _ = p.await;
    }
    let observed = observer.finish().await?;
    let running = running
        .lock()
        .await
        .take()
        .expect("the strategy is running");
    let services = running.stop().await?;
    let applied = services.applier.totals();
    let divergent = divergence(&services, &variant, &names).await;
    services.pool.disconnect().await.ok();
    let divergent = divergent?;

    // Figures from the raw samples.
    samples.propagation_us = observed.propagated.iter().map(|p| p.micros()).collect();
    if let (Some(f), Some(end)) = (&mut fault_outcome, fault_end_us) {
        f.interrupted_writes = counters.interrupted.load(Ordering::Relaxed);
        f.rejected_writes = counters.rejected.load(Ordering::Relaxed);
        f.recovery_s = recovery(&observed, end);
    }
    let writes = samples.write_us.len() as u64;
    let reads = counters.reads.load(Ordering::Relaxed);
    let stale_reads = counters.stale.load(Ordering::Relaxed);
    let report = VariantReport {
        strategy: variant.name(),
        coupling: variant.coupling(),
        application_must: variant.application_must(),
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
        applied_twice: variant
            .ordered()
            .then_some((applied.replayed + crashed.replayed) as u64),
        guard_drops: variant
            .ordered()
            .then_some((applied.stale + crashed.stale) as u64),
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
        fault: fault_outcome,
        observer_notifications: observed.notifications,
        observer_reads: observed.reads,
        observer_read_mean_us: if observed.reads == 0 {
            0.0
        } else {
            observed.read_micros as f64 / observed.reads as f64
        },
        samples,
    };

    clear_redis(&config.redis_url, &names.redis_prefix).await?;
    if variant.kind == StrategyKind::Mq
        && let Some(amqp) = &config.amqp
    {
        reset_amqp(&amqp.url, &names.amqp).await?;
    }
    Ok(report)
}

/// From the fault's end until every change committed before it was seen in Redis;
/// `None` when some never were.
fn recovery(observed: &observer::Observed, fault_end_us: u64) -> Option<f64> {
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
    let verified = crate::verify::verify(
        &services.tables,
        &services.pool,
        &services.applier,
        &crate::verify::Options {
            batch: 1000,
            examples: 5,
            repair: false,
            strategy: variant.kind,
            skip_keys: vec![names.checkpoint_key.clone()],
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

fn task_failed(what: &str, e: tokio::task::JoinError) -> Error {
    Error::Io {
        context: format!("bench: {what} task"),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Whether `fault` has something to act on in `variant`.
fn fault_applies(fault: Fault, variant: &Variant) -> bool {
    match fault {
        Fault::None => false,
        Fault::RedisRestart | Fault::DaemonCrash => true,
        Fault::BrokerDrop => variant.kind == StrategyKind::Mq,
    }
}

/// Injects `fault` for `duration` and returns once it is over.
async fn inject(
    fault: Fault,
    duration: Duration,
    proxy: Option<&Proxy>,
    running: &tokio::sync::Mutex<Option<Running>>,
    epoch: &watch::Sender<Epoch>,
    config: &Config,
    crashed: &mut Applied,
) -> Result<()> {
    match fault {
        Fault::None => Ok(()),
        Fault::RedisRestart | Fault::BrokerDrop => {
            let proxy = proxy.expect("a proxy is started for network faults");
            proxy.cut();
            tokio::time::sleep(duration).await;
            proxy.restore();
            Ok(())
        }
        Fault::DaemonCrash => {
            let mut slot = running.lock().await;
            let old = epoch.send_replace(Epoch {
                strategy: None,
                crash: CancellationToken::new(),
            });
            // Cut the write calls in flight, then the background work: nothing drains.
            old.crash.cancel();
            if let Some(instance) = slot.take() {
                let applied = instance.crash();
                crashed.written += applied.written;
                crashed.replayed += applied.replayed;
                crashed.stale += applied.stale;
            }
            drop(old);
            tokio::time::sleep(duration).await;
            let restarted = Running::start(config).await?;
            epoch.send_replace(Epoch {
                strategy: Some(restarted.strategy.clone()),
                crash: CancellationToken::new(),
            });
            *slot = Some(restarted);
            Ok(())
        }
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
            Some(strategy) => tokio::select! {
                outcome = strategy.write(write) => Some(outcome.map(|r| (r.committed_at_us, r.row))),
                _ = current.crash.cancelled() => {
                    counters.interrupted.fetch_add(1, Ordering::Relaxed);
                    None
                }
            },
            // With the daemon down, a binlog application still writes MySQL (it never
            // needed the daemon); the others have nowhere to send the write.
            None if variant.kind == StrategyKind::Binlog => Some(
                crate::sqlwrite::commit(&pool, &write)
                    .await
                    .map(|row| (unix_micros(SystemTime::now()), row)),
            ),
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
    mut redis: redis::aio::ConnectionManager,
    ledger: Arc<Ledger>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> Result<Vec<u64>> {
    let mut rng = task_rng(options.seed, 2, index as u64);
    let mut pacer = Pacer::new(options.read_rate, options.readers.max(1), index);
    let mut staleness = Vec::new();
    let reads = metrics::counter!(m::READS, "strategy" => strategy.clone());
    let stale = metrics::counter!(m::STALE_READS, "strategy" => strategy);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = pacer.wait() => {}
        }
        let id = picker.pick(&mut rng);
        let newest = ledger.newest(id);
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("{row_prefix}{id}"))
            .query_async(&mut redis)
            .await
            .map_err(|e| Error::redis("bench reader: GET", e))?;
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
    let terminal = std::io::stderr().is_terminal();
    let every = Duration::from_secs(if terminal { 1 } else { 5 });
    let mut last_writes = 0;
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
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
        let mut err = std::io::stderr().lock();
        if terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
    if terminal {
        let _ = writeln!(std::io::stderr());
    }
}

/// The config a variant runs with: the services of `config`, the bench table, the
/// variant's strategy settings, and the proxy for the fault in between.
fn variant_config(
    config: &Config,
    options: &Options,
    variant: &Variant,
    names: &Names,
    proxy: Option<&Proxy>,
) -> Result<Config> {
    let via_proxy = |url: &str| proxy.map_or(url.to_owned(), |p| faults::via(url, p.addr));
    let mut table = serde_json::json!({
        "name": format!("{}.items", options.database),
        "key": format!("{}{{id}}", names.row_prefix),
    });
    if variant.versioned {
        table["version_column"] = "v".into();
    }
    if variant.invalidate {
        table["mode"] = "invalidate".into();
    }
    let redis_url = if options.fault == Fault::RedisRestart {
        via_proxy(&config.redis_url)
    } else {
        config.redis_url.clone()
    };
    let mut tree = serde_json::json!({
        "strategy": variant.kind.name(),
        "mysql": { "url": config.mysql_url },
        "redis": { "url": redis_url },
        "metrics": { "listen": config.metrics_listen.to_string() },
        "binlog": {
            // Beside a daemon with the same config, the bench's replica needs its own id.
            "server_id": config.binlog.server_id.wrapping_add(1).max(1),
            // So binlog reports `propagation_seconds` and sub-second lag on /metrics as a
            // daemon configured this way would (the table's own figures do not use it).
            "heartbeat_table": format!("{}.{HEARTBEAT_TABLE}", options.database),
            "checkpoint_key": names.checkpoint_key,
            "batch_size": config.binlog.batch_size,
        },
        "tables": [table],
    });
    if let (StrategyKind::Mq, Some(amqp)) = (variant.kind, &config.amqp) {
        let url = if options.fault == Fault::BrokerDrop {
            via_proxy(&amqp.url)
        } else {
            amqp.url.clone()
        };
        tree["amqp"] = serde_json::json!({
            "url": url,
            "exchange": names.amqp,
            "queue": names.amqp,
            "dead_letter_queue": format!("{}.dlq", names.amqp),
            "prefetch": amqp.prefetch,
            "publish": match variant.publish {
                PublishMode::Direct => "direct",
                PublishMode::Outbox => "outbox",
            },
            "outbox_table": format!("{}.outbox_{}", options.database, names.slug.replace('-', "_")),
        });
    }
    RawConfig::from_tree(tree)
        .map_err(Error::Config)?
        .validate()
}

/// Creates (again) `{database}.items` with `keys` rows at version 1.
async fn prepare_table(pool: &mysql_async::Pool, database: &str, keys: u64) -> Result<()> {
    let db = quote_ident(database);
    let mut conn = pool
        .get_conn()
        .await
        .map_err(|e| Error::mysql("bench: connecting to MySQL", e))?;
    let statements = [
        format!("CREATE DATABASE IF NOT EXISTS {db}"),
        format!("DROP TABLE IF EXISTS {db}.items"),
        format!(
            "CREATE TABLE {db}.items (id BIGINT UNSIGNED PRIMARY KEY,              v BIGINT UNSIGNED NOT NULL DEFAULT 1, payload VARCHAR(64) NOT NULL,              updated DATETIME(6) NOT NULL)"
        ),
        // `v` follows commit order: the row lock serialises updates of one row.
        format!(
            "CREATE TRIGGER {db}.items_version BEFORE UPDATE ON {db}.items              FOR EACH ROW SET NEW.v = OLD.v + 1"
        ),
        "SET SESSION max_recursive_iterations = 100000000".to_owned(),
        format!(
            "INSERT INTO {db}.items (id, payload, updated)              WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {keys})              SELECT i, CONCAT('row ', i), '2026-01-01 00:00:00' FROM seq"
        ),
    ];
    for sql in statements {
        conn.query_drop(&sql)
            .await
            .map_err(|e| Error::mysql(format!("bench: preparing the table ({sql})"), e))?;
    }
    Ok(())
}

async fn drop_bench_tables(pool: &mysql_async::Pool, database: &str) {
    let db = quote_ident(database);
    let outcome = async {
        let mut conn = pool.get_conn().await?;
        let outboxes: Vec<String> = conn
            .exec(
                "SELECT table_name FROM information_schema.tables                  WHERE table_schema = ? AND table_name LIKE 'outbox\\_%'",
                (database,),
            )
            .await?;
        conn.query_drop(format!(
            "DROP TABLE IF EXISTS {db}.items, {db}.{HEARTBEAT_TABLE}"
        ))
        .await?;
        for outbox in outboxes {
            conn.query_drop(format!(
                "DROP TABLE IF EXISTS {db}.{}",
                quote_ident(&outbox)
            ))
            .await?;
        }
        Ok::<(), mysql_async::Error>(())
    };
    if let Err(e) = outcome.await {
        tracing::warn!(error = %e, "bench: could not drop the bench tables");
    }
}

/// Deletes every Redis key starting with `prefix`, and the row keys' companions
/// (`{<key>}:cachesync:…`: tombstones, read markers).
async fn clear_redis(redis_url: &str, prefix: &str) -> Result<()> {
    let mut redis = crate::applier::connect_redis(redis_url).await?;
    for pattern in [format!("{prefix}*"), format!("{{{prefix}*")] {
        crate::applier::delete_matching(&mut redis, &pattern, "bench: clearing the bench keys")
            .await?;
    }
    Ok(())
}

/// Deletes the variant's queues and exchanges, so no event of an earlier run is left.
async fn reset_amqp(url: &str, name: &str) -> Result<()> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let shown = crate::redact::redact_url(url);
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| Error::Unreachable {
            service: "RabbitMQ",
            url: shown.clone(),
            reason: e.to_string(),
        })?;
    let fail = |e: lapin::Error| Error::Unreachable {
        service: "RabbitMQ",
        url: shown.clone(),
        reason: format!("resetting the bench's queues {name}: {e}"),
    };
    let channel = conn.create_channel().await.map_err(fail)?;
    for queue in [name.to_owned(), format!("{name}.dlq")] {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .map_err(fail)?;
    }
    for exchange in [name.to_owned(), format!("{name}.dead")] {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .map_err(fail)?;
    }
    conn.close(0, "bench reset".into()).await.map_err(fail)?;
    Ok(())
}

/// Loads every row into Redis through the applier, as a cache that was in use when the
/// run began (the binlog strategy does this itself with its snapshot).
async fn warm(services: &Services, table: &Arc<SyncedTable>) -> Result<()> {
    let mut conn = services
        .pool
        .get_conn()
        .await
        .map_err(|e| Error::mysql("bench: connecting to MySQL", e))?;
    crate::scan::load_into_redis(
        &mut conn,
        table,
        &services.applier,
        1000,
        "bench warm-up",
        |row| table.version_of(row),
    )
    .await
}

/// Waits until the binlog strategy has snapshotted the table and tails.
async fn wait_for_tailing(running: &Running, checkpoint_key: &str) -> Result<()> {
    let mut redis = running.services.applier.connection();
    let began = Instant::now();
    loop {
        let checkpoint: Option<String> = redis::cmd("GET")
            .arg(checkpoint_key)
            .query_async(&mut redis)
            .await
            .map_err(|e| Error::redis("bench: reading the checkpoint", e))?;
        if checkpoint.is_some() {
            return Ok(());
        }
        if running.task.is_finished() {
            return Err(Error::Strategy {
                strategy: "binlog",
                reason: "it stopped before tailing; its error is logged above".to_owned(),
            });
        }
        if began.elapsed() > START_LIMIT {
            return Err(Error::Strategy {
                strategy: "binlog",
                reason: format!("no checkpoint after {START_LIMIT:?}: the snapshot did not finish"),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
