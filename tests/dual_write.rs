//! The dual-write strategy through the `SyncStrategy` trait, against real MariaDB and
//! Redis: a write lands in MySQL, and Redis then holds exactly what a `SELECT` of the
//! committed row encodes to (defaults and coercions included); deletes remove the key;
//! bad writes are refused before touching either store. Its weaknesses, shown: Redis
//! failing after the commit (counted, repaired by retry when Redis returns, a full repair
//! queue fails the write loudly) against a private `redis-server` the test kills and
//! restarts, and concurrent writers reaching Redis in reverse order (stopped by the
//! version guard, not without it).
//!
//! Run `scripts/services.sh up` first. Each test uses its own database and key prefix;
//! the Redis-failure tests run their own `redis-server` on a free port.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cachesync::model::cell::Encoded;
use cachesync::model::change::{Change, Op, RowWrite};
use cachesync::model::table::SyncedTable;
use cachesync::redis::Applier;
use cachesync::strategy::dual_write::DualWriteOptions;
use cachesync::strategy::{DualWrite, RedisOutcome, StrategyKind, SyncStrategy, WriteReceipt};
use metrics_exporter_prometheus::PrometheusHandle;
use mysql_async::Value;
use mysql_async::prelude::Queryable;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

struct Fixture {
    db: common::TestDb,
    prefix: String,
    redis_url: String,
    table: Arc<SyncedTable>,
    pool: mysql_async::Pool,
    applier: Applier,
    strategy: DualWrite,
}

/// The usual fixture: the shared test Redis, a `version_column`, default options.
async fn fixture() -> Fixture {
    fixture_with(&common::redis_url(), true, DualWriteOptions::default()).await
}

async fn fixture_with(redis_url: &str, versioned: bool, options: DualWriteOptions) -> Fixture {
    let mut db = common::TestDb::create("dualwrite").await;
    db.exec(
        "CREATE TABLE users (
            id BIGINT UNSIGNED PRIMARY KEY,
            email VARCHAR(255) NOT NULL,
            balance DECIMAL(12,4) NOT NULL DEFAULT 0,
            created_at DATETIME(6) NOT NULL DEFAULT '2020-01-01 00:00:00.000001',
            version BIGINT UNSIGNED NOT NULL DEFAULT 1
        )",
    )
    .await;
    let prefix = common::unique("dw");
    let table = users_table(&mut db, &prefix, versioned).await;
    let config = common::config_with_table(
        "dual-write",
        serde_json::json!({
            "name": format!("{}.users", db.name),
            "key": format!("{prefix}:user:{{id}}"),
        }),
    );
    let pool = cachesync::mysql::pool(&config.mysql_url).unwrap();
    let applier = Applier::connect(
        redis_url,
        config.tombstone_ttl,
        StrategyKind::DualWrite.name(),
    )
    .await
    .unwrap();
    Fixture {
        db,
        prefix,
        redis_url: redis_url.to_owned(),
        table,
        strategy: DualWrite::with_options(pool.clone(), applier.clone(), options),
        pool,
        applier,
    }
}

/// The plan of `users` keyed `<prefix>:user:{id}`, with or without `version_column`.
async fn users_table(db: &mut common::TestDb, prefix: &str, versioned: bool) -> Arc<SyncedTable> {
    let mut entry = serde_json::json!({
        "name": format!("{}.users", db.name),
        "key": format!("{prefix}:user:{{id}}"),
    });
    if versioned {
        entry["version_column"] = "version".into();
    }
    let config = common::config_with_table("dual-write", entry);
    Arc::new(common::synced_table(db, &config).await)
}

impl Fixture {
    fn upsert(&self, values: &[(&str, Value)]) -> RowWrite {
        RowWrite {
            table: self.table.clone(),
            op: Op::Upsert,
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// What Redis should hold for row `id`: the SELECT of the committed row, encoded.
    async fn expected(&mut self, id: u64) -> Option<Vec<u8>> {
        let row: Option<mysql_async::Row> = self
            .db
            .conn
            .exec_first(format!("{} WHERE id = ?", self.table.sql.select_all), (id,))
            .await
            .unwrap();
        let cells = self.table.decode_sql_row(&row?).unwrap();
        Some(encode(&self.table, &cells))
    }

    async fn cached(&self, id: u64) -> Option<Vec<u8>> {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        redis
            .get(format!("{}:user:{id}", self.prefix))
            .await
            .unwrap()
    }

    /// `cachesync_apply_errors_total` of this fixture's table, as Prometheus would scrape it.
    fn apply_errors(&self) -> u64 {
        let table = format!("table=\"{}\"", self.table.name());
        metrics_handle()
            .render()
            .lines()
            .find(|l| {
                l.starts_with("cachesync_apply_errors_total{")
                    && l.contains("strategy=\"dual-write\"")
                    && l.contains(&table)
            })
            .map_or(0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
    }

    async fn finish(self) {
        if self.redis_url == common::redis_url() {
            common::clear_redis_prefix(&self.prefix).await;
        }
        drop(self.strategy);
        self.pool.disconnect().await.ok();
        self.db.drop_db().await;
    }
}

/// The row encoded as the applier writes it (with its version, if the table has one).
fn encode(table: &SyncedTable, cells: &[cachesync::model::cell::Cell]) -> Vec<u8> {
    match table.encoder.encode(cells, table.version_of(cells)) {
        Encoded::Json(bytes) => bytes,
        Encoded::Hash(_) => unreachable!("json table"),
    }
}

/// The process-wide Prometheus recorder: no HTTP listener, rendered on demand. Series are
/// per table, and every test has its own table, so parallel tests do not mix.
fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("install the metrics recorder")
    })
}

/// A `redis-server` of this test alone, on its own port, without persistence; killed on
/// drop. (Never the shared test Redis: other tests use it.)
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    async fn start() -> PrivateRedis {
        let mut redis = PrivateRedis {
            port: common::free_port(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port) and waits until it answers PING.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/services.sh up installs it)");
        self.child = Some(child);
        let client = redis::Client::open(self.url().as_str()).unwrap();
        let began = Instant::now();
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "private redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: Redis is gone without a goodbye, like a crashed server.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 20 ms until it holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let began = Instant::now();
    while !check().await {
        assert!(began.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the applier's own connection reaches Redis again (it reconnects on use).
async fn until_applier_reconnects(applier: &Applier) {
    let began = Instant::now();
    let mut conn = applier.connection();
    while redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .is_err()
    {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the applier did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the write did to Redis, which must be a direct write.
fn applied(receipt: &WriteReceipt) -> cachesync::model::change::Applied {
    match receipt.redis {
        RedisOutcome::Applied(applied) => applied,
        other => panic!("expected a direct Redis write, got {other:?}"),
    }
}

#[tokio::test]
async fn a_write_lands_in_mysql_and_redis_as_select_encodes_it() {
    let mut f = fixture().await;
    let receipt = f
        .strategy
        .write(f.upsert(&[("id", Value::UInt(1)), ("email", "ada@example.com".into())]))
        .await
        .unwrap();
    assert_eq!(receipt.version, Some(1), "the default version is read back");
    assert_eq!(applied(&receipt).written, 1);
    let expected = f.expected(1).await.unwrap();
    assert_eq!(
        String::from_utf8(expected.clone()).unwrap(),
        r#"{"_cachesync_v":1,"id":1,"email":"ada@example.com","balance":"0.0000","created_at":"2020-01-01 00:00:00.000001","version":1}"#,
        "defaults and DECIMAL scale come from MySQL, not from the request"
    );
    assert_eq!(f.cached(1).await, Some(expected));

    // An update with a newer version replaces it. (An upsert is an INSERT ... ON
    // DUPLICATE KEY UPDATE, so it names every NOT NULL column without a default.)
    f.strategy
        .write(f.upsert(&[
            ("id", Value::UInt(1)),
            ("email", "ada@example.com".into()),
            ("balance", "12.5".into()),
            ("version", Value::UInt(2)),
        ]))
        .await
        .unwrap();
    let expected = f.expected(1).await.unwrap();
    assert!(String::from_utf8_lossy(&expected).contains(r#""balance":"12.5000""#));
    assert_eq!(f.cached(1).await, Some(expected));
    f.finish().await;
}

#[tokio::test]
async fn a_delete_removes_the_row_and_its_key() {
    let mut f = fixture().await;
    f.strategy
        .write(f.upsert(&[("id", Value::UInt(5)), ("email", "x@y".into())]))
        .await
        .unwrap();
    assert!(f.cached(5).await.is_some());
    let delete = RowWrite {
        table: f.table.clone(),
        op: Op::Delete,
        values: vec![("id".to_owned(), Value::UInt(5))],
    };
    f.strategy.write(delete).await.unwrap();
    assert_eq!(f.expected(5).await, None, "gone from MySQL");
    assert_eq!(f.cached(5).await, None, "gone from Redis");
    f.finish().await;
}

#[tokio::test]
async fn injection_shaped_values_are_stored_verbatim() {
    let mut f = fixture().await;
    let nasty = "x'); DROP TABLE users; -- \\ \" `";
    f.strategy
        .write(f.upsert(&[("id", Value::UInt(9)), ("email", nasty.into())]))
        .await
        .unwrap();
    let email: Option<String> =
        f.db.conn
            .exec_first("SELECT email FROM users WHERE id = 9", ())
            .await
            .unwrap();
    assert_eq!(email.as_deref(), Some(nasty));
    let cached: serde_json::Value = serde_json::from_slice(&f.cached(9).await.unwrap()).unwrap();
    assert_eq!(cached["email"], nasty);
    f.finish().await;
}

#[tokio::test]
async fn bad_writes_are_refused_before_touching_either_store() {
    let mut f = fixture().await;
    let unknown_column = f
        .strategy
        .write(f.upsert(&[("id", Value::UInt(3)), ("emial", "a@b".into())]))
        .await
        .unwrap_err();
    assert!(
        unknown_column
            .to_string()
            .contains("emial is not a column of"),
        "{unknown_column}"
    );
    let no_key = f
        .strategy
        .write(f.upsert(&[("email", "a@b".into())]))
        .await
        .unwrap_err();
    assert!(
        no_key.to_string().contains("primary-key column id"),
        "{no_key}"
    );
    assert_eq!(f.expected(3).await, None);
    assert_eq!(f.cached(3).await, None);
    f.finish().await;
}

#[tokio::test]
async fn redis_down_after_commit_is_counted_and_repaired_when_redis_returns() {
    let mut redis = PrivateRedis::start().await;
    let mut f = fixture_with(&redis.url(), true, DualWriteOptions::default()).await;
    let receipt = f
        .strategy
        .write(f.upsert(&[("id", Value::UInt(1)), ("email", "ada@example.com".into())]))
        .await
        .unwrap();
    assert_eq!(applied(&receipt).written, 1);
    assert_eq!(f.cached(1).await, f.expected(1).await);
    assert_eq!(f.apply_errors(), 0);

    redis.kill();
    let began = Instant::now();
    let receipt = f
        .strategy
        .write(f.upsert(&[
            ("id", Value::UInt(1)),
            ("email", "ada@lovelace.org".into()),
            ("version", Value::UInt(2)),
        ]))
        .await
        .expect("the commit succeeded, so the write does: Redis is pending, not failed");
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a dead Redis costs the write its retry budget, not more: {took:?}"
    );
    assert_eq!(receipt.version, Some(2));
    assert_eq!(
        receipt.redis,
        RedisOutcome::Pending,
        "nothing reached Redis during the write"
    );
    let committed = f.expected(1).await.unwrap();
    assert!(String::from_utf8_lossy(&committed).contains("ada@lovelace.org"));
    let stats = f.strategy.stats();
    assert_eq!((stats.queued, stats.pending), (1, 1), "{stats:?}");
    assert!(stats.failed_attempts >= 1, "{stats:?}");
    assert!(
        f.apply_errors() >= 1,
        "the failure is in cachesync_apply_errors_total"
    );

    // While Redis stays down the repair keeps failing, counted every time.
    let before = f.strategy.stats().failed_attempts;
    eventually(
        Duration::from_secs(5),
        "repair attempts fail and are counted",
        || {
            let now = f.strategy.stats().failed_attempts;
            async move { now > before }
        },
    )
    .await;
    assert_eq!(f.strategy.pending_repairs(), 1);

    // Redis comes back (empty: no persistence): the repair writes the committed row.
    redis.restart().await;
    eventually(
        Duration::from_secs(15),
        "the key holds the committed row",
        || {
            let cached = f.cached(1);
            let committed = committed.clone();
            async move { cached.await == Some(committed) }
        },
    )
    .await;
    let stats = f.strategy.stats();
    assert_eq!(
        (stats.repaired, stats.pending, stats.rejected),
        (1, 0, 0),
        "{stats:?}"
    );
    assert_eq!(
        f.apply_errors(),
        stats.failed_attempts,
        "each failed attempt is counted once in cachesync_apply_errors_total"
    );
    f.finish().await;
}

#[tokio::test]
async fn a_late_repair_rereads_the_row_and_does_not_regress_an_unversioned_key() {
    let mut redis = PrivateRedis::start().await;
    let options = DualWriteOptions {
        // The first repair waits 3 s: long enough for a newer write to land first.
        repair_backoff_min: Duration::from_secs(3),
        inline_budget: Duration::from_secs(2),
        ..DualWriteOptions::default()
    };
    let mut f = fixture_with(&redis.url(), false, options).await;
    let email = |e: &str| f.upsert(&[("id", Value::UInt(1)), ("email", e.into())]);
    f.strategy.write(email("a@x")).await.unwrap();

    redis.kill();
    let pending = f.strategy.write(email("b@x")).await.unwrap();
    assert_eq!(pending.redis, RedisOutcome::Pending);
    assert_eq!(f.strategy.pending_repairs(), 1);

    redis.restart().await;
    until_applier_reconnects(&f.applier).await;
    let newer = f.strategy.write(email("c@x")).await.unwrap();
    assert_eq!(applied(&newer).written, 1, "c lands directly");
    let committed = f.expected(1).await.unwrap();
    assert!(String::from_utf8_lossy(&committed).contains("c@x"));
    assert_eq!(f.cached(1).await.as_ref(), Some(&committed));

    // Then the repair queued for b runs. Replaying b's image would regress the key to b
    // (no version to stop it); the repair re-reads the row and writes c again.
    eventually(Duration::from_secs(15), "the repair ran", || {
        let repaired = f.strategy.stats().repaired;
        async move { repaired == 1 }
    })
    .await;
    assert_eq!(f.cached(1).await, Some(committed));
    assert_eq!(f.strategy.pending_repairs(), 0);
    f.finish().await;
}

#[tokio::test]
async fn a_full_repair_queue_fails_the_write_and_says_the_key_is_stale() {
    let mut redis = PrivateRedis::start().await;
    let options = DualWriteOptions {
        repair_capacity: 1,
        repair_backoff_min: Duration::from_secs(60),
        ..DualWriteOptions::default()
    };
    let mut f = fixture_with(&redis.url(), true, options).await;
    redis.kill();
    let row = |id: u64| f.upsert(&[("id", Value::UInt(id)), ("email", "q@x".into())]);
    assert_eq!(
        f.strategy.write(row(1)).await.unwrap().redis,
        RedisOutcome::Pending
    );
    // Another write of the queued key shares its entry.
    assert_eq!(
        f.strategy.write(row(1)).await.unwrap().redis,
        RedisOutcome::Pending
    );
    assert_eq!(f.strategy.pending_repairs(), 1);

    let err = f.strategy.write(row(2)).await.unwrap_err().to_string();
    let key = format!("{}:user:2", f.prefix);
    for part in [
        "committed in MySQL",
        &key,
        "is stale",
        "repair queue is full",
    ] {
        assert!(err.contains(part), "{part:?} in: {err}");
    }
    assert!(f.expected(2).await.is_some(), "the row itself is committed");
    let stats = f.strategy.stats();
    assert_eq!(
        (stats.queued, stats.rejected, stats.pending),
        (2, 1, 1),
        "{stats:?}"
    );
    f.finish().await;
}

#[tokio::test]
async fn shutdown_drains_the_repair_queue_once_redis_is_back() {
    let mut redis = PrivateRedis::start().await;
    let options = DualWriteOptions {
        // Without the drain the first repair would wait a minute.
        repair_backoff_min: Duration::from_secs(60),
        ..DualWriteOptions::default()
    };
    let mut f = fixture_with(&redis.url(), true, options).await;
    redis.kill();
    let write = f.upsert(&[("id", Value::UInt(7)), ("email", "drain@x".into())]);
    assert_eq!(
        f.strategy.write(write).await.unwrap().redis,
        RedisOutcome::Pending
    );

    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let began = Instant::now();
    let (drained, ()) = tokio::join!(f.strategy.run(shutdown), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis.restart().await;
    });
    drained.unwrap();
    let took = began.elapsed();
    assert!(took < Duration::from_secs(10), "drained in {took:?}");
    assert_eq!(f.strategy.pending_repairs(), 0);
    assert_eq!(f.cached(7).await, f.expected(7).await);
    f.finish().await;
}

/// Two writers of one row commit A then B, but reach Redis B then A (the losing
/// interleaving). With a `version_column` the guard drops A; without one, A wins and the
/// key is stale.
#[tokio::test]
async fn reverse_order_redis_writes_are_stopped_by_the_version_guard_only() {
    let mut f = fixture().await;
    let unversioned = users_table(&mut f.db, &format!("{}:nov", f.prefix), false).await;
    let commit = |email: &str, version: u64| {
        let write = f.upsert(&[
            ("id", Value::UInt(1)),
            ("email", email.into()),
            ("version", Value::UInt(version)),
        ]);
        let pool = f.pool.clone();
        async move {
            cachesync::mysql::write::commit(&pool, &write)
                .await
                .unwrap()
                .into_upserted()
                .unwrap()
        }
    };
    let a = commit("a@x", 1).await;
    let b = commit("b@x", 2).await;
    let committed = f.expected(1).await.unwrap();
    assert!(String::from_utf8_lossy(&committed).contains("b@x"));

    let change = |table: &Arc<SyncedTable>, row: &Vec<cachesync::model::cell::Cell>| Change {
        table: table.clone(),
        op: Op::Upsert,
        row: row.clone(),
        version: table.version_of(row),
        committed_at_us: None,
    };
    // Versioned: B, then A's older image is rejected.
    let applied_b = f.applier.apply(&[change(&f.table, &b)]).await.unwrap();
    let applied_a = f.applier.apply(&[change(&f.table, &a)]).await.unwrap();
    assert_eq!((applied_b.written, applied_a.stale), (1, 1));
    assert_eq!(f.cached(1).await, Some(committed));

    // Unversioned: the same order leaves A in Redis while MySQL holds B.
    f.applier.apply(&[change(&unversioned, &b)]).await.unwrap();
    let late_a = f.applier.apply(&[change(&unversioned, &a)]).await.unwrap();
    assert_eq!(late_a.written, 1, "nothing stops the older image");
    let mut redis = common::redis_conn().await;
    let cached: Vec<u8> = redis.get(format!("{}:nov:user:1", f.prefix)).await.unwrap();
    assert_eq!(cached, encode(&unversioned, &a), "Redis holds A");
    assert_ne!(
        cached,
        encode(&unversioned, &b),
        "MySQL holds B: the key is stale"
    );
    f.finish().await;
}

/// A versioned delete carries a version above the deleted row's, so an image of that row
/// that reaches Redis after the delete — a writer's late Redis write, an online snapshot's
/// chunk read before the delete — cannot bring it back (it did, before: the delete had no
/// version and left no tombstone).
#[tokio::test]
async fn an_image_of_a_deleted_row_arriving_after_the_delete_does_not_resurrect_it() {
    let f = fixture().await;
    let written = f
        .strategy
        .write(f.upsert(&[
            ("id", Value::UInt(3)),
            ("email", "c@x".into()),
            ("version", Value::UInt(5)),
        ]))
        .await
        .unwrap();
    let image = written.row.clone().expect("an upsert's committed row");
    let delete = RowWrite {
        table: f.table.clone(),
        op: Op::Delete,
        values: vec![("id".to_owned(), Value::UInt(3))],
    };
    let receipt = f.strategy.write(delete).await.unwrap();
    assert_eq!(
        receipt.version,
        Some(6),
        "the delete carries a version above the deleted row's"
    );
    assert_eq!(f.cached(3).await, None);

    // The row as it was before the delete, arriving late.
    let late = f
        .applier
        .apply(&[Change {
            table: f.table.clone(),
            op: Op::Upsert,
            row: image,
            version: Some(5),
            committed_at_us: None,
        }])
        .await
        .unwrap();
    assert_eq!((late.written, late.stale), (0, 1));
    assert_eq!(f.cached(3).await, None, "the deleted row came back");
    f.finish().await;
}
