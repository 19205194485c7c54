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
//! call ([`crate::redis::Applier::apply_with_checkpoint_if`]). After a crash the daemon
//! resumes from that checkpoint: nothing before it is re-read, nothing after it was
//! recorded as done. Every change carries its binlog position as version, so what is
//! re-read (the tail of a huge transaction sent in pieces) rewrites identical bytes and
//! shows up in `cachesync_replayed_changes_total`.
//!
//! # The checkpoint is the truth about Redis
//!
//! The checkpoint ([`position::StoredCheckpoint`]) names the position, the MySQL server
//! it belongs to and the tables synced up to it. Each batch is a compare-and-set: it is
//! written only if the checkpoint still holds what this process wrote last, and between
//! batches a watcher compares it every `snapshot.loss_check_interval_ms` (an idle stream
//! writes none). Whatever the reason it differs — a reconnect to a Redis that restarted,
//! a failover, `FLUSHALL`, an eviction — the session ends and [`Binlog::open`] re-reads
//! it instead of trusting memory (a batch and its checkpoint replicate together, so any
//! copy of Redis holds a consistent pair, or none):
//!
//! - **gone**: Redis lost the data. Counted in `cachesync_redis_data_loss_total`, logged
//!   at warn, and handled like a first start: the tail restarts from the server's current
//!   position P0 and every table is snapshotted online (their progress entries are written
//!   in the same script call as the checkpoint at P0, so a crash cannot separate them).
//!   Chunks read at positions after P0; the tail delivers every change after P0.
//! - **older** (same server): Redis came back from an older copy. Counted and logged the
//!   same way; the tail resumes from that checkpoint, which replays what the copy lacks.
//! - **another server**: refused — positions of another server mean nothing here.
//! - **newer, or rewritten**: another process writes this key (two deployments sharing
//!   one `name`, or `cachesync snapshot` run next to the daemon): the daemon stops and
//!   says so rather than fight over it.
//!
//! A table in the config but not in the checkpoint's table set is snapshotted online at
//! start ([`crate::snapshot`]), its request recorded before any checkpoint names it.
//! The tail resumes from the checkpoint, before the snapshot's chunks, as the chunks'
//! guard needs.
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
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::cascade::Resolver;
use self::config::BinlogConfig;
use self::position::{BinlogPosition, Checkpoint, StoredCheckpoint};
use self::tail::{Batch, Tailer};
use super::{RedisOutcome, Services, StrategyKind, SyncStrategy, WriteReceipt};
use crate::error::{Error, Result, Retry};
use crate::metrics as m;
use crate::model::change::{Applied, Change, DeadLetter, RowWrite, unix_micros};
use crate::model::table::SyncedTable;
use crate::redis::keyspace::{DeploymentKeys, LEGACY_CHECKPOINT_KEY};
use crate::redis::{Applier, RedisConn};
use crate::snapshot::{ConsistentRead, Planned, Setup, Snapshots, Stamp};

/// Batches in flight between the tailer and the applier. With `batch_size` this bounds
/// the memory a huge transaction can take.
const CHANNEL_CAPACITY: usize = 4;

/// Sets the first checkpoint and records a full online snapshot, only if there is no
/// checkpoint. KEYS[1]: the checkpoint, KEYS[2]: the snapshot progress record. ARGV[1]:
/// the checkpoint, then table/entry pairs. Returns 1 when set, 0 when a checkpoint was
/// there (someone else wrote it meanwhile).
const FRESH_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
"#;

/// Replaces the checkpoint after a full (offline) snapshot and forgets the online
/// snapshots it supersedes. KEYS[1]: the checkpoint, KEYS[2]: the progress record.
const RESET_LUA: &str = r#"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"#;

/// What this process last wrote to the checkpoint key, shared by the batch applier
/// (which moves it) and the checkpoint watcher (which compares Redis with it).
#[derive(Debug, Clone)]
struct Written {
    text: String,
    position: BinlogPosition,
    /// A checkpoint a batch call tried to write and got no answer for (the connection
    /// dropped): Redis may hold it. Finding it in Redis is this process' own write, not
    /// another's.
    in_flight: Option<(String, BinlogPosition)>,
}

impl Written {
    /// Whether `stored` is what this process wrote — adopting an unanswered write that
    /// Redis did take.
    fn owns(&mut self, stored: Option<&str>) -> bool {
        if stored == Some(self.text.as_str()) {
            return true;
        }
        match self.in_flight.take() {
            Some((text, position)) if stored == Some(text.as_str()) => {
                self.text = text;
                self.position = position;
                true
            }
            other => {
                self.in_flight = other;
                false
            }
        }
    }
}

/// The chunks of an online snapshot, each in a consistent read at its binlog position
/// (see [`crate::snapshot`]).
struct ChunkRead;

impl ConsistentRead for ChunkRead {
    fn begin<'a>(&'a self, conn: &'a mut mysql_async::Conn) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { Ok(snapshot::begin_consistent_snapshot(conn).await?.version()) })
    }
}

/// The binlog strategy.
pub struct Binlog {
    pool: mysql_async::Pool,
    mysql_url: String,
    applier: Applier,
    tables: Vec<Arc<SyncedTable>>,
    config: BinlogConfig,
    keys: DeploymentKeys,
    snapshots: Snapshots,
}

impl Binlog {
    pub fn new(services: &Services, config: BinlogConfig) -> Result<Binlog> {
        let snapshots = Snapshots::new(Setup {
            pool: services.pool.clone(),
            mysql_url: services.mysql_url.clone(),
            applier: services.applier.clone(),
            keys: services.keys.clone(),
            settings: services.snapshot.clone(),
            strategy: StrategyKind::Binlog.name(),
            tables: services
                .tables
                .iter()
                .map(|t| Planned {
                    table: t.clone(),
                    stamp: Stamp::ConsistentRead,
                })
                .collect(),
            consistent: Some(Arc::new(ChunkRead)),
        })?;
        Ok(Binlog {
            pool: services.pool.clone(),
            mysql_url: services.mysql_url.clone(),
            applier: services.applier.clone(),
            tables: services.tables.clone(),
            config,
            keys: services.keys.clone(),
            snapshots,
        })
    }

    /// The online snapshots of this strategy's tables.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.name()).collect()
    }

    /// The stored checkpoint, if any.
    pub async fn checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        let mut conn = self.applier.connection();
        let stored: Option<String> = redis::cmd("GET")
            .arg(&self.keys.checkpoint)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("reading the binlog checkpoint", e))?;
        stored
            .map(|text| {
                StoredCheckpoint::parse(&text).ok_or_else(|| Error::Strategy {
                    strategy: "binlog",
                    reason: format!(
                        "the checkpoint {}={text:?} is not `file:position [key=value ...]`; delete it to reload the tables",
                        self.keys.checkpoint
                    ),
                })
            })
            .transpose()
    }

    /// The MySQL server's identity, as checkpoints record it.
    async fn server_identity(&self) -> Result<String> {
        let mut conn = crate::mysql::get_conn(&self.pool, &self.mysql_url).await?;
        server::identity(&mut conn).await
    }

    /// Loads every table into Redis from one consistent snapshot and stores its binlog
    /// position as the checkpoint (replacing any older one, and any online snapshot in
    /// progress, which it supersedes): `cachesync snapshot` for a stopped daemon.
    pub async fn snapshot(&self) -> Result<BinlogPosition> {
        let server = self.server_identity().await?;
        let position = snapshot::load(
            &self.pool,
            &self.mysql_url,
            &self.tables,
            &self.applier,
            &self.keys.dead_letter,
        )
        .await?;
        let text = format!(
            "{}{}",
            Checkpoint::at(position.clone()),
            StoredCheckpoint::suffix(&server, &self.table_names())
        );
        let mut redis = self.applier.connection();
        redis::Script::new(RESET_LUA)
            .key(&self.keys.checkpoint)
            .key(&self.keys.snapshots)
            .arg(&text)
            .invoke_async::<i64>(&mut redis)
            .await
            .map_err(|e| Error::redis("storing the checkpoint", e))?;
        Ok(position)
    }

    /// Refuses to start on a server whose binlog cannot feed this strategy, saying what
    /// to change (the same checks as `cachesync doctor`), before anything is loaded: a
    /// user without replication grants must not sit through a whole snapshot to learn it.
    async fn preflight(&self) -> Result<()> {
        let mut conn = crate::mysql::get_conn(&self.pool, &self.mysql_url).await?;
        let settings = server::binlog_settings(&mut conn).await;
        for advice in &settings.advice {
            warn!("{advice}");
        }
        let mut problems: Vec<String> = settings
            .wrong
            .iter()
            .map(|w| format!("the binlog strategy cannot run: {w}"))
            .collect();
        if problems.is_empty()
            && let Some(missing) = self.missing_grants(&mut conn).await?
        {
            problems.push(missing);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems))
        }
    }

    /// Reads the checkpoint from Redis and decides where the tail starts (see the module
    /// doc): `last` is what this process wrote last, `None` at start. Returns the
    /// checkpoint to tail from and its stored text.
    async fn open(
        &self,
        server: &str,
        suffix: &str,
        last: Option<&BinlogPosition>,
    ) -> Result<(Checkpoint, String)> {
        let key = &self.keys.checkpoint;
        let mut redis = self.applier.connection();
        loop {
            let stored: Option<String> =
                redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut redis)
                    .await
                    .map_err(|e| Error::redis("reading the binlog checkpoint", e))?;
            let Some(text) = stored else {
                match last {
                    Some(last) => crate::snapshot::report_loss(
                        StrategyKind::Binlog.name(),
                        &format!("the binlog checkpoint {key} is gone; it was at {last}"),
                    ),
                    None => {
                        self.refuse_legacy_checkpoint(&mut redis).await?;
                        info!(
                            checkpoint = key,
                            "no checkpoint: tailing from the current position and loading the tables online"
                        );
                    }
                }
                if let Some(fresh) = self.start_fresh(suffix).await? {
                    return Ok(fresh);
                }
                // Someone wrote a checkpoint meanwhile: read it.
                continue;
            };
            let stored = StoredCheckpoint::parse(&text).ok_or_else(|| Error::Strategy {
                strategy: "binlog",
                reason: format!(
                    "the checkpoint {key}={text:?} is not `file:position [key=value ...]`; delete it to reload the tables"
                ),
            })?;
            if let Some(other) = stored.server.as_deref().filter(|s| *s != server) {
                return Err(Error::Strategy {
                    strategy: "binlog",
                    reason: format!(
                        "the checkpoint {key} was written against MySQL server {other}, but mysql.url \
                         reaches {server}: its binlog positions mean nothing here. If the cache \
                         should now follow this server, delete the key (or run `cachesync snapshot`) \
                         to reload every table; if another deployment owns that checkpoint, give \
                         this one its own `name`"
                    ),
                });
            }
            let position = &stored.checkpoint.position;
            if let Some(last) = last {
                if position < last {
                    crate::snapshot::report_loss(
                        StrategyKind::Binlog.name(),
                        &format!(
                            "Redis came back from an older copy: the checkpoint went back from {last} to {position}; replaying from there"
                        ),
                    );
                } else {
                    return Err(Error::Strategy {
                        strategy: "binlog",
                        reason: format!(
                            "another process rewrote the checkpoint {key} (it holds {text:?}; this \
                             daemon last wrote {last}): two deployments share it (give each its own \
                             `name`), or `cachesync snapshot` ran next to the running daemon (ask \
                             the daemon instead: `cachesync snapshot --table db.t` with [api]); \
                             start the daemon again to follow the checkpoint"
                        ),
                    });
                }
            }
            self.catch_up_tables(&stored).await?;
            info!(checkpoint = %stored.checkpoint, "resuming from the checkpoint");
            return Ok((stored.checkpoint, text));
        }
    }

    /// An old cachesync kept every deployment's checkpoint at one fixed key; finding one
    /// there (and none at this deployment's key) is not a reason to reload silently, nor
    /// to adopt it (it may be another deployment's).
    async fn refuse_legacy_checkpoint(&self, redis: &mut RedisConn) -> Result<()> {
        if !self.keys.default_checkpoint() {
            return Ok(());
        }
        let legacy: Option<String> = redis::cmd("GET")
            .arg(LEGACY_CHECKPOINT_KEY)
            .query_async(redis)
            .await
            .map_err(|e| Error::redis("reading the old checkpoint key", e))?;
        match legacy {
            None => Ok(()),
            Some(text) => Err(Error::Strategy {
                strategy: "binlog",
                reason: format!(
                    "found a checkpoint at the old shared key {LEGACY_CHECKPOINT_KEY} ({text:?}) and none \
                     at this deployment's key {new}. If it is this deployment's, move it: \
                     `redis-cli RENAME {LEGACY_CHECKPOINT_KEY} '{new}'` (or set binlog.checkpoint_key = \
                     \"{LEGACY_CHECKPOINT_KEY}\"); if it is not, delete it (`redis-cli DEL \
                     {LEGACY_CHECKPOINT_KEY}`) and cachesync loads every table online",
                    new = self.keys.checkpoint
                ),
            }),
        }
    }

    /// The first checkpoint, at the server's current position, written together with a
    /// full online snapshot's progress entries; `None` when a checkpoint appeared
    /// meanwhile.
    async fn start_fresh(&self, suffix: &str) -> Result<Option<(Checkpoint, String)>> {
        let mut conn = crate::mysql::get_conn(&self.pool, &self.mysql_url).await?;
        let position = server::binary_log_status(&mut conn)
            .await?
            .ok_or_else(|| Error::Strategy {
                strategy: "binlog",
                reason: "the server reports no binary log status: it has no binlog (start it with --log-bin)"
                    .to_owned(),
            })?;
        drop(conn);
        let checkpoint = Checkpoint::at(position);
        let text = format!("{checkpoint}{suffix}");
        let script = redis::Script::new(FRESH_LUA);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&self.keys.checkpoint)
            .key(&self.keys.snapshots)
            .arg(&text);
        for (table, entry) in self.snapshots.entries(&[], "no checkpoint in Redis") {
            invocation.arg(table).arg(entry);
        }
        let mut redis = self.applier.connection();
        let set: i64 = invocation
            .invoke_async(&mut redis)
            .await
            .map_err(|e| Error::redis("storing the first checkpoint", e))?;
        if set == 0 {
            return Ok(None);
        }
        self.snapshots.wake();
        Ok(Some((checkpoint, text)))
    }

    /// Snapshots the configured tables the checkpoint's table set lacks.
    async fn catch_up_tables(&self, stored: &StoredCheckpoint) -> Result<()> {
        let configured = self.table_names();
        let Some(synced) = &stored.tables else {
            info!(
                "the checkpoint names no table set (written by an older cachesync): assuming it covers \
                 every configured table; run `cachesync snapshot --table db.t` for a table added since"
            );
            return Ok(());
        };
        for removed in synced.iter().filter(|t| !configured.contains(t)) {
            info!(
                table = removed,
                "table no longer in the config: no longer synced; its keys stay in Redis"
            );
        }
        let added: Vec<String> = configured
            .into_iter()
            .filter(|t| !synced.contains(t))
            .filter(|t| self.snapshots.table_names().contains(t))
            .collect();
        if !added.is_empty() {
            info!(
                tables = added.join(","),
                "tables added to the config since the checkpoint: snapshotting them online"
            );
            self.snapshots
                .request(&added, "added to the config")
                .await?;
        }
        Ok(())
    }

    /// REPLICATION CLIENT (reading the binlog position: the snapshot on MySQL, `doctor`)
    /// and REPLICATION SLAVE (streaming), each tried rather than read off `SHOW GRANTS`,
    /// so grants through roles count; the line to print when any is missing.
    async fn missing_grants(&self, conn: &mut mysql_async::Conn) -> Result<Option<String>> {
        let mut missing = Vec::new();
        let position = match server::binary_log_status(conn).await {
            Ok(position) => position,
            Err(Error::Mysql { source, .. })
                if crate::mysql::grants::is_privilege_error(&source) =>
            {
                missing.push("REPLICATION CLIENT");
                None
            }
            Err(e) => return Err(e),
        };
        let from = match self.checkpoint().await? {
            Some(stored) => Some(stored.checkpoint.position),
            None => position,
        };
        if !server::may_stream(&self.mysql_url, self.config.server_id, from.as_ref()).await? {
            missing.insert(0, "REPLICATION SLAVE");
        }
        if missing.is_empty() {
            return Ok(None);
        }
        let grantee = crate::mysql::grants::current_user(conn).await;
        Ok(Some(format!(
            "the binlog strategy cannot run: MySQL user {grantee} lacks {}, which it needs to \
             stream the binlog and read its position: GRANT {} ON *.* TO {grantee}",
            missing.join(" and "),
            missing.join(", ")
        )))
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
        )
        .with_linger(self.config.linger);
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

    /// One run of the tail from `from` (stored as `text`) until shutdown or until the
    /// checkpoint in Redis is no longer the one this process wrote
    /// ([`Error::CheckpointMoved`]). Also returns the position it last wrote.
    async fn session(
        &self,
        from: Checkpoint,
        text: String,
        suffix: &str,
        shutdown: &CancellationToken,
    ) -> (Result<()>, BinlogPosition) {
        let session = shutdown.child_token();
        let written = Arc::new(Mutex::new(Written {
            text,
            position: from.position.clone(),
            in_flight: None,
        }));
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
            self.keys.clone(),
            suffix.to_owned(),
            written.clone(),
            session.clone(),
        ));
        let watching = tokio::spawn(watch_checkpoint(
            self.applier.connection(),
            self.keys.checkpoint.clone(),
            written.clone(),
            crate::snapshot::watch::interval(&self.snapshots),
            session.clone(),
        ));
        let tailed = self.tail(from, out, &session).await;
        // The sender is gone: the applier drains what it holds, then stops.
        session.cancel();
        let joined = |task: std::result::Result<Result<()>, tokio::task::JoinError>, what: &str| {
            task.unwrap_or_else(|e| {
                Err(Error::Strategy {
                    strategy: "binlog",
                    reason: format!("the {what} task failed: {e}"),
                })
            })
        };
        let applied = joined(applying.await, "Redis applier");
        let watched = joined(watching.await, "checkpoint watcher");
        let last = written.lock().await.position.clone();
        let moved = |r: &Result<()>| matches!(r, Err(Error::CheckpointMoved { .. }));
        let outcome = if moved(&watched) {
            watched
        } else if moved(&applied) {
            applied
        } else {
            // An applier failure explains a tailer that stopped because the applier did.
            applied.and(watched).and(tailed)
        };
        (outcome, last)
    }
}

/// Every `interval`, checks that the checkpoint in Redis is the one this process wrote
/// last (an idle stream writes none, so the batches' own check would not run); when it
/// is not, ends the session with [`Error::CheckpointMoved`].
async fn watch_checkpoint(
    mut redis: RedisConn,
    key: String,
    written: Arc<Mutex<Written>>,
    interval: Duration,
    session: CancellationToken,
) -> Result<()> {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = session.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
        // Held while reading, so no batch moves the checkpoint in between.
        let mut held = written.lock().await;
        let stored: Option<String> = match redis::cmd("GET").arg(&key).query_async(&mut redis).await
        {
            Ok(stored) => stored,
            // The batches' retries report a Redis outage; say it once here.
            Err(e) => {
                if !failing {
                    warn!(error = %e, "cannot read the checkpoint to check for data loss; retrying every interval");
                    failing = true;
                }
                continue;
            }
        };
        failing = false;
        if !held.owns(stored.as_deref()) {
            drop(held);
            session.cancel();
            return Err(Error::CheckpointMoved { key });
        }
    }
}

impl SyncStrategy for Binlog {
    fn kind(&self) -> StrategyKind {
        StrategyKind::Binlog
    }

    async fn write(&self, write: RowWrite) -> Result<WriteReceipt> {
        let written = crate::mysql::write::commit(&self.pool, &write).await?;
        let committed_at_us = unix_micros(SystemTime::now());
        Ok(WriteReceipt {
            committed_at_us,
            version: written
                .upserted()
                .and_then(|row| write.table.version_of(row)),
            redis: RedisOutcome::Background,
            row: written.into_upserted(),
        })
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        self.preflight().await?;
        let server = self.server_identity().await?;
        let suffix = StoredCheckpoint::suffix(&server, &self.table_names());
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
        let stop_snapshots = shutdown.child_token();
        let snapshots = {
            let snapshots = self.snapshots.clone();
            let stop = stop_snapshots.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let outcome = snapshots.run(stop).await;
                // A worker that failed for good stops the daemon rather than leave
                // tables silently incomplete.
                if outcome.is_err() {
                    shutdown.cancel();
                }
                outcome
            })
        };
        let mut last: Option<BinlogPosition> = None;
        let outcome = loop {
            let (from, text) = match self.open(&server, &suffix, last.as_ref()).await {
                Ok(opened) => opened,
                Err(e) => break Err(e),
            };
            let (outcome, written) = self.session(from, text, &suffix, &shutdown).await;
            match outcome {
                // Stopping anyway: the next start reads the checkpoint as it finds it.
                Err(Error::CheckpointMoved { key }) if shutdown.is_cancelled() => {
                    warn!(checkpoint = key, last_written = %written, "the checkpoint in Redis changed as the daemon stopped; the next start re-reads it");
                    break Ok(());
                }
                Err(Error::CheckpointMoved { key }) => {
                    warn!(checkpoint = key, last_written = %written, "the checkpoint in Redis is not the one this daemon wrote; re-reading it");
                    last = Some(written);
                }
                other => break other,
            }
        };
        stop_snapshots.cancel();
        let snapshotted = snapshots.await.map_err(|e| Error::Strategy {
            strategy: "binlog",
            reason: format!("the snapshot worker failed: {e}"),
        })?;
        outcome.and(snapshotted)
    }
}

/// Applies batches in order, retrying transient Redis failures with backoff, and keeps
/// `lag_seconds` current. A batch that ends a transaction moves the checkpoint (to its
/// position followed by `suffix`) only if the checkpoint is still what `written` holds;
/// otherwise nothing of it is written and this returns [`Error::CheckpointMoved`]. A
/// batch's dead letters are recorded (in `keys.dead_letter`) before its changes: a crash in
/// between records them again on the replay, never loses them (each names its position,
/// so a repeat is recognisable).
async fn apply_batches(
    applier: Applier,
    resolver: Resolver,
    mut batches: mpsc::Receiver<Batch>,
    keys: DeploymentKeys,
    suffix: String,
    written: Arc<Mutex<Written>>,
    shutdown: CancellationToken,
) -> Result<()> {
    let strategy = StrategyKind::Binlog.name();
    while let Some(batch) = batches.recv().await {
        let mut retry = Retry::new("applying a batch failed; retrying it", &shutdown);
        let mut dead_lettered = batch.dead_letters.is_empty();
        loop {
            let mut outcome = Ok(Applied::default());
            if !dead_lettered {
                outcome = dead_letter(&applier, &keys.dead_letter, &batch.dead_letters)
                    .await
                    .map(|()| Applied::default());
                dead_lettered = outcome.is_ok();
            }
            if outcome.is_ok() {
                outcome = match with_the_checkpoint(&applier, &resolver, &batch).await {
                    Err(e) => Err(e),
                    Ok(last) => match &batch.checkpoint {
                        Some(checkpoint) => {
                            let text = format!("{checkpoint}{suffix}");
                            let mut held = written.lock().await;
                            held.in_flight = Some((text.clone(), checkpoint.position.clone()));
                            let outcome = applier
                                .apply_with_checkpoint_if(
                                    &last,
                                    &keys.checkpoint,
                                    &text,
                                    Some(&held.text),
                                )
                                .await;
                            if outcome.is_ok() {
                                *held = Written {
                                    text,
                                    position: checkpoint.position.clone(),
                                    in_flight: None,
                                };
                            }
                            outcome
                        }
                        None => applier.apply(&last).await,
                    },
                };
            }
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

/// The changes to write with the batch's checkpoint: its own — or, when it carries
/// foreign-key cascades, its own are written first and the cascades' child changes
/// (resolved against MySQL and Redis after them, the order [`cascade`]'s argument needs)
/// go with the checkpoint. Writing a batch again after a failure part-way is harmless:
/// every change rewrites its own version.
async fn with_the_checkpoint<'a>(
    applier: &Applier,
    resolver: &Resolver,
    batch: &'a Batch,
) -> Result<std::borrow::Cow<'a, [Change]>> {
    if batch.cascades.is_empty() {
        return Ok(std::borrow::Cow::Borrowed(&batch.changes));
    }
    applier.apply(&batch.changes).await?;
    Ok(std::borrow::Cow::Owned(
        resolver.resolve(&batch.cascades).await?,
    ))
}

/// Records `letters` in the dead-letter list `list_key`, then logs each at warn and
/// counts it in `cachesync_undecodable_rows_total`: a row change that cannot be decoded
/// is never silent, and never stops the stream.
pub(crate) async fn dead_letter(
    applier: &Applier,
    list_key: &str,
    letters: &[DeadLetter],
) -> Result<()> {
    applier.record_dead_letters(list_key, letters).await?;
    for letter in letters {
        warn!(
            source = %letter.source,
            table = %letter.table,
            key = letter.key.as_deref().unwrap_or("(its key columns cannot be decoded either)"),
            column = %letter.column,
            reason = %letter.reason,
            position = %letter.position,
            dead_letter_key = list_key,
            "a row change cannot be decoded: its key is removed (readers fall back to MySQL) \
             and it is dead-lettered; fix the row in MySQL"
        );
        metrics::counter!(m::UNDECODABLE_ROWS, "strategy" => StrategyKind::Binlog.name(), "table" => letter.table.clone())
            .increment(1);
    }
    Ok(())
}
