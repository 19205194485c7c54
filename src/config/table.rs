//! `[[tables]]` and `[tables.read]` as written, validated into
//! [`crate::model::table::TableConfig`].

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use crate::model::cell::Format;
use crate::model::key::KeyTemplate;
use crate::model::table::{BloomConfig, Mode, ReadConfig, TableConfig, parse_qualified_name};

#[derive(Debug, Clone, Deserialize)]
pub struct RawTable {
    /// `database.table`.
    pub name: String,
    /// Redis key template over primary-key columns, e.g. `user:{id}`.
    pub key: String,
    #[serde(default = "default_format")]
    pub format: String,
    /// Columns to keep in Redis; all columns when absent. Primary-key columns are always
    /// kept because the key is built from them.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Seconds until the key expires; no expiry when absent.
    #[serde(default)]
    pub ttl: Option<u64>,
    /// Up to this many seconds are added at random to each `ttl`, so keys written
    /// together do not expire together (cache avalanche).
    #[serde(default)]
    pub ttl_jitter: Option<u64>,
    /// An integer column that grows with every change of a row; when set, writes carry
    /// it as their version and Redis never goes back to an older one.
    #[serde(default)]
    pub version_column: Option<String>,
    /// `write` (default): Redis gets each row image. `invalidate`: every change deletes
    /// the key instead, for readers that fill the cache themselves.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// `[tables.read]`: the cache-aside read path (`GET` through the API) and its guards.
    #[serde(default)]
    pub read: RawRead,
}

/// `[tables.read]`: how `GET /v1/tables/<name>/rows` reads this table — Redis first, MySQL
/// on a miss — and which guards against the classic cache failures are on.
#[derive(Debug, Clone, Deserialize)]
pub struct RawRead {
    /// Whether the API serves reads of this table at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Milliseconds an answer stays in the in-process L1 cache in front of Redis; 0 turns
    /// L1 off. Each instance has its own L1, so this is how stale a read may be.
    #[serde(default)]
    pub l1_ttl_ms: u64,
    /// Most rows the L1 cache holds.
    #[serde(default = "default_l1_capacity")]
    pub l1_capacity: u64,
    /// Milliseconds a "no such row" answer is remembered in Redis (penetration guard); 0
    /// turns negative caching off. A synced insert clears it at once.
    #[serde(default = "default_negative_ttl_ms")]
    pub negative_ttl_ms: u64,
    /// Keep a Bloom filter of existing primary keys in Redis (built from a table scan,
    /// maintained by the sync stream) and answer 404 without MySQL when it says "absent".
    #[serde(default)]
    pub bloom: bool,
    /// Rows the Bloom filter is sized for (with `bloom_fp_rate`).
    #[serde(default = "default_bloom_expected_rows")]
    pub bloom_expected_rows: u64,
    /// False-positive rate the Bloom filter is sized for at `bloom_expected_rows`.
    #[serde(default = "default_bloom_fp_rate")]
    pub bloom_fp_rate: f64,
    /// Concurrent misses of one key in this process share one MySQL read (breakdown guard).
    #[serde(default = "default_true")]
    pub single_flight: bool,
    /// A Redis mutex per key (`SET NX PX`) so one instance refills while the others wait.
    #[serde(default = "default_true")]
    pub lock: bool,
    /// Milliseconds the refill mutex (and a fill's lease) lives; must cover a MySQL read.
    #[serde(default = "default_lock_ttl_ms")]
    pub lock_ttl_ms: u64,
    /// Milliseconds a reader waits for another instance's refill before reading MySQL
    /// itself.
    #[serde(default = "default_lock_wait_ms")]
    pub lock_wait_ms: u64,
    /// Refresh a key read less than this many milliseconds before it expires, in the
    /// background (hot keys never expire under load); 0 turns it off. Needs `ttl`.
    #[serde(default)]
    pub refresh_ahead_ms: u64,
}

impl Default for RawRead {
    fn default() -> Self {
        RawRead {
            enabled: true,
            l1_ttl_ms: 0,
            l1_capacity: default_l1_capacity(),
            negative_ttl_ms: default_negative_ttl_ms(),
            bloom: false,
            bloom_expected_rows: default_bloom_expected_rows(),
            bloom_fp_rate: default_bloom_fp_rate(),
            single_flight: true,
            lock: true,
            lock_ttl_ms: default_lock_ttl_ms(),
            lock_wait_ms: default_lock_wait_ms(),
            refresh_ahead_ms: 0,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_l1_capacity() -> u64 {
    10_000
}

fn default_negative_ttl_ms() -> u64 {
    2_000
}

fn default_bloom_expected_rows() -> u64 {
    1_000_000
}

fn default_bloom_fp_rate() -> f64 {
    0.01
}

fn default_lock_ttl_ms() -> u64 {
    2_000
}

fn default_lock_wait_ms() -> u64 {
    500
}

fn default_mode() -> String {
    "write".to_owned()
}

fn default_format() -> String {
    "json".to_owned()
}

impl Default for ReadConfig {
    fn default() -> Self {
        RawRead::default().to_config()
    }
}

impl RawTable {
    /// Records the problems of `tables[index]`; the validated entry when there are none.
    pub fn validate(&self, index: usize, problems: &mut Vec<String>) -> Option<TableConfig> {
        let at = |key: &str| format!("tables[{index}].{key}");
        let before = problems.len();

        let name = parse_qualified_name(&at("name"), &self.name, problems);
        let key = match KeyTemplate::parse(&self.key) {
            Ok(k) => Some(k),
            Err(e) => {
                problems.push(format!("{}: {e}", at("key")));
                None
            }
        };
        let format = match self.format.as_str() {
            "json" => Some(Format::Json),
            "hash" => Some(Format::Hash),
            other => {
                problems.push(format!(
                    "{}: expected \"json\" or \"hash\", got {other:?}",
                    at("format")
                ));
                None
            }
        };
        if let Some(columns) = &self.columns {
            if columns.is_empty() {
                problems.push(format!(
                    "{}: must name at least one column (leave it out to keep all)",
                    at("columns")
                ));
            }
            let mut seen = HashSet::new();
            for column in columns {
                if !seen.insert(column) {
                    problems.push(format!("{}: {column} is listed twice", at("columns")));
                }
            }
        }
        let mode = match self.mode.as_str() {
            "write" => Some(Mode::Write),
            "invalidate" => Some(Mode::Invalidate),
            other => {
                problems.push(format!(
                    "{}: expected \"write\" or \"invalidate\", got {other:?}",
                    at("mode")
                ));
                None
            }
        };
        if self.ttl == Some(0) {
            problems.push(format!(
                "{}: must be at least 1 second (leave it out for no expiry)",
                at("ttl")
            ));
        }
        if self.ttl_jitter.is_some() && self.ttl.is_none() {
            problems.push(format!("{}: needs ttl to be set", at("ttl_jitter")));
        }
        self.read.validate(&at("read"), self.ttl, problems);

        if problems.len() != before {
            return None;
        }
        let (database, table) = name?;
        Some(TableConfig {
            index,
            database,
            table,
            key: key?,
            format: format?,
            columns: self.columns.clone(),
            ttl: self.ttl.map(Duration::from_secs),
            ttl_jitter: Duration::from_secs(self.ttl_jitter.unwrap_or(0)),
            version_column: self.version_column.clone(),
            mode: mode?,
            read: self.read.to_config(),
        })
    }
}

impl RawRead {
    /// Records the problems of `[tables.read]` (its keys under `at`); `ttl` is the
    /// table's row TTL in seconds.
    fn validate(&self, at: &str, ttl: Option<u64>, problems: &mut Vec<String>) {
        if self.l1_ttl_ms > 0 && self.l1_capacity == 0 {
            problems.push(format!(
                "{at}.l1_capacity: must be at least 1 when l1_ttl_ms is set"
            ));
        }
        if self.bloom {
            if self.bloom_expected_rows == 0 {
                problems.push(format!("{at}.bloom_expected_rows: must be at least 1"));
            }
            if !(self.bloom_fp_rate > 0.0 && self.bloom_fp_rate < 1.0) {
                problems.push(format!(
                    "{at}.bloom_fp_rate: must be between 0 and 1 (exclusive), got {}",
                    self.bloom_fp_rate
                ));
            }
        }
        if self.lock_ttl_ms == 0 {
            problems.push(format!(
                "{at}.lock_ttl_ms: must be at least 1 (it also bounds how long a fill may take)"
            ));
        }
        if self.lock && self.lock_wait_ms == 0 {
            problems.push(format!(
                "{at}.lock_wait_ms: must be at least 1 when lock = true"
            ));
        }
        if self.refresh_ahead_ms > 0 {
            match ttl {
                None => problems.push(format!(
                    "{at}.refresh_ahead_ms: needs the table's ttl to be set (keys without expiry need no refresh)"
                )),
                Some(ttl) if self.refresh_ahead_ms >= ttl.saturating_mul(1000) => {
                    problems.push(format!(
                        "{at}.refresh_ahead_ms: must be less than the table's ttl ({ttl} s = {} ms)",
                        ttl.saturating_mul(1000)
                    ))
                }
                Some(_) => {}
            }
        }
    }

    fn to_config(&self) -> ReadConfig {
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        ReadConfig {
            enabled: self.enabled,
            l1_ttl: ms(self.l1_ttl_ms),
            l1_capacity: self.l1_capacity,
            negative_ttl: ms(self.negative_ttl_ms),
            bloom: self.bloom.then_some(BloomConfig {
                expected_rows: self.bloom_expected_rows,
                fp_rate: self.bloom_fp_rate,
            }),
            single_flight: self.single_flight,
            lock: self.lock,
            lock_ttl: Duration::from_millis(self.lock_ttl_ms),
            lock_wait: Duration::from_millis(self.lock_wait_ms),
            refresh_ahead: ms(self.refresh_ahead_ms),
        }
    }
}
