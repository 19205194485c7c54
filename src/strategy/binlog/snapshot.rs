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
use crate::applier::Applier;
use crate::config::Mode;
use crate::error::{Error, Result};
use crate::schema::SyncedTable;

/// Rows per Redis batch while loading.
const CHUNK: usize = 1_000;

/// Loads `tables` into Redis and returns the binlog position to tail from. The caller
/// stores it as the checkpoint once the load is complete.
pub async fn load(
    pool: &mysql_async::Pool,
    mysql_url: &str,
    tables: &[Arc<SyncedTable>],
    applier: &Applier,
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
        crate::scan::load_into_redis(&mut conn, table, applier, CHUNK, "snapshot", |_| {
            Some(version)
        })
        .await?;
    }
    conn.query_drop("COMMIT")
        .await
        .map_err(|e| Error::mysql("ending the snapshot transaction", e))?;
    info!(position = %position, "snapshot done; tailing continues from its position");
    Ok(position)
}

/// Starts the consistent-read transaction on `conn` and returns its binlog position.
async fn begin_consistent_snapshot(conn: &mut mysql_async::Conn) -> Result<BinlogPosition> {
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

/// The statement MySQL >= 8.2 reads the current binlog position with; 8.4 removed the
/// old name.
const BINARY_LOG_STATUS: &str = "SHOW BINARY LOG STATUS";
/// The old name: MariaDB (10.11 has no `SHOW BINARY LOG STATUS`) and MySQL < 8.2.
const MASTER_STATUS: &str = "SHOW MASTER STATUS";

/// The server's current binlog position (`None` when it runs without a binlog), read
/// with `SHOW BINARY LOG STATUS` or, where the server does not know that statement
/// (MariaDB, MySQL < 8.2: a syntax error), `SHOW MASTER STATUS`. Both return the file
/// and position as their first two columns. Needs REPLICATION CLIENT (MySQL) or BINLOG
/// MONITOR (MariaDB). Every reader of the current position goes through here.
pub async fn binary_log_status(conn: &mut mysql_async::Conn) -> Result<Option<BinlogPosition>> {
    let row: Option<mysql_async::Row> = match conn.query_first(BINARY_LOG_STATUS).await {
        Ok(row) => row,
        Err(e) if is_syntax_error(&e) => conn.query_first(MASTER_STATUS).await.map_err(|e| {
            Error::mysql(format!("reading the binlog position: {MASTER_STATUS}"), e)
        })?,
        Err(e) => {
            return Err(Error::mysql(
                format!("reading the binlog position: {BINARY_LOG_STATUS}"),
                e,
            ));
        }
    };
    Ok(row.map(|row| {
        let file: String = row.get(0).unwrap_or_default();
        let pos: u64 = row.get(1).unwrap_or_default();
        BinlogPosition::new(file, pos)
    }))
}

/// ER_PARSE_ERROR: the server does not know the statement (not a missing privilege or
/// a lost connection, which the fallback must not hide).
fn is_syntax_error(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1064)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: "…".to_owned(),
            state: "42000".to_owned(),
        })
    }

    #[test]
    fn only_a_syntax_error_falls_back_to_show_master_status() {
        // MariaDB 10.11 and MySQL < 8.2 answer SHOW BINARY LOG STATUS with 1064.
        assert!(is_syntax_error(&server_error(1064)));
        // Missing REPLICATION CLIENT (1227), a denied command (1142): the fallback would
        // only fail the same way and hide the first message.
        assert!(!is_syntax_error(&server_error(1227)));
        assert!(!is_syntax_error(&server_error(1142)));
        assert!(!is_syntax_error(&mysql_async::Error::Driver(
            mysql_async::DriverError::ConnectionClosed
        )));
    }
}
