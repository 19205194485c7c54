//! Noticing that Redis lost its data, for the strategies that keep no checkpoint there
//! (dual-write, mq; the binlog strategy's checkpoint does this job, see
//! `crate::strategy::binlog`), and rebuilding it online.
//!
//! The deployment keeps a *marker* in Redis (`cachesync:{<name>}:marker`, a hash with no
//! TTL): an `epoch` (when the data Redis holds started to be built, plus a random part), a
//! `beat` counter and the synced table set. Every `snapshot.loss_check_interval_ms` each
//! process of the deployment runs one script ([`TICK_LUA`]) that increments `beat` and
//! compares:
//!
//! - the marker is gone → Redis lost its data (restart without persistence, `FLUSHALL`,
//!   failover to an empty replica, eviction under `allkeys-*`);
//! - `beat` is not above the value this process last saw, or the epoch is older than
//!   the one it knows → Redis came back from an older copy (an RDB file, a lagging
//!   replica): the writes made since that copy are gone (at most one interval's worth of
//!   them goes unnoticed).
//!
//! Either way the same script call writes a new marker and a progress-record entry for
//! every table ([`super::record`]), so the rebuild is recorded atomically with its cause
//! and survives a crash; the process counts it in `cachesync_redis_data_loss_total`,
//! logs it at warn and wakes its snapshot worker. Other processes of the deployment see
//! the newer epoch and adopt it instead of rebuilding again.
//!
//! Writes made between the loss and its detection land in the empty Redis; they are
//! newer than anything a chunk will read, and the chunks' guards keep them (see
//! [`super`]).
//!
//! At start ([`OPEN_LUA`]) a missing marker means a Redis that never held this deployment
//! or lost its data while no process ran: every table is loaded online, uncounted. A
//! table of the config missing from the marker's table set is snapshotted online.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Snapshots;
use crate::error::{Error, Result, Retry};

/// Start-up. KEYS[1]: the marker, KEYS[2]: the progress record. ARGV[1]: a new epoch,
/// ARGV[2]: the table set (JSON), then table/entry pairs of a full load. Returns
/// `{'created', epoch, beat, ''}` when there was no marker (the full load is recorded),
/// else `{'present', epoch, beat, tables}`.
const OPEN_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'beat', 1, 'tables', ARGV[2])
  for i = 3, #ARGV, 2 do redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) end
  return {'created', ARGV[1], 1, ''}
end
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local beat = redis.call('HINCRBY', KEYS[1], 'beat', 1)
return {'present', epoch, beat, redis.call('HGET', KEYS[1], 'tables') or ''}
"#;

/// One check. KEYS as [`OPEN_LUA`]. ARGV[1]: the epoch this process knows, ARGV[2]: the
/// beat it last saw, ARGV[3]: a new epoch, ARGV[4]: the table set, then table/entry pairs
/// of a full load. Returns `{outcome, epoch, beat}` with outcome `ok`, `adopt` (another
/// process rebuilt: a newer epoch), `lost` or `rollback` (this call recorded a rebuild).
const TICK_LUA: &str = r#"
local function rebuild()
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'epoch', ARGV[3], 'beat', 1, 'tables', ARGV[4])
  for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  rebuild()
  return {'lost', ARGV[3], 1}
end
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local beat = redis.call('HINCRBY', KEYS[1], 'beat', 1)
if epoch > ARGV[1] then return {'adopt', epoch, beat} end
if epoch < ARGV[1] or beat <= tonumber(ARGV[2]) then
  rebuild()
  return {'rollback', ARGV[3], 1}
end
return {'ok', epoch, beat}
"#;

/// A new epoch: ms since the Unix epoch, zero-padded so epochs compare as text, and a
/// random part so two processes never make the same one.
fn new_epoch() -> String {
    let ms = crate::model::change::unix_micros(std::time::SystemTime::now()) / 1000;
    format!("{ms:013}-{:016x}", rand::random::<u64>())
}

/// What this process knows of the marker.
struct Seen {
    epoch: String,
    beat: i64,
}

/// Keeps Redis complete for a strategy without a checkpoint: records the start-up
/// snapshots, runs the snapshot worker, and checks for data loss every interval, until
/// `shutdown`.
pub async fn run(snapshots: Snapshots, shutdown: CancellationToken) -> Result<()> {
    let mut retry = Retry::new(
        "cannot check the deployment marker in Redis; retrying",
        &shutdown,
    );
    let mut seen = loop {
        match open(&snapshots).await {
            Ok(seen) => break seen,
            Err(e) => {
                if !retry.again(e).await? {
                    return Ok(());
                }
            }
        }
    };
    let worker = {
        let snapshots = snapshots.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { snapshots.run(shutdown).await })
    };
    let interval = snapshots.inner.settings.loss_check_interval;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        match tick(&snapshots, &seen).await {
            Ok(next) => {
                if failing {
                    info!("the deployment marker is readable again");
                    failing = false;
                }
                seen = next;
            }
            // A Redis outage shows in the strategy's own errors; say it once here.
            Err(e) if e.is_transient() => {
                if !failing {
                    warn!(error = %e, "cannot check Redis for data loss; retrying every interval");
                    failing = true;
                }
            }
            Err(e) => {
                worker.abort();
                return Err(e);
            }
        }
    }
    worker.await.map_err(|e| Error::Strategy {
        strategy: snapshots.strategy(),
        reason: format!("the snapshot worker failed: {e}"),
    })?
}

fn tables_json(snapshots: &Snapshots) -> String {
    serde_json::Value::from(snapshots.table_names()).to_string()
}

async fn open(snapshots: &Snapshots) -> Result<Seen> {
    let keys = snapshots.keys();
    let script = redis::Script::new(OPEN_LUA);
    let mut invocation = script.prepare_invoke();
    invocation
        .key(&keys.marker)
        .key(&keys.snapshots)
        .arg(new_epoch())
        .arg(tables_json(snapshots));
    for (table, entry) in snapshots.entries(&[], "no deployment marker in Redis at start") {
        invocation.arg(table).arg(entry);
    }
    let mut redis = snapshots.inner.redis.clone();
    let (state, epoch, beat, tables): (String, String, i64, String) = invocation
        .invoke_async(&mut redis)
        .await
        .map_err(|e| Error::redis("reading the deployment marker", e))?;
    if state == "created" {
        info!(
            marker = keys.marker,
            "no deployment marker in Redis (first start, or Redis lost its data while cachesync was stopped): loading every table online"
        );
        snapshots.wake();
        return Ok(Seen { epoch, beat });
    }
    let known: Vec<String> = serde_json::from_str(&tables).unwrap_or_default();
    let added: Vec<String> = snapshots
        .table_names()
        .into_iter()
        .filter(|t| !known.contains(t))
        .collect();
    for removed in known
        .iter()
        .filter(|t| !snapshots.table_names().contains(t))
    {
        info!(
            table = removed,
            "table no longer in the config: no longer synced; its keys stay in Redis"
        );
    }
    if !added.is_empty() {
        info!(
            tables = added.join(","),
            "tables added to the config since the last start: snapshotting them online"
        );
        // Recorded before the marker's table set names them, so a crash in between asks
        // again instead of forgetting them.
        snapshots.request(&added, "added to the config").await?;
    }
    if !added.is_empty() || known.len() != snapshots.table_names().len() {
        let mut redis = snapshots.inner.redis.clone();
        redis::cmd("HSET")
            .arg(&keys.marker)
            .arg("tables")
            .arg(tables_json(snapshots))
            .query_async::<()>(&mut redis)
            .await
            .map_err(|e| Error::redis("updating the deployment marker", e))?;
    }
    Ok(Seen { epoch, beat })
}

async fn tick(snapshots: &Snapshots, seen: &Seen) -> Result<Seen> {
    let keys = snapshots.keys();
    let script = redis::Script::new(TICK_LUA);
    let mut invocation = script.prepare_invoke();
    invocation
        .key(&keys.marker)
        .key(&keys.snapshots)
        .arg(&seen.epoch)
        .arg(seen.beat)
        .arg(new_epoch())
        .arg(tables_json(snapshots));
    for (table, entry) in snapshots.entries(&[], "Redis lost its data") {
        invocation.arg(table).arg(entry);
    }
    let mut redis = snapshots.inner.redis.clone();
    let (outcome, epoch, beat): (String, String, i64) =
        invocation
            .invoke_async(&mut redis)
            .await
            .map_err(|e| Error::redis("checking the deployment marker", e))?;
    match outcome.as_str() {
        "lost" => {
            super::report_loss(snapshots.strategy(), "the deployment marker is gone");
            snapshots.wake();
        }
        "rollback" => {
            super::report_loss(
                snapshots.strategy(),
                "Redis came back from an older copy: the deployment marker went back in time",
            );
            snapshots.wake();
        }
        "adopt" => {
            info!(
                epoch,
                "another cachesync process of this deployment rebuilt Redis; following it"
            );
            snapshots.wake();
        }
        _ => {}
    }
    Ok(Seen { epoch, beat })
}

/// How long [`run`] waits between checks.
pub fn interval(snapshots: &Snapshots) -> Duration {
    snapshots.inner.settings.loss_check_interval
}

/// Runs [`run`] as a task of a strategy whose `shutdown` it cancels when it fails for
/// good: a daemon that can no longer notice data loss stops and says why, rather than
/// run on unguarded.
pub fn spawn(
    snapshots: Snapshots,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let outcome = run(snapshots, shutdown.clone()).await;
        if outcome.is_err() {
            shutdown.cancel();
        }
        outcome
    })
}
