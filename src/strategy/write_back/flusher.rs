//! The flusher: changes from the write-back queue into MySQL, in batches, acknowledged
//! only after the commit.
//!
//! A round takes up to `batch_size` changes — first those read before a crash and never
//! acknowledged, then new ones, waiting at most `max_delay` after the first for the batch
//! to fill — and coalesces each row's changes: the last delete (if any) and the upserts
//! after it, merged column by column in queue order. Everything goes to MySQL in one
//! transaction — rows that are only an upsert in multi-row statements, 50 rows and their
//! read-back in two statements (`mysql::write::upsert_many_in`) — then the cache gets each row as MySQL committed it at the version of its
//! last change (the version guard keeps a newer write that landed meanwhile), and the
//! round's changes are acknowledged and removed from the stream.
//!
//! When MySQL refuses the transaction, every row is tried again in a transaction of its
//! own, so one bad change does not hold up the others; the refused ones go to the
//! dead-letter stream and their keys are repaired from MySQL. A lost connection or a
//! deadlock is retried (error::Retry) with nothing acknowledged. Rounds run one after
//! another and each row's changes in queue order, so MySQL never gets an older value
//! after a newer one; a crash between the commit and the acknowledgement replays the
//! round — the same upserts and deletes again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mysql_async::TxOpts;
use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{Error, Result, Retry};
use crate::metrics as m;
use crate::model::cell::Cell;
use crate::model::change::{Change, Op, RowWrite, unix_micros};
use crate::model::event::ChangeEvent;
use crate::model::table::SyncedTable;
use crate::redis::Applier;
use crate::redis::queue::{ChangeQueue, QueuedChange};
use crate::strategy::StrategyKind;

const STRATEGY: &str = "write-back";

pub(super) struct Flusher {
    pub pool: mysql_async::Pool,
    pub mysql_url: String,
    pub queue: ChangeQueue,
    pub applier: Applier,
    pub tables: HashMap<String, Arc<SyncedTable>>,
    pub batch_size: usize,
    pub max_delay: Duration,
}

/// One row's changes in a round, coalesced.
struct RowChanges {
    table: Arc<SyncedTable>,
    key: String,
    /// The queue entries, in order.
    entries: Vec<QueuedChange>,
    /// The last delete of the row in the round (its primary key), if any.
    delete: Option<RowWrite>,
    /// The upserts after it, merged (column → value, later wins).
    upsert: Option<RowWrite>,
    /// The version of the row's last change.
    version: u64,
}

impl Flusher {
    /// Flushes until `shutdown`; then what is queued at that moment, and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        self.queue.ensure_group().await?;
        let mut retry = Retry::new("write-back flush failed; retrying", &shutdown);
        // The changes read before a restart and never acknowledged come first.
        let mut pending = true;
        loop {
            let draining = shutdown.is_cancelled();
            let batch = match self.next_batch(pending, draining).await {
                Ok(batch) => batch,
                Err(e) => {
                    if !retry.again(e).await? {
                        return Ok(());
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                if pending {
                    pending = false;
                    continue;
                }
                self.report_backlog().await;
                if draining {
                    info!("write-back queue flushed");
                    return Ok(());
                }
                continue;
            }
            match self.flush(&batch).await {
                Ok(()) => {}
                Err(e) => {
                    metrics::counter!(m::WRITE_BACK_FLUSH_ERRORS, "strategy" => STRATEGY)
                        .increment(1);
                    // Nothing was acknowledged: the same changes come back as pending.
                    pending = true;
                    if !retry.again(e).await? {
                        return Ok(());
                    }
                    continue;
                }
            }
            self.report_backlog().await;
        }
    }

    /// The next round's changes: pending ones, or new ones within `max_delay` of the
    /// first (no waiting while draining).
    async fn next_batch(&self, pending: bool, draining: bool) -> Result<Vec<QueuedChange>> {
        if pending {
            return self.queue.read(true, self.batch_size, None).await;
        }
        let block = (!draining).then_some(self.max_delay);
        let mut batch = self.queue.read(false, self.batch_size, block).await?;
        if draining || batch.is_empty() {
            return Ok(batch);
        }
        let deadline = Instant::now() + self.max_delay;
        while batch.len() < self.batch_size {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(1) {
                break;
            }
            let more = self
                .queue
                .read(false, self.batch_size - batch.len(), Some(left))
                .await?;
            if more.is_empty() {
                break;
            }
            batch.extend(more);
        }
        Ok(batch)
    }

    /// One round: coalesce, commit, refresh the cache, acknowledge.
    async fn flush(&self, batch: &[QueuedChange]) -> Result<()> {
        let (rows, unreadable) = self.coalesce(batch);
        for (change, reason) in &unreadable {
            self.dead_letter(change, reason).await?;
        }
        // Done with them whatever happens to the rest of the round.
        let unreadable_ids: Vec<String> = unreadable.iter().map(|(c, _)| c.id.clone()).collect();
        self.queue.ack(&unreadable_ids).await?;
        let coalesced = batch.len() - unreadable.len() - rows.iter().map(statements).sum::<usize>();
        let committed = match self.commit(&rows, true).await {
            Ok(images) => rows.iter().zip(images).collect::<Vec<_>>(),
            Err(e) if e.is_transient() => return Err(e),
            // MySQL refused something: each row on its own, to find which.
            Err(e) => {
                warn!(error = %e, changes = batch.len(), "MySQL refused a write-back batch; flushing its rows one by one");
                let mut committed = Vec::with_capacity(rows.len());
                for row in &rows {
                    match self.commit(std::slice::from_ref(row), false).await {
                        Ok(mut image) => committed.push((row, image.remove(0))),
                        Err(e) if e.is_transient() => return Err(e),
                        Err(e) => self.refused(row, &e).await?,
                    }
                }
                committed
            }
        };
        let now_us = unix_micros(SystemTime::now());
        for (row, _) in &committed {
            for entry in &row.entries {
                let seconds = now_us.saturating_sub(entry.at_us) as f64 / 1e6;
                metrics::histogram!(m::PROPAGATION, "strategy" => STRATEGY, "table" => row.table.name())
                    .record(seconds);
            }
        }
        // The rows as MySQL committed them, at the version of their last change: what the
        // write added (defaults, triggers, coercions) shows in the cache, and a newer
        // write that landed meanwhile is kept by the guard.
        let refresh: Vec<Change> = committed
            .iter()
            .filter_map(|(row, image)| {
                image.as_ref().map(|image| Change {
                    table: row.table.clone(),
                    op: Op::Upsert,
                    row: image.clone(),
                    version: Some(row.version),
                    committed_at_us: None,
                })
            })
            .collect();
        if !refresh.is_empty() {
            self.applier.apply(&refresh).await?;
        }
        if coalesced > 0 {
            metrics::counter!(m::WRITE_BACK_COALESCED, "strategy" => STRATEGY)
                .increment(coalesced as u64);
        }
        let ids: Vec<String> = rows
            .iter()
            .flat_map(|row| row.entries.iter().map(|c| c.id.clone()))
            .collect();
        self.queue.ack(&ids).await
    }

    /// The round's changes by row, coalesced; and the entries that are not a change of
    /// a configured table, with the reason.
    fn coalesce(&self, batch: &[QueuedChange]) -> (Vec<RowChanges>, Vec<(QueuedChange, String)>) {
        let mut rows: Vec<RowChanges> = Vec::new();
        let mut by_key: HashMap<(String, String), usize> = HashMap::new();
        let mut unreadable = Vec::new();
        for change in batch {
            let write = match self.write_of(change) {
                Ok(write) => write,
                Err(reason) => {
                    unreadable.push((change.clone(), reason));
                    continue;
                }
            };
            let key = match crate::mysql::write::key_only_row(&write.table, &write) {
                Ok(cells) => write.table.key_of(&cells),
                Err(e) => {
                    unreadable.push((change.clone(), e.to_string()));
                    continue;
                }
            };
            let slot = *by_key
                .entry((write.table.name(), key.clone()))
                .or_insert_with(|| {
                    rows.push(RowChanges {
                        table: write.table.clone(),
                        key,
                        entries: Vec::new(),
                        delete: None,
                        upsert: None,
                        version: 0,
                    });
                    rows.len() - 1
                });
            let row = &mut rows[slot];
            row.entries.push(change.clone());
            row.version = row.version.max(change.version);
            match write.op {
                Op::Delete => {
                    row.upsert = None;
                    row.delete = Some(write);
                }
                Op::Upsert => match &mut row.upsert {
                    Some(merged) => {
                        for (name, value) in write.values {
                            match merged.values.iter_mut().find(|(n, _)| *n == name) {
                                Some(slot) => slot.1 = value,
                                None => merged.values.push((name, value)),
                            }
                        }
                    }
                    None => row.upsert = Some(write),
                },
            }
        }
        for row in &mut rows {
            // A table with a version column keeps each row's version in MySQL too.
            if let (Some(upsert), Some(position)) = (&mut row.upsert, row.table.version_column) {
                let name = row.table.encoder.names()[position].clone();
                let value = mysql_async::Value::UInt(row.version);
                match upsert.values.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = value,
                    None => upsert.values.push((name, value)),
                }
            }
        }
        (rows, unreadable)
    }

    /// The write a queued change asks for; `Err` says why it never can be made.
    fn write_of(&self, change: &QueuedChange) -> std::result::Result<RowWrite, String> {
        let event: ChangeEvent = serde_json::from_slice(&change.change)
            .map_err(|e| format!("not a change event: {e}"))?;
        let table = self
            .tables
            .get(&event.table)
            .ok_or_else(|| format!("table {} is not configured", event.table))?;
        event.to_write(table)
    }

    /// Commits the rows' statements in one transaction; each upserted row as committed
    /// (`None` for a row whose last change is a delete).
    ///
    /// `batched`: the rows that are only an upsert go in multi-row statements per table
    /// and column set (two statements per 50 rows, not two per row: at 1000 writes/s the
    /// one-by-one form was the flusher's limit here), after the rows with a delete, so a
    /// unique value a delete frees is free for them. Rows are distinct rows, so their
    /// order within the transaction changes nothing else. Not batched: each row's own
    /// statements in turn, which says exactly which row MySQL refuses.
    async fn commit(&self, rows: &[RowChanges], batched: bool) -> Result<Vec<Option<Vec<Cell>>>> {
        let mut conn = crate::mysql::get_conn(&self.pool, &self.mysql_url).await?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|e| Error::mysql("flushing write-back changes: BEGIN", e))?;
        let mut images: Vec<Option<Vec<Cell>>> = vec![None; rows.len()];
        // (table, columns) → the rows of one multi-row upsert, in round order.
        let mut groups: Vec<(String, Vec<&str>, Vec<usize>)> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            if let (true, None, Some(upsert)) = (batched, &row.delete, &row.upsert) {
                let name = row.table.name();
                let columns: Vec<&str> = upsert.values.iter().map(|(n, _)| n.as_str()).collect();
                match groups
                    .iter_mut()
                    .find(|(t, c, _)| *t == name && *c == columns)
                {
                    Some((_, _, members)) => members.push(i),
                    None => groups.push((name, columns, vec![i])),
                }
                continue;
            }
            if let Some(delete) = &row.delete {
                crate::mysql::write::write_in(&mut tx, delete).await?;
            }
            if let Some(upsert) = &row.upsert {
                images[i] = crate::mysql::write::write_in(&mut tx, upsert)
                    .await?
                    .into_upserted();
            }
        }
        for (_, _, members) in &groups {
            let table = &rows[members[0]].table;
            let writes: Vec<&RowWrite> = members
                .iter()
                .filter_map(|&i| rows[i].upsert.as_ref())
                .collect();
            let written = crate::mysql::write::upsert_many_in(&mut tx, table, &writes).await?;
            for (&i, image) in members.iter().zip(written) {
                images[i] = Some(image);
            }
        }
        tx.commit()
            .await
            .map_err(|e| Error::mysql("flushing write-back changes: COMMIT", e))?;
        Ok(images)
    }

    /// A row MySQL refused: its changes to the dead-letter stream, its key repaired from
    /// MySQL unless the cache holds a newer write of it.
    async fn refused(&self, row: &RowChanges, error: &Error) -> Result<()> {
        let reason = error.to_string();
        warn!(table = %row.table.name(), key = %row.key, error = %reason, "MySQL refused a write-back change; dead-lettering it and repairing the key from MySQL");
        for entry in &row.entries {
            self.dead_letter(entry, &reason).await?;
        }
        let write = row
            .upsert
            .as_ref()
            .or(row.delete.as_ref())
            .expect("a row in a round has a change");
        let key_cells = crate::mysql::write::key_only_row(&row.table, write)?;
        let mut conn = crate::mysql::get_conn(&self.pool, &self.mysql_url).await?;
        let found: Option<mysql_async::Row> = conn
            .exec_first(row.table.sql.select_by_key.as_str(), write.key_params()?)
            .await
            .map_err(|e| {
                Error::mysql(format!("repairing {} of {}", row.key, row.table.name()), e)
            })?;
        let repair = match found {
            Some(found) => Change {
                table: row.table.clone(),
                op: Op::Upsert,
                row: row.table.decode_sql_row(&found)?,
                version: Some(row.version),
                committed_at_us: None,
            },
            None => Change {
                table: row.table.clone(),
                op: Op::Delete,
                row: key_cells,
                version: Some(row.version),
                committed_at_us: None,
            },
        };
        self.applier.apply(&[repair]).await?;
        Ok(())
    }

    async fn dead_letter(&self, change: &QueuedChange, reason: &str) -> Result<()> {
        self.queue.dead_letter(change, reason).await?;
        metrics::counter!(m::DEAD_LETTERED, "strategy" => StrategyKind::WriteBack.name())
            .increment(1);
        Ok(())
    }

    /// Sets the queue-depth and flush-lag gauges (a failure to read them only logs).
    async fn report_backlog(&self) {
        match self.queue.backlog().await {
            Ok((depth, oldest_ms)) => {
                metrics::gauge!(m::WRITE_BACK_QUEUE_DEPTH, "strategy" => STRATEGY)
                    .set(depth as f64);
                let lag = oldest_ms.map_or(0.0, |ms| {
                    let now_ms = unix_micros(SystemTime::now()) / 1000;
                    now_ms.saturating_sub(ms) as f64 / 1e3
                });
                metrics::gauge!(m::WRITE_BACK_FLUSH_LAG, "strategy" => STRATEGY).set(lag);
            }
            Err(e) => warn!(error = %e, "could not measure the write-back queue"),
        }
    }
}

/// The statements a row's round becomes (a delete, an upsert, or both).
fn statements(row: &RowChanges) -> usize {
    usize::from(row.delete.is_some()) + usize::from(row.upsert.is_some())
}
