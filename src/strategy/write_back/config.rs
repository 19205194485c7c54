//! `[write_back]`: how the write-back strategy queues and flushes changes (its keys are
//! documented in `docs/configuration.md`).

use std::time::Duration;

use serde::Deserialize;

use crate::redis::keyspace::DeploymentKeys;
use crate::redis::queue::QueueKeys;

/// `[write_back]` as written.
#[derive(Debug, Clone, Deserialize)]
pub struct RawWriteBack {
    /// Most changes one MySQL transaction flushes (after coalescing a row's changes into
    /// its last).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Most milliseconds a change waits for its batch to fill before it is flushed.
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
    /// The Redis stream changes wait in (written in the same script call as the cache);
    /// `cachesync:{<name>}:write-back` when not set.
    #[serde(default)]
    pub stream: Option<String>,
    /// The Redis stream of changes MySQL refused, each with the reason;
    /// `cachesync:{<name>}:write-back:dead` when not set.
    #[serde(default)]
    pub dead_letter_stream: Option<String>,
}

impl Default for RawWriteBack {
    fn default() -> Self {
        RawWriteBack {
            batch_size: default_batch_size(),
            max_delay_ms: default_max_delay_ms(),
            stream: None,
            dead_letter_stream: None,
        }
    }
}

fn default_batch_size() -> usize {
    100
}

fn default_max_delay_ms() -> u64 {
    100
}

/// Validated `[write_back]` settings.
#[derive(Debug, Clone)]
pub struct WriteBackConfig {
    pub batch_size: usize,
    pub max_delay: Duration,
    pub queue: QueueKeys,
}

impl RawWriteBack {
    /// Records the problems of `[write_back]`; the settings of deployment `name` when
    /// there are none (`name` is `None` only when the config has other problems).
    pub fn validate(
        &self,
        name: Option<&str>,
        problems: &mut Vec<String>,
    ) -> Option<WriteBackConfig> {
        let before = problems.len();
        if self.batch_size == 0 {
            problems.push("write_back.batch_size: must be at least 1".to_owned());
        }
        if self.max_delay_ms == 0 {
            problems.push("write_back.max_delay_ms: must be at least 1".to_owned());
        }
        let name = name?;
        // Per deployment by default, like cachesync's other keys: two deployments sharing a
        // Redis never flush each other's queue.
        let stream = self
            .stream
            .clone()
            .unwrap_or_else(|| DeploymentKeys::key(name, "write-back"));
        let dead_letter = self
            .dead_letter_stream
            .clone()
            .unwrap_or_else(|| DeploymentKeys::key(name, "write-back:dead"));
        for (key, value) in [("stream", &stream), ("dead_letter_stream", &dead_letter)] {
            if value.is_empty() {
                problems.push(format!("write_back.{key}: must not be empty"));
            }
        }
        if stream == dead_letter {
            problems.push(
                "write_back.dead_letter_stream: must differ from write_back.stream".to_owned(),
            );
        }
        (problems.len() == before).then(|| WriteBackConfig {
            batch_size: self.batch_size,
            max_delay: Duration::from_millis(self.max_delay_ms),
            queue: QueueKeys {
                versions: format!("{stream}:version"),
                group: "cachesync-flusher".to_owned(),
                stream,
                dead_letter,
            },
        })
    }
}
