//! `[verify]`: continuous verification inside `cachesync run` (`crate::cmd::anti_entropy`
//! runs it; its keys are documented in `docs/configuration.md`). Off unless the section
//! is present. Declared here rather than next to its code because that code is a command,
//! above the config that assembles the sections.

use std::time::Duration;

use serde::Deserialize;

/// `[verify]` as written.
#[derive(Debug, Clone, Deserialize)]
pub struct RawVerify {
    /// Seconds from the start of one pass over every table to the start of the next; a
    /// pass that takes longer is followed at once.
    #[serde(default = "default_interval")]
    pub interval: u64,
    /// Most keys checked per second — rows read from MySQL plus Redis keys looked up in
    /// MySQL — so verification costs the database a bounded, chosen amount.
    #[serde(default = "default_rows_per_second")]
    pub rows_per_second: u64,
    /// Rows per MySQL page (one short statement each) and Redis pipeline.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Milliseconds a divergent key is given to converge by itself (a change on its way
    /// to Redis) before it is counted and repaired.
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
    /// Rewrite divergent keys from MySQL (version-guarded, as `cachesync verify --repair`);
    /// `false` only counts them.
    #[serde(default = "default_repair")]
    pub repair: bool,
}

fn default_interval() -> u64 {
    300
}

fn default_rows_per_second() -> u64 {
    1_000
}

fn default_batch() -> usize {
    100
}

fn default_grace_ms() -> u64 {
    1_000
}

fn default_repair() -> bool {
    true
}

/// Validated `[verify]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyConfig {
    pub interval: Duration,
    pub rows_per_second: u64,
    pub batch: usize,
    pub grace: Duration,
    pub repair: bool,
}

impl RawVerify {
    /// Records the problems of `[verify]`; the settings when there are none.
    pub fn validate(&self, problems: &mut Vec<String>) -> Option<VerifyConfig> {
        let before = problems.len();
        if self.interval == 0 {
            problems.push("verify.interval: must be at least 1 (seconds)".to_owned());
        }
        if self.rows_per_second == 0 {
            problems.push("verify.rows_per_second: must be at least 1".to_owned());
        }
        if self.batch == 0 || self.batch > 10_000 {
            problems.push(format!(
                "verify.batch: must be between 1 and 10000, got {}",
                self.batch
            ));
        }
        if self.grace_ms > 60_000 {
            problems.push(format!(
                "verify.grace_ms: must be at most 60000 (a minute), got {}",
                self.grace_ms
            ));
        }
        (problems.len() == before).then(|| VerifyConfig {
            interval: Duration::from_secs(self.interval),
            rows_per_second: self.rows_per_second,
            batch: self.batch,
            grace: Duration::from_millis(self.grace_ms),
            repair: self.repair,
        })
    }
}
