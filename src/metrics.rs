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
/// Counter, labels `strategy`, `table`: row changes read from MySQL (the binlog or a
/// snapshot's scan) that could not be decoded — their keys removed, each recorded in the
/// dead-letter list (`binlog.dead_letter_key`) and logged at warn. Not zero means a row in
/// MySQL needs fixing.
pub const UNDECODABLE_ROWS: &str = "cachesync_undecodable_rows_total";
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
/// Counter, labels `strategy`, `table`: (binlog) child row changes cachesync derived from
/// a parent's change because MySQL's foreign-key cascade is not in the binlog.
pub const CASCADED_CHANGES: &str = "cachesync_cascaded_changes_total";

// Continuous verification (`[verify]`, running inside the daemon).
/// Counter, labels `strategy`, `table`: keys compared with MySQL — rows read from MySQL,
/// plus Redis keys looked up in MySQL for a row.
pub const VERIFY_CHECKED: &str = "cachesync_verify_checked_total";
/// Counter, labels `strategy`, `table`: keys found differing from MySQL (missing, extra
/// or different) and still differing when checked again after the grace period.
pub const VERIFY_DIVERGENT: &str = "cachesync_verify_divergent_found_total";
/// Counter, labels `strategy`, `table`: divergent keys rewritten (or deleted) from MySQL
/// and equal to it afterwards.
pub const VERIFY_REPAIRED: &str = "cachesync_verify_repaired_total";
/// Counter, labels `strategy`, `table`: completed passes over the table.
pub const VERIFY_PASSES: &str = "cachesync_verify_passes_total";

/// Counter, label `strategy`: times Redis was found to have lost this deployment's
/// data (checkpoint or marker gone, or back on an older copy); each starts an online
/// rebuild.
pub const REDIS_DATA_LOSS: &str = "cachesync_redis_data_loss_total";
/// Gauge, labels `strategy`, `table`: rows the running online snapshot of the table will
/// copy (estimated from `information_schema`; exact once it is done).
pub const SNAPSHOT_ROWS_TOTAL: &str = "cachesync_snapshot_rows_total";
/// Gauge, labels `strategy`, `table`: rows the running (or last) online snapshot of the
/// table has copied.
pub const SNAPSHOT_ROWS_DONE: &str = "cachesync_snapshot_rows_done";
/// Gauge, labels `strategy`, `table`: 1 while an online snapshot of the table runs in
/// this process — the table may be incomplete in Redis until it is 0.
pub const SNAPSHOT_RUNNING: &str = "cachesync_snapshot_running";

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
    describe_counter!(
        REDIS_DATA_LOSS,
        "Times Redis lost this deployment's data; each starts an online rebuild"
    );
    describe_gauge!(
        SNAPSHOT_ROWS_TOTAL,
        "Rows the online snapshot of a table will copy (estimate until done)"
    );
    describe_gauge!(
        SNAPSHOT_ROWS_DONE,
        "Rows the online snapshot of a table has copied"
    );
    describe_gauge!(
        SNAPSHOT_RUNNING,
        "1 while an online snapshot of the table runs (the table may be incomplete)"
    );
    describe_counter!(
        UNDECODABLE_ROWS,
        "Row changes that could not be decoded: key removed, dead-lettered"
    );
    describe_counter!(
        CASCADED_CHANGES,
        "Child row changes derived from a parent's change (foreign-key cascades the binlog does not log)"
    );
    describe_counter!(
        VERIFY_CHECKED,
        "Keys continuous verification compared with MySQL"
    );
    describe_counter!(
        VERIFY_DIVERGENT,
        "Keys continuous verification found differing from MySQL"
    );
    describe_counter!(
        VERIFY_REPAIRED,
        "Divergent keys continuous verification repaired"
    );
    describe_counter!(
        VERIFY_PASSES,
        "Passes of continuous verification over a table"
    );
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
        let _ =
            metrics::histogram!(WRITE_DURATION, "strategy" => strategy, "table" => table.clone());
        metrics::gauge!(SNAPSHOT_RUNNING, "strategy" => strategy, "table" => table).increment(0.0);
    }
    metrics::counter!(STALE_CHANGES_SKIPPED, "strategy" => strategy).increment(0);
    metrics::counter!(REDIS_DATA_LOSS, "strategy" => strategy).increment(0);
    metrics::counter!(REPLAYED_CHANGES, "strategy" => strategy).increment(0);
    // Continuous verification's series exist whether or not `[verify]` is on, so a
    // dashboard shows "0 checked" rather than "no data" when it is off.
    for table in tables {
        for name in [
            VERIFY_CHECKED,
            VERIFY_DIVERGENT,
            VERIFY_REPAIRED,
            VERIFY_PASSES,
        ] {
            metrics::counter!(name, "strategy" => strategy, "table" => table.clone()).increment(0);
        }
    }
}
