//! The connection to Redis: one type for everything cachesync does there, connected
//! with timeouts suited to large pipelines, and the one `SCAN` + `UNLINK` key sweep.

use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::error::{Error, Result};
use crate::redact::{redact_url, scrub};

/// The connection every Redis user in cachesync holds: cheap to clone (clones share one
/// multiplexed connection) and reconnecting by itself after a failure. Redis Sentinel and
/// Cluster targets are meant to join here, behind this one name.
pub type RedisConn = ConnectionManager;

/// Connects to Redis with timeouts suited to large pipelines; failures name Redis and
/// the URL (password redacted).
pub async fn connect(url: &str) -> Result<RedisConn> {
    let unreachable = |reason: String| Error::Unreachable {
        service: "Redis",
        url: redact_url(url),
        reason: scrub(&reason, url),
    };
    let client = redis::Client::open(url).map_err(|e| unreachable(e.to_string()))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(30)))
        .set_number_of_retries(2);
    let mut conn = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(conn)
}

/// Deletes every key matching the `SCAN` pattern `pattern` (`UNLINK`, a page at a time);
/// `what` names the job in errors.
pub async fn delete_matching(redis: &mut RedisConn, pattern: &str, what: &str) -> Result<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(5_000)
            .query_async(redis)
            .await
            .map_err(|e| Error::redis(what, e))?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(redis)
                .await
                .map_err(|e| Error::redis(what, e))?;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(());
        }
    }
}
