//! The cache-aside read path (`cachesync::read`, `GET` in the API) against real MariaDB
//! and Redis. MySQL queries are counted on MySQL's side: each test reads as its own MySQL
//! user and takes `information_schema.USER_STATISTICS` before and after (MariaDB's
//! `userstat`, switched on by the test and by `scripts/services.sh`): `SELECT_COMMANDS`
//! less the `SELECT`s the driver runs on each new connection (`TOTAL_CONNECTIONS` times
//! a per-connection count measured when the user is created), so the count is the
//! statements the read path ran, whatever the pool did:
//!
//! - with single-flight and the Redis mutex on, many concurrent reads of an expired hot
//!   key — from two read-path instances — cost exactly one MySQL query; with both off,
//!   every read queries (held at a barrier so the count is exact, not timing-dependent);
//! - with negative caching, repeated reads of missing keys cost one query per key per
//!   negative TTL, and a synced insert is visible at once; without it every read queries;
//! - with the Bloom filter, keys it rejects never reach MySQL, existing rows are never
//!   rejected, and rows upserted by the sync stream are added;
//! - a fill held between its MySQL read and its Redis write while a newer synced upsert
//!   (versioned, or unversioned) or a delete lands never leaves the older value in Redis
//!   (and, held with nothing landing, it does fill);
//! - an early refresh (`refresh_ahead_ms`) re-reads a key about to expire in the
//!   background (one query), keeps it alive past its TTL and keeps its version, so a late
//!   older change is still refused (json and hash);
//! - L1 answers within its TTL without Redis or MySQL, then the read goes through again;
//! - `cachesync bench --scenario read-storm`, small, twice in a row: the table on stdout
//!   and in `--out`, the report in `--json`, and every guard's MySQL count is what it
//!   promises;
//! - `GET /v1/tables/{db.table}/rows?id=…` answers the `json` encoding of the row (also
//!   for a `hash` table, from Redis and from MySQL), 404 for a missing row or unknown
//!   table, 400 for a bad or incomplete key.
//!
//! Run `scripts/services.sh up` first. Each test uses its own database, MySQL user and
//! key prefix.

mod common;

use std::sync::Arc;

use cachesync::api::{self, ApiState, Readiness};
use cachesync::model::cell::{Cell, Encoded};
use cachesync::model::change::{Change, Op};
use cachesync::model::table::SyncedTable;
use cachesync::read::{Answer, ReadPath};
use cachesync::redis::Applier;
use cachesync::redis::bloom::Bloom;
use cachesync::strategy::{DualWrite, Strategy, StrategyKind};
use mysql_async::prelude::Queryable;
use redis::AsyncCommands;
use serde_json::{Value as Json, json};
use tokio::sync::{Barrier, Notify};
use tokio_util::sync::CancellationToken;

const TABLE_SQL: &str = "CREATE TABLE items (
    id BIGINT UNSIGNED PRIMARY KEY,
    name VARCHAR(64) NOT NULL,
    price DECIMAL(10,2) NOT NULL DEFAULT 0,
    raw VARBINARY(8) NULL,
    version BIGINT UNSIGNED NOT NULL DEFAULT 1
) CHARACTER SET utf8mb4";

/// A MySQL user of its own whose `SELECT`s MariaDB counts.
struct CountedUser {
    name: String,
    pool: mysql_async::Pool,
    url: String,
    /// `SELECT`s the driver runs per server connection it opens (settings it reads).
    per_connection: u64,
}

impl CountedUser {
    async fn create(db: &mut common::TestDb) -> CountedUser {
        let name = common::unique("rp").replace('_', "");
        let name = name[..name.len().min(32)].to_owned();
        db.exec("SET GLOBAL userstat = 1").await;
        db.exec(&format!("CREATE USER '{name}'@'%'")).await;
        db.exec(&format!("GRANT SELECT ON `{}`.* TO '{name}'@'%'", db.name))
            .await;
        let url = common::mysql_url().replacen("root", &name, 1);
        assert!(url.contains(&name), "the test MySQL URL names root: {url}");
        let mut user = CountedUser {
            name,
            pool: cachesync::mysql::pool(&url).unwrap(),
            url,
            per_connection: 0,
        };
        // Calibrate: one connection of a throw-away pool, no statement of ours.
        let probe = cachesync::mysql::pool(&user.url).unwrap();
        drop(probe.get_conn().await.unwrap());
        probe.disconnect().await.unwrap();
        // (mysql_async may open two server connections for one pool connection: TCP,
        // then the server's Unix socket it asked for.)
        let (selects, connections) = user.statistics(db).await;
        assert!(
            connections > 0 && selects % connections == 0,
            "userstat counts {selects} SELECTs over {connections} connections"
        );
        user.per_connection = selects / connections;
        user
    }

    /// `(SELECT_COMMANDS, TOTAL_CONNECTIONS)` MariaDB has counted for this user so far,
    /// once settled: MariaDB adds a statement to `USER_STATISTICS` when it has finished
    /// the command, after the client may already have the answer, so a reading taken
    /// right after a read can miss it. Two readings 20 ms apart must agree.
    async fn statistics(&self, db: &mut common::TestDb) -> (u64, u64) {
        let mut last = self.statistics_now(db).await;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let now = self.statistics_now(db).await;
            if now == last {
                return now;
            }
            last = now;
        }
    }

    async fn statistics_now(&self, db: &mut common::TestDb) -> (u64, u64) {
        db.conn
            .exec_first(
                "SELECT SELECT_COMMANDS, TOTAL_CONNECTIONS FROM information_schema.USER_STATISTICS \
                 WHERE USER = ?",
                (&self.name,),
            )
            .await
            .unwrap()
            .unwrap_or((0, 0))
    }

    /// `SELECT`s this user ran so far, less those the driver ran to open connections.
    async fn selects(&self, db: &mut common::TestDb) -> u64 {
        let (selects, connections) = self.statistics(db).await;
        selects - connections * self.per_connection
    }

    async fn drop_user(self, db: &mut common::TestDb) {
        self.pool.disconnect().await.ok();
        db.exec(&format!("DROP USER IF EXISTS '{}'@'%'", self.name))
            .await;
    }
}

struct Fixture {
    db: common::TestDb,
    prefix: String,
    table: Arc<SyncedTable>,
    applier: Applier,
    user: CountedUser,
}

/// A table `items` with `read` as its `[tables.read]`; `version_column` on unless
/// `versioned` is false.
async fn fixture(read: Json, versioned: bool, format: &str) -> Fixture {
    fixture_with_ttl(read, versioned, format, 600).await
}

/// [`fixture`] with the table's `ttl` in seconds.
async fn fixture_with_ttl(read: Json, versioned: bool, format: &str, ttl: u64) -> Fixture {
    let mut db = common::TestDb::create("read").await;
    db.exec(TABLE_SQL).await;
    let prefix = common::unique("rp");
    let mut entry = json!({
        "name": format!("{}.items", db.name),
        "key": format!("{prefix}:item:{{id}}"),
        "format": format,
        "ttl": ttl,
        "read": read,
    });
    if versioned {
        entry["version_column"] = json!("version");
    }
    let config = common::config_with_table("dual-write", entry);
    let table = Arc::new(common::synced_table(&mut db, &config).await);
    let applier = Applier::connect(
        &config.redis_url,
        config.tombstone_ttl,
        StrategyKind::DualWrite.name(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: start the services with scripts/services.sh up"));
    let user = CountedUser::create(&mut db).await;
    Fixture {
        db,
        prefix,
        table,
        applier,
        user,
    }
}

impl Fixture {
    fn name(&self) -> String {
        format!("{}.items", self.db.name)
    }

    fn key(&self, id: u64) -> String {
        format!("{}:item:{id}", self.prefix)
    }

    /// A read-path instance reading MySQL as the counted user.
    fn reads(&self) -> Arc<ReadPath> {
        ReadPath::new(
            self.user.pool.clone(),
            &self.user.url,
            self.applier.clone(),
            std::slice::from_ref(&self.table),
        )
    }

    /// The row as MySQL has it now, decoded.
    async fn row(&mut self, id: u64) -> Option<Vec<Cell>> {
        let row: Option<mysql_async::Row> = self
            .db
            .conn
            .exec_first(format!("{} WHERE id = ?", self.table.sql.select_all), (id,))
            .await
            .unwrap();
        row.map(|r| self.table.decode_sql_row(&r).unwrap())
    }

    /// What a read of `id` must answer: the `json` encoding of the row, no version.
    async fn expected(&mut self, id: u64) -> Vec<u8> {
        let cells = self.row(id).await.expect("the row exists");
        let names = self.table.encoder.names().to_vec();
        match cachesync::model::cell::RowEncoder::new(cachesync::model::cell::Format::Json, names)
            .encode(&cells, None)
        {
            Encoded::Json(doc) => doc,
            Encoded::Hash(_) => unreachable!(),
        }
    }

    /// Commits an update of `id` in MySQL and applies it to Redis as a strategy would.
    async fn synced_upsert(&mut self, id: u64, name: &str, versioned: bool) {
        self.db
            .exec(&format!(
                "INSERT INTO items (id, name) VALUES ({id}, '{name}') \
                 ON DUPLICATE KEY UPDATE name = VALUES(name), version = version + 1"
            ))
            .await;
        let row = self.row(id).await.unwrap();
        let version = versioned.then(|| self.table.version_of(&row)).flatten();
        self.applier
            .apply(&[Change {
                table: self.table.clone(),
                op: Op::Upsert,
                row,
                version,
                committed_at_us: None,
            }])
            .await
            .unwrap();
    }

    async fn cached(&self, id: u64) -> Option<Json> {
        let mut redis = common::redis_conn().await;
        let doc: Option<Vec<u8>> = redis.get(self.key(id)).await.unwrap();
        doc.map(|d| serde_json::from_slice(&d).unwrap())
    }

    async fn finish(mut self) {
        let name = self.name();
        self.user.drop_user(&mut self.db).await;
        common::clear_redis_prefix(&self.prefix).await;
        let mut redis = common::redis_conn().await;
        let blooms: Vec<String> = redis
            .keys(format!("cachesync:bloom:{{{name}}}*"))
            .await
            .unwrap();
        if !blooms.is_empty() {
            let _: () = redis.del(blooms).await.unwrap();
        }
        self.db.drop_db().await;
    }
}

fn id(id: u64) -> Vec<(String, String)> {
    vec![("id".to_owned(), id.to_string())]
}

fn found(answer: &Answer) -> Json {
    match answer {
        Answer::Found(doc) => serde_json::from_slice(doc).unwrap(),
        Answer::Absent => panic!("expected a row, got none"),
    }
}

/// `n` concurrent reads of `id`, spread over `instances`; every answer must be the row.
async fn storm(instances: &[Arc<ReadPath>], table: &str, id: u64, n: usize) -> Vec<Answer> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let reads = instances[i % instances.len()].clone();
        let table = table.to_owned();
        tasks.push(tokio::spawn(async move {
            reads.get(&table, &self::id(id)).await.unwrap()
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_hot_key_costs_one_mysql_query_with_single_flight_and_the_mutex() {
    let mut f = fixture(
        json!({ "lock_wait_ms": 30_000, "lock_ttl_ms": 30_000 }),
        true,
        "json",
    )
    .await;
    f.db.exec("INSERT INTO items (id, name, price) VALUES (1, 'hot', 9.5)")
        .await;
    // Two sidecar instances: single-flight inside each, the Redis mutex between them.
    let instances = [f.reads(), f.reads()];
    // Warm both pools so connection set-up is not counted.
    for reads in &instances {
        let _ = reads.get(&f.name(), &id(999)).await.unwrap();
    }
    common::clear_redis_prefix(&f.prefix).await;
    let before = f.user.selects(&mut f.db).await;

    let answers = storm(&instances, &f.name(), 1, 400).await;

    let after = f.user.selects(&mut f.db).await;
    assert_eq!(
        after - before,
        1,
        "400 reads of an expired key: one MySQL query"
    );
    let expected: Json = serde_json::from_slice(&f.expected(1).await).unwrap();
    for answer in &answers {
        assert_eq!(found(answer), expected);
    }
    assert_eq!(
        f.cached(1).await.unwrap()["name"],
        "hot",
        "the one query filled Redis"
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_breakdown_guards_off_every_concurrent_miss_queries_mysql() {
    let mut f = fixture(
        json!({ "single_flight": false, "lock": false }),
        true,
        "json",
    )
    .await;
    f.db.exec("INSERT INTO items (id, name) VALUES (1, 'hot')")
        .await;
    let reads = f.reads();
    let _ = reads.get(&f.name(), &id(999)).await.unwrap();
    common::clear_redis_prefix(&f.prefix).await;
    // Every read that reaches MySQL waits here until all have: the count is exact.
    const N: usize = 20;
    let barrier = Arc::new(Barrier::new(N));
    reads.set_fill_hook(Some(Arc::new(move |_key| {
        let barrier = barrier.clone();
        Box::pin(async move {
            barrier.wait().await;
        })
    })));
    let before = f.user.selects(&mut f.db).await;

    let answers = storm(std::slice::from_ref(&reads), &f.name(), 1, N).await;

    let after = f.user.selects(&mut f.db).await;
    assert_eq!(
        after - before,
        N as u64,
        "guards off: each read queried MySQL"
    );
    assert!(answers.iter().all(|a| found(a)["name"] == "hot"));
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_keys_cost_one_query_each_while_remembered_and_an_insert_clears_it() {
    let mut f = fixture(json!({ "negative_ttl_ms": 600_000 }), true, "json").await;
    let reads = f.reads();
    let _ = reads.get(&f.name(), &id(1_000_000)).await.unwrap();
    let before = f.user.selects(&mut f.db).await;
    for round in 0..5 {
        for missing in 1..=20 {
            let answer = reads.get(&f.name(), &id(missing)).await.unwrap();
            assert_eq!(answer, Answer::Absent, "round {round}, id {missing}");
        }
    }
    let after = f.user.selects(&mut f.db).await;
    assert_eq!(
        after - before,
        20,
        "100 reads of 20 missing keys: one query per key"
    );

    // The row appears through the sync stream: the remembered miss goes at once.
    f.synced_upsert(7, "late", true).await;
    let answer = reads.get(&f.name(), &id(7)).await.unwrap();
    assert_eq!(found(&answer)["name"], "late");
    f.finish().await;

    // Without negative caching (and the breakdown guards) every read queries.
    let mut f = fixture(
        json!({ "negative_ttl_ms": 0, "single_flight": false, "lock": false }),
        true,
        "json",
    )
    .await;
    let reads = f.reads();
    let _ = reads.get(&f.name(), &id(1_000_000)).await.unwrap();
    let before = f.user.selects(&mut f.db).await;
    for _ in 0..5 {
        assert_eq!(reads.get(&f.name(), &id(3)).await.unwrap(), Answer::Absent);
    }
    let after = f.user.selects(&mut f.db).await;
    assert_eq!(after - before, 5, "no negative caching: every miss queries");
    f.finish().await;

    // One query per key per negative TTL: once it is over, each key costs one more.
    let mut f = fixture(json!({ "negative_ttl_ms": 1_500 }), true, "json").await;
    let reads = f.reads();
    let _ = reads.get(&f.name(), &id(1_000_000)).await.unwrap();
    let before = f.user.selects(&mut f.db).await;
    for window in 1..=2u64 {
        for _ in 0..3 {
            for missing in 1..=10 {
                assert_eq!(
                    reads.get(&f.name(), &id(missing)).await.unwrap(),
                    Answer::Absent
                );
            }
        }
        let queried = f.user.selects(&mut f.db).await - before;
        assert_eq!(queried, 10 * window, "negative TTL window {window}");
        tokio::time::sleep(std::time::Duration::from_millis(1_600)).await;
    }
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bloom_rejected_keys_never_reach_mysql_and_synced_upserts_are_added() {
    let mut f = fixture(
        json!({ "bloom": true, "bloom_expected_rows": 1000, "negative_ttl_ms": 0 }),
        true,
        "json",
    )
    .await;
    let values: Vec<String> = (1..=100).map(|i| format!("({i}, 'r{i}')")).collect();
    f.db.exec(&format!(
        "INSERT INTO items (id, name) VALUES {}",
        values.join(", ")
    ))
    .await;
    let reads = f.reads();
    let built = reads.build_bloom_filters().await.unwrap();
    assert_eq!(built, vec![(f.name(), 100)]);
    assert_eq!(
        reads.build_bloom_filters().await.unwrap(),
        vec![],
        "built once"
    );
    // Warm the pool on an existing row (never rejected).
    assert_eq!(
        found(&reads.get(&f.name(), &id(5)).await.unwrap())["name"],
        "r5"
    );

    // Which of the missing ids the filter lets through (its false positives), read
    // straight from Redis.
    let bloom = Bloom::of(&f.table).unwrap();
    let mut redis = common::redis_conn().await;
    let mut let_through = 0;
    for missing in 1001..=1200 {
        let mut maybe = true;
        for bit in bloom.positions(&f.key(missing)) {
            let set: i64 = redis.getbit(&bloom.key, bit as usize).await.unwrap();
            maybe &= set == 1;
        }
        let_through += u64::from(maybe);
    }
    assert!(let_through < 20, "{let_through} false positives of 200");

    let before = f.user.selects(&mut f.db).await;
    for missing in 1001..=1200 {
        assert_eq!(
            reads.get(&f.name(), &id(missing)).await.unwrap(),
            Answer::Absent
        );
    }
    let after = f.user.selects(&mut f.db).await;
    assert_eq!(
        after - before,
        let_through,
        "only the filter's false positives reached MySQL"
    );

    // Every existing row is let through; a row upserted by the sync stream is added.
    for existing in [1, 50, 100] {
        assert!(matches!(
            reads.get(&f.name(), &id(existing)).await.unwrap(),
            Answer::Found(_)
        ));
    }
    f.synced_upsert(5000, "new", true).await;
    common::clear_redis_prefix(&f.prefix).await; // expired since
    assert_eq!(
        found(&reads.get(&f.name(), &id(5000)).await.unwrap())["name"],
        "new"
    );
    f.finish().await;
}

/// `(_cachesync_v, name, price)` of the row key, whatever the table's format.
async fn cached_fields(f: &Fixture, id: u64) -> Option<(Option<u64>, String, String)> {
    let mut redis = common::redis_conn().await;
    if f.table.config.format == cachesync::model::cell::Format::Json {
        let doc = f.cached(id).await?;
        return Some((
            doc["_cachesync_v"].as_u64(),
            doc["name"].as_str().unwrap().to_owned(),
            doc["price"].as_str().unwrap().to_owned(),
        ));
    }
    let fields: std::collections::HashMap<String, String> = redis.hgetall(f.key(id)).await.unwrap();
    (!fields.is_empty()).then(|| {
        (
            fields.get("_cachesync_v").map(|v| v.parse().unwrap()),
            fields["name"].clone(),
            fields["price"].clone(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_early_refresh_keeps_a_hot_key_alive_and_keeps_its_version() {
    for format in ["json", "hash"] {
        let mut f = fixture_with_ttl(json!({ "refresh_ahead_ms": 3_000 }), true, format, 4).await;
        f.db.exec("INSERT INTO items (id, name) VALUES (1, 'a')")
            .await;
        let synced = std::time::Instant::now();
        f.synced_upsert(1, "b", true).await; // version 2, TTL 4 s
        // Committed in MySQL, its change still on the way to Redis.
        f.db.exec("UPDATE items SET price = 7 WHERE id = 1").await;
        let reads = f.reads();
        let before = f.user.selects(&mut f.db).await;

        // With 2.8 s left (< refresh_ahead_ms) a read answers from Redis and refreshes.
        tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
        let answer = reads.get(&f.name(), &id(1)).await.unwrap();
        assert_eq!(
            found(&answer)["price"],
            "0.00",
            "{format}: answered from Redis"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while cached_fields(&f, 1).await.unwrap().2 != "7.00" {
            assert!(std::time::Instant::now() < deadline, "{format}: no refresh");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let after = f.user.selects(&mut f.db).await;
        assert_eq!(after - before, 1, "{format}: one MySQL read, the refresh");
        assert_eq!(
            cached_fields(&f, 1).await.unwrap(),
            (Some(2), "b".to_owned(), "7.00".to_owned()),
            "{format}: refreshed from MySQL, version kept"
        );

        // Past the TTL the key was written with, the refresh keeps it alive.
        tokio::time::sleep(
            (synced + std::time::Duration::from_millis(4_300))
                .duration_since(std::time::Instant::now()),
        )
        .await;
        let mut redis = common::redis_conn().await;
        let pttl: i64 = redis.pttl(f.key(1)).await.unwrap();
        assert!(pttl > 0, "{format}: the key expired (PTTL {pttl})");

        // An older change arriving late is still refused.
        let mut older = f.row(1).await.unwrap();
        older[1] = Cell::Text("old".to_owned());
        let applied = f
            .applier
            .apply(&[Change {
                table: f.table.clone(),
                op: Op::Upsert,
                row: older,
                version: Some(1),
                committed_at_us: None,
            }])
            .await
            .unwrap();
        assert_eq!(applied.stale, 1, "{format}: the version guard refused v1");
        assert_eq!(cached_fields(&f, 1).await.unwrap().1, "b", "{format}");
        f.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l1_answers_within_its_ttl_without_redis_or_mysql() {
    let mut f = fixture(json!({ "l1_ttl_ms": 1_000 }), true, "json").await;
    f.db.exec("INSERT INTO items (id, name) VALUES (1, 'a')")
        .await;
    let reads = f.reads();
    let before = f.user.selects(&mut f.db).await;
    assert_eq!(
        found(&reads.get(&f.name(), &id(1)).await.unwrap())["name"],
        "a"
    );
    // Redis loses the key and MySQL changes: L1 still answers what it holds.
    common::clear_redis_prefix(&f.prefix).await;
    f.db.exec("UPDATE items SET name = 'b' WHERE id = 1").await;
    assert_eq!(
        found(&reads.get(&f.name(), &id(1)).await.unwrap())["name"],
        "a"
    );
    assert_eq!(f.cached(1).await, None, "an L1 hit does not touch Redis");
    assert_eq!(f.user.selects(&mut f.db).await - before, 1);
    // Once its TTL is over, the read goes to Redis (missing) and MySQL again.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(
        found(&reads.get(&f.name(), &id(1)).await.unwrap())["name"],
        "b"
    );
    assert_eq!(f.user.selects(&mut f.db).await - before, 2);
    f.finish().await;
}

/// Holds every fill of `reads` between its MySQL read and its Redis write until
/// `release` is notified; `reached` is notified when a fill is held.
fn hold_fills(reads: &ReadPath) -> (Arc<Notify>, Arc<Notify>) {
    let reached = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (r, g) = (reached.clone(), release.clone());
    reads.set_fill_hook(Some(Arc::new(move |_key| {
        let (r, g) = (r.clone(), g.clone());
        Box::pin(async move {
            r.notify_one();
            g.notified().await;
        })
    })));
    (reached, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fill_racing_a_newer_synced_write_never_leaves_the_older_value() {
    for versioned in [true, false] {
        let mut f = fixture(json!({}), versioned, "json").await;
        f.db.exec("INSERT INTO items (id, name) VALUES (1, 'old'), (2, 'old'), (3, 'old')")
            .await;
        let reads = f.reads();
        let (reached, release) = hold_fills(&reads);

        // Control: a held fill with nothing racing it does fill.
        let read = tokio::spawn({
            let (reads, name) = (reads.clone(), f.name());
            async move { reads.get(&name, &id(3)).await.unwrap() }
        });
        reached.notified().await;
        release.notify_one();
        assert_eq!(found(&read.await.unwrap())["name"], "old");
        assert_eq!(f.cached(3).await.unwrap()["name"], "old");

        // A newer upsert is committed and synced while the fill of the old row is held.
        let read = tokio::spawn({
            let (reads, name) = (reads.clone(), f.name());
            async move { reads.get(&name, &id(1)).await.unwrap() }
        });
        reached.notified().await;
        f.synced_upsert(1, "new", versioned).await;
        release.notify_one();
        assert_eq!(
            found(&read.await.unwrap())["name"],
            "old",
            "the read answers what it read"
        );
        assert_eq!(
            f.cached(1).await.unwrap()["name"],
            "new",
            "versioned = {versioned}: the fill did not overwrite the synced value"
        );

        // A delete lands while the fill is held: the row must not come back.
        let read = tokio::spawn({
            let (reads, name) = (reads.clone(), f.name());
            async move { reads.get(&name, &id(2)).await.unwrap() }
        });
        reached.notified().await;
        f.db.exec("DELETE FROM items WHERE id = 2").await;
        f.applier
            .apply(&[Change {
                table: f.table.clone(),
                op: Op::Delete,
                row: vec![
                    Cell::UInt(2),
                    Cell::Null,
                    Cell::Null,
                    Cell::Null,
                    Cell::Null,
                ],
                version: versioned.then_some(2),
                committed_at_us: None,
            }])
            .await
            .unwrap();
        release.notify_one();
        read.await.unwrap();
        assert_eq!(
            f.cached(2).await,
            None,
            "versioned = {versioned}: the deleted row stayed out of Redis"
        );
        reads.set_fill_hook(None);
        assert_eq!(reads.get(&f.name(), &id(2)).await.unwrap(), Answer::Absent);
        f.finish().await;
    }
}

/// The API with `reads` behind GET, on 127.0.0.1:0; its base URL.
async fn serve(
    f: &Fixture,
    reads: Arc<ReadPath>,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<cachesync::Result<()>>,
) {
    let pool = cachesync::mysql::pool(&common::mysql_url()).unwrap();
    let strategy = Arc::new(Strategy::DualWrite(DualWrite::new(
        pool.clone(),
        f.applier.clone(),
    )));
    let readiness = Readiness::new(pool, &common::mysql_url(), &common::redis_url(), None).unwrap();
    let state = ApiState::with_reads(strategy, vec![f.table.clone()], readiness, None, reads);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(api::serve(listener, state, shutdown.clone()));
    (base, shutdown, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_through_the_api_answers_the_json_encoding_404_and_400() {
    let mut f = fixture(json!({}), true, "hash").await;
    let (base, shutdown, server) = serve(&f, f.reads()).await;
    let http = reqwest::Client::new();
    let rows = format!("{base}/v1/tables/{}/rows", f.name());

    // Written through the API: Redis holds a hash; GET turns it into the json encoding.
    let put = http
        .put(&rows)
        .json(&json!({"id": 1, "name": "café ☕", "price": "12.5", "raw": "AAH/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let expected = f.expected(1).await;
    assert_eq!(
        String::from_utf8(expected.clone()).unwrap(),
        r#"{"id":1,"name":"café ☕","price":"12.50","raw":"AAH/","version":1}"#
    );
    for source in ["redis", "mysql"] {
        let got = http.get(format!("{rows}?id=1")).send().await.unwrap();
        assert_eq!(got.status(), 200, "{source}");
        assert_eq!(
            got.headers()["content-type"],
            "application/json",
            "{source}"
        );
        assert_eq!(got.bytes().await.unwrap(), expected, "from {source}");
        common::clear_redis_prefix(&f.prefix).await;
    }

    let error = async |url: String, status: u16, needle: &str| {
        let got = http.get(&url).send().await.unwrap();
        assert_eq!(got.status().as_u16(), status, "{url}");
        let body: Json = got.json().await.unwrap();
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    };
    error(format!("{rows}?id=2"), 404, "no row of").await;
    error(format!("{rows}?id=x"), 400, "expected an integer").await;
    error(format!("{rows}?id=-1"), 400, "out of range").await;
    error(rows.clone(), 400, "give primary-key column id").await;
    error(format!("{rows}?id=1&id=2"), 400, "exactly once").await;
    error(
        format!("{rows}?id=1&name=x"),
        400,
        "name is not a primary-key column",
    )
    .await;
    error(
        format!("{base}/v1/tables/nope.items/rows?id=1"),
        404,
        "unknown table nope.items",
    )
    .await;

    shutdown.cancel();
    server.await.unwrap().unwrap();
    f.finish().await;
}

/// Runs `cachesync bench --config <config> <args>` with a deadline; `(stdout, stderr)`
/// of a run that succeeded.
fn cachesync_bench(config: &std::path::Path, args: &[String]) -> (String, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_cachesync"))
        .arg("bench")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("cachesync bench did not finish within 180 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    );
    assert!(
        output.status.success(),
        "{}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}",
        output.status
    );
    (stdout, stderr)
}

/// `cachesync bench --scenario read-storm` (the command behind the table in `docs/read-path.md`) at a
/// small size, twice in a row (MariaDB keeps a user's statistics across `DROP USER`,
/// which once made every run after the first fail): the table on stdout and in `--out`,
/// progress on stderr, and each case's MySQL count in `--json`, taken from MariaDB, is
/// what the guards promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_read_storm_counts_each_guard_from_mariadb_run_after_run() {
    let db = common::TestDb::create("storm").await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(
        dir.path(),
        &common::config_toml(
            "dual-write",
            "[[tables]]\nname = \"unused.unused\"\nkey = \"u:{id}\"",
        ),
    );
    let (out, json) = (dir.path().join("storm.md"), dir.path().join("storm.json"));
    let args: Vec<String> = [
        "--scenario=read-storm",
        &format!("--database={}", db.name),
        "--storm-hot-requests=50",
        "--storm-missing-requests=200",
        "--storm-missing-keys=50",
        "--storm-expiry-keys=300",
        "--storm-concurrency=4",
        "--storm-expiry-ttl=1s",
        "--storm-expiry-jitter=30s",
        &format!("--out={}", out.display()),
        &format!("--json={}", json.display()),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    for run in 1..=2 {
        let (stdout, stderr) = tokio::task::spawn_blocking({
            let (config, args) = (config.clone(), args.clone());
            move || cachesync_bench(&config, &args)
        })
        .await
        .unwrap();
        let table = std::fs::read_to_string(&out).unwrap();
        assert!(table.contains("| case | guards | requests | MySQL queries |"));
        assert_eq!(stdout.trim_end(), table.trim_end(), "stdout is the table");
        assert_eq!(
            stderr.matches("read storm case done").count(),
            11,
            "a progress line per case on stderr:\n{stderr}"
        );
        let report: Json = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["options"]["hot_requests"], 50);
        let queries = |case: &str, guards: &str| {
            let row = report["rows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["case"] == case && r["guards"] == guards)
                .unwrap_or_else(|| panic!("no row {case} / {guards}:\n{table}"));
            assert_eq!(row["errors"], 0, "{case} / {guards}");
            row["mysql_queries"].as_u64().unwrap()
        };
        // Breakdown: guards off, the reads that found the key missing each queried. They
        // are released together, so nearly all do (exactly how many depends on the
        // scheduler); any guard brings it to one.
        assert!(queries("breakdown", "off") >= 25, "{table}");
        for guards in [
            "single-flight",
            "Redis mutex",
            "single-flight + Redis mutex",
        ] {
            assert_eq!(
                queries("breakdown", guards),
                1,
                "run {run}, {guards}\n{table}"
            );
        }
        // Penetration: every read queries; negative caching, about one query per missing
        // key (alone it does not stop a read of a key that arrives while the key's first
        // read is still at MySQL), exactly one with single-flight and the mutex; the
        // Bloom filter lets only its false positives through (1 % sizing).
        assert_eq!(queries("penetration", "off"), 200, "{table}");
        let negative = queries("penetration", "negative caching");
        assert!((50..100).contains(&negative), "{table}");
        assert_eq!(
            queries(
                "penetration",
                "negative caching + single-flight + Redis mutex"
            ),
            50,
            "{table}"
        );
        assert!(queries("penetration", "Bloom filter") <= 40, "{table}");
        assert!(
            queries("penetration", "Bloom filter + negative caching") <= 10,
            "{table}"
        );
        // Avalanche: every key expired at once, every read queries; with 30 s of jitter
        // few have expired a moment after the common TTL.
        assert_eq!(queries("avalanche", "off (no jitter)"), 300, "{table}");
        assert!(queries("avalanche", "TTL jitter") < 100, "{table}");
    }
    db.drop_db().await;
}
