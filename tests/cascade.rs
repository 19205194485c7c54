//! Foreign-key cascades with the binlog strategy, against the dedicated MariaDB and Redis.
//! InnoDB does not log the child rows a cascade changes; cachesync must make Redis equal
//! MySQL anyway, without `verify`:
//!
//! - `one_level_cascades_under_concurrent_child_writes`: `ON UPDATE CASCADE` /
//!   `ON DELETE CASCADE` (city → country) and `ON UPDATE SET NULL` / `ON DELETE SET NULL`
//!   (store → country) from an unsynced parent, while writers keep changing (even) child
//!   rows; the odd child rows are changed only by the cascades, so a missed cascade shows.
//! - `two_level_cascades_through_composite_keys`: region → city (primary key
//!   `(region_id, city_no)`, so a cascaded update moves the city's Redis key) → address
//!   (`ON UPDATE CASCADE ON DELETE SET NULL`) and parcel (`CASCADE` both ways), with a
//!   synced parent and concurrent child writers; and a city moved by its region's
//!   cascade that moves again by its own change in the same transaction.
//! - `a_parent_change_and_a_child_change_in_one_transaction`: both orders, for updates,
//!   deletes and a parent deleted and inserted again in the same transaction.
//! - `doctor_lists_the_cascades_and_what_cachesync_does`.
//!
//! ```text
//! scripts/services.sh up
//! cargo test --test cascade
//! ```
//!
//! Each test uses its own database, key prefix, checkpoint key and replica server id.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cachesync::cmd::run::Daemon;
use cachesync::config::{Config, RawConfig};
use cachesync::model::table::SyncedTable;
use common::TestDb;
use common::converge::wait_tables_converged;
use mysql_async::prelude::Queryable;
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

/// A replica id no other test of this run uses.
fn server_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    300_000 + (std::process::id() % 10_000) * 10 + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A binlog config syncing `tables` (`(table, key placeholders)`) of `db` as
/// `<prefix>:<table>:<placeholders>`.
fn config(db: &TestDb, prefix: &str, tables: &[(&str, &str)]) -> Config {
    let entries: Vec<serde_json::Value> = tables
        .iter()
        .map(|(table, key)| {
            serde_json::json!({
                "name": format!("{}.{table}", db.name),
                "key": format!("{prefix}:{table}:{key}"),
            })
        })
        .collect();
    let tree = serde_json::json!({
        "strategy": "binlog",
        "mysql": { "url": common::mysql_url() },
        "redis": { "url": common::redis_url(), "tombstone_ttl": 60 },
        "binlog": { "server_id": server_id(), "checkpoint_key": format!("{prefix}:checkpoint"), "batch_size": 200 },
        "tables": entries,
    });
    RawConfig::from_tree(tree).unwrap().validate().unwrap()
}

/// Starts the strategy and waits for its snapshot's checkpoint.
async fn start(config: &Config, prefix: &str) -> Daemon {
    let daemon = Daemon::start(config).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut redis = common::redis_conn().await;
    while !redis
        .exists::<_, bool>(format!("{prefix}:checkpoint"))
        .await
        .unwrap()
    {
        assert!(Instant::now() < deadline, "no checkpoint within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon
}

async fn finish(daemon: Daemon, prefix: &str, db: TestDb) {
    tokio::time::timeout(Duration::from_secs(30), daemon.stop())
        .await
        .expect("the strategy stops within 30 s")
        .unwrap();
    common::clear_redis_prefix(prefix).await;
    db.drop_db().await;
}

/// The plan of the synced table `name`.
fn table<'d>(daemon: &'d Daemon, name: &str) -> &'d SyncedTable {
    daemon
        .services()
        .tables
        .iter()
        .find(|t| t.schema.table == name)
        .unwrap_or_else(|| panic!("{name} is synced"))
}

/// Writers that run `statements(rng)` in a loop on their own connections until stopped;
/// errors (a row whose parent just went away) are expected and ignored. Returns the
/// statements run.
fn writers(
    database: &str,
    stop: &CancellationToken,
    statements: fn(&mut rand::rngs::StdRng) -> String,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..2u64)
        .map(|w| {
            let stop = stop.clone();
            let database = database.to_owned();
            tokio::spawn(async move {
                let mut conn = common::mysql_conn().await;
                conn.query_drop(format!("USE `{database}`")).await.unwrap();
                let mut rng = rand::rngs::StdRng::seed_from_u64(w);
                let mut n = 0;
                while !stop.is_cancelled() {
                    let _ = conn.query_drop(statements(&mut rng)).await;
                    n += 1;
                }
                n
            })
        })
        .collect()
}

async fn stop_writers(stop: CancellationToken, writers: Vec<tokio::task::JoinHandle<u64>>) {
    stop.cancel();
    let mut ran = 0;
    for writer in writers {
        ran += writer.await.unwrap();
    }
    assert!(ran > 0, "the writers ran");
}

const ONE_LEVEL: &[&str] = &[
    "CREATE TABLE country (country_id INT PRIMARY KEY, name VARCHAR(40) NOT NULL)",
    "CREATE TABLE city (city_id INT PRIMARY KEY, country_id INT NOT NULL, \
     n INT NOT NULL DEFAULT 0, KEY (country_id), \
     CONSTRAINT city_country FOREIGN KEY (country_id) REFERENCES country (country_id) \
     ON UPDATE CASCADE ON DELETE CASCADE)",
    "CREATE TABLE store (store_id INT PRIMARY KEY, country_id INT NULL, \
     n INT NOT NULL DEFAULT 0, KEY (country_id), \
     CONSTRAINT store_country FOREIGN KEY (country_id) REFERENCES country (country_id) \
     ON UPDATE SET NULL ON DELETE SET NULL)",
    "SET SESSION max_recursive_iterations = 100000",
    "INSERT INTO country WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 20) \
     SELECT i, CONCAT('country ', i) FROM s",
    "INSERT INTO city (city_id, country_id) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 400) \
     SELECT i, i % 20 + 1 FROM s",
    "INSERT INTO store (store_id, country_id) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 200) \
     SELECT i, i % 20 + 1 FROM s",
];

/// Writers change even rows only, so the odd ones change by cascades alone.
fn one_level_writes(rng: &mut rand::rngs::StdRng) -> String {
    match rng.random_range(0..10) {
        0 => format!(
            "INSERT IGNORE INTO city (city_id, country_id) VALUES ({}, {})",
            1000 + 2 * rng.random_range(0..500),
            rng.random_range(1..=20)
        ),
        1 => format!(
            "DELETE FROM city WHERE city_id = {}",
            2 * rng.random_range(1..=200)
        ),
        2..=5 => format!(
            "UPDATE store SET n = n + 1 WHERE store_id = {}",
            2 * rng.random_range(1..=100)
        ),
        _ => format!(
            "UPDATE city SET n = n + 1 WHERE city_id = {}",
            2 * rng.random_range(1..=500)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_level_cascades_under_concurrent_child_writes() {
    let mut db = TestDb::create("cascade_one").await;
    for sql in ONE_LEVEL {
        db.exec(sql).await;
    }
    let prefix = common::unique("casc1");
    // The parent, country, is not synced: its rows are read only for the cascades.
    let config = config(
        &db,
        &prefix,
        &[("city", "{city_id}"), ("store", "{store_id}")],
    );
    let daemon = start(&config, &prefix).await;
    let stop = CancellationToken::new();
    let running = writers(&db.name, &stop, one_level_writes);
    for round in 0..6 {
        // ON UPDATE: city follows, store's reference becomes NULL.
        let moved = 1 + round * 3;
        db.exec(&format!(
            "UPDATE country SET country_id = country_id + 100 WHERE country_id = {moved}"
        ))
        .await;
        // ON DELETE: cities go, stores' references become NULL.
        db.exec(&format!(
            "DELETE FROM country WHERE country_id = {}",
            moved + 1
        ))
        .await;
        // Several parents in one statement.
        if round == 3 {
            db.exec(
                "UPDATE country SET country_id = country_id + 1000 WHERE country_id IN (3, 6, 9)",
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_writers(stop, running).await;

    // The cascades really happened in MySQL, to rows no writer touched.
    let moved: u64 = db
        .conn
        .query_first("SELECT COUNT(*) FROM city WHERE country_id > 100 AND city_id % 2 = 1")
        .await
        .unwrap()
        .unwrap();
    let orphaned: u64 = db
        .conn
        .query_first("SELECT COUNT(*) FROM store WHERE country_id IS NULL AND store_id % 2 = 1")
        .await
        .unwrap()
        .unwrap();
    let cities: u64 = db
        .conn
        .query_first("SELECT COUNT(*) FROM city WHERE city_id <= 400 AND city_id % 2 = 1")
        .await
        .unwrap()
        .unwrap();
    assert!(
        moved > 0 && orphaned > 0 && cities < 200,
        "{moved} {orphaned} {cities}"
    );

    let tables = [table(&daemon, "city"), table(&daemon, "store")];
    wait_tables_converged(&mut db, &tables, "one level of cascades").await;
    finish(daemon, &prefix, db).await;
}

const TWO_LEVELS: &[&str] = &[
    "CREATE TABLE region (region_id INT PRIMARY KEY, name VARCHAR(40) NOT NULL)",
    "CREATE TABLE city (region_id INT NOT NULL, city_no INT NOT NULL, \
     n INT NOT NULL DEFAULT 0, PRIMARY KEY (region_id, city_no), \
     CONSTRAINT city_region FOREIGN KEY (region_id) REFERENCES region (region_id) \
     ON UPDATE CASCADE ON DELETE CASCADE)",
    "CREATE TABLE address (address_id INT PRIMARY KEY, region_id INT NULL, city_no INT NULL, \
     n INT NOT NULL DEFAULT 0, KEY (region_id, city_no), \
     CONSTRAINT address_city FOREIGN KEY (region_id, city_no) REFERENCES city (region_id, city_no) \
     ON UPDATE CASCADE ON DELETE SET NULL)",
    "CREATE TABLE parcel (parcel_id INT PRIMARY KEY, region_id INT NOT NULL, city_no INT NOT NULL, \
     n INT NOT NULL DEFAULT 0, KEY (region_id, city_no), \
     CONSTRAINT parcel_city FOREIGN KEY (region_id, city_no) REFERENCES city (region_id, city_no) \
     ON UPDATE CASCADE ON DELETE CASCADE)",
    "SET SESSION max_recursive_iterations = 100000",
    "INSERT INTO region WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 10) \
     SELECT i, CONCAT('region ', i) FROM s",
    "INSERT INTO city (region_id, city_no) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100) \
     SELECT i % 10 + 1, i FROM s",
    "INSERT INTO address (address_id, region_id, city_no) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300) \
     SELECT i, i % 100 % 10 + 1, i % 100 + 0 FROM s WHERE i % 100 > 0",
    "INSERT INTO parcel (parcel_id, region_id, city_no) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300) \
     SELECT i, i % 100 % 10 + 1, i % 100 + 0 FROM s WHERE i % 100 > 0",
];

/// Writers change even rows only, so the odd ones change by cascades alone.
fn two_level_writes(rng: &mut rand::rngs::StdRng) -> String {
    let id = 2 * rng.random_range(1..=150);
    match rng.random_range(0..4) {
        0 => format!("UPDATE address SET n = n + 1 WHERE address_id = {id}"),
        1 => format!("UPDATE parcel SET n = n + 1 WHERE parcel_id = {id}"),
        2 => format!(
            "UPDATE city SET n = n + 1 WHERE city_no = {}",
            2 * rng.random_range(1..=50)
        ),
        _ => format!("DELETE FROM parcel WHERE parcel_id = {id} AND n > 3"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_level_cascades_through_composite_keys() {
    let mut db = TestDb::create("cascade_two").await;
    for sql in TWO_LEVELS {
        db.exec(sql).await;
    }
    let prefix = common::unique("casc2");
    let config = config(
        &db,
        &prefix,
        &[
            ("region", "{region_id}"),
            ("city", "{region_id}:{city_no}"),
            ("address", "{address_id}"),
            ("parcel", "{parcel_id}"),
        ],
    );
    let daemon = start(&config, &prefix).await;
    let stop = CancellationToken::new();
    let running = writers(&db.name, &stop, two_level_writes);
    // Odd addresses and parcels are in even regions.
    for (moved, deleted) in [(2, 1), (4, 8), (6, 3), (10, 5)] {
        // city's key moves; address and parcel follow (second level).
        db.exec(&format!(
            "UPDATE region SET region_id = region_id + 100 WHERE region_id = {moved}"
        ))
        .await;
        // cities go; addresses lose their city, parcels go (second level).
        db.exec(&format!("DELETE FROM region WHERE region_id = {deleted}"))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_writers(stop, running).await;
    // A city moved by its region's cascade then moves again by its own change, in one
    // transaction: its key before the cascade must go, whatever it is called now.
    db.exec(
        "BEGIN; UPDATE region SET region_id = 209 WHERE region_id = 9; \
         UPDATE city SET city_no = 999 WHERE region_id = 209 AND city_no = 8; COMMIT",
    )
    .await;

    let moved: u64 = db
        .conn
        .query_first("SELECT COUNT(*) FROM address WHERE region_id > 100 AND address_id % 2 = 1")
        .await
        .unwrap()
        .unwrap();
    let orphaned: u64 = db
        .conn
        .query_first("SELECT COUNT(*) FROM address WHERE region_id IS NULL AND address_id % 2 = 1")
        .await
        .unwrap()
        .unwrap();
    let parcels: u64 = db
        .conn
        .query_first("SELECT COUNT(*) FROM parcel WHERE parcel_id % 2 = 1")
        .await
        .unwrap()
        .unwrap();
    assert!(
        moved > 0 && orphaned > 0 && parcels < 149,
        "{moved} {orphaned} {parcels}"
    );

    let tables = ["region", "city", "address", "parcel"].map(|t| table(&daemon, t));
    wait_tables_converged(&mut db, &tables, "two levels of cascades").await;
    finish(daemon, &prefix, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_change_and_a_child_change_in_one_transaction() {
    let mut db = TestDb::create("cascade_tx").await;
    for sql in ONE_LEVEL {
        db.exec(sql).await;
    }
    let prefix = common::unique("casc_tx");
    let config = config(
        &db,
        &prefix,
        &[
            ("country", "{country_id}"),
            ("city", "{city_id}"),
            ("store", "{store_id}"),
        ],
    );
    let daemon = start(&config, &prefix).await;
    // City c belongs to country c % 20 + 1; city 20 to country 1, city 1 to country 2, ...
    for tx in [
        // The parent's key changes, then a child of it changes.
        "BEGIN; UPDATE country SET country_id = 500 WHERE country_id = 1; \
         UPDATE city SET n = 77 WHERE city_id = 20; COMMIT",
        // A child changes, then its parent's key changes.
        "BEGIN; UPDATE city SET n = 88 WHERE city_id = 1; \
         UPDATE country SET country_id = 600 WHERE country_id = 2; COMMIT",
        // A child changes, then its parent is deleted.
        "BEGIN; UPDATE city SET n = 99 WHERE city_id = 2; \
         UPDATE store SET n = 5 WHERE store_id = 2; \
         DELETE FROM country WHERE country_id = 3; COMMIT",
        // The parent is deleted and inserted again, and gets a new child.
        "BEGIN; DELETE FROM country WHERE country_id = 4; \
         INSERT INTO country VALUES (4, 'again'); \
         INSERT INTO city (city_id, country_id, n) VALUES (9001, 4, 1); COMMIT",
        // A child moves to another parent, then its old parent goes.
        "BEGIN; UPDATE city SET country_id = 7 WHERE city_id = 4; \
         UPDATE store SET country_id = 7 WHERE store_id = 4; \
         DELETE FROM country WHERE country_id = 5; COMMIT",
    ] {
        db.exec(tx).await;
    }
    let tables = ["country", "city", "store"].map(|t| table(&daemon, t));
    wait_tables_converged(&mut db, &tables, "parent and child in one transaction").await;
    // The outcome is what the transactions meant, not just equal to MySQL.
    let cached = common::converge::cached_table(tables[1]).await;
    let city = |id: u32| cached.get(&format!("{prefix}:city:{id}")).cloned();
    assert_eq!(
        city(20).as_deref(),
        Some(r#"{"city_id":20,"country_id":500,"n":77}"#)
    );
    assert_eq!(
        city(1).as_deref(),
        Some(r#"{"city_id":1,"country_id":600,"n":88}"#)
    );
    assert_eq!(city(2), None, "deleted with country 3");
    assert_eq!(city(3), None, "deleted with country 4");
    assert_eq!(
        city(9001).as_deref(),
        Some(r#"{"city_id":9001,"country_id":4,"n":1}"#)
    );
    assert_eq!(
        city(4).as_deref(),
        Some(r#"{"city_id":4,"country_id":7,"n":0}"#)
    );
    let stores = common::converge::cached_table(tables[2]).await;
    assert_eq!(
        stores.get(&format!("{prefix}:store:2")).map(String::as_str),
        Some(r#"{"store_id":2,"country_id":null,"n":5}"#)
    );
    assert_eq!(
        stores.get(&format!("{prefix}:store:4")).map(String::as_str),
        Some(r#"{"store_id":4,"country_id":7,"n":0}"#)
    );
    finish(daemon, &prefix, db).await;
}

#[tokio::test]
async fn doctor_lists_the_cascades_and_what_cachesync_does() {
    let mut db = TestDb::create("cascade_doctor").await;
    for sql in &TWO_LEVELS[..4] {
        db.exec(sql).await;
    }
    let prefix = common::unique("casc_doc");
    let dir = tempfile::tempdir().unwrap();
    // address is synced but city, between it and region, is not.
    let toml = common::config_toml(
        "binlog",
        &format!(
            "[binlog]\nserver_id = {}\n\
             [[tables]]\nname = \"{db}.parcel\"\nkey = \"{prefix}:parcel:{{parcel_id}}\"\n\
             [[tables]]\nname = \"{db}.address\"\nkey = \"{prefix}:address:{{address_id}}\"\n",
            server_id(),
            db = db.name
        ),
    );
    let path = common::write_config(dir.path(), &toml);
    let out = common::cachesync_command(&["doctor", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |needle: &str| {
        stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{stdout}"))
            .to_owned()
    };
    let parcel = line(&format!("{}.parcel(region_id, city_no)", db.name));
    assert!(
        parcel.contains("ON UPDATE CASCADE ON DELETE CASCADE"),
        "{parcel}"
    );
    assert!(parcel.contains("re-reads the"), "{parcel}");
    assert!(parcel.contains("deletes them"), "{parcel}");
    let address = line(&format!("{}.address(region_id, city_no)", db.name));
    assert!(address.contains("ON DELETE SET NULL"), "{address}");
    // The chain region → city → address/parcel goes through an unsynced table.
    let chain = line(&format!("{}.city is not synced", db.name));
    assert!(chain.contains("not followed"), "{chain}");
    db.drop_db().await;
}
