//! Configuration: TOML under `config/` plus `CACHESYNC__SECTION__KEY` environment overrides.
//!
//! Loading happens in two steps, as in Vector: [`RawConfig`] is what serde reads (every
//! unknown key is collected, not just the first), then [`RawConfig::validate`] — pure, no
//! I/O — turns it into a [`Config`] or returns *all* problems at once, each naming its key
//! (`tables[1].key: ...`). Checks that need MySQL (does the table exist, is `{id}` a
//! primary-key column) live in [`crate::schema`] and report in the same style.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::keys::KeyTemplate;
use crate::strategy::StrategyKind;

/// Environment variables with this prefix override file keys: `CACHESYNC__MYSQL__URL`.
pub const ENV_PREFIX: &str = "CACHESYNC";

/// The name of the bookkeeping field cachesync keeps in every row's Redis key (the
/// version that orders writes). No synced column may use it.
pub const VERSION_FIELD: &str = "_cachesync_v";

/// The configuration file as written; see `config/cachesync.toml` for each key's meaning.
#[derive(Debug, Clone, Deserialize)]
pub struct RawConfig {
    /// `dual-write`, `mq` or `binlog`.
    pub strategy: String,
    pub mysql: RawMysql,
    pub redis: RawRedis,
    /// Only the `mq` strategy needs a broker; `doctor` checks it when present.
    #[serde(default)]
    pub amqp: Option<RawAmqp>,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub binlog: RawBinlog,
    /// The HTTP write API runs only when this section is present.
    #[serde(default)]
    pub api: Option<RawApi>,
    #[serde(default)]
    pub tables: Vec<RawTable>,
}

/// `[binlog]`: how the binlog strategy reads the replication stream.
#[derive(Debug, Clone, Deserialize)]
pub struct RawBinlog {
    /// The replica id cachesync announces; unique among the server's replicas.
    #[serde(default = "default_server_id")]
    pub server_id: u32,
    /// Redis key holding the position up to which changes are in Redis.
    #[serde(default = "default_checkpoint_key")]
    pub checkpoint_key: String,
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
            checkpoint_key: default_checkpoint_key(),
            batch_size: default_batch_size(),
            heartbeat_table: None,
            heartbeat_interval_ms: default_heartbeat_interval_ms(),
        }
    }
}

fn default_server_id() -> u32 {
    4_242
}

fn default_checkpoint_key() -> String {
    "cachesync:checkpoint:binlog".to_owned()
}

fn default_batch_size() -> usize {
    1_000
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawMysql {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawRedis {
    pub url: String,
    /// Seconds a delete's version is remembered so that an older, late upsert of the same
    /// row cannot bring it back (see README "Redis encoding").
    #[serde(default = "default_tombstone_ttl")]
    pub tombstone_ttl: u64,
}

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

/// `[api]`: the sidecar HTTP write API.
#[derive(Debug, Clone, Deserialize)]
pub struct RawApi {
    /// Where the API listens; keep it on loopback unless a token is set.
    #[serde(default = "default_api_listen")]
    pub listen: String,
    /// When set, requests must send `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
}

fn default_api_listen() -> String {
    "127.0.0.1:8480".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawMetrics {
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: default_metrics_listen(),
        }
    }
}

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

fn default_tombstone_ttl() -> u64 {
    3600
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".to_owned()
}

fn default_format() -> String {
    "json".to_owned()
}

/// How a row is stored in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A string key holding one JSON object per row.
    Json,
    /// A hash key with one field per column.
    Hash,
}

/// What a table's changes do to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Write each row image.
    Write,
    /// Delete the key on every change (Meta's memcache approach): readers refill it.
    Invalidate,
}

/// Validated `[binlog]` settings.
#[derive(Debug, Clone)]
pub struct BinlogConfig {
    pub server_id: u32,
    pub checkpoint_key: String,
    pub batch_size: usize,
    /// `(database, table)` of the heartbeat table, when configured.
    pub heartbeat_table: Option<(String, String)>,
    pub heartbeat_interval: Duration,
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

/// Validated `[api]` settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub strategy: StrategyKind,
    pub mysql_url: String,
    pub redis_url: String,
    pub tombstone_ttl: Duration,
    pub amqp: Option<AmqpConfig>,
    pub api: Option<ApiConfig>,
    pub metrics_listen: SocketAddr,
    pub binlog: BinlogConfig,
    pub tables: Vec<TableConfig>,
}

/// One validated `[[tables]]` entry.
#[derive(Debug, Clone)]
pub struct TableConfig {
    /// Position in the file, for messages (`tables[1]`).
    pub index: usize,
    pub database: String,
    pub table: String,
    pub key: KeyTemplate,
    pub format: Format,
    pub columns: Option<Vec<String>>,
    pub ttl: Option<Duration>,
    pub ttl_jitter: Duration,
    pub version_column: Option<String>,
    pub mode: Mode,
    pub read: ReadConfig,
}

/// Validated `[tables.read]` settings (see [`RawRead`] for each one's meaning).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadConfig {
    pub enabled: bool,
    /// `None`: no L1 cache.
    pub l1_ttl: Option<Duration>,
    pub l1_capacity: u64,
    /// `None`: misses are not remembered.
    pub negative_ttl: Option<Duration>,
    /// `None`: no Bloom filter.
    pub bloom: Option<BloomConfig>,
    pub single_flight: bool,
    pub lock: bool,
    pub lock_ttl: Duration,
    pub lock_wait: Duration,
    /// `None`: no early refresh.
    pub refresh_ahead: Option<Duration>,
}

/// How a table's Bloom filter is sized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BloomConfig {
    pub expected_rows: u64,
    pub fp_rate: f64,
}

impl Default for ReadConfig {
    fn default() -> Self {
        RawRead::default().to_config()
    }
}

impl TableConfig {
    /// `database.table`, as written in the config.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }
}

impl Config {
    /// Reads `path` and the environment, then validates. Problems come back as
    /// [`Error::Config`] with one line each.
    pub fn load(path: &Path) -> Result<Config> {
        RawConfig::load(path)?.validate()
    }
}

impl RawConfig {
    /// Reads `path` (TOML) and applies `CACHESYNC__…` overrides. Unknown keys are
    /// rejected, all of them in one error.
    pub fn load(path: &Path) -> Result<RawConfig> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(vec![format!(
                "{shown}: cannot read the config file ({e}); copy config/cachesync.toml and edit it"
            )])
        })?;
        // Parse once ourselves for a one-line syntax error with its position; the config
        // crate's message spans several lines with a source snippet.
        if let Err(e) = toml::from_str::<toml::Table>(&text) {
            let (line, column) = e
                .span()
                .map_or((1, 1), |span| line_and_column(&text, span.start));
            return Err(Error::Config(vec![format!(
                "{shown}:{line}:{column}: {}",
                e.message().trim()
            )]));
        }
        let built = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| Error::Config(vec![format!("{shown}: {e}")]))?;
        let tree: serde_json::Value = built
            .try_deserialize()
            .map_err(|e| Error::Config(vec![format!("{shown}: {e}")]))?;
        Self::from_tree(tree).map_err(Error::Config)
    }

    /// Deserializes an already parsed tree, collecting every unknown key.
    pub fn from_tree(tree: serde_json::Value) -> std::result::Result<RawConfig, Vec<String>> {
        let mut unknown = Vec::new();
        let parsed: std::result::Result<RawConfig, _> = serde_path_to_error::deserialize(
            serde_ignored::Deserializer::new(tree, &mut |path: serde_ignored::Path| {
                unknown.push(format!("{}: unknown key", render_ignored_path(&path)));
            }),
        );
        match parsed {
            Ok(raw) if unknown.is_empty() => Ok(raw),
            Ok(_) => Err(unknown),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let message = if path == "." {
                    inner.to_string()
                } else {
                    format!("{path}: {inner}")
                };
                unknown.push(message);
                Err(unknown)
            }
        }
    }

    /// Pure validation: every problem, each naming its key.
    pub fn validate(&self) -> Result<Config> {
        let mut problems = Vec::new();

        let strategy = match self.strategy.parse::<StrategyKind>() {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(format!("strategy: {e}"));
                None
            }
        };

        if let Err(e) = mysql_async::Opts::from_url(&self.mysql.url) {
            problems.push(format!("mysql.url: {e}"));
        }
        if let Err(e) = redis::Client::open(self.redis.url.as_str()) {
            problems.push(format!("redis.url: {e}"));
        }
        if self.redis.tombstone_ttl == 0 {
            problems.push("redis.tombstone_ttl: must be at least 1 second".to_owned());
        }
        let amqp = self
            .amqp
            .as_ref()
            .and_then(|amqp| amqp.validate(&mut problems));
        let api = self
            .api
            .as_ref()
            .and_then(|api| match api.listen.parse::<SocketAddr>() {
                Ok(listen) => {
                    if api.token.as_deref() == Some("") {
                        problems.push(
                            "api.token: must not be empty (leave it out for no token)".to_owned(),
                        );
                    }
                    Some(ApiConfig {
                        listen,
                        token: api.token.clone(),
                    })
                }
                Err(_) => {
                    problems.push(format!(
                        "api.listen: expected IP:port such as 127.0.0.1:8480, got {:?}",
                        api.listen
                    ));
                    None
                }
            });
        if strategy == Some(StrategyKind::Mq) && self.amqp.is_none() {
            problems.push("amqp.url: required when strategy = \"mq\"".to_owned());
        }
        let metrics_listen = match self.metrics.listen.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(format!(
                    "metrics.listen: expected IP:port such as 127.0.0.1:9464, got {:?}",
                    self.metrics.listen
                ));
                None
            }
        };

        if self.binlog.server_id == 0 {
            problems
                .push("binlog.server_id: must not be 0 (replicas need a non-zero id)".to_owned());
        }
        if self.binlog.checkpoint_key.is_empty() {
            problems.push("binlog.checkpoint_key: must not be empty".to_owned());
        }
        if self.binlog.batch_size == 0 {
            problems.push("binlog.batch_size: must be at least 1".to_owned());
        }
        let heartbeat_table = self
            .binlog
            .heartbeat_table
            .as_deref()
            .and_then(|name| qualified_name("binlog.heartbeat_table", name, &mut problems));
        if self.binlog.heartbeat_interval_ms == 0 {
            problems.push("binlog.heartbeat_interval_ms: must be at least 1".to_owned());
        }
        if self.tables.is_empty() {
            problems.push("tables: at least one [[tables]] entry is required".to_owned());
        }
        let mut seen = HashSet::new();
        let mut tables = Vec::with_capacity(self.tables.len());
        for (index, raw) in self.tables.iter().enumerate() {
            if !seen.insert(raw.name.as_str()) {
                problems.push(format!(
                    "tables[{index}].name: {} is configured twice",
                    raw.name
                ));
            }
            if let Some(table) = raw.validate(index, &mut problems) {
                tables.push(table);
            }
        }

        match (strategy, metrics_listen) {
            (Some(strategy), Some(metrics_listen)) if problems.is_empty() => Ok(Config {
                strategy,
                mysql_url: self.mysql.url.clone(),
                redis_url: self.redis.url.clone(),
                tombstone_ttl: Duration::from_secs(self.redis.tombstone_ttl),
                amqp,
                api,
                metrics_listen,
                binlog: BinlogConfig {
                    server_id: self.binlog.server_id,
                    checkpoint_key: self.binlog.checkpoint_key.clone(),
                    batch_size: self.binlog.batch_size,
                    heartbeat_table,
                    heartbeat_interval: Duration::from_millis(self.binlog.heartbeat_interval_ms),
                },
                tables,
            }),
            _ => Err(Error::Config(problems)),
        }
    }
}

impl RawAmqp {
    fn validate(&self, problems: &mut Vec<String>) -> Option<AmqpConfig> {
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
        let outbox_table = qualified_name("amqp.outbox_table", &self.outbox_table, problems);
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

impl RawTable {
    fn validate(&self, index: usize, problems: &mut Vec<String>) -> Option<TableConfig> {
        let at = |key: &str| format!("tables[{index}].{key}");
        let before = problems.len();

        let name = qualified_name(&at("name"), &self.name, problems);
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

/// Splits `database.table`, or records a problem for `key`.
fn qualified_name(key: &str, name: &str, problems: &mut Vec<String>) -> Option<(String, String)> {
    match name.split_once('.') {
        Some((db, table)) if !db.is_empty() && !table.is_empty() && !table.contains('.') => {
            Some((db.to_owned(), table.to_owned()))
        }
        _ => {
            problems.push(format!("{key}: expected \"database.table\", got {name:?}"));
            None
        }
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// `tables.1.formatt` as serde_ignored sees it, written the way the file reads:
/// `tables[1].formatt`.
fn render_ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render_ignored_path(parent)),
        Path::Map { parent, key } => {
            let parent = render_ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => render_ignored_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid_tree() -> serde_json::Value {
        json!({
            "strategy": "binlog",
            "mysql": { "url": "mysql://root@127.0.0.1:3307" },
            "redis": { "url": "redis://127.0.0.1:6380" },
            "tables": [
                { "name": "shop.users", "key": "user:{id}" },
                { "name": "shop.orders", "key": "order:{id}", "format": "hash", "ttl": 60, "ttl_jitter": 10 }
            ]
        })
    }

    fn problems(tree: serde_json::Value) -> Vec<String> {
        match RawConfig::from_tree(tree) {
            Err(problems) => problems,
            Ok(raw) => match raw.validate() {
                Err(Error::Config(problems)) => problems,
                Err(other) => panic!("unexpected error {other}"),
                Ok(_) => Vec::new(),
            },
        }
    }

    #[test]
    fn accepts_a_valid_config_with_defaults() {
        let config = RawConfig::from_tree(valid_tree())
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(config.strategy, StrategyKind::Binlog);
        assert_eq!(config.metrics_listen.to_string(), "127.0.0.1:9464");
        assert_eq!(config.tables[0].format, Format::Json);
        assert_eq!(config.tables[1].format, Format::Hash);
        assert_eq!(config.tables[1].ttl, Some(Duration::from_secs(60)));
        assert_eq!(config.tables[1].ttl_jitter, Duration::from_secs(10));
        assert_eq!(config.tombstone_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn reports_every_unknown_key_with_its_path() {
        let mut tree = valid_tree();
        tree["mysql"]["urll"] = json!("x");
        tree["tables"][1]["formatt"] = json!("hash");
        tree["extra"] = json!(1);
        let mut found = problems(tree);
        found.sort();
        assert_eq!(
            found,
            vec![
                "extra: unknown key",
                "mysql.urll: unknown key",
                "tables[1].formatt: unknown key"
            ]
        );
    }

    #[test]
    fn reports_all_semantic_problems_at_once() {
        let mut tree = valid_tree();
        tree["strategy"] = json!("cdc");
        tree["metrics"] = json!({ "listen": "nowhere" });
        tree["tables"][0]["name"] = json!("users");
        tree["tables"][1]["key"] = json!("order:{}");
        tree["tables"][1]["format"] = json!("xml");
        let found = problems(tree);
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(found[0].starts_with("strategy: unknown strategy \"cdc\""));
        assert!(found[0].contains("dual-write, mq, binlog"), "{}", found[0]);
        assert!(found.iter().any(|p| p.starts_with("metrics.listen:")));
        assert!(found.iter().any(|p| p.starts_with("tables[0].name:")));
        assert!(found.iter().any(|p| p.starts_with("tables[1].key:")));
        assert!(found.iter().any(|p| p.starts_with("tables[1].format:")));
    }

    #[test]
    fn names_the_key_of_a_type_error() {
        let mut tree = valid_tree();
        tree["tables"][1]["ttl"] = json!("soon");
        let found = problems(tree);
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("tables[1].ttl: "), "{}", found[0]);
    }

    #[test]
    fn syntax_errors_are_one_line_with_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "strategy = \"binlog\"\n[mysql]\nurl = \"mysql://x").unwrap();
        let Err(Error::Config(problems)) = RawConfig::load(&path) else {
            panic!("a syntax error is a config error")
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!("{}:3:", path.display())),
            "{}",
            problems[0]
        );
        assert!(!problems[0].contains('\n'));
    }

    #[test]
    fn mq_needs_a_broker_url() {
        let mut tree = valid_tree();
        tree["strategy"] = json!("mq");
        assert_eq!(
            problems(tree),
            vec!["amqp.url: required when strategy = \"mq\""]
        );
    }

    #[test]
    fn read_settings_default_and_report_their_keys() {
        let config = RawConfig::from_tree(valid_tree())
            .unwrap()
            .validate()
            .unwrap();
        let read = &config.tables[0].read;
        assert!(read.enabled && read.single_flight && read.lock);
        assert_eq!(read.l1_ttl, None);
        assert_eq!(read.negative_ttl, Some(Duration::from_secs(2)));
        assert_eq!(read.bloom, None);

        let mut tree = valid_tree();
        tree["tables"][0]["read"] = json!({
            "bloom": true, "bloom_fp_rate": 1.5, "lock_ttl_ms": 0, "refresh_ahead_ms": 10,
            "l1_ttl_ms": 100, "l1_capacity": 0, "lockk": true,
        });
        assert_eq!(
            problems(tree.clone()),
            vec!["tables[0].read.lockk: unknown key"]
        );
        tree["tables"][0]["read"]
            .as_object_mut()
            .unwrap()
            .remove("lockk");
        tree["tables"][1]["read"] = json!({ "refresh_ahead_ms": 60_000 });
        assert_eq!(
            problems(tree),
            vec![
                "tables[0].read.l1_capacity: must be at least 1 when l1_ttl_ms is set",
                "tables[0].read.bloom_fp_rate: must be between 0 and 1 (exclusive), got 1.5",
                "tables[0].read.lock_ttl_ms: must be at least 1 (it also bounds how long a fill may take)",
                "tables[0].read.refresh_ahead_ms: needs the table's ttl to be set (keys without expiry need no refresh)",
                "tables[1].read.refresh_ahead_ms: must be less than the table's ttl (60 s = 60000 ms)",
            ]
        );
    }

    #[test]
    fn rejects_duplicate_tables_and_bad_ttls() {
        let mut tree = valid_tree();
        tree["tables"][1]["name"] = json!("shop.users");
        tree["tables"][1]["ttl"] = json!(0);
        let found = problems(tree);
        assert!(
            found
                .iter()
                .any(|p| p
                    == "tables[1].ttl: must be at least 1 second (leave it out for no expiry)"),
            "{found:#?}"
        );
        tree = valid_tree();
        tree["tables"][1]["name"] = json!("shop.users");
        let found = problems(tree);
        assert_eq!(
            found,
            vec!["tables[1].name: shop.users is configured twice"]
        );
    }
}
