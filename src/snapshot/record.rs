//! The progress record of online snapshots, kept in Redis so a snapshot survives a crash
//! of the daemon: the hash `cachesync:{<name>}:snapshots`, one field per table still to
//! finish, whose value ([`Entry`]) says where the next chunk starts.
//!
//! Every change of an entry is a compare-and-set on its exact text ([`advance`]): a
//! worker that finds the entry changed under it (a new request after a data loss reset it,
//! Redis lost it, another process moved it) stops and re-reads the record instead of
//! overwriting it. An entry is written only after its chunk is in Redis, so a crash
//! between the two re-reads one chunk, which is harmless (the chunk's writes are guarded,
//! see [`super`]).

use base64::Engine as _;
use mysql_async::Value;
use serde_json::{Value as Json, json};

use crate::error::{Error, Result};
use crate::redis::RedisConn;

/// Adds entries for tables not in the record yet (a running snapshot keeps its place).
/// KEYS[1]: the record. ARGV: table, entry, table, entry, … Returns 1 per table added,
/// 0 per table already there.
const REQUEST_LUA: &str = r#"
local added = {}
for i = 1, #ARGV, 2 do
  added[#added + 1] = redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
return added
"#;

/// Compare-and-set of one entry. KEYS[1]: the record. ARGV[1]: table, ARGV[2]: the entry
/// the caller holds, ARGV[3]: the new entry, or empty to remove it (the table is done).
/// Returns 1 when set, 0 when the entry was not the caller's.
const ADVANCE_LUA: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 1
"#;

/// Where one table's snapshot stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The primary key of the last row copied, in key order; `None`: from the start.
    pub after: Option<Vec<Value>>,
    /// Rows copied so far.
    pub done: u64,
    /// Why the snapshot runs (`added to the config`, `requested`, `Redis lost its data`).
    pub reason: String,
    /// When it was requested, ms since the Unix epoch.
    pub since_ms: u64,
}

impl Entry {
    /// A snapshot from the start of the table.
    pub fn new(reason: &str) -> Entry {
        Entry {
            after: None,
            done: 0,
            reason: reason.to_owned(),
            since_ms: crate::model::change::unix_micros(std::time::SystemTime::now()) / 1000,
        }
    }

    pub fn to_text(&self) -> String {
        json!({
            "after": self.after.as_ref().map(|key| key.iter().map(value_json).collect::<Vec<_>>()),
            "done": self.done,
            "reason": self.reason,
            "since_ms": self.since_ms,
        })
        .to_string()
    }

    /// Reads an entry; the message names what is wrong.
    pub fn parse(text: &str) -> std::result::Result<Entry, String> {
        let doc: Json = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let after = match &doc["after"] {
            Json::Null => None,
            Json::Array(values) => Some(
                values
                    .iter()
                    .map(json_value)
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            ),
            other => return Err(format!("after: expected a list or null, got {other}")),
        };
        Ok(Entry {
            after,
            done: doc["done"].as_u64().unwrap_or(0),
            reason: doc["reason"].as_str().unwrap_or("unknown").to_owned(),
            since_ms: doc["since_ms"].as_u64().unwrap_or(0),
        })
    }
}

/// A primary-key value as JSON, tagged with its type so it reads back as the same
/// statement parameter (a string and a number compare differently in SQL).
fn value_json(value: &Value) -> Json {
    match value {
        Value::NULL => Json::Null,
        Value::Int(v) => json!({ "i": v }),
        Value::UInt(v) => json!({ "u": v }),
        Value::Float(v) => json!({ "f": v }),
        Value::Double(v) => json!({ "d": v }),
        Value::Bytes(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => json!({ "s": text }),
            Err(_) => json!({ "b": base64::engine::general_purpose::STANDARD.encode(bytes) }),
        },
        Value::Date(y, m, d, h, mi, s, us) => json!({ "t": [y, m, d, h, mi, s, us] }),
        Value::Time(neg, d, h, m, s, us) => json!({ "tm": [u8::from(*neg), d, h, m, s, us] }),
    }
}

fn json_value(json: &Json) -> std::result::Result<Value, String> {
    let bad = || format!("unreadable key value {json}");
    let Some((tag, v)) = json.as_object().and_then(|o| o.iter().next()) else {
        return if json.is_null() {
            Ok(Value::NULL)
        } else {
            Err(bad())
        };
    };
    let parts = |n: usize| -> std::result::Result<Vec<u64>, String> {
        let parts: Vec<u64> = v
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|p| p.as_u64().ok_or_else(bad))
            .collect::<std::result::Result<_, _>>()?;
        (parts.len() == n).then_some(parts).ok_or_else(bad)
    };
    Ok(match tag.as_str() {
        "i" => Value::Int(v.as_i64().ok_or_else(bad)?),
        "u" => Value::UInt(v.as_u64().ok_or_else(bad)?),
        "f" => Value::Float(v.as_f64().ok_or_else(bad)? as f32),
        "d" => Value::Double(v.as_f64().ok_or_else(bad)?),
        "s" => Value::Bytes(v.as_str().ok_or_else(bad)?.as_bytes().to_vec()),
        "b" => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().ok_or_else(bad)?)
                .map_err(|_| bad())?,
        ),
        "t" => {
            let p = parts(7)?;
            let small = |i: usize| u8::try_from(p[i]).map_err(|_| bad());
            Value::Date(
                u16::try_from(p[0]).map_err(|_| bad())?,
                small(1)?,
                small(2)?,
                small(3)?,
                small(4)?,
                small(5)?,
                u32::try_from(p[6]).map_err(|_| bad())?,
            )
        }
        "tm" => {
            let p = parts(6)?;
            let small = |i: usize| u8::try_from(p[i]).map_err(|_| bad());
            Value::Time(
                p[0] == 1,
                u32::try_from(p[1]).map_err(|_| bad())?,
                small(2)?,
                small(3)?,
                small(4)?,
                u32::try_from(p[5]).map_err(|_| bad())?,
            )
        }
        _ => return Err(bad()),
    })
}

/// Every entry of the record: `(table, entry text)`.
pub async fn read(redis: &mut RedisConn, key: &str) -> Result<Vec<(String, String)>> {
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(redis)
        .await
        .map_err(|e| Error::redis("reading the online snapshot progress", e))
}

/// Adds `entries` (`(table, entry text)`) unless their table is in the record already;
/// returns for each whether it was added.
pub async fn request(
    redis: &mut RedisConn,
    key: &str,
    entries: &[(String, String)],
) -> Result<Vec<bool>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let script = redis::Script::new(REQUEST_LUA);
    let mut invocation = script.prepare_invoke();
    invocation.key(key);
    for (table, entry) in entries {
        invocation.arg(table).arg(entry);
    }
    let added: Vec<i64> = invocation
        .invoke_async(redis)
        .await
        .map_err(|e| Error::redis("recording online snapshot requests", e))?;
    Ok(added.into_iter().map(|a| a == 1).collect())
}

/// Replaces `table`'s entry `held` by `next` (removes it when `next` is `None`) if it is
/// still `held`; whether it was.
pub async fn advance(
    redis: &mut RedisConn,
    key: &str,
    table: &str,
    held: &str,
    next: Option<&str>,
) -> Result<bool> {
    let set: i64 = redis::Script::new(ADVANCE_LUA)
        .key(key)
        .arg(table)
        .arg(held)
        .arg(next.unwrap_or(""))
        .invoke_async(redis)
        .await
        .map_err(|e| {
            Error::redis(
                format!("recording the online snapshot progress of {table}"),
                e,
            )
        })?;
    Ok(set == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_every_key_type() {
        let mut entry = Entry::new("requested");
        assert_eq!(Entry::parse(&entry.to_text()), Ok(entry.clone()));
        entry.after = Some(vec![
            Value::Int(-5),
            Value::UInt(u64::MAX),
            Value::Double(1.5),
            Value::Float(0.25),
            Value::Bytes(b"caf\xc3\xa9".to_vec()),
            Value::Bytes(vec![0, 0xff, 7]),
            Value::Date(2026, 1, 2, 3, 4, 5, 678_901),
            Value::Time(true, 1, 2, 3, 4, 5),
            Value::NULL,
        ]);
        entry.done = 12_345;
        assert_eq!(Entry::parse(&entry.to_text()), Ok(entry));
        assert!(Entry::parse("{\"after\": [{\"x\": 1}]}").is_err());
        assert!(Entry::parse("nope").is_err());
    }
}
