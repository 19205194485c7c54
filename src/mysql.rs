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

/// A connection from `pool`; failures name MySQL and the URL (password redacted).
pub async fn get_conn(pool: &Pool, url: &str) -> Result<Conn> {
    let unreachable = |reason: String| Error::Unreachable {
        service: "MySQL",
        url: redact_url(url),
        reason,
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, pool.get_conn()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!(
            "no connection within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}
