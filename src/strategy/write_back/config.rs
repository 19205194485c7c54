//! `[write_back]`: how the write-back strategy queues and flushes changes (its keys are
//! documented in `docs/configuration.md`).

use std::time::Duration;

use serde::Deserialize;

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
    /// The Redis stream changes wait in (written in the same script call as the cache).
    #[serde(default = "default_stream")]
    pub stream: String,
    /// The Redis stream of changes MySQL refused, each with the reason.
    #[serde(default = "default_dead_letter_stream")]
    pub dead_letter_stream: String,
}

impl Default for RawWriteBack {
    fn default() -> Self {
        RawWriteBack {
            batch_size: default_batch_size(),
            max_delay_ms: default_max_delay_ms(),
            stream: default_stream(),
            dead_letter_stream: default_dead_letter_stream(),
        }
    }
}

fn default_batch_size() -> usize {
    100
}

fn default_max_delay_ms() -> u64 {
    100
}

fn default_stream() -> String {
    "cachesync:write-back".to_owned()
}

fn default_dead_letter_stream() -> String {
    "cachesync:write-back:dead".to_owned()
}

/// Validated `[write_back]` settings.
#[derive(Debug, Clone)]
pub struct WriteBackConfig {
    pub batch_size: usize,
    pub max_delay: Duration,
    pub queue: QueueKeys,
}

impl RawWriteBack {
    /// Records the problems of `[write_back]`; the settings when there are none.
    pub fn validate(&self, problems: &mut Vec<String>) -> Option<WriteBackConfig> {
        let before = problems.len();
        if self.batch_size == 0 {
            problems.push("write_back.batch_size: must be at least 1".to_owned());
        }
        if self.max_delay_ms == 0 {
            problems.push("write_back.max_delay_ms: must be at least 1".to_owned());
        }
        for (key, value) in [
            ("stream", &self.stream),
            ("dead_letter_stream", &self.dead_letter_stream),
        ] {
            if value.is_empty() {
                problems.push(format!("write_back.{key}: must not be empty"));
            }
        }
        if self.stream == self.dead_letter_stream {
            problems.push(
                "write_back.dead_letter_stream: must differ from write_back.stream".to_owned(),
            );
        }
        (problems.len() == before).then(|| WriteBackConfig {
            batch_size: self.batch_size,
            max_delay: Duration::from_millis(self.max_delay_ms),
            queue: QueueKeys {
                versions: format!("{}:version", self.stream),
                group: "cachesync-flusher".to_owned(),
                stream: self.stream.clone(),
                dead_letter: self.dead_letter_stream.clone(),
            },
        })
    }
}
