//! Dual-write: the application's write commits to MySQL, then writes Redis.
//!
//! Lowest propagation latency and no moving parts, but the two writes are not atomic:
//! if Redis fails after the commit the cache stays stale until the next write of that
//! row, and two concurrent writers of one row can reach MySQL and Redis in opposite
//! orders. A configured `version_column` lets the applier's guard stop the second
//! problem; nothing but a retry stops the first. (Retry with backoff and the sidecar
//! write API come with issue #4.)
//!
//! The Redis value is not built from the request but is the committed row read back by
//! [`crate::sqlwrite::commit`], exactly as a `SELECT` shows it.

use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{RowWrite, StrategyKind, SyncStrategy, WriteReceipt};
use crate::applier::{Applier, Change, Op, unix_micros};
use crate::error::Result;
use crate::metrics as m;

/// The dual-write strategy.
pub struct DualWrite {
    pool: mysql_async::Pool,
    applier: Applier,
}

impl DualWrite {
    pub fn new(pool: mysql_async::Pool, applier: Applier) -> DualWrite {
        DualWrite { pool, applier }
    }
}

impl SyncStrategy for DualWrite {
    fn kind(&self) -> StrategyKind {
        StrategyKind::DualWrite
    }

    async fn write(&self, write: RowWrite) -> Result<WriteReceipt> {
        let started = Instant::now();
        let table = write.table.clone();
        let image = crate::sqlwrite::commit(&self.pool, &write).await?;
        let committed_at_us = unix_micros(SystemTime::now());
        let (op, row) = match image {
            Some(row) => (Op::Upsert, row),
            // A delete only needs the key: the primary-key cells, others NULL.
            None => (Op::Delete, crate::sqlwrite::key_only_row(&table, &write)?),
        };
        let version = table.version_of(&row);
        let change = Change {
            table: table.clone(),
            op,
            row,
            version,
            committed_at_us: Some(committed_at_us),
        };
        let applied = self.applier.apply(std::slice::from_ref(&change)).await?;
        metrics::histogram!(m::WRITE_DURATION, "strategy" => self.kind().name(), "table" => table.name())
            .record(started.elapsed().as_secs_f64());
        Ok(WriteReceipt {
            committed_at_us,
            version,
            applied: Some(applied),
        })
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        // The writer does all the work; there is nothing in the background to drain.
        shutdown.cancelled().await;
        Ok(())
    }
}
