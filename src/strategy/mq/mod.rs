//! MQ-driven: change events travel through RabbitMQ; a consumer applies them to Redis.
//!
//! Write path, by `amqp.publish`:
//! - `direct`: commit the row, then publish its event and wait for the broker's confirm.
//!   A crash (or broker failure) between the two loses the change for Redis: the write
//!   returns an error, but the row is committed.
//! - `outbox` (default): the event goes into the outbox table *in the row's transaction*;
//!   the relay ([`outbox`]) publishes outbox rows in id order and deletes them once the
//!   broker confirmed. Nothing committed can be lost; the outbox id is the event's
//!   version (same-row writers are serialised by the row lock, so ids follow their commit
//!   order). The write waits (up to [`RELAY_WAIT`]) for the relay's confirm.
//!
//! Background ([`SyncStrategy::run`]): the relay, and the consumer ([`consumer`]): durable
//! queue, `amqp.prefetch` unacknowledged messages, manual ack only after Redis holds the
//! change, reconnect with backoff. A message that can never be applied (malformed,
//! unknown table) is rejected to the dead-letter queue and counted. Redeliveries and
//! duplicates are harmless: events carry versions and the applier keeps the newest.

pub mod broker;
pub mod config;
pub mod consumer;
pub mod outbox;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mysql_async::TxOpts;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use self::broker::Publisher;
use self::config::{AmqpConfig, PublishMode};
use super::{RedisOutcome, Services, StrategyKind, SyncStrategy, WriteReceipt};
use crate::error::{Error, Result};
use crate::model::cell::Cell;
use crate::model::change::{RowWrite, unix_micros};
use crate::model::event::ChangeEvent;
use crate::model::table::SyncedTable;
use crate::mysql::schema::Replanner;
use crate::mysql::write::Written;
use crate::redis::Applier;
use crate::snapshot::Snapshots;

/// How long an outbox write waits for the relay's confirm before returning anyway (the
/// event is safe in the outbox either way).
pub const RELAY_WAIT: Duration = Duration::from_secs(10);

/// The committed half of an mq write: when it committed and the row read back.
#[derive(Debug, Clone)]
pub struct Committed {
    /// µs since the Unix epoch, right after COMMIT returned (outbox: just before COMMIT).
    pub committed_at_us: u64,
    /// The row as committed; `None` for a delete.
    pub row: Option<Vec<Cell>>,
}

/// The MQ strategy.
pub struct Mq {
    pool: mysql_async::Pool,
    mysql_url: String,
    applier: Applier,
    tables: HashMap<String, Arc<SyncedTable>>,
    config: AmqpConfig,
    publisher: Arc<Publisher>,
    /// Wakes the relay when a write added an outbox row.
    relay_kick: Arc<Notify>,
    /// The highest outbox id the broker has confirmed.
    relayed: watch::Sender<u64>,
    /// Set once the outbox table is known to exist (the first write or `run` makes sure).
    outbox_ready: tokio::sync::OnceCell<()>,
    /// Keeps Redis complete: loads it online when it is empty or lost its data, and
    /// snapshots tables on request ([`crate::snapshot::watch`]). `None` when built
    /// without (tests of the write and consume paths).
    snapshots: Option<Snapshots>,
}

impl Mq {
    pub fn new(services: &Services, config: AmqpConfig) -> Mq {
        Mq {
            pool: services.pool.clone(),
            mysql_url: services.mysql_url.clone(),
            applier: services.applier.clone(),
            tables: services
                .tables
                .iter()
                .map(|t| (t.name(), t.clone()))
                .collect(),
            publisher: Arc::new(Publisher::new(config.clone())),
            config,
            relay_kick: Arc::new(Notify::new()),
            relayed: watch::channel(0).0,
            outbox_ready: tokio::sync::OnceCell::new(),
            snapshots: None,
        }
    }

    /// Also keeps Redis complete with `snapshots` while [`SyncStrategy::run`] runs.
    pub fn with_snapshots(mut self, snapshots: Snapshots) -> Mq {
        self.snapshots = Some(snapshots);
        self
    }

    pub fn snapshots(&self) -> Option<&Snapshots> {
        self.snapshots.as_ref()
    }

    /// Creates the outbox table once per process, before its first use.
    async fn ensure_outbox(&self) -> Result<()> {
        self.outbox_ready
            .get_or_try_init(|| {
                outbox::ensure_table(&self.pool, &self.mysql_url, &self.config.outbox_table)
            })
            .await
            .map(|_| ())
    }

    /// The first half of a `direct` write: commit the row and build its event. Exposed
    /// so tests can stop here, as a crash would.
    pub async fn commit_direct(&self, write: &RowWrite) -> Result<(ChangeEvent, Committed)> {
        let written = crate::mysql::write::commit(&self.pool, write).await?;
        let committed_at_us = unix_micros(SystemTime::now());
        Ok((
            self.event(write, &written, None, committed_at_us)?,
            Committed {
                committed_at_us,
                row: written.into_upserted(),
            },
        ))
    }

    /// The first half of an `outbox` write: the row and its event in one transaction.
    /// Returns the outbox id. Exposed so tests can stop here, as a crash would.
    pub async fn commit_with_outbox(&self, write: &RowWrite) -> Result<(u64, Committed)> {
        self.ensure_outbox().await?;
        let mut conn = crate::mysql::get_conn(&self.pool, &self.mysql_url).await?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|e| Error::mysql("writing a row: BEGIN", e))?;
        let written = crate::mysql::write::write_in(&mut tx, write).await?;
        // The commit time is not known yet; the relay stamps the event's version (the
        // outbox id) and the consumer measures propagation from this moment, just
        // before COMMIT.
        let committed_at_us = unix_micros(SystemTime::now());
        let event = self.event(write, &written, None, committed_at_us)?;
        let id = outbox::insert(&mut tx, &self.config.outbox_table, &event).await?;
        tx.commit()
            .await
            .map_err(|e| Error::mysql("writing a row: COMMIT", e))?;
        Ok((
            id,
            Committed {
                committed_at_us,
                row: written.into_upserted(),
            },
        ))
    }

    /// The change event of `written`, keyed by the row MySQL changed (a delete by the
    /// deleted row's key cells, not the request's spelling of them).
    fn event(
        &self,
        write: &RowWrite,
        written: &Written,
        version: Option<u64>,
        committed_at_us: u64,
    ) -> Result<ChangeEvent> {
        let table = &write.table;
        let (op, row) = written.clone().change_row(table, write)?;
        let version = version.or_else(|| crate::model::change::version_of_change(table, op, &row));
        Ok(ChangeEvent::new(
            table,
            op,
            &row,
            version,
            Some(committed_at_us),
        ))
    }
}

impl SyncStrategy for Mq {
    fn kind(&self) -> StrategyKind {
        StrategyKind::Mq
    }

    async fn write(&self, write: RowWrite) -> Result<WriteReceipt> {
        let table = write.table.name();
        let receipt = match self.config.publish {
            PublishMode::Direct => {
                let (event, committed) = self.commit_direct(&write).await?;
                self.publisher
                    .publish_all(&[event.to_bytes()])
                    .await
                    .map_err(|e| Error::Strategy {
                        strategy: "mq",
                        reason: format!(
                            "the row of {table} is committed but its event was not published \
                             (direct mode: Redis stays stale for it): {e}"
                        ),
                    })?;
                WriteReceipt {
                    committed_at_us: committed.committed_at_us,
                    version: event.version,
                    redis: RedisOutcome::Background,
                    row: committed.row,
                }
            }
            PublishMode::Outbox => {
                let mut relayed = self.relayed.subscribe();
                let (id, committed) = self.commit_with_outbox(&write).await?;
                self.relay_kick.notify_one();
                let confirmed =
                    tokio::time::timeout(RELAY_WAIT, relayed.wait_for(|&r| r >= id)).await;
                if !matches!(confirmed, Ok(Ok(_))) {
                    tracing::warn!(
                        outbox_id = id,
                        "the relay has not published the event yet; it stays in the outbox"
                    );
                }
                WriteReceipt {
                    committed_at_us: committed.committed_at_us,
                    version: Some(id),
                    redis: RedisOutcome::Background,
                    row: committed.row,
                }
            }
        };
        Ok(receipt)
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let keeper = self
            .snapshots
            .clone()
            .map(|s| crate::snapshot::watch::spawn(s, shutdown.clone()));
        let relay = match self.config.publish {
            PublishMode::Outbox => {
                outbox::ensure_table(&self.pool, &self.mysql_url, &self.config.outbox_table)
                    .await?;
                Some(tokio::spawn(outbox::relay(
                    outbox::Relay {
                        pool: self.pool.clone(),
                        mysql_url: self.mysql_url.clone(),
                        table: self.config.outbox_table.clone(),
                        publisher: self.publisher.clone(),
                        kick: self.relay_kick.clone(),
                        relayed: self.relayed.clone(),
                    },
                    shutdown.clone(),
                )))
            }
            PublishMode::Direct => None,
        };
        let consumed = consumer::consume(
            self.applier.clone(),
            self.config.clone(),
            self.tables.clone(),
            Arc::new(Replanner::new(self.pool.clone(), &self.mysql_url)),
            shutdown.clone(),
        )
        .await;
        // The consumer stops only on shutdown or a fatal error; take the relay and the
        // snapshots down too.
        shutdown.cancel();
        if let Some(keeper) = keeper {
            keeper.await.map_err(|e| Error::Strategy {
                strategy: "mq",
                reason: format!("the snapshot task failed: {e}"),
            })??;
        }
        if let Some(relay) = relay {
            relay.await.map_err(|e| Error::Strategy {
                strategy: "mq",
                reason: format!("the outbox relay task failed: {e}"),
            })??;
        }
        consumed
    }
}
