//! cachesync keeps a Redis cache in sync with MySQL/MariaDB by one of three strategies
//! (dual-write, RabbitMQ, binlog replay) and measures which one to use.
//!
//! # Layout
//!
//! A row travels `MySQL → model (decode) → redis (applier) → Redis`; a strategy decides how
//! the application writes and where committed changes come from. Each folder is one
//! concept and imports only the folders listed below it (`tests/layout.rs` keeps it so):
//!
//! - `src/main.rs` — parses arguments, sets up logging, calls [`cmd`] or [`bench`].
//! - [`bench`] — `cachesync bench`: every strategy on one seeded workload, observed from
//!   outside (propagation, stale reads, divergence, faults); the read-storm scenario; the
//!   overhead scenario (the database's writers with and without a binlog reader).
//! - [`cmd`] — the commands: `run` (and [`cmd::run::Daemon`], the started strategy the
//!   benchmark reuses, with continuous verification next to it), `snapshot`, `doctor`,
//!   `verify`.
//! - [`config`] — the TOML config plus `CACHESYNC__…` overrides, assembled from the
//!   sections each component declares next to its code; pure validation that reports
//!   every problem with its key.
//! - [`api`] — the sidecar HTTP API (axum on its own accept loop with timeouts and a
//!   connection limit): row writes through the strategy, reads through [`read`],
//!   `/healthz`, `/readyz`, `/openapi.json` (generated from the handlers); its `[api]`
//!   section. [`api::grpc`]: the same writes and reads over gRPC (tonic, `proto/`), a
//!   `Write` stream, health and reflection; its `[grpc]` section.
//! - [`strategy`] — the [`strategy::SyncStrategy`] trait, [`strategy::StrategyKind`] with
//!   the capabilities everything else asks about, and one folder per strategy with its
//!   own config section (the binlog's emulates the foreign-key cascades it never sees).
//! - [`snapshot`] — online snapshots: a table copied in primary-key chunks while the
//!   strategy runs, guarded so no chunk row overwrites a newer change, resumable; and
//!   noticing that Redis lost its data (the deployment marker) to rebuild it.
//! - [`read`] — the cache-aside read path behind `GET`: L1 → Redis → MySQL, fills under a
//!   lease the applier voids, negative caching, single-flight, a Redis refill mutex,
//!   early refresh.
//! - [`redis`] — the one Redis connection type, every key layout ([`redis::keyspace`]),
//!   the version-guarded applier and its Lua script, the Bloom filter, stored rows read
//!   back.
//! - [`mysql`] — connections with the session settings the encoding relies on, what the
//!   configured tables look like and their foreign keys (`information_schema`, re-planned
//!   after a DDL) and what the user may do to them, the application's row write, table
//!   scans and look-ups.
//! - [`model`] — pure, no I/O: canonical cells and their `json`/`hash` encodings (the
//!   contract every strategy shares), decoding from SQL, binlog and JSON (numbers kept
//!   exact, spatial values as Extended WKT), injective key templates, a table's plan and
//!   SQL, foreign keys, row changes and dead letters.
//! - [`metrics`] — metric names (the dashboard contract) and the Prometheus exporter.
//! - [`error`], [`redact`] — the one error type and the one retry policy; passwords out of
//!   messages.

pub mod api;
pub mod bench;
pub mod cmd;
pub mod config;
pub mod error;
pub mod metrics;
pub mod model;
pub mod mysql;
pub mod read;
pub mod redact;
pub mod redis;
pub mod snapshot;
pub mod strategy;

pub use error::{Error, Result};
