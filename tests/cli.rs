//! End-to-end tests of the `cachesync` binary: what a person sees when the config or a
//! service is wrong (`run` and `doctor` exit non-zero with one readable `error: ` line per
//! problem, passwords redacted, never a panic or backtrace), `doctor` on a server with and
//! without a binlog, and `run` serving `/metrics` and stopping cleanly on SIGTERM.
//!
//! The tests need the dedicated MariaDB (row binlog, 127.0.0.1:3307), Redis (6380) and
//! RabbitMQ (5672):
//!
//! ```text
//! scripts/services.sh up
//! cargo test --test cli
//! ```
//!
//! `doctor_fails_without_log_bin` starts its own throwaway MariaDB without `--log-bin`, so
//! `mariadb-install-db`, `mariadbd`, `mariadb-admin` and `mariadb` must be on PATH (and,
//! when the tests run as root, a `mysql` user must exist).
//!
//! Every child process has a deadline: a hang fails the test instead of blocking CI.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{
    TestDb, cachesync_command as cachesync, config_toml, free_port, http_get, write_config,
};

/// How long a command that should fail fast (bad config, unreachable service) may take.
const QUICK: Duration = Duration::from_secs(30);

/// What a finished child printed.
#[derive(Debug)]
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    /// The `error: ` lines of stderr, in order.
    fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect()
    }

    fn show(&self) -> String {
        format!(
            "status: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    /// Non-zero exit, no panic, no backtrace hint.
    fn assert_failed_cleanly(&self) {
        assert!(!self.status.success(), "expected failure\n{}", self.show());
        self.assert_no_panic();
        assert!(
            !self.error_lines().is_empty(),
            "expected `error: ` lines on stderr\n{}",
            self.show()
        );
    }

    fn assert_no_panic(&self) {
        for text in [&self.stdout, &self.stderr] {
            assert!(
                !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
                "the binary panicked\n{}",
                self.show()
            );
        }
    }

    /// Asserts that `line` is one of the `error: ` lines.
    fn assert_error_line(&self, line: &str) {
        assert!(
            self.error_lines().contains(&line),
            "expected the stderr line {line:?}\n{}",
            self.show()
        );
    }

    /// Asserts that an `error: ` line starts with `prefix`, and returns it.
    fn error_line_starting(&self, prefix: &str) -> &str {
        self.error_lines()
            .into_iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| {
                panic!(
                    "expected a stderr line starting {prefix:?}\n{}",
                    self.show()
                )
            })
    }

    /// Asserts that `secret` appears nowhere in the output.
    fn assert_hides(&self, secret: &str) {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "the output shows the password {secret:?}\n{}",
            self.show()
        );
    }
}

/// A started child whose stdout and stderr go to files in a test's folder (files, not
/// pipes: nothing can block on a full pipe, and the output can be read while it runs).
struct Running {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    fn start(cmd: &mut Command, dir: &Path) -> Running {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let stdout = dir.join(format!("stdout.{n}"));
        let stderr = dir.join(format!("stderr.{n}"));
        let child = cmd
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Running {
            child,
            stdout,
            stderr,
        }
    }

    fn stderr_so_far(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn output(&self, status: ExitStatus) -> Output {
        Output {
            status,
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: self.stderr_so_far(),
        }
    }

    /// Waits for the exit within `limit`; on overrun kills the child and fails.
    fn finish(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return self.output(status);
            }
            if Instant::now() >= deadline {
                self.child.kill().ok();
                let status = self.child.wait().unwrap();
                panic!(
                    "still running after {limit:?}; killed\n{}",
                    self.output(status).show()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Only when a test failed half-way: never leave a daemon behind.
        if let Ok(None) = self.child.try_wait() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// Runs `cachesync args` to completion (at most `limit`).
fn run_to_end(dir: &Path, args: &[&str], limit: Duration) -> Output {
    Running::start(&mut cachesync(args), dir).finish(limit)
}

/// `cachesync run --config <toml written to dir>`.
fn run_with(dir: &Path, toml: &str) -> Output {
    let config = write_config(dir, toml);
    run_to_end(dir, &["run", "--config", config.to_str().unwrap()], QUICK)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary folder")
}

/// A port nobody listens on right now.
fn table(name: &str, key: &str) -> String {
    format!("[[tables]]\nname = \"{name}\"\nkey = \"{key}\"\n")
}

/// A fresh test database with `users (id BIGINT PRIMARY KEY, name VARCHAR(50))`.
async fn users_db(prefix: &str) -> TestDb {
    let mut db = TestDb::create(prefix).await;
    db.exec("CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(50))")
        .await;
    db
}

// ---------------------------------------------------------------------------------------
// Help
// ---------------------------------------------------------------------------------------

#[test]
fn help_describes_the_commands() {
    let dir = tempdir();
    let top = run_to_end(dir.path(), &["--help"], QUICK);
    let run = run_to_end(dir.path(), &["run", "--help"], QUICK);
    let doctor = run_to_end(dir.path(), &["doctor", "--help"], QUICK);
    for out in [&top, &run, &doctor] {
        assert!(out.status.success(), "{}", out.show());
        out.assert_no_panic();
        assert!(out.stdout.contains("Usage:"), "{}", out.show());
    }
    assert!(top.stdout.contains("run"), "{}", top.show());
    assert!(top.stdout.contains("doctor"), "{}", top.show());
    assert!(
        top.stdout.contains("Redis") && top.stdout.contains("MySQL"),
        "{}",
        top.show()
    );
    assert!(run.stdout.contains("--config"), "{}", run.show());
    assert!(run.stdout.contains("Run the sync daemon"), "{}", run.show());
    assert!(doctor.stdout.contains("--config"), "{}", doctor.show());
    assert!(doctor.stdout.contains("binlog"), "{}", doctor.show());
}

// ---------------------------------------------------------------------------------------
// Config errors (no service involved)
// ---------------------------------------------------------------------------------------

#[test]
fn malformed_toml_names_the_file() {
    let dir = tempdir();
    let config = write_config(
        dir.path(),
        "strategy = \"binlog\n[mysql]\nurl = \"mysql://root@127.0.0.1:3307\"\n",
    );
    let out = run_to_end(
        dir.path(),
        &["run", "--config", config.to_str().unwrap()],
        QUICK,
    );
    out.assert_failed_cleanly();
    let shown = config.display().to_string();
    // One line: file, line and column of the mistake, then what is wrong.
    assert_eq!(
        out.error_lines(),
        [format!(
            "error: {shown}:1:19: invalid basic string, expected `\"`"
        )],
        "{}",
        out.show()
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.show());
}

#[test]
fn missing_config_file_is_one_line() {
    let dir = tempdir();
    let missing = dir.path().join("nope.toml");
    let out = run_to_end(
        dir.path(),
        &["doctor", "--config", missing.to_str().unwrap()],
        QUICK,
    );
    out.assert_failed_cleanly();
    assert_eq!(
        out.error_lines(),
        [format!(
            "error: {}: cannot read the config file (No such file or directory (os error 2)); copy config/cachesync.toml and edit it",
            missing.display()
        )],
        "{}",
        out.show()
    );
}

#[test]
fn unknown_strategy_lists_the_valid_ones() {
    let dir = tempdir();
    let out = run_with(
        dir.path(),
        &config_toml("cdc", &table("shop.users", "user:{id}")),
    );
    out.assert_failed_cleanly();
    assert_eq!(out.error_lines(), [unknown_cdc()], "{}", out.show());
}

/// The error for `strategy = "cdc"`: it lists every strategy there is.
fn unknown_cdc() -> String {
    let valid: Vec<&str> = cachesync::strategy::StrategyKind::ALL
        .iter()
        .map(|k| k.name())
        .collect();
    assert!(valid.starts_with(&["dual-write", "mq", "binlog"]));
    format!(
        "error: strategy: unknown strategy \"cdc\"; valid strategies: {}",
        valid.join(", ")
    )
}

#[test]
fn environment_variables_override_the_file() {
    let dir = tempdir();
    let config = write_config(
        dir.path(),
        &config_toml("dual-write", &table("shop.users", "user:{id}")),
    );
    let mut cmd = cachesync(&["run", "--config", config.to_str().unwrap()]);
    cmd.env("CACHESYNC__STRATEGY", "cdc")
        .env("CACHESYNC__METRICS__LISTEN", "nowhere");
    let out = Running::start(&mut cmd, dir.path()).finish(QUICK);
    out.assert_failed_cleanly();
    out.assert_error_line(&unknown_cdc());
    out.assert_error_line(
        "error: metrics.listen: expected IP:port such as 127.0.0.1:9464, got \"nowhere\"",
    );
}

#[test]
fn every_unknown_key_is_reported() {
    let dir = tempdir();
    let toml = config_toml(
        "dual-write",
        "[[tables]]\nname = \"shop.users\"\nkey = \"user:{id}\"\nformatt = \"hash\"\n",
    )
    .replace("[mysql]\n", "[mysql]\nport = 3307\n");
    let out = run_with(dir.path(), &toml);
    out.assert_failed_cleanly();
    out.assert_error_line("error: mysql.port: unknown key");
    out.assert_error_line("error: tables[0].formatt: unknown key");
    assert_eq!(out.error_lines().len(), 2, "{}", out.show());
}

#[test]
fn every_invalid_value_is_reported() {
    let dir = tempdir();
    let toml = config_toml(
        "dual-write",
        "[[tables]]\nname = \"shop.users\"\nkey = \"user:{id}\"\nformat = \"xml\"\n",
    )
    .replace("listen = \"127.0.0.1:0\"", "listen = \"9464\"");
    let out = run_with(dir.path(), &toml);
    out.assert_failed_cleanly();
    out.assert_error_line("error: tables[0].format: expected \"json\" or \"hash\", got \"xml\"");
    out.assert_error_line(
        "error: metrics.listen: expected IP:port such as 127.0.0.1:9464, got \"9464\"",
    );
    assert_eq!(out.error_lines().len(), 2, "{}", out.show());
}

// ---------------------------------------------------------------------------------------
// Tables checked against MySQL
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn table_without_primary_key() {
    let mut db = TestDb::create("cli_nopk").await;
    db.exec("CREATE TABLE nopk (id BIGINT, name VARCHAR(50))")
        .await;
    let name = format!("{}.nopk", db.name);
    let dir = tempdir();
    let out = run_with(
        dir.path(),
        &config_toml("dual-write", &table(&name, "np:{id}")),
    );
    db.drop_db().await;
    out.assert_failed_cleanly();
    out.error_line_starting(&format!("error: tables[0].name: {name} has no primary key"));
    assert_eq!(out.error_lines().len(), 1, "{}", out.show());
}

#[tokio::test]
async fn key_placeholder_that_is_not_a_column() {
    let db = users_db("cli_key").await;
    let name = format!("{}.users", db.name);
    let dir = tempdir();
    let out = run_with(
        dir.path(),
        &config_toml("dual-write", &table(&name, "u:{idd}")),
    );
    db.drop_db().await;
    out.assert_failed_cleanly();
    out.assert_error_line(&format!(
        "error: tables[0].key: placeholder {{idd}} is not a column of {name}"
    ));
}

#[tokio::test]
async fn table_that_does_not_exist() {
    let db = TestDb::create("cli_nope").await;
    let name = format!("{}.nope", db.name);
    let dir = tempdir();
    let out = run_with(
        dir.path(),
        &config_toml("dual-write", &table(&name, "n:{id}")),
    );
    db.drop_db().await;
    out.assert_failed_cleanly();
    out.error_line_starting(&format!(
        "error: tables[0].name: table {name} does not exist in MySQL at "
    ));
    assert_eq!(out.error_lines().len(), 1, "{}", out.show());
}

// ---------------------------------------------------------------------------------------
// Unreachable services and bad credentials
// ---------------------------------------------------------------------------------------

/// `config_toml` with other MySQL and Redis URLs.
fn config_with_urls(mysql: Option<&str>, redis: Option<&str>, tables: &str) -> String {
    let mut toml = config_toml("dual-write", tables);
    if let Some(url) = mysql {
        toml = toml.replace(
            &format!("url = \"{}\"", common::mysql_url()),
            &format!("url = \"{url}\""),
        );
    }
    if let Some(url) = redis {
        toml = toml.replace(
            &format!("url = \"{}\"", common::redis_url()),
            &format!("url = \"{url}\""),
        );
    }
    toml
}

#[test]
fn unreachable_mysql_and_redis_are_both_reported_without_passwords() {
    let dir = tempdir();
    let out = run_with(
        dir.path(),
        &config_with_urls(
            Some("mysql://root:hunter2@127.0.0.1:1"),
            Some("redis://:hunter2@127.0.0.1:1"),
            &table("shop.users", "user:{id}"),
        ),
    );
    out.assert_failed_cleanly();
    out.assert_hides("hunter2");
    out.error_line_starting("error: cannot reach MySQL at mysql://root:***@127.0.0.1:1: ");
    out.error_line_starting("error: cannot reach Redis at redis://:***@127.0.0.1:1: ");
    assert_eq!(out.error_lines().len(), 2, "{}", out.show());
}

#[test]
fn unreachable_mysql_alone_is_one_line_without_password() {
    let dir = tempdir();
    let out = run_with(
        dir.path(),
        &config_with_urls(
            Some("mysql://root:hunter2@127.0.0.1:1"),
            None,
            &table("shop.users", "user:{id}"),
        ),
    );
    out.assert_failed_cleanly();
    out.assert_hides("hunter2");
    out.error_line_starting("error: cannot reach MySQL at mysql://root:***@127.0.0.1:1: ");
    assert_eq!(out.error_lines().len(), 1, "{}", out.show());
}

#[tokio::test]
async fn unreachable_redis_alone_is_one_line_without_password() {
    let db = users_db("cli_redis_down").await;
    let name = format!("{}.users", db.name);
    let dir = tempdir();
    let out = run_with(
        dir.path(),
        &config_with_urls(
            None,
            Some("redis://:hunter2@127.0.0.1:1"),
            &table(&name, "u:{id}"),
        ),
    );
    db.drop_db().await;
    out.assert_failed_cleanly();
    out.assert_hides("hunter2");
    out.error_line_starting("error: cannot reach Redis at redis://:***@127.0.0.1:1: ");
    assert_eq!(out.error_lines().len(), 1, "{}", out.show());
}

#[tokio::test]
async fn wrong_mysql_credentials_are_one_readable_line() {
    let db = users_db("cli_denied").await;
    let name = format!("{}.users", db.name);
    let dir = tempdir();
    let out = run_with(
        dir.path(),
        &config_with_urls(
            Some("mysql://nobody:wr0ngpass@127.0.0.1:3307"),
            None,
            &table(&name, "u:{id}"),
        ),
    );
    db.drop_db().await;
    out.assert_failed_cleanly();
    out.assert_hides("wr0ngpass");
    let line = out.error_line_starting(
        "error: MySQL at mysql://nobody:***@127.0.0.1:3307 refused the login: ",
    );
    assert!(line.contains("Access denied"), "{}", out.show());
    assert!(
        line.contains("check the user, password and database in mysql.url"),
        "{}",
        out.show()
    );
    assert_eq!(out.error_lines().len(), 1, "{}", out.show());
}

// ---------------------------------------------------------------------------------------
// doctor
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn doctor_passes_on_the_binlog_server() {
    let db = users_db("cli_doctor").await;
    let name = format!("{}.users", db.name);
    let dir = tempdir();
    let config = write_config(dir.path(), &config_toml("binlog", &table(&name, "u:{id}")));
    let out = run_to_end(
        dir.path(),
        &["doctor", "--config", config.to_str().unwrap()],
        QUICK,
    );
    db.drop_db().await;
    out.assert_no_panic();
    assert!(out.status.success(), "{}", out.show());
    assert!(out.error_lines().is_empty(), "{}", out.show());
    let ok = |needle: &str| {
        out.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("ok ") && l.contains(needle))
    };
    assert!(ok("log_bin=ON"), "no ok line for log_bin\n{}", out.show());
    assert!(ok("binlog_format=ROW"), "{}", out.show());
    assert!(ok(&name), "no ok line for the table\n{}", out.show());
    assert!(
        !out.stdout.contains("FAIL"),
        "unexpected FAIL\n{}",
        out.show()
    );
    assert!(
        out.stdout.contains("all good for strategy binlog"),
        "{}",
        out.show()
    );
}

/// A throwaway MariaDB, killed (and waited for) on drop.
#[test]
fn doctor_fails_without_log_bin() {
    let dir = tempdir();
    let server = common::mariadb::PrivateMariaDb::start(dir.path(), false);
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.users (id BIGINT PRIMARY KEY, name TEXT)");
    let toml = config_with_urls(Some(&server.url()), None, &table("shop.users", "u:{id}"))
        .replace("strategy = \"dual-write\"", "strategy = \"binlog\"");
    let config = write_config(dir.path(), &toml);
    let out = run_to_end(
        dir.path(),
        &["doctor", "--config", config.to_str().unwrap()],
        QUICK,
    );
    // `run` refuses the same server with the same advice instead of streaming nothing.
    let refused = run_to_end(
        dir.path(),
        &["run", "--config", config.to_str().unwrap()],
        QUICK,
    );
    let url = server.url();
    drop(server);
    refused.assert_failed_cleanly();
    refused.error_line_starting(
        "error: the binlog strategy cannot run: log_bin is OFF: start the server with --log-bin",
    );
    out.assert_no_panic();
    assert!(!out.status.success(), "{}", out.show());
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("FAIL") && l.contains("log_bin")),
        "no FAIL line for log_bin\n{}",
        out.show()
    );
    // The server is reachable and the table fine: only the binlog settings fail.
    for line in out
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("FAIL"))
    {
        assert!(
            line.contains("log_bin") || line.contains("binlog"),
            "unexpected FAIL line {line:?}\n{}",
            out.show()
        );
    }
    assert!(
        out.stdout.contains(&format!("MySQL reachable at {url}")),
        "{}",
        out.show()
    );
    assert!(
        out.stdout.contains("ok    tables: shop.users"),
        "{}",
        out.show()
    );
    assert!(
        out.stdout.contains("stop strategy binlog"),
        "{}",
        out.show()
    );
}

// ---------------------------------------------------------------------------------------
// run: metrics and graceful shutdown
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn run_serves_metrics_and_stops_on_sigterm() {
    let db = users_db("cli_run").await;
    let name = format!("{}.users", db.name);
    let dir = tempdir();
    let port = free_port();
    let toml = config_toml("dual-write", &table(&name, "u:{id}")).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let config = write_config(dir.path(), &toml);
    let mut daemon = Running::start(
        &mut cachesync(&["run", "--config", config.to_str().unwrap()]),
        dir.path(),
    );

    let applied =
        format!("cachesync_events_applied_total{{strategy=\"dual-write\",table=\"{name}\"}} 0");
    // The listener comes up before the tables are checked, so wait for the series too,
    // and for the "running" line (logged after the signal handler is set up).
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Some(body) = http_get(port, "/metrics")
            && body.contains(&applied)
            && daemon.stderr_so_far().contains("cachesync running")
        {
            break body;
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            db.drop_db().await;
            panic!(
                "cachesync run exited early\n{}",
                daemon.output(status).show()
            );
        }
        if Instant::now() >= deadline {
            let body = http_get(port, "/metrics").unwrap_or_default();
            db.drop_db().await;
            panic!(
                "no {applied:?} on http://127.0.0.1:{port}/metrics within 30 s; last body:\n{body}\n{}",
                daemon.stderr_so_far()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        body.contains("# TYPE cachesync_propagation_seconds histogram"),
        "{body}"
    );
    // The handler task is spawned just before "cachesync running" is logged; give it a
    // moment to register for SIGTERM.
    std::thread::sleep(Duration::from_millis(200));

    let pid = daemon.child.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let out = daemon.finish(Duration::from_secs(10));
    db.drop_db().await;
    out.assert_no_panic();
    assert!(
        out.status.success(),
        "expected exit 0 after SIGTERM\n{}",
        out.show()
    );
    assert!(out.error_lines().is_empty(), "{}", out.show());
    assert!(out.stderr.contains("stopped"), "{}", out.show());
}
