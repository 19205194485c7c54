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
            heartbeat_table,
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
        })
    }
}
