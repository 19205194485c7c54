//! `cachesync doctor`: checks what the configured strategy needs from MySQL, Redis and
//! RabbitMQ and says exactly what to change.
//!
//! Binlog settings are problems for the `binlog` strategy and notes for the others (they
//! do not need a binlog, but a user comparing strategies will want to know).

use std::fmt;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::config::Config;
use crate::redact::redact_url;
use crate::strategy::StrategyKind;

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

/// Runs every check; never fails itself — unreachable services are findings.
pub async fn check(config: &Config) -> Report {
    let mut report = Report::default();
    check_mysql(config, &mut report).await;
    check_redis(config, &mut report).await;
    check_amqp(config, &mut report).await;
    report
}

async fn check_mysql(config: &Config, report: &mut Report) {
    let url = redact_url(&config.mysql_url);
    let pool = match crate::mysql::pool(&config.mysql_url) {
        Ok(pool) => pool,
        Err(e) => return report.push(Severity::Problem, e.to_string()),
    };
    let mut conn = match crate::mysql::get_conn(&pool, &config.mysql_url).await {
        Ok(conn) => conn,
        Err(e @ crate::error::Error::Unreachable { .. }) => {
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
    let binlog = if config.strategy == StrategyKind::Binlog {
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
    if config.strategy == StrategyKind::Binlog
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

    match crate::schema::load_tables(config, &pool).await {
        Ok(tables) => report.push(
            Severity::Ok,
            format!(
                "tables: {}",
                tables
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Err(crate::error::Error::Config(problems)) => {
            for p in problems {
                report.push(Severity::Problem, p);
            }
        }
        Err(e) => report.push(Severity::Problem, e.to_string()),
    }
    drop(conn);
    pool.disconnect().await.ok();
}

/// The server's binlog settings: what is right (`log_bin=ON`, ...) and, for what is
/// not, the setting to change.
pub struct BinlogSettings {
    pub fine: Vec<String>,
    /// Settings the binlog strategy cannot work without.
    pub wrong: Vec<String>,
    /// Settings it works without, less well (it falls back to `information_schema`).
    pub advice: Vec<String>,
}

/// Checks `log_bin`, `binlog_format`, `binlog_row_image`, `binlog_row_metadata` and
/// `server_id` — what the binlog strategy needs.
pub async fn binlog_settings(conn: &mut mysql_async::Conn) -> BinlogSettings {
    let mut fine = Vec::new();
    let mut wrong: Vec<String> = Vec::new();
    let mut advice: Vec<String> = Vec::new();

    type BinlogVars = (Option<String>, Option<String>, Option<String>, Option<u64>);
    let vars: Option<BinlogVars> = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@server_id")
        .await
        .ok()
        .flatten();
    let Some((log_bin, format, image, server_id)) = vars else {
        return BinlogSettings {
            fine,
            wrong: vec!["cannot read the server's binlog variables".to_owned()],
            advice,
        };
    };
    if log_bin.as_deref() == Some("1") {
        fine.push("log_bin=ON".to_owned());
    } else {
        wrong.push(
            "log_bin is OFF: start the server with --log-bin=mysql-bin \
             (my.cnf: [mysqld] log_bin = mysql-bin) and restart it"
                .to_owned(),
        );
    }
    let format = format.unwrap_or_default();
    if format.eq_ignore_ascii_case("ROW") {
        fine.push("binlog_format=ROW".to_owned());
    } else {
        wrong.push(format!(
            "binlog_format is {format}: set binlog_format = ROW \
                 (my.cnf: [mysqld] binlog_format = ROW, or SET GLOBAL binlog_format = 'ROW')"
        ));
    }
    let image = image.unwrap_or_default();
    if image.eq_ignore_ascii_case("FULL") {
        fine.push("binlog_row_image=FULL".to_owned());
    } else {
        wrong.push(format!(
            "binlog_row_image is {image}: set binlog_row_image = FULL \
                 (my.cnf: [mysqld] binlog_row_image = FULL) so updates carry whole rows"
        ));
    }
    match conn
        .query_first::<Option<String>, _>("SELECT @@binlog_row_metadata")
        .await
    {
        Ok(Some(Some(meta))) if meta.eq_ignore_ascii_case("FULL") => {
            fine.push("binlog_row_metadata=FULL".to_owned())
        }
        Ok(Some(meta)) => advice.push(format!(
            "binlog_row_metadata is {}: set binlog_row_metadata = FULL \
                 (my.cnf: [mysqld] binlog_row_metadata = FULL) so row events name their columns; \
                 until then cachesync relies on information_schema and notices renames only by DDL",
            meta.unwrap_or_default()
        )),
        _ => advice.push(
            "the server has no binlog_row_metadata (it needs MySQL >= 8.0.1 or MariaDB >= 10.5); \
             cachesync relies on information_schema and notices renames only by DDL"
                .to_owned(),
        ),
    }
    match server_id {
        Some(id) if id > 0 => fine.push(format!("server_id={id}")),
        _ => wrong.push(
            "server_id is 0: set a unique non-zero server_id (my.cnf: [mysqld] server_id = 1)"
                .to_owned(),
        ),
    }
    BinlogSettings {
        fine,
        wrong,
        advice,
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
    match crate::strategy::binlog::snapshot::binary_log_status(conn).await {
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
    let mut conn = match crate::applier::connect_redis(&config.redis_url).await {
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
}

async fn check_amqp(config: &Config, report: &mut Report) {
    let Some(amqp_url) = config.amqp.as_ref().map(|a| &a.url) else {
        if config.strategy == StrategyKind::Mq {
            report.push(Severity::Problem, "amqp.url is not set");
        }
        return;
    };
    let severity = if config.strategy == StrategyKind::Mq {
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
        Ok(Err(e)) => report.push(severity, format!("cannot reach RabbitMQ at {url}: {e}")),
        Err(_) => report.push(
            severity,
            format!(
                "cannot reach RabbitMQ at {url}: no answer within {}s",
                TIMEOUT.as_secs()
            ),
        ),
    }
}
