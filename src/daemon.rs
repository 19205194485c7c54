//! `cachesync run`: start-up checks, the strategy's background work, and shutdown.
//!
//! Start-up connects to everything at once and reports every failure together (MySQL and
//! Redis both down is two lines, not one fix-and-retry cycle). Shutdown follows Vector:
//! the first SIGINT/SIGTERM asks the strategy to finish what it holds, within
//! [`DRAIN_TIMEOUT`]; a second signal exits at once.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{ApiState, Readiness};
use crate::applier::Applier;
use crate::config::{ApiConfig, Config};
use crate::error::{Error, Result};
use crate::schema::{self, SyncedTable};
use crate::strategy::{Strategy, StrategyKind, SyncStrategy};

/// How long a graceful shutdown may take before cachesync stops waiting.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a strategy runs on, connected and checked.
pub struct Services {
    pub pool: mysql_async::Pool,
    pub tables: Vec<Arc<SyncedTable>>,
    pub applier: Applier,
}

impl Services {
    /// Connects to MySQL and Redis concurrently and checks the configured tables against
    /// MySQL; every failure is reported.
    pub async fn connect(config: &Config) -> Result<Services> {
        let pool = crate::mysql::pool(&config.mysql_url)?;
        let (tables, applier) = tokio::join!(
            schema::load_tables(config, &pool),
            Applier::connect(&config.redis_url, config.tombstone_ttl, config.strategy)
        );
        match (tables, applier) {
            (Ok(tables), Ok(applier)) => Ok(Services {
                pool,
                tables,
                applier,
            }),
            (Err(a), Err(b)) => Err(Error::Many(vec![a, b])),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }
}

/// Runs the daemon until a signal (or `shutdown` from the caller) stops it.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    spawn_signal_handler(shutdown.clone())?;
    crate::metrics::install(config.metrics_listen)?;
    let services = Services::connect(&config).await?;
    let names: Vec<String> = services.tables.iter().map(|t| t.name()).collect();
    crate::metrics::register_series(config.strategy.name(), &names);
    let strategy = Arc::new(Strategy::build(&config, &services)?);
    let api = match &config.api {
        Some(api) => Some(start_api(api, &config, &services, &strategy).await?),
        None => None,
    };
    info!(
        strategy = config.strategy.name(),
        tables = names.join(","),
        metrics = %format!("http://{}/metrics", config.metrics_listen),
        "cachesync running"
    );

    let work = run_with_api(&strategy, api, shutdown.clone());
    tokio::pin!(work);
    let outcome = tokio::select! {
        outcome = &mut work => outcome,
        _ = shutdown.cancelled() => {
            info!(limit_s = DRAIN_TIMEOUT.as_secs(), "draining");
            match tokio::time::timeout(DRAIN_TIMEOUT, &mut work).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    warn!(limit_s = DRAIN_TIMEOUT.as_secs(), "drain limit reached; stopping with work in flight");
                    Ok(())
                }
            }
        }
    };
    services.pool.disconnect().await.ok();
    info!("stopped");
    outcome
}

/// Binds `[api]`'s listener (a failure names `api.listen`) and builds what it serves.
async fn start_api(
    api: &ApiConfig,
    config: &Config,
    services: &Services,
    strategy: &Arc<Strategy>,
) -> Result<(tokio::net::TcpListener, Arc<ApiState>)> {
    let listener = crate::api::bind(api.listen).await?;
    let amqp_url = config
        .amqp
        .as_ref()
        .filter(|_| config.strategy == StrategyKind::Mq)
        .map(|amqp| amqp.url.as_str());
    let readiness = Readiness::new(
        services.pool.clone(),
        &config.mysql_url,
        &config.redis_url,
        amqp_url,
    )?;
    let state = ApiState::new(
        strategy.clone(),
        services.tables.clone(),
        readiness,
        api.token.clone(),
    );
    Ok((listener, state))
}

/// Runs the strategy and, when configured, the write API. On shutdown the API stops
/// first (no new writes; those in flight finish), then the strategy drains what it holds;
/// when the strategy stops by itself, the API stops too.
async fn run_with_api(
    strategy: &Strategy,
    api: Option<(tokio::net::TcpListener, Arc<ApiState>)>,
    shutdown: CancellationToken,
) -> Result<()> {
    let api_stop = shutdown.child_token();
    let strategy_stop = CancellationToken::new();
    let serve = async {
        let served = match api {
            Some((listener, state)) => crate::api::serve(listener, state, api_stop.clone()).await,
            None => {
                api_stop.cancelled().await;
                Ok(())
            }
        };
        strategy_stop.cancel();
        served
    };
    let run = async {
        let outcome = strategy.run(strategy_stop.clone()).await;
        api_stop.cancel();
        outcome
    };
    let (outcome, served) = tokio::join!(run, serve);
    outcome.and(served)
}

/// `cachesync snapshot`: loads every configured table into Redis from one consistent
/// read and stores its binlog position as the checkpoint, so the next `run` tails from
/// there. For a first start, after a purged binlog, or to rebuild a damaged cache.
pub async fn snapshot(
    config: &Config,
) -> Result<crate::strategy::binlog::position::BinlogPosition> {
    if config.strategy != crate::strategy::StrategyKind::Binlog {
        return Err(Error::Config(vec![format!(
            "strategy: snapshot loads the tables for the binlog strategy and records where to tail from; \
             the config says {:?}",
            config.strategy.name()
        )]));
    }
    let services = Services::connect(config).await?;
    let binlog = crate::strategy::Binlog::new(
        services.pool.clone(),
        config.mysql_url.clone(),
        services.applier.clone(),
        services.tables.clone(),
        config.binlog.clone(),
    );
    let position = binlog.snapshot().await;
    services.pool.disconnect().await.ok();
    position
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
