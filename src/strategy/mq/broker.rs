//! RabbitMQ plumbing: the durable topology, a confirming publisher, connections.
//!
//! Topology (declared idempotently by publisher and consumer alike):
//! - exchange `amqp.exchange` (direct, durable) → queue `amqp.queue` (durable), routing
//!   key [`ROUTING_KEY`];
//! - the queue dead-letters to exchange `<amqp.exchange>.dead` (fanout, durable) → queue
//!   `amqp.dead_letter_queue` (durable): messages the consumer rejects land there.
//!
//! Messages are persistent (delivery mode 2) and published on a channel in confirm
//! mode: a publish returns only once the broker has taken responsibility for it.

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use super::config::AmqpConfig;
use crate::error::{Error, Result};
use crate::redact::{redact_url, scrub};

/// Routing key of change events.
pub const ROUTING_KEY: &str = "change";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker failure that is not the broker's answer (a timeout) as [`Error::Unreachable`];
/// the message never shows the password, even parts a URL parser misread and quoted.
fn amqp_error(config: &AmqpConfig, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unreachable {
        service: "RabbitMQ",
        url: redact_url(&config.url),
        reason: scrub(&format!("{what}: {e}"), &config.url),
    }
}

/// A broker failure from lapin. A refused login (`ACCESS_REFUSED`: wrong user or
/// password) or a vhost the user may not open (`NOT_ALLOWED`) is [`Error::Refused`]:
/// retrying cannot fix it, so the daemon stops and says so instead of logging a retry
/// every second while writes hang. Anything else is [`Error::Unreachable`] (retried).
pub fn broker_error(config: &AmqpConfig, what: &str, e: &lapin::Error) -> Error {
    const ACCESS_REFUSED: u16 = 403;
    const NOT_ALLOWED: u16 = 530;
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.get_id(), ACCESS_REFUSED | NOT_ALLOWED) =>
        {
            Error::Refused {
                service: "RabbitMQ",
                url: redact_url(&config.url),
                reason: scrub(
                    &format!("{what}: {e} (check the user, password and vhost in amqp.url)"),
                    &config.url,
                ),
            }
        }
        _ => amqp_error(config, what, e),
    }
}

/// Connects to the broker, naming it (password redacted) on failure.
pub async fn connect(config: &AmqpConfig, name: &str) -> Result<Connection> {
    let properties = ConnectionProperties::default()
        .with_connection_name(LongString::from(name.as_bytes().to_vec()));
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect(&config.url, properties),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(broker_error(config, "connecting", &e)),
        Err(_) => Err(amqp_error(
            config,
            "connecting",
            format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
        )),
    }
}

/// Declares the exchange, queue, dead-letter exchange and queue, and their bindings.
pub async fn declare_topology(channel: &Channel, config: &AmqpConfig) -> Result<()> {
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let dead_exchange = format!("{}.dead", config.exchange);
    let fail = |what: &str, e: lapin::Error| broker_error(config, what, &e);
    channel
        .exchange_declare(
            config.exchange.as_str().into(),
            ExchangeKind::Direct,
            durable_exchange,
            FieldTable::default(),
        )
        .await
        .map_err(|e| fail("declaring the exchange", e))?;
    channel
        .exchange_declare(
            dead_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable_exchange,
            FieldTable::default(),
        )
        .await
        .map_err(|e| fail("declaring the dead-letter exchange", e))?;
    channel
        .queue_declare(
            config.dead_letter_queue.as_str().into(),
            durable_queue,
            FieldTable::default(),
        )
        .await
        .map_err(|e| fail("declaring the dead-letter queue", e))?;
    channel
        .queue_bind(
            config.dead_letter_queue.as_str().into(),
            dead_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| fail("binding the dead-letter queue", e))?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(dead_exchange.into_bytes())),
    );
    channel
        .queue_declare(config.queue.as_str().into(), durable_queue, arguments)
        .await
        .map_err(|e| fail("declaring the queue", e))?;
    channel
        .queue_bind(
            config.queue.as_str().into(),
            config.exchange.as_str().into(),
            ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| fail("binding the queue", e))?;
    Ok(())
}

/// Publishes with confirms over one lazily (re)opened connection.
pub struct Publisher {
    config: AmqpConfig,
    link: Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    pub fn new(config: AmqpConfig) -> Publisher {
        Publisher {
            config,
            link: Mutex::new(None),
        }
    }

    /// Publishes `payloads` in order and returns once the broker confirmed all of them.
    /// On failure the connection is dropped (the next call reconnects) and nothing is
    /// known about which were taken: the caller publishes them again (harmless: versions).
    /// Concurrent callers share the channel; the lock is held only to (re)connect, not
    /// while waiting for confirms.
    pub async fn publish_all(&self, payloads: &[Vec<u8>]) -> Result<()> {
        let channel = self.channel().await?;
        let outcome = self.publish_on(&channel, payloads).await;
        if outcome.is_err() {
            let mut link = self.link.lock().await;
            if link.as_ref().is_some_and(|(_, c)| c.id() == channel.id()) {
                *link = None;
            }
        }
        outcome
    }

    /// The shared confirm-mode channel, connecting first when there is none.
    async fn channel(&self) -> Result<Channel> {
        let mut link = self.link.lock().await;
        if let Some((conn, channel)) = link.as_ref()
            && conn.status().connected()
        {
            return Ok(channel.clone());
        }
        let conn = connect(&self.config, "cachesync-publisher").await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| broker_error(&self.config, "opening a channel", &e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| broker_error(&self.config, "enabling publisher confirms", &e))?;
        declare_topology(&channel, &self.config).await?;
        *link = Some((conn, channel.clone()));
        Ok(channel)
    }

    async fn publish_on(&self, channel: &Channel, payloads: &[Vec<u8>]) -> Result<()> {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        let mut confirms = Vec::with_capacity(payloads.len());
        for payload in payloads {
            let confirm = channel
                .basic_publish(
                    self.config.exchange.as_str().into(),
                    ROUTING_KEY.into(),
                    BasicPublishOptions::default(),
                    payload,
                    properties.clone(),
                )
                .await
                .map_err(|e| broker_error(&self.config, "publishing", &e))?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirmation = confirm
                .await
                .map_err(|e| broker_error(&self.config, "waiting for the publisher confirm", &e))?;
            if confirmation.is_nack() {
                return Err(Error::Strategy {
                    strategy: "mq",
                    reason: "the broker refused (nack) a change event".to_owned(),
                });
            }
        }
        Ok(())
    }
}
