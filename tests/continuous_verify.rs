//! Continuous verification (`[verify]`) in a real `cachesync run`, against the dedicated
//! MariaDB and Redis:
//!
//! - `binlog_writes_made_without_the_binlog_are_found_and_repaired`: an UPDATE, an INSERT
//!   and a DELETE made with `SET SESSION sql_log_bin = 0` never reach the binlog; the
//!   daemon's verification must find and repair all three within its interval (a pass
//!   that was under way when they landed may miss them; the next one, started within one
//!   interval, may not), and its `/metrics` must count them for the table:
//!   `cachesync_verify_divergent_found_total` and `cachesync_verify_repaired_total` 3,
//!   `cachesync_verify_checked_total` at least the table's rows. Later binlog changes of
//!   the repaired rows still apply (the repair kept a version below theirs).
//! - `dual_write_changes_made_behind_its_back_are_repaired`: the same for a strategy
//!   that reads no binlog at all: SQL written straight to MySQL, not through cachesync.
//!
//! ```text
//! scripts/services.sh up
//! cargo test --test continuous_verify
//! ```
//!
//! Each test uses its own database, key prefix, checkpoint key, replica id and metrics
//! port; the daemon is killed when the test ends, pass or fail.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{TestDb, cachesync_command, free_port, http_get};

/// Seconds between the starts of two verification passes in these tests.
const INTERVAL_S: u64 = 2;
const GRACE_MS: u64 = 200;

/// A running `cachesync run`, killed on drop.
struct Daemon {
    child: Child,
    stderr: std::path::PathBuf,
    metrics_port: u16,
}

impl Daemon {
    fn start(dir: &Path, toml: &str, metrics_port: u16) -> Daemon {
        let config = common::write_config(dir, toml);
        let stderr = dir.join("stderr");
        let child = cachesync_command(&["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start cachesync run");
        Daemon {
            child,
            stderr,
            metrics_port,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The value of the counter `name{strategy,table}` in `/metrics`, if exported.
    fn counter(&self, name: &str, strategy: &str, table: &str) -> Option<f64> {
        let series = format!("{name}{{strategy=\"{strategy}\",table=\"{table}\"}} ");
        http_get(self.metrics_port, "/metrics")?
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
    }

    /// Waits until `check` holds, failing after `limit` with the daemon's log.
    async fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        mut check: impl AsyncFnMut() -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while !check().await {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "cachesync exited ({status}) waiting for {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not within {limit:?}: {what}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn toml(strategy: &str, db: &TestDb, prefix: &str, metrics_port: u16, extra: &str) -> String {
    format!(
        "name = \"{prefix}\"\nstrategy = \"{strategy}\"\n\
         [mysql]\nurl = \"{}\"\n\
         [redis]\nurl = \"{}\"\ntombstone_ttl = 60\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
         [verify]\ninterval = {INTERVAL_S}\nrows_per_second = 5000\nbatch = 50\ngrace_ms = {GRACE_MS}\n\
         {extra}\
         [[tables]]\nname = \"{}.items\"\nkey = \"{prefix}:t:{{id}}\"\n",
        common::mysql_url(),
        common::redis_url(),
        db.name
    )
}

/// The longest a divergence may wait for a pass to find and repair it: one interval
/// until the next pass starts, the grace period, and slack for the pass itself on a
/// shared machine.
fn repair_limit() -> Duration {
    Duration::from_secs(2 * INTERVAL_S + 3) + Duration::from_millis(GRACE_MS)
}

async fn create_items(db: &mut TestDb) {
    db.exec("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, n INT NOT NULL)")
        .await;
    db.exec("SET SESSION max_recursive_iterations = 100000")
        .await;
    db.exec(
        "INSERT INTO items WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300) \
         SELECT i, CONCAT('item ', i), 0 FROM s",
    )
    .await;
}

/// Writes three changes MySQL makes but no strategy hears of, on `db`'s connection with
/// `sql_log_bin = 0` when `unlogged`.
async fn write_behind_the_back(db: &mut TestDb, unlogged: bool) {
    if unlogged {
        db.exec("SET SESSION sql_log_bin = 0").await;
    }
    db.exec("UPDATE items SET name = 'changed quietly' WHERE id = 7")
        .await;
    db.exec("INSERT INTO items VALUES (1001, 'inserted quietly', 1)")
        .await;
    db.exec("DELETE FROM items WHERE id = 9").await;
    if unlogged {
        db.exec("SET SESSION sql_log_bin = 1").await;
    }
}

/// Redis holds MySQL's view of rows 7, 1001 and 9.
async fn repaired(prefix: &str) -> bool {
    let cached = common::converge::cached(prefix).await;
    cached.get(&format!("{prefix}:t:7")).map(String::as_str)
        == Some(r#"{"id":7,"name":"changed quietly","n":0}"#)
        && cached.get(&format!("{prefix}:t:1001")).map(String::as_str)
            == Some(r#"{"id":1001,"name":"inserted quietly","n":1}"#)
        && !cached.contains_key(&format!("{prefix}:t:9"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_writes_made_without_the_binlog_are_found_and_repaired() {
    let mut db = TestDb::create("cv_binlog").await;
    create_items(&mut db).await;
    let prefix = common::unique("cvb");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server_id = 400_000 + std::process::id() % 100_000;
    let binlog =
        format!("[binlog]\nserver_id = {server_id}\ncheckpoint_key = \"{prefix}:checkpoint\"\n");
    let mut daemon = Daemon::start(
        dir.path(),
        &toml("binlog", &db, &prefix, port, &binlog),
        port,
    );
    let table = format!("{}.items", db.name);
    // The snapshot is in and a first pass ran.
    daemon
        .wait_for(
            "a first verification pass",
            Duration::from_secs(60),
            async || daemon_counter(port, "cachesync_verify_passes_total", &table) >= 1.0,
        )
        .await;
    assert_eq!(
        daemon_counter(port, "cachesync_verify_divergent_found_total", &table),
        0.0,
        "a freshly loaded table has nothing to repair\n{}",
        daemon.log()
    );

    write_behind_the_back(&mut db, true).await;
    let written = Instant::now();
    daemon
        .wait_for("the unlogged writes repaired", repair_limit(), async || {
            repaired(&prefix).await
        })
        .await;
    println!("repaired {:?} after the unlogged writes", written.elapsed());
    daemon
        .wait_for(
            "the metrics to count the repairs",
            Duration::from_secs(10),
            async || daemon_counter(port, "cachesync_verify_repaired_total", &table) >= 3.0,
        )
        .await;
    assert_eq!(
        daemon.counter("cachesync_verify_divergent_found_total", "binlog", &table),
        Some(3.0),
        "{}",
        daemon.log()
    );
    assert_eq!(
        daemon.counter("cachesync_verify_repaired_total", "binlog", &table),
        Some(3.0)
    );
    assert!(daemon_counter(port, "cachesync_verify_checked_total", &table) >= 300.0);
    let log = daemon.log();
    assert!(
        log.contains(&format!("{prefix}:t:7")) && log.contains("differs from MySQL"),
        "each divergent key is logged:\n{log}"
    );

    // The binlog's own later changes of the repaired rows still land: the repairs kept a
    // version below theirs.
    db.exec("UPDATE items SET n = 42 WHERE id IN (7, 1001)")
        .await;
    db.exec("INSERT INTO items VALUES (9, 'back', 2)").await;
    daemon
        .wait_for(
            "later binlog changes",
            Duration::from_secs(20),
            async || {
                let cached = common::converge::cached(&prefix).await;
                cached.get(&format!("{prefix}:t:7")).map(String::as_str)
                    == Some(r#"{"id":7,"name":"changed quietly","n":42}"#)
                    && cached.get(&format!("{prefix}:t:1001")).map(String::as_str)
                        == Some(r#"{"id":1001,"name":"inserted quietly","n":42}"#)
                    && cached.get(&format!("{prefix}:t:9")).map(String::as_str)
                        == Some(r#"{"id":9,"name":"back","n":2}"#)
            },
        )
        .await;
    drop(daemon);
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_write_changes_made_behind_its_back_are_repaired() {
    let mut db = TestDb::create("cv_dual").await;
    create_items(&mut db).await;
    let prefix = common::unique("cvd");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The online snapshot loads the table at the first start; a first pass then finds
    // nothing to repair.
    let mut daemon = Daemon::start(
        dir.path(),
        &toml("dual-write", &db, &prefix, port, ""),
        port,
    );
    let table = format!("{}.items", db.name);
    daemon
        .wait_for(
            "a first verification pass",
            Duration::from_secs(60),
            async || daemon_counter(port, "cachesync_verify_passes_total", &table) >= 1.0,
        )
        .await;
    assert_eq!(common::converge::cached(&prefix).await.len(), 300);
    assert_eq!(
        daemon_counter(port, "cachesync_verify_divergent_found_total", &table),
        0.0,
        "a freshly loaded table has nothing to repair\n{}",
        daemon.log()
    );
    write_behind_the_back(&mut db, false).await;
    daemon
        .wait_for("the direct writes repaired", repair_limit(), async || {
            repaired(&prefix).await
        })
        .await;
    daemon
        .wait_for(
            "the metrics to count the repairs",
            Duration::from_secs(10),
            async || daemon_counter(port, "cachesync_verify_repaired_total", &table) >= 3.0,
        )
        .await;
    assert_eq!(
        daemon.counter(
            "cachesync_verify_divergent_found_total",
            "dual-write",
            &table
        ),
        Some(3.0),
        "{}",
        daemon.log()
    );
    drop(daemon);
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}

/// A counter of the daemon on `port` for `table`, whatever its strategy; 0 when absent.
fn daemon_counter(port: u16, name: &str, table: &str) -> f64 {
    let suffix = format!(",table=\"{table}\"}} ");
    http_get(port, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(&suffix))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}
