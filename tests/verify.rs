//! `verify` against the test MariaDB and Redis: it finds a hand-corrupted key, a missing
//! key and an extra key in `json` and `hash` tables, `--repair` fixes them without giving
//! up the version Redis held, `invalidate` tables may miss keys, and the `cachesync verify`
//! binary exits 1 on divergence and 0 after `--repair`.
//!
//! ```text
//! scripts/services.sh up
//! cargo test --test verify
//! ```
//!
//! Each test has its own database and Redis key prefix.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachesync::cmd::verify::{Options, Report, verify};
use cachesync::model::cell::Encoded;
use cachesync::model::change::{Change, Op};
use cachesync::model::table::SyncedTable;
use cachesync::redis::Applier;
use cachesync::strategy::StrategyKind;
use mysql_async::prelude::Queryable;
use redis::AsyncCommands;

use common::{TestDb, config_with_table, redis_conn, unique};

const ROWS: &str = "INSERT INTO t (id, name, score, data) VALUES \
    (1, 'ann', 1.50, x'00ff'), (2, 'bob', NULL, NULL), (3, 'cy', 3.25, x'01'), \
    (4, 'dee', 4.00, ''), (5, 'é \"q\"', 0.01, x'ff')";

/// A test database with table `t` loaded, planned for `format`/`mode`, its rows in Redis
/// at version `version` (as `cachesync snapshot` writes them).
struct Fixture {
    db: TestDb,
    prefix: String,
    table: Arc<SyncedTable>,
    pool: mysql_async::Pool,
    applier: Applier,
}

impl Fixture {
    async fn new(format: &str, mode: &str, version: u64) -> Fixture {
        let mut db = TestDb::create("verify").await;
        db.exec(
            "CREATE TABLE t (id INT UNSIGNED PRIMARY KEY, name VARCHAR(50) NOT NULL, \
             score DECIMAL(6,2) NULL, data VARBINARY(8) NULL)",
        )
        .await;
        db.exec(ROWS).await;
        let prefix = unique("vf");
        let config = config_with_table(
            "binlog",
            serde_json::json!({
                "name": format!("{}.t", db.name),
                "key": format!("{prefix}:t:{{id}}"),
                "format": format,
                "mode": mode,
            }),
        );
        let table = Arc::new(common::synced_table(&mut db, &config).await);
        let pool = cachesync::mysql::pool(&common::mysql_url()).unwrap();
        let applier = Applier::connect(
            &common::redis_url(),
            Duration::from_secs(60),
            StrategyKind::Binlog.name(),
        )
        .await
        .expect("Redis is up: scripts/services.sh up");
        let fixture = Fixture {
            db,
            prefix,
            table,
            pool,
            applier,
        };
        if mode == "write" {
            let changes: Vec<Change> = fixture
                .rows()
                .await
                .into_iter()
                .map(|row| Change {
                    table: fixture.table.clone(),
                    op: Op::Upsert,
                    row,
                    version: Some(version),
                    committed_at_us: None,
                })
                .collect();
            fixture.applier.apply(&changes).await.unwrap();
        }
        fixture
    }

    fn key(&self, id: u32) -> String {
        format!("{}:t:{id}", self.prefix)
    }

    async fn rows(&self) -> Vec<Vec<cachesync::model::cell::Cell>> {
        let mut conn = self.pool.get_conn().await.unwrap();
        let rows: Vec<mysql_async::Row> = conn
            .exec(self.table.sql.select_all.as_str(), ())
            .await
            .unwrap();
        rows.iter()
            .map(|r| self.table.decode_sql_row(r).unwrap())
            .collect()
    }

    async fn verify(&self, repair: bool) -> Report {
        let options = Options {
            batch: 2,
            examples: 3,
            repair,
            strategy: StrategyKind::Binlog,
            skip_keys: vec![format!("{}:t:checkpoint", self.prefix)],
            checkpoint_key: None,
        };
        verify(
            std::slice::from_ref(&self.table),
            &self.pool,
            &self.applier,
            &options,
        )
        .await
        .unwrap()
    }

    /// What Redis holds for `key`, `_cachesync_v` left out, as the table's encoding, and
    /// that version.
    async fn stored(&self, key: &str) -> Option<(Encoded, Option<u64>)> {
        let mut redis = redis_conn().await;
        match self.table.encoder.format() {
            cachesync::model::cell::Format::Json => {
                let doc: Option<Vec<u8>> = redis.get(key).await.unwrap();
                doc.map(|doc| {
                    let (version, body) = cachesync::redis::keyspace::split_version(&doc);
                    (Encoded::Json(body), version)
                })
            }
            cachesync::model::cell::Format::Hash => {
                let mut fields: HashMap<Vec<u8>, Vec<u8>> = redis.hgetall(key).await.unwrap();
                if fields.is_empty() {
                    return None;
                }
                let version = fields
                    .remove(b"_cachesync_v".as_slice())
                    .map(|v| String::from_utf8(v).unwrap().parse().unwrap());
                // Back into the encoder's field order.
                let mut flat = Vec::new();
                for name in self.table.encoder.names() {
                    if let Some(value) = fields.remove(name.as_bytes()) {
                        flat.push(name.as_bytes().to_vec());
                        flat.push(value);
                    }
                }
                assert!(fields.is_empty(), "unexpected fields {fields:?}");
                Some((Encoded::Hash(flat), version))
            }
        }
    }

    /// Asserts Redis holds exactly the `SELECT` encodings under the table's keys (decoys
    /// aside).
    async fn assert_redis_equals_mysql(&self) {
        let rows = self.rows().await;
        let mut redis = redis_conn().await;
        let mut keys: Vec<String> = redis.keys(format!("{}:t:*", self.prefix)).await.unwrap();
        // The decoys `damage` adds are not rows.
        keys.retain(|k| !k.ends_with(":cachesync:tombstone") && !k.ends_with(":t:checkpoint"));
        keys.sort();
        let mut expected_keys: Vec<String> = rows.iter().map(|r| self.table.key_of(r)).collect();
        expected_keys.sort();
        assert_eq!(keys, expected_keys);
        for row in &rows {
            let key = self.table.key_of(row);
            let (stored, _) = self.stored(&key).await.unwrap();
            assert_eq!(stored, self.table.encoder.encode(row, None), "{key}");
        }
    }

    async fn finish(self) {
        common::clear_redis_prefix(&self.prefix).await;
        self.pool.disconnect().await.ok();
        self.db.drop_db().await;
    }
}

/// Corrupts row 2's name, deletes row 3's key, adds an extra key 99, plus keys verify must
/// ignore (a tombstone-named key, the checkpoint, a key outside the template).
async fn damage(f: &Fixture, format: &str) {
    let mut redis = redis_conn().await;
    let (k2, k3, k99) = (f.key(2), f.key(3), f.key(99));
    if format == "json" {
        let doc: String = redis.get(&k2).await.unwrap();
        let bad = doc.replace("\"bob\"", "\"BOB\"");
        assert_ne!(doc, bad);
        let _: () = redis.set(&k2, bad).await.unwrap();
        let _: () = redis
            .set(&k99, r#"{"_cachesync_v":10,"id":99,"name":"ghost"}"#)
            .await
            .unwrap();
    } else {
        let _: () = redis.hset(&k2, "name", "BOB").await.unwrap();
        let _: () = redis
            .hset_multiple(&k99, &[("_cachesync_v", "10"), ("id", "99")])
            .await
            .unwrap();
    }
    let _: () = redis.del(&k3).await.unwrap();
    let _: () = redis
        .set(format!("{}:cachesync:tombstone", f.key(4)), "10")
        .await
        .unwrap();
    let _: () = redis
        .set(format!("{}:t:checkpoint", f.prefix), "x")
        .await
        .unwrap();
    let _: () = redis
        .set(format!("{}:other:1", f.prefix), "x")
        .await
        .unwrap();
}

async fn finds_and_repairs(format: &str) {
    let f = Fixture::new(format, "write", 10).await;
    let clean = f.verify(false).await;
    assert_eq!(clean.divergent(), 0, "{clean:?}");
    assert_eq!(clean.tables[0].rows, 5);

    damage(&f, format).await;
    let report = f.verify(false).await;
    let t = &report.tables[0];
    assert_eq!(t.rows, 5);
    assert_eq!(
        (t.missing.count, t.extra.count, t.different.count),
        (1, 1, 1),
        "{t:?}"
    );
    assert_eq!(t.missing.examples, vec![f.key(3)]);
    assert_eq!(t.extra.examples, vec![f.key(99)]);
    assert_eq!(t.different.examples, vec![f.key(2)]);
    assert_eq!(report.divergent(), 3);
    assert_eq!(t.remaining, None);

    let repaired = f.verify(true).await;
    let t = &repaired.tables[0];
    assert_eq!(
        (t.found(), t.repaired, t.remaining),
        (3, 3, Some(0)),
        "{t:?}"
    );
    assert_eq!(repaired.divergent(), 0);

    let again = f.verify(false).await;
    assert_eq!(again.divergent(), 0, "{again:?}");
    f.assert_redis_equals_mysql().await;
    // The corrupted key kept the version it had.
    assert_eq!(f.stored(&f.key(2)).await.unwrap().1, Some(10));
    // Keys verify must not touch are still there.
    let mut redis = redis_conn().await;
    let other: Option<String> = redis.get(format!("{}:other:1", f.prefix)).await.unwrap();
    assert_eq!(other.as_deref(), Some("x"));
    let checkpoint: Option<String> = redis
        .get(format!("{}:t:checkpoint", f.prefix))
        .await
        .unwrap();
    assert_eq!(checkpoint.as_deref(), Some("x"));
    f.finish().await;
}

#[tokio::test]
async fn json_finds_missing_extra_different_and_repairs_them() {
    finds_and_repairs("json").await;
}

#[tokio::test]
async fn hash_finds_missing_extra_different_and_repairs_them() {
    finds_and_repairs("hash").await;
}

#[tokio::test]
async fn repair_keeps_the_version_redis_holds() {
    let f = Fixture::new("json", "write", 10).await;
    let mut redis = redis_conn().await;
    // Row 1 at a newer version but with content MySQL does not have.
    let _: () = redis
        .set(
            f.key(1),
            r#"{"_cachesync_v":50,"id":1,"name":"old","score":null,"data":null}"#,
        )
        .await
        .unwrap();
    // Row 3 deleted at version 60 (a tombstone) although MySQL has it.
    f.applier
        .apply(&[Change {
            table: f.table.clone(),
            op: Op::Delete,
            row: f.rows().await.remove(2),
            version: Some(60),
            committed_at_us: None,
        }])
        .await
        .unwrap();
    // A key of a row MySQL no longer has, at version 70.
    f.applier
        .apply(&[Change {
            table: f.table.clone(),
            op: Op::Upsert,
            row: {
                let mut row = f.rows().await.remove(0);
                row[0] = cachesync::model::cell::Cell::UInt(7);
                row
            },
            version: Some(70),
            committed_at_us: None,
        }])
        .await
        .unwrap();
    let report = f.verify(true).await;
    let t = &report.tables[0];
    assert_eq!(
        (t.missing.count, t.extra.count, t.different.count),
        (1, 1, 1),
        "{t:?}"
    );
    assert_eq!(t.remaining, Some(0));
    let rows = f.rows().await;
    let (content, version) = f.stored(&f.key(1)).await.unwrap();
    assert_eq!(content, f.table.encoder.encode(&rows[0], None));
    assert_eq!(version, Some(50), "repair keeps the stored version");
    let (content, version) = f.stored(&f.key(3)).await.unwrap();
    assert_eq!(content, f.table.encoder.encode(&rows[2], None));
    assert_eq!(
        version,
        Some(60),
        "a missing key is written at its tombstone's version"
    );
    let tomb = cachesync::redis::keyspace::tombstone_key(&f.key(3)).unwrap();
    assert!(!redis.exists::<_, bool>(&tomb).await.unwrap());
    // The extra key is deleted with its version: its tombstone remembers 70.
    assert!(f.stored(&f.key(7)).await.is_none());
    let tomb = cachesync::redis::keyspace::tombstone_key(&f.key(7)).unwrap();
    let remembered: Option<String> = redis.get(&tomb).await.unwrap();
    assert_eq!(remembered.as_deref(), Some("70"));
    f.assert_redis_equals_mysql().await;
    f.finish().await;
}

#[tokio::test]
async fn invalidate_tables_may_miss_keys_but_not_hold_wrong_ones() {
    let f = Fixture::new("json", "invalidate", 10).await;
    let report = f.verify(false).await;
    assert_eq!(report.divergent(), 0, "nothing cached is fine: {report:?}");
    let mut redis = redis_conn().await;
    let _: () = redis
        .set(
            f.key(1),
            r#"{"id":1,"name":"stale","score":"1.50","data":"AP8="}"#,
        )
        .await
        .unwrap();
    let report = f.verify(false).await;
    assert_eq!(report.tables[0].different.examples, vec![f.key(1)]);
    assert_eq!(report.divergent(), 1);
    let report = f.verify(true).await;
    assert_eq!(report.tables[0].remaining, Some(0));
    assert!(f.stored(&f.key(1)).await.is_none(), "repair invalidates");
    f.finish().await;
}

/// Runs the real binary with a deadline; returns (success, stdout, stderr).
fn run_cli(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let stdout = dir.join("stdout");
    let stderr = dir.join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cachesync"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .env("RUST_LOG", "warn")
        .env_remove("CACHESYNC_CONFIG")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("cachesync {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.success(),
        std::fs::read_to_string(stdout).unwrap(),
        std::fs::read_to_string(stderr).unwrap(),
    )
}

#[tokio::test]
async fn cli_exits_1_on_divergence_and_0_after_repair() {
    let f = Fixture::new("json", "write", 10).await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(
        dir.path(),
        &common::config_toml(
            "binlog",
            &format!(
                "[binlog]\ncheckpoint_key = \"{p}:t:checkpoint\"\n\
                 [[tables]]\nname = \"{}.t\"\nkey = \"{p}:t:{{id}}\"\n",
                f.db.name,
                p = f.prefix
            ),
        ),
    );
    let config = config.to_str().unwrap();
    let (ok, out, err) = run_cli(dir.path(), &["verify", "--config", config]);
    assert!(ok, "in sync at first\n{out}\n{err}");
    assert!(out.ends_with("in sync\n"), "{out}");

    damage(&f, "json").await;
    let (ok, out, err) = run_cli(dir.path(), &["verify", "--config", config, "--batch", "2"]);
    assert!(!ok, "divergence exits 1\n{out}\n{err}");
    let table = format!("{}.t", f.db.name);
    let counts = out
        .lines()
        .find(|l| l.starts_with(&table))
        .unwrap_or_else(|| panic!("a line for {table}\n{out}"));
    assert_eq!(
        counts.split_whitespace().collect::<Vec<_>>(),
        vec![table.as_str(), "5", "1", "1", "1"],
        "{out}"
    );
    assert!(out.contains(&format!("missing: {}", f.key(3))), "{out}");
    assert!(out.contains(&format!("extra: {}", f.key(99))), "{out}");
    assert!(out.contains(&format!("different: {}", f.key(2))), "{out}");
    assert!(out.ends_with("3 divergent keys\n"), "{out}");
    assert!(!err.contains("panicked"), "{err}");

    let (ok, out, err) = run_cli(dir.path(), &["verify", "--config", config, "--repair"]);
    assert!(ok, "repair fixes everything\n{out}\n{err}");
    assert!(out.ends_with("in sync\n"), "{out}");
    let (ok, out, _) = run_cli(dir.path(), &["verify", "--config", config]);
    assert!(ok && out.ends_with("in sync\n"), "{out}");
    f.assert_redis_equals_mysql().await;

    // A bad config is one `error:` line, exit 1.
    let bad = common::write_config(dir.path(), "strategy = \"cdc\"\n");
    let (ok, _, err) = run_cli(dir.path(), &["verify", "--config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.lines().any(|l| l.starts_with("error: ")), "{err}");
    f.finish().await;
}
