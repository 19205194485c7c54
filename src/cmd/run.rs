//! `cachesync run`: start-up checks, the strategy's background work, and shutdown.
//!
//! Start-up connects to everything at once and reports every failure together (MySQL and
//! Redis both down is two lines, not one fix-and-retry cycle). [`Daemon`] is a started
//! strategy — the same start and stop for `run`, the benchmark and the criterion benches —
//! with continuous verification running next to it when the config has `[verify]`.
//! Shutdown follows Vector: the first SIGINT/SIGTERM stops the API (no new writes; those
//! in flight finish), then asks the strategy to finish what it holds, all within
//! [`DRAIN_TIMEOUT`]; a second signal exits at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::config::Limits;
use crate::api::grpc::GrpcConfig;
use crate::api::{ApiState, Readiness};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::strategy::{Services, Strategy, SyncStrategy};

use super::connect::{connect, missing_privileges};

/// How long a graceful shutdown may take before cachesync stops waiting.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A started strategy: its write path ready, its background work running until
/// [`Daemon::stop`] (the way SIGTERM stops it) or [`Daemon::abort`] (the way `kill -9`
/// does).
pub struct Daemon {
    strategy: Arc<Strategy>,
    services: Services,
    stop: CancellationToken,
    /// `None` once the background work has ended and its outcome was taken.
    task: Option<JoinHandle<Result<()>>>,
    /// Continuous verification ([`super::anti_entropy`]), when `[verify]` is on. It stops
    /// with the strategy.
    verifying: Option<JoinHandle<()>>,
}

impl Daemon {
    /// Connects ([`connect`]), checks that the MySQL user may do what the strategy needs
    /// ([`missing_privileges`]: a strategy that starts but fails every write is worse than
    /// one that does not start), and starts the configured strategy.
    pub async fn start(config: &Config) -> Result<Daemon> {
        let services = connect(config).await?;
        let problems = missing_privileges(config, &services.pool, &services.tables).await?;
        if !problems.is_empty() {
            services.pool.disconnect().await.ok();
            return Err(Error::Config(problems));
        }
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
        let verifying = config.verify.clone().map(|settings| {
            let target = super::anti_entropy::Target {
                services: services.clone(),
                strategy: config.strategy.name(),
                checkpoint_key: config
                    .strategy
                    .tails_binlog()
                    .then(|| config.deployment_keys().checkpoint),
            };
            tokio::spawn(super::anti_entropy::run(target, settings, stop.clone()))
        });
        Ok(Daemon {
            strategy,
            services,
            stop,
            task: Some(task),
            verifying,
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

    /// Whether the strategy loads Redis itself with online snapshots (write-back does
    /// not: its cache fills row by row).
    pub fn snapshots_online(&self) -> bool {
        self.strategy.snapshots().is_some()
    }

    /// Waits (at most `limit`) until the strategy has loaded Redis: the online
    /// snapshots a first start (or a table added to the config) begins are done.
    pub async fn wait_loaded(&self, limit: Duration) -> Result<()> {
        match self.strategy.snapshots() {
            Some(snapshots) => {
                tokio::select! {
                    loaded = snapshots.wait_loaded(limit) => loaded,
                    // Stopped by itself: an error the caller gets from `finished`.
                    _ = async {
                        while !self.is_finished() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    } => Err(Error::Strategy {
                        strategy: self.strategy.kind().name(),
                        reason: "it stopped before Redis was loaded".to_owned(),
                    }),
                }
            }
            None => Ok(()),
        }
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
        if let Some(verifying) = self.verifying.take() {
            // It stops at its next await; a repair in flight is version-guarded anyway.
            verifying.await.ok();
        }
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
        if let Some(verifying) = &self.verifying {
            verifying.abort();
        }
    }
}

/// Continuous verification belongs to the daemon: it does not outlive it (a strategy
/// that ended by itself, a daemon dropped without [`Daemon::stop`]).
impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(verifying) = &self.verifying {
            verifying.abort();
        }
    }
}

/// Runs the daemon until a signal (or `shutdown` from the caller) stops it.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    spawn_signal_handler(shutdown.clone())?;
    crate::metrics::install(config.metrics_listen)?;
    if !config.metrics_listen.ip().is_loopback() {
        warn!(
            listen = %config.metrics_listen,
            "metrics.listen is not a loopback address: anyone who reaches it reads the \
             metrics (table names, rates, errors); bind it to 127.0.0.1 or firewall it"
        );
    }
    let mut daemon = Daemon::start(&config).await?;
    let names: Vec<String> = daemon.services.tables.iter().map(|t| t.name()).collect();
    config.strategy.register_series(&names);
    let apis = start_apis(&config, &daemon).await?;
    info!(
        strategy = config.strategy.name(),
        tables = names.join(","),
        metrics = %format!("http://{}/metrics", config.metrics_listen),
        "cachesync running"
    );

    let api_stop = CancellationToken::new();
    let mut serving = tokio::spawn({
        let api_stop = api_stop.clone();
        let limits = config
            .api
            .as_ref()
            .map(|api| api.limits)
            .unwrap_or_default();
        let grpc = config.grpc.clone();
        async move { serve_apis(apis, limits, grpc, api_stop).await }
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

/// The APIs' bound listeners and what they serve from.
struct Apis {
    state: Arc<ApiState>,
    /// `[api]`'s.
    http: Option<tokio::net::TcpListener>,
    /// `[grpc]`'s.
    grpc: Option<tokio::net::TcpListener>,
}

/// Binds the listeners of `[api]` and `[grpc]` (a failure names `api.listen` or
/// `grpc.listen`) and builds what both serve from; `None` when neither is configured.
async fn start_apis(config: &Config, daemon: &Daemon) -> Result<Option<Apis>> {
    if config.api.is_none() && config.grpc.is_none() {
        return Ok(None);
    }
    let http = match &config.api {
        Some(api) => Some(crate::api::bind(api.listen).await?),
        None => None,
    };
    let grpc = match &config.grpc {
        Some(grpc) => Some(crate::api::grpc::bind(grpc.listen).await?),
        None => None,
    };
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
        config.api.as_ref().and_then(|api| api.token.clone()),
    );
    Ok(Some(Apis { state, http, grpc }))
}

/// Serves the configured APIs until `stop`, then lets each finish what it started; ends
/// early with the first one that fails.
async fn serve_apis(
    apis: Option<Apis>,
    limits: Limits,
    grpc_config: Option<GrpcConfig>,
    stop: CancellationToken,
) -> Result<()> {
    let Some(Apis { state, http, grpc }) = apis else {
        stop.cancelled().await;
        return Ok(());
    };
    let http = async {
        match http {
            Some(listener) => {
                crate::api::serve_with(listener, state.clone(), stop.clone(), limits).await
            }
            None => Ok(()),
        }
    };
    let grpc = async {
        match (grpc, grpc_config) {
            (Some(listener), Some(settings)) => {
                crate::api::grpc::serve(listener, state.clone(), settings, stop.clone()).await
            }
            _ => Ok(()),
        }
    };
    tokio::try_join!(http, grpc).map(|_| ())
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
