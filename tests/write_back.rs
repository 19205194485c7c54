//! The write-back strategy against real MariaDB and Redis, through the real binary and
//! its HTTP API:
//!
//! - writes land in the cache at once (a `GET` sees them before MySQL has them) and in
//!   MySQL in batches, a row's changes coalesced into its last (MySQL's own per-row write
//!   log, filled by triggers, counts the statements);
//! - a change MySQL refuses (a duplicate UNIQUE value) goes to the dead-letter stream with
//!   the reason, is counted, and its key is repaired from MySQL;
//! - the daemon killed with `kill -9` while writers run and batches flush, then started
//!   again: every acknowledged write is in MySQL, and no row ever got an older version
//!   after a newer one.
//!
//! Needs MariaDB and Redis: `scripts/services.sh up`.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::{RunningDaemon, sample};
use common::{TestDb, free_port, unique, write_config};
use mysql_async::prelude::Queryable;
use serde_json::{Value as Json, json};

/// The table, and MySQL's log of every row write it gets (what the flusher really did).
const SCHEMA: &str = "
    CREATE TABLE items (id INT PRIMARY KEY, label VARCHAR(32) NOT NULL,
        email VARCHAR(64) NULL UNIQUE, n INT NOT NULL DEFAULT 0,
        v BIGINT UNSIGNED NOT NULL DEFAULT 0);
    CREATE TABLE writes_log (seq INT AUTO_INCREMENT PRIMARY KEY, id INT NOT NULL,
        v BIGINT UNSIGNED NOT NULL, n INT NOT NULL);
    CREATE TRIGGER items_ins AFTER INSERT ON items FOR EACH ROW
        INSERT INTO writes_log (id, v, n) VALUES (NEW.id, NEW.v, NEW.n);
    CREATE TRIGGER items_upd AFTER UPDATE ON items FOR EACH ROW
        INSERT INTO writes_log (id, v, n) VALUES (NEW.id, NEW.v, NEW.n);";

/// A write-back daemon's world: its database, its Redis names, its API.
struct Setup {
    db: TestDb,
    prefix: String,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    api: String,
    metrics_port: u16,
    http: reqwest::Client,
}

impl Setup {
    async fn new(name: &str, max_delay_ms: u64) -> Setup {
        let mut db = TestDb::create(name).await;
        for statement in SCHEMA.split(';').filter(|s| !s.trim().is_empty()) {
            db.exec(statement).await;
        }
        let prefix = unique("wb");
        let dir = tempfile::tempdir().unwrap();
        let (api_port, metrics_port) = (free_port(), free_port());
        let config = write_config(
            dir.path(),
            &format!(
                "strategy = \"write-back\"\n\
                 [mysql]\nurl = \"{}\"\n\
                 [redis]\nurl = \"{}\"\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
                 [api]\nlisten = \"127.0.0.1:{api_port}\"\n\
                 [write_back]\nbatch_size = 100\nmax_delay_ms = {max_delay_ms}\n\
                 stream = \"{prefix}:queue\"\ndead_letter_stream = \"{prefix}:dead\"\n\
                 [[tables]]\nname = \"{}.items\"\nkey = \"{prefix}:item:{{id}}\"\n\
                 version_column = \"v\"\n",
                common::mysql_url(),
                common::redis_url(),
                db.name
            ),
        );
        Setup {
            prefix,
            dir,
            config,
            api: format!(
                "http://127.0.0.1:{api_port}/v1/tables/{}.items/rows",
                db.name
            ),
            db,
            metrics_port,
            http: reqwest::Client::new(),
        }
    }

    /// Starts the daemon and waits until its API answers.
    async fn start(&self) -> RunningDaemon {
        let mut daemon = RunningDaemon::start(
            self.dir.path(),
            &self.config,
            self.metrics_port,
            Duration::from_secs(300),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.http.get(&self.api).send().await.is_err() {
            daemon.assert_alive();
            assert!(Instant::now() < deadline, "the API did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        daemon
    }

    /// `PUT` a row: its write-back version.
    async fn put(&self, row: Json) -> Result<u64, String> {
        let answer = self
            .http
            .put(&self.api)
            .json(&row)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        let body: Json = answer.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {body}"));
        }
        body["version"]
            .as_u64()
            .ok_or_else(|| format!("no version in {body}"))
    }

    /// `GET` row `id`: the row, or `None` on 404.
    async fn get(&self, id: u64) -> Option<Json> {
        let answer = self
            .http
            .get(format!("{}?id={id}", self.api))
            .send()
            .await
            .unwrap();
        match answer.status().as_u16() {
            200 => Some(answer.json().await.unwrap()),
            404 => None,
            other => panic!("GET id={id}: {other} {}", answer.text().await.unwrap()),
        }
    }

    /// MySQL's row `id` as `(label, n, v)`.
    async fn mysql_row(&mut self, id: u64) -> Option<(String, i64, u64)> {
        self.db
            .conn
            .exec_first("SELECT label, n, v FROM items WHERE id = ?", (id,))
            .await
            .unwrap()
    }

    /// MySQL's write log of row `id`: the versions, in the order MySQL applied them.
    async fn log(&mut self, id: u64) -> Vec<u64> {
        self.db
            .conn
            .exec("SELECT v FROM writes_log WHERE id = ? ORDER BY seq", (id,))
            .await
            .unwrap()
    }

    async fn redis_len(&self, stream: &str) -> u64 {
        let mut redis = common::redis_conn().await;
        redis::cmd("XLEN")
            .arg(format!("{}:{stream}", self.prefix))
            .query_async(&mut redis)
            .await
            .unwrap()
    }

    async fn finish(self) {
        common::clear_redis_prefix(&self.prefix).await;
        self.db.drop_db().await;
    }
}

/// Polls `check` every 50 ms for up to `limit`; fails with `what`.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, limit: Duration, mut check: F) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The daemon counted `n` dead-lettered changes.
fn assert_dead_lettered(daemon: &RunningDaemon, n: f64) {
    let metrics = daemon.metrics().unwrap();
    assert_eq!(
        sample(
            &metrics,
            "cachesync_dead_lettered_total{strategy=\"write-back\"}"
        ),
        Some(n),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_cache_at_once_and_mysql_coalesced() {
    // A long batch window: the writes below all fall into one flush.
    let mut setup = Setup::new("wb_coalesce", 3_000).await;
    let daemon = setup.start().await;

    let first = setup.put(json!({"id": 1, "label": "a"})).await.unwrap();
    // The cache has it at once; MySQL does not yet.
    let cached = setup.get(1).await.expect("the cache answers the write");
    assert_eq!(cached["label"], "a");
    assert_eq!(cached["v"], first, "the cache holds the write's version");
    assert_eq!(setup.mysql_row(1).await, None, "MySQL trails the cache");

    let mut last = first;
    for n in 1..=20 {
        last = setup.put(json!({"id": 1, "n": n})).await.unwrap();
    }
    setup
        .put(json!({"id": 2, "label": "b", "n": 7}))
        .await
        .unwrap();
    // Merged in the cache: the label of the first write, the n of the last.
    let cached = setup.get(1).await.unwrap();
    assert_eq!(
        (cached["label"].as_str(), cached["n"].as_i64()),
        (Some("a"), Some(20))
    );

    eventually("row 1 flushed", Duration::from_secs(20), async || {
        setup.mysql_row(1).await == Some(("a".to_owned(), 20, last))
    })
    .await;
    eventually("row 2 flushed", Duration::from_secs(20), async || {
        setup.mysql_row(2).await.is_some()
    })
    .await;
    let log = setup.log(1).await;
    assert!(
        log.len() <= 2,
        "21 writes of row 1 became {} MySQL row writes ({log:?}); they were not coalesced",
        log.len()
    );
    let metrics = daemon.metrics().unwrap();
    let coalesced = sample(
        &metrics,
        "cachesync_write_back_coalesced_total{strategy=\"write-back\"}",
    )
    .unwrap();
    assert!(coalesced >= 19.0, "coalesced {coalesced}\n{metrics}");
    // After the flush the cache holds the row as MySQL committed it, same version.
    let cached = setup.get(1).await.unwrap();
    assert_eq!(cached["v"], last);
    eventually("the queue emptied", Duration::from_secs(10), async || {
        setup.redis_len("queue").await == 0
    })
    .await;
    drop(daemon);
    setup.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_mysql_refuses_is_dead_lettered_counted_and_its_key_repaired() {
    let mut setup = Setup::new("wb_refused", 50).await;
    let daemon = setup.start().await;
    setup
        .put(json!({"id": 1, "label": "a", "email": "x@example.com"}))
        .await
        .unwrap();
    eventually("row 1 flushed", Duration::from_secs(20), async || {
        setup.mysql_row(1).await.is_some()
    })
    .await;

    // Acknowledged by the cache; MySQL says no (a duplicate UNIQUE email).
    setup
        .put(json!({"id": 2, "label": "b", "email": "x@example.com"}))
        .await
        .expect("write-back acknowledges before MySQL has seen the write");
    eventually(
        "the refused change dead-lettered",
        Duration::from_secs(20),
        async || setup.redis_len("dead").await == 1,
    )
    .await;
    let mut redis = common::redis_conn().await;
    let dead: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{}:dead", setup.prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let fields: HashMap<String, String> = dead[0].1.iter().cloned().collect();
    assert!(fields["reason"].contains("UNIQUE"), "{fields:?}");
    assert!(fields["change"].contains("\"id\":2"), "{fields:?}");
    // The cache no longer holds what the database rejected; row 1 is untouched.
    eventually("key 2 repaired", Duration::from_secs(10), async || {
        setup.get(2).await.is_none()
    })
    .await;
    assert_eq!(setup.get(1).await.unwrap()["email"], "x@example.com");
    assert_eq!(setup.mysql_row(2).await, None);
    assert_dead_lettered(&daemon, 1.0);
    drop(daemon);
    setup.finish().await;
}

/// Rows a round writes in multi-row statements: more than one statement's worth (50),
/// two column sets and a delete in one round; then a round with one row MySQL refuses,
/// which is rolled back whole and written row by row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_of_many_rows_lands_whole_and_a_refused_row_alone_is_dead_lettered() {
    const ROWS: u64 = 90;
    // A long window: each phase below falls into one round (batch_size 100).
    let mut setup = Setup::new("wb_many", 2_000).await;
    setup
        .db
        .exec("INSERT INTO items (id, label, email, n) VALUES (1000, 'taken', 't@example.com', 0), (1001, 'gone', NULL, 0)")
        .await;
    let daemon = setup.start().await;
    let mut versions = HashMap::new();
    let row = |id: u64| {
        // Two column sets: with and without `email`.
        if id.is_multiple_of(3) {
            json!({"id": id, "label": format!("r{id}"), "n": id, "email": format!("{id}@example.com")})
        } else {
            json!({"id": id, "label": format!("r{id}"), "n": id})
        }
    };
    for id in 1..=ROWS {
        versions.insert(id, setup.put(row(id)).await.unwrap());
    }
    let answer = setup
        .http
        .delete(&setup.api)
        .json(&json!({"id": 1001}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    eventually(
        "the first round flushed",
        Duration::from_secs(30),
        async || setup.redis_len("queue").await == 0,
    )
    .await;
    assert_eq!(setup.mysql_row(1001).await, None, "the deleted row");

    // The second round: ten rows and one MySQL refuses (a UNIQUE value row 1000 holds).
    for id in ROWS + 1..=ROWS + 10 {
        versions.insert(id, setup.put(row(id)).await.unwrap());
    }
    setup
        .put(json!({"id": 5000, "label": "dup", "email": "t@example.com"}))
        .await
        .expect("acknowledged by the cache");
    eventually(
        "the second round flushed",
        Duration::from_secs(30),
        async || setup.redis_len("queue").await == 0,
    )
    .await;
    for id in 1..=ROWS + 10 {
        assert_eq!(
            setup.mysql_row(id).await,
            Some((format!("r{id}"), id as i64, versions[&id])),
            "row {id}"
        );
        // Written once: a rolled-back round leaves nothing in MySQL's trigger log.
        assert_eq!(setup.log(id).await.len(), 1, "row {id}");
    }
    assert_eq!(setup.mysql_row(5000).await, None, "the refused row");
    assert_eq!(
        setup.mysql_row(1000).await,
        Some(("taken".to_owned(), 0, 0)),
        "the row holding the UNIQUE value is untouched"
    );
    assert_eq!(setup.redis_len("dead").await, 1);
    assert_dead_lettered(&daemon, 1.0);
    drop(daemon);
    setup.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_flush_loses_nothing_and_reorders_nothing() {
    const ROWS: u64 = 40;
    let mut setup = Setup::new("wb_kill", 20).await;
    let mut daemon = setup.start().await;
    let setup_ref = Arc::new(std::sync::Mutex::new(HashMap::<u64, u64>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (api, http) = (setup.api.clone(), setup.http.clone());
    // Writers: every acknowledged write's version, newest per row.
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (acked, stop, api, http) =
                (setup_ref.clone(), stop.clone(), api.clone(), http.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let id = (n * 7 + w * 13) % ROWS + 1;
                    let sent = http
                        .put(&api)
                        .json(&json!({"id": id, "label": format!("w{w}"), "n": n}))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let Ok(answer) = sent else {
                        // The daemon is down: nothing acknowledged, try again shortly.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    if !answer.status().is_success() {
                        continue;
                    }
                    let body: Json = answer.json().await.unwrap();
                    let version = body["version"].as_u64().unwrap();
                    let mut acked = acked.lock().unwrap();
                    let newest = acked.entry(id).or_default();
                    *newest = (*newest).max(version);
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.kill9();
    let queued_at_kill = setup.redis_len("queue").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _restarted = setup.start().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    eventually("the queue drained", Duration::from_secs(30), async || {
        setup.redis_len("queue").await == 0
    })
    .await;

    let acked = setup_ref.lock().unwrap().clone();
    assert!(
        acked.len() as u64 > ROWS / 2,
        "the writers wrote: {acked:?}"
    );
    let mut lost = Vec::new();
    let mut out_of_order = Vec::new();
    for (&id, &newest) in &acked {
        match setup.mysql_row(id).await {
            Some((_, _, v)) if v == newest => {}
            other => lost.push((id, newest, other)),
        }
        let log = setup.log(id).await;
        if log.windows(2).any(|w| w[1] < w[0]) {
            out_of_order.push((id, log));
        }
    }
    eprintln!(
        "kill -9 with {queued_at_kill} changes queued; {} rows written by {} acknowledged versions",
        acked.len(),
        acked.values().count()
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes MySQL does not have: {lost:?}"
    );
    assert!(
        out_of_order.is_empty(),
        "rows that went back to an older version: {out_of_order:?}"
    );
    setup.finish().await;
}
