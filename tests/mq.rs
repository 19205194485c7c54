//! The MQ strategy against real MariaDB, Redis and RabbitMQ: writes in `direct` and
//! `outbox` mode reach Redis as `SELECT` encodes them; a crash between commit and publish
//! loses the change in `direct` mode and not in `outbox` mode; redelivered, duplicated
//! and out-of-order events leave the newest version; malformed events are dead-lettered;
//! cutting the broker connections mid-stream (through a TCP proxy the test controls)
//! loses nothing; an outbox event whose transaction commits after a larger id was relayed
//! is still published.
//!
//! Run `scripts/services.sh up` first. Each test uses its own database, key prefix,
//! exchange and queues.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cachesync::cmd::connect::connect;
use cachesync::config::{Config, RawConfig};
use cachesync::model::change::Op;
use cachesync::model::change::RowWrite;
use cachesync::model::event::ChangeEvent;
use cachesync::model::table::SyncedTable;
use cachesync::strategy::mq::broker::Publisher;
use cachesync::strategy::{Mq, SyncStrategy};
use common::TestDb;
use common::converge::{cached, expected_from_mysql, wait_converged};
use mysql_async::Value;
use mysql_async::prelude::Queryable;
use redis::AsyncCommands;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Config for table `items` of `db`, publish mode `publish`, broker at `amqp_url`.
fn mq_config(db: &str, prefix: &str, publish: &str, amqp_url: &str) -> Config {
    let tree = serde_json::json!({
        "strategy": "mq",
        "mysql": { "url": common::mysql_url() },
        "redis": { "url": common::redis_url(), "tombstone_ttl": 60 },
        "amqp": {
            "url": amqp_url,
            "exchange": format!("{prefix}.x"),
            "queue": format!("{prefix}.q"),
            "dead_letter_queue": format!("{prefix}.dead"),
            "prefetch": 64,
            "publish": publish,
            "outbox_table": format!("{db}.outbox"),
        },
        "tables": [{ "name": format!("{db}.items"), "key": format!("{prefix}:t:{{id}}") }],
    });
    RawConfig::from_tree(tree).unwrap().validate().unwrap()
}

async fn items_db(name: &str) -> TestDb {
    let mut db = TestDb::create(name).await;
    db.exec("CREATE TABLE items (id INT PRIMARY KEY, label VARCHAR(64) NOT NULL, price DECIMAL(8,2) NOT NULL, blob_col VARBINARY(8) NULL)")
        .await;
    db
}

struct Running {
    strategy: Arc<Mq>,
    table: Arc<SyncedTable>,
    shutdown: CancellationToken,
    task: JoinHandle<cachesync::Result<()>>,
}

async fn start(config: &Config) -> Running {
    let services = connect(config).await.unwrap();
    let strategy = Arc::new(Mq::new(&services, config.amqp.clone().unwrap()));
    let shutdown = CancellationToken::new();
    let task = {
        let strategy = strategy.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { strategy.run(shutdown).await })
    };
    Running {
        strategy,
        table: services.tables[0].clone(),
        shutdown,
        task,
    }
}

impl Running {
    fn upsert(&self, id: i64, label: &str) -> RowWrite {
        RowWrite {
            table: self.table.clone(),
            op: Op::Upsert,
            values: vec![
                ("id".to_owned(), Value::Int(id)),
                ("label".to_owned(), label.into()),
                ("price".to_owned(), Value::Bytes(b"9.5".to_vec())),
                ("blob_col".to_owned(), Value::Bytes(vec![0, 0xff, 7])),
            ],
        }
    }

    fn delete(&self, id: i64) -> RowWrite {
        RowWrite {
            table: self.table.clone(),
            op: Op::Delete,
            values: vec![("id".to_owned(), Value::Int(id))],
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the strategy stops")
            .unwrap()
            .unwrap();
    }
}

/// Waits up to 30 s for `key` to exist in Redis; fails the test with `what` otherwise.
async fn wait_for_key(redis: &mut redis::aio::MultiplexedConnection, key: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !redis.exists::<_, bool>(key).await.unwrap() {
        assert!(Instant::now() < deadline, "{what}: {key} did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn cleanup(prefix: &str, db: TestDb) {
    common::clear_redis_prefix(prefix).await;
    db.drop_db().await;
    // Queues and exchanges are per test; delete them so the broker does not fill up.
    common::delete_amqp_topology(prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_outbox_writes_reach_redis_as_select_encodes_them() {
    for publish in ["direct", "outbox"] {
        let mut db = items_db("mq_writes").await;
        let prefix = common::unique("mqw");
        let config = mq_config(&db.name, &prefix, publish, &common::amqp_url());
        let running = start(&config).await;
        for id in 1..=20 {
            running
                .strategy
                .write(running.upsert(id, &format!("{publish} 🦀 {id}")))
                .await
                .unwrap();
        }
        running
            .strategy
            .write(running.upsert(3, "updated"))
            .await
            .unwrap();
        running.strategy.write(running.delete(4)).await.unwrap();
        wait_converged(&mut db, &running.table, &prefix, publish).await;
        let got = cached(&prefix).await;
        assert_eq!(got.len(), 19, "{publish}: 20 rows, one deleted");
        if publish == "outbox" {
            let left: Option<u64> = db
                .conn
                .query_first("SELECT COUNT(*) FROM outbox")
                .await
                .unwrap();
            assert_eq!(
                left,
                Some(0),
                "the relay empties the outbox after the confirms"
            );
        }
        running.stop().await;
        cleanup(&prefix, db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_commit_and_publish_loses_the_change_only_in_direct_mode() {
    // direct: the row commits, the process "dies" before publishing.
    let mut db = items_db("mq_crash_direct").await;
    let prefix = common::unique("mqcd");
    let config = mq_config(&db.name, &prefix, "direct", &common::amqp_url());
    let running = start(&config).await;
    running
        .strategy
        .commit_direct(&running.upsert(1, "lost"))
        .await
        .unwrap();
    // A later write goes through; the queue is ordered, so once it is in Redis the
    // consumer has seen everything published before it.
    running
        .strategy
        .write(running.upsert(2, "marker"))
        .await
        .unwrap();
    let mut redis = common::redis_conn().await;
    wait_for_key(
        &mut redis,
        &format!("{prefix}:t:2"),
        "the marker did not arrive",
    )
    .await;
    assert!(
        !redis
            .exists::<_, bool>(format!("{prefix}:t:1"))
            .await
            .unwrap(),
        "direct mode cannot recover an event that was never published"
    );
    let (expected, got) = (
        expected_from_mysql(&mut db, &running.table).await,
        cached(&prefix).await,
    );
    assert_eq!(expected.len(), 2);
    assert_ne!(expected, got, "MySQL has the row, Redis never will");
    running.stop().await;
    cleanup(&prefix, db).await;

    // outbox: the row and its event commit together; the process "dies" before the relay
    // publishes. After a restart the relay publishes it.
    let mut db = items_db("mq_crash_outbox").await;
    let prefix = common::unique("mqco");
    let config = mq_config(&db.name, &prefix, "outbox", &common::amqp_url());
    {
        let services = connect(&config).await.unwrap();
        let crashed = Mq::new(&services, config.amqp.clone().unwrap());
        let write = RowWrite {
            table: services.tables[0].clone(),
            op: Op::Upsert,
            values: vec![
                ("id".to_owned(), Value::Int(1)),
                ("label".to_owned(), "kept".into()),
                ("price".to_owned(), Value::Bytes(b"1".to_vec())),
            ],
        };
        crashed.commit_with_outbox(&write).await.unwrap();
        // Nothing runs the relay: the process is gone.
    }
    let running = start(&config).await;
    wait_converged(&mut db, &running.table, &prefix, "outbox after restart").await;
    running.stop().await;
    cleanup(&prefix, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_duplicated_and_reordered_events_leave_the_newest_and_bad_ones_are_dead_lettered()
 {
    let mut db = items_db("mq_redeliver").await;
    let prefix = common::unique("mqr");
    let config = mq_config(&db.name, &prefix, "outbox", &common::amqp_url());
    let running = start(&config).await;
    let amqp = config.amqp.clone().unwrap();
    let publisher = Publisher::new(amqp.clone());
    let table = running.table.clone();
    let event = |version: u64, label: &str| {
        ChangeEvent {
            schema: "cachesync.change.v1".to_owned(),
            table: table.name(),
            op: cachesync::model::event::EventOp::Upsert,
            row: serde_json::json!({ "id": 7, "label": label, "price": "1.00", "blob_col": null })
                .as_object()
                .unwrap()
                .clone()
                .into(),
            version: Some(version),
            committed_at_us: None,
        }
        .to_bytes()
    };
    // Newest first, then older ones and duplicates, as redeliveries interleave; plus
    // messages nothing can apply.
    let payloads = vec![
        event(30, "v30"),
        event(10, "v10"),
        event(30, "v30"),
        b"{ not json".to_vec(),
        event(20, "v20"),
        br#"{"schema":"cachesync.change.v1","table":"nope.nope","op":"upsert","row":{}}"#.to_vec(),
        event(30, "v30"),
    ];
    publisher.publish_all(&payloads).await.unwrap();
    // A marker after them: once it is applied, all of the above were handled.
    let marker = ChangeEvent {
        row: serde_json::json!({ "id": 8, "label": "marker", "price": "1.00", "blob_col": null })
            .as_object()
            .unwrap()
            .clone()
            .into(),
        ..serde_json::from_slice(&event(1, "x")).unwrap()
    };
    publisher.publish_all(&[marker.to_bytes()]).await.unwrap();
    let mut redis = common::redis_conn().await;
    wait_for_key(
        &mut redis,
        &format!("{prefix}:t:8"),
        "the marker did not arrive",
    )
    .await;
    let doc: String = redis.get(format!("{prefix}:t:7")).await.unwrap();
    assert!(
        doc.starts_with(r#"{"_cachesync_v":30,"#) && doc.contains(r#""label":"v30""#),
        "{doc}"
    );

    // The two bad messages are in the dead-letter queue, not lost.
    let conn = lapin::Connection::connect(&amqp.url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let dead = channel
        .queue_declare(
            amqp.dead_letter_queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(dead.message_count(), 2);
    conn.close(200, "done".into()).await.ok();
    let _ = &mut db;
    running.stop().await;
    cleanup(&prefix, db).await;
}

/// A TCP proxy in front of RabbitMQ whose connections the test can cut.
struct Proxy {
    port: u16,
    cut: tokio::sync::watch::Sender<u64>,
    /// Connections accepted so far: reconnects show up here.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let cuts = cut.clone();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {} // dropping both sockets cuts the connection
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            accepted,
        }
    }

    fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_broker_connections_mid_stream_loses_nothing() {
    let mut db = items_db("mq_cut").await;
    let prefix = common::unique("mqx");
    let proxy = Proxy::start(5672).await;
    let url = common::amqp_url().replace("127.0.0.1:5672", &format!("127.0.0.1:{}", proxy.port));
    assert_ne!(
        url,
        common::amqp_url(),
        "the test broker must be 127.0.0.1:5672 to proxy it"
    );
    let config = mq_config(&db.name, &prefix, "outbox", &url);
    let running = start(&config).await;
    for round in 0..4 {
        for id in 0..50 {
            running
                .strategy
                .write(running.upsert(id, &format!("round {round}")))
                .await
                .unwrap();
        }
        // Consumer and publisher connections both drop; both reconnect with backoff,
        // unacknowledged messages come back, unconfirmed outbox rows are sent again.
        proxy.cut_all();
    }
    wait_converged(&mut db, &running.table, &prefix, "after four cuts").await;
    let got = cached(&prefix).await;
    assert!(
        got.values().all(|doc| doc.contains("round 3")),
        "the last round won everywhere"
    );
    let connections = proxy.accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        connections >= 4,
        "consumer and publisher reconnected after the cuts ({connections} connections)"
    );
    running.stop().await;
    cleanup(&prefix, db).await;
}

/// Outbox ids are taken at insert, not at commit: a transaction can hold a smaller id
/// while a larger one commits and is relayed. The relay must delete only what it
/// published; the earlier `DELETE … WHERE id <= last` waited on the open transaction's
/// row lock and then deleted its event unpublished (`cachesync bench` found the loss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_event_committed_after_a_larger_id_was_relayed_is_still_published() {
    let mut db = items_db("mq_outbox_late").await;
    let prefix = common::unique("mqol");
    let config = mq_config(&db.name, &prefix, "outbox", &common::amqp_url());
    let outbox_table = config.amqp.clone().unwrap().outbox_table;
    let running = start(&config).await;
    // The strategy creates the outbox table on its first write: make one.
    running
        .strategy
        .write(running.upsert(3, "first"))
        .await
        .unwrap();

    // Writer A takes the next outbox id and keeps its transaction open.
    let mut conn = common::mysql_conn().await;
    let mut late = conn
        .start_transaction(mysql_async::TxOpts::default())
        .await
        .unwrap();
    late.exec_drop(
        format!(
            "INSERT INTO `{}`.items (id, label, price) VALUES (1, 'late', 1.00)",
            db.name
        ),
        (),
    )
    .await
    .unwrap();
    let event = ChangeEvent {
        schema: "cachesync.change.v1".to_owned(),
        table: running.table.name(),
        op: cachesync::model::event::EventOp::Upsert,
        row: serde_json::json!({ "id": 1, "label": "late", "price": "1.00", "blob_col": null })
            .as_object()
            .unwrap()
            .clone()
            .into(),
        version: None,
        committed_at_us: None,
    };
    let late_id = cachesync::strategy::mq::outbox::insert(&mut late, &outbox_table, &event)
        .await
        .unwrap();

    // Writer B takes a larger id, commits, and the relay publishes it.
    running
        .strategy
        .write(running.upsert(2, "early"))
        .await
        .unwrap();
    let mut redis = common::redis_conn().await;
    wait_for_key(
        &mut redis,
        &format!("{prefix}:t:2"),
        "writer B's change did not arrive",
    )
    .await;
    // The relay is now deleting what it published (the old statement blocked here on A's
    // lock). Then A commits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    late.commit().await.unwrap();

    wait_converged(&mut db, &running.table, &prefix, "the late outbox event").await;
    let left: Option<u64> = conn
        .exec_first(
            format!(
                "SELECT COUNT(*) FROM `{}`.`{}` WHERE id = ?",
                outbox_table.0, outbox_table.1
            ),
            (late_id,),
        )
        .await
        .unwrap();
    assert_eq!(
        left,
        Some(0),
        "the relay deletes the late event once published"
    );
    drop(conn);
    running.stop().await;
    cleanup(&prefix, db).await;
}
