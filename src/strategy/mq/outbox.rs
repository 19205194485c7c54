//! The transactional outbox and its relay.
//!
//! A write inserts its change event into the outbox table in the same transaction as
//! the row, so the event exists exactly when the change does. The relay publishes
//! outbox rows in id order — stamping each event's version with its id — waits for the
//! broker's confirms, then deletes exactly the rows it published (a transaction that took
//! a smaller id may commit after a larger one was read; its row waits for the next
//! round). A crash before the delete publishes them again
//! after restart: duplicates, which the version guard makes harmless; never a loss.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::broker::Publisher;
use crate::error::{Backoff, Error, Result};
use crate::model::event::ChangeEvent;
use crate::model::table::quote_ident;

/// Outbox rows published per round.
const RELAY_BATCH: usize = 500;
/// How often the relay looks without being woken (rows written by another process).
const POLL: Duration = Duration::from_millis(500);

fn qualified((db, table): &(String, String)) -> String {
    format!("{}.{}", quote_ident(db), quote_ident(table))
}

/// Creates the outbox table if it is missing.
pub async fn ensure_table(
    pool: &mysql_async::Pool,
    url: &str,
    table: &(String, String),
) -> Result<()> {
    let mut conn = crate::mysql::get_conn(pool, url).await?;
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {}",
        quote_ident(&table.0)
    ))
    .await
    .map_err(|e| Error::mysql(format!("creating the outbox database {}", table.0), e))?;
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {} (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         payload LONGBLOB NOT NULL) ENGINE=InnoDB",
        qualified(table)
    ))
    .await
    .map_err(|e| {
        Error::mysql(
            format!("creating the outbox table {}.{}", table.0, table.1),
            e,
        )
    })?;
    Ok(())
}

/// Adds `event` to the outbox inside the writer's transaction; returns its id.
pub async fn insert(
    tx: &mut mysql_async::Transaction<'_>,
    table: &(String, String),
    event: &ChangeEvent,
) -> Result<u64> {
    tx.exec_drop(
        format!("INSERT INTO {} (payload) VALUES (?)", qualified(table)),
        (event.to_bytes(),),
    )
    .await
    .map_err(|e| Error::mysql("adding the change event to the outbox", e))?;
    tx.last_insert_id().ok_or_else(|| Error::Strategy {
        strategy: "mq",
        reason: "the outbox insert returned no id".to_owned(),
    })
}

/// What the relay works with.
pub struct Relay {
    pub pool: mysql_async::Pool,
    pub mysql_url: String,
    pub table: (String, String),
    pub publisher: Arc<Publisher>,
    pub kick: Arc<Notify>,
    pub relayed: watch::Sender<u64>,
}

/// Publishes outbox rows until `shutdown`. Failures (MySQL or broker) are retried with
/// backoff; nothing is deleted before the broker confirmed it. Unlike the other retry
/// loops ([`crate::error::Retry`]) the relay retries *every* failure, a broker's nack
/// included: each round starts from what the outbox holds, so a round that failed for any
/// reason only delays the events, and stopping the relay would strand them.
pub async fn relay(relay: Relay, shutdown: CancellationToken) -> Result<()> {
    let mut backoff = Backoff::new();
    loop {
        match relay_round(&relay).await {
            Ok(0) => {
                backoff.reset();
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = relay.kick.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            Ok(_) => backoff.reset(),
            Err(e) => {
                let wait = backoff.next_wait();
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "outbox relay failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

/// Publishes one batch of outbox rows; returns how many.
async fn relay_round(relay: &Relay) -> Result<usize> {
    let mut conn = crate::mysql::get_conn(&relay.pool, &relay.mysql_url).await?;
    let rows: Vec<(u64, Vec<u8>)> = conn
        .exec(
            format!(
                "SELECT id, payload FROM {} ORDER BY id LIMIT {RELAY_BATCH}",
                qualified(&relay.table)
            ),
            (),
        )
        .await
        .map_err(|e| Error::mysql("reading the outbox", e))?;
    let Some(&(last, _)) = rows.last() else {
        return Ok(0);
    };
    let mut payloads = Vec::with_capacity(rows.len());
    for (id, payload) in &rows {
        match serde_json::from_slice::<ChangeEvent>(payload) {
            Ok(mut event) => {
                event.version = Some(*id);
                payloads.push(event.to_bytes());
            }
            // Only cachesync writes the outbox; publish as is and let the consumer
            // dead-letter it rather than block the outbox forever.
            Err(_) => payloads.push(payload.clone()),
        }
    }
    relay.publisher.publish_all(&payloads).await?;
    // Delete exactly the rows published. `id <= last` would also delete rows with a
    // smaller id whose transactions committed after the SELECT (ids are taken at insert,
    // not at commit) — events never published: lost. `cachesync bench` found this.
    let ids: Vec<String> = rows.iter().map(|(id, _)| id.to_string()).collect();
    conn.query_drop(format!(
        "DELETE FROM {} WHERE id IN ({})",
        qualified(&relay.table),
        ids.join(",")
    ))
    .await
    .map_err(|e| Error::mysql("removing relayed events from the outbox", e))?;
    relay.relayed.send_modify(|r| *r = (*r).max(last));
    Ok(rows.len())
}
