//! Binlog replay: cachesync reads the row binlog as a replica and applies row images to
//! Redis. The application only writes MySQL.
//!
//! Preconditions (checked by `cachesync doctor`): `log_bin` on, `binlog_format=ROW`,
//! `binlog_row_image=FULL`, `binlog_row_metadata=FULL` (column names in every table map,
//! so shape changes are noticed), a replication user (REPLICATION SLAVE, REPLICATION
//! CLIENT), and a `binlog.server_id` no other replica of the server uses.
//!
//! Exactly-once effect: the tailer ([`tail`]) cuts batches at transaction boundaries and
//! the applier writes each batch and the position after it in one atomic Redis script
//! call ([`crate::redis::Applier::apply_with_checkpoint`]). After a crash the daemon
//! resumes from that checkpoint: nothing before it is re-read, nothing after it was
//! recorded as done. Every change carries its binlog position as version, so what is
//! re-read (the tail of a huge transaction sent in pieces) rewrites identical bytes and
//! shows up in `cachesync_replayed_changes_total`.
//!
//! Without a checkpoint the tables are first loaded by a consistent snapshot
//! ([`snapshot`]) whose binlog position becomes the first checkpoint.
//!
//! What the binlog does not show — foreign-key cascades, carried out by InnoDB and never
//! logged — is emulated by [`cascade`], resolved in the applier's order.

pub mod cascade;
pub mod config;
pub mod heartbeat;
pub mod position;
pub mod server;
pub mod snapshot;
pub mod tail;

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::cascade::Resolver;
use self::config::BinlogConfig;
use self::position::{BinlogPosition, Checkpoint};
use self::tail::{Batch, Tailer};
use super::{RedisOutcome, Services, StrategyKind, SyncStrategy, WriteReceipt};
use crate::error::{Error, Result, Retry};
use crate::metrics as m;
use crate::model::change::{RowWrite, unix_micros};
use crate::model::table::SyncedTable;
use crate::redis::Applier;

/// Batches in flight between the tailer and the applier. With `batch_size` this bounds
/// the memory a huge transaction can take.
const CHANNEL_CAPACITY: usize = 4;

/// The binlog strategy.
pub struct Binlog {
    pool: mysql_async::Pool,
    mysql_url: String,
    applier: Applier,
    tables: Vec<Arc<SyncedTable>>,
    config: BinlogConfig,
}

impl Binlog {
    pub fn new(services: &Services, config: BinlogConfig) -> Binlog {
        Binlog {
            pool: services.pool.clone(),
            mysql_url: services.mysql_url.clone(),
            applier: services.applier.clone(),
            tables: services.tables.clone(),
            config,
        }
    }

    /// The stored checkpoint, if any.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        let mut conn = self.applier.connection();
        let stored: Option<String> = redis::cmd("GET")
            .arg(&self.config.checkpoint_key)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("reading the binlog checkpoint", e))?;
        stored
            .map(|text| {
                Checkpoint::parse(&text).ok_or_else(|| Error::Strategy {
                    strategy: "binlog",
                    reason: format!(
                        "the checkpoint {}={text:?} is not `file:position [gtid=...]`; delete it to re-snapshot",
                        self.config.checkpoint_key
                    ),
                })
            })
            .transpose()
    }

    /// Loads every table into Redis from a consistent snapshot and stores its binlog
    /// position as the checkpoint (replacing any older one).
    pub async fn snapshot(&self) -> Result<BinlogPosition> {
        let position =
            snapshot::load(&self.pool, &self.mysql_url, &self.tables, &self.applier).await?;
        let checkpoint = Checkpoint::at(position.clone());
        self.applier
            .apply_with_checkpoint(&[], &self.config.checkpoint_key, &checkpoint.to_string())
            .await?;
        Ok(position)
    }

    /// Refuses to start on a server whose binlog cannot feed this strategy, saying what
    /// to change (the same checks as `cachesync doctor`).
    async fn preflight(&self) -> Result<()> {
        let mut conn = crate::mysql::get_conn(&self.pool, &self.mysql_url).await?;
        let settings = server::binlog_settings(&mut conn).await;
        for advice in &settings.advice {
            warn!("{advice}");
        }
        if settings.wrong.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(
                settings
                    .wrong
                    .iter()
                    .map(|w| format!("the binlog strategy cannot run: {w}"))
                    .collect(),
            ))
        }
    }

    /// Tails from `from`, reconnecting with backoff, until `shutdown`.
    async fn tail(
        &self,
        from: Checkpoint,
        out: mpsc::Sender<Batch>,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let mut tailer = Tailer::new(
            self.mysql_url.clone(),
            self.config.server_id,
            self.config.batch_size,
            self.pool.clone(),
            &self.tables,
            self.config.heartbeat_table.clone(),
            from,
        );
        // A reconnect resumes from the last batch handed over (`tailer.last_sent`).
        let mut retry = Retry::new("binlog stream lost; reconnecting", shutdown);
        loop {
            match tailer.run(&out, shutdown).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if !retry.again(e).await? {
                        return Ok(());
                    }
                }
            }
        }
    }
}

impl SyncStrategy for Binlog {
    fn kind(&self) -> StrategyKind {
        StrategyKind::Binlog
    }

    async fn write(&self, write: RowWrite) -> Result<WriteReceipt> {
        let image = crate::mysql::write::commit(&self.pool, &write).await?;
        let committed_at_us = unix_micros(SystemTime::now());
        Ok(WriteReceipt {
            committed_at_us,
            version: image.as_deref().and_then(|row| write.table.version_of(row)),
            redis: RedisOutcome::Background,
            row: image,
        })
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        self.preflight().await?;
        let from = match self.checkpoint().await? {
            Some(checkpoint) => {
                info!(checkpoint = %checkpoint, "resuming from the checkpoint");
                checkpoint
            }
            None => {
                info!("no checkpoint: loading the tables first");
                Checkpoint::at(self.snapshot().await?)
            }
        };
        if let Some(table) = &self.config.heartbeat_table {
            heartbeat::ensure_table(&self.pool, &self.mysql_url, table).await?;
            tokio::spawn(heartbeat::beat(
                self.pool.clone(),
                table.clone(),
                self.config.server_id,
                self.config.heartbeat_interval,
                shutdown.clone(),
            ));
        }
        let (out, batches) = mpsc::channel(CHANNEL_CAPACITY);
        let resolver = Resolver::new(
            self.pool.clone(),
            self.mysql_url.clone(),
            self.applier.connection(),
            StrategyKind::Binlog.name(),
        );
        let applying = tokio::spawn(apply_batches(
            self.applier.clone(),
            resolver,
            batches,
            self.config.checkpoint_key.clone(),
            shutdown.clone(),
        ));
        let tailed = self.tail(from, out, &shutdown).await;
        // The sender is gone: the applier drains what it holds, then stops.
        let applied = applying.await.map_err(|e| Error::Strategy {
            strategy: "binlog",
            reason: format!("the Redis applier task failed: {e}"),
        })?;
        // An applier failure explains a tailer that stopped because the applier did.
        applied.and(tailed)
    }
}

/// Applies batches in order, retrying transient failures with backoff, and keeps
/// `lag_seconds` current.
pub async fn apply_batches(
    applier: Applier,
    resolver: Resolver,
    mut batches: mpsc::Receiver<Batch>,
    checkpoint_key: String,
    shutdown: CancellationToken,
) -> Result<()> {
    let strategy = StrategyKind::Binlog.name();
    while let Some(batch) = batches.recv().await {
        let mut retry = Retry::new("applying a batch failed; retrying it", &shutdown);
        loop {
            let outcome = apply_batch(&applier, &resolver, &batch, &checkpoint_key).await;
            match outcome {
                Ok(_) => break,
                Err(e) => {
                    if !retry.again(e).await? {
                        return Err(Error::Strategy {
                            strategy,
                            reason: "stopped while Redis refused a batch; the next start \
                                     replays it from the checkpoint"
                                .to_owned(),
                        });
                    }
                }
            }
        }
        let lag = if batch.caught_up && batch.changes.is_empty() {
            0.0
        } else if batch.commit_us > 0 {
            unix_micros(SystemTime::now()).saturating_sub(batch.commit_us) as f64 / 1e6
        } else {
            continue;
        };
        metrics::gauge!(m::LAG, "strategy" => strategy).set(lag);
    }
    Ok(())
}

/// Applies one batch: its changes and checkpoint in one atomic call — or, when it
/// carries foreign-key cascades, its changes first, then the cascades' child changes
/// with the checkpoint (the order [`cascade`]'s argument needs). Applying a batch again
/// after a failure part-way is harmless: every change rewrites its own version.
async fn apply_batch(
    applier: &Applier,
    resolver: &Resolver,
    batch: &Batch,
    checkpoint_key: &str,
) -> Result<()> {
    let derived;
    let last = if batch.cascades.is_empty() {
        &batch.changes
    } else {
        applier.apply(&batch.changes).await?;
        derived = resolver.resolve(&batch.cascades).await?;
        &derived
    };
    match &batch.checkpoint {
        Some(checkpoint) => {
            applier
                .apply_with_checkpoint(last, checkpoint_key, &checkpoint.to_string())
                .await?
        }
        None => applier.apply(last).await?,
    };
    Ok(())
}
