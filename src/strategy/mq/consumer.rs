//! The consumer: change events from the queue into Redis.
//!
//! Up to `amqp.prefetch` deliveries are taken at once, decoded, applied to Redis in one
//! pipelined batch in delivery order, and only then acknowledged (one `multiple` ack).
//! A crash before the ack means redelivery, which the version guard makes harmless.
//! A message that can never be applied is rejected without requeue: the queue's
//! dead-letter exchange moves it to `amqp.dead_letter_queue`, and
//! `cachesync_dead_lettered_total` counts it — nothing is dropped silently.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::broker;
use super::config::AmqpConfig;
use crate::error::{Error, Result, Retry};
use crate::metrics as m;
use crate::model::change::Change;
use crate::model::event::{ChangeEvent, Unapplicable};
use crate::model::table::SyncedTable;
use crate::mysql::schema::Replanner;
use crate::redis::Applier;

/// Consumes until `shutdown`, reconnecting with backoff when the broker goes away. An
/// event whose row does not fit its table's plan makes `replanner` look at the table
/// again (a DDL since the start) before the event is applied or dead-lettered.
pub async fn consume(
    applier: Applier,
    config: AmqpConfig,
    mut tables: HashMap<String, Arc<SyncedTable>>,
    replanner: Arc<Replanner>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut retry = Retry::new("consumer lost the broker; reconnecting", &shutdown);
    loop {
        match consume_once(&applier, &config, &mut tables, &replanner, &shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if !retry.again(e).await? {
                    return Ok(());
                }
            }
        }
    }
}

async fn consume_once(
    applier: &Applier,
    config: &AmqpConfig,
    tables: &mut HashMap<String, Arc<SyncedTable>>,
    replanner: &Replanner,
    shutdown: &CancellationToken,
) -> Result<()> {
    let broker_error = |what: &str, e: lapin::Error| broker::broker_error(config, what, &e);
    let conn = broker::connect(config, "cachesync-consumer").await?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| broker_error("opening a channel", e))?;
    broker::declare_topology(&channel, config).await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| broker_error("setting prefetch", e))?;
    let mut deliveries = channel
        .basic_consume(
            config.queue.as_str().into(),
            "cachesync".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| broker_error("starting the consumer", e))?;
    info!(queue = %config.queue, prefetch = config.prefetch, "consuming change events");

    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = deliveries.next() => next,
        };
        let first = match first {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => return Err(broker_error("receiving", e)),
            None => {
                return Err(Error::Unreachable {
                    service: "RabbitMQ",
                    url: crate::redact::redact_url(&config.url),
                    reason: "the broker ended the consumer".to_owned(),
                });
            }
        };
        // Take what has already arrived, up to the prefetch window, without waiting.
        let mut batch = vec![first];
        while batch.len() < usize::from(config.prefetch) {
            match deliveries.next().now_or_never() {
                Some(Some(Ok(delivery))) => batch.push(delivery),
                _ => break,
            }
        }
        let mut changes = Vec::with_capacity(batch.len());
        let mut last_tag = None;
        for delivery in &batch {
            match parse(&delivery.data, tables, replanner).await {
                Ok(change) => {
                    changes.push(change);
                    last_tag = Some(delivery.delivery_tag);
                }
                Err(reason) => {
                    warn!(%reason, "change event cannot be applied; dead-lettering it");
                    metrics::counter!(m::DEAD_LETTERED, "strategy" => "mq").increment(1);
                    channel
                        .basic_reject(delivery.delivery_tag, BasicRejectOptions { requeue: false })
                        .await
                        .map_err(|e| broker_error("rejecting", e))?;
                }
            }
        }
        let mut retry = Retry::new(
            "Redis write failed; retrying (messages stay unacknowledged)",
            shutdown,
        );
        loop {
            match applier.apply(&changes).await {
                Ok(_) => break,
                Err(e) => {
                    if !retry.again(e).await? {
                        // Unacknowledged messages are redelivered to whoever consumes next.
                        return Ok(());
                    }
                }
            }
        }
        if let Some(tag) = last_tag {
            channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .map_err(|e| broker_error("acknowledging", e))?;
        }
    }
}

/// Reads a delivery into a change; when its row does not fit its table's plan (a
/// column the plan lacks, or one it has that the row lacks), re-plans the table once —
/// a DDL since the plan was made — and reads it again.
async fn parse(
    payload: &[u8],
    tables: &mut HashMap<String, Arc<SyncedTable>>,
    replanner: &Replanner,
) -> std::result::Result<Change, Unapplicable> {
    let parsed = ChangeEvent::parse(payload, tables);
    let stale = match &parsed {
        Ok(parsed) if parsed.unplanned => Some(parsed.change.table.clone()),
        Err(Unapplicable {
            shape_of: Some(name),
            ..
        }) => tables.get(name).cloned(),
        _ => None,
    };
    if let Some(table) = stale
        && let Some(plan) = replanner.replan(&table).await
    {
        tables.insert(table.name(), Arc::new(plan));
        return ChangeEvent::parse(payload, tables).map(|parsed| parsed.change);
    }
    parsed.map(|parsed| parsed.change)
}
