//! Reading rows back out of Redis: the keys a `SCAN` pattern matches, a page at a time,
//! and stored values decoded into cells — how the binlog strategy finds the child rows
//! Redis holds for a parent whose change MySQL cascaded without logging it.

use std::collections::HashMap;

use tracing::warn;

use super::RedisConn;
use super::keyspace::is_companion;
use crate::error::{Error, Result};
use crate::model::cell::{Cell, Format};
use crate::model::table::SyncedTable;

/// Keys per `SCAN` step.
pub const SCAN_COUNT: usize = 1000;

/// One `SCAN` step over `pattern` from `cursor`: the next cursor (0 when done) and the
/// matching keys that may be rows (cachesync's companion keys left out).
pub async fn scan_page(
    redis: &mut RedisConn,
    cursor: u64,
    pattern: &str,
    what: &str,
) -> Result<(u64, Vec<String>)> {
    let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT)
        .query_async(redis)
        .await
        .map_err(|e| Error::redis(what, e))?;
    let keys = keys
        .into_iter()
        // A key that is not UTF-8 cannot be a rendered template.
        .filter_map(|k| String::from_utf8(k).ok())
        .filter(|k| !is_companion(k))
        .collect();
    Ok((next, keys))
}

/// The rows `keys` of `table` hold, read in one pipeline and decoded: `None` for a key
/// that is missing, of another type than the table's format writes, or that does not
/// decode (logged with its key).
pub async fn read_rows(
    redis: &mut RedisConn,
    table: &SyncedTable,
    keys: &[String],
) -> Result<Vec<Option<Vec<Cell>>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let command = match table.config.format {
        Format::Json => "GET",
        Format::Hash => "HGETALL",
    };
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd(command).arg(key);
    }
    let replies: Vec<redis::RedisResult<redis::Value>> = pipe
        .ignore_errors()
        .query_async(redis)
        .await
        .map_err(|e| Error::redis(format!("reading keys of {}", table.name()), e))?;
    Ok(replies
        .into_iter()
        .zip(keys)
        .map(|(reply, key)| {
            let decoded = match (table.config.format, reply) {
                (Format::Json, Ok(redis::Value::BulkString(doc))) => table.decode_stored_json(&doc),
                (Format::Hash, Ok(value @ redis::Value::Map(_)))
                | (Format::Hash, Ok(value @ redis::Value::Array(_))) => {
                    match redis::from_redis_value::<HashMap<Vec<u8>, Vec<u8>>>(value) {
                        Ok(fields) if fields.is_empty() => return None,
                        Ok(fields) => table.decode_stored_hash(&fields),
                        Err(_) => return None,
                    }
                }
                _ => return None,
            };
            match decoded {
                Ok(row) => Some(row),
                Err(e) => {
                    warn!(key = %key, table = %table.name(), error = %e, "a stored row does not decode; left alone");
                    None
                }
            }
        })
        .collect())
}
