//! Reading a whole synced table from MySQL in batches of decoded rows, with progress
//! logs — what the snapshot, `verify` and the Bloom filter's build all do. A row that
//! cannot be decoded (a poison row) does not stop a scan: it comes back apart, for the
//! caller to report.

use std::time::{Duration, Instant};

use mysql_async::BinaryProtocol;
use mysql_async::prelude::Queryable;
use tracing::info;

use crate::error::{Error, Result};
use crate::model::cell::Cell;
use crate::model::table::{SyncedTable, UndecodableRow};

/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// One batch of a [`TableScan`].
#[derive(Debug, Default)]
pub struct ScanBatch {
    /// The rows that decoded, in scan order.
    pub rows: Vec<Vec<Cell>>,
    /// The rows that did not, with why and their key cells when those decode.
    pub undecodable: Vec<UndecodableRow>,
}

impl ScanBatch {
    /// Rows read, decoded or not.
    pub fn len(&self) -> usize {
        self.rows.len() + self.undecodable.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A running `SELECT` of a synced table (binary protocol, so floats keep their exact
/// value), read in batches; logs `what` progress every 2 s (rows done / estimated
/// total, rows/s) and once at the end.
pub struct TableScan<'a> {
    result: mysql_async::QueryResult<'a, 'static, BinaryProtocol>,
    table: &'a SyncedTable,
    batch: usize,
    what: &'static str,
    estimate: Option<u64>,
    started: Instant,
    last_report: Instant,
    /// Rows read so far.
    pub rows: u64,
}

impl<'a> TableScan<'a> {
    pub async fn open(
        conn: &'a mut mysql_async::Conn,
        table: &'a SyncedTable,
        batch: usize,
        what: &'static str,
    ) -> Result<TableScan<'a>> {
        let estimate = super::schema::estimated_rows(conn, table).await;
        let result = conn
            .exec_iter(table.sql.select_all.as_str(), ())
            .await
            .map_err(|e| Error::mysql(format!("reading {}", table.name()), e))?;
        let started = Instant::now();
        Ok(TableScan {
            result,
            table,
            batch,
            what,
            estimate,
            started,
            last_report: started,
            rows: 0,
        })
    }

    /// Up to `batch` rows, decoded or not; `None` once the table is read.
    pub async fn next_batch(&mut self) -> Result<Option<ScanBatch>> {
        let mut batch = ScanBatch {
            rows: Vec::with_capacity(self.batch),
            undecodable: Vec::new(),
        };
        while batch.len() < self.batch {
            let row: Option<mysql_async::Row> = self
                .result
                .next()
                .await
                .map_err(|e| Error::mysql(format!("reading {}", self.table.name()), e))?;
            let Some(row) = row else { break };
            match self.table.decode_sql_row_or_key(&row) {
                Ok(cells) => batch.rows.push(cells),
                Err(undecodable) => batch.undecodable.push(undecodable),
            }
        }
        self.rows += batch.len() as u64;
        if batch.is_empty() {
            self.report(Some(self.rows));
            return Ok(None);
        }
        if self.last_report.elapsed() >= PROGRESS_EVERY {
            self.last_report = Instant::now();
            self.report(self.estimate);
        }
        Ok(Some(batch))
    }

    fn report(&self, estimate: Option<u64>) {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let total = estimate.map_or_else(|| "?".to_owned(), |t| format!("~{}", t.max(self.rows)));
        info!(
            what = self.what,
            table = %self.table.name(),
            rows = self.rows,
            total,
            rows_per_s = (self.rows as f64 / seconds) as u64,
            "progress"
        );
    }
}
