//! The binlog strategy in-process against the dedicated MariaDB (row binlog) and Redis:
//! every type of the encoding contract arrives as `SELECT` encodes it, unconfigured
//! tables never appear, a snapshot taken under concurrent writers converges, DDL is
//! picked up without a restart, `invalidate` mode deletes keys, and a purged binlog is a
//! clear error. Crash and huge-transaction tests run the real binary: `binlog_faults.rs`.
//!
//! Run `scripts/services.sh up` first. Each test uses its own database, key prefix,
//! checkpoint key and replica server id.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cachesync::cmd::run::Daemon;
use cachesync::config::{Config, RawConfig};
use common::converge::{cached, expected_from_mysql, wait_converged};
use common::{TestDb, all_types};
use mysql_async::prelude::Queryable;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

/// A replica id no other test of this run uses.
fn server_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    200_000 + (std::process::id() % 10_000) * 10 + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A binlog config for `tables` (JSON `[[tables]]` entries) with its own checkpoint key.
fn config(prefix: &str, tables: serde_json::Value) -> Config {
    let tree = serde_json::json!({
        "strategy": "binlog",
        "mysql": { "url": common::mysql_url() },
        "redis": { "url": common::redis_url(), "tombstone_ttl": 60 },
        "binlog": { "server_id": server_id(), "checkpoint_key": format!("{prefix}:checkpoint"), "batch_size": 500 },
        "tables": tables,
    });
    RawConfig::from_tree(tree).unwrap().validate().unwrap()
}

/// A binlog config syncing `table` of `db` as `<prefix>:t:{id}`, with the `extra` keys
/// (e.g. `mode`) in its `[[tables]]` entry.
fn config_for(db: &TestDb, prefix: &str, table: &str, extra: serde_json::Value) -> Config {
    let mut entry = serde_json::json!({
        "name": format!("{}.{table}", db.name),
        "key": format!("{prefix}:t:{{id}}"),
    });
    for (k, v) in extra.as_object().unwrap() {
        entry[k] = v.clone();
    }
    config(prefix, serde_json::json!([entry]))
}

/// The strategy running in a task, as `cachesync run` runs it.
async fn start(config: &Config) -> Daemon {
    Daemon::start(config).await.unwrap()
}

/// Stops the strategy the way SIGTERM does; it must stop within 30 s.
async fn stop(daemon: Daemon) -> cachesync::Result<()> {
    tokio::time::timeout(Duration::from_secs(30), daemon.stop())
        .await
        .expect("the strategy stops within 30 s")
}

/// Stops the strategy (it must stop cleanly) and removes the test's keys and database.
async fn finish(running: Daemon, prefix: &str, db: TestDb) {
    stop(running).await.unwrap();
    common::clear_redis_prefix(prefix).await;
    db.drop_db().await;
}

/// Polls `check` every 50 ms until it holds; fails after `limit` with `what`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_every_type_arrive_as_select_encodes_them() {
    let mut db = TestDb::create("binlog_types").await;
    db.exec(all_types::CREATE).await;
    db.exec("CREATE TABLE not_synced (id INT PRIMARY KEY, secret VARCHAR(16))")
        .await;
    let prefix = common::unique("bl_types");
    let config = config_for(&db, &prefix, "all_types", serde_json::json!({}));
    let running = start(&config).await;
    let table = running.services().tables[0].clone();
    // The rows must come off the binlog, not the start-up snapshot (which a slow INSERT
    // could otherwise race).
    eventually(
        "the snapshot's checkpoint",
        Duration::from_secs(20),
        || async {
            let mut redis = common::redis_conn().await;
            redis.exists(format!("{prefix}:checkpoint")).await.unwrap()
        },
    )
    .await;

    // Inserts of every type, then an update and a delete, then an unrelated table.
    db.exec(all_types::INSERT).await;
    db.exec("UPDATE all_types SET txt = 'updated 🦀', amount = 1.5 WHERE id = 3")
        .await;
    db.exec("DELETE FROM all_types WHERE id = 2").await;
    db.exec("INSERT INTO not_synced VALUES (1, 'hidden')").await;

    eventually(
        "Redis holds rows 1 and 3, not 2",
        Duration::from_secs(20),
        || async {
            let keys: Vec<String> = cached(&prefix).await.into_keys().collect();
            keys == vec![format!("{prefix}:t:1"), format!("{prefix}:t:3")]
        },
    )
    .await;
    eventually(
        "row 3's update arrived",
        Duration::from_secs(20),
        || async {
            cached(&prefix)
                .await
                .values()
                .any(|doc| doc.contains("updated 🦀"))
        },
    )
    .await;
    let expected = expected_from_mysql(&mut db, &table).await;
    assert_eq!(cached(&prefix).await, expected);
    // Row 1 was never updated: it is byte for byte the contract's JSON.
    assert_eq!(
        expected[&format!("{prefix}:t:1")],
        all_types::expected_json()[&1]
    );

    let mut redis = common::redis_conn().await;
    let everything: Vec<String> = redis.keys(format!("{prefix}*")).await.unwrap();
    assert!(
        everything
            .iter()
            .all(|k| !k.contains("not_synced") && !k.contains("hidden")),
        "an unconfigured table reached Redis: {everything:?}"
    );
    let checkpoint: String = redis.get(format!("{prefix}:checkpoint")).await.unwrap();
    // `file:pos gtid=domain-server-seq`: MariaDB announces its GTIDs to cachesync.
    assert!(checkpoint.starts_with("binlog."), "{checkpoint}");
    assert!(checkpoint.contains(" gtid="), "{checkpoint}");

    finish(running, &prefix, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_under_concurrent_writes_converges() {
    let mut db = TestDb::create("binlog_snapshot").await;
    db.exec(
        "CREATE TABLE items (id INT PRIMARY KEY, n BIGINT NOT NULL, label VARCHAR(32) NOT NULL)",
    )
    .await;
    db.exec("SET SESSION max_recursive_iterations = 1000000")
        .await;
    db.exec(
        "INSERT INTO items WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 5000)
         SELECT i, 0, CONCAT('item ', i) FROM seq",
    )
    .await;
    let prefix = common::unique("bl_snap");
    let config = config_for(&db, &prefix, "items", serde_json::json!({}));

    // Writers keep updating, inserting and deleting while the snapshot is taken.
    let stop = CancellationToken::new();
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let stop = stop.clone();
        let database = db.name.clone();
        writers.push(tokio::spawn(async move {
            let mut conn = common::mysql_conn().await;
            conn.query_drop(format!("USE `{database}`")).await.unwrap();
            let mut n: u64 = 0;
            while !stop.is_cancelled() && n < 3_000 {
                n += 1;
                let id = (n * 7919 + w * 104_729) % 5_200 + 1;
                let sql = match n % 10 {
                    0 => format!("DELETE FROM items WHERE id = {id}"),
                    1 => format!("INSERT IGNORE INTO items VALUES ({id}, {n}, 'new')"),
                    _ => format!("UPDATE items SET n = n + 1, label = 'w{w} {n}' WHERE id = {id}"),
                };
                conn.query_drop(sql).await.unwrap();
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let running = start(&config).await;
    let table = running.services().tables[0].clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let mut written = 0;
    for writer in writers {
        written += writer.await.unwrap();
    }
    assert!(written > 0);

    wait_converged(&mut db, &table, &prefix, "snapshot + tail").await;

    finish(running, &prefix, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_is_picked_up_without_a_restart() {
    let mut db = TestDb::create("binlog_ddl").await;
    db.exec("CREATE TABLE shapes (id INT PRIMARY KEY, name VARCHAR(16))")
        .await;
    let prefix = common::unique("bl_ddl");
    let config = config_for(&db, &prefix, "shapes", serde_json::json!({}));
    let running = start(&config).await;
    let key = |id: u32| format!("{prefix}:t:{id}");

    db.exec("INSERT INTO shapes VALUES (1, 'before')").await;
    eventually("row 1", Duration::from_secs(20), || async {
        cached(&prefix).await.get(&key(1)) == Some(&r#"{"id":1,"name":"before"}"#.to_owned())
    })
    .await;

    db.exec("ALTER TABLE shapes ADD COLUMN extra INT NOT NULL DEFAULT 7")
        .await;
    db.exec("INSERT INTO shapes VALUES (2, 'after add', 8)")
        .await;
    db.exec("UPDATE shapes SET name = 'touched' WHERE id = 1")
        .await;
    eventually(
        "rows carry the added column",
        Duration::from_secs(20),
        || async {
            let got = cached(&prefix).await;
            got.get(&key(1)) == Some(&r#"{"id":1,"name":"touched","extra":7}"#.to_owned())
                && got.get(&key(2)) == Some(&r#"{"id":2,"name":"after add","extra":8}"#.to_owned())
        },
    )
    .await;

    db.exec("ALTER TABLE shapes CHANGE COLUMN name label VARCHAR(16)")
        .await;
    db.exec("ALTER TABLE shapes DROP COLUMN extra").await;
    db.exec("UPDATE shapes SET label = 'renamed' WHERE id = 2")
        .await;
    eventually(
        "rows follow the rename and the drop",
        Duration::from_secs(20),
        || async {
            cached(&prefix).await.get(&key(2)) == Some(&r#"{"id":2,"label":"renamed"}"#.to_owned())
        },
    )
    .await;

    finish(running, &prefix, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_mode_deletes_the_key_on_every_change() {
    let mut db = TestDb::create("binlog_inval").await;
    db.exec("CREATE TABLE pages (id INT PRIMARY KEY, body TEXT)")
        .await;
    db.exec("INSERT INTO pages VALUES (1, 'v1'), (2, 'v1')")
        .await;
    let prefix = common::unique("bl_inval");
    let config = config_for(
        &db,
        &prefix,
        "pages",
        serde_json::json!({ "mode": "invalidate" }),
    );
    let running = start(&config).await;
    let mut redis = common::redis_conn().await;
    // The snapshot (done once the checkpoint exists) leaves invalidate-mode tables to
    // the readers.
    eventually(
        "the snapshot's checkpoint",
        Duration::from_secs(20),
        || async {
            let mut redis = common::redis_conn().await;
            redis.exists(format!("{prefix}:checkpoint")).await.unwrap()
        },
    )
    .await;
    assert!(cached(&prefix).await.is_empty());
    // A reader filled key 1 itself (cache-aside).
    let _: () = redis
        .set(format!("{prefix}:t:1"), "filled by a reader")
        .await
        .unwrap();
    db.exec("UPDATE pages SET body = 'v2' WHERE id = 1").await;
    eventually(
        "the update deleted key 1",
        Duration::from_secs(20),
        || async { cached(&prefix).await.is_empty() },
    )
    .await;
    finish(running, &prefix, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_binlog_is_a_clear_error() {
    let mut db = TestDb::create("binlog_purged").await;
    db.exec("CREATE TABLE t (id INT PRIMARY KEY)").await;
    let prefix = common::unique("bl_purged");
    let config = config_for(&db, &prefix, "t", serde_json::json!({}));
    let mut redis = common::redis_conn().await;
    let _: () = redis
        .set(format!("{prefix}:checkpoint"), "binlog.999999:4")
        .await
        .unwrap();
    let mut running = start(&config).await;
    let outcome = tokio::time::timeout(Duration::from_secs(30), running.finished())
        .await
        .expect("a purged binlog stops the strategy");
    let message = outcome.expect_err("tailing cannot start").to_string();
    assert!(message.contains("binlog.999999:4"), "{message}");
    assert!(message.contains("cachesync snapshot"), "{message}");
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_a_dropped_replication_connection_lose_nothing() {
    let mut db = TestDb::create("binlog_rotate").await;
    db.exec("CREATE TABLE counters (id INT PRIMARY KEY, n INT NOT NULL)")
        .await;
    let prefix = common::unique("bl_rotate");
    let config = config_for(&db, &prefix, "counters", serde_json::json!({}));
    let running = start(&config).await;
    let table = running.services().tables[0].clone();

    db.exec("INSERT INTO counters VALUES (1, 1), (2, 1)").await;
    // A new binlog file mid-stream.
    db.exec("FLUSH BINARY LOGS").await;
    db.exec("UPDATE counters SET n = 2 WHERE id = 1").await;
    wait_converged(&mut db, &table, &prefix, "changes after the rotation").await;

    // The server drops cachesync's replication connection (as a restart would): it
    // reconnects from its checkpoint and catches up with what was written meanwhile.
    let threads: Vec<(u64, String)> = db
        .conn
        .query("SELECT ID, COMMAND FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
        .await
        .unwrap();
    assert!(!threads.is_empty(), "a replication connection is open");
    let mut killed = 0;
    for (id, _) in &threads {
        // PROCESSLIST does not say which replica a dump thread serves, so every tailer
        // of this test run is cut off; each must resume from its own checkpoint.
        if db.conn.query_drop(format!("KILL {id}")).await.is_ok() {
            killed += 1;
        }
    }
    assert!(killed > 0);
    db.exec("UPDATE counters SET n = 3 WHERE id = 2").await;
    db.exec("INSERT INTO counters VALUES (3, 1)").await;
    wait_converged(&mut db, &table, &prefix, "changes after the reconnect").await;

    finish(running, &prefix, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_members_come_from_the_binlog_when_the_tailer_lags_behind_an_alter() {
    let mut db = TestDb::create("binlog_enum").await;
    db.exec("CREATE TABLE sized (id INT PRIMARY KEY, size ENUM('small','large') NOT NULL)")
        .await;
    let prefix = common::unique("bl_enum");
    let config = config_for(&db, &prefix, "sized", serde_json::json!({}));
    // Snapshot (empty table), then stop: the daemon is down while the table changes.
    let running = start(&config).await;
    let mut redis = common::redis_conn().await;
    eventually(
        "the snapshot's checkpoint",
        Duration::from_secs(20),
        || async {
            let mut redis = common::redis_conn().await;
            redis.exists(format!("{prefix}:checkpoint")).await.unwrap()
        },
    )
    .await;
    stop(running).await.unwrap();

    // Row 1 is logged as index 1 of ('small','large'); then the members are reordered,
    // so today's information_schema says index 1 is 'large'.
    db.exec("INSERT INTO sized VALUES (1, 'small')").await;
    db.exec("ALTER TABLE sized MODIFY size ENUM('large','small') NOT NULL")
        .await;
    db.exec("INSERT INTO sized VALUES (2, 'small')").await;

    let running = start(&config).await;
    eventually("both rows", Duration::from_secs(20), || async {
        cached(&prefix).await.len() == 2
    })
    .await;
    let got = cached(&prefix).await;
    assert_eq!(got[&format!("{prefix}:t:1")], r#"{"id":1,"size":"small"}"#);
    assert_eq!(got[&format!("{prefix}:t:2")], r#"{"id":2,"size":"small"}"#);
    let _: () = redis.del(format!("{prefix}:checkpoint")).await.unwrap();
    finish(running, &prefix, db).await;
}

/// What the tailer hands the applier while `txns` single-row transactions commit
/// 20 ms apart, with the given linger: the row changes of each batch that had any.
async fn batches_under_linger(linger: Duration, txns: u32) -> Vec<usize> {
    use cachesync::strategy::binlog::position::{BinlogPosition, Checkpoint};
    use cachesync::strategy::binlog::tail::{Batch, Tailer};

    let mut db = TestDb::create("binlog_linger").await;
    db.exec("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)")
        .await;
    let prefix = common::unique("cs:linger");
    let config = config_for(&db, &prefix, "t", serde_json::json!({}));
    let services = cachesync::cmd::connect::connect(&config).await.unwrap();
    let status: mysql_async::Row = db
        .conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .expect("the test MariaDB logs a binlog");
    let start = BinlogPosition::new(status.get::<String, _>(0).unwrap(), status.get(1).unwrap());
    let mut tailer = Tailer::new(
        config.mysql_url.clone(),
        config.binlog.server_id,
        config.binlog.batch_size,
        services.pool.clone(),
        &services.tables,
        None,
        Checkpoint::at(start),
    )
    .with_linger(linger);
    let shutdown = CancellationToken::new();
    let (out, mut batches) = tokio::sync::mpsc::channel::<Batch>(4);
    let tailing = {
        let shutdown = shutdown.clone();
        // Reconnects like the strategy does (from the last batch handed over): another
        // test of this file kills every replication connection.
        tokio::spawn(async move {
            loop {
                match tailer.run(&out, &shutdown).await {
                    Ok(()) => return Ok::<(), cachesync::Error>(()),
                    Err(_) if !shutdown.is_cancelled() => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    };
    // Let the tailer connect, then commit while it is tailing, with gaps far longer than
    // its 2 ms idle flush.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Where the binlog stood before the last transaction: the checkpoint that comes with
    // it must be past that. (Other tests commit and rotate the binlog meanwhile, so no
    // exact position can be expected.)
    let mut before_last = None;
    for id in 1..=txns {
        if id == txns {
            let status: mysql_async::Row = db
                .conn
                .query_first("SHOW MASTER STATUS")
                .await
                .unwrap()
                .unwrap();
            before_last = Some(BinlogPosition::new(
                status.get::<String, _>(0).unwrap(),
                status.get(1).unwrap(),
            ));
        }
        db.exec(&format!("INSERT INTO t VALUES ({id}, {id})")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_last = before_last.expect("at least one transaction");
    let mut sizes = Vec::new();
    let mut last = None;
    let mut seen = 0;
    while seen < txns as usize {
        let Some(batch) = tokio::time::timeout(Duration::from_secs(30), batches.recv())
            .await
            .expect("the tailer hands the transactions over within 30 s")
        else {
            panic!("the tailer stopped: {:?}", tailing.await);
        };
        if !batch.changes.is_empty() {
            seen += batch.changes.len();
            sizes.push(batch.changes.len());
            let checkpoint = batch
                .checkpoint
                .expect("a batch of whole transactions carries a checkpoint");
            last = Some(checkpoint.position);
        }
    }
    shutdown.cancel();
    tailing.await.unwrap().unwrap();
    let last = last.expect("a batch with changes");
    assert!(
        last > before_last,
        "the batch with the last transaction is checkpointed after it: {last} vs {before_last}"
    );
    db.drop_db().await;
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linger_merges_transactions_into_one_redis_call_with_the_last_checkpoint() {
    // 10 commits 20 ms apart take ~0.2 s (more on a loaded machine): all within the
    // linger, so one batch carries them, checkpointed after the last.
    let sizes = batches_under_linger(Duration::from_secs(5), 10).await;
    assert_eq!(sizes, vec![10], "one batch for the ten transactions");
    // Without a linger an idle applier gets each transaction as it commits.
    let sizes = batches_under_linger(Duration::ZERO, 10).await;
    assert!(
        sizes.len() >= 5,
        "without a linger, transactions 20 ms apart travel mostly alone: {sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_transactions_never_travel_in_a_piece_without_their_checkpoint() {
    use cachesync::strategy::binlog::position::{BinlogPosition, Checkpoint};
    use cachesync::strategy::binlog::tail::{Batch, Tailer};

    let mut db = TestDb::create("binlog_pieces").await;
    db.exec("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)")
        .await;
    let prefix = common::unique("cs:pieces");
    let config = config_for(&db, &prefix, "t", serde_json::json!({}));
    let services = cachesync::cmd::connect::connect(&config).await.unwrap();
    let status: mysql_async::Row = db
        .conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .expect("the test MariaDB logs a binlog");
    let start = BinlogPosition::new(status.get::<String, _>(0).unwrap(), status.get(1).unwrap());
    // A: rows 1–4; B: 5–8; C: 9–12; D: 13–20, one transaction each, all in the binlog
    // before the tailer starts, so it reads them in one burst.
    for (first, last) in [(1, 4), (5, 8), (9, 12), (13, 20)] {
        let values: Vec<String> = (first..=last).map(|id| format!("({id}, 0)")).collect();
        db.exec(&format!("INSERT INTO t VALUES {}", values.join(",")))
            .await;
    }
    // Batches of 10: A goes alone (the applier is idle); nothing consumes the channel,
    // so B and C wait to merge; D does not fit beside them.
    let mut tailer = Tailer::new(
        config.mysql_url.clone(),
        config.binlog.server_id,
        10,
        services.pool.clone(),
        &services.tables,
        None,
        Checkpoint::at(start),
    );
    let shutdown = CancellationToken::new();
    let (out, mut batches) = tokio::sync::mpsc::channel::<Batch>(8);
    let tailing = {
        let shutdown = shutdown.clone();
        // Reconnects like the strategy does: another test of this file kills every
        // replication connection (a re-read may hand rows over twice; the rule holds).
        tokio::spawn(async move {
            loop {
                match tailer.run(&out, &shutdown).await {
                    Ok(()) => return Ok::<(), cachesync::Error>(()),
                    Err(_) if !shutdown.is_cancelled() => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 20 {
        let batch = tokio::time::timeout(Duration::from_secs(30), batches.recv())
            .await
            .expect("the tailer hands the rows over within 30 s")
            .expect("the tailer runs");
        let ids: Vec<i64> = batch
            .changes
            .iter()
            .map(|c| match &c.row[0] {
                cachesync::model::cell::Cell::Int(id) => *id,
                other => panic!("an INT id: {other:?}"),
            })
            .collect();
        if ids.iter().any(|id| *id <= 12) {
            assert!(
                batch.checkpoint.is_some(),
                "rows of committed transactions {ids:?} handed over without a checkpoint"
            );
        }
        seen.extend(ids);
    }
    shutdown.cancel();
    tailing.await.unwrap().unwrap();
    assert_eq!(seen, (1..=20).collect());
    db.drop_db().await;
}
