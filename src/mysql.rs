//! MySQL connections with the session settings canonical encoding relies on.

use std::time::Duration;

use mysql_async::{Conn, Opts, OptsBuilder, Pool};

use crate::error::{Error, Result};
use crate::redact::redact_url;

/// How long to wait for a connection before calling MySQL unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pool whose every connection reads `TIMESTAMP` in UTC (the encoding contract) and
/// talks utf8mb4.
pub fn pool(url: &str) -> Result<Pool> {
    let opts = Opts::from_url(url).map_err(|e| Error::Config(vec![format!("mysql.url: {e}")]))?;
    let opts = OptsBuilder::from_opts(opts).init(vec![
        "SET time_zone = '+00:00'",
        "SET NAMES utf8mb4 COLLATE utf8mb4_general_ci",
    ]);
    Ok(Pool::new(opts))
}

/// A connection from `pool`; failures name MySQL and the URL (password redacted), and a
/// refused login is told apart from a server that does not answer.
pub async fn get_conn(pool: &Pool, url: &str) -> Result<Conn> {
    let url_shown = redact_url(url);
    match tokio::time::timeout(CONNECT_TIMEOUT, pool.get_conn()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(mysql_async::Error::Server(e))) if matches!(e.code, 1044 | 1045 | 1049) => {
            Err(Error::Refused {
                service: "MySQL",
                url: url_shown,
                reason: format!(
                    "{} (MySQL error {}; check the user, password and database in mysql.url)",
                    e.message, e.code
                ),
            })
        }
        Ok(Err(e)) => Err(Error::Unreachable {
            service: "MySQL",
            url: url_shown,
            reason: describe(&e),
        }),
        Err(_) => Err(Error::Unreachable {
            service: "MySQL",
            url: url_shown,
            reason: format!("no connection within {}s", CONNECT_TIMEOUT.as_secs()),
        }),
    }
}

/// A one-line description of a MySQL client error, without the crate's nested prefixes
/// ("Input/output error: Input/output error: ...").
pub fn describe(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => io.to_string(),
        mysql_async::Error::Server(s) => format!("{} (MySQL error {})", s.message, s.code),
        other => other.to_string(),
    }
}
