//! `[snapshot]`: how online snapshots read MySQL and how often Redis is checked for data
//! loss (its keys are documented in `docs/configuration.md`).

use std::time::Duration;

use serde::Deserialize;

/// `[snapshot]` as written.
#[derive(Debug, Clone, Deserialize)]
pub struct RawSnapshot {
    /// Rows per chunk: one primary-key range read from MySQL, one Redis pipeline. Also
    /// the longest the stream waits behind a snapshot for Redis, and what bounds its
    /// memory.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// Most rows per second a snapshot reads (0: as fast as MySQL and Redis allow); a
    /// cap keeps it cheap next to a busy database.
    #[serde(default)]
    pub max_rows_per_second: u64,
    /// How often Redis is checked for data loss (the checkpoint or the deployment marker
    /// gone, or Redis back on an older copy), which starts an online rebuild.
    #[serde(default = "default_loss_check_interval_ms")]
    pub loss_check_interval_ms: u64,
}

impl Default for RawSnapshot {
    fn default() -> Self {
        RawSnapshot {
            chunk_rows: default_chunk_rows(),
            max_rows_per_second: 0,
            loss_check_interval_ms: default_loss_check_interval_ms(),
        }
    }
}

fn default_chunk_rows() -> usize {
    1_000
}

fn default_loss_check_interval_ms() -> u64 {
    1_000
}

/// Validated `[snapshot]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotConfig {
    pub chunk_rows: usize,
    /// `None`: no cap.
    pub max_rows_per_second: Option<u64>,
    pub loss_check_interval: Duration,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        RawSnapshot::default()
            .validate(&mut Vec::new())
            .expect("the defaults are valid")
    }
}

impl RawSnapshot {
    /// Records the problems of `[snapshot]`; the settings when there are none.
    pub fn validate(&self, problems: &mut Vec<String>) -> Option<SnapshotConfig> {
        let before = problems.len();
        // A chunk is one MySQL result and one Redis pipeline held in memory.
        const MAX_CHUNK: usize = 100_000;
        if !(1..=MAX_CHUNK).contains(&self.chunk_rows) {
            problems.push(format!(
                "snapshot.chunk_rows: must be between 1 and {MAX_CHUNK}, got {}",
                self.chunk_rows
            ));
        }
        if self.loss_check_interval_ms == 0 {
            problems.push("snapshot.loss_check_interval_ms: must be at least 1".to_owned());
        }
        (problems.len() == before).then(|| SnapshotConfig {
            chunk_rows: self.chunk_rows,
            max_rows_per_second: (self.max_rows_per_second > 0).then_some(self.max_rows_per_second),
            loss_check_interval: Duration::from_millis(self.loss_check_interval_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let config = SnapshotConfig::default();
        assert_eq!(config.chunk_rows, 1_000);
        assert_eq!(config.max_rows_per_second, None);
        assert_eq!(config.loss_check_interval, Duration::from_secs(1));
        let mut problems = Vec::new();
        let raw = RawSnapshot {
            chunk_rows: 0,
            max_rows_per_second: 5,
            loss_check_interval_ms: 0,
        };
        assert_eq!(raw.validate(&mut problems), None);
        assert_eq!(
            problems,
            [
                "snapshot.chunk_rows: must be between 1 and 100000, got 0",
                "snapshot.loss_check_interval_ms: must be at least 1",
            ]
        );
    }
}
