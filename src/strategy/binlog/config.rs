//! `[binlog]`: how the binlog strategy reads the replication stream (its keys are
//! documented in `docs/configuration.md`).

use std::time::Duration;

use serde::Deserialize;

use crate::model::table::parse_qualified_name;

/// `[binlog]`: how the binlog strategy reads the replication stream.
#[derive(Debug, Clone, Deserialize)]
pub struct RawBinlog {
    /// The replica id cachesync announces; unique among the server's replicas.
    #[serde(default = "default_server_id")]
    pub server_id: u32,
    /// Redis key holding the position up to which changes are in Redis; by default
    /// `cachesync:{<name>}:checkpoint`, unique per deployment.
    #[serde(default)]
    pub checkpoint_key: Option<String>,
    /// Redis list where row changes that cannot be decoded are recorded (newest first,
    /// the newest 10 000 kept), each with its table, key, column, reason and position; by
    /// default `cachesync:{<name>}:dead-letter`, unique per deployment.
    #[serde(default)]
    pub dead_letter_key: Option<String>,
    /// Most row changes per Redis call; also bounds memory for huge transactions.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Milliseconds a batch's first transaction may wait for later ones to share its
    /// Redis call (group commit); 0 sends each as soon as the applier is idle.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// `database.table` cachesync writes `NOW(6)` into and reads back off the stream,
    /// for sub-second lag and propagation (created if missing; needs INSERT/CREATE).
    #[serde(default)]
    pub heartbeat_table: Option<String>,
    /// Milliseconds between heartbeat writes; also the bound on how much
    /// `propagation_seconds` can overstate a change's latency.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
}

fn default_heartbeat_interval_ms() -> u64 {
    100
}

impl Default for RawBinlog {
    fn default() -> Self {
        RawBinlog {
            server_id: default_server_id(),
            checkpoint_key: None,
            dead_letter_key: None,
            batch_size: default_batch_size(),
            linger_ms: default_linger_ms(),
            heartbeat_table: None,
            heartbeat_interval_ms: default_heartbeat_interval_ms(),
        }
    }
}

fn default_server_id() -> u32 {
    4_242
}

fn default_batch_size() -> usize {
    1_000
}

fn default_linger_ms() -> u64 {
    DEFAULT_LINGER_MS
}

/// The default `binlog.linger_ms`: off. A linger buys CPU with propagation latency
/// (docs/bench.md, "Group commit"); the default keeps binlog's sub-millisecond
/// propagation, and at high write rates transactions merge anyway while the applier is
/// busy.
pub const DEFAULT_LINGER_MS: u64 = 0;

/// Longest `binlog.linger_ms` accepted: beyond it the added latency is no longer a
/// rounding error next to a cache's usual staleness budget.
const MAX_LINGER_MS: u64 = 1_000;

/// Validated `[binlog]` settings.
#[derive(Debug, Clone)]
pub struct BinlogConfig {
    pub server_id: u32,
    /// Set in the config; `None`: the deployment's default
    /// ([`crate::redis::keyspace::DeploymentKeys`]).
    pub checkpoint_key: Option<String>,
    /// Set in the config; `None`: the deployment's default
    /// ([`crate::redis::keyspace::DeploymentKeys`]).
    pub dead_letter_key: Option<String>,
    pub batch_size: usize,
    /// How long a batch's first transaction may wait for more (group commit).
    pub linger: Duration,
    /// `(database, table)` of the heartbeat table, when configured.
    pub heartbeat_table: Option<(String, String)>,
    pub heartbeat_interval: Duration,
}

impl RawBinlog {
    /// Records the problems of `[binlog]`; the settings when there are none.
    pub fn validate(&self, problems: &mut Vec<String>) -> Option<BinlogConfig> {
        let before = problems.len();
        if self.server_id == 0 {
            problems
                .push("binlog.server_id: must not be 0 (replicas need a non-zero id)".to_owned());
        }
        if self.checkpoint_key.as_deref() == Some("") {
            problems.push("binlog.checkpoint_key: must not be empty".to_owned());
        }
        if self.dead_letter_key.as_deref() == Some("") {
            problems.push("binlog.dead_letter_key: must not be empty".to_owned());
        } else if self.dead_letter_key.is_some() && self.dead_letter_key == self.checkpoint_key {
            problems
                .push("binlog.dead_letter_key: must differ from binlog.checkpoint_key".to_owned());
        }
        if self.batch_size == 0 {
            problems.push("binlog.batch_size: must be at least 1".to_owned());
        }
        if self.linger_ms > MAX_LINGER_MS {
            problems.push(format!(
                "binlog.linger_ms: {} is more than {MAX_LINGER_MS} (every change would wait that long)",
                self.linger_ms
            ));
        }
        let heartbeat_table = self
            .heartbeat_table
            .as_deref()
            .and_then(|name| parse_qualified_name("binlog.heartbeat_table", name, problems));
        if self.heartbeat_interval_ms == 0 {
            problems.push("binlog.heartbeat_interval_ms: must be at least 1".to_owned());
        }
        (problems.len() == before).then(|| BinlogConfig {
            server_id: self.server_id,
            checkpoint_key: self.checkpoint_key.clone(),
            dead_letter_key: self.dead_letter_key.clone(),
            batch_size: self.batch_size,
            linger: Duration::from_millis(self.linger_ms),
            heartbeat_table,
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(raw: RawBinlog) -> Vec<String> {
        let mut problems = Vec::new();
        raw.validate(&mut problems);
        problems
    }

    #[test]
    fn the_linger_is_off_by_default_and_bounded() {
        let settings = RawBinlog::default()
            .validate(&mut Vec::new())
            .expect("the defaults are valid");
        assert_eq!(settings.linger, Duration::from_millis(DEFAULT_LINGER_MS));
        let zero = RawBinlog {
            linger_ms: 0,
            ..RawBinlog::default()
        };
        assert!(problems_of(zero).is_empty(), "0 turns the linger off");
        let problems = problems_of(RawBinlog {
            linger_ms: 5_000,
            ..RawBinlog::default()
        });
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("binlog.linger_ms: 5000 is more than 1000"),
            "names the key and the limit: {}",
            problems[0]
        );
    }
}
