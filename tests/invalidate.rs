//! `mode = "invalidate"` holds for every strategy: a change deletes the row's key instead
//! of writing the row, whichever strategy carries it (the applier decides it once,
//! `Change::redis_op`). Before that was one place, only the binlog decoder applied it:
//! dual-write and mq wrote full rows into an `invalidate` table's keys.
//!
//! Each test pre-fills the row's key with a stale value (as a reader's fill would have),
//! changes the row through the strategy, and waits until the key is gone — never the full
//! row. Needs MariaDB (row binlog), Redis and RabbitMQ: `scripts/services.sh up`.

mod common;

use std::time::{Duration, Instant};

use cachesync::cmd::run::Daemon;
use cachesync::config::{Config, RawConfig};
use cachesync::model::change::{Op, RowWrite};
use cachesync::strategy::SyncStrategy;
use common::TestDb;
use mysql_async::Value;
use redis::AsyncCommands;

/// The config of `strategy` syncing `db.items` in invalidate mode under `prefix`.
fn config(strategy: &str, db: &str, prefix: &str) -> Config {
    let tree = serde_json::json!({
        "strategy": strategy,
        "mysql": { "url": common::mysql_url() },
        "redis": { "url": common::redis_url(), "tombstone_ttl": 60 },
        "amqp": {
            "url": common::amqp_url(),
            "exchange": format!("{prefix}.x"),
            "queue": format!("{prefix}.q"),
            "dead_letter_queue": format!("{prefix}.dead"),
            "publish": "outbox",
            "outbox_table": format!("{db}.outbox"),
        },
        "binlog": {
            "server_id": 40_000 + (std::process::id() % 10_000),
            "checkpoint_key": format!("{prefix}:checkpoint"),
        },
        "tables": [{
            "name": format!("{db}.items"),
            "key": format!("{prefix}:item:{{id}}"),
            "mode": "invalidate",
        }],
    });
    RawConfig::from_tree(tree).unwrap().validate().unwrap()
}

/// Runs `strategy` on a table in invalidate mode: the row's key, pre-filled with a stale
/// value, must be deleted by an upsert and stay deleted — Redis never holds the row.
async fn changes_delete_the_key(strategy: &str) {
    let mut db = TestDb::create(&format!("inval_{}", strategy.replace('-', "_"))).await;
    db.exec("CREATE TABLE items (id INT PRIMARY KEY, label VARCHAR(32) NOT NULL)")
        .await;
    db.exec("INSERT INTO items VALUES (1, 'first')").await;
    let prefix = common::unique("inval");
    let config = config(strategy, &db.name, &prefix);
    let daemon = tokio::time::timeout(Duration::from_secs(60), Daemon::start(&config))
        .await
        .expect("the strategy starts")
        .unwrap();
    let key = format!("{prefix}:item:1");
    let mut redis = common::redis_conn().await;
    if strategy == "binlog" {
        // The binlog strategy snapshots first (skipping invalidate tables) and records a
        // checkpoint; fill the key after that, as a reader would.
        wait_for(&mut redis, &format!("{prefix}:checkpoint"), true).await;
    }
    let _: () = redis
        .set(&key, r#"{"id":1,"label":"stale"}"#)
        .await
        .unwrap();

    let table = daemon.services().tables[0].clone();
    let write = RowWrite {
        table,
        op: Op::Upsert,
        values: vec![
            ("id".to_owned(), Value::Int(1)),
            ("label".to_owned(), Value::from("second")),
        ],
    };
    daemon.strategy().write(write).await.unwrap();
    wait_for(&mut redis, &key, false).await;
    // A later change (another strategy's redelivery, a second write) keeps it deleted.
    db.exec("UPDATE items SET label = 'third' WHERE id = 1")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held: Option<String> = redis.get(&key).await.unwrap();
    assert_eq!(
        held, None,
        "{strategy}: an invalidate table's key holds {held:?}"
    );

    tokio::time::timeout(Duration::from_secs(30), daemon.stop())
        .await
        .expect("the strategy stops")
        .unwrap();
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}

/// Waits up to 20 s until `key` exists (`present`) or is gone.
async fn wait_for(redis: &mut redis::aio::MultiplexedConnection, key: &str, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let exists: bool = redis.exists(key).await.unwrap();
        if exists == present {
            return;
        }
        let value: Option<String> = redis.get(key).await.unwrap_or(None);
        assert!(
            Instant::now() < deadline,
            "{key} still {} after 20 s (holds {value:?})",
            if present { "missing" } else { "present" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_write_deletes_the_key_of_an_invalidate_table() {
    changes_delete_the_key("dual-write").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_deletes_the_key_of_an_invalidate_table() {
    changes_delete_the_key("mq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_deletes_the_key_of_an_invalidate_table() {
    changes_delete_the_key("binlog").await;
}
