//! Metric names, their descriptions, and the Prometheus exporter.
//!
//! Every strategy reports the same names, labelled `strategy` (and `table` where a row
//! change is involved), so one dashboard compares them. Names follow
//! `cachesync_<name>_<unit>[_total]`; label values are bounded (three strategies, the
//! configured tables). Histograms use the explicit [`LATENCY_BUCKETS`] so Prometheus can
//! aggregate quantiles across instances (summaries cannot be).

use std::net::SocketAddr;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::{Error, Result};

/// Histogram, seconds, labels `strategy`, `table`: the write as the application sees it
/// (dual-write: MySQL commit + Redis; mq: commit + confirmed publish; binlog: commit).
pub const WRITE_DURATION: &str = "cachesync_write_duration_seconds";
/// Histogram, seconds, labels `strategy`, `table`: from the MySQL commit to Redis
/// acknowledging the write of that change.
pub const PROPAGATION: &str = "cachesync_propagation_seconds";
/// Gauge, seconds, label `strategy`: how far the newest applied change trails MySQL.
pub const LAG: &str = "cachesync_lag_seconds";
/// Counter, labels `strategy`, `table`: row changes written to Redis.
pub const EVENTS_APPLIED: &str = "cachesync_events_applied_total";
/// Counter, labels `strategy`, `table`: row changes that failed to reach Redis.
pub const APPLY_ERRORS: &str = "cachesync_apply_errors_total";
/// Counter, label `strategy`: changes Redis already had a newer version of (dropped by
/// the version guard: redeliveries, races between writers).
pub const STALE_CHANGES_SKIPPED: &str = "cachesync_stale_changes_skipped_total";
/// Counter, label `strategy`: changes written again at the version Redis already held —
/// redeliveries, or a replay after a crash. Harmless; zero after a clean restart of a
/// checkpointed strategy.
pub const REPLAYED_CHANGES: &str = "cachesync_replayed_changes_total";
/// Counter, label `strategy`: change events that can never be applied, moved to a
/// dead-letter place (mq: malformed, unknown table; write-back: changes MySQL refused).
pub const DEAD_LETTERED: &str = "cachesync_dead_lettered_total";
/// Gauge, label `strategy`: (dual-write) keys whose Redis write failed after the commit
/// and wait in the repair queue — stale in Redis until repaired.
pub const REPAIRS_PENDING: &str = "cachesync_repairs_pending";
/// Gauge, label `strategy` (write-back): changes in the queue not yet committed to MySQL.
pub const WRITE_BACK_QUEUE_DEPTH: &str = "cachesync_write_back_queue_depth";
/// Gauge, seconds, label `strategy` (write-back): how long the oldest change not yet
/// committed to MySQL has waited (0 when the queue is empty).
pub const WRITE_BACK_FLUSH_LAG: &str = "cachesync_write_back_flush_lag_seconds";
/// Counter, label `strategy` (write-back): queued changes that needed no statement of
/// their own because a later change of the same row in the batch replaced them.
pub const WRITE_BACK_COALESCED: &str = "cachesync_write_back_coalesced_total";
/// Counter, label `strategy` (write-back): flush attempts that failed and were retried
/// (lost connection, deadlock); refused changes are counted as dead-lettered instead.
pub const WRITE_BACK_FLUSH_ERRORS: &str = "cachesync_write_back_flush_errors_total";
/// Gauge, labels `strategy`, `table`: keys whose Redis value differs from MySQL, as last
/// counted by `verify` or the benchmark.
pub const DIVERGENT_KEYS: &str = "cachesync_divergent_keys";

// The cache-aside read path (`GET` through the API, `crate::read`).
/// Counter, labels `table`, `level` (`l1`, `redis`, `negative`): reads answered at that
/// level (`negative`: a remembered "no such row").
pub const READ_HITS: &str = "cachesync_read_hits_total";
/// Counter, labels `table`, `level` (`l1`, `redis`): reads that level could not answer.
pub const READ_MISSES: &str = "cachesync_read_misses_total";
/// Counter, label `table`: MySQL reads caused by cache misses (and early refreshes).
pub const READ_DB_QUERIES: &str = "cachesync_read_db_queries_total";
/// Counter, label `table`: reads that shared another request's MySQL read in this process
/// (single-flight followers).
pub const READ_COALESCED: &str = "cachesync_read_coalesced_total";
/// Counter, label `table`: reads answered "no such row" by the Bloom filter, without MySQL.
pub const READ_BLOOM_REJECTIONS: &str = "cachesync_read_bloom_rejections_total";
/// Counter, label `table`: reads that found another instance refilling the key and
/// waited for it (the Redis mutex).
pub const READ_LOCK_WAITS: &str = "cachesync_read_lock_waits_total";
/// Counter, labels `table`, `outcome` (`written`, `lost`): fills of Redis after a MySQL
/// read; `lost` means a synced change (or another reader) came first and won.
pub const READ_FILLS: &str = "cachesync_read_fills_total";
/// Counter, label `table`: background refreshes of keys about to expire.
pub const READ_REFRESHES: &str = "cachesync_read_refreshes_total";
/// Histogram, seconds, label `table`: a read as the API caller sees it.
pub const READ_DURATION: &str = "cachesync_read_duration_seconds";

/// Upper bounds of latency histogram buckets, in seconds: 100 µs to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Installs the global recorder and serves `/metrics` on `listen`. Must run inside the
/// Tokio runtime.
pub fn install(listen: SocketAddr) -> Result<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
        .map_err(|e| metrics_error(listen, e))?;
    let (recorder, exporter) = builder.build().map_err(|e| metrics_error(listen, e))?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| Error::Io {
        context: "installing the metrics recorder".to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    tokio::spawn(exporter);
    describe();
    Ok(handle)
}

fn metrics_error(listen: SocketAddr, e: impl std::fmt::Display) -> Error {
    Error::Io {
        context: format!("metrics.listen: cannot serve /metrics on {listen}"),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Describes every metric (HELP/TYPE lines in the scrape).
pub fn describe() {
    describe_histogram!(
        WRITE_DURATION,
        Unit::Seconds,
        "Application-perceived write latency"
    );
    describe_histogram!(
        PROPAGATION,
        Unit::Seconds,
        "MySQL commit to Redis acknowledged, per change"
    );
    describe_gauge!(
        LAG,
        Unit::Seconds,
        "How far the newest applied change trails MySQL"
    );
    describe_counter!(EVENTS_APPLIED, "Row changes written to Redis");
    describe_counter!(APPLY_ERRORS, "Row changes that failed to reach Redis");
    describe_counter!(
        STALE_CHANGES_SKIPPED,
        "Changes dropped because Redis held a newer version"
    );
    describe_gauge!(
        WRITE_BACK_QUEUE_DEPTH,
        "Write-back changes queued and not yet committed to MySQL"
    );
    describe_gauge!(
        WRITE_BACK_FLUSH_LAG,
        Unit::Seconds,
        "Age of the oldest write-back change not yet committed to MySQL"
    );
    describe_counter!(
        WRITE_BACK_COALESCED,
        "Write-back changes replaced by a later change of the same row in a batch"
    );
    describe_counter!(
        WRITE_BACK_FLUSH_ERRORS,
        "Write-back flush attempts that failed and were retried"
    );
    describe_gauge!(DIVERGENT_KEYS, "Keys whose Redis value differs from MySQL");
    // The cache-aside read path.
    describe_counter!(
        READ_HITS,
        "Reads answered at a cache level (l1, redis, negative)"
    );
    describe_counter!(
        READ_MISSES,
        "Reads a cache level (l1, redis) could not answer"
    );
    describe_counter!(READ_DB_QUERIES, "MySQL reads caused by cache misses");
    describe_counter!(
        READ_COALESCED,
        "Reads that shared another request's MySQL read (single-flight)"
    );
    describe_counter!(
        READ_BLOOM_REJECTIONS,
        "Reads answered absent by the Bloom filter without MySQL"
    );
    describe_counter!(
        READ_LOCK_WAITS,
        "Reads that waited for another instance's refill"
    );
    describe_counter!(READ_FILLS, "Cache fills after a MySQL read, by outcome");
    describe_counter!(
        READ_REFRESHES,
        "Background refreshes of keys about to expire"
    );
    describe_histogram!(
        READ_DURATION,
        Unit::Seconds,
        "Read latency as the API caller sees it"
    );
}

/// Creates the series every strategy reports so they appear in the first scrape, before
/// any change happened (dashboards and alerts then see zeros instead of no data). A
/// strategy's own series are added by [`crate::strategy::StrategyKind::register_series`].
pub fn register_series(strategy: &'static str, tables: &[String]) {
    for table in tables {
        let table = table.clone();
        metrics::counter!(EVENTS_APPLIED, "strategy" => strategy, "table" => table.clone())
            .increment(0);
        metrics::counter!(APPLY_ERRORS, "strategy" => strategy, "table" => table.clone())
            .increment(0);
        let _ = metrics::histogram!(PROPAGATION, "strategy" => strategy, "table" => table.clone());
        let _ = metrics::histogram!(WRITE_DURATION, "strategy" => strategy, "table" => table);
    }
    metrics::counter!(STALE_CHANGES_SKIPPED, "strategy" => strategy).increment(0);
    metrics::counter!(REPLAYED_CHANGES, "strategy" => strategy).increment(0);
}
