//! `cachesync snapshot`: (re)load tables into Redis.
//!
//! - When a daemon of this config answers on its API (`[api]`), it is asked to snapshot
//!   the tables online (`POST /v1/snapshots`; every table without `--table`), and its
//!   progress is printed until they are done (`--no-wait` returns at once).
//! - Otherwise, with `--table`: the same online snapshot runs here, in the foreground.
//!   It is safe next to a daemon without an API (its chunks are guarded the same way).
//! - Otherwise (no `--table`), as ever: the binlog strategy loads every table from one
//!   consistent read and stores its binlog position as the checkpoint, so the next `run`
//!   tails from there — for a first start, after a purged binlog, or to rebuild a
//!   damaged cache; the other strategies run the online snapshot of every table.

use std::time::Duration;

use serde_json::Value as Json;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::strategy::Strategy;

/// What `cachesync snapshot` did, for its last line.
pub enum Done {
    /// The binlog strategy's full snapshot, at this position.
    Full(String),
    /// Online snapshots of these tables ran here.
    Here(Vec<String>),
    /// The running daemon at this address snapshotted these tables (or is still at it
    /// with `--no-wait`).
    Daemon {
        api: String,
        tables: Vec<String>,
        waited: bool,
    },
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Done::Full(position) => write!(
                f,
                "snapshot done at {position}; `cachesync run` continues from there"
            ),
            Done::Here(tables) => write!(f, "online snapshot done: {}", tables.join(", ")),
            Done::Daemon {
                api,
                tables,
                waited: true,
            } => write!(
                f,
                "the daemon at {api} finished the online snapshot of {}",
                tables.join(", ")
            ),
            Done::Daemon { api, tables, .. } => write!(
                f,
                "the daemon at {api} is snapshotting {} online; follow it with GET /v1/snapshots or cachesync_snapshot_rows_done",
                tables.join(", ")
            ),
        }
    }
}

/// How often the progress of a daemon's snapshot is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Runs `cachesync snapshot` for `tables` (every table when empty).
pub async fn snapshot(config: &Config, tables: &[String], wait: bool) -> Result<Done> {
    if let Some(done) = ask_daemon(config, tables, wait).await? {
        return Ok(done);
    }
    if tables.is_empty() && config.strategy.tails_binlog() {
        return full_binlog_snapshot(config).await.map(Done::Full);
    }
    let services = super::connect::connect(config).await?;
    let strategy = Strategy::build(config.strategy, &config.sections(), &services)?;
    let outcome = match strategy.snapshots() {
        Some(snapshots) => {
            let names = if tables.is_empty() {
                snapshots.table_names()
            } else {
                tables.to_vec()
            };
            snapshots
                .run_now(&names, "requested")
                .await
                .map(|()| Done::Here(names))
        }
        None => Err(Error::Strategy {
            strategy: config.strategy.name(),
            reason: "it runs no online snapshots".to_owned(),
        }),
    };
    services.pool.disconnect().await.ok();
    outcome
}

/// The binlog strategy's consistent full load, which resets the checkpoint.
async fn full_binlog_snapshot(config: &Config) -> Result<String> {
    let services = super::connect::connect(config).await?;
    let position = match crate::strategy::Binlog::new(&services, config.binlog.clone()) {
        Ok(binlog) => binlog.snapshot().await,
        Err(e) => Err(e),
    };
    services.pool.disconnect().await.ok();
    position.map(|p| p.to_string())
}

/// Asks the daemon serving this config's API to snapshot `tables`; `None` when no daemon
/// answers there (or the config has no `[api]`).
async fn ask_daemon(config: &Config, tables: &[String], wait: bool) -> Result<Option<Done>> {
    let Some(api) = &config.api else {
        return Ok(None);
    };
    let base = format!("http://{}", api.listen);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Io {
            context: "building the HTTP client".to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let with_token = |request: reqwest::RequestBuilder| match &api.token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let asked = with_token(client.post(format!("{base}/v1/snapshots")))
        .json(&serde_json::json!({ "tables": tables }))
        .send()
        .await;
    let answer = match asked {
        Ok(answer) => answer,
        // Nothing listens: no daemon runs this config.
        Err(e) if e.is_connect() => return Ok(None),
        Err(e) => return Err(unreachable(&base, e)),
    };
    let status = answer.status();
    let body: Json = answer.json().await.unwrap_or(Json::Null);
    if status != reqwest::StatusCode::ACCEPTED {
        return Err(Error::Strategy {
            strategy: config.strategy.name(),
            reason: format!(
                "the daemon at {base} refused the snapshot ({status}): {}",
                body["error"].as_str().unwrap_or("no message")
            ),
        });
    }
    let started: Vec<String> = body["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some(format!(
                "{} ({})",
                s["table"].as_str()?,
                s["state"].as_str().unwrap_or("?")
            ))
        })
        .collect();
    let names: Vec<String> = body["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["table"].as_str().map(str::to_owned))
        .collect();
    println!(
        "online snapshot on the running daemon at {base}: {}",
        started.join(", ")
    );
    if !wait {
        return Ok(Some(Done::Daemon {
            api: base,
            tables: names,
            waited: false,
        }));
    }
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let answer = with_token(client.get(format!("{base}/v1/snapshots")))
            .send()
            .await
            .map_err(|e| unreachable(&base, e))?;
        let body: Json = answer.json().await.map_err(|e| unreachable(&base, e))?;
        let running: Vec<&Json> = body["snapshots"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| names.iter().any(|n| s["table"].as_str() == Some(n)))
            .collect();
        if running.is_empty() {
            return Ok(Some(Done::Daemon {
                api: base,
                tables: names,
                waited: true,
            }));
        }
        for s in running {
            let total = s["rows_total"]
                .as_u64()
                .map_or_else(|| "?".to_owned(), |t| format!("~{t}"));
            let rate = s["rows_per_s"]
                .as_u64()
                .map_or_else(|| "?".to_owned(), |r| r.to_string());
            match s["error"].as_str() {
                Some(error) => {
                    return Err(Error::Strategy {
                        strategy: config.strategy.name(),
                        reason: format!(
                            "the daemon's snapshot of {} failed: {error}",
                            s["table"].as_str().unwrap_or("?")
                        ),
                    });
                }
                None => println!(
                    "  {}: {} of {total} rows, {rate} rows/s",
                    s["table"].as_str().unwrap_or("?"),
                    s["rows_done"]
                ),
            }
        }
    }
}

fn unreachable(base: &str, e: reqwest::Error) -> Error {
    Error::Unreachable {
        service: "the cachesync API",
        url: base.to_owned(),
        reason: e.to_string(),
    }
}
