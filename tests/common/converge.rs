//! Comparing Redis with MySQL: rows of a synced `json` table, encoded as `SELECT` reads
//! them, against the keys `<prefix>:t:*` (cachesync's version member left out).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cachesync::model::cell::Encoded;
use cachesync::model::table::SyncedTable;
use mysql_async::prelude::Queryable;
use redis::AsyncCommands;

use super::TestDb;

/// What Redis should hold for each row of `table`: its `SELECT`, encoded, keyed by
/// Redis key; the `_cachesync_v` member is left out on both sides of the comparison.
pub async fn expected_from_mysql(db: &mut TestDb, table: &SyncedTable) -> BTreeMap<String, String> {
    let rows: Vec<mysql_async::Row> = db
        .conn
        .exec(table.sql.select_all.as_str(), ())
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            let cells = table.decode_sql_row(row).unwrap();
            let Encoded::Json(doc) = table.encoder.encode(&cells, None) else {
                panic!("json tables only")
            };
            (table.key_of(&cells), String::from_utf8(doc).unwrap())
        })
        .collect()
}

/// Every key under `prefix` (except the checkpoint) with its JSON, version removed.
pub async fn cached(prefix: &str) -> BTreeMap<String, String> {
    let mut redis = super::redis_conn().await;
    let keys: Vec<String> = redis.keys(format!("{prefix}:t:*")).await.unwrap();
    let mut out = BTreeMap::new();
    for key in keys {
        let doc: Option<String> = redis.get(&key).await.unwrap();
        if let Some(doc) = doc {
            out.insert(key, strip_version(&doc));
        }
    }
    out
}

/// `{"_cachesync_v":N,...}` → `{...}`.
pub fn strip_version(doc: &str) -> String {
    match doc.strip_prefix("{\"_cachesync_v\":") {
        Some(rest) => {
            let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{{{}", rest.strip_prefix(',').unwrap_or(rest))
        }
        None => doc.to_owned(),
    }
}

pub async fn converged(db: &mut TestDb, table: &SyncedTable, prefix: &str) -> bool {
    expected_from_mysql(db, table).await == cached(prefix).await
}

/// Waits (at most 60 s) until Redis equals MySQL for `table`; on failure shows the first
/// differences.
pub async fn wait_converged(db: &mut TestDb, table: &SyncedTable, prefix: &str, what: &str) {
    let limit = Duration::from_secs(60);
    let deadline = Instant::now() + limit;
    while !converged(db, table, prefix).await {
        if Instant::now() > deadline {
            let expected = expected_from_mysql(db, table).await;
            let got = cached(prefix).await;
            let differing: Vec<_> = expected
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .take(5)
                .collect();
            let extra: Vec<_> = got
                .keys()
                .filter(|k| !expected.contains_key(*k))
                .take(5)
                .collect();
            panic!(
                "{what}: Redis differs from MySQL after {limit:?}: {differing:?}, extra {extra:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What Redis holds for `table`: every key its template matches (cachesync's companion
/// keys left out), JSON with the version removed.
pub async fn cached_table(table: &SyncedTable) -> BTreeMap<String, String> {
    let mut redis = super::redis_conn().await;
    let keys: Vec<String> = redis.keys(table.key.scan_pattern(|_| None)).await.unwrap();
    let mut out = BTreeMap::new();
    for key in keys {
        if cachesync::redis::keyspace::is_companion(&key) {
            continue;
        }
        let doc: Option<String> = redis.get(&key).await.unwrap();
        if let Some(doc) = doc {
            out.insert(key, strip_version(&doc));
        }
    }
    out
}

/// Waits (at most 60 s) until Redis equals MySQL for every table of `tables` (json
/// tables whose key templates do not overlap); on failure shows the first differences.
pub async fn wait_tables_converged(db: &mut TestDb, tables: &[&SyncedTable], what: &str) {
    let limit = Duration::from_secs(60);
    let deadline = Instant::now() + limit;
    loop {
        let mut differences = Vec::new();
        for table in tables {
            let expected = expected_from_mysql(db, table).await;
            let got = cached_table(table).await;
            if expected != got {
                let differing: Vec<_> = expected
                    .iter()
                    .filter(|(k, v)| got.get(*k) != Some(v))
                    .map(|(k, v)| format!("{k}: want {v}, got {:?}", got.get(k)))
                    .take(5)
                    .collect();
                let extra: Vec<_> = got
                    .iter()
                    .filter(|(k, _)| !expected.contains_key(*k))
                    .take(5)
                    .collect();
                differences.push(format!("{}: {differing:#?}, extra {extra:?}", table.name()));
            }
        }
        if differences.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: Redis differs from MySQL after {limit:?}:\n{}",
                differences.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
