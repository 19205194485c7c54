//! The write-back queue: a Redis stream filled in the same script call that writes the
//! row into the cache (`write_back.lua`), read by one consumer group, acknowledged and
//! removed only after the change is committed in MySQL; and its dead-letter stream.
//!
//! Why a Redis stream and not RabbitMQ: the cache and the queue must never disagree. A
//! Redis write and a publish to a broker cannot be one atomic step (a crash between them
//! leaves a cached value the database never hears of, or an event for a value the cache
//! never held); a stream appended by the script that writes the row can. The queue then
//! lives and dies with Redis' own persistence — which is exactly the risk write-back
//! takes, measured by `cachesync bench --fault redis-data-loss`.

use std::time::Duration;

use super::connection::RedisConn;
use super::keyspace::{fill_key, tombstone_key};
use crate::error::{Error, Result};

/// The cache write and enqueue of one change (see `write_back.lua`).
pub const WRITE_BACK_LUA: &str = include_str!("write_back.lua");

/// The next version: the counter plus one, but never below the clock (µs since the Unix
/// epoch), so a counter lost with Redis' data restarts above every version handed out
/// before it (µs stay below 2^53, exact in Lua's numbers).
const NEXT_VERSION_LUA: &str = r#"
local v = redis.call('INCR', KEYS[1])
local now = tonumber(ARGV[1])
if v < now then
  redis.call('SET', KEYS[1], ARGV[1])
  v = now
end
return v
"#;

/// Where the queue lives.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    /// The stream of changes.
    pub stream: String,
    /// The counter versions are drawn from.
    pub versions: String,
    /// The stream of changes MySQL refused.
    pub dead_letter: String,
    /// The consumer group of the flusher.
    pub group: String,
}

/// One change on the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedChange {
    /// The stream entry id (`<ms>-<seq>`).
    pub id: String,
    pub version: u64,
    /// When the cache took the write, µs since the Unix epoch.
    pub at_us: u64,
    /// The change event (JSON), as the writer enqueued it.
    pub change: Vec<u8>,
}

/// What a write into the cache did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheWrite {
    /// Written and enqueued.
    Done,
    /// The cache no longer holds the version the write was based on: read again.
    Conflict,
}

/// The queue, on a connection of its own (the flusher blocks on it while reading).
#[derive(Clone)]
pub struct ChangeQueue {
    conn: RedisConn,
    keys: QueueKeys,
    script: redis::Script,
    tombstone_ttl_ms: u64,
    /// The consumer name in the group: the same after a restart, so the changes it had
    /// read but not acknowledged come back to it.
    consumer: String,
}

impl ChangeQueue {
    pub fn new(conn: RedisConn, keys: QueueKeys, tombstone_ttl: Duration) -> ChangeQueue {
        ChangeQueue {
            conn,
            keys,
            script: redis::Script::new(WRITE_BACK_LUA),
            tombstone_ttl_ms: tombstone_ttl.as_millis() as u64,
            consumer: "flusher".to_owned(),
        }
    }

    pub fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    /// A new version, above every version handed out before (also after Redis lost the
    /// counter: see [`NEXT_VERSION_LUA`]).
    pub async fn next_version(&self, now_us: u64) -> Result<u64> {
        let mut conn = self.conn.clone();
        redis::Script::new(NEXT_VERSION_LUA)
            .key(&self.keys.versions)
            .arg(now_us)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("drawing a version from {}", self.keys.versions), e))
    }

    /// Writes the row `doc` (a JSON object without the version; `None` for a delete) at
    /// `version` into `key` and enqueues `change`, in one atomic call — if the cache
    /// still holds `base` (the version the write was built on; `None`: no row).
    pub async fn write(
        &self,
        key: &str,
        base: Option<u64>,
        version: u64,
        doc: Option<&[u8]>,
        change: &[u8],
        at_us: u64,
    ) -> Result<CacheWrite> {
        let tomb = tombstone_key(key).unwrap_or_else(|| key.to_owned());
        let marker = fill_key(key).unwrap_or_else(|| key.to_owned());
        let mut invocation = self.script.key(key);
        invocation
            .key(tomb)
            .key(marker)
            .key(&self.keys.stream)
            .arg(base.map(|b| b.to_string()).unwrap_or_default())
            .arg(version)
            .arg(if doc.is_some() { "u" } else { "d" })
            .arg(self.tombstone_ttl_ms)
            .arg(change)
            .arg(at_us);
        if let Some(doc) = doc {
            invocation.arg(doc);
        }
        let mut conn = self.conn.clone();
        let done: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("writing key {key} and queueing its change"), e))?;
        Ok(if done == 1 {
            CacheWrite::Done
        } else {
            CacheWrite::Conflict
        })
    }

    /// Creates the consumer group (reading from the start of the stream) if missing.
    pub async fn ensure_group(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.stream)
            .arg(&self.keys.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(Error::redis(
                format!("creating the consumer group of {}", self.keys.stream),
                e,
            )),
        }
    }

    /// Up to `count` changes: the ones this consumer read before and did not acknowledge
    /// (`pending`), or new ones, waiting up to `block` for the first (`None`: no wait).
    pub async fn read(
        &self,
        pending: bool,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<QueuedChange>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.keys.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS")
            .arg(&self.keys.stream)
            .arg(if pending { "0" } else { ">" });
        let mut conn = self.conn.clone();
        let reply: redis::RedisResult<redis::Value> = cmd.query_async(&mut conn).await;
        match reply {
            Ok(reply) => Ok(entries(reply)),
            // The stream and its group are gone: Redis lost its data (a restart without
            // persistence, FLUSHALL). What was queued is lost; start the queue again.
            // NOGROUP answers a read after the loss; UNBLOCKED ends a read that was blocked
            // on the stream when it was deleted.
            Err(e) if matches!(e.code(), Some("NOGROUP") | Some("UNBLOCKED")) => {
                tracing::warn!(
                    stream = %self.keys.stream,
                    "the write-back queue vanished from Redis (its data was lost): changes it held \
                     were never flushed to MySQL; starting a new queue"
                );
                self.ensure_group().await?;
                Ok(Vec::new())
            }
            Err(e) => Err(Error::redis(
                format!("reading the queue {}", self.keys.stream),
                e,
            )),
        }
    }

    /// Acknowledges and removes changes that are committed in MySQL.
    pub async fn ack(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XACK")
            .arg(&self.keys.stream)
            .arg(&self.keys.group)
            .arg(ids)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.stream)
            .arg(ids)
            .ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("acknowledging {} changes", ids.len()), e))
    }

    /// Records a change MySQL refused, with the reason, on the dead-letter stream.
    pub async fn dead_letter(&self, change: &QueuedChange, reason: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("XADD")
            .arg(&self.keys.dead_letter)
            .arg("*")
            .arg("v")
            .arg(change.version)
            .arg("at")
            .arg(change.at_us)
            .arg("reason")
            .arg(reason)
            .arg("change")
            .arg(&change.change)
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| Error::redis(format!("dead-lettering onto {}", self.keys.dead_letter), e))
    }

    /// Changes waiting (enqueued and not yet acknowledged), and the enqueue time (ms since
    /// the Unix epoch) of the oldest.
    pub async fn backlog(&self) -> Result<(u64, Option<u64>)> {
        let mut conn = self.conn.clone();
        let (len, first): (u64, redis::Value) = redis::pipe()
            .cmd("XLEN")
            .arg(&self.keys.stream)
            .cmd("XRANGE")
            .arg(&self.keys.stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("measuring the queue {}", self.keys.stream), e))?;
        let oldest = match first {
            redis::Value::Array(entries) => entries.into_iter().next().and_then(|entry| {
                let redis::Value::Array(mut parts) = entry else {
                    return None;
                };
                let id: String = redis::from_redis_value(parts.swap_remove(0)).ok()?;
                id.split_once('-')?.0.parse().ok()
            }),
            _ => None,
        };
        Ok((len, oldest))
    }
}

/// The entries of an `XREADGROUP` reply (one stream). An entry whose fields are missing
/// or not numbers keeps its id and an empty change, so the flusher can dead-letter it.
fn entries(reply: redis::Value) -> Vec<QueuedChange> {
    let redis::Value::Array(streams) = reply else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for stream in streams {
        let redis::Value::Array(mut parts) = stream else {
            continue;
        };
        if parts.len() != 2 {
            continue;
        }
        let redis::Value::Array(items) = parts.swap_remove(1) else {
            continue;
        };
        for item in items {
            let Ok((id, fields)) = redis::from_redis_value::<(String, redis::Value)>(item) else {
                continue;
            };
            // A pending entry deleted from the stream comes back with no fields.
            let fields: Vec<(String, Vec<u8>)> =
                redis::from_redis_value(fields).unwrap_or_default();
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            let number = |name: &str| {
                field(name)
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0)
            };
            out.push(QueuedChange {
                version: number("v"),
                at_us: number("at"),
                change: field("change").unwrap_or_default(),
                id,
            });
        }
    }
    out
}
