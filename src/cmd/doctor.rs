//! `cachesync doctor`: checks what the configured strategy needs from MySQL, Redis and
//! RabbitMQ and says exactly what to change.
//!
//! Binlog settings are problems for the `binlog` strategy and notes for the others (they
//! do not need a binlog, but a user comparing strategies will want to know).
//!
//! It also lists the foreign keys whose `CASCADE` / `SET NULL` rules change synced rows
//! behind every strategy's back, and what cachesync does about each.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::config::Config;
use crate::error::Error;
use crate::redact::{redact_url, scrub};
use crate::strategy::binlog::cascade;
use crate::strategy::binlog::server::{BinlogSettings, binary_log_status, binlog_settings};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Ok,
    /// Worth knowing; does not stop the configured strategy.
    Note,
    /// The configured strategy cannot work until this is changed.
    Problem,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.severity {
            Severity::Ok => "ok  ",
            Severity::Note => "note",
            Severity::Problem => "FAIL",
        };
        write!(f, "{tag}  {}", self.message)
    }
}

/// The whole report.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, severity: Severity, message: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            message: message.into(),
        });
    }

    pub fn problems(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem)
            .count()
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// `cachesync doctor`: runs every check of the config read from `path` and prints the
/// report; whether the configured strategy can work.
pub async fn run(config: &Config, path: &Path) -> bool {
    println!(
        "cachesync doctor: strategy {} from {}",
        config.strategy,
        path.display()
    );
    let report = check(config).await;
    for finding in &report.findings {
        println!("  {finding}");
    }
    match report.problems() {
        0 => {
            let notes = report
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Note)
                .count();
            println!("all good for strategy {} ({notes} notes)", config.strategy);
            true
        }
        n => {
            println!("{n} problem(s) stop strategy {}", config.strategy);
            false
        }
    }
}

/// Runs every check; never fails itself — unreachable services are findings.
pub async fn check(config: &Config) -> Report {
    let mut report = Report::default();
    check_exposure(config, &mut report);
    check_mysql(config, &mut report).await;
    check_redis(config, &mut report).await;
    check_amqp(config, &mut report).await;
    report
}

/// Who can reach the API and the metrics: notes for what is open beyond this machine
/// (validation already refused a tokenless remote API that was not explicitly allowed).
fn check_exposure(config: &Config, report: &mut Report) {
    if let Some(api) = &config.api {
        let listen = api.listen;
        match (listen.ip().is_loopback(), &api.token) {
            (true, None) => report.push(
                Severity::Ok,
                format!(
                    "api.listen {listen} is loopback; without api.token it answers only requests \
                     addressed to localhost (DNS rebinding guard)"
                ),
            ),
            (_, Some(_)) => report.push(
                Severity::Ok,
                format!(
                    "api.listen {listen}: every route but /healthz and /openapi.json needs api.token"
                ),
            ),
            (false, None) => report.push(
                Severity::Note,
                format!(
                    "api.listen {listen} is not loopback and has no api.token \
                     (api.allow_unauthenticated_remote = true): anyone who reaches it can write \
                     every synced table; make sure a firewall or proxy guards it"
                ),
            ),
        }
    }
    if !config.metrics_listen.ip().is_loopback() {
        report.push(
            Severity::Note,
            format!(
                "metrics.listen {} is not a loopback address: anyone who reaches it reads the \
                 metrics (table names, rates, errors); bind it to 127.0.0.1 or firewall it",
                config.metrics_listen
            ),
        );
    }
}

async fn check_mysql(config: &Config, report: &mut Report) {
    let url = redact_url(&config.mysql_url);
    let pool = match crate::mysql::pool(&config.mysql_url) {
        Ok(pool) => pool,
        Err(e) => return report.push(Severity::Problem, e.to_string()),
    };
    let mut conn = match crate::mysql::get_conn(&pool, &config.mysql_url).await {
        Ok(conn) => conn,
        Err(e @ Error::Unreachable { .. }) => {
            return report.push(
                Severity::Problem,
                format!("{e} (check mysql.url and that the server runs)"),
            );
        }
        Err(e) => return report.push(Severity::Problem, e.to_string()),
    };
    let version: Option<String> = conn.query_first("SELECT VERSION()").await.ok().flatten();
    report.push(
        Severity::Ok,
        format!(
            "MySQL reachable at {url} ({})",
            version.as_deref().unwrap_or("unknown version")
        ),
    );
    let binlog = if config.strategy.tails_binlog() {
        Severity::Problem
    } else {
        Severity::Note
    };
    // What is right goes on one ok line, printed before what is wrong.
    let BinlogSettings {
        fine,
        wrong,
        advice,
    } = binlog_settings(&mut conn).await;
    if !fine.is_empty() {
        report.push(
            Severity::Ok,
            format!("binlog settings: {}", fine.join(", ")),
        );
    }
    if config.strategy.tails_binlog()
        && wrong.is_empty()
        && server_id_of(&mut conn).await == Some(config.binlog.server_id)
    {
        report.push(
            Severity::Problem,
            format!(
                "binlog.server_id is {}, the server's own server_id: choose another id for cachesync",
                config.binlog.server_id
            ),
        );
    }
    for message in wrong {
        report.push(binlog, message);
    }
    for message in advice {
        report.push(Severity::Note, message);
    }

    check_grants(&mut conn, binlog, report).await;
    check_binlog_position(&mut conn, binlog, report).await;

    match crate::mysql::schema::load_tables(&config.tables, &pool, &config.mysql_url).await {
        Ok(tables) => {
            report.push(
                Severity::Ok,
                format!(
                    "tables: {}",
                    tables
                        .iter()
                        .map(|t| t.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            check_table_privileges(config, &pool, &tables, report).await;
            check_cascades(config, &pool, &tables, report).await;
        }
        Err(Error::Config(problems)) => {
            for p in problems {
                report.push(Severity::Problem, p);
            }
        }
        Err(e) => report.push(Severity::Problem, e.to_string()),
    }
    drop(conn);
    pool.disconnect().await.ok();
}

/// The table privileges the strategy needs, as `run` checks them at start (`EXPLAIN` dry
/// runs: roles and wildcards count as the server counts them).
async fn check_table_privileges(
    config: &Config,
    pool: &mysql_async::Pool,
    tables: &[std::sync::Arc<crate::model::table::SyncedTable>],
    report: &mut Report,
) {
    match crate::cmd::connect::missing_privileges(config, pool, tables).await {
        Ok(problems) if problems.is_empty() => {
            let names: Vec<&str> = crate::cmd::connect::table_privileges(config)
                .iter()
                .map(|p| p.name())
                .collect();
            report.push(
                Severity::Ok,
                format!(
                    "the MySQL user may {} the tables, as strategy {} needs",
                    names.join(", "),
                    config.strategy
                ),
            );
        }
        Ok(problems) => {
            for problem in problems {
                report.push(Severity::Problem, problem);
            }
        }
        Err(e) => report.push(Severity::Problem, e.to_string()),
    }
}

/// The foreign keys whose cascades change synced rows without a trace in the binlog (or
/// in any strategy's write path), and what cachesync does about each.
async fn check_cascades(
    config: &Config,
    pool: &mysql_async::Pool,
    tables: &[std::sync::Arc<crate::model::table::SyncedTable>],
    report: &mut Report,
) {
    let graph = match cascade::load(pool, &config.mysql_url, tables).await {
        Ok(graph) => graph,
        Err(e) => return report.push(Severity::Note, format!("cannot read the foreign keys: {e}")),
    };
    for relation in &graph.relations {
        if config.strategy.tails_binlog() {
            report.push(
                Severity::Ok,
                format!(
                    "{}: cascades are not in the binlog; cachesync {}",
                    relation.fk,
                    relation.what_cachesync_does()
                ),
            );
        } else {
            report.push(
                Severity::Note,
                format!(
                    "{}: MySQL changes {} rows itself and {} does not see it; enable [verify] \
                     to repair them",
                    relation.fk,
                    relation.fk.child_name(),
                    config.strategy
                ),
            );
        }
    }
    for note in graph.notes {
        report.push(Severity::Note, note);
    }
}

async fn server_id_of(conn: &mut mysql_async::Conn) -> Option<u32> {
    conn.query_first("SELECT @@server_id").await.ok().flatten()
}

/// Replication needs REPLICATION SLAVE (to stream the binlog) and REPLICATION CLIENT /
/// BINLOG MONITOR (to read binlog positions).
async fn check_grants(conn: &mut mysql_async::Conn, binlog: Severity, report: &mut Report) {
    let user: Option<String> = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .ok()
        .flatten();
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.unwrap_or_default();
    let grants = grants.join("\n").to_ascii_uppercase();
    let global = |privilege: &str| {
        grants.lines().any(|line| {
            line.contains(" ON *.* ")
                && (line.contains("ALL PRIVILEGES") || line.contains(privilege))
        })
    };
    let replicate = global("REPLICATION SLAVE") || global("REPLICATION REPLICA");
    let monitor = global("REPLICATION CLIENT") || global("BINLOG MONITOR") || global("SUPER");
    let user = user.unwrap_or_else(|| "the configured user".to_owned());
    let (name, host) = user.split_once('@').unwrap_or((&user, "%"));
    if replicate && monitor {
        report.push(Severity::Ok, format!("{user} may read the binlog"));
    } else {
        let mut missing = Vec::new();
        if !replicate {
            missing.push("REPLICATION SLAVE");
        }
        if !monitor {
            missing.push("REPLICATION CLIENT");
        }
        report.push(
            binlog,
            format!(
                "{user} lacks {}: GRANT {} ON *.* TO '{name}'@'{host}'",
                missing.join(" and "),
                missing.join(", ")
            ),
        );
    }
}

/// Reads the current binlog position as the snapshot does (`SHOW BINARY LOG STATUS`, or
/// `SHOW MASTER STATUS` where the server predates it), so a refusal shows here first.
async fn check_binlog_position(
    conn: &mut mysql_async::Conn,
    binlog: Severity,
    report: &mut Report,
) {
    match binary_log_status(conn).await {
        Ok(Some(position)) => {
            report.push(
                Severity::Ok,
                format!("binlog position readable: {position}"),
            );
        }
        // No binlog: the log_bin finding already says what to change.
        Ok(None) => {}
        Err(e) => report.push(
            binlog,
            format!("{e} (the snapshot reads its position this way: GRANT REPLICATION CLIENT)"),
        ),
    }
}

async fn check_redis(config: &Config, report: &mut Report) {
    let url = redact_url(&config.redis_url);
    let mut conn = match crate::redis::connection::connect(&config.redis_url).await {
        Ok(conn) => conn,
        Err(e) => {
            return report.push(
                Severity::Problem,
                format!("{e} (check redis.url and that the server runs)"),
            );
        }
    };
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown version")
        .trim()
        .to_owned();
    report.push(
        Severity::Ok,
        format!("Redis reachable at {url} ({version})"),
    );
    match redis::cmd("EVAL")
        .arg("return 1")
        .arg(0)
        .query_async::<i64>(&mut conn)
        .await
    {
        Ok(1) => report.push(
            Severity::Ok,
            "Redis runs Lua scripts (needed for version-guarded writes)",
        ),
        Ok(_) | Err(_) => report.push(
            Severity::Problem,
            "Redis refuses EVAL: allow scripting for the configured user (ACL +@scripting)",
        ),
    }
    check_eviction(&mut conn, report).await;
    if config.strategy.redis_holds_unflushed_writes() {
        check_persistence(&mut conn, config, report).await;
    }
}

/// Whether Redis may evict the keys cachesync keeps for itself: under an `allkeys-*`
/// `maxmemory-policy` any key can go, and a lost checkpoint or marker makes cachesync
/// rebuild every table, a lost tombstone lets an older write bring a deleted row back.
async fn check_eviction(conn: &mut crate::redis::RedisConn, report: &mut Report) {
    let answer: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    let policy = match answer {
        Ok(pair) if pair.len() == 2 => pair[1].clone(),
        Ok(_) | Err(_) => {
            return report.push(
                Severity::Note,
                "cannot read Redis' maxmemory-policy (CONFIG GET refused): make sure it is \
                 noeviction or volatile-*, not allkeys-* (which may evict cachesync's checkpoint, \
                 marker and tombstones)",
            );
        }
    };
    match eviction_finding(&policy) {
        Some((severity, message)) => report.push(severity, message),
        None => report.push(
            Severity::Ok,
            format!("Redis maxmemory-policy {policy}: cachesync's own keys are not evicted"),
        ),
    }
}

/// What `doctor` says about a `maxmemory-policy`; `None` when all is well.
fn eviction_finding(policy: &str) -> Option<(Severity, String)> {
    if policy.starts_with("allkeys-") {
        return Some((
            Severity::Problem,
            format!(
                "Redis maxmemory-policy is {policy}: when Redis is full it may evict cachesync's \
                 checkpoint, deployment marker, snapshot progress and tombstones (a lost \
                 checkpoint or marker makes cachesync rebuild every table; a lost tombstone lets \
                 an older write bring a deleted row back). Set maxmemory-policy noeviction \
                 (writes fail loudly when Redis is full) or a volatile-* policy such as \
                 volatile-lru with tables[].ttl on the rows (cachesync's own keys have no TTL, \
                 so volatile-* never evicts them): CONFIG SET maxmemory-policy noeviction, and \
                 the same in redis.conf"
            ),
        ));
    }
    policy.starts_with("volatile-").then(|| {
        (
            Severity::Note,
            format!(
                "Redis maxmemory-policy is {policy}: cachesync's checkpoint, marker and snapshot \
                 progress have no TTL and are never evicted; tombstones and rows with \
                 tables[].ttl may be (see docs/operations.md, Eviction)"
            ),
        )
    })
}

/// Whether Redis keeps what the strategy has acknowledged but not yet flushed to MySQL
/// across a restart: with the append-only file, at most about a second is lost.
async fn check_persistence(
    conn: &mut crate::redis::RedisConn,
    config: &Config,
    report: &mut Report,
) {
    let appendonly: Option<(String, String)> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query_async(conn)
        .await
        .ok();
    match appendonly.map(|(_, value)| value) {
        Some(value) if value == "yes" => report.push(
            Severity::Ok,
            format!("Redis keeps an append-only file (appendonly yes): strategy {} loses at most about a second of unflushed writes if Redis restarts", config.strategy),
        ),
        Some(_) => report.push(
            Severity::Note,
            format!(
                "strategy {} keeps acknowledged writes only in Redis until they are flushed to MySQL, \
                 and Redis runs without an append-only file: a restart loses the unflushed ones; \
                 set appendonly yes and appendfsync everysec (redis.conf) to lose at most about a second",
                config.strategy
            ),
        ),
        None => report.push(
            Severity::Note,
            format!("cannot read Redis' appendonly setting (CONFIG GET refused): strategy {} loses unflushed writes if Redis restarts without persistence", config.strategy),
        ),
    }
}

async fn check_amqp(config: &Config, report: &mut Report) {
    let Some(amqp_url) = config.amqp.as_ref().map(|a| &a.url) else {
        if config.strategy.needs_broker() {
            report.push(Severity::Problem, "amqp.url is not set");
        }
        return;
    };
    let severity = if config.strategy.needs_broker() {
        Severity::Problem
    } else {
        Severity::Note
    };
    let url = redact_url(amqp_url);
    let connect = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default());
    match tokio::time::timeout(TIMEOUT, connect).await {
        Ok(Ok(conn)) => {
            report.push(Severity::Ok, format!("RabbitMQ reachable at {url}"));
            conn.close(200, "doctor done".into()).await.ok();
        }
        Ok(Err(e)) => report.push(
            severity,
            scrub(&format!("cannot reach RabbitMQ at {url}: {e}"), amqp_url),
        ),
        Err(_) => report.push(
            severity,
            format!(
                "cannot reach RabbitMQ at {url}: no answer within {}s",
                TIMEOUT.as_secs()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allkeys_policies_fail_and_name_the_setting() {
        let (severity, message) = eviction_finding("allkeys-lru").unwrap();
        assert_eq!(severity, Severity::Problem);
        assert!(message.contains("maxmemory-policy noeviction"), "{message}");
        assert_eq!(eviction_finding("volatile-ttl").unwrap().0, Severity::Note);
        assert!(eviction_finding("noeviction").is_none());
    }
}
