//! The three ways to keep Redis in sync, behind one trait.
//!
//! A strategy says two things: how the application's write happens
//! ([`SyncStrategy::write`]) and what background work moves committed changes into Redis
//! ([`SyncStrategy::run`]). Everything on the Redis side — version-guarded writes,
//! metrics, retries of a batch — belongs to the shared [`Applier`], and lifecycle
//! (signals, drain limit) to [`crate::daemon`], so no strategy can forget an ack, a
//! metric or a drain, and the benchmark drives all three the same way.
//!
//! The set is closed and small, so it is an enum ([`Strategy`]) with one module per
//! variant and exhaustive matches, not a plugin registry.

pub mod binlog;
pub mod dual_write;
pub mod mq;

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::applier::{Applied, Op};
use crate::config::Config;
use crate::daemon::Services;
use crate::error::{Error, Result};
use crate::row::Cell;
use crate::schema::SyncedTable;

pub use binlog::Binlog;
pub use dual_write::DualWrite;
pub use mq::Mq;

/// A strategy's name, as written in `strategy = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StrategyKind {
    /// Write MySQL, commit, then write Redis — the application does both.
    DualWrite,
    /// Publish change events to RabbitMQ; a consumer applies them to Redis.
    Mq,
    /// Tail the row binlog as a replica and apply row images to Redis.
    Binlog,
}

impl StrategyKind {
    pub const ALL: [StrategyKind; 3] = [
        StrategyKind::DualWrite,
        StrategyKind::Mq,
        StrategyKind::Binlog,
    ];

    /// The config name, also the `strategy` metric label.
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::DualWrite => "dual-write",
            StrategyKind::Mq => "mq",
            StrategyKind::Binlog => "binlog",
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown strategy name; the message lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStrategy(String);

impl fmt::Display for UnknownStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let valid: Vec<&str> = StrategyKind::ALL.iter().map(|s| s.name()).collect();
        write!(
            f,
            "unknown strategy {:?}; valid strategies: {}",
            self.0,
            valid.join(", ")
        )
    }
}

impl FromStr for StrategyKind {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        StrategyKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownStrategy(s.to_owned()))
    }
}

/// A row change the application asks for.
#[derive(Debug, Clone)]
pub struct RowWrite {
    pub table: Arc<SyncedTable>,
    pub op: Op,
    /// Column name → value. An upsert names the columns it sets (at least the primary
    /// key); a delete names exactly the primary-key columns.
    pub values: Vec<(String, mysql_async::Value)>,
}

/// What a completed write reports.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteReceipt {
    /// When MySQL committed the change, µs since the Unix epoch (as seen by cachesync
    /// right after COMMIT returned).
    pub committed_at_us: u64,
    /// The version the change carries, if the table has one.
    pub version: Option<u64>,
    /// Where Redis stands for this change when the write returns.
    pub redis: RedisOutcome,
    /// The row as committed, read back inside the write's transaction (`None` for a
    /// delete). The benchmark reads its own version column from it whatever the table's
    /// `version_column`, to tell which committed change Redis holds.
    pub row: Option<Vec<Cell>>,
}

/// What a write did to Redis by the time it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisOutcome {
    /// The write path wrote Redis itself (dual-write).
    Applied(Applied),
    /// Dual-write: Redis failed after the commit; the key waits in the repair queue and
    /// is stale until repaired.
    Pending,
    /// The strategy's background work applies the change (mq consumer, binlog tailer).
    Background,
}

/// One way of keeping Redis in sync with MySQL.
pub trait SyncStrategy: Send + Sync {
    fn kind(&self) -> StrategyKind;

    /// The application's write path: make `write` in MySQL and return once this
    /// strategy's part of the write is done (dual-write: Redis written too; mq: the
    /// broker confirmed the event; binlog: the commit alone).
    fn write(&self, write: RowWrite) -> impl Future<Output = Result<WriteReceipt>> + Send;

    /// The background work that moves committed changes into Redis through the shared
    /// [`Applier`], until `shutdown` is cancelled; then it finishes what it holds and
    /// returns.
    fn run(&self, shutdown: CancellationToken) -> impl Future<Output = Result<()>> + Send;
}

/// The configured strategy. Each variant lives in its own module.
pub enum Strategy {
    DualWrite(DualWrite),
    Mq(Mq),
    Binlog(Binlog),
}

impl Strategy {
    /// Builds the configured strategy on connected, checked `services`; it writes rows
    /// to Redis only through their applier.
    pub fn build(config: &Config, services: &Services) -> Result<Strategy> {
        match config.strategy {
            StrategyKind::DualWrite => Ok(Strategy::DualWrite(DualWrite::new(
                services.pool.clone(),
                services.applier.clone(),
            ))),
            StrategyKind::Binlog => Ok(Strategy::Binlog(Binlog::new(
                services.pool.clone(),
                config.mysql_url.clone(),
                services.applier.clone(),
                services.tables.clone(),
                config.binlog.clone(),
            ))),
            StrategyKind::Mq => {
                let amqp = config.amqp.clone().ok_or_else(|| {
                    Error::Config(vec!["amqp.url: required when strategy = \"mq\"".to_owned()])
                })?;
                Ok(Strategy::Mq(Mq::new(
                    services.pool.clone(),
                    config.mysql_url.clone(),
                    services.applier.clone(),
                    &services.tables,
                    amqp,
                )))
            }
        }
    }
}

impl SyncStrategy for Strategy {
    fn kind(&self) -> StrategyKind {
        match self {
            Strategy::DualWrite(s) => s.kind(),
            Strategy::Mq(s) => s.kind(),
            Strategy::Binlog(s) => s.kind(),
        }
    }

    async fn write(&self, write: RowWrite) -> Result<WriteReceipt> {
        match self {
            Strategy::DualWrite(s) => s.write(write).await,
            Strategy::Mq(s) => s.write(write).await,
            Strategy::Binlog(s) => s.write(write).await,
        }
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        match self {
            Strategy::DualWrite(s) => s.run(shutdown).await,
            Strategy::Mq(s) => s.run(shutdown).await,
            Strategy::Binlog(s) => s.run(shutdown).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_lists_valid() {
        for kind in StrategyKind::ALL {
            assert_eq!(kind.name().parse::<StrategyKind>(), Ok(kind));
        }
        let err = "cdc".parse::<StrategyKind>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown strategy \"cdc\"; valid strategies: dual-write, mq, binlog"
        );
    }
}
