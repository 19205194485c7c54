//! Shared helpers for the service-backed tests.
//!
//! The tests talk to real MariaDB, Redis and RabbitMQ. Start them with
//! `scripts/services.sh up` (a dedicated MariaDB with row binlog on 3307, Redis on 6380,
//! RabbitMQ on 5672); point elsewhere with `CACHESYNC_TEST_MYSQL_URL`,
//! `CACHESYNC_TEST_REDIS_URL` and `CACHESYNC_TEST_AMQP_URL`. A missing service fails the
//! test with a message saying how to start it — never a silent skip.
//!
//! Every test works in its own schema and Redis key prefix ([`unique`]) so the suite
//! runs in parallel.

#![allow(dead_code)]

pub mod all_types;
pub mod api_state;
pub mod converge;
pub mod daemon;
pub mod mariadb;
pub mod redis_server;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;

pub fn mysql_url() -> String {
    std::env::var("CACHESYNC_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3307".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("CACHESYNC_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6380".to_owned())
}

pub fn amqp_url() -> String {
    std::env::var("CACHESYNC_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

const HOW_TO_START: &str = "start the test services with `scripts/services.sh up` \
     (or set CACHESYNC_TEST_MYSQL_URL / CACHESYNC_TEST_REDIS_URL / CACHESYNC_TEST_AMQP_URL)";

/// A name no other test (or earlier run) uses: `prefix_<pid>_<n>_<time>`.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{n}_{nanos:x}", std::process::id())
}

/// A connection to the test MariaDB, or a panic that says how to start it.
pub async fn mysql_conn() -> mysql_async::Conn {
    let url = mysql_url();
    let opts = mysql_async::Opts::from_url(&url).expect("CACHESYNC_TEST_MYSQL_URL parses");
    match mysql_async::Conn::new(opts).await {
        Ok(conn) => conn,
        Err(e) => panic!("MariaDB at {url} is not reachable ({e}): {HOW_TO_START}"),
    }
}

/// A Redis connection to the test Redis, or a panic that says how to start it.
pub async fn redis_conn() -> redis::aio::MultiplexedConnection {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).expect("CACHESYNC_TEST_REDIS_URL parses");
    match client.get_multiplexed_async_connection().await {
        Ok(conn) => conn,
        Err(e) => panic!("Redis at {url} is not reachable ({e}): {HOW_TO_START}"),
    }
}

/// A fresh database of the test MariaDB, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub name: String,
    pub conn: mysql_async::Conn,
}

impl TestDb {
    pub async fn create(prefix: &str) -> TestDb {
        let name = unique(&format!("cs_{prefix}"));
        let mut conn = mysql_conn().await;
        conn.query_drop(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            .await
            .expect("create the test database");
        conn.query_drop("SET time_zone = '+00:00'").await.unwrap();
        conn.query_drop(format!("USE `{name}`")).await.unwrap();
        TestDb { name, conn }
    }

    pub async fn exec(&mut self, sql: &str) {
        self.conn
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn drop_db(mut self) {
        self.conn
            .query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .await
            .ok();
        self.conn.disconnect().await.ok();
    }
}

/// The keys matching `pattern`, by `SCAN` (unlike `KEYS`, never one long command while
/// another test holds a million keys), each once.
pub async fn scan_keys(
    redis: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> Vec<String> {
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(redis)
            .await
            .unwrap();
        found.extend(keys);
        if next == 0 {
            // SCAN may return a key more than once.
            found.sort_unstable();
            found.dedup();
            return found;
        }
        cursor = next;
    }
}

/// Deletes every Redis key starting with `prefix`, and their tombstones
/// (`{<key>}:cachesync:tombstone`).
pub async fn clear_redis_prefix(prefix: &str) {
    let mut conn = redis_conn().await;
    let mut keys: Vec<String> = Vec::new();
    for pattern in [format!("{prefix}*"), format!("{{{prefix}*")] {
        let found: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(found);
    }
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Writes `toml` to `dir/cachesync.toml` and returns its path.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("cachesync.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// A config for `tables` (TOML `[[tables]]` entries) against the test services.
pub fn config_toml(strategy: &str, tables: &str) -> String {
    format!(
        "strategy = \"{strategy}\"\n\
         [mysql]\nurl = \"{}\"\n\
         [redis]\nurl = \"{}\"\n\
         [amqp]\nurl = \"{}\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         {tables}\n",
        mysql_url(),
        redis_url(),
        amqp_url()
    )
}

/// A validated config for the test services with the single `[[tables]]` entry `table`
/// (its JSON form) and `redis.tombstone_ttl` of 60 s.
pub fn config_with_table(strategy: &str, table: serde_json::Value) -> cachesync::config::Config {
    let tree = serde_json::json!({
        "strategy": strategy,
        "mysql": { "url": mysql_url() },
        "redis": { "url": redis_url(), "tombstone_ttl": 60 },
        "tables": [table],
    });
    cachesync::config::RawConfig::from_tree(tree)
        .expect("test config has no unknown keys")
        .validate()
        .expect("test config is valid")
}

/// Plans the config's first table, which must exist in `db`, as `cachesync run` would.
pub async fn synced_table(
    db: &mut TestDb,
    config: &cachesync::config::Config,
) -> cachesync::model::table::SyncedTable {
    let table = &config.tables[0];
    let schema = cachesync::mysql::schema::read_table(&mut db.conn, &table.database, &table.table)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{} exists", table.qualified_name()));
    cachesync::model::table::SyncedTable::plan(table, schema).unwrap()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` from 127.0.0.1:`port` over HTTP/1.0: the body of a 200 answer, `None`
/// otherwise (no HTTP client dependency for a scrape).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.lines()
        .next()?
        .contains(" 200 ")
        .then(|| body.to_owned())
}

/// Deletes the queues and exchanges a test declared as `<prefix>.q`, `<prefix>.dead`,
/// `<prefix>.x` and `<prefix>.x.dead`, so per-test topology does not pile up in the broker.
pub async fn delete_amqp_topology(prefix: &str) {
    let Ok(conn) =
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    if let Ok(channel) = conn.create_channel().await {
        for queue in [format!("{prefix}.q"), format!("{prefix}.dead")] {
            channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await
                .ok();
        }
        for exchange in [format!("{prefix}.x"), format!("{prefix}.x.dead")] {
            channel
                .exchange_delete(exchange.as_str().into(), Default::default())
                .await
                .ok();
        }
    }
    conn.close(200, "done".into()).await.ok();
}

/// The `cachesync` binary with nothing from the environment that would change its config
/// (`CACHESYNC_CONFIG`, `CACHESYNC__*`), logging at info, and no `RUST_BACKTRACE` (so a
/// panic prints the hint the CLI tests look for).
pub fn cachesync_command(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cachesync"));
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env_remove("CACHESYNC_CONFIG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CACHESYNC__") {
            cmd.env_remove(name);
        }
    }
    cmd
}
