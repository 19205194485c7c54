//! One error type for the library.
//!
//! Every variant renders as readable lines with no backtrace: the binary prints
//! `Display` and exits non-zero. Service errors name the service and its URL with the
//! password redacted (see [`crate::redact`]).

use std::fmt;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The library's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; every problem found is listed, one per line.
    #[error("{}", Problems(.0))]
    Config(Vec<String>),

    /// A service could not be reached or refused us (connect, auth, protocol).
    #[error("cannot reach {service} at {url}: {reason}")]
    Unreachable {
        service: &'static str,
        /// The URL with any password replaced by `***`.
        url: String,
        reason: String,
    },

    /// A service answered but refused us (wrong password, missing grant).
    #[error("{service} at {url} refused the login: {reason}")]
    Refused {
        service: &'static str,
        /// The URL with any password replaced by `***`.
        url: String,
        reason: String,
    },

    /// A MySQL statement failed after connecting.
    #[error("mysql: {context}: {}", describe_mysql(.source))]
    Mysql {
        context: String,
        #[source]
        source: mysql_async::Error,
    },

    /// A Redis command failed after connecting.
    #[error("redis: {context}: {source}")]
    Redis {
        context: String,
        #[source]
        source: redis::RedisError,
    },

    /// A value read from MySQL (SQL or binlog) does not fit the column it belongs to.
    #[error("cannot decode {table}.{column}: {reason}")]
    Decode {
        table: String,
        column: String,
        reason: String,
    },

    /// The application asked for a write that does not fit the table (unknown column,
    /// missing primary key); nothing was written.
    #[error("invalid write: {0}")]
    InvalidWrite(String),

    /// The write collides with a different row (a duplicate on a UNIQUE secondary
    /// index); nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),

    /// A strategy's own failure (publish, replication stream, ...).
    #[error("{strategy}: {reason}")]
    Strategy {
        strategy: &'static str,
        reason: String,
    },

    /// The binlog checkpoint in Redis is not the one this process last wrote: Redis lost
    /// it (restart without persistence, `FLUSHALL`, eviction), came back from an older
    /// copy, or another process writes the same key. Nothing of the batch was written;
    /// the binlog strategy re-reads the checkpoint and decides what to do.
    #[error("the checkpoint at {key} is not the one this process last wrote")]
    CheckpointMoved { key: String },

    /// Several independent failures (e.g. MySQL and Redis both unreachable), one per line.
    #[error("{}", Problems(&.0.iter().map(|e| e.to_string()).collect::<Vec<_>>()))]
    Many(Vec<Error>),

    /// Local I/O (binding the metrics listener, reading a file).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether retrying the same operation later may succeed (lost connection, broker
    /// restart) as opposed to a problem only a person can fix (bad config, bad data).
    /// Retry policy asks this once instead of matching error kinds everywhere.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            // Lost connections, and a lock wait timeout or deadlock (retry the transaction).
            Error::Mysql { source, .. } => match source {
                mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
                mysql_async::Error::Server(s) => matches!(s.code, 1205 | 1213),
                _ => false,
            },
            // Lost connections and timeouts, and a Redis still loading its data set or in
            // the middle of a failover.
            Error::Redis { source, .. } => {
                use redis::ServerErrorKind as K;
                source.is_io_error()
                    || source.is_connection_dropped()
                    || source.is_connection_refusal()
                    || source.is_timeout()
                    || matches!(
                        source.kind(),
                        redis::ErrorKind::Server(
                            K::BusyLoading
                                | K::TryAgain
                                | K::MasterDown
                                | K::ClusterDown
                                | K::ReadOnly
                        )
                    )
            }
            Error::Io { .. } => true,
            Error::Many(errors) => errors.iter().all(Error::is_transient),
            Error::Config(_)
            | Error::Refused { .. }
            | Error::InvalidWrite(_)
            | Error::Conflict(_)
            | Error::Decode { .. }
            | Error::CheckpointMoved { .. }
            | Error::Strategy { .. } => false,
        }
    }

    /// Whether the table may have changed shape since cachesync planned it (a DDL): a
    /// column the statement names is unknown to MySQL, or a value does not decode as the
    /// planned type. Worth one look at `information_schema` and one more try.
    pub fn suggests_schema_change(&self) -> bool {
        match self {
            Error::Mysql {
                source: mysql_async::Error::Server(s),
                ..
            } => s.code == 1054,
            Error::Decode { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn mysql(context: impl Into<String>, source: mysql_async::Error) -> Self {
        Error::Mysql {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn redis(context: impl Into<String>, source: redis::RedisError) -> Self {
        Error::Redis {
            context: context.into(),
            source,
        }
    }
}

/// A one-line description of a MySQL client error, without the crate's nested prefixes
/// ("Input/output error: Input/output error: ...").
pub fn describe_mysql(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => io.to_string(),
        mysql_async::Error::Server(s) => format!("{} (MySQL error {})", s.message, s.code),
        other => other.to_string(),
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Renders a list of problems one per line.
struct Problems<'a>(&'a [String]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(problem)?;
        }
        Ok(())
    }
}

/// The wait between retries of a transient failure (lost connection, broker or Redis
/// restart): 100 ms, doubling up to [`Backoff::MAX`]. Every retry loop uses it.
///
/// The cap is what bounds recovery after an outage: the first retry after the service is
/// back may still fail once (the connection it finds is the dead one), and the next comes
/// one full wait later. With a 5 s cap, `cachesync bench --fault redis-restart` measured
/// binlog and mq catching up 7–8 s after Redis returned; a retry per second costs nothing
/// next to a cache that stays stale that long.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(1);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The wait before the next attempt; each call doubles the one after, up to the cap.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }

    /// After a success: the next failure waits [`Backoff::FIRST`] again.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

/// The one retry policy: after a failed attempt, [`Retry::again`] says whether to try
/// again — only for a transient error ([`Error::is_transient`]), after a [`Backoff`] wait,
/// each failure logged at warn as `what` — or hands back the error retrying cannot fix.
/// Every loop that retries (the binlog stream, the batch apply, the mq consumer) uses it:
///
/// ```ignore
/// let mut retry = Retry::new("binlog stream lost; reconnecting", &shutdown);
/// loop {
///     match attempt().await {
///         Ok(value) => break value,
///         // Stop when shutdown came during the wait.
///         Err(e) => if !retry.again(e).await? { return Ok(()) },
///     }
/// }
/// ```
pub struct Retry<'a> {
    what: &'a str,
    shutdown: &'a CancellationToken,
    backoff: Backoff,
    /// When the current attempt began: one that ran for a while before it failed (a
    /// stream that broke after an hour) starts over from the shortest wait.
    attempt_began: Instant,
}

impl<'a> Retry<'a> {
    pub fn new(what: &'a str, shutdown: &'a CancellationToken) -> Retry<'a> {
        Retry {
            what,
            shutdown,
            backoff: Backoff::new(),
            attempt_began: Instant::now(),
        }
    }

    /// After `error`: `Err(error)` when retrying cannot fix it; otherwise waits and
    /// returns `Ok(true)` to try again, or `Ok(false)` when `shutdown` was cancelled
    /// during the wait (an attempt running when shutdown comes is not cut: callers that
    /// drain still finish it).
    pub async fn again(&mut self, error: Error) -> Result<bool> {
        if !error.is_transient() {
            return Err(error);
        }
        if self.attempt_began.elapsed() > Backoff::MAX {
            self.backoff.reset();
        }
        let wait = self.backoff.next_wait();
        warn!(error = %error, retry_in_ms = wait.as_millis() as u64, "{}", self.what);
        let again = tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        };
        self.attempt_began = Instant::now();
        Ok(again)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_transient_failures_only_until_shutdown() {
        let io = || Error::Io {
            context: "x".into(),
            source: std::io::Error::other("down"),
        };
        let shutdown = CancellationToken::new();
        let mut retry = Retry::new("flaky", &shutdown);
        assert!(
            retry.again(io()).await.unwrap(),
            "a transient error is retried"
        );
        assert!(matches!(
            retry.again(Error::InvalidWrite("no".into())).await,
            Err(Error::InvalidWrite(_))
        ));
        shutdown.cancel();
        assert!(
            !retry.again(io()).await.unwrap(),
            "shutdown ends the retries"
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_wait(), Backoff::FIRST);
    }
}
