//! Hostile input and operator mistakes (issue 18): one regression test per finding,
//! against real MariaDB, Redis and RabbitMQ.
//!
//! 1. A row the binlog cannot decode (an invalid JSON document stored with
//!    `check_constraint_checks=0`) does not stop the stream: its key is removed, the
//!    event is dead-lettered, the fixed row comes back, a restart resumes, and
//!    `snapshot`/`verify` go on past it.
//! 2. The API closes connections that never finish their request head, answers a
//!    stalled body 408, and sheds connections beyond its limit with 503 (logged),
//!    staying responsive.
//! 3. A dual-write start as a SELECT-only MySQL user, a binlog start without replication
//!    grants and an mq start with a wrong broker password fail fast, naming what to
//!    grant or fix; `doctor` says so too.
//! 4. The API (writes and reads) and the mq consumer follow DDL without a restart; a
//!    short `BINARY(16)` key means the zero-padded one for PUT, GET and DELETE alike.
//! 5. Key templates escape their values: rows whose key values differ only in where a
//!    separator sits get distinct keys, and no row key equals a companion key.
//! 6. A DELETE under a case-insensitive collation removes the key of the row MySQL
//!    deleted (dual-write and mq).
//! 7. JSON column numbers reach MySQL and Redis exactly as written, and `verify` sees a
//!    changed number.
//! 8. A broker password with a raw `/` never shows in `doctor` or `/readyz`.
//! 9. A tokenless API refuses a non-loopback listen address, blank tokens are refused,
//!    a non-loopback `metrics.listen` is a `doctor` note, and a tokenless loopback API
//!    refuses foreign `Host` headers (DNS rebinding).
//!
//! Run `scripts/services.sh up` first. Each test uses its own database, key prefix,
//! MySQL users, queues and listener.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cachesync::api::{self, ApiState, Readiness};
use cachesync::cmd::run::Daemon;
use cachesync::config::{Config, RawConfig};
use common::TestDb;
use mysql_async::prelude::Queryable;
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A replica id no other test of this run uses.
fn server_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    300_000 + (std::process::id() % 10_000) * 10 + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A validated config for `strategy` over `tables` (JSON `[[tables]]` entries), with the
/// test's own checkpoint key, replica id, queues and outbox; `mysql_url`/`amqp_url`
/// default to the test services.
fn config(
    strategy: &str,
    prefix: &str,
    db: &str,
    tables: Json,
    mysql_url: Option<&str>,
    amqp_url: Option<&str>,
) -> Config {
    let mut tree = json!({
        "strategy": strategy,
        "mysql": { "url": mysql_url.map_or_else(common::mysql_url, str::to_owned) },
        "redis": { "url": common::redis_url(), "tombstone_ttl": 60 },
        "binlog": {
            "server_id": server_id(),
            "checkpoint_key": format!("{prefix}:checkpoint"),
            "dead_letter_key": format!("{prefix}:dead-letter"),
        },
        "tables": tables,
    });
    if strategy == "mq" {
        tree["amqp"] = json!({
            "url": amqp_url.map_or_else(common::amqp_url, str::to_owned),
            "exchange": format!("{prefix}.x"),
            "queue": format!("{prefix}.q"),
            "dead_letter_queue": format!("{prefix}.dead"),
            "outbox_table": format!("{db}.outbox"),
        });
    }
    RawConfig::from_tree(tree).unwrap().validate().unwrap()
}

/// One `[[tables]]` entry.
fn table(db: &TestDb, name: &str, key: &str) -> Json {
    json!({ "name": format!("{}.{name}", db.name), "key": key })
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

async fn exists(key: &str) -> bool {
    let mut redis = common::redis_conn().await;
    redis.exists(key).await.unwrap()
}

async fn get(key: &str) -> Option<String> {
    let mut redis = common::redis_conn().await;
    redis.get(key).await.unwrap()
}

/// The strategy stops the way SIGTERM stops it, within 30 s.
async fn stop(daemon: Daemon) {
    tokio::time::timeout(Duration::from_secs(30), daemon.stop())
        .await
        .expect("the strategy stops within 30 s")
        .expect("the strategy stops cleanly");
}

/// A started strategy with the sidecar API in front of it on `127.0.0.1:0`.
struct Api {
    daemon: Daemon,
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<cachesync::Result<()>>,
}

/// An HTTP answer: status and body (JSON, or `Json::Null` with the text in `text`).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Json,
    text: String,
}

impl Api {
    async fn start(config: &Config) -> Api {
        let daemon = Daemon::start(config).await.unwrap();
        let services = daemon.services();
        let amqp = config
            .amqp
            .as_ref()
            .filter(|_| config.strategy.needs_broker())
            .map(|a| a.url.as_str());
        let readiness = Readiness::new(
            services.pool.clone(),
            &config.mysql_url,
            &config.redis_url,
            amqp,
        )
        .unwrap();
        let state = ApiState::new(
            daemon.strategy().clone(),
            services.tables.clone(),
            readiness,
            None,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(api::serve(listener, state, shutdown.clone()));
        Api {
            daemon,
            base,
            http: reqwest::Client::new(),
            shutdown,
            server,
        }
    }

    fn rows(&self, table: &str) -> String {
        format!("{}/v1/tables/{table}/rows", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        let text = response.text().await.unwrap();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Json::Null),
            text,
        }
    }

    async fn put(&self, table: &str, body: Json) -> Answer {
        self.send(self.http.put(self.rows(table)).json(&body)).await
    }

    async fn put_raw(&self, table: &str, body: String) -> Answer {
        self.send(
            self.http
                .put(self.rows(table))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    async fn delete(&self, table: &str, body: Json) -> Answer {
        self.send(self.http.delete(self.rows(table)).json(&body))
            .await
    }

    async fn get(&self, table: &str, query: &[(&str, &str)]) -> Answer {
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        self.send(
            self.http
                .get(format!("{}?{}", self.rows(table), query.join("&"))),
        )
        .await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the API stops within 10 s")
            .unwrap()
            .expect("the API stops cleanly");
        stop(self.daemon).await;
    }
}

/// `text` for a query string: every byte but unreserved ASCII as `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A MySQL user with password `pw` allowed only `SELECT` on `db`; dropped by the caller
/// (`DROP USER`). Returns its name and `mysql.url`.
async fn select_only_user(db: &mut TestDb, tag: &str) -> (String, String) {
    let user = common::unique(tag);
    db.exec(&format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'"))
        .await;
    db.exec(&format!("GRANT SELECT ON `{}`.* TO '{user}'@'%'", db.name))
        .await;
    let url = common::mysql_url().replacen("://root@", &format!("://{user}:pw@"), 1);
    assert_ne!(url, common::mysql_url(), "the test MySQL URL names root");
    (user, url)
}

// ---------------------------------------------------------------------------------------
// 1. Poison rows

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_binlog_cannot_decode_never_stops_the_stream() {
    let mut db = TestDb::create("poison").await;
    db.exec("CREATE TABLE docs (id INT PRIMARY KEY, doc JSON, note VARCHAR(20))")
        .await;
    db.exec(r#"INSERT INTO docs VALUES (1, '{"a":1}', 'one'), (2, '{"b":2}', 'two')"#)
        .await;
    let prefix = common::unique("poison");
    let key = |id: u32| format!("{prefix}:t:{id}");
    let config = config(
        "binlog",
        &prefix,
        &db.name,
        json!([table(&db, "docs", &format!("{prefix}:t:{{id}}"))]),
        None,
        None,
    );
    let daemon = Daemon::start(&config).await.unwrap();
    eventually(
        "the snapshot loads rows 1 and 2",
        Duration::from_secs(20),
        || async { exists(&key(1)).await && exists(&key(2)).await },
    )
    .await;

    // Invalid JSON documents, stored past the CHECK constraint by an ordinary SQL writer.
    db.exec("SET SESSION check_constraint_checks = 0").await;
    db.exec("UPDATE docs SET doc = '{broken' WHERE id = 1")
        .await;
    db.exec("INSERT INTO docs VALUES (3, '[1,', 'three')").await;
    db.exec("SET SESSION check_constraint_checks = 1").await;
    db.exec(r#"INSERT INTO docs VALUES (4, '{"d":4}', 'four')"#)
        .await;
    eventually(
        "row 4, written after the poison rows, arrives",
        Duration::from_secs(20),
        || async { exists(&key(4)).await || daemon.is_finished() },
    )
    .await;
    assert!(
        !daemon.is_finished(),
        "the binlog strategy stopped on an undecodable row"
    );
    assert!(
        !exists(&key(1)).await,
        "the poisoned row's old value is removed (readers fall back to MySQL)"
    );
    assert!(!exists(&key(3)).await);
    // Each is dead-lettered with its table, key, column, reason and position.
    let letters = dead_letters(&config).await;
    assert_eq!(letters.len(), 2, "{letters:#?}");
    for (letter, id) in letters.iter().rev().zip([1, 3]) {
        assert_eq!(letter["source"], "binlog");
        assert_eq!(letter["table"], format!("{}.docs", db.name));
        assert_eq!(letter["key"], key(id));
        assert_eq!(letter["column"], "doc");
        assert!(
            letter["reason"]
                .as_str()
                .unwrap()
                .starts_with("invalid JSON document"),
            "{letter}"
        );
        assert!(
            letter["position"].as_str().unwrap().contains(':'),
            "file:position: {letter}"
        );
    }

    // The row fixed: it comes back, although its before image is the poison.
    db.exec(r#"UPDATE docs SET doc = '{"a":2}' WHERE id = 1"#)
        .await;
    eventually(
        "the fixed row 1 is back",
        Duration::from_secs(20),
        || async {
            get(&key(1))
                .await
                .is_some_and(|doc| doc.contains(r#""a":2"#))
        },
    )
    .await;

    // A restart resumes from its checkpoint, past the poison.
    stop(daemon).await;
    db.exec(r#"INSERT INTO docs VALUES (5, '{}', 'five')"#)
        .await;
    let daemon = Daemon::start(&config).await.unwrap();
    eventually(
        "row 5 arrives after a restart",
        Duration::from_secs(20),
        || async { exists(&key(5)).await || daemon.is_finished() },
    )
    .await;
    assert!(!daemon.is_finished(), "the restart died at the checkpoint");
    stop(daemon).await;

    // `snapshot` and `verify` go on past row 3, still poisoned.
    let snapshot = cachesync::cmd::snapshot::snapshot(&config, &[], true).await;
    assert!(snapshot.is_ok(), "snapshot stopped: {:?}", snapshot.err());
    assert!(!exists(&key(3)).await && exists(&key(5)).await);
    let letters = dead_letters(&config).await;
    assert_eq!(letters.len(), 3, "{letters:#?}");
    assert_eq!(letters[0]["source"], "snapshot");
    assert_eq!(letters[0]["key"], key(3));
    let services = cachesync::cmd::connect::connect(&config).await.unwrap();
    let options = cachesync::cmd::verify::Options {
        skip_keys: vec![config.deployment_keys().checkpoint],
        ..Default::default()
    };
    let report = cachesync::cmd::verify::verify(
        &services.tables,
        &services.pool,
        &services.applier,
        &options,
    )
    .await
    .expect("verify goes on past an undecodable row");
    assert_eq!(report.divergent(), 0, "{report}");
    assert_eq!(report.tables[0].undecodable.count, 1, "{report}");
    assert!(
        report.tables[0].undecodable.examples[0].starts_with(&key(3)),
        "{report}"
    );
    // A stale value under the poisoned row's key is a difference, and repair removes it.
    let mut redis = common::redis_conn().await;
    let _: () = redis.set(key(3), r#"{"id":3}"#).await.unwrap();
    let repaired = cachesync::cmd::verify::verify(
        &services.tables,
        &services.pool,
        &services.applier,
        &cachesync::cmd::verify::Options {
            repair: true,
            ..options
        },
    )
    .await
    .unwrap();
    assert_eq!(repaired.tables[0].different.count, 1, "{repaired}");
    assert_eq!(repaired.divergent(), 0, "{repaired}");
    assert!(!exists(&key(3)).await);
    services.pool.disconnect().await.ok();

    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}

/// The entries of the config's dead-letter list, newest first.
async fn dead_letters(config: &Config) -> Vec<Json> {
    let mut redis = common::redis_conn().await;
    let entries: Vec<String> = redis
        .lrange(&config.deployment_keys().dead_letter, 0, -1)
        .await
        .unwrap();
    entries
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------
// 2. Slow clients and too many connections

/// Log lines of this test binary, for the test that checks one is written.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        logs
    })
    .clone()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a connection that sent a partial request head got within `limit`: the bytes the
/// server sent and whether it closed the connection.
async fn answer_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_times_out_slow_headers_and_sheds_connections_beyond_its_limit() {
    let logs = captured_logs();
    let mut db = TestDb::create("slowloris").await;
    db.exec("CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(20))")
        .await;
    let prefix = common::unique("slowloris");
    let config = config(
        "dual-write",
        &prefix,
        &db.name,
        json!([table(&db, "items", &format!("{prefix}:i:{{id}}"))]),
        None,
        None,
    );
    let api = Api::start(&config).await;
    let addr = api.base.trim_start_matches("http://").to_owned();
    let started = Instant::now();

    // A write whose body stalls after its head: answered 408 once the body timeout
    // (10 s) has passed.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(
            format!(
                "PUT /v1/tables/{}.items/rows HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: application/json\r\nContent-Length: 20\r\n\r\n{{\"id\":",
                db.name
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 600 connections that never finish their request head: more than the default
    // connection limit (512).
    let mut slow = Vec::new();
    for _ in 0..600 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Those beyond the limit are answered 503 and closed at once.
    let answers = futures_util::future::join_all(
        slow.iter_mut()
            .map(|s| answer_within(s, Duration::from_secs(3))),
    )
    .await;
    let shed = answers
        .iter()
        .filter(|(bytes, closed)| *closed && bytes.starts_with(b"HTTP/1.1 503"))
        .count();
    assert!(
        shed >= 600 - 512,
        "{shed} of 600 connections were shed with 503; expected at least 88"
    );
    // While the others are held, the API still answers at once (503: it is full).
    let quick = tokio::time::timeout(
        Duration::from_secs(2),
        reqwest::get(format!("{}/healthz", api.base)),
    )
    .await;
    assert!(
        quick.is_ok_and(|r| r.is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)),
        "a full API answers 503 at once"
    );
    // The held ones are closed once the header timeout (10 s) has passed.
    let held: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, (_, closed))| !closed)
        .map(|(i, _)| i)
        .collect();
    let closed = futures_util::future::join_all(
        slow.iter_mut()
            .enumerate()
            .filter(|(i, _)| held.contains(i))
            .map(|(_, s)| answer_within(s, Duration::from_secs(15))),
    )
    .await;
    assert!(
        closed.iter().all(|(_, closed)| *closed),
        "{} slow connections still open {:?} after they connected",
        closed.iter().filter(|(_, c)| !c).count(),
        started.elapsed()
    );
    drop(slow);
    let (answer, _) = answer_within(&mut stalled, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("api.body_timeout_ms"), "{answer}");
    // Free again: served.
    eventually("the API serves again", Duration::from_secs(5), || async {
        reqwest::get(format!("{}/healthz", api.base))
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.contains("shedding"),
        "shedding is logged; the log was:\n{text}"
    );
    api.stop().await;
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------
// 3. Started but useless

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_select_only_user_fails_the_dual_write_start_and_doctor() {
    let mut db = TestDb::create("grants").await;
    db.exec("CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(20))")
        .await;
    let (user, url) = select_only_user(&mut db, "cs_ro").await;
    let prefix = common::unique("grants");
    let config = config(
        "dual-write",
        &prefix,
        &db.name,
        json!([table(&db, "items", &format!("{prefix}:i:{{id}}"))]),
        Some(&url),
        None,
    );
    let started = Daemon::start(&config).await;
    let message = match started {
        Ok(daemon) => {
            daemon.abort();
            panic!("dual-write started as a SELECT-only user; every write would fail")
        }
        Err(e) => e.to_string(),
    };
    for needle in [
        "INSERT",
        "UPDATE",
        "DELETE",
        "GRANT",
        &format!("{}.items", db.name),
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    assert!(!message.contains(":pw@"), "no password: {message}");
    let report = cachesync::cmd::doctor::check(&config).await;
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.severity == cachesync::cmd::doctor::Severity::Problem
                && f.message.contains("INSERT")),
        "doctor names the missing grant: {:#?}",
        report.findings
    );
    db.exec(&format!("DROP USER '{user}'@'%'")).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binlog_start_without_replication_grants_fails_before_the_snapshot() {
    let mut db = TestDb::create("repl").await;
    db.exec("CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(20))")
        .await;
    db.exec("INSERT INTO items VALUES (1, 'a'), (2, 'b')").await;
    let (user, url) = select_only_user(&mut db, "cs_norepl").await;
    let prefix = common::unique("repl");
    let config = config(
        "binlog",
        &prefix,
        &db.name,
        json!([table(&db, "items", &format!("{prefix}:i:{{id}}"))]),
        Some(&url),
        None,
    );
    let outcome = match Daemon::start(&config).await {
        Err(e) => Err(e),
        Ok(mut daemon) => tokio::time::timeout(Duration::from_secs(20), daemon.finished())
            .await
            .expect("the strategy gives up within 20 s"),
    };
    let message = outcome.expect_err("no replication grant").to_string();
    assert!(message.contains("REPLICATION SLAVE"), "{message}");
    assert!(
        !exists(&format!("{prefix}:i:1")).await,
        "the snapshot ran before the grants were checked"
    );
    db.exec(&format!("DROP USER '{user}'@'%'")).await;
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_broker_login_stops_mq_instead_of_retrying_forever() {
    let mut db = TestDb::create("amqplogin").await;
    db.exec("CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(20))")
        .await;
    let prefix = common::unique("amqplogin");
    let wrong = common::amqp_url().replacen("guest:guest@", "guest:n0t-the-pw@", 1);
    assert_ne!(
        wrong,
        common::amqp_url(),
        "the test broker URL is guest:guest"
    );
    let config = config(
        "mq",
        &prefix,
        &db.name,
        json!([table(&db, "items", &format!("{prefix}:i:{{id}}"))]),
        None,
        Some(&wrong),
    );
    let outcome = match Daemon::start(&config).await {
        Err(e) => Err(e),
        Ok(mut daemon) => {
            let ended = tokio::time::timeout(Duration::from_secs(20), daemon.finished()).await;
            if ended.is_err() {
                daemon.abort();
                panic!("mq still retries a refused broker login after 20 s");
            }
            ended.unwrap()
        }
    };
    let message = outcome.expect_err("a refused login").to_string();
    assert!(message.contains("refused"), "{message}");
    assert!(!message.contains("n0t-the-pw"), "{message}");
    common::delete_amqp_topology(&prefix).await;
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------
// 4. DDL and short binary keys

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_follows_ddl_without_a_restart() {
    let mut db = TestDb::create("apiddl").await;
    db.exec(
        "CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(20) NULL, qty INT NOT NULL DEFAULT 0)",
    )
    .await;
    let prefix = common::unique("apiddl");
    let name = format!("{}.items", db.name);
    let config = config(
        "dual-write",
        &prefix,
        &db.name,
        json!([table(&db, "items", &format!("{prefix}:i:{{id}}"))]),
        None,
        None,
    );
    let api = Api::start(&config).await;
    let answer = api.put(&name, json!({"id": 1, "v": "a", "qty": 1})).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");

    db.exec("ALTER TABLE items ADD COLUMN color VARCHAR(10) NULL")
        .await;
    let answer = api
        .put(&name, json!({"id": 2, "v": "b", "color": "red"}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "a new column: {answer:?}");
    let answer = api.get(&name, &[("id", "2")]).await;
    assert_eq!(answer.body["color"], "red", "{answer:?}");

    db.exec("ALTER TABLE items DROP COLUMN qty").await;
    let answer = api.put(&name, json!({"id": 3, "color": "blue"})).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "a dropped column: {answer:?}"
    );
    let cached: Json = serde_json::from_str(&get(&format!("{prefix}:i:3")).await.unwrap()).unwrap();
    assert_eq!(cached, json!({"id": 3, "v": null, "color": "blue"}));
    let answer = api.delete(&name, json!({"id": 2})).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");

    // A read that misses Redis after a DDL no write has seen yet: the read path
    // re-plans by itself.
    db.exec("ALTER TABLE items DROP COLUMN v").await;
    let mut redis = common::redis_conn().await;
    let _: () = redis.del(format!("{prefix}:i:3")).await.unwrap();
    let answer = api.get(&name, &[("id", "3")]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body, json!({"id": 3, "color": "blue"}));
    api.stop().await;
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mq_consumer_follows_ddl_without_a_restart() {
    let mut db = TestDb::create("mqddl").await;
    db.exec(
        "CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(20) NULL, qty INT NOT NULL DEFAULT 0)",
    )
    .await;
    let prefix = common::unique("mqddl");
    let name = format!("{}.items", db.name);
    let config = config(
        "mq",
        &prefix,
        &db.name,
        json!([table(&db, "items", &format!("{prefix}:i:{{id}}"))]),
        None,
        None,
    );
    let api = Api::start(&config).await;
    let cached = |id: u32| {
        let key = format!("{prefix}:i:{id}");
        async move {
            get(&key)
                .await
                .map(|doc| common::converge::strip_version(&doc))
        }
    };
    db.exec("ALTER TABLE items ADD COLUMN color VARCHAR(10) NULL")
        .await;
    let answer = api
        .put(&name, json!({"id": 1, "v": "a", "color": "red"}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    eventually(
        "the consumer writes the new column",
        Duration::from_secs(20),
        || async {
            cached(1).await.as_deref() == Some(r#"{"id":1,"v":"a","qty":0,"color":"red"}"#)
        },
    )
    .await;
    db.exec("ALTER TABLE items DROP COLUMN qty").await;
    let answer = api.put(&name, json!({"id": 2, "color": "blue"})).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    eventually(
        "the consumer follows a dropped column",
        Duration::from_secs(20),
        || async { cached(2).await.as_deref() == Some(r#"{"id":2,"v":null,"color":"blue"}"#) },
    )
    .await;
    api.stop().await;
    common::delete_amqp_topology(&prefix).await;
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_binary_key_means_the_zero_padded_key_everywhere() {
    let mut db = TestDb::create("binkey").await;
    db.exec("CREATE TABLE bin (k BINARY(16) PRIMARY KEY, v VARCHAR(20))")
        .await;
    let prefix = common::unique("binkey");
    let name = format!("{}.bin", db.name);
    let config = config(
        "dual-write",
        &prefix,
        &db.name,
        json!([table(&db, "bin", &format!("{prefix}:b:{{k}}"))]),
        None,
        None,
    );
    let api = Api::start(&config).await;
    let padded_key = format!("{prefix}:b:0001ff{}", "00".repeat(13));
    let answer = api.put(&name, json!({"k": "AAH/", "v": "short"})).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert!(exists(&padded_key).await);
    let answer = api.get(&name, &[("k", "AAH/")]).await;
    assert_eq!(answer.body["v"], "short", "{answer:?}");
    let answer = api.delete(&name, json!({"k": "AAH/"})).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let left: u64 = db
        .conn
        .query_first("SELECT COUNT(*) FROM bin")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left, 0, "the DELETE deleted the row it named");
    assert!(!exists(&padded_key).await);
    // Longer than the column: refused, nothing written.
    let long = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 17]);
    let answer = api.put(&name, json!({"k": long, "v": "long"})).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
    api.stop().await;
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------
// 5. Key templates

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_never_share_a_key_and_no_row_key_is_a_companion_key() {
    let mut db = TestDb::create("keys").await;
    db.exec("CREATE TABLE pair (a VARCHAR(40), b VARCHAR(40), v VARCHAR(20), PRIMARY KEY (a, b))")
        .await;
    db.exec("CREATE TABLE solo (k VARCHAR(120) PRIMARY KEY, v INT)")
        .await;
    let prefix = common::unique("keys");
    let pair = format!("{}.pair", db.name);
    let solo = format!("{}.solo", db.name);
    let config = config(
        "dual-write",
        &prefix,
        &db.name,
        json!([
            table(&db, "pair", &format!("{prefix}:t5:{{a}}:{{b}}")),
            table(&db, "solo", "{k}"),
        ]),
        None,
        None,
    );
    let api = Api::start(&config).await;
    for (a, b, v) in [("x:y", "z", "first"), ("x", "y:z", "second")] {
        let answer = api.put(&pair, json!({"a": a, "b": b, "v": v})).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    }
    let answer = api.get(&pair, &[("a", "x:y"), ("b", "z")]).await;
    assert_eq!(answer.body["v"], "first", "{answer:?}");
    let answer = api.get(&pair, &[("a", "x"), ("b", "y:z")]).await;
    assert_eq!(answer.body["v"], "second", "{answer:?}");
    let answer = api.delete(&pair, json!({"a": "x", "b": "y:z"})).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let mut redis = common::redis_conn().await;
    let keys: Vec<String> = redis.keys(format!("{prefix}:t5:*")).await.unwrap();
    assert_eq!(
        keys.len(),
        1,
        "deleting one row evicted the other: {keys:?}"
    );
    let answer = api.get(&pair, &[("a", "x:y"), ("b", "z")]).await;
    assert_eq!(answer.body["v"], "first", "{answer:?}");

    // A read of a missing row leaves its read marker `{<key>}:cachesync:fill` holding
    // "absent"; a row whose key value is that marker's name must not read it.
    let missing = format!("{prefix}-missing");
    let answer = api.get(&solo, &[("k", &missing)]).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{answer:?}");
    let marker_named = format!("{{{missing}}}:cachesync:fill");
    db.conn
        .exec_drop("INSERT INTO solo VALUES (?, 7)", (&marker_named,))
        .await
        .unwrap();
    let answer = api.get(&solo, &[("k", &marker_named)]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(
        answer.body,
        json!({"k": marker_named, "v": 7}),
        "{answer:?}"
    );
    api.stop().await;
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------
// 6. Deletes under a case-insensitive collation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_spelled_differently_removes_the_key_of_the_deleted_row() {
    let mut db = TestDb::create("collate").await;
    for t in ["codes", "codes_mq"] {
        db.exec(&format!(
            "CREATE TABLE {t} (code VARCHAR(20) PRIMARY KEY, v INT) \
             CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
        ))
        .await;
    }
    let prefix = common::unique("collate");
    for (strategy, t) in [("dual-write", "codes"), ("mq", "codes_mq")] {
        let name = format!("{}.{t}", db.name);
        let config = config(
            strategy,
            &prefix,
            &db.name,
            json!([table(&db, t, &format!("{prefix}:{t}:{{code}}"))]),
            None,
            None,
        );
        let api = Api::start(&config).await;
        let key = format!("{prefix}:{t}:abc");
        let answer = api.put(&name, json!({"code": "abc", "v": 1})).await;
        assert_eq!(answer.status, StatusCode::OK, "{strategy}: {answer:?}");
        eventually(
            &format!("{strategy}: the row is cached"),
            Duration::from_secs(20),
            || exists(&key),
        )
        .await;
        let answer = api.delete(&name, json!({"code": "ABC"})).await;
        assert_eq!(answer.status, StatusCode::OK, "{strategy}: {answer:?}");
        let left: u64 = db
            .conn
            .query_first(format!("SELECT COUNT(*) FROM {t}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(left, 0, "{strategy}: MySQL deleted row abc");
        eventually(
            &format!("{strategy}: the key of the deleted row goes"),
            Duration::from_secs(20),
            || async { !exists(&key).await },
        )
        .await;
        api.stop().await;
    }
    common::delete_amqp_topology(&prefix).await;
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------
// 7. JSON column numbers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_column_numbers_are_kept_exactly_and_verify_sees_a_changed_one() {
    use rand::{Rng, SeedableRng};
    let mut db = TestDb::create("jsonnum").await;
    db.exec("CREATE TABLE j (id INT PRIMARY KEY, doc JSON)")
        .await;
    let prefix = common::unique("jsonnum");
    let name = format!("{}.j", db.name);
    let config = config(
        "dual-write",
        &prefix,
        &db.name,
        json!([table(&db, "j", &format!("{prefix}:j:{{id}}"))]),
        None,
        None,
    );
    let api = Api::start(&config).await;
    // Numbers an f64 cannot hold exactly, and 150 random ones with 12 decimals.
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    let mut numbers = vec![
        "14871.466378840501".to_owned(),
        "18446744073709551616".to_owned(),
        "-123456789012345678901234567890".to_owned(),
        "0.10000000000000000555".to_owned(),
    ];
    for _ in 0..150 {
        numbers.push(format!(
            "{}.{:012}",
            rng.random_range(0..100_000u64),
            rng.random_range(0..1_000_000_000_000u64)
        ));
    }
    let doc = format!("[{}]", numbers.join(","));
    let answer = api
        .put_raw(&name, format!(r#"{{"id":1,"doc":{doc}}}"#))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let stored: String = db
        .conn
        .query_first("SELECT doc FROM j WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, doc, "MySQL holds the numbers as sent");
    let key = format!("{prefix}:j:1");
    let cached = get(&key).await.unwrap();
    assert_eq!(cached, format!(r#"{{"id":1,"doc":{doc}}}"#), "Redis too");
    let answer = api.get(&name, &[("id", "1")]).await;
    assert_eq!(answer.text, cached, "and the read path");

    // A number changed in Redis is a difference for verify.
    let altered = cached.replacen("14871.466378840501", "14871.4663788405", 1);
    let mut redis = common::redis_conn().await;
    let _: () = redis.set(&key, &altered).await.unwrap();
    let services = api.daemon.services();
    let report = cachesync::cmd::verify::verify(
        &services.tables,
        &services.pool,
        &services.applier,
        &cachesync::cmd::verify::Options::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.divergent(), 1, "{report}");
    api.stop().await;
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------
// 8. Passwords

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_password_with_a_slash_never_shows() {
    let secret = "s3cr/et-pw";
    let url = common::amqp_url().replacen("guest:guest@", &format!("guest:{secret}@"), 1);
    assert_ne!(
        url,
        common::amqp_url(),
        "the test broker URL is guest:guest"
    );
    let shown = cachesync::redact::redact_url(&url);
    assert!(
        !shown.contains("s3cr") && !shown.contains("et-pw"),
        "{shown}"
    );

    let mut db = TestDb::create("amqpslash").await;
    db.exec("CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(20))")
        .await;
    let prefix = common::unique("amqpslash");
    let config = config(
        "mq",
        &prefix,
        &db.name,
        json!([table(&db, "items", &format!("{prefix}:i:{{id}}"))]),
        None,
        Some(&url),
    );
    let report = cachesync::cmd::doctor::check(&config).await;
    for finding in &report.findings {
        assert!(
            !finding.message.contains("s3cr") && !finding.message.contains("et-pw"),
            "doctor shows the password: {finding}"
        );
    }
    let services = cachesync::cmd::connect::connect(&config).await.unwrap();
    let readiness = Readiness::new(
        services.pool.clone(),
        &config.mysql_url,
        &config.redis_url,
        Some(&url),
    )
    .unwrap();
    // A strategy whose writes are never used here; /readyz checks the broker URL.
    let strategy = Arc::new(cachesync::strategy::Strategy::DualWrite(
        cachesync::strategy::DualWrite::new(services.pool.clone(), services.applier.clone()),
    ));
    let state = ApiState::new(strategy, services.tables.clone(), readiness, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(api::serve(listener, state, shutdown.clone()));
    let body = reqwest::get(format!("{base}/readyz"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("rabbitmq"), "{body}");
    assert!(
        !body.contains("s3cr") && !body.contains("et-pw"),
        "/readyz shows the password: {body}"
    );
    shutdown.cancel();
    server.await.unwrap().unwrap();
    services.pool.disconnect().await.ok();
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------
// 9. Exposure

/// The problems `validate` finds in the test config with `api` (and `metrics`) set.
fn problems_with(api: Json, metrics: Option<&str>) -> Vec<String> {
    let mut tree = json!({
        "strategy": "dual-write",
        "mysql": { "url": common::mysql_url() },
        "redis": { "url": common::redis_url() },
        "api": api,
        "tables": [{ "name": "shop.users", "key": "user:{id}" }],
    });
    if let Some(listen) = metrics {
        tree["metrics"] = json!({ "listen": listen });
    }
    match RawConfig::from_tree(tree) {
        Err(problems) => problems,
        Ok(raw) => match raw.validate() {
            Ok(_) => Vec::new(),
            Err(cachesync::Error::Config(problems)) => problems,
            Err(e) => panic!("{e}"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_or_tokenless_api_is_refused_or_guarded() {
    let problems = problems_with(json!({ "listen": "0.0.0.0:8480" }), None);
    assert!(
        problems.iter().any(|p| p.starts_with("api.listen:")
            && p.contains("api.allow_unauthenticated_remote")),
        "{problems:?}"
    );
    let problems = problems_with(json!({ "listen": "[::]:8480" }), None);
    assert!(
        problems.iter().any(|p| p.starts_with("api.listen:")),
        "{problems:?}"
    );
    let problems = problems_with(json!({ "listen": "127.0.0.1:8480", "token": " \t " }), None);
    assert!(
        problems.iter().any(|p| p.starts_with("api.token:")),
        "{problems:?}"
    );
    assert_eq!(
        problems_with(json!({ "listen": "0.0.0.0:8480", "token": "s3cret" }), None),
        Vec::<String>::new()
    );
    assert_eq!(
        problems_with(
            json!({ "listen": "0.0.0.0:8480", "allow_unauthenticated_remote": true }),
            None
        ),
        Vec::<String>::new()
    );

    // doctor notes a metrics endpoint open beyond this host.
    let mut db = TestDb::create("exposed").await;
    db.exec("CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(20))")
        .await;
    let prefix = common::unique("exposed");
    let mut tree = json!({
        "strategy": "dual-write",
        "mysql": { "url": common::mysql_url() },
        "redis": { "url": common::redis_url() },
        "metrics": { "listen": "0.0.0.0:9464" },
        "tables": [table(&db, "items", &format!("{prefix}:i:{{id}}"))],
    });
    let config = RawConfig::from_tree(tree.take())
        .unwrap()
        .validate()
        .unwrap();
    let report = cachesync::cmd::doctor::check(&config).await;
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.message.contains("metrics.listen")),
        "{:#?}",
        report.findings
    );

    // A tokenless API on loopback answers only requests addressed to a loopback name.
    let config = self::config(
        "dual-write",
        &prefix,
        &db.name,
        json!([table(&db, "items", &format!("{prefix}:i:{{id}}"))]),
        None,
        None,
    );
    let api = Api::start(&config).await;
    let port = api.base.rsplit(':').next().unwrap().to_owned();
    let name = format!("{}.items", db.name);
    for path in ["/readyz".to_owned(), format!("/v1/tables/{name}/rows?id=1")] {
        let answer = api
            .send(
                api.http
                    .get(format!("{}{path}", api.base))
                    .header("host", format!("attacker.example:{port}")),
            )
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}: {answer:?}");
        assert!(
            answer.body["error"].as_str().unwrap().contains("Host"),
            "{answer:?}"
        );
    }
    let answer = api
        .send(
            api.http
                .put(api.rows(&name))
                .header("host", "rebind.attacker.example")
                .json(&json!({"id": 1, "v": "x"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{answer:?}");
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let answer = api
            .send(
                api.http
                    .get(format!("{}/readyz", api.base))
                    .header("host", host),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    }
    api.stop().await;
    db.drop_db().await;
}
