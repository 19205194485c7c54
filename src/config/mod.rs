//! Configuration: TOML under `config/` plus `CACHESYNC__SECTION__KEY` environment overrides.
//!
//! Loading happens in two steps, as in Vector: [`RawConfig`] is what serde reads (every
//! unknown key is collected, not just the first), then [`RawConfig::validate`] — pure, no
//! I/O — turns it into a [`Config`] or returns *all* problems at once, each naming its key
//! (`tables[1].key: ...`). Checks that need MySQL (does the table exist, is `{id}` a
//! primary-key column) live in [`crate::mysql::schema`] and report in the same style.
//!
//! This module only assembles: each section is declared, defaulted and validated next to
//! the code it configures — `[[tables]]` in [`table`], `[binlog]` and `[amqp]` in their
//! strategy's folder, `[api]` and `[grpc]` in [`crate::api`] — so it sits above them all. `[verify]`
//! ([`verify`]) configures a command, which sits above this module, so it is declared
//! here.

pub mod table;
pub mod verify;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use self::table::RawTable;
use self::verify::{RawVerify, VerifyConfig};
use crate::api::config::{ApiConfig, RawApi};
use crate::api::grpc::config::{GrpcConfig, RawGrpc};
use crate::error::{Error, Result};
use crate::model::table::TableConfig;
use crate::redact::scrub;
use crate::redis::keyspace::DeploymentKeys;
use crate::snapshot::config::{RawSnapshot, SnapshotConfig};
use crate::strategy::binlog::config::{BinlogConfig, RawBinlog};
use crate::strategy::mq::config::{AmqpConfig, RawAmqp};
use crate::strategy::write_back::config::{RawWriteBack, WriteBackConfig};
use crate::strategy::{Sections, StrategyKind};

/// Environment variables with this prefix override file keys: `CACHESYNC__MYSQL__URL`.
pub const ENV_PREFIX: &str = "CACHESYNC";

/// The configuration file as written; see `config/cachesync.toml` for each key's meaning.
#[derive(Debug, Clone, Deserialize)]
pub struct RawConfig {
    /// Names this deployment in Redis: the keys cachesync keeps for itself are
    /// `cachesync:{<name>}:...`. Default: `<strategy>@<mysql host>:<port>`, plus
    /// `#<binlog.server_id>` for binlog.
    #[serde(default)]
    pub name: Option<String>,
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
    #[serde(default)]
    pub snapshot: RawSnapshot,
    #[serde(default)]
    pub write_back: RawWriteBack,
    /// The HTTP write API runs only when this section is present.
    #[serde(default)]
    pub api: Option<RawApi>,
    /// The gRPC API runs only when this section is present (it shares `api.token`).
    #[serde(default)]
    pub grpc: Option<RawGrpc>,
    /// Continuous verification runs inside `cachesync run` only when this section is
    /// present.
    #[serde(default)]
    pub verify: Option<RawVerify>,
    #[serde(default)]
    pub tables: Vec<RawTable>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawMysql {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawRedis {
    pub url: String,
    /// Seconds a delete's version is remembered so that an older, late upsert of the same
    /// row cannot bring it back (see `docs/encoding.md`).
    #[serde(default = "default_tombstone_ttl")]
    pub tombstone_ttl: u64,
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

fn default_tombstone_ttl() -> u64 {
    3600
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".to_owned()
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The deployment's name (see [`RawConfig::name`]), defaulted.
    pub name: String,
    pub strategy: StrategyKind,
    pub mysql_url: String,
    pub redis_url: String,
    pub tombstone_ttl: Duration,
    pub amqp: Option<AmqpConfig>,
    pub api: Option<ApiConfig>,
    /// The gRPC API; `None`: off.
    pub grpc: Option<GrpcConfig>,
    /// Continuous verification; `None`: off.
    pub verify: Option<VerifyConfig>,
    pub metrics_listen: SocketAddr,
    pub binlog: BinlogConfig,
    pub snapshot: SnapshotConfig,
    pub write_back: WriteBackConfig,
    pub tables: Vec<TableConfig>,
}

impl Config {
    /// Reads `path` and the environment, then validates. Problems come back as
    /// [`Error::Config`] with one line each.
    pub fn load(path: &Path) -> Result<Config> {
        RawConfig::load(path)?.validate()
    }

    /// The keys this deployment keeps in Redis (checkpoint, marker, snapshot progress).
    pub fn deployment_keys(&self) -> DeploymentKeys {
        DeploymentKeys::new(
            &self.name,
            self.binlog.checkpoint_key.as_deref(),
            self.binlog.dead_letter_key.as_deref(),
        )
    }

    /// The strategies' own sections, for [`crate::strategy::Strategy::build`].
    pub fn sections(&self) -> Sections {
        Sections {
            binlog: self.binlog.clone(),
            amqp: self.amqp.clone(),
            write_back: self.write_back.clone(),
            tombstone_ttl: self.tombstone_ttl,
        }
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

        // Parser messages may quote the URL: never its password.
        if let Err(e) = mysql_async::Opts::from_url(&self.mysql.url) {
            problems.push(scrub(&format!("mysql.url: {e}"), &self.mysql.url));
        }
        if let Err(e) = redis::Client::open(self.redis.url.as_str()) {
            problems.push(scrub(&format!("redis.url: {e}"), &self.redis.url));
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
            .and_then(|api| api.validate(&mut problems));
        let grpc = self
            .grpc
            .as_ref()
            .and_then(|grpc| grpc.validate(self.api.as_ref(), &mut problems));
        let verify = self
            .verify
            .as_ref()
            .and_then(|verify| verify.validate(&mut problems));
        if let Some(kind) = strategy
            && kind.redis_holds_unflushed_writes()
            && self.verify.is_some()
        {
            problems.push(format!(
                "verify: continuous verification cannot run with strategy = \"{kind}\": the cache \
                 leads MySQL by design (writes wait in the queue), so a difference is not a \
                 divergence; remove [verify]"
            ));
        }
        if let Some(kind) = strategy
            && kind.needs_broker()
            && self.amqp.is_none()
        {
            problems.push(format!("amqp.url: required when strategy = \"{kind}\""));
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

        let binlog = self.binlog.validate(&mut problems);
        let snapshot = self.snapshot.validate(&mut problems);
        let name = match (&self.name, strategy, &binlog) {
            (Some(name), _, _) => {
                if name.is_empty() || name.contains(['{', '}']) {
                    problems.push(format!(
                        "name: must be non-empty and without {{ or }} (it becomes the Redis hash tag of cachesync's own keys), got {name:?}"
                    ));
                }
                Some(name.clone())
            }
            (None, Some(kind), Some(binlog)) => Some(default_name(kind, &self.mysql.url, binlog)),
            _ => None,
        };
        let write_back = self.write_back.validate(name.as_deref(), &mut problems);
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
                if let Some(problem) = strategy.and_then(|kind| kind.table_problem(&table)) {
                    problems.push(format!("tables[{index}]: {problem}"));
                }
                tables.push(table);
            }
        }

        match (strategy, metrics_listen, binlog, snapshot, name, write_back) {
            (
                Some(strategy),
                Some(metrics_listen),
                Some(binlog),
                Some(snapshot),
                Some(name),
                Some(write_back),
            ) if problems.is_empty() => Ok(Config {
                name,
                strategy,
                mysql_url: self.mysql.url.clone(),
                redis_url: self.redis.url.clone(),
                tombstone_ttl: Duration::from_secs(self.redis.tombstone_ttl),
                amqp,
                api,
                grpc,
                verify,
                metrics_listen,
                binlog,
                snapshot,
                write_back,
                tables,
            }),
            _ => Err(Error::Config(problems)),
        }
    }
}

/// The name of a deployment whose config sets none: `<strategy>@<mysql host>:<port>`,
/// plus `#<binlog.server_id>` for a binlog deployment (two of those on one server need
/// distinct replica ids anyway). Two deployments of one strategy on one MySQL server
/// that share a Redis need a `name` each.
fn default_name(kind: StrategyKind, mysql_url: &str, binlog: &BinlogConfig) -> String {
    let (host, port) = mysql_async::Opts::from_url(mysql_url)
        .map(|o| (o.ip_or_hostname().to_owned(), o.tcp_port()))
        .unwrap_or_else(|_| ("mysql".to_owned(), 3306));
    let mut name = format!("{kind}@{host}:{port}");
    if kind.tails_binlog() {
        name.push_str(&format!("#{}", binlog.server_id));
    }
    name.replace(['{', '}'], "")
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
    use crate::model::cell::Format;
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
    fn grpc_is_off_unless_its_section_is_present_and_names_its_keys() {
        let config = RawConfig::from_tree(valid_tree())
            .unwrap()
            .validate()
            .unwrap();
        assert!(config.grpc.is_none());
        let mut tree = valid_tree();
        tree["grpc"] = json!({});
        let config = RawConfig::from_tree(tree).unwrap().validate().unwrap();
        assert_eq!(config.grpc, Some(GrpcConfig::default()));
        let mut tree = valid_tree();
        tree["grpc"] = json!({ "listen": "50051", "max_inflight": 3 });
        assert_eq!(problems(tree), ["grpc.max_inflight: unknown key"]);
        let mut tree = valid_tree();
        tree["grpc"] = json!({ "listen": "50051" });
        assert_eq!(
            problems(tree),
            ["grpc.listen: expected IP:port such as 127.0.0.1:50051, got \"50051\""]
        );
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
    fn the_deployment_name_defaults_per_server_and_names_its_keys() {
        let config = RawConfig::from_tree(valid_tree())
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(config.name, "binlog@127.0.0.1:3307#4242");
        assert_eq!(
            config.deployment_keys().checkpoint,
            "cachesync:{binlog@127.0.0.1:3307#4242}:checkpoint"
        );
        let mut tree = valid_tree();
        tree["strategy"] = json!("dual-write");
        tree["name"] = json!("shop");
        let config = RawConfig::from_tree(tree).unwrap().validate().unwrap();
        assert_eq!(config.deployment_keys().marker, "cachesync:{shop}:marker");
        let mut tree = valid_tree();
        tree["name"] = json!("a{b}");
        tree["binlog"] = json!({ "checkpoint_key": "" });
        assert_eq!(
            problems(tree),
            vec![
                "binlog.checkpoint_key: must not be empty",
                "name: must be non-empty and without { or } (it becomes the Redis hash tag of cachesync's own keys), got \"a{b}\"",
            ]
        );
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
    fn verify_is_off_by_default_and_checked_when_on() {
        let config = RawConfig::from_tree(valid_tree())
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(config.verify, None);
        let mut tree = valid_tree();
        tree["verify"] = json!({});
        let config = RawConfig::from_tree(tree).unwrap().validate().unwrap();
        let verify = config.verify.unwrap();
        assert_eq!(verify.interval, Duration::from_secs(300));
        assert_eq!(verify.rows_per_second, 1000);
        assert!(verify.repair);
        let mut tree = valid_tree();
        tree["verify"] =
            json!({ "interval": 0, "rows_per_second": 0, "batch": 0, "grace_ms": 61000 });
        let mut found = problems(tree);
        found.sort();
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].starts_with("verify.batch:"), "{found:?}");
        let mut tree = valid_tree();
        tree["verify"] = json!({ "intervall": 5 });
        assert_eq!(problems(tree), vec!["verify.intervall: unknown key"]);
        // Write-back's cache leads MySQL: nothing to verify it against while it runs.
        let mut tree = valid_tree();
        tree["strategy"] = json!("write-back");
        for table in tree["tables"].as_array_mut().unwrap() {
            table["mode"] = json!("write");
            table["format"] = json!("json");
        }
        assert!(
            problems(tree.clone()).is_empty(),
            "{:?}",
            problems(tree.clone())
        );
        tree["verify"] = json!({});
        let found = problems(tree);
        assert!(
            found.len() == 1
                && found[0].starts_with(
                    "verify: continuous verification cannot run with strategy = \"write-back\""
                ),
            "{found:?}"
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
