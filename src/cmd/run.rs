//! `cachesync run`: start-up checks, the strategy's background work, and shutdown.
//!
//! Start-up connects to everything at once and reports every failure together (MySQL and
//! Redis both down is two lines, not one fix-and-retry cycle). [`Daemon`] is a started
//! strategy — the same start and stop for `run`, the benchmark and the criterion benches.
//! Shutdown follows Vector: the first SIGINT/SIGTERM stops the API (no new writes; those
//! in flight finish), then asks the strategy to finish what it holds, all within
//! [`DRAIN_TIMEOUT`]; a second signal exits at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::config::ApiConfig;
use crate::api::{ApiState, Readiness};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::redis::Applier;
use crate::strategy::{Services, Strategy, SyncStrategy};

/// How long a graceful shutdown may take before cachesync stops waiting.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to MySQL and Redis concurrently and checks the configured tables against
/// MySQL; every failure is reported.
pub async fn connect(config: &Config) -> Result<Services> {
    let pool = crate::mysql::pool(&config.mysql_url)?;
    let (tables, applier) = tokio::join!(
        crate::mysql::schema::load_tables(&config.tables, &pool, &config.mysql_url),
        Applier::connect(
            &config.redis_url,
            config.tombstone_ttl,
            config.strategy.name()
        )
    );
    match (tables, applier) {
        (Ok(tables), Ok(applier)) => Ok(Services {
            pool,
            mysql_url: config.mysql_url.clone(),
            redis_url: config.redis_url.clone(),
            tables,
            applier,
        }),
        (Err(a), Err(b)) => Err(Error::Many(vec![a, b])),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// A started strategy: its write path ready, its background work running until
/// [`Daemon::stop`] (the way SIGTERM stops it) or [`Daemon::abort`] (the way `kill -9`
/// does).
pub struct Daemon {
    strategy: Arc<Strategy>,
    services: Services,
    stop: CancellationToken,
    /// `None` once the background work has ended and its outcome was taken.
    task: Option<JoinHandle<Result<()>>>,
}

impl Daemon {
    /// Connects ([`connect`]) and starts the configured strategy.
    pub async fn start(config: &Config) -> Result<Daemon> {
        let services = connect(config).await?;
        Daemon::start_on(config, services)
    }

    /// Starts the configured strategy on connected, checked `services`.
    pub fn start_on(config: &Config, services: Services) -> Result<Daemon> {
        let strategy = Arc::new(Strategy::build(
            config.strategy,
            &config.sections(),
            &services,
        )?);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let strategy = strategy.clone();
            let stop = stop.clone();
            async move { strategy.run(stop).await }
        });
        Ok(Daemon {
            strategy,
            services,
            stop,
            task: Some(task),
        })
    }

    /// The strategy, for its write path.
    pub fn strategy(&self) -> &Arc<Strategy> {
        &self.strategy
    }

    /// What the strategy runs on.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Whether the background work has ended (by itself: an error it does not retry).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits until the background work ends — by itself only on an error it does not
    /// retry — and returns its outcome. Cancel-safe.
    pub async fn finished(&mut self) -> Result<()> {
        let Some(task) = self.task.as_mut() else {
            return Ok(());
        };
        let outcome = task.await;
        self.task = None;
        outcome.unwrap_or_else(|e| {
            Err(Error::Strategy {
                strategy: self.strategy.kind().name(),
                reason: format!("its background task failed: {e}"),
            })
        })
    }

    /// Stops the way SIGTERM does: the strategy finishes what it holds, then returns,
    /// logging what it applied to Redis since it started. The caller bounds how long
    /// that may take.
    pub async fn stop(mut self) -> Result<()> {
        self.stop.cancel();
        let outcome = self.finished().await;
        let applied = self.services.applier.totals();
        info!(
            written = applied.written,
            replayed = applied.replayed,
            stale = applied.stale,
            "strategy stopped; changes applied to Redis since the start"
        );
        outcome
    }

    /// Stops the way `kill -9` does: no drain; the background work stops at its next
    /// await.
    pub fn abort(self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Runs the daemon until a signal (or `shutdown` from the caller) stops it.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    spawn_signal_handler(shutdown.clone())?;
    crate::metrics::install(config.metrics_listen)?;
    let mut daemon = Daemon::start(&config).await?;
    let names: Vec<String> = daemon.services.tables.iter().map(|t| t.name()).collect();
    config.strategy.register_series(&names);
    let api = match &config.api {
        Some(api) => Some(start_api(api, &config, &daemon).await?),
        None => None,
    };
    info!(
        strategy = config.strategy.name(),
        tables = names.join(","),
        metrics = %format!("http://{}/metrics", config.metrics_listen),
        "cachesync running"
    );

    let api_stop = CancellationToken::new();
    let mut serving = tokio::spawn({
        let api_stop = api_stop.clone();
        async move {
            match api {
                Some((listener, state)) => crate::api::serve(listener, state, api_stop).await,
                None => {
                    api_stop.cancelled().await;
                    Ok(())
                }
            }
        }
    });
    // Until a signal, or the strategy or the API stops by itself (an error).
    let pool = daemon.services.pool.clone();
    let outcome = tokio::select! {
        ended = daemon.finished() => {
            api_stop.cancel();
            ended.and(join_api(serving).await)
        }
        served = &mut serving => {
            let served = joined(served);
            daemon.stop().await.and(served)
        }
        _ = shutdown.cancelled() => {
            info!(limit_s = DRAIN_TIMEOUT.as_secs(), "draining");
            let drain = async {
                // The API first: no new writes, those in flight finish; then the strategy.
                api_stop.cancel();
                let served = join_api(serving).await;
                daemon.stop().await.and(served)
            };
            match tokio::time::timeout(DRAIN_TIMEOUT, drain).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    warn!(limit_s = DRAIN_TIMEOUT.as_secs(), "drain limit reached; stopping with work in flight");
                    Ok(())
                }
            }
        }
    };
    pool.disconnect().await.ok();
    info!("stopped");
    outcome
}

/// The API task's outcome, once it ends.
async fn join_api(serving: JoinHandle<Result<()>>) -> Result<()> {
    joined(serving.await)
}

fn joined(served: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    served.unwrap_or_else(|e| {
        Err(Error::Io {
            context: "serving the API".to_owned(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// Binds `[api]`'s listener (a failure names `api.listen`) and builds what it serves.
async fn start_api(
    api: &ApiConfig,
    config: &Config,
    daemon: &Daemon,
) -> Result<(tokio::net::TcpListener, Arc<ApiState>)> {
    let listener = crate::api::bind(api.listen).await?;
    let amqp_url = config
        .amqp
        .as_ref()
        .filter(|_| config.strategy.needs_broker())
        .map(|amqp| amqp.url.as_str());
    let services = &daemon.services;
    let readiness = Readiness::new(
        services.pool.clone(),
        &config.mysql_url,
        &config.redis_url,
        amqp_url,
    )?;
    let state = ApiState::new(
        daemon.strategy.clone(),
        services.tables.clone(),
        readiness,
        api.token.clone(),
    );
    Ok((listener, state))
}

/// First SIGINT/SIGTERM: cancel `shutdown` (drain). Second: exit now.
///
/// The signal streams are registered before this returns, so a signal that arrives
/// while cachesync is still connecting is queued for the handler instead of killing the
/// process with the default action.
fn spawn_signal_handler(shutdown: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|source| Error::Io {
            context: format!("listening for {name}"),
            source,
        })
    };
    let mut term = listen(SignalKind::terminate(), "SIGTERM")?;
    let mut int = listen(SignalKind::interrupt(), "SIGINT")?;
    tokio::spawn(async move {
        let mut next_signal = async || {
            tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            }
        };
        let first = next_signal().await;
        info!(
            signal = first,
            "shutting down; send the signal again to quit at once"
        );
        shutdown.cancel();
        let second = next_signal().await;
        warn!(signal = second, "second signal: quitting now");
        std::process::exit(130);
    });
    Ok(())
}
