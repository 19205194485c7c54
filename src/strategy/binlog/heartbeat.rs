//! Sub-second lag from a heartbeat row, as ReadySet measures it.
//!
//! Binlog event times have one-second resolution. When `binlog.heartbeat_table` is set,
//! cachesync writes `NOW(6)` into one row of that table every
//! `binlog.heartbeat_interval_ms` and reads it back off its own replication stream. A
//! change that follows a heartbeat in the binlog committed after it, so its commit time
//! is at least the heartbeat's time (and at least its event's second): that lower bound
//! is the commit time `propagation_seconds` and `lag_seconds` use. They overstate by up
//! to about one heartbeat interval, and assume the MySQL and cachesync clocks agree (same
//! host, or NTP).

use std::time::Duration;

use mysql_async::Value;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::{Error, Result};
use crate::model::table::quote_ident;

/// Creates the heartbeat table if it is missing.
pub async fn ensure_table(
    pool: &mysql_async::Pool,
    url: &str,
    (db, table): &(String, String),
) -> Result<()> {
    let mut conn = crate::mysql::get_conn(pool, url).await?;
    let name = format!("{}.{}", quote_ident(db), quote_ident(table));
    conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {}", quote_ident(db)))
        .await
        .map_err(|e| Error::mysql(format!("creating the heartbeat database {db}"), e))?;
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {name} (server_id INT UNSIGNED NOT NULL PRIMARY KEY, ts DATETIME(6) NOT NULL)"
    ))
    .await
    .map_err(|e| Error::mysql(format!("creating the heartbeat table {db}.{table}"), e))?;
    Ok(())
}

/// Writes the heartbeat row every `interval` until `shutdown`. Failures are logged (once
/// per minute at most) and retried: a missed beat only makes lag coarser.
pub async fn beat(
    pool: mysql_async::Pool,
    (db, table): (String, String),
    server_id: u32,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let statement = format!(
        "INSERT INTO {}.{} (server_id, ts) VALUES (?, NOW(6)) ON DUPLICATE KEY UPDATE ts = NOW(6)",
        quote_ident(&db),
        quote_ident(&table)
    );
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let outcome = match pool.get_conn().await {
            Ok(mut conn) => conn.exec_drop(&statement, (server_id,)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome
            && last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            last_warning = Some(tokio::time::Instant::now());
            warn!(error = %crate::error::describe_mysql(&e), table = %format!("{db}.{table}"), "heartbeat write failed; lag is coarser until it works");
        }
    }
}

/// The heartbeat time (µs since the Unix epoch, UTC) in a heartbeat row image
/// (`server_id`, `ts`).
pub fn micros_of(ts: &BinlogValue<'_>) -> Option<u64> {
    match ts {
        BinlogValue::Value(Value::Date(y, m, d, h, mi, s, us)) => {
            let days =
                crate::model::decode::days_from_civil(i64::from(*y), u32::from(*m), u32::from(*d));
            let secs = days * 86_400 + i64::from(*h) * 3600 + i64::from(*mi) * 60 + i64::from(*s);
            u64::try_from(secs)
                .ok()
                .map(|s| s * 1_000_000 + u64::from(*us))
        }
        _ => None,
    }
}
