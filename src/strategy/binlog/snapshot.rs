//! The initial load: every configured table copied into Redis from one consistent read,
//! and the binlog position of that same read, where tailing continues.
//!
//! Why no change is lost or regressed: the rows are read inside a
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT` whose binlog position P is read in the
//! same transaction (MariaDB's `binlog_snapshot_file/position`; on MySQL, under a brief
//! `FLUSH TABLES WITH READ LOCK`, as mysqldump does). Every row is written with
//! version(P). Writes that commit during the snapshot are logged after P, so the tail
//! replays them with larger versions; whichever reaches Redis first, the newer wins.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use tracing::info;

use super::position::BinlogPosition;
use super::server::binary_log_status;
use crate::error::{Error, Result};
use crate::model::change::DeadLetter;
use crate::model::table::{Mode, SyncedTable};
use crate::redis::Applier;

/// Rows per Redis batch while loading.
const CHUNK: usize = 1_000;

/// Loads `tables` into Redis and returns the binlog position to tail from. The caller
/// stores it as the checkpoint once the load is complete. A row that cannot be decoded
/// does not stop the load: its key is removed and it is recorded in `dead_letter_key`.
pub async fn load(
    pool: &mysql_async::Pool,
    mysql_url: &str,
    tables: &[Arc<SyncedTable>],
    applier: &Applier,
    dead_letter_key: &str,
) -> Result<BinlogPosition> {
    let mut conn = crate::mysql::get_conn(pool, mysql_url).await?;
    let position = begin_consistent_snapshot(&mut conn).await?;
    let version = position.version();
    info!(position = %position, tables = tables.len(), "snapshot started");
    for table in tables {
        if table.config.mode == Mode::Invalidate {
            // Readers fill these keys themselves; the tail only ever deletes them.
            info!(table = %table.name(), "snapshot skips the table: invalidate mode");
            continue;
        }
        let undecodable = applier
            .load_table(&mut conn, table, CHUNK, "snapshot", |_| Some(version))
            .await?;
        let letters: Vec<DeadLetter> = undecodable
            .iter()
            .map(|u| {
                DeadLetter::new(
                    "snapshot",
                    table,
                    u.key_row.as_deref(),
                    &u.error,
                    position.to_string(),
                )
            })
            .collect();
        super::dead_letter(applier, dead_letter_key, &letters).await?;
    }
    conn.query_drop("COMMIT")
        .await
        .map_err(|e| Error::mysql("ending the snapshot transaction", e))?;
    info!(position = %position, "snapshot done; tailing continues from its position");
    Ok(position)
}

/// Starts the consistent-read transaction on `conn` and returns its binlog position
/// (also what each chunk of an online snapshot opens, see [`super::ChunkRead`]).
pub async fn begin_consistent_snapshot(conn: &mut mysql_async::Conn) -> Result<BinlogPosition> {
    let ctx = |what: &str| format!("starting the snapshot: {what}");
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(|e| Error::mysql(ctx("isolation level"), e))?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(|e| Error::mysql(ctx("START TRANSACTION"), e))?;
    // MariaDB reports the binlog position of this very snapshot.
    let status: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(|e| Error::mysql(ctx("binlog_snapshot_file"), e))?;
    let value = |name: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if let (Some(file), Some(pos)) = (
        value("binlog_snapshot_file"),
        value("binlog_snapshot_position"),
    ) && !file.is_empty()
        && let Ok(pos) = pos.parse()
    {
        return Ok(BinlogPosition::new(file, pos));
    }
    // MySQL: hold writes for the moment it takes to open the snapshot and read the
    // position, as mysqldump --single-transaction --master-data does.
    conn.query_drop("ROLLBACK").await.ok();
    conn.query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .map_err(|e| Error::mysql(ctx("FLUSH TABLES WITH READ LOCK (needs RELOAD)"), e))?;
    let started = conn
        .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(|e| Error::mysql(ctx("START TRANSACTION"), e));
    let status = match started {
        Ok(()) => binary_log_status(conn).await,
        Err(e) => Err(e),
    };
    conn.query_drop("UNLOCK TABLES")
        .await
        .map_err(|e| Error::mysql(ctx("UNLOCK TABLES"), e))?;
    status?.ok_or_else(|| Error::Strategy {
        strategy: "binlog",
        reason:
            "the server reports no binary log status: it has no binlog (start it with --log-bin)"
                .to_owned(),
    })
}
