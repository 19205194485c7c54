//! cachesync keeps a Redis cache in sync with MySQL/MariaDB by one of three strategies
//! (dual-write, RabbitMQ, binlog replay) and measures which one to use.
//!
//! # Layout
//!
//! A row travels `MySQL → decode → row → applier → Redis`; a strategy decides how the
//! application writes and where committed changes come from.
//!
//! - [`config`] — the TOML config plus `CACHESYNC__…` overrides; pure validation that
//!   reports every problem with its key.
//! - [`schema`] — what the configured tables look like in MySQL (`information_schema`),
//!   and the per-table plan ([`schema::SyncedTable`]) that renders keys and values.
//! - [`decode`] — pure: SQL values and binlog row images → canonical [`row::Cell`]s.
//! - [`row`] — the canonical row model and its `json`/`hash` Redis encodings (the contract
//!   every strategy shares).
//! - [`keys`] — Redis key templates such as `user:{id}`.
//! - [`scan`] — reading a whole table in batches of decoded rows, with progress (snapshot,
//!   verify).
//! - [`applier`] — the one writer of rows into Redis: pipelined batches, a per-key version
//!   guard in Lua, tombstones for deletes, TTL with jitter, the shared metrics.
//! - [`sqlwrite`] — the application's row write in MySQL (parameterised upsert/delete,
//!   committed row read back), shared by the strategies' write paths.
//! - [`strategy`] — the [`strategy::SyncStrategy`] trait and one module per strategy.
//! - [`api`] — the sidecar HTTP write API (axum): upsert/delete a row by primary key
//!   through the strategy's write path, `/healthz`, `/readyz`.
//! - [`read`] — the cache-aside read path behind `GET` in the API: L1 → Redis → MySQL,
//!   fills that never overwrite a newer synced value (a lease the applier voids),
//!   negative caching, a shared Bloom filter, single-flight and a Redis refill mutex,
//!   early refresh; the read-storm scenario that measures the guards ([`read::storm`]).
//! - [`daemon`] — `cachesync run`: connect and check everything, run the strategy, drain on
//!   SIGINT/SIGTERM.
//! - [`doctor`] — `cachesync doctor`: binlog settings, grants, reachability, with fixes.
//! - [`bench`] — `cachesync bench`: every strategy on one seeded workload, observed
//!   from outside (propagation, stale reads, divergence, faults), one comparison table.
//! - [`verify`] — `cachesync verify`: compare Redis with MySQL key by key (missing, extra,
//!   different), and repair without regressing a newer version.
//! - [`metrics`] — metric names (the dashboard contract) and the Prometheus exporter.
//! - [`mysql`] — MySQL connections with the session settings the encoding relies on.
//! - [`redact`], [`error`] — passwords out of messages; the one error type.

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
pub mod strategy;

pub use error::{Error, Result};
