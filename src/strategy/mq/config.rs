//! `[amqp]`: the broker the mq strategy publishes change events to and consumes them
//! from (its keys are documented in `docs/configuration.md`).

use serde::Deserialize;

use crate::model::table::parse_qualified_name;

#[derive(Debug, Clone, Deserialize)]
pub struct RawAmqp {
    pub url: String,
    /// Durable direct exchange change events are published to.
    #[serde(default = "default_exchange")]
    pub exchange: String,
    /// Durable queue the consumer reads (bound to the exchange).
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Where messages that cannot be applied go (malformed, unknown table).
    #[serde(default = "default_dead_letter_queue")]
    pub dead_letter_queue: String,
    /// Unacknowledged messages the consumer may hold.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// `outbox` (default): the event is inserted in the row's transaction and relayed;
    /// `direct`: published after the commit (a crash in between loses it).
    #[serde(default = "default_publish")]
    pub publish: String,
    /// `database.table` of the transactional outbox (created if missing).
    #[serde(default = "default_outbox_table")]
    pub outbox_table: String,
}

fn default_exchange() -> String {
    "cachesync.changes".to_owned()
}

fn default_queue() -> String {
    "cachesync.changes".to_owned()
}

fn default_dead_letter_queue() -> String {
    "cachesync.changes.dead".to_owned()
}

fn default_prefetch() -> u16 {
    256
}

fn default_publish() -> String {
    "outbox".to_owned()
}

fn default_outbox_table() -> String {
    "cachesync.outbox".to_owned()
}

/// How the `mq` strategy gets change events to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishMode {
    /// Commit, then publish: a crash in between loses the event.
    Direct,
    /// Insert the event into an outbox table in the row's transaction; a relay publishes
    /// outbox rows in order and deletes them after the broker confirmed.
    Outbox,
}

/// Validated `[amqp]` settings.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    pub url: String,
    pub exchange: String,
    pub queue: String,
    pub dead_letter_queue: String,
    pub prefetch: u16,
    pub publish: PublishMode,
    /// `(database, table)` of the outbox.
    pub outbox_table: (String, String),
}

impl RawAmqp {
    /// Records the problems of `[amqp]`; the settings when there are none.
    pub fn validate(&self, problems: &mut Vec<String>) -> Option<AmqpConfig> {
        let before = problems.len();
        if !(self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            problems.push(format!(
                "amqp.url: expected amqp://user:password@host:port/vhost, got {}",
                crate::redact::redact_url(&self.url)
            ));
        }
        for (key, value) in [
            ("exchange", &self.exchange),
            ("queue", &self.queue),
            ("dead_letter_queue", &self.dead_letter_queue),
        ] {
            if value.is_empty() {
                problems.push(format!("amqp.{key}: must not be empty"));
            }
        }
        if self.prefetch == 0 {
            problems.push("amqp.prefetch: must be at least 1".to_owned());
        }
        let publish = match self.publish.as_str() {
            "direct" => Some(PublishMode::Direct),
            "outbox" => Some(PublishMode::Outbox),
            other => {
                problems.push(format!(
                    "amqp.publish: expected \"outbox\" or \"direct\", got {other:?}"
                ));
                None
            }
        };
        let outbox_table = parse_qualified_name("amqp.outbox_table", &self.outbox_table, problems);
        if problems.len() != before {
            return None;
        }
        Some(AmqpConfig {
            url: self.url.clone(),
            exchange: self.exchange.clone(),
            queue: self.queue.clone(),
            dead_letter_queue: self.dead_letter_queue.clone(),
            prefetch: self.prefetch,
            publish: publish?,
            outbox_table: outbox_table?,
        })
    }
}
