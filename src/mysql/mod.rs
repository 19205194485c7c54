//! Talking to MySQL: connections with the session settings the canonical encoding relies
//! on ([`pool`], [`get_conn`]), what the configured tables look like ([`schema`]) and what
//! the user may do to them ([`grants`]), the application's row write ([`write`](mod@write)),
//! reading a whole table in batches ([`scan`]) and reading some of its rows by key, by
//! other columns or a page at a time ([`lookup`]).

pub mod grants;
pub mod lookup;
pub mod scan;
pub mod schema;
pub mod write;

use std::time::Duration;

use mysql_async::{Conn, DEFAULT_INACTIVE_CONNECTION_TTL, Opts, OptsBuilder, Pool};

use crate::error::{Error, Result, describe_mysql};
use crate::redact::redact_url;

/// How long to wait for a connection before calling MySQL unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a pooled connection above the pool's lower bound may sit idle before it is
/// closed.
const IDLE_CONNECTION_TTL: Duration = Duration::from_secs(30);

/// A pool whose every connection reads `TIMESTAMP` in UTC (the encoding contract) and
/// talks utf8mb4.
pub fn pool(url: &str) -> Result<Pool> {
    Ok(Pool::new(pool_opts(url)?))
}

/// The options [`pool`] uses, for a caller that changes one (another user, say).
pub fn pool_opts(url: &str) -> Result<OptsBuilder> {
    let opts = Opts::from_url(url)
        .map_err(|e| Error::Config(vec![crate::redact::scrub(&format!("mysql.url: {e}"), url)]))?;
    // With mysql_async's default `inactive_connection_ttl` of 0, a returned connection is
    // closed at once whenever 10 (the pool's lower bound) are idle: a burst of concurrent
    // cache misses or writes then opens a new connection per query. With a TTL, idle
    // connections up to the upper bound (100) stay for that long. mysql.url may set
    // `inactive_connection_ttl` itself.
    let pool_opts = opts.pool_opts().clone();
    let pool_opts = if pool_opts.inactive_connection_ttl() == DEFAULT_INACTIVE_CONNECTION_TTL {
        pool_opts.with_inactive_connection_ttl(IDLE_CONNECTION_TTL)
    } else {
        pool_opts
    };
    Ok(OptsBuilder::from_opts(opts).pool_opts(pool_opts).init(vec![
        "SET time_zone = '+00:00'",
        "SET NAMES utf8mb4 COLLATE utf8mb4_general_ci",
    ]))
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
            reason: describe_mysql(&e),
        }),
        Err(_) => Err(Error::Unreachable {
            service: "MySQL",
            url: url_shown,
            reason: format!("no connection within {}s", CONNECT_TIMEOUT.as_secs()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_ttl(url: &str) -> Duration {
        Opts::from(pool_opts(url).unwrap())
            .pool_opts()
            .inactive_connection_ttl()
    }

    #[test]
    fn idle_connections_outlive_a_burst_unless_the_url_says_otherwise() {
        assert_eq!(idle_ttl("mysql://root@127.0.0.1:3306"), IDLE_CONNECTION_TTL);
        assert_eq!(
            idle_ttl("mysql://root@127.0.0.1:3306?inactive_connection_ttl=5"),
            Duration::from_secs(5)
        );
    }
}
