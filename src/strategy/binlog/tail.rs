//! Reading the binlog as a replica and cutting committed row events into batches.
//!
//! The tailer only decodes; [`super::apply_batches`] writes. Between them a bounded
//! channel carries [`Batch`]es, so a slow Redis slows the reader instead of growing
//! memory, and decoding overlaps with Redis round trips.
//!
//! Batching rule: a batch ends at a transaction boundary (XID / COMMIT, or a DDL
//! statement) and then carries the position after it as its checkpoint, applied in the
//! same atomic Redis call. Consecutive transactions are merged — group commit — while
//! the applier is busy and, with `binlog.linger_ms`, for up to that long after the
//! batch's first commit (up to `batch_size` changes); with no linger a transaction is
//! sent at once when the applier is idle. Each Redis call has a fixed cost (a round trip,
//! a script run, the checkpoint) that a batch of N transactions pays once instead of N
//! times: the linger trades that much propagation latency for CPU in cachesync and
//! Redis at moderate write rates, where the applier is rarely busy. A transaction that
//! does not fit in what is left of the batch first sends the committed transactions
//! before it, with their checkpoint (so no batch without a checkpoint ever carries a
//! whole transaction); one larger than `batch_size` is then sent in pieces without a
//! checkpoint — memory stays bounded by `batch_size` × channel capacity — and only its last piece moves the
//! checkpoint, so a crash part-way replays the whole transaction (harmless: same
//! versions, same bytes) and loses none of it.
//!
//! Poison rows: a row image that cannot be decoded never stops the stream; it becomes a
//! delete of its key plus a [`DeadLetter`] carried in the batch (see `push_row_change`).
//!
//! Foreign-key cascades are not logged: rows of a parent table whose cascades cachesync
//! emulates also go to [`super::cascade::Graph::on_row`], and the cascades it returns
//! travel in the batch ([`Batch::cascades`]) to be resolved after the batch's changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::binlog::events::{
    Event, EventData, OptionalMetadataField, RowsEventData, TableMapEvent,
};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::cascade::{Cascade, Graph};
use super::position::{BinlogPosition, Checkpoint, GtidSet};
use crate::error::{Error, Result};
use crate::model::cell::Cell;
use crate::model::change::{Change, DeadLetter, Op};
use crate::model::column::ColumnType;
use crate::model::table::{SyncedTable, TableSchema};
use crate::redact::redact_url;

/// How long a completed transaction may wait for more to merge with when the stream
/// goes quiet (without a linger).
const IDLE_FLUSH: Duration = Duration::from_millis(2);

/// Binlog event type of the heartbeat the server sends when the replica is caught up.
const HEARTBEAT_EVENT: u8 = 27;
/// MariaDB's GTID event (sent to replicas that announce GTID capability); it opens a
/// transaction unless its FL_STANDALONE flag says a single statement follows.
const MARIADB_GTID_EVENT: u8 = 162;

/// Row changes on their way to Redis.
#[derive(Debug, Default)]
pub struct Batch {
    pub changes: Vec<Change>,
    /// Row changes that could not be decoded, to record in the dead-letter list before
    /// the batch is applied (the batch holds the deletes of their keys).
    pub dead_letters: Vec<DeadLetter>,
    /// Parent changes whose foreign-key cascades MySQL did not log, in stream order; the
    /// applier resolves them after `changes` are in Redis (see [`super::cascade`]).
    pub cascades: Vec<Cascade>,
    /// Set when the batch ends at a transaction boundary: where to resume after it.
    pub checkpoint: Option<Checkpoint>,
    /// Lower bound of the newest event's commit time in the batch, µs since the Unix
    /// epoch (0: none), for `lag_seconds`; see [`super::heartbeat`].
    pub commit_us: u64,
    /// The server had nothing newer when this batch was cut.
    pub caught_up: bool,
}

impl Batch {
    /// What counts against `binlog.batch_size`: row changes and cascades to resolve.
    fn size(&self) -> usize {
        self.changes.len() + self.cascades.len()
    }

    /// Moves the changes, dead letters and cascades of `later` after this batch's own.
    fn append(&mut self, later: &mut Batch) {
        self.changes.append(&mut later.changes);
        self.dead_letters.append(&mut later.dead_letters);
        self.cascades.append(&mut later.cascades);
        self.commit_us = self.commit_us.max(later.commit_us);
    }
}

/// The GTID of a transaction still being read.
enum OpenGtid {
    MariaDb { domain: u32, server: u32, seq: u64 },
    MySql { uuid: String, gno: u64 },
}

/// Decodes the replication stream of the configured tables.
pub struct Tailer {
    pub mysql_url: String,
    pub server_id: u32,
    pub batch_size: usize,
    /// How long a batch's first transaction may wait for more to merge with (group
    /// commit); zero: sent as soon as the applier is idle.
    pub linger: Duration,
    pool: mysql_async::Pool,
    /// Synced tables by `(database, table)`; replanned when their shape changes.
    tables: HashMap<(String, String), Arc<SyncedTable>>,
    /// Tables whose schema a DDL statement may have changed since they were planned.
    dirty: Vec<(String, String)>,
    /// The last checkpoint handed to the applier: where a reconnect resumes.
    pub last_sent: Checkpoint,
    /// GTIDs of the transactions completed so far (what a checkpoint at `boundary` has).
    gtids: GtidSet,
    /// The GTID of the transaction being read: it joins `gtids` at the transaction's end,
    /// never before, so a checkpoint never names a transaction it does not include.
    open_gtid: Option<OpenGtid>,
    /// `(database, table)` of the heartbeat table, when configured.
    heartbeat: Option<(String, String)>,
    /// The newest heartbeat time read off the stream, µs since the Unix epoch.
    last_heartbeat_us: u64,
    /// The foreign keys whose cascades are emulated; `None` until read, and again after a
    /// DDL statement or a re-planned table may have changed them.
    cascades: Option<Arc<Graph>>,
}

/// What one connection's stream has read so far; a reconnect starts a new one.
struct Read {
    /// The binlog file events are read from now.
    file: String,
    /// Synced tables by the table id of their latest table map.
    by_id: HashMap<u64, Arc<SyncedTable>>,
    /// Table ids of the heartbeat table.
    heartbeat_ids: Vec<u64>,
    /// Parent tables whose rows may start a foreign-key cascade, by table id.
    parent_ids: HashMap<u64, (String, String)>,
    /// Changes of committed transactions not yet handed to the applier.
    pending: Batch,
    /// Changes of the transaction being read; they join `pending` at its commit. Kept
    /// apart so that a transaction too big for the batch is cut into pieces of its own:
    /// the committed transactions before it go first, with their checkpoint, and are
    /// never carried by a piece without one (which a crash would make replay).
    open: Batch,
    /// Inside a transaction: no checkpoint may be placed.
    in_tx: bool,
    /// Where a checkpoint placed now would resume (only valid between transactions).
    boundary: BinlogPosition,
    /// When the first transaction not yet handed over committed (read off the stream):
    /// the linger counts from there.
    first_commit: Option<Instant>,
}

impl Read {
    fn from(position: &BinlogPosition) -> Read {
        Read {
            file: position.file.clone(),
            by_id: HashMap::new(),
            heartbeat_ids: Vec::new(),
            parent_ids: HashMap::new(),
            pending: Batch::default(),
            open: Batch::default(),
            in_tx: false,
            boundary: position.clone(),
            first_commit: None,
        }
    }

    /// Whether something read (changes, or a boundary past the last checkpoint) has not
    /// been handed over.
    fn has_unsent(&self, last_sent: &BinlogPosition) -> bool {
        !self.pending.changes.is_empty()
            || !self.pending.dead_letters.is_empty()
            || !self.pending.cascades.is_empty()
            || &self.boundary != last_sent
    }
}

impl Tailer {
    pub fn new(
        mysql_url: String,
        server_id: u32,
        batch_size: usize,
        pool: mysql_async::Pool,
        tables: &[Arc<SyncedTable>],
        heartbeat: Option<(String, String)>,
        from: Checkpoint,
    ) -> Tailer {
        Tailer {
            mysql_url,
            server_id,
            batch_size,
            linger: Duration::ZERO,
            pool,
            tables: tables
                .iter()
                .map(|t| {
                    (
                        (t.schema.database.clone(), t.schema.table.clone()),
                        t.clone(),
                    )
                })
                .collect(),
            dirty: Vec::new(),
            gtids: from.gtids.clone(),
            open_gtid: None,
            heartbeat,
            last_heartbeat_us: 0,
            last_sent: from,
            cascades: None,
        }
    }

    /// Merges transactions for up to `linger` after a batch's first commit (see the
    /// module's batching rule).
    pub fn with_linger(mut self, linger: Duration) -> Tailer {
        self.linger = linger;
        self
    }

    /// Streams from `self.last_sent` until `shutdown`; returns `Ok` only on shutdown.
    pub async fn run(
        &mut self,
        out: &mpsc::Sender<Batch>,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let from = self.last_sent.position.clone();
        self.gtids = self.last_sent.gtids.clone();
        self.open_gtid = None;
        self.cascade_graph().await?;
        let mut stream = self.open_stream(&from).await?;
        let mut read = Read::from(&from);
        // One timer for the whole stream, moved instead of re-created per event: the
        // linger's deadline moves once per batch, the idle flush's once per event.
        let timer = tokio::time::sleep(IDLE_FLUSH);
        tokio::pin!(timer);
        loop {
            let unsent = !read.in_tx && read.has_unsent(&self.last_sent.position);
            if unsent {
                let deadline = match read.first_commit {
                    Some(first) if !self.linger.is_zero() => first + self.linger,
                    _ => Instant::now() + IDLE_FLUSH,
                };
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
            }
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    // Hand over what is committed; an open transaction is re-read later.
                    if unsent {
                        self.flush_committed(out, &mut read).await?;
                    }
                    return Ok(());
                }
                event = stream.next() => event,
                () = &mut timer, if unsent => {
                    self.flush_committed(out, &mut read).await?;
                    continue;
                }
            };
            match event {
                Some(Ok(event)) => self.on_event(&event, &stream, &mut read, out).await?,
                Some(Err(e)) => return Err(stream_error(e, &self.last_sent.position)),
                None => {
                    // Worth reconnecting, as after any lost connection.
                    return Err(Error::Unreachable {
                        service: "MySQL",
                        url: redact_url(&self.mysql_url),
                        reason: "the server closed the replication stream".to_owned(),
                    });
                }
            }
        }
    }

    /// Connects as a replica and asks for the stream from `from`.
    async fn open_stream(&self, from: &BinlogPosition) -> Result<BinlogStream> {
        let mut conn = self.connect().await?;
        // MariaDB then sends its GTID events (instead of BEGIN), so checkpoints can name
        // the GTID they stand at. Other servers ignore the variable.
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(|e| Error::mysql("announcing GTID capability", e))?;
        // Ask for a heartbeat every second when there is nothing to send: that is how
        // the tailer learns it is caught up (lag 0) on an idle server.
        conn.query_drop("SET @master_heartbeat_period = 1000000000")
            .await
            .map_err(|e| Error::mysql("asking for replication heartbeats", e))?;
        let request = BinlogStreamRequest::new(self.server_id)
            .with_filename(from.file.as_bytes())
            .with_pos(from.pos);
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| stream_error(e, from))?;
        info!(from = %from, server_id = self.server_id, "tailing the binlog");
        Ok(stream)
    }

    /// One event of the stream, by kind.
    async fn on_event(
        &mut self,
        event: &Event,
        stream: &BinlogStream,
        read: &mut Read,
        out: &mpsc::Sender<Batch>,
    ) -> Result<()> {
        let header = event.header();
        match header.event_type_raw() {
            HEARTBEAT_EVENT => return self.on_heartbeat(read, out).await,
            MARIADB_GTID_EVENT => {
                self.on_mariadb_gtid(event, read);
                return Ok(());
            }
            _ => {}
        }
        let end = BinlogPosition::new(read.file.clone(), u64::from(header.log_pos()));
        let data = event.read_data().map_err(|e| Error::Strategy {
            strategy: "binlog",
            reason: format!("cannot decode the event ending at {end}: {e}"),
        })?;
        let commit_us = self.commit_us(header.timestamp());
        match data {
            Some(EventData::RotateEvent(rotate)) => {
                read.file = rotated_file_name(&rotate.name(), &read.file);
                if !read.in_tx {
                    read.boundary = BinlogPosition::new(read.file.clone(), rotate.position());
                }
            }
            Some(EventData::QueryEvent(query)) => {
                let text = query.query();
                let statement = text.trim();
                if statement.eq_ignore_ascii_case("BEGIN") {
                    read.in_tx = true;
                } else {
                    if !statement.eq_ignore_ascii_case("COMMIT") {
                        self.note_ddl(&query.schema(), statement);
                        read.by_id.clear();
                        read.parent_ids.clear();
                    }
                    self.on_commit(end, commit_us, read, out).await?;
                }
            }
            Some(EventData::GtidEvent(gtid)) => {
                self.open_gtid = Some(OpenGtid::MySql {
                    uuid: uuid_text(&gtid.sid()),
                    gno: gtid.gno(),
                });
            }
            Some(EventData::XidEvent(_)) => self.on_commit(end, commit_us, read, out).await?,
            Some(EventData::TableMapEvent(tme)) => self.on_table_map(&tme, read).await?,
            Some(EventData::RowsEvent(rows)) => {
                self.on_rows(&rows, stream, end, commit_us, read, out)
                    .await?
            }
            _ => {}
        }
        Ok(())
    }

    /// The server has nothing newer: hand over what is committed, or tell the applier
    /// the stream is idle so lag drops to zero.
    async fn on_heartbeat(&mut self, read: &mut Read, out: &mpsc::Sender<Batch>) -> Result<()> {
        if read.in_tx {
            return Ok(());
        }
        read.pending.caught_up = true;
        if read.has_unsent(&self.last_sent.position) {
            self.flush_committed(out, read).await
        } else {
            self.flush(out, &mut read.pending, None).await
        }
    }

    /// MariaDB's GTID event opens a transaction, unless its FL_STANDALONE flag says a
    /// single statement follows.
    fn on_mariadb_gtid(&mut self, event: &Event, read: &mut Read) {
        const FL_STANDALONE: u8 = 1;
        let data = event.data();
        if data.len() >= 13 {
            let seq = u64::from_le_bytes(data[0..8].try_into().unwrap_or_default());
            let domain = u32::from_le_bytes(data[8..12].try_into().unwrap_or_default());
            self.open_gtid = Some(OpenGtid::MariaDb {
                domain,
                server: event.header().server_id(),
                seq,
            });
            read.in_tx = data[12] & FL_STANDALONE == 0;
        }
    }

    /// A transaction (or a DDL statement) ended at `end`: a checkpoint may go there.
    async fn on_commit(
        &mut self,
        end: BinlogPosition,
        commit_us: u64,
        read: &mut Read,
        out: &mpsc::Sender<Batch>,
    ) -> Result<()> {
        read.in_tx = false;
        read.boundary = end;
        self.close_gtid();
        read.pending.append(&mut read.open);
        read.pending.commit_us = commit_us;
        let first = *read.first_commit.get_or_insert_with(Instant::now);
        let full = read.pending.size() >= self.batch_size;
        let idle = out.capacity() == out.max_capacity();
        if full || (idle && first.elapsed() >= self.linger) {
            self.flush_committed(out, read).await?;
        }
        Ok(())
    }

    /// Remembers which table an id stands for, re-planning a synced table whose shape
    /// changed.
    async fn on_table_map(&mut self, tme: &TableMapEvent<'_>, read: &mut Read) -> Result<()> {
        let key = (
            tme.database_name().into_owned(),
            tme.table_name().into_owned(),
        );
        if self.tables.contains_key(&key) {
            let table = self.table_for(&key, tme).await?;
            read.by_id.insert(tme.table_id(), table);
        } else if self.heartbeat.as_ref() == Some(&key) {
            read.heartbeat_ids.push(tme.table_id());
        }
        if self.cascade_graph().await?.watches(&key) {
            self.check_parent_shape(&key, tme).await?;
            read.parent_ids.insert(tme.table_id(), key);
        }
        Ok(())
    }

    /// The emulated foreign keys, read again when a DDL statement or a re-plan may have
    /// changed them.
    async fn cascade_graph(&mut self) -> Result<Arc<Graph>> {
        if let Some(graph) = &self.cascades {
            return Ok(graph.clone());
        }
        let tables: Vec<Arc<SyncedTable>> = self.tables.values().cloned().collect();
        let graph = Arc::new(super::cascade::load(&self.pool, &self.mysql_url, &tables).await?);
        graph.log();
        self.cascades = Some(graph.clone());
        Ok(graph)
    }

    /// Parent rows are decoded by the column positions the graph read; a table map of
    /// another shape means a DDL the graph has not seen: read it again, once.
    async fn check_parent_shape(
        &mut self,
        key: &(String, String),
        tme: &TableMapEvent<'_>,
    ) -> Result<()> {
        let fits = |graph: &Graph| {
            graph.parent_columns(key).is_some_and(|planned| {
                planned.len() == tme.columns_count() as usize
                    && column_names(tme).is_none_or(|logged| logged == planned)
            })
        };
        if fits(&*self.cascade_graph().await?) {
            return Ok(());
        }
        self.cascades = None;
        if fits(&*self.cascade_graph().await?) {
            return Ok(());
        }
        Err(Error::Strategy {
            strategy: "binlog",
            reason: format!(
                "the binlog rows of {}.{} (a parent of a foreign-key cascade cachesync \
                 emulates) no longer match its current schema (several DDL changes behind?); \
                 run `cachesync snapshot` to reload",
                key.0, key.1
            ),
        })
    }

    /// Row images of a synced table become changes (a heartbeat row moves the commit-time
    /// bound); a transaction larger than `batch_size` is handed over in pieces.
    async fn on_rows(
        &mut self,
        rows: &RowsEventData<'_>,
        stream: &BinlogStream,
        end: BinlogPosition,
        commit_us: u64,
        read: &mut Read,
        out: &mpsc::Sender<Batch>,
    ) -> Result<()> {
        if read.heartbeat_ids.contains(&rows.table_id()) {
            if let Some(tme) = stream.get_tme(rows.table_id()) {
                for (_, after) in rows.rows(tme).flatten() {
                    if let Some(us) = after
                        .as_ref()
                        .and_then(|r| r.as_ref(1))
                        .and_then(super::heartbeat::micros_of)
                    {
                        self.last_heartbeat_us = self.last_heartbeat_us.max(us);
                    }
                }
            }
            return Ok(());
        }
        let table = read.by_id.get(&rows.table_id()).cloned();
        let parent = read.parent_ids.get(&rows.table_id()).cloned();
        let graph = match &parent {
            Some(_) => Some(self.cascade_graph().await?),
            None => None,
        };
        if table.is_none() && parent.is_none() {
            return Ok(());
        }
        let tme = stream
            .get_tme(rows.table_id())
            .ok_or_else(|| Error::Strategy {
                strategy: "binlog",
                reason: format!("rows event at {end} without its table map"),
            })?;
        let version = end.version();
        // Only with a heartbeat: bare binlog event times have one-second resolution, too
        // coarse for a per-change latency.
        let committed_at_us = self.heartbeat.is_some().then_some(commit_us);
        for row in rows.rows(tme) {
            let (before, after) = match row {
                Ok(images) => images,
                Err(e) => {
                    let error = Error::Decode {
                        table: format!("{}.{}", tme.database_name(), tme.table_name()),
                        column: "*".to_owned(),
                        reason: format!("row event ending at {end}: {e}"),
                    };
                    let Some(table) = &table else {
                        // Only a parent whose cascades are emulated: without its rows the
                        // children's keys cannot be found, so going past would leave them
                        // stale silently.
                        return Err(error);
                    };
                    // The event itself does not parse, so neither does the rest of it: a
                    // poison the stream goes past, like an undecodable value.
                    read.open.dead_letters.push(DeadLetter::new(
                        "binlog",
                        table,
                        None,
                        &error,
                        end.to_string(),
                    ));
                    break;
                }
            };
            if let (Some(graph), Some(parent)) = (&graph, &parent) {
                graph.on_row(
                    parent,
                    before.as_ref(),
                    after.as_ref(),
                    version,
                    &mut read.open.cascades,
                )?;
            }
            let Some(table) = &table else { continue };
            push_row_change(
                &mut read.open,
                table,
                before.as_ref(),
                after.as_ref(),
                version,
                committed_at_us,
                &end,
            );
        }
        read.open.commit_us = commit_us;
        if read.pending.size() + read.open.size() >= self.batch_size {
            // Too big for one batch with what is committed: that goes first, with its
            // checkpoint; a transaction that alone fills a batch is handed over in
            // pieces without one.
            if read.has_unsent(&self.last_sent.position) {
                self.flush_committed(out, read).await?;
            }
            if read.open.size() >= self.batch_size {
                self.flush(out, &mut read.open, None).await?;
            }
        }
        Ok(())
    }

    async fn connect(&self) -> Result<Conn> {
        let opts = mysql_async::Opts::from_url(&self.mysql_url).map_err(|e| {
            Error::Config(vec![crate::redact::scrub(
                &format!("mysql.url: {e}"),
                &self.mysql_url,
            )])
        })?;
        Conn::new(opts).await.map_err(|e| Error::Unreachable {
            service: "MySQL",
            url: redact_url(&self.mysql_url),
            reason: crate::error::describe_mysql(&e),
        })
    }

    /// The transaction just ended: its GTID now belongs to the checkpoint.
    fn close_gtid(&mut self) {
        match self.open_gtid.take() {
            Some(OpenGtid::MariaDb {
                domain,
                server,
                seq,
            }) => self.gtids.record_mariadb(domain, server, seq),
            Some(OpenGtid::MySql { uuid, gno }) => self.gtids.record_mysql(&uuid, gno),
            None => {}
        }
    }

    /// The lower bound of the commit time of an event logged at `event_time` (Unix
    /// seconds): its second, or the newest heartbeat before it if that is later.
    fn commit_us(&self, event_time: u32) -> u64 {
        (u64::from(event_time) * 1_000_000).max(self.last_heartbeat_us)
    }

    /// Hands over what is read up to the last transaction boundary, with its checkpoint
    /// (the caller knows no transaction is open).
    async fn flush_committed(&mut self, out: &mpsc::Sender<Batch>, read: &mut Read) -> Result<()> {
        read.first_commit = None;
        self.flush(out, &mut read.pending, Some(read.boundary.clone()))
            .await
    }

    async fn flush(
        &mut self,
        out: &mpsc::Sender<Batch>,
        pending: &mut Batch,
        checkpoint: Option<BinlogPosition>,
    ) -> Result<()> {
        let mut batch = std::mem::take(pending);
        if let Some(position) = checkpoint {
            let checkpoint = Checkpoint {
                position,
                gtids: self.gtids.clone(),
            };
            self.last_sent = checkpoint.clone();
            batch.checkpoint = Some(checkpoint);
        }
        out.send(batch).await.map_err(|_| Error::Strategy {
            strategy: "binlog",
            reason: "the Redis applier stopped".to_owned(),
        })
    }

    /// Marks synced tables a DDL statement may have changed; they are re-read from
    /// `information_schema` at their next table map.
    fn note_ddl(&mut self, default_schema: &str, statement: &str) {
        let lower = statement.to_ascii_lowercase();
        let parents: Vec<(String, String)> = self
            .cascades
            .iter()
            .flat_map(|graph| graph.relations.iter().map(|r| r.fk.parent.clone()))
            .collect();
        let named = |database: &str, table: &str| {
            lower.contains(&table.to_ascii_lowercase())
                && (default_schema.eq_ignore_ascii_case(database)
                    || lower.contains(&database.to_ascii_lowercase()))
        };
        // A foreign key is added or dropped by a DDL naming its child (a synced table),
        // and a parent's columns move with a DDL naming the parent.
        if self.tables.keys().chain(&parents).any(|(d, t)| named(d, t)) {
            self.cascades = None;
        }
        for (database, table) in self.tables.keys() {
            if named(database, table) {
                debug!(database, table, "DDL seen; the schema will be re-read");
                self.dirty.push((database.clone(), table.clone()));
            }
        }
    }

    /// The plan for a synced table whose rows follow `tme`, re-reading the schema when a
    /// DDL touched it or the table map's shape differs from the plan.
    async fn table_for(
        &mut self,
        key: &(String, String),
        tme: &TableMapEvent<'_>,
    ) -> Result<Arc<SyncedTable>> {
        let current = self.tables[key].clone();
        let dirty = self.dirty.contains(key);
        if !dirty && shape_matches(&current, tme) {
            return Ok(current);
        }
        let mut conn = crate::mysql::get_conn(&self.pool, &self.mysql_url).await?;
        let mut schema = crate::mysql::schema::read_table(&mut conn, &key.0, &key.1)
            .await?
            .ok_or_else(|| Error::Strategy {
                strategy: "binlog",
                reason: format!("table {}.{} was dropped", key.0, key.1),
            })?;
        // The members the rows were written with win over today's information_schema.
        use_logged_members(&mut schema, tme);
        let planned = SyncedTable::plan(&current.config, schema).map_err(Error::Config)?;
        let planned = Arc::new(planned);
        if !shape_matches(&planned, tme) {
            return Err(Error::Strategy {
                strategy: "binlog",
                reason: format!(
                    "the binlog rows of {} no longer match its current schema (several DDL \
                     changes behind?); run `cachesync snapshot` to reload it",
                    current.name()
                ),
            });
        }
        info!(table = %planned.name(), columns = planned.encoder.names().join(","), "schema re-read");
        self.dirty.retain(|k| k != key);
        self.tables.insert(key.clone(), planned.clone());
        // The cascade graph holds the old plan of this table.
        self.cascades = None;
        Ok(planned)
    }
}

/// Whether rows described by `tme` have the columns `table` was planned for: same count
/// and, when the server logs them (`binlog_row_metadata=FULL`), the same column names and
/// the same ENUM and SET members (a row stores an ENUM as its member's index, so a
/// reordered member list would otherwise decode to the wrong string).
fn shape_matches(table: &SyncedTable, tme: &TableMapEvent<'_>) -> bool {
    if tme.columns_count() as usize != table.schema.columns.len() {
        return false;
    }
    if let Some(names) = column_names(tme)
        && !names
            .iter()
            .zip(&table.schema.columns)
            .all(|(logged, planned)| logged == &planned.name)
    {
        return false;
    }
    let planned = |enums: bool| -> Vec<Vec<String>> {
        table
            .schema
            .columns
            .iter()
            .filter_map(|c| match (&c.ty, enums) {
                (Ok(ColumnType::Enum(members)), true) | (Ok(ColumnType::Set(members)), false) => {
                    Some(members.clone())
                }
                _ => None,
            })
            .collect()
    };
    let (enums, sets) = logged_members(tme);
    enums.is_none_or(|logged| logged == planned(true))
        && sets.is_none_or(|logged| logged == planned(false))
}

/// Replaces the ENUM and SET members of `schema` with those the table map logged, when
/// it logged them and the column counts agree.
fn use_logged_members(schema: &mut TableSchema, tme: &TableMapEvent<'_>) {
    let (enums, sets) = logged_members(tme);
    let mut enums = enums.map(Vec::into_iter);
    let mut sets = sets.map(Vec::into_iter);
    for column in &mut schema.columns {
        match &mut column.ty {
            Ok(ColumnType::Enum(members)) => {
                if let Some(logged) = enums.as_mut().and_then(Iterator::next) {
                    *members = logged;
                }
            }
            Ok(ColumnType::Set(members)) => {
                if let Some(logged) = sets.as_mut().and_then(Iterator::next) {
                    *members = logged;
                }
            }
            _ => {}
        }
    }
}

/// One member list per ENUM (or SET) column, in column order.
type Members = Vec<Vec<String>>;

/// The ENUM and the SET columns' members, in column order, when the table map has them.
fn logged_members(tme: &TableMapEvent<'_>) -> (Option<Members>, Option<Members>) {
    let text = |raw: &[u8]| String::from_utf8_lossy(raw).into_owned();
    let (mut enums, mut sets) = (None, None);
    for field in tme.iter_optional_meta() {
        match field {
            Ok(OptionalMetadataField::EnumStrValue(values)) => {
                enums = Some(
                    values
                        .iter_values()
                        .filter_map(|column| column.ok())
                        .map(|column| {
                            column
                                .values()
                                .iter()
                                .map(|v| text(v.value_raw()))
                                .collect()
                        })
                        .collect(),
                );
            }
            Ok(OptionalMetadataField::SetStrValue(values)) => {
                sets = Some(
                    values
                        .iter_values()
                        .filter_map(|column| column.ok())
                        .map(|column| {
                            column
                                .values()
                                .iter()
                                .map(|v| text(v.value_raw()))
                                .collect()
                        })
                        .collect(),
                );
            }
            _ => {}
        }
    }
    (enums, sets)
}

/// Column names from the table map's optional metadata, when present.
fn column_names(tme: &TableMapEvent<'_>) -> Option<Vec<String>> {
    tme.iter_optional_meta().find_map(|field| match field {
        Ok(OptionalMetadataField::ColumnName(names)) => Some(
            names
                .iter_names()
                .filter_map(|n| n.ok().map(|n| n.name().into_owned()))
                .collect(),
        ),
        _ => None,
    })
}

/// Turns one row image pair into changes: insert → upsert, delete → delete, update →
/// upsert (plus a delete of the old key when the primary key changed).
///
/// Poison rows never stop the stream. A before image only names the old key, so only its
/// key columns are decoded: a row stored undecodable can still be fixed or deleted. An
/// after image that cannot be decoded becomes a delete of its key (readers fall back to
/// MySQL; the row's next decodable change, or `verify --repair`, fills it again) and a
/// dead letter saying which column, why and where.
fn push_row_change(
    pending: &mut Batch,
    table: &Arc<SyncedTable>,
    before: Option<&BinlogRow>,
    after: Option<&BinlogRow>,
    version: u64,
    committed_at_us: Option<u64>,
    end: &BinlogPosition,
) {
    let change = |op: Op, row: Vec<Cell>| Change {
        table: table.clone(),
        op,
        row,
        version: Some(version),
        // Only with a heartbeat: bare binlog event times have one-second resolution, too
        // coarse for a per-change latency.
        committed_at_us,
    };
    let mut dead_letter = |key_row: Option<&[Cell]>, error: &Error| {
        pending.dead_letters.push(DeadLetter::new(
            "binlog",
            table,
            key_row,
            error,
            end.to_string(),
        ));
    };
    let before = match before.map(|r| table.decode_binlog_key(r)) {
        Some(Ok(key_row)) => Some(key_row),
        Some(Err(e)) => {
            dead_letter(None, &e);
            None
        }
        None => None,
    };
    let after = match after.map(|r| (r, table.decode_binlog_row(r))) {
        None => None,
        Some((_, Ok(row))) => Some((Op::Upsert, row)),
        Some((image, Err(e))) => match table.decode_binlog_key(image) {
            Ok(key_row) => {
                dead_letter(Some(&key_row), &e);
                Some((Op::Delete, key_row))
            }
            Err(_) => {
                dead_letter(None, &e);
                None
            }
        },
    };
    match (before, after) {
        (Some(before), None) => pending.changes.push(change(Op::Delete, before)),
        (before, Some((op, row))) => {
            if let Some(before) = before
                && !table.same_key(&before, &row)
            {
                pending.changes.push(change(Op::Delete, before));
            }
            pending.changes.push(change(op, row));
        }
        (None, None) => {}
    }
}

/// The file a rotate event names. The server sends the first (fake) rotate event before
/// the format description that announces checksums, so its name can arrive with the
/// 4 checksum bytes glued on: `binlog.000004` + CRC. Binlog names are `base.NNNNNN`, so
/// the name is cut after the digits that follow its last dot; when it starts with the
/// file tailing began from, that name is kept as is.
fn rotated_file_name(logged: &str, current: &str) -> String {
    if !current.is_empty() && logged.starts_with(current) {
        return current.to_owned();
    }
    match logged.rfind('.') {
        Some(dot) => {
            let digits = logged[dot + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            logged[..dot + 1 + digits].to_owned()
        }
        None => logged.to_owned(),
    }
}

/// A MySQL server UUID as text (`3e11fa47-71ca-11e1-9e33-c80aa9429562`).
fn uuid_text(sid: &[u8; 16]) -> String {
    let hex: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Classifies a replication stream error: a purged binlog or a refused replica needs a
/// person (not transient); anything else broke the stream and is worth reconnecting.
fn stream_error(e: mysql_async::Error, from: &BinlogPosition) -> Error {
    match &e {
        // ER_MASTER_FATAL_ERROR_READING_BINLOG: the file is gone (purged) or the
        // position is not an event boundary.
        mysql_async::Error::Server(s) if s.code == 1236 => Error::Strategy {
            strategy: "binlog",
            reason: format!(
                "the server cannot stream from {from}: {} — the binlog was probably purged; \
                 run `cachesync snapshot` to reload the tables and continue from the current position",
                s.message
            ),
        },
        mysql_async::Error::Server(s) if matches!(s.code, 1044 | 1045 | 1227) => Error::Strategy {
            strategy: "binlog",
            reason: format!(
                "the server refused replication: {} (grant REPLICATION SLAVE, REPLICATION CLIENT; see `cachesync doctor`)",
                s.message
            ),
        },
        mysql_async::Error::Server(s) => Error::Unreachable {
            service: "MySQL",
            url: "the replication stream".to_owned(),
            reason: format!("{} (MySQL error {})", s.message, s.code),
        },
        _ => Error::mysql("reading the binlog", e),
    }
}

#[cfg(test)]
mod tests {
    use super::rotated_file_name;

    #[test]
    fn rotate_names_lose_glued_checksum_bytes() {
        assert_eq!(
            rotated_file_name("binlog.000004\u{1}\u{fffd}x", "binlog.000004"),
            "binlog.000004"
        );
        assert_eq!(
            rotated_file_name("binlog.000005\u{fffd}", "binlog.000004"),
            "binlog.000005"
        );
        assert_eq!(
            rotated_file_name("binlog.000005", "binlog.000004"),
            "binlog.000005"
        );
        assert_eq!(
            rotated_file_name("mysql-bin.000123", ""),
            "mysql-bin.000123"
        );
    }
}
