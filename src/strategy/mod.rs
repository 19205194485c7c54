//! The ways to keep Redis in sync, behind one trait.
//!
//! A strategy says two things: how the application's write happens
//! ([`SyncStrategy::write`]) and what background work moves committed changes into Redis
//! ([`SyncStrategy::run`]). Everything on the Redis side — version-guarded writes,
//! metrics, retries of a batch, `invalidate` mode — belongs to the shared [`Applier`],
//! and lifecycle (signals, drain limit) to [`crate::cmd::run`], so no strategy can
//! forget an ack, a metric or a drain, and the benchmark drives them all the same way.
//!
//! The set is closed and small, so it is an enum ([`Strategy`], [`StrategyKind`]) with
//! one folder per variant and exhaustive matches, not a plugin registry. What the rest of
//! cachesync needs to know about a strategy — does it need a broker, the row binlog, a
//! running daemon for its writes; what coupling it has — it asks [`StrategyKind`]; no
//! module outside this folder compares kinds. `docs/adding-a-strategy.md` lists the
//! touch points of a new one.

pub mod binlog;
pub mod dual_write;
pub mod mq;
pub mod write_back;

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use self::binlog::config::BinlogConfig;
use self::mq::config::{AmqpConfig, PublishMode};
use self::write_back::config::WriteBackConfig;
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::model::cell::Cell;
use crate::model::cell::Format;
use crate::model::change::{Applied, RowWrite};
use crate::model::table::{Mode, SyncedTable, TableConfig};
use crate::redis::Applier;
use crate::redis::keyspace::DeploymentKeys;
use crate::snapshot::config::SnapshotConfig;
use crate::snapshot::{Planned, Setup, Snapshots, Stamp};

pub use binlog::Binlog;
pub use dual_write::DualWrite;
pub use mq::Mq;
pub use write_back::WriteBack;

/// A strategy's name, as written in `strategy = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StrategyKind {
    /// Write MySQL, commit, then write Redis — the application does both.
    DualWrite,
    /// Publish change events to RabbitMQ; a consumer applies them to Redis.
    Mq,
    /// Tail the row binlog as a replica and apply row images to Redis.
    Binlog,
    /// Write the cache only; a queue in Redis carries each change to MySQL later.
    WriteBack,
}

impl StrategyKind {
    pub const ALL: [StrategyKind; 4] = [
        StrategyKind::DualWrite,
        StrategyKind::Mq,
        StrategyKind::Binlog,
        StrategyKind::WriteBack,
    ];

    /// The config name, also the `strategy` metric label.
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::DualWrite => "dual-write",
            StrategyKind::Mq => "mq",
            StrategyKind::Binlog => "binlog",
            StrategyKind::WriteBack => "write-back",
        }
    }

    /// Whether change events travel through RabbitMQ (`[amqp]` is required).
    pub fn needs_broker(self) -> bool {
        match self {
            StrategyKind::Mq => true,
            StrategyKind::DualWrite | StrategyKind::Binlog | StrategyKind::WriteBack => false,
        }
    }

    /// Whether it reads the server's row binlog as a replica, so the binlog settings and
    /// replication grants `doctor` checks are requirements rather than notes.
    pub fn tails_binlog(self) -> bool {
        match self {
            StrategyKind::Binlog => true,
            StrategyKind::DualWrite | StrategyKind::Mq | StrategyKind::WriteBack => false,
        }
    }

    /// Whether the application's writes go through cachesync (its write API or library
    /// call), so they stop while the daemon is down; a binlog application writes MySQL
    /// directly and never needs it.
    pub fn writes_need_the_daemon(self) -> bool {
        match self {
            StrategyKind::DualWrite | StrategyKind::Mq | StrategyKind::WriteBack => true,
            StrategyKind::Binlog => false,
        }
    }

    /// Whether every change reaches the applier with a version that follows commit order,
    /// so the guard keeps each row's changes in order (drops older ones, tells repeats),
    /// given whether the table has a `version_column` and, for mq, how events are
    /// published. The binlog position, the outbox id, a version column and the
    /// write-back queue's versions all do.
    pub fn keeps_commit_order(self, versioned: bool, publish: PublishMode) -> bool {
        match self {
            StrategyKind::Binlog | StrategyKind::WriteBack => true,
            StrategyKind::Mq => versioned || publish == PublishMode::Outbox,
            StrategyKind::DualWrite => versioned,
        }
    }

    /// How an online snapshot keeps a chunk row from overwriting a newer synced change of
    /// a table (see [`crate::snapshot`]): a binlog position when the strategy versions
    /// changes by position; the row's version column when that is the version the
    /// strategy's changes carry (a `version_column`, and for mq only when events are
    /// published directly: outbox events carry outbox ids, which a row does not hold);
    /// otherwise the read lease.
    pub fn snapshot_stamp(self, versioned: bool, publish: PublishMode) -> Stamp {
        match self {
            StrategyKind::Binlog => Stamp::ConsistentRead,
            StrategyKind::DualWrite if versioned => Stamp::RowVersion,
            StrategyKind::Mq if versioned && publish == PublishMode::Direct => Stamp::RowVersion,
            StrategyKind::DualWrite | StrategyKind::Mq => Stamp::Lease,
            // Never asked: write-back runs no online snapshot (its cache fills on a row's
            // first read or write). A lease would not do for it: a chunk row read from
            // MySQL may be older than an unflushed write the cache already holds.
            StrategyKind::WriteBack => Stamp::Lease,
        }
    }

    /// The textbook's "coupling" column: what the application's writers talk to.
    pub fn coupling(self) -> &'static str {
        match self {
            StrategyKind::DualWrite => "high: every writer talks to Redis",
            StrategyKind::Mq => "medium: writers talk to the broker",
            StrategyKind::Binlog => "low: writers know only MySQL",
            StrategyKind::WriteBack => "high: writers know only the cache; MySQL trails it",
        }
    }

    /// The textbook's "what the application must do" column.
    pub fn application_duty(self, versioned: bool, publish: PublishMode) -> &'static str {
        match (self, publish, versioned) {
            (StrategyKind::DualWrite, _, false) => {
                "write Redis after every commit, repair failures"
            }
            (StrategyKind::DualWrite, _, true) => {
                "write Redis after every commit with the row's version, repair failures"
            }
            (StrategyKind::Mq, PublishMode::Direct, _) => "publish an event after every commit",
            (StrategyKind::Mq, PublishMode::Outbox, _) => {
                "insert an outbox row in every write transaction"
            }
            (StrategyKind::Binlog, _, _) => "nothing (ROW binlog and a replication grant)",
            (StrategyKind::WriteBack, _, _) => {
                "write the cache only, and accept that MySQL may refuse a write it acknowledged"
            }
        }
    }

    /// Creates the series this strategy reports, zeroed, so they appear in the first
    /// scrape: the shared ones, plus its own.
    pub fn register_series(self, tables: &[String]) {
        m::register_series(self.name(), tables);
        match self {
            StrategyKind::DualWrite => {
                metrics::gauge!(m::REPAIRS_PENDING, "strategy" => self.name()).set(0.0)
            }
            StrategyKind::Mq => {
                metrics::counter!(m::DEAD_LETTERED, "strategy" => self.name()).increment(0)
            }
            StrategyKind::Binlog => {
                for table in tables {
                    metrics::counter!(m::UNDECODABLE_ROWS, "strategy" => self.name(), "table" => table.clone())
                        .increment(0);
                    metrics::counter!(m::CASCADED_CHANGES, "strategy" => self.name(), "table" => table.clone())
                        .increment(0);
                }
            }
            StrategyKind::WriteBack => {
                metrics::counter!(m::DEAD_LETTERED, "strategy" => self.name()).increment(0);
                metrics::counter!(m::WRITE_BACK_COALESCED, "strategy" => self.name()).increment(0);
                metrics::counter!(m::WRITE_BACK_FLUSH_ERRORS, "strategy" => self.name())
                    .increment(0);
                metrics::gauge!(m::WRITE_BACK_QUEUE_DEPTH, "strategy" => self.name()).set(0.0);
                metrics::gauge!(m::WRITE_BACK_FLUSH_LAG, "strategy" => self.name()).set(0.0);
            }
        }
    }

    /// Whether acknowledged writes live only in Redis until they are flushed, so a Redis
    /// that loses its data loses them (`doctor` asks for persistence), and the cache leads
    /// MySQL by design: a key that differs from its row may be a write on its way, so
    /// continuous verification cannot run, and a missing key is only one not read or
    /// written yet (the cache fills row by row).
    pub fn redis_holds_unflushed_writes(self) -> bool {
        match self {
            StrategyKind::WriteBack => true,
            StrategyKind::DualWrite | StrategyKind::Mq | StrategyKind::Binlog => false,
        }
    }

    /// Why this strategy cannot sync `table` as configured, if it cannot.
    pub fn table_problem(self, table: &TableConfig) -> Option<&'static str> {
        match self {
            StrategyKind::DualWrite | StrategyKind::Mq | StrategyKind::Binlog => None,
            StrategyKind::WriteBack if table.format != Format::Json => {
                Some("write-back keeps rows in the json format only (format = \"json\")")
            }
            StrategyKind::WriteBack if table.mode != Mode::Write => {
                Some("write-back makes the cache the source of truth: mode must be \"write\"")
            }
            StrategyKind::WriteBack => None,
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

/// Every strategy's own settings section, validated (each is declared in its folder's
/// `config.rs`). `None` for a section the config does not have.
#[derive(Debug, Clone)]
pub struct Sections {
    pub binlog: BinlogConfig,
    pub amqp: Option<AmqpConfig>,
    pub write_back: WriteBackConfig,
    /// `redis.tombstone_ttl`: how long a delete's version is remembered.
    pub tombstone_ttl: std::time::Duration,
}

/// Everything a strategy runs on, connected and checked (by [`crate::cmd::run`]).
#[derive(Clone)]
pub struct Services {
    pub pool: mysql_async::Pool,
    /// `mysql.url`, for messages (shown redacted) and the binlog stream.
    pub mysql_url: String,
    /// `redis.url`, for a strategy that needs a Redis connection of its own (one that
    /// blocks on a stream must not hold up the applier's).
    pub redis_url: String,
    pub tables: Vec<Arc<SyncedTable>>,
    pub applier: Applier,
    /// The keys this deployment keeps in Redis (checkpoint, marker, snapshot progress).
    pub keys: DeploymentKeys,
    /// `[snapshot]`: online snapshots and data-loss checks.
    pub snapshot: SnapshotConfig,
}

impl Services {
    /// The online snapshots of a strategy whose chunk rows are guarded per table as
    /// [`StrategyKind::snapshot_stamp`] says (not binlog, which brings its consistent
    /// read: [`Binlog::new`]).
    pub fn snapshots(&self, kind: StrategyKind, publish: PublishMode) -> Result<Snapshots> {
        Snapshots::new(Setup {
            pool: self.pool.clone(),
            mysql_url: self.mysql_url.clone(),
            applier: self.applier.clone(),
            keys: self.keys.clone(),
            settings: self.snapshot.clone(),
            strategy: kind.name(),
            tables: self
                .tables
                .iter()
                .map(|t| Planned {
                    table: t.clone(),
                    stamp: kind.snapshot_stamp(t.version_column.is_some(), publish),
                })
                .collect(),
            consistent: None,
        })
    }
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
    /// delete): what defaults, triggers and type coercion made of the request. Every
    /// write path reads it anyway (it is what Redis gets); a caller that needs a column
    /// the request did not set uses it — the benchmark reads its trigger-maintained `v`
    /// from it, whatever the table's `version_column`, to tell which committed change
    /// Redis holds.
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

/// The configured strategy. Each variant lives in its own folder.
pub enum Strategy {
    DualWrite(DualWrite),
    Mq(Mq),
    Binlog(Binlog),
    WriteBack(WriteBack),
}

impl Strategy {
    /// Builds the strategy `kind` with its settings section on connected, checked
    /// `services`; it writes rows to Redis only through their applier.
    pub fn build(kind: StrategyKind, sections: &Sections, services: &Services) -> Result<Strategy> {
        match kind {
            StrategyKind::DualWrite => Ok(Strategy::DualWrite(
                DualWrite::new(services.pool.clone(), services.applier.clone())
                    // Dual-write has no publish mode; any gives its stamp.
                    .with_snapshots(services.snapshots(kind, PublishMode::Direct)?),
            )),
            StrategyKind::Binlog => Ok(Strategy::Binlog(Binlog::new(
                services,
                sections.binlog.clone(),
            )?)),
            StrategyKind::Mq => {
                let amqp = sections.amqp.clone().ok_or_else(|| {
                    Error::Config(vec!["amqp.url: required when strategy = \"mq\"".to_owned()])
                })?;
                let snapshots = services.snapshots(kind, amqp.publish)?;
                Ok(Strategy::Mq(
                    Mq::new(services, amqp).with_snapshots(snapshots),
                ))
            }
            StrategyKind::WriteBack => Ok(Strategy::WriteBack(WriteBack::new(
                services,
                sections.write_back.clone(),
                sections.tombstone_ttl,
            ))),
        }
    }
}

impl Strategy {
    /// The online snapshots this strategy runs (`None` for a strategy built without
    /// them, as tests of the write path do).
    pub fn snapshots(&self) -> Option<&Snapshots> {
        match self {
            Strategy::DualWrite(s) => s.snapshots(),
            Strategy::Mq(s) => s.snapshots(),
            Strategy::Binlog(s) => Some(s.snapshots()),
            // The cache is where writes land first: MySQL's rows may be older than it.
            Strategy::WriteBack(_) => None,
        }
    }
}

impl SyncStrategy for Strategy {
    fn kind(&self) -> StrategyKind {
        match self {
            Strategy::DualWrite(s) => s.kind(),
            Strategy::Mq(s) => s.kind(),
            Strategy::Binlog(s) => s.kind(),
            Strategy::WriteBack(s) => s.kind(),
        }
    }

    /// Times every write the same way, whatever the strategy: the application's call,
    /// from the first statement to the strategy's answer (`write_duration_seconds`).
    async fn write(&self, write: RowWrite) -> Result<WriteReceipt> {
        let started = Instant::now();
        let table = write.table.clone();
        let receipt = match self {
            Strategy::DualWrite(s) => s.write(write).await,
            Strategy::Mq(s) => s.write(write).await,
            Strategy::Binlog(s) => s.write(write).await,
            Strategy::WriteBack(s) => s.write(write).await,
        }?;
        metrics::histogram!(m::WRITE_DURATION, "strategy" => self.kind().name(), "table" => table.name())
            .record(started.elapsed().as_secs_f64());
        Ok(receipt)
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        match self {
            Strategy::DualWrite(s) => s.run(shutdown).await,
            Strategy::Mq(s) => s.run(shutdown).await,
            Strategy::Binlog(s) => s.run(shutdown).await,
            Strategy::WriteBack(s) => s.run(shutdown).await,
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
        let valid: Vec<&str> = StrategyKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(
            err,
            format!(
                "unknown strategy \"cdc\"; valid strategies: {}",
                valid.join(", ")
            )
        );
        assert!(err.contains("dual-write, mq, binlog"), "{err}");
    }
}
