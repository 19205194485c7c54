//! Everything a variant's run needs around it, and what the criterion bench
//! `write_paths` shares: the bench table, the config a variant runs with, the Redis keys
//! and RabbitMQ topology it cleans up, waiting for the binlog tailer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use super::Options;
use super::faults::{self, Fault, Proxy};
use super::workload::Variant;
use crate::cmd::run::Daemon;
use crate::config::{Config, RawConfig};
use crate::error::{Error, Result};
use crate::model::table::{SyncedTable, quote_ident};
use crate::strategy::Services;
use crate::strategy::mq::config::PublishMode;

/// How long the binlog strategy may take to snapshot the bench table and start tailing.
pub const START_LIMIT: Duration = Duration::from_secs(120);
/// The binlog variants' heartbeat table, in the bench database.
const HEARTBEAT_TABLE: &str = "heartbeat";

/// `/proc/loadavg`'s three averages: the bench shares the machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Names one variant's things.
pub struct Names {
    pub slug: String,
    /// Redis key of row `id` is `{row_prefix}{id}`.
    pub row_prefix: String,
    /// Everything of this variant in Redis starts with this.
    pub redis_prefix: String,
    pub checkpoint_key: String,
    pub amqp: String,
}

impl Names {
    pub fn new(options: &Options, variant: &Variant) -> Names {
        let slug = variant.slug();
        let redis_prefix = format!("{}:{slug}:", options.key_prefix);
        Names {
            row_prefix: format!("{redis_prefix}item:"),
            checkpoint_key: format!("{redis_prefix}checkpoint"),
            amqp: format!(
                "cachesync.bench.{}.{slug}",
                options.key_prefix.replace(':', ".")
            ),
            redis_prefix,
            slug,
        }
    }
}

/// The config a variant runs with: the services of `config`, the bench table, the
/// variant's strategy settings, and the proxy for the fault in between.
pub fn variant_config(
    config: &Config,
    options: &Options,
    variant: &Variant,
    names: &Names,
    proxy: Option<&Proxy>,
) -> Result<Config> {
    let via_proxy = |url: &str| proxy.map_or(url.to_owned(), |p| faults::via(url, p.addr));
    let mut table = serde_json::json!({
        "name": format!("{}.items", options.database),
        "key": format!("{}{{id}}", names.row_prefix),
    });
    // Write-back keeps its versions in the version column, which is how the bench reads
    // from MySQL which of its changes arrived.
    if variant.versioned || variant.kind.redis_holds_unflushed_writes() {
        table["version_column"] = "v".into();
    }
    if variant.invalidate {
        table["mode"] = "invalidate".into();
    }
    let redis_url = if options.fault == Fault::RedisRestart {
        via_proxy(&config.redis_url)
    } else {
        config.redis_url.clone()
    };
    let mut tree = serde_json::json!({
        // Its own deployment: its marker and snapshot progress do not meet another run's.
        "name": names.redis_prefix,
        "strategy": variant.kind.name(),
        "mysql": { "url": config.mysql_url },
        "redis": { "url": redis_url },
        "metrics": { "listen": config.metrics_listen.to_string() },
        "binlog": {
            // Beside a daemon with the same config, the bench's replica needs its own id.
            "server_id": config.binlog.server_id.wrapping_add(1).max(1),
            // So binlog reports `propagation_seconds` and sub-second lag on /metrics as a
            // daemon configured this way would (the table's own figures do not use it).
            "heartbeat_table": format!("{}.{HEARTBEAT_TABLE}", options.database),
            "checkpoint_key": names.checkpoint_key,
            "batch_size": config.binlog.batch_size,
            // The config's group-commit window, so its cost and latency can be compared.
            "linger_ms": config.binlog.linger.as_millis() as u64,
        },
        "tables": [table],
    });
    tree["write_back"] = serde_json::json!({
        "stream": format!("{}queue", names.redis_prefix),
        "dead_letter_stream": format!("{}dead", names.redis_prefix),
    });
    if let (true, Some(amqp)) = (variant.kind.needs_broker(), &config.amqp) {
        let url = if options.fault == Fault::BrokerDrop {
            via_proxy(&amqp.url)
        } else {
            amqp.url.clone()
        };
        tree["amqp"] = serde_json::json!({
            "url": url,
            "exchange": names.amqp,
            "queue": names.amqp,
            "dead_letter_queue": format!("{}.dlq", names.amqp),
            "prefetch": amqp.prefetch,
            "publish": match variant.publish {
                PublishMode::Direct => "direct",
                PublishMode::Outbox => "outbox",
            },
            "outbox_table": format!("{}.outbox_{}", options.database, names.slug.replace('-', "_")),
        });
    }
    RawConfig::from_tree(tree)
        .map_err(Error::Config)?
        .validate()
}

/// Creates (again) `{database}.items` with `keys` rows at version 1.
pub async fn prepare_table(pool: &mysql_async::Pool, database: &str, keys: u64) -> Result<()> {
    let db = quote_ident(database);
    let mut conn = pool
        .get_conn()
        .await
        .map_err(|e| Error::mysql("bench: connecting to MySQL", e))?;
    let statements = [
        format!("CREATE DATABASE IF NOT EXISTS {db}"),
        format!("DROP TABLE IF EXISTS {db}.items"),
        format!(
            "CREATE TABLE {db}.items (id BIGINT UNSIGNED PRIMARY KEY,              v BIGINT UNSIGNED NOT NULL DEFAULT 1, payload VARCHAR(64) NOT NULL,              updated DATETIME(6) NOT NULL)"
        ),
        // `v` follows commit order: the row lock serialises updates of one row. A write
        // that sets a newer `v` itself (write-back's version) keeps it.
        format!(
            "CREATE TRIGGER {db}.items_version BEFORE UPDATE ON {db}.items \
             FOR EACH ROW SET NEW.v = IF(NEW.v > OLD.v, NEW.v, OLD.v + 1)"
        ),
        "SET SESSION max_recursive_iterations = 100000000".to_owned(),
        format!(
            "INSERT INTO {db}.items (id, payload, updated)              WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {keys})              SELECT i, CONCAT('row ', i), '2026-01-01 00:00:00' FROM seq"
        ),
    ];
    for sql in statements {
        conn.query_drop(&sql)
            .await
            .map_err(|e| Error::mysql(format!("bench: preparing the table ({sql})"), e))?;
    }
    Ok(())
}

pub async fn drop_bench_tables(pool: &mysql_async::Pool, database: &str) {
    let db = quote_ident(database);
    let outcome = async {
        let mut conn = pool.get_conn().await?;
        let outboxes: Vec<String> = conn
            .exec(
                "SELECT table_name FROM information_schema.tables                  WHERE table_schema = ? AND table_name LIKE 'outbox\\_%'",
                (database,),
            )
            .await?;
        conn.query_drop(format!(
            "DROP TABLE IF EXISTS {db}.items, {db}.{HEARTBEAT_TABLE}"
        ))
        .await?;
        for outbox in outboxes {
            conn.query_drop(format!(
                "DROP TABLE IF EXISTS {db}.{}",
                quote_ident(&outbox)
            ))
            .await?;
        }
        Ok::<(), mysql_async::Error>(())
    };
    if let Err(e) = outcome.await {
        tracing::warn!(error = %e, "bench: could not drop the bench tables");
    }
}

/// Every key of a variant's run: rows, their companion keys (`{<key>}:cachesync:…`:
/// tombstones, read markers), and the keys of the deployment named after the prefix
/// (marker, snapshot progress: `cachesync:{<prefix>}:...`).
fn run_patterns(prefix: &str) -> [String; 3] {
    [
        format!("{prefix}*"),
        format!("{{{prefix}*"),
        format!("cachesync:{{{prefix}}}:*"),
    ]
}

/// Deletes every key of a variant's run in one script call: what a Redis restart without
/// persistence does to it. One call, so the strategy cannot see part of the loss and
/// rebuild while the rest is still being deleted (a sweep in several calls would delete
/// the rebuild's own first keys).
pub async fn lose_redis_data(redis_url: &str, prefix: &str) -> Result<u64> {
    const DELETE_MATCHING_LUA: &str = r"
local n = 0
for _, pattern in ipairs(ARGV) do
  local cursor = '0'
  repeat
    local page = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 5000)
    cursor = page[1]
    for _, key in ipairs(page[2]) do n = n + redis.call('DEL', key) end
  until cursor == '0'
end
return n
";
    let mut redis = crate::redis::connection::connect(redis_url).await?;
    redis::cmd("EVAL")
        .arg(DELETE_MATCHING_LUA)
        .arg(0)
        .arg(&run_patterns(prefix)[..])
        .query_async(&mut redis)
        .await
        .map_err(|e| Error::redis("bench: deleting the run's keys (redis-data-loss)", e))
}

/// Deletes every key of a variant's run (see [`run_patterns`]).
pub async fn clear_redis(redis_url: &str, prefix: &str) -> Result<()> {
    let mut redis = crate::redis::connection::connect(redis_url).await?;
    for pattern in run_patterns(prefix) {
        crate::redis::connection::delete_matching(
            &mut redis,
            &pattern,
            "bench: clearing the bench keys",
        )
        .await?;
    }
    Ok(())
}

/// Deletes the variant's queues and exchanges, so no event of an earlier run is left.
pub async fn reset_amqp(url: &str, name: &str) -> Result<()> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let shown = crate::redact::redact_url(url);
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| Error::Unreachable {
            service: "RabbitMQ",
            url: shown.clone(),
            reason: e.to_string(),
        })?;
    let fail = |e: lapin::Error| Error::Unreachable {
        service: "RabbitMQ",
        url: shown.clone(),
        reason: format!("resetting the bench's queues {name}: {e}"),
    };
    let channel = conn.create_channel().await.map_err(fail)?;
    for queue in [name.to_owned(), format!("{name}.dlq")] {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .map_err(fail)?;
    }
    for exchange in [name.to_owned(), format!("{name}.dead")] {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .map_err(fail)?;
    }
    conn.close(0, "bench reset".into()).await.map_err(fail)?;
    Ok(())
}

/// Loads every row into Redis through the applier, as a cache that was in use when the
/// run began — for a strategy that runs no online snapshot, before any write.
pub async fn warm(services: &Services, table: &Arc<SyncedTable>) -> Result<()> {
    let mut conn = crate::mysql::get_conn(&services.pool, &services.mysql_url).await?;
    services
        .applier
        .load_table(&mut conn, table, 1000, "bench warm-up", |row| {
            table.version_of(row)
        })
        .await
        .map(drop)
}

/// Waits until the binlog strategy has snapshotted the table and tails.
pub async fn wait_for_tailing(daemon: &Daemon, checkpoint_key: &str) -> Result<()> {
    let mut redis = daemon.services().applier.connection();
    let began = Instant::now();
    loop {
        let checkpoint: Option<String> = redis::cmd("GET")
            .arg(checkpoint_key)
            .query_async(&mut redis)
            .await
            .map_err(|e| Error::redis("bench: reading the checkpoint", e))?;
        if checkpoint.is_some() {
            return Ok(());
        }
        if daemon.is_finished() {
            return Err(Error::Strategy {
                strategy: "binlog",
                reason: "it stopped before tailing; its error is logged above".to_owned(),
            });
        }
        if began.elapsed() > START_LIMIT {
            return Err(Error::Strategy {
                strategy: "binlog",
                reason: format!("no checkpoint after {START_LIMIT:?}: the snapshot did not finish"),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
