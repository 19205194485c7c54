//! What the binlog strategy needs from the server, read the same way by the strategy's
//! start-up check and by `cachesync doctor`: its binlog settings ([`binlog_settings`])
//! and its current binlog position ([`binary_log_status`]); and, for the start-up check
//! alone, whether the user may stream the binlog at all ([`may_stream`]).

use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;

use super::position::BinlogPosition;
use crate::error::{Error, Result};
use crate::mysql::grants::is_privilege_error;

/// The server's binlog settings: what is right (`log_bin=ON`, ...) and, for what is
/// not, the setting to change.
pub struct BinlogSettings {
    pub fine: Vec<String>,
    /// Settings the binlog strategy cannot work without.
    pub wrong: Vec<String>,
    /// Settings it works without, less well (it falls back to `information_schema`).
    pub advice: Vec<String>,
}

/// Checks `log_bin`, `binlog_format`, `binlog_row_image`, `binlog_row_metadata` and
/// `server_id` — what the binlog strategy needs.
pub async fn binlog_settings(conn: &mut mysql_async::Conn) -> BinlogSettings {
    let mut fine = Vec::new();
    let mut wrong: Vec<String> = Vec::new();
    let mut advice: Vec<String> = Vec::new();

    type BinlogVars = (Option<String>, Option<String>, Option<String>, Option<u64>);
    let vars: Option<BinlogVars> = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@server_id")
        .await
        .ok()
        .flatten();
    let Some((log_bin, format, image, server_id)) = vars else {
        return BinlogSettings {
            fine,
            wrong: vec!["cannot read the server's binlog variables".to_owned()],
            advice,
        };
    };
    if log_bin.as_deref() == Some("1") {
        fine.push("log_bin=ON".to_owned());
    } else {
        wrong.push(
            "log_bin is OFF: start the server with --log-bin=mysql-bin \
             (my.cnf: [mysqld] log_bin = mysql-bin) and restart it"
                .to_owned(),
        );
    }
    let format = format.unwrap_or_default();
    if format.eq_ignore_ascii_case("ROW") {
        fine.push("binlog_format=ROW".to_owned());
    } else {
        wrong.push(format!(
            "binlog_format is {format}: set binlog_format = ROW \
                 (my.cnf: [mysqld] binlog_format = ROW, or SET GLOBAL binlog_format = 'ROW')"
        ));
    }
    let image = image.unwrap_or_default();
    if image.eq_ignore_ascii_case("FULL") {
        fine.push("binlog_row_image=FULL".to_owned());
    } else {
        wrong.push(format!(
            "binlog_row_image is {image}: set binlog_row_image = FULL \
                 (my.cnf: [mysqld] binlog_row_image = FULL) so updates carry whole rows"
        ));
    }
    match conn
        .query_first::<Option<String>, _>("SELECT @@binlog_row_metadata")
        .await
    {
        Ok(Some(Some(meta))) if meta.eq_ignore_ascii_case("FULL") => {
            fine.push("binlog_row_metadata=FULL".to_owned())
        }
        Ok(Some(meta)) => advice.push(format!(
            "binlog_row_metadata is {}: set binlog_row_metadata = FULL \
                 (my.cnf: [mysqld] binlog_row_metadata = FULL) so row events name their columns; \
                 until then cachesync relies on information_schema and notices renames only by DDL",
            meta.unwrap_or_default()
        )),
        _ => advice.push(
            "the server has no binlog_row_metadata (it needs MySQL >= 8.0.1 or MariaDB >= 10.5); \
             cachesync relies on information_schema and notices renames only by DDL"
                .to_owned(),
        ),
    }
    match server_id {
        Some(id) if id > 0 => fine.push(format!("server_id={id}")),
        _ => wrong.push(
            "server_id is 0: set a unique non-zero server_id (my.cnf: [mysqld] server_id = 1)"
                .to_owned(),
        ),
    }
    BinlogSettings {
        fine,
        wrong,
        advice,
    }
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

/// Which MySQL server this is, as the checkpoint records it: `uuid:<@@server_uuid>` on
/// MySQL; MariaDB has no server UUID, so `id:<@@server_id>@<@@hostname>:<@@port>`. Binlog
/// positions mean something only on the server that wrote them.
pub async fn identity(conn: &mut mysql_async::Conn) -> Result<String> {
    match conn
        .query_first::<Option<String>, _>("SELECT @@server_uuid")
        .await
    {
        Ok(Some(Some(uuid))) if !uuid.is_empty() => return Ok(format!("uuid:{uuid}")),
        Ok(_) => {}
        // ER_UNKNOWN_SYSTEM_VARIABLE: MariaDB.
        Err(mysql_async::Error::Server(s)) if s.code == 1193 => {}
        Err(e) => return Err(Error::mysql("reading the server's identity", e)),
    }
    let row: Option<(u64, String, u64)> = conn
        .query_first("SELECT @@server_id, @@hostname, @@port")
        .await
        .map_err(|e| Error::mysql("reading the server's identity", e))?;
    let (id, host, port) = row.unwrap_or_default();
    Ok(format!("id:{id}@{host}:{port}"))
}

/// Whether the server lets the user of `mysql_url` stream the binlog (REPLICATION SLAVE),
/// tried exactly as the tailer will: a dump request with `server_id` from `from` (or,
/// unknown, the first binlog), ended after the first event. A user without the grant is
/// answered at once (1227, or 1045 from MariaDB); anything else (a purged file, a slow server) is for
/// the tailer to report, so it counts as allowed here.
///
/// Only for the strategy's own start, right before it streams with the same id: a dump
/// request replaces any other replica using that id, as the daemon's stream will anyway.
/// (`doctor` reads `SHOW GRANTS` instead, so it never disturbs a running daemon.)
pub async fn may_stream(
    mysql_url: &str,
    server_id: u32,
    from: Option<&BinlogPosition>,
) -> Result<bool> {
    const FIRST_EVENT_WITHIN: Duration = Duration::from_secs(5);
    let opts = mysql_async::Opts::from_url(mysql_url).map_err(|e| {
        Error::Config(vec![crate::redact::scrub(
            &format!("mysql.url: {e}"),
            mysql_url,
        )])
    })?;
    let conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| Error::mysql("connecting to try the binlog stream", e))?;
    let request = mysql_async::BinlogStreamRequest::new(server_id);
    let request = match from {
        Some(from) => request
            .with_filename(from.file.as_bytes())
            .with_pos(from.pos),
        None => request.with_pos(4u64),
    };
    // Connected already, so an "access denied" (MariaDB answers a dump without the grant
    // with 1045) is the dump being refused, as in the tailer's `stream_error`.
    let refused = |e: &mysql_async::Error| {
        is_privilege_error(e) || matches!(e, mysql_async::Error::Server(s) if s.code == 1045)
    };
    let mut stream = match conn.get_binlog_stream(request).await {
        Ok(stream) => stream,
        Err(e) => return Ok(!refused(&e)),
    };
    let first = tokio::time::timeout(FIRST_EVENT_WITHIN, stream.next()).await;
    let allowed = !matches!(&first, Ok(Some(Err(e))) if refused(e));
    // The probe's only job is done; its connection goes with the stream.
    drop(stream);
    Ok(allowed)
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
