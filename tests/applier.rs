//! The shared Redis applier against a real Redis (and MariaDB for the table schema):
//! version guard, tombstones, TTL with jitter, hash replacement, script reload after
//! `SCRIPT FLUSH`, and large pipelined batches.
//!
//! Run `scripts/services.sh up` first. Each test uses its own database and key prefix.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cachesync::model::cell::Cell;
use cachesync::model::change::{Applied, Change, Op};
use cachesync::model::table::SyncedTable;
use cachesync::redis::Applier;
use cachesync::redis::keyspace::tombstone_key;
use cachesync::strategy::StrategyKind;
use redis::AsyncCommands;

struct Fixture {
    db: common::TestDb,
    prefix: String,
    table: Arc<SyncedTable>,
    applier: Applier,
    redis: redis::aio::MultiplexedConnection,
}

/// A table `items (id, name, qty)` synced as `format` under a fresh key prefix.
async fn fixture(format: &str, extra: serde_json::Value) -> Fixture {
    let mut db = common::TestDb::create("applier").await;
    db.exec("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(32) NULL, qty INT NULL)")
        .await;
    let prefix = common::unique("applier");
    let mut table = serde_json::json!({
        "name": format!("{}.items", db.name),
        "key": format!("{prefix}:{{id}}"),
        "format": format,
    });
    for (k, v) in extra.as_object().unwrap() {
        table[k] = v.clone();
    }
    let config = common::config_with_table("binlog", table);
    let table = Arc::new(common::synced_table(&mut db, &config).await);
    let applier = Applier::connect(
        &config.redis_url,
        config.tombstone_ttl,
        StrategyKind::Binlog.name(),
    )
    .await
    .unwrap();
    Fixture {
        db,
        prefix,
        table,
        applier,
        redis: common::redis_conn().await,
    }
}

impl Fixture {
    fn change(&self, op: Op, id: i64, name: Option<&str>, version: Option<u64>) -> Change {
        Change {
            table: self.table.clone(),
            op,
            row: vec![
                Cell::Int(id),
                name.map_or(Cell::Null, |n| Cell::Text(n.to_owned())),
                Cell::Int(id * 10),
            ],
            version,
            committed_at_us: None,
        }
    }

    async fn get(&mut self, id: i64) -> Option<String> {
        self.redis
            .get(format!("{}:{id}", self.prefix))
            .await
            .unwrap()
    }

    async fn finish(self) {
        common::clear_redis_prefix(&self.prefix).await;
        self.db.drop_db().await;
    }
}

#[tokio::test]
async fn an_older_version_never_overwrites_a_newer_one() {
    let mut f = fixture("json", serde_json::json!({})).await;
    let v5 = f.change(Op::Upsert, 1, Some("five"), Some(5));
    let v3 = f.change(Op::Upsert, 1, Some("three"), Some(3));
    let v5_again = f.change(Op::Upsert, 1, Some("five"), Some(5));
    let applied = f.applier.apply(&[v5, v3]).await.unwrap();
    assert_eq!(
        applied,
        Applied {
            written: 1,
            replayed: 0,
            stale: 1
        }
    );
    assert_eq!(
        f.get(1).await.as_deref(),
        Some(r#"{"_cachesync_v":5,"id":1,"name":"five","qty":10}"#)
    );
    // The same version again (a redelivery) is written again — same bytes, harmless —
    // and counted as a replay.
    assert_eq!(
        f.applier.apply(&[v5_again]).await.unwrap(),
        Applied {
            written: 0,
            replayed: 1,
            stale: 0
        }
    );

    // Versions beyond 2^53 compare exactly (Lua numbers would round them).
    let big = (1u64 << 60) + 1;
    let newer = f.change(Op::Upsert, 2, Some("big+1"), Some(big));
    let older = f.change(Op::Upsert, 2, Some("big"), Some(big - 1));
    let applied = f.applier.apply(&[newer, older]).await.unwrap();
    assert_eq!(
        applied,
        Applied {
            written: 1,
            replayed: 0,
            stale: 1
        }
    );
    assert!(f.get(2).await.unwrap().contains("big+1"));
    f.finish().await;
}

#[tokio::test]
async fn a_delete_leaves_a_tombstone_that_stops_an_older_upsert() {
    let mut f = fixture("json", serde_json::json!({})).await;
    f.applier
        .apply(&[f.change(Op::Upsert, 7, Some("a"), Some(10))])
        .await
        .unwrap();
    f.applier
        .apply(&[f.change(Op::Delete, 7, None, Some(11))])
        .await
        .unwrap();
    assert_eq!(f.get(7).await, None, "a delete deletes the key");
    let tomb = tombstone_key(&format!("{}:7", f.prefix)).unwrap();
    let tomb_version: Option<String> = f.redis.get(&tomb).await.unwrap();
    assert_eq!(tomb_version.as_deref(), Some("11"));
    let ttl: i64 = f.redis.pttl(&tomb).await.unwrap();
    assert!(
        ttl > 0 && ttl <= 60_000,
        "tombstone expires with tombstone_ttl, pttl={ttl}"
    );

    // A late upsert older than the delete does not resurrect the row...
    let late = f
        .applier
        .apply(&[f.change(Op::Upsert, 7, Some("late"), Some(10))])
        .await
        .unwrap();
    assert_eq!(
        late,
        Applied {
            written: 0,
            replayed: 0,
            stale: 1
        }
    );
    assert_eq!(f.get(7).await, None);
    // ...a newer one does, and clears the tombstone.
    f.applier
        .apply(&[f.change(Op::Upsert, 7, Some("back"), Some(12))])
        .await
        .unwrap();
    assert!(f.get(7).await.unwrap().contains("back"));
    let tomb_version: Option<String> = f.redis.get(&tomb).await.unwrap();
    assert_eq!(tomb_version, None);
    f.finish().await;
}

#[tokio::test]
async fn hash_rows_are_replaced_whole_and_null_fields_vanish() {
    let mut f = fixture("hash", serde_json::json!({})).await;
    f.applier
        .apply(&[f.change(Op::Upsert, 1, Some("named"), Some(1))])
        .await
        .unwrap();
    let key = format!("{}:1", f.prefix);
    let fields: Vec<(String, String)> = f.redis.hgetall(&key).await.unwrap();
    let mut fields = fields;
    fields.sort();
    assert_eq!(
        fields,
        vec![
            ("_cachesync_v".to_owned(), "1".to_owned()),
            ("id".to_owned(), "1".to_owned()),
            ("name".to_owned(), "named".to_owned()),
            ("qty".to_owned(), "10".to_owned()),
        ]
    );
    // name becomes NULL: the field must disappear, not keep its old value.
    f.applier
        .apply(&[f.change(Op::Upsert, 1, None, Some(2))])
        .await
        .unwrap();
    let name: Option<String> = f.redis.hget(&key, "name").await.unwrap();
    assert_eq!(name, None);
    // The guard reads the hash's version field too.
    let stale = f
        .applier
        .apply(&[f.change(Op::Upsert, 1, Some("old"), Some(1))])
        .await
        .unwrap();
    assert_eq!(stale.stale, 1);
    f.finish().await;
}

#[tokio::test]
async fn ttl_is_applied_with_bounded_jitter() {
    let mut f = fixture("json", serde_json::json!({ "ttl": 100, "ttl_jitter": 50 })).await;
    let changes: Vec<Change> = (0..200)
        .map(|id| f.change(Op::Upsert, id, Some("x"), Some(1)))
        .collect();
    f.applier.apply(&changes).await.unwrap();
    let mut ttls = Vec::new();
    for id in 0..200 {
        let ttl: i64 = f.redis.pttl(format!("{}:{id}", f.prefix)).await.unwrap();
        assert!(
            (99_000..=150_000).contains(&ttl),
            "pttl {ttl} outside ttl..ttl+jitter"
        );
        ttls.push(ttl / 1000);
    }
    ttls.sort_unstable();
    ttls.dedup();
    assert!(
        ttls.len() > 10,
        "jitter spreads expiries: only {} distinct seconds",
        ttls.len()
    );
    f.finish().await;
}

#[tokio::test]
async fn unversioned_changes_write_unconditionally_without_a_version_field() {
    let mut f = fixture("json", serde_json::json!({})).await;
    f.applier
        .apply(&[f.change(Op::Upsert, 1, Some("first"), None)])
        .await
        .unwrap();
    f.applier
        .apply(&[f.change(Op::Upsert, 1, Some("second"), None)])
        .await
        .unwrap();
    assert_eq!(
        f.get(1).await.as_deref(),
        Some(r#"{"id":1,"name":"second","qty":10}"#)
    );
    f.finish().await;
}

#[tokio::test]
async fn the_script_is_reloaded_after_redis_forgets_it() {
    let mut f = fixture("json", serde_json::json!({})).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut f.redis)
        .await
        .unwrap();
    // A whole pipelined batch fails with NOSCRIPT; the applier reloads and re-runs it.
    let batch: Vec<Change> = (1..=50)
        .map(|id| f.change(Op::Upsert, id, Some("after flush"), Some(1)))
        .collect();
    let applied = f.applier.apply(&batch).await.unwrap();
    assert_eq!(applied.written, 50);
    assert!(f.get(50).await.unwrap().contains("after flush"));
    f.finish().await;
}

#[tokio::test]
async fn a_large_batch_is_applied_in_order() {
    let mut f = fixture("json", serde_json::json!({})).await;
    // 10k changes over 100 keys, versions increasing: the last version of each key wins.
    let changes: Vec<Change> = (0..10_000u64)
        .map(|i| {
            let id = (i % 100) as i64;
            f.change(Op::Upsert, id, Some(&format!("v{i}")), Some(i))
        })
        .collect();
    let applied = f.applier.apply(&changes).await.unwrap();
    // Uninterrupted, all 10k are written. When another test flushes the script cache
    // mid-batch, the applier resumes at the first failed change and some re-run changes
    // find a newer version already written: the counts shift, the outcome may not.
    assert_eq!(applied.written + applied.replayed + applied.stale, 10_000);
    assert!(
        applied.written >= 100,
        "the newest change of each key is written: {applied:?}"
    );
    for id in [0i64, 42, 99] {
        let want = format!("v{}", 9_900 + id);
        assert!(
            f.get(id).await.unwrap().contains(&want),
            "key {id} holds {want}"
        );
    }
    f.finish().await;
}

#[tokio::test]
async fn unreachable_redis_is_a_clear_error_with_the_password_hidden() {
    let err = Applier::connect(
        "redis://:hunter2@127.0.0.1:1",
        Duration::from_secs(1),
        StrategyKind::Binlog.name(),
    )
    .await
    .err()
    .expect("port 1 refuses connections");
    let message = err.to_string();
    assert!(
        message.starts_with("cannot reach Redis at redis://:***@127.0.0.1:1"),
        "{message}"
    );
    assert!(!message.contains("hunter2"));
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_checkpoint_moves_with_its_batch_in_one_atomic_call() {
    let mut f = fixture("hash", serde_json::json!({})).await;
    let checkpoint_key = format!("{}:checkpoint", f.prefix);
    let batch: Vec<Change> = (1..=20)
        .map(|id| f.change(Op::Upsert, id, Some("in"), Some(100 + id as u64)))
        .collect();
    let applied = f
        .applier
        .apply_with_checkpoint(&batch, &checkpoint_key, "binlog.000001:1234")
        .await
        .unwrap();
    assert_eq!(
        applied,
        Applied {
            written: 20,
            replayed: 0,
            stale: 0
        }
    );
    let checkpoint: Option<String> = f.redis.get(&checkpoint_key).await.unwrap();
    assert_eq!(checkpoint.as_deref(), Some("binlog.000001:1234"));
    let name: Option<String> = f
        .redis
        .hget(format!("{}:20", f.prefix), "name")
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("in"));

    // Replaying the same batch (a crash before the next checkpoint) is seen as replays.
    let again = f
        .applier
        .apply_with_checkpoint(&batch, &checkpoint_key, "binlog.000001:1234")
        .await
        .unwrap();
    assert_eq!(
        again,
        Applied {
            written: 0,
            replayed: 20,
            stale: 0
        }
    );

    f.finish().await;
}
