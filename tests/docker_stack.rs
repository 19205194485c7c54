//! The Docker demo stack (`docker/`) checked without Docker, which these machines do not
//! run:
//!
//! - the Grafana dashboard queries only metrics cachesync really exports: every metric
//!   name in every PromQL expression of `docker/grafana/dashboards/*.json` is looked up
//!   in real `/metrics` scrapes — of four `cachesync run` daemons (dual-write, mq,
//!   binlog, write-back) that each had a row written through their API, and, for the series only the
//!   benchmark has, of a running `cachesync bench`;
//! - `docker/compose.yml` (after `<<` merges and `${…}` interpolation from
//!   `docker/.env`, as Compose does) and the files it mounts agree: every `depends_on`
//!   target exists and has a health check, mounted files exist, each cachesync service's
//!   config parses and validates with `cachesync::config` under the environment compose
//!   gives it, Prometheus scrapes every cachesync service on its `metrics.listen` port,
//!   Grafana's data source is the Prometheus service and its dashboard folder is mounted,
//!   and every address in the file (published ports, health checks, URLs and the load
//!   generator's targets in `environment`) names a service and a port it listens on;
//! - `docker/mysql/my.cnf` is a server `cachesync doctor` accepts for the binlog
//!   strategy: a private MariaDB is started with its `[mysqld]` section (minus the
//!   MySQL-only keys in [`MYSQL_ONLY_KEYS`]), loaded with the stack's init SQL (demo
//!   schema, `cachesync` user, its grants), and doctor runs as that user (and reads the
//!   binlog position as the snapshot does).
//!
//! The service-backed tests need `scripts/services.sh up` (MariaDB 3307, Redis 6380,
//! RabbitMQ 5672) and, for the doctor test, `mariadb-install-db`/`mariadbd` on PATH:
//!
//! ```text
//! scripts/services.sh up
//! cargo test --test docker_stack
//! ```

mod common;

use mysql_async::prelude::Queryable;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use common::{TestDb, cachesync_command as cachesync, free_port, http_get};

/// Metrics only `cachesync bench` exports (its readers and its final comparison); the
/// daemons' scrape cannot have them.
const BENCH_ONLY: &[&str] = &[
    "cachesync_reads_total",
    "cachesync_stale_reads_total",
    "cachesync_divergent_keys",
];

/// `[mysqld]` keys of `docker/mysql/my.cnf` that MariaDB does not have. MariaDB logs GTIDs
/// always (its `gtid_*` variables differ), so the MySQL switches for them are skipped.
const MYSQL_ONLY_KEYS: &[&str] = &["gtid_mode", "enforce_gtid_consistency"];

/// How long anything this file waits for may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// docker/compose.yml as Compose reads it
// ---------------------------------------------------------------------------------------

/// `KEY=VALUE` lines of `docker/.env` (Compose's interpolation source).
fn dotenv() -> BTreeMap<String, String> {
    read(&docker_dir().join(".env"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("docker/.env: not KEY=VALUE: {l:?}"));
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// Compose's interpolation of one string: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`,
/// `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`. A variable that is neither in
/// `env` nor defaulted is a problem: `up` would fail (`?`) or run with an empty value.
fn interpolate(text: &str, env: &BTreeMap<String, String>, problems: &mut Vec<String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(body) = rest.strip_prefix('{') {
            let end = body
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {text:?}"));
            let expr = &body[..end];
            rest = &body[end + 1..];
            let split = expr.find([':', '-', '?']).unwrap_or(expr.len());
            let (name, op) = expr.split_at(split);
            let value = env
                .get(name)
                .filter(|v| !(op.starts_with(':') && v.is_empty()));
            let op = op.trim_start_matches(':');
            match (value, op.chars().next()) {
                (Some(v), _) => out.push_str(v),
                (None, Some('-')) => out.push_str(&op[1..]),
                (None, _) => {
                    problems.push(format!("${{{expr}}} is not set in docker/.env"));
                }
            }
        } else {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..len];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => problems.push(format!("${name} is not set in docker/.env")),
            }
            rest = &rest[len..];
        }
    }
    out.push_str(rest);
    out
}

fn interpolate_tree(value: &mut Json, env: &BTreeMap<String, String>, problems: &mut Vec<String>) {
    match value {
        Json::String(s) => *s = interpolate(s, env, problems),
        Json::Array(items) => items
            .iter_mut()
            .for_each(|v| interpolate_tree(v, env, problems)),
        Json::Object(map) => map
            .values_mut()
            .for_each(|v| interpolate_tree(v, env, problems)),
        _ => {}
    }
}

/// Parses a YAML file (merge keys applied) into JSON.
fn yaml_file(path: &Path) -> Json {
    let mut value: yaml_serde::Value = yaml_serde::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
    yaml_serde::from_value(value)
        .unwrap_or_else(|e| panic!("{}: not JSON-shaped: {e}", path.display()))
}

/// The compose file after merges and interpolation.
struct Stack {
    compose: Json,
}

impl Stack {
    fn load() -> Stack {
        let mut compose = yaml_file(&docker_dir().join("compose.yml"));
        let mut problems = Vec::new();
        interpolate_tree(&mut compose, &dotenv(), &mut problems);
        assert!(problems.is_empty(), "docker/compose.yml: {problems:#?}");
        assert!(
            !serde_json::to_string(&compose).unwrap().contains("\"<<\""),
            "a merge key was left unresolved"
        );
        Stack { compose }
    }

    fn services(&self) -> &serde_json::Map<String, Json> {
        self.compose["services"]
            .as_object()
            .expect("compose.yml has services")
    }

    fn service(&self, name: &str) -> &Json {
        self.services()
            .get(name)
            .unwrap_or_else(|| panic!("compose.yml has no service {name:?}"))
    }

    /// The service whose image is `image:<tag>` (exactly one).
    fn service_with_image(&self, image: &str) -> (&str, &Json) {
        let found: Vec<_> = self
            .services()
            .iter()
            .filter(|(_, s)| {
                s["image"]
                    .as_str()
                    .is_some_and(|i| i.split(':').next() == Some(image))
            })
            .collect();
        assert_eq!(found.len(), 1, "expected one service with image {image}");
        (found[0].0.as_str(), found[0].1)
    }

    /// Services that run `cachesync … --config FILE`, with that file's path in the
    /// container.
    fn cachesync_services(&self) -> Vec<(&str, &Json, String)> {
        self.services()
            .iter()
            .filter_map(|(name, s)| {
                let command: Vec<&str> = s["command"]
                    .as_array()?
                    .iter()
                    .filter_map(Json::as_str)
                    .collect();
                let at = command.iter().position(|a| *a == "--config")?;
                Some((name.as_str(), s, command[at + 1].to_owned()))
            })
            .collect()
    }
}

/// The service's `environment`, map or `KEY=VALUE` list.
fn service_env(service: &Json) -> BTreeMap<String, String> {
    match &service["environment"] {
        Json::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Json::Array(items) => items
            .iter()
            .filter_map(Json::as_str)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Bind mounts `(host path, container path)`; host paths relative to `docker/`.
fn bind_mounts(service: &Json) -> Vec<(PathBuf, String)> {
    service["volumes"]
        .as_array()
        .map(|v| v.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(Json::as_str)
        .filter(|v| v.starts_with('.') || v.starts_with('/'))
        .map(|v| {
            let mut parts = v.split(':');
            let host = parts.next().unwrap();
            let container = parts
                .next()
                .unwrap_or_else(|| panic!("volume {v:?} names no container path"));
            (docker_dir().join(host), container.to_owned())
        })
        .collect()
}

/// The host file or folder a container path of `service` comes from.
fn host_path(service: &Json, container_path: &str) -> Option<PathBuf> {
    bind_mounts(service)
        .into_iter()
        .filter_map(|(host, container)| {
            let rest = container_path.strip_prefix(container.as_str())?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            let rest = rest.trim_start_matches('/');
            let host = if rest.is_empty() {
                host
            } else {
                host.join(rest)
            };
            Some((container.len(), host))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, host)| host)
}

/// The ports a service publishes: `(host address, container port)`.
fn published_ports(service: &Json) -> Vec<(String, u16)> {
    service["ports"]
        .as_array()
        .map(|v| v.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let p = p.as_str().expect("ports in short form");
            let parts: Vec<&str> = p.split(':').collect();
            let container = parts.last().unwrap().parse().expect("a container port");
            let address = if parts.len() == 3 { parts[0] } else { "" };
            (address.to_owned(), container)
        })
        .collect()
}

/// `ENV CACHESYNC__…` lines of the Dockerfile: they override every mounted config.
fn dockerfile_env() -> BTreeMap<String, String> {
    read(&docker_dir().join("Dockerfile"))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ENV "))
        .flat_map(|rest| rest.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A cachesync config file as `RawConfig::load` sees it under `env`: the TOML, then
/// every `CACHESYNC__SECTION__KEY` variable as an override.
fn config_tree(file: &Path, env: &BTreeMap<String, String>) -> Json {
    let mut tree: Json = toml::from_str(&read(file))
        .unwrap_or_else(|e| panic!("{} is not valid TOML: {e}", file.display()));
    for (name, value) in env {
        let Some(path) = name.strip_prefix("CACHESYNC__") else {
            continue;
        };
        let mut node = &mut tree;
        let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        for key in &keys[..keys.len() - 1] {
            node = node
                .as_object_mut()
                .unwrap()
                .entry(key.clone())
                .or_insert_with(|| Json::Object(Default::default()));
        }
        node[keys.last().unwrap()] = Json::String(value.clone());
    }
    tree
}

/// A cachesync service's config: its host file and the validated config under the
/// environment compose (and the image) give it.
fn service_config(
    name: &str,
    service: &Json,
    container_path: &str,
) -> (PathBuf, cachesync::config::Config) {
    let file = host_path(service, container_path)
        .unwrap_or_else(|| panic!("{name}: no volume provides {container_path}"));
    let mut env = dockerfile_env();
    env.extend(service_env(service));
    let tree = config_tree(&file, &env);
    let config = cachesync::config::RawConfig::from_tree(tree)
        .unwrap_or_else(|p| panic!("{name}: {}: {p:#?}", file.display()))
        .validate()
        .unwrap_or_else(|e| panic!("{name}: {} does not validate: {e}", file.display()));
    (file, config)
}

/// `host` and `port` of `scheme://[user[:password]@]host:port[/…]`.
fn url_host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").expect("a URL").1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{url}: name the port"));
    (host.to_owned(), port.parse().expect("a port number"))
}

/// The port of a health check that speaks HTTP over bash's `/dev/tcp/127.0.0.1/PORT`.
fn healthcheck_tcp_port(service: &Json) -> Option<u16> {
    let test = service["healthcheck"]["test"].to_string();
    let at = test.find("/dev/tcp/127.0.0.1/")? + "/dev/tcp/127.0.0.1/".len();
    let digits: String = test[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn compose_services_start_in_order_on_health_checks() {
    let stack = Stack::load();
    let services = stack.services();
    for wanted in [
        "mysql",
        "redis",
        "rabbitmq",
        "cachesync-binlog",
        "cachesync-mq",
        "cachesync-dual-write",
        "cachesync-bench",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(wanted), "no service {wanted}");
    }
    // Keys Compose knows that this file uses: a typo (`depend_on`) would otherwise be
    // ignored here and rejected, or ignored, by Compose.
    const SERVICE_KEYS: &[&str] = &[
        "build",
        "command",
        "depends_on",
        "entrypoint",
        "environment",
        "healthcheck",
        "image",
        "ports",
        "profiles",
        "restart",
        "stop_grace_period",
        "volumes",
    ];
    for key in stack.compose.as_object().unwrap().keys() {
        assert!(
            ["name", "services", "volumes"].contains(&key.as_str()) || key.starts_with("x-"),
            "unexpected top-level key {key}"
        );
    }
    for (name, service) in services {
        for key in service.as_object().unwrap().keys() {
            assert!(
                SERVICE_KEYS.contains(&key.as_str()),
                "{name}: unexpected key {key}"
            );
        }
        let test = &service["healthcheck"]["test"];
        assert!(
            test.as_array()
                .is_some_and(|t| t.len() > 1 && t[0] != "NONE"),
            "{name}: no health check"
        );
        let in_profile = service["profiles"].as_array().is_some();
        let Some(deps) = service.get("depends_on") else {
            continue;
        };
        let deps = deps.as_object().unwrap_or_else(|| {
            panic!("{name}: depends_on must be a map with condition: service_healthy")
        });
        for (dep, how) in deps {
            let target = services
                .get(dep)
                .unwrap_or_else(|| panic!("{name} depends on {dep}, which is not a service"));
            assert_eq!(
                how["condition"], "service_healthy",
                "{name} -> {dep}: wait for health, not just the start"
            );
            assert!(
                target["healthcheck"]["test"].is_array(),
                "{name} waits for {dep}'s health, but {dep} has no health check"
            );
            assert!(
                in_profile || target["profiles"].is_null(),
                "{name} runs by default but depends on {dep}, which only runs in a profile"
            );
        }
    }
    // Every published port on the host's loopback only: the passwords are demo ones.
    for (name, service) in services {
        for (address, port) in published_ports(service) {
            assert_eq!(
                address, "127.0.0.1",
                "{name} publishes {port} beyond the loopback"
            );
        }
        for (host, container) in bind_mounts(service) {
            assert!(
                host.exists(),
                "{name} mounts {} at {container}, which does not exist",
                host.display()
            );
        }
    }
}

/// Ports the upstream images listen on inside the network; the file changes none of
/// them (no `--port`, no `*_PORT` variable).
const IMAGE_PORTS: &[(&str, &[u16])] = &[
    ("mysql", &[3306]),
    ("redis", &[6379]),
    ("rabbitmq", &[5672, 15672]),
    ("prom/prometheus", &[9090]),
    ("grafana/grafana", &[3000]),
];

/// What each service listens on inside the network: the cachesync services' ports from
/// their validated configs (API and `/metrics`), the others' from [`IMAGE_PORTS`].
fn listening_ports(stack: &Stack) -> BTreeMap<String, BTreeSet<u16>> {
    let mut ports: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for (name, service) in stack.services() {
        let image = service["image"].as_str().unwrap_or_default();
        let image = image.split(':').next().unwrap();
        if let Some((_, known)) = IMAGE_PORTS.iter().find(|(i, _)| *i == image) {
            ports.entry(name.clone()).or_default().extend(*known);
        }
    }
    for (name, service, path) in stack.cachesync_services() {
        let config = service_config(name, service, &path).1;
        let entry = ports.entry(name.to_owned()).or_default();
        entry.insert(config.metrics_listen.port());
        if let Some(api) = &config.api {
            entry.insert(api.listen.port());
        }
    }
    ports
}

/// `(host, port)` pairs an environment value points at: URLs and bare `host:port` words.
fn addresses_in(value: &str) -> Vec<(String, u16)> {
    value
        .split_whitespace()
        .filter_map(|word| {
            if word.contains("://") {
                return Some(url_host_port(word));
            }
            let (host, port) = word.rsplit_once(':')?;
            let port = port.parse().ok()?;
            host.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                .then(|| (host.to_owned(), port))
        })
        .collect()
}

#[test]
fn every_address_names_a_service_on_a_port_it_listens_on() {
    let stack = Stack::load();
    let listening = listening_ports(&stack);
    let listens = |name: &str, port: u16| listening.get(name).is_some_and(|p| p.contains(&port));
    let mut checked = 0;
    for (name, service) in stack.services() {
        // Published ports map to a port the container listens on.
        for (_, port) in published_ports(service) {
            assert!(
                listens(name, port),
                "{name} publishes container port {port}, but listens on {:?}",
                listening.get(name)
            );
            checked += 1;
        }
        // Health checks ask the service itself on one of its ports.
        let test = service["healthcheck"]["test"].to_string();
        for marker in ["/dev/tcp/127.0.0.1/", "http://127.0.0.1:"] {
            for (at, _) in test.match_indices(marker) {
                let digits: String = test[at + marker.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                let port = digits.parse().unwrap();
                assert!(
                    listens(name, port),
                    "{name}'s health check asks port {port}, but it listens on {:?}",
                    listening.get(name)
                );
                checked += 1;
            }
        }
        // Every other service it is pointed at (URLs, loadgen's TARGETS) exists and
        // listens on that port.
        for (variable, value) in service_env(service) {
            for (host, port) in addresses_in(&value) {
                assert!(
                    stack.services().contains_key(&host),
                    "{name}: {variable} points at {host}:{port}, which is not a service"
                );
                assert!(
                    listens(&host, port),
                    "{name}: {variable} points at {host}:{port}, but {host} listens on {:?}",
                    listening.get(&host)
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} addresses found: is the parsing broken?"
    );

    // The load generator writes shop.users through each daemon's API: a table every
    // daemon it targets syncs.
    let loadgen = stack.service("loadgen");
    let script = read(&docker_dir().join("loadgen/load.sh"));
    assert!(script.contains("/v1/tables/shop.users/rows"));
    let targets = addresses_in(&service_env(loadgen)["TARGETS"]);
    let daemons: Vec<String> = stack
        .cachesync_services()
        .into_iter()
        .filter(|(_, s, _)| s["command"][0] == "run")
        .map(|(n, _, _)| n.to_owned())
        .collect();
    assert_eq!(
        targets
            .iter()
            .map(|(h, _)| h.clone())
            .collect::<BTreeSet<_>>(),
        daemons.iter().cloned().collect::<BTreeSet<_>>(),
        "loadgen writes through every daemon"
    );
    for (host, port) in targets {
        let (_, service, path) = stack
            .cachesync_services()
            .into_iter()
            .find(|(n, _, _)| *n == host)
            .unwrap();
        let config = service_config(&host, service, &path).1;
        assert_eq!(config.api.as_ref().map(|a| a.listen.port()), Some(port));
        assert!(
            config
                .tables
                .iter()
                .any(|t| t.database == "shop" && t.table == "users"),
            "{host} does not sync shop.users, which loadgen writes through its API"
        );
    }
}

#[test]
fn mysql_service_gets_the_binlog_config_schema_and_user() {
    let stack = Stack::load();
    let mysql = stack.service("mysql");
    let cnf = bind_mounts(mysql)
        .into_iter()
        .find(|(_, c)| c.starts_with("/etc/mysql/conf.d/") && c.ends_with(".cnf"))
        .expect("my.cnf mounted into /etc/mysql/conf.d/");
    assert_eq!(cnf.0, docker_dir().join("./mysql/my.cnf"));
    let init: BTreeMap<String, PathBuf> = bind_mounts(mysql)
        .into_iter()
        .filter_map(|(host, c)| {
            c.strip_prefix("/docker-entrypoint-initdb.d/")
                .map(|f| (f.to_owned(), host))
        })
        .collect();
    let names: Vec<&String> = init.keys().collect();
    assert_eq!(
        names,
        [
            "01-demo.sql",
            "02-cachesync-user.sh",
            "03-cachesync-grants.sql"
        ],
        "init scripts, in the order the image runs them"
    );
    assert_eq!(
        read(&init["01-demo.sql"]),
        read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.sql"))
    );
    let env = service_env(mysql);
    assert!(env.contains_key("CACHESYNC_MYSQL_PASSWORD"));
    assert!(env.contains_key("MYSQL_ROOT_PASSWORD"));
}

#[test]
fn cachesync_configs_validate_under_the_compose_environment() {
    let stack = Stack::load();
    let services = stack.cachesync_services();
    let mut used = BTreeSet::new();
    for (name, service, container_path) in &services {
        let (file, config) = service_config(name, service, container_path);
        used.insert(file.canonicalize().unwrap());
        // The services it talks to are compose services on their images' ports.
        let mut targets = vec![
            (url_host_port(&config.mysql_url), ("mysql", 3306)),
            (url_host_port(&config.redis_url), ("redis", 6379)),
        ];
        if let Some(amqp) = &config.amqp {
            targets.push((url_host_port(&amqp.url), ("rabbitmq", 5672)));
        }
        for ((host, port), (service_name, service_port)) in targets {
            assert_eq!(
                (host.as_str(), port),
                (service_name, service_port),
                "{name}: {}",
                file.display()
            );
            stack.service(service_name);
        }
        // Reachable from Prometheus: listening on every interface of the container.
        assert!(
            config.metrics_listen.ip().is_unspecified(),
            "{name}: metrics.listen {} cannot be scraped from another container",
            config.metrics_listen
        );
        let command = service["command"].to_string();
        if command.starts_with("[\"run\"") {
            assert_eq!(
                *name,
                format!("cachesync-{}", config.strategy),
                "service named after its strategy"
            );
            let api = config
                .api
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: the stack's daemons serve the write API"));
            assert!(
                api.token.is_some(),
                "{name}: an API on 0.0.0.0 needs a token"
            );
            assert!(
                published_ports(service)
                    .iter()
                    .any(|(_, p)| *p == api.listen.port()),
                "{name}: api.listen port {} is not published",
                api.listen.port()
            );
            assert_eq!(
                healthcheck_tcp_port(service),
                Some(api.listen.port()),
                "{name}: the health check asks the API's /readyz"
            );
        } else {
            assert_eq!(
                healthcheck_tcp_port(service),
                Some(config.metrics_listen.port()),
                "{name}: the health check asks /metrics"
            );
        }
    }
    // No config in docker/cachesync/ that nothing runs.
    for entry in std::fs::read_dir(docker_dir().join("cachesync")).unwrap() {
        let path = entry.unwrap().path().canonicalize().unwrap();
        assert!(
            used.contains(&path),
            "{} is not used by any service",
            path.display()
        );
    }
    // The binlog daemon and the bench are two replicas of one server: distinct ids.
    let ids: BTreeSet<u32> = services
        .iter()
        .map(|(n, s, p)| service_config(n, s, p).1)
        .filter(|c| c.strategy == cachesync::strategy::StrategyKind::Binlog)
        .map(|c| c.binlog.server_id)
        .collect();
    assert_eq!(
        ids.len(),
        2,
        "binlog daemon and bench need their own server_id"
    );
}

#[test]
fn prometheus_scrapes_every_cachesync_service_on_its_metrics_port() {
    let stack = Stack::load();
    let (prometheus_name, prometheus) = stack.service_with_image("prom/prometheus");
    let config_arg = prometheus["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Json::as_str)
        .find_map(|a| a.strip_prefix("--config.file="))
        .expect("prometheus --config.file");
    let file = host_path(prometheus, config_arg).expect("prometheus.yml is mounted");
    assert_eq!(file, docker_dir().join("./prometheus/prometheus.yml"));
    let config = yaml_file(&file);
    let targets: Vec<(String, u16)> = config["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .flat_map(|job| job["static_configs"].as_array().unwrap().iter())
        .flat_map(|sc| sc["targets"].as_array().unwrap().iter())
        .map(|t| {
            let (host, port) = t.as_str().unwrap().rsplit_once(':').unwrap();
            (host.to_owned(), port.parse().unwrap())
        })
        .collect();
    let metrics_ports: BTreeMap<&str, u16> = stack
        .cachesync_services()
        .into_iter()
        .map(|(n, s, p)| (n, service_config(n, s, &p).1.metrics_listen.port()))
        .collect();
    for (host, port) in &targets {
        stack.service(host);
        if let Some(expected) = metrics_ports.get(host.as_str()) {
            assert_eq!(
                port, expected,
                "target {host}:{port}, but {host} serves /metrics on {expected}"
            );
        } else {
            assert_eq!(
                (host.as_str(), *port),
                (prometheus_name, 9090),
                "unexpected target"
            );
        }
    }
    for name in metrics_ports.keys() {
        assert!(
            targets.iter().any(|(h, _)| h == name),
            "Prometheus does not scrape {name}"
        );
    }
}

#[test]
fn grafana_reads_prometheus_and_the_dashboard() {
    let stack = Stack::load();
    let (prometheus_name, _) = stack.service_with_image("prom/prometheus");
    let (_, grafana) = stack.service_with_image("grafana/grafana");
    let provisioning =
        host_path(grafana, "/etc/grafana/provisioning").expect("provisioning mounted");

    let mut uids = Vec::new();
    for entry in std::fs::read_dir(provisioning.join("datasources")).unwrap() {
        let file = yaml_file(&entry.unwrap().path());
        for ds in file["datasources"].as_array().unwrap() {
            assert_eq!(ds["type"], "prometheus");
            let url = ds["url"].as_str().unwrap();
            assert_eq!(
                url_host_port(url),
                (prometheus_name.to_owned(), 9090),
                "data source {url}"
            );
            uids.push(ds["uid"].as_str().expect("a fixed uid").to_owned());
        }
    }
    assert_eq!(uids.len(), 1);

    let mut dashboards = Vec::new();
    for entry in std::fs::read_dir(provisioning.join("dashboards")).unwrap() {
        let file = yaml_file(&entry.unwrap().path());
        for provider in file["providers"].as_array().unwrap() {
            let path = provider["options"]["path"].as_str().unwrap();
            let dir = host_path(grafana, path)
                .unwrap_or_else(|| panic!("dashboard folder {path} is not mounted"));
            for json in std::fs::read_dir(&dir).unwrap() {
                dashboards.push(json.unwrap().path());
            }
        }
    }
    assert!(!dashboards.is_empty(), "no dashboard provisioned");
    let home = service_env(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].clone();
    assert!(host_path(grafana, &home).is_some_and(|p| p.is_file()));

    // Every panel and target uses the provisioned data source.
    for path in dashboards {
        let dashboard: Json = serde_json::from_str(&read(&path)).unwrap();
        let mut seen = Vec::new();
        collect_datasource_uids(&dashboard, &mut seen);
        assert!(!seen.is_empty());
        for uid in seen {
            assert_eq!(uid, uids[0], "{}", path.display());
        }
    }
}

fn collect_datasource_uids(value: &Json, out: &mut Vec<String>) {
    match value {
        Json::Object(map) => {
            if let Some(uid) = map.get("datasource").and_then(|d| d["uid"].as_str()) {
                out.push(uid.to_owned());
            }
            map.values().for_each(|v| collect_datasource_uids(v, out));
        }
        Json::Array(items) => items.iter().for_each(|v| collect_datasource_uids(v, out)),
        _ => {}
    }
}

#[test]
fn dockerfile_builds_locked_and_runs_as_non_root() {
    let dockerfile = read(&docker_dir().join("Dockerfile"));
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(runtime.contains("ENTRYPOINT [\"cachesync\"]"));
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line in the runtime stage");
    assert!(!matches!(user.trim(), "root" | "0"));
    let exposed: BTreeSet<u16> = runtime
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(|p| p.parse().unwrap()))
        .collect();
    let stack = Stack::load();
    for (name, service, path) in stack.cachesync_services() {
        let (_, config) = service_config(name, service, &path);
        assert!(exposed.contains(&config.metrics_listen.port()), "{name}");
        if let Some(api) = config.api {
            assert!(exposed.contains(&api.listen.port()), "{name}");
        }
    }
    let ignore = read(&docker_dir().join("../.dockerignore"));
    assert!(ignore.lines().any(|l| l.trim() == "/target"));
}

// ---------------------------------------------------------------------------------------
// The dashboard against real scrapes
// ---------------------------------------------------------------------------------------

/// PromQL functions and aggregation operators (not metric names).
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
];

/// The metric names an expression selects: identifiers outside label matchers (`{…}`),
/// range/subquery brackets (`[…]`), strings and grouping lists (`by (…)`), that are not
/// functions (followed by `(`), keywords or `$variables`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Skips from an opening character to its match, minding strings.
    let skip_group = |mut i: usize, open: char, close: char| -> usize {
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                q @ ('"' | '\'' | '`') => {
                    i += 1;
                    while i < chars.len() && chars[i] != q {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                }
                _ => {}
            }
            i += 1;
        }
        panic!("unbalanced {open} in {expr:?}");
    };
    let next_non_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => i = skip_group(i, '{', '}'),
            '[' => i = skip_group(i, '[', ']'),
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let after = next_non_space(i);
                let called = after < chars.len() && chars[after] == '(';
                if matches!(
                    word.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    if called {
                        i = skip_group(after, '(', ')');
                    }
                } else if !called && !PROMQL_WORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            "histogram_quantile(0.99, sum by (strategy, le) (rate(cachesync_propagation_seconds_bucket{strategy=~\"$strategy\"}[$__rate_interval])))"
        ),
        ["cachesync_propagation_seconds_bucket"]
    );
    assert_eq!(
        names(
            "sum by (strategy) (rate(a_total{x=\"b{c}\"}[5m])) / ignoring (t) sum without(le) (b) > bool 0.5"
        ),
        ["a_total", "b"]
    );
    assert_eq!(
        names("max(c:rule) or on() vector(0) and d offset 5m"),
        ["c:rule", "d"]
    );
}

/// Every PromQL expression of the provisioned dashboards, with where it is.
fn dashboard_exprs() -> Vec<(String, String)> {
    let dir = docker_dir().join("grafana/dashboards");
    let mut exprs = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: Json = serde_json::from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let panels = dashboard["panels"].as_array().expect("panels");
        for panel in panels {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("a PromQL expr");
                exprs.push((
                    format!("{}: {}", path.display(), panel["title"]),
                    expr.to_owned(),
                ));
            }
        }
    }
    assert!(!exprs.is_empty());
    exprs
}

/// Metric names the dashboards query.
fn dashboard_metrics() -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for (place, expr) in dashboard_exprs() {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr}");
        for name in names {
            assert!(
                name.starts_with("cachesync_"),
                "{place}: {name} is not a cachesync metric"
            );
            all.insert(name);
        }
    }
    all
}

/// One `/metrics` body, by name: `# TYPE` of each family, and the label sets of each
/// sample name.
#[derive(Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, Vec<String>>,
}

impl Scrape {
    fn add(&mut self, body: &str) {
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                    continue;
                };
                self.types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                let labels = line[end..]
                    .strip_prefix('{')
                    .and_then(|l| l.split_once('}'))
                    .map_or("", |(l, _)| l);
                self.samples
                    .entry(line[..end].to_owned())
                    .or_default()
                    .push(labels.to_owned());
            }
        }
    }

    /// The family a sample name belongs to: a histogram's `_bucket`/`_sum`/`_count`
    /// belong to the histogram.
    fn family<'a>(&self, name: &'a str) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && matches!(
                    self.types.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                )
                && (suffix != "_bucket" || self.types[base] == "histogram")
            {
                return base;
            }
        }
        name
    }

    /// What is wrong with `name` in this scrape, if anything: no samples, no `# TYPE`
    /// for its family, or a sample without the `strategy` label the dashboard groups by.
    fn problem(&self, name: &str) -> Option<String> {
        let family = self.family(name);
        let Some(labels) = self.samples.get(name) else {
            return Some(format!("{name}: no such series"));
        };
        if !self.types.contains_key(family) {
            return Some(format!("{name}: no # TYPE line for {family}"));
        }
        labels
            .iter()
            .find(|l| !l.split(',').any(|kv| kv.starts_with("strategy=")))
            .map(|l| format!("{name}{{{l}}}: no strategy label"))
    }

    fn names(&self) -> Vec<&String> {
        self.samples.keys().collect()
    }
}

/// A child process whose output goes to files; killed on drop.
struct Running {
    child: Child,
    what: String,
    stderr: PathBuf,
}

impl Running {
    fn start(what: &str, mut cmd: Command, dir: &Path) -> Running {
        let stderr = dir.join(format!("{what}.stderr"));
        let child = cmd
            .stdout(std::fs::File::create(dir.join(format!("{what}.stdout"))).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Running {
            child,
            what: what.to_owned(),
            stderr,
        }
    }

    /// Fails the test when the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}):\n{}",
                self.what,
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A replica id no other test's binlog reader uses at the same time.
fn unique_server_id() -> u32 {
    100_000 + std::process::id() % 100_000 * 10 + rand::random::<u32>() % 10
}

/// One `cachesync run` of `strategy` on its own schema, key prefix, queues and ports.
struct Daemon {
    strategy: &'static str,
    db: TestDb,
    prefix: String,
    metrics_port: u16,
    api_port: u16,
    process: Option<Running>,
}

impl Daemon {
    async fn start(strategy: &'static str, dir: &Path) -> Daemon {
        let mut db = TestDb::create(&format!("dock_{}", strategy.replace('-', ""))).await;
        db.exec("CREATE TABLE items (id BIGINT PRIMARY KEY, v BIGINT UNSIGNED NOT NULL, name VARCHAR(50))")
            .await;
        let prefix = common::unique("dock");
        let (metrics_port, api_port) = (free_port(), free_port());
        let name = &db.name;
        let mut toml = format!(
            "strategy = \"{strategy}\"\n\
             [mysql]\nurl = \"{}\"\n\
             [redis]\nurl = \"{}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n\
             [[tables]]\nname = \"{name}.items\"\nkey = \"{prefix}:item:{{id}}\"\nversion_column = \"v\"\n",
            common::mysql_url(),
            common::redis_url(),
        );
        match strategy {
            "binlog" => toml.push_str(&format!(
                "[binlog]\nserver_id = {}\ncheckpoint_key = \"{prefix}:checkpoint\"\n\
                 heartbeat_table = \"{name}.heartbeat\"\nheartbeat_interval_ms = 100\n",
                unique_server_id()
            )),
            "mq" => toml.push_str(&format!(
                "[amqp]\nurl = \"{}\"\nexchange = \"{prefix}.x\"\nqueue = \"{prefix}.q\"\n\
                 dead_letter_queue = \"{prefix}.dead\"\noutbox_table = \"{name}.outbox\"\n",
                common::amqp_url()
            )),
            "write-back" => toml.push_str(&format!(
                "[write_back]\nstream = \"{prefix}:wb\"\ndead_letter_stream = \"{prefix}:wb-dead\"\n"
            )),
            _ => {}
        }
        let file = dir.join(format!("{strategy}.toml"));
        std::fs::write(&file, toml).unwrap();
        let process = Running::start(
            strategy,
            cachesync(&["run", "--config", file.to_str().unwrap()]),
            dir,
        );
        Daemon {
            strategy,
            db,
            prefix,
            metrics_port,
            api_port,
            process: Some(process),
        }
    }

    /// Upserts row `id` through the daemon's write API, retrying while it starts.
    async fn write_row(&mut self, client: &reqwest::Client, id: u64) {
        let url = format!(
            "http://127.0.0.1:{}/v1/tables/{}.items/rows",
            self.api_port, self.db.name
        );
        let body = serde_json::json!({ "id": id, "v": id, "name": format!("row {id}") });
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.process.as_mut().unwrap().assert_running();
            match client.put(&url).json(&body).send().await {
                Ok(answer) if answer.status().is_success() => return,
                Ok(answer) if Instant::now() >= deadline => panic!(
                    "{}: PUT {url}: {} {}",
                    self.strategy,
                    answer.status(),
                    answer.text().await.unwrap_or_default()
                ),
                Err(e) if Instant::now() >= deadline => {
                    panic!("{}: PUT {url}: {e}\n{}", self.strategy, self.log())
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn scrape(&self) -> String {
        http_get(self.metrics_port, "/metrics").unwrap_or_default()
    }

    /// Waits until the daemon counted `n` row changes applied to Redis.
    async fn wait_applied(&mut self, n: u64) {
        let series = format!(
            "cachesync_events_applied_total{{strategy=\"{}\",table=\"{}.items\"}} ",
            self.strategy, self.db.name
        );
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.process.as_mut().unwrap().assert_running();
            let body = self.scrape();
            let applied = body
                .lines()
                .find_map(|l| l.strip_prefix(&series))
                .and_then(|v| v.trim().parse::<f64>().ok());
            if applied.is_some_and(|a| a >= n as f64) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {series}is {applied:?} after {DEADLINE:?}\n{body}\n{}",
                self.strategy,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        self.process.as_ref().map(Running::log).unwrap_or_default()
    }

    async fn stop(mut self) {
        drop(self.process.take());
        self.db.drop_db().await;
        common::clear_redis_prefix(&self.prefix).await;
        common::delete_amqp_topology(&self.prefix).await;
    }
}

/// Every metric the dashboard queries, except the benchmark's own, is in the scrapes of
/// four daemons — one per strategy — after each wrote and applied a row (so the
/// histograms have samples and every strategy's lag/propagation bookkeeping ran).
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_metrics_are_exported_by_the_daemons() {
    let wanted: BTreeSet<String> = dashboard_metrics()
        .into_iter()
        .filter(|n| !BENCH_ONLY.contains(&n.as_str()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut daemons = Vec::new();
    for strategy in ["dual-write", "mq", "binlog", "write-back"] {
        daemons.push(Daemon::start(strategy, dir.path()).await);
    }
    let client = reqwest::Client::new();
    for daemon in &mut daemons {
        daemon.write_row(&client, 1).await;
    }
    for daemon in &mut daemons {
        daemon.wait_applied(1).await;
    }
    // Gauges such as lag are set by background tasks: look again until everything is
    // there, or fail with what is missing.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (scrape, problems) = loop {
        let mut scrape = Scrape::default();
        for daemon in &daemons {
            scrape.add(&daemon.scrape());
        }
        let problems: Vec<String> = wanted.iter().filter_map(|n| scrape.problem(n)).collect();
        if problems.is_empty() || Instant::now() >= deadline {
            break (scrape, problems);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let logs: Vec<String> = daemons.iter().map(Daemon::log).collect();
    for daemon in daemons {
        daemon.stop().await;
    }
    assert!(
        problems.is_empty(),
        "the dashboard queries series the daemons do not export:\n{}\n\nthe scrapes had: {:#?}\n{}",
        problems.join("\n"),
        scrape.names(),
        logs.join("\n")
    );
}

/// The benchmark's own series the dashboard queries (stale reads, divergent keys) are in
/// the scrape of a running `cachesync bench`.
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_bench_metrics_are_exported_by_cachesync_bench() {
    let wanted: BTreeSet<String> = dashboard_metrics()
        .into_iter()
        .filter(|n| BENCH_ONLY.contains(&n.as_str()))
        .collect();
    assert!(
        !wanted.is_empty(),
        "the dashboard shows no benchmark series"
    );
    // Probe the services first, for the usual message when they are down.
    common::mysql_conn().await.disconnect().await.ok();
    drop(common::redis_conn().await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let database = common::unique("dock_bench");
    let prefix = common::unique("dockbench");
    let file = dir.path().join("bench.toml");
    std::fs::write(
        &file,
        format!(
            "strategy = \"binlog\"\n[mysql]\nurl = \"{}\"\n[redis]\nurl = \"{}\"\n\
             [binlog]\nserver_id = {}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
             [[tables]]\nname = \"{database}.unused\"\nkey = \"unused:{{id}}\"\n",
            common::mysql_url(),
            common::redis_url(),
            unique_server_id()
        ),
    )
    .unwrap();
    let mut bench = Running::start(
        "bench",
        cachesync(&[
            "bench",
            "--config",
            file.to_str().unwrap(),
            "--strategies",
            "binlog",
            "--duration",
            "3s",
            "--keys",
            "100",
            "--writers",
            "2",
            "--rate",
            "200",
            "--readers",
            "2",
            "--read-rate",
            "200",
            "--database",
            &database,
            "--key-prefix",
            &prefix,
            "--quiet",
        ]),
        dir.path(),
    );
    // The bench registers its series at start and serves them while it runs.
    let deadline = Instant::now() + DEADLINE;
    let scrape = loop {
        bench.assert_running();
        let mut scrape = Scrape::default();
        scrape.add(&http_get(port, "/metrics").unwrap_or_default());
        if wanted.iter().all(|n| scrape.problem(n).is_none()) || Instant::now() >= deadline {
            break scrape;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Let it finish: it removes what it created.
    let finish = Instant::now() + DEADLINE;
    while bench.child.try_wait().unwrap().is_none() && Instant::now() < finish {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = bench.log();
    drop(bench);
    common::clear_redis_prefix(&prefix).await;
    // The bench drops its tables; the database is this test's.
    common::mysql_conn()
        .await
        .query_drop(format!("DROP DATABASE IF EXISTS `{database}`"))
        .await
        .unwrap();
    let problems: Vec<String> = wanted.iter().filter_map(|n| scrape.problem(n)).collect();
    assert!(
        problems.is_empty(),
        "the dashboard queries benchmark series `cachesync bench` does not export:\n{}\n\nthe scrape had: {:#?}\n{log}",
        problems.join("\n"),
        scrape.names()
    );
}

// ---------------------------------------------------------------------------------------
// docker/mysql/my.cnf is a server `cachesync doctor` accepts
// ---------------------------------------------------------------------------------------

/// `key = value` pairs of the `[mysqld]` section, keys with `-` written as `_`.
fn mysqld_section(cnf: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut pairs = Vec::new();
    for line in cnf.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            section = name.trim_end_matches(']').to_owned();
            continue;
        }
        if section == "mysqld" {
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            pairs.push((k.trim().replace('-', "_"), v.trim().to_owned()));
        }
    }
    pairs
}

#[test]
fn doctor_accepts_the_docker_mysql_config() {
    let settings: Vec<(String, String)> = mysqld_section(&read(&docker_dir().join("mysql/my.cnf")))
        .into_iter()
        .filter(|(k, _)| !MYSQL_ONLY_KEYS.contains(&k.as_str()))
        .collect();
    for key in [
        "log_bin",
        "binlog_format",
        "binlog_row_image",
        "binlog_row_metadata",
        "server_id",
    ] {
        assert!(
            settings.iter().any(|(k, _)| k == key),
            "my.cnf does not set {key}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    // The my.cnf lines as the server's command-line options, which it reads the same way.
    let options = settings
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                format!("--{k}")
            } else {
                format!("--{k}={v}")
            }
        })
        .collect();
    let server = common::mariadb::PrivateMariaDb::start_with(dir.path(), false, options);

    // The stack's init, as the MySQL image runs it: demo schema, user, grants.
    let init = docker_dir().join("mysql/init");
    server.sql(&read(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.sql"),
    ));
    let password = dotenv()["CACHESYNC_MYSQL_PASSWORD"].clone();
    let user_script = read(&init.join("02-cachesync-user.sh"));
    let create_user = user_script
        .split_once("<<SQL\n")
        .and_then(|(_, rest)| rest.split_once("\nSQL"))
        .expect("02-cachesync-user.sh holds its SQL in a <<SQL heredoc")
        .0
        .replace("${CACHESYNC_MYSQL_PASSWORD}", &password);
    server.sql(&create_user);
    server.sql(&read(&init.join("03-cachesync-grants.sql")));

    // The stack's binlog daemon config, pointed at this server as compose points it at
    // the mysql service: only the URLs differ.
    let stack = Stack::load();
    let (_, service, path) = stack
        .cachesync_services()
        .into_iter()
        .find(|(n, _, _)| *n == "cachesync-binlog")
        .expect("a cachesync-binlog service");
    let file = host_path(service, &path).unwrap();
    let mut doctor = cachesync(&["doctor", "--config", file.to_str().unwrap()]);
    doctor
        .env(
            "CACHESYNC__MYSQL__URL",
            format!("mysql://cachesync:{password}@127.0.0.1:{}", server.port),
        )
        .env("CACHESYNC__REDIS__URL", common::redis_url())
        // As compose gives it: an API on 0.0.0.0 without a token does not validate.
        .env(
            "CACHESYNC__API__TOKEN",
            dotenv()["CACHESYNC_API_TOKEN"].clone(),
        );
    let out = doctor.stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let show = format!(
        "settings from docker/mysql/my.cnf: {settings:?}\n--- stdout ---\n{stdout}--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Doctor reads the position as the snapshot does (MariaDB has no `SHOW BINARY LOG
    // STATUS`, so this is the `SHOW MASTER STATUS` fallback), as the `cachesync` user.
    let master_status = server.sql("SHOW MASTER STATUS");
    let position = master_status
        .lines()
        .nth(1)
        .and_then(|row| {
            let mut cols = row.split('\t');
            Some(format!("{}:{}", cols.next()?, cols.next()?))
        })
        .unwrap_or_else(|| panic!("SHOW MASTER STATUS gave no row: {master_status:?}"));
    drop(server);
    assert!(out.status.success(), "doctor failed\n{show}");
    assert!(!stdout.contains("FAIL"), "{show}");
    let ok = |needle: &str| {
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("ok ") && l.contains(needle))
    };
    for needle in [
        "log_bin=ON",
        "binlog_format=ROW",
        "binlog_row_image=FULL",
        "binlog_row_metadata=FULL",
        "server_id=1",
        "cachesync@% may read the binlog",
        &format!("binlog position readable: {position}"),
        "tables: shop.users, shop.orders",
        "the MySQL user may SELECT, INSERT, UPDATE, DELETE the tables",
    ] {
        assert!(ok(needle), "no ok line with {needle:?}\n{show}");
    }
}
