//! The benchmark's results: what was measured per variant, the same table for the
//! terminal and Markdown, and JSON.
//!
//! Every figure is computed from the raw samples kept in [`Samples`] (exact
//! nearest-rank quantiles, no histogram buckets), and the samples stay attached to the
//! report so tests can check each figure against them.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};

/// Where a bench's report goes besides stdout: `--out` (the Markdown table) and `--json`
/// (every figure).
#[derive(Debug, Clone, Default)]
pub struct ReportFiles {
    pub markdown: Option<PathBuf>,
    pub json: Option<PathBuf>,
}

impl ReportFiles {
    /// Prints `markdown` on stdout and writes both texts to the files asked for.
    pub fn print_and_write(&self, markdown: &str, json: &str) -> Result<()> {
        println!("{markdown}");
        for (path, text) in [(&self.markdown, markdown), (&self.json, json)] {
            if let Some(path) = path {
                std::fs::write(path, text).map_err(|source| Error::Io {
                    context: format!("writing {}", path.display()),
                    source,
                })?;
            }
        }
        Ok(())
    }
}

/// Nearest-rank quantiles of a sample, in ms.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Quantiles {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Quantiles {
    /// From µs samples (sorted in place).
    pub fn of_micros(samples: &mut [u64]) -> Quantiles {
        samples.sort_unstable();
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1] as f64 / 1e3
        };
        Quantiles {
            count: samples.len(),
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        }
    }
}

/// The raw samples behind a variant's figures, in µs.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// Per acknowledged write: the write call's duration.
    pub write_us: Vec<u64>,
    /// Per propagated change: commit → first seen in Redis.
    pub propagation_us: Vec<u64>,
    /// Per stale read: how long a newer version had been committed.
    pub staleness_us: Vec<u64>,
}

/// Keys that differ between MySQL and Redis after the drain.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Divergent {
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    pub total: u64,
    pub examples: Vec<String>,
}

/// What a fault did to a variant.
#[derive(Debug, Clone, Serialize)]
pub struct FaultOutcome {
    pub kind: String,
    /// False when the fault has nothing to act on (broker-drop without a broker).
    pub applies: bool,
    pub at_s: f64,
    pub duration_s: f64,
    /// When the fault ended, µs since the Unix epoch (what recovery counts from).
    #[serde(skip)]
    pub end_us: u64,
    /// From the end of the fault until every change acknowledged before it was seen in
    /// Redis; `None` when some never were.
    pub recovery_s: Option<f64>,
    /// Write calls cut by the crash (outcome unknown to the application).
    pub interrupted_writes: u64,
    /// Writes refused while the daemon was down.
    pub rejected_writes: u64,
}

/// One variant's run.
#[derive(Debug, Clone, Serialize)]
pub struct VariantReport {
    pub strategy: String,
    pub coupling: &'static str,
    pub application_must: &'static str,
    /// Whether the variant orders a row's changes (binlog, versioned, outbox): these must
    /// end with zero divergent keys.
    pub ordered: bool,
    /// Acknowledged writes.
    pub writes: u64,
    pub write_errors: u64,
    pub first_error: Option<String>,
    pub elapsed_s: f64,
    pub writes_per_s: f64,
    pub write_latency_ms: Quantiles,
    /// Where propagation and `unpropagated` are measured to: `Redis` (the change reached
    /// the cache), or `MySQL` for write-back, whose writes land in the cache first.
    pub propagation_to: &'static str,
    pub propagation_ms: Quantiles,
    /// Acknowledged changes never seen where propagation goes (Redis; MySQL for
    /// write-back) by the end of the drain: lost.
    pub unpropagated: u64,
    /// Acknowledged writes whose version MySQL does not hold after the drain (counted
    /// from the last 64 acknowledged versions of each row): what the database never got.
    pub lost_in_mysql: u64,
    /// Redis seen going back to an older version of a row.
    pub out_of_order: u64,
    /// Changes the applier wrote again at the version Redis held (applied twice; harmless
    /// bytes-wise, but work done twice). `None` for unversioned variants, whose writes
    /// carry nothing to tell a repeat by.
    pub applied_twice: Option<u64>,
    /// Changes the version guard dropped because Redis already held a newer version: the
    /// races and reorderings that were stopped. `None` for unversioned variants.
    pub guard_drops: Option<u64>,
    pub reads: u64,
    /// Reads that found no key (invalidate mode, or a cache emptied by a fault).
    pub read_misses: u64,
    pub stale_reads: u64,
    pub stale_fraction: f64,
    pub staleness_ms: Quantiles,
    /// Time from the writers' stop until every acknowledged change was seen (or the
    /// drain limit).
    pub drain_s: f64,
    pub drained: bool,
    pub divergent: Divergent,
    pub fault: Option<FaultOutcome>,
    /// Keyspace notifications the observer received, its `MGET`s and their mean time
    /// (the resolution of the propagation figures).
    pub observer_notifications: u64,
    pub observer_reads: u64,
    pub observer_read_mean_us: f64,
    #[serde(skip)]
    pub samples: Samples,
}

/// The workload every variant ran.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub duration_s: f64,
    pub writers: usize,
    /// Target writes/s over all writers; `None`: as fast as possible.
    pub rate: Option<f64>,
    pub keys: u64,
    pub skew: String,
    /// Share of writes that go to the hottest key.
    pub hottest_key_share: f64,
    pub readers: usize,
    pub read_rate: Option<f64>,
    pub seed: u64,
    pub fault: String,
    pub fault_at_s: Option<f64>,
    pub fault_duration_s: f64,
    pub drain_timeout_s: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub cachesync_version: &'static str,
    pub started_unix_s: u64,
    pub cores: usize,
    pub load_average_before: String,
    pub load_average_after: String,
    pub workload: Workload,
    pub results: Vec<VariantReport>,
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn percent(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

impl BenchReport {
    /// The comparison as Markdown (also what the terminal shows).
    pub fn markdown(&self) -> String {
        let w = &self.workload;
        let mut out = String::new();
        let rate = w.rate.map_or("max".to_owned(), |r| format!("{r:.0}/s"));
        let _ = writeln!(
            out,
            "### cachesync bench: {} s, {} writers at {rate}, {} keys ({}, hottest key {:.1}% of writes), {} readers, fault {}",
            w.duration_s,
            w.writers,
            w.keys,
            w.skew,
            w.hottest_key_share * 100.0,
            w.readers,
            w.fault
        );
        let _ = writeln!(
            out,
            "\n{} cores, load average {} before, {} after; seed {}.\n",
            self.cores, self.load_average_before, self.load_average_after, w.seed
        );
        let _ = writeln!(
            out,
            "| strategy | coupling | the application must | writes/s | write p50 / p99 / p99.9 ms | propagation p50 / p99 / max ms | stale reads | staleness p99 / max ms | divergent after drain | lost | out of order | applied twice | guard drops |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &self.results {
            let errors = if r.write_errors > 0 {
                format!(" ({} errors)", r.write_errors)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0}{errors} | {} / {} / {} | {} / {} / {} | {} of {} | {} / {} | {} | {} | {} | {} | {} |",
                r.strategy,
                r.coupling,
                r.application_must,
                r.writes_per_s,
                ms(r.write_latency_ms.p50),
                ms(r.write_latency_ms.p99),
                ms(r.write_latency_ms.p999),
                ms(r.propagation_ms.p50),
                ms(r.propagation_ms.p99),
                ms(r.propagation_ms.max),
                percent(r.stale_fraction),
                r.reads,
                ms(r.staleness_ms.p99),
                ms(r.staleness_ms.max),
                r.divergent.total,
                r.unpropagated,
                r.out_of_order,
                r.applied_twice.map_or("n/a".to_owned(), |n| n.to_string()),
                r.guard_drops.map_or("n/a".to_owned(), |n| n.to_string()),
            );
        }
        if self.results.iter().any(|r| r.fault.is_some()) {
            let _ = writeln!(
                out,
                "\n| strategy | fault | at s | for s | writes cut / refused | lost | lost in MySQL | recovery s |"
            );
            let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
            for r in &self.results {
                let Some(f) = &r.fault else { continue };
                if !f.applies {
                    let _ = writeln!(
                        out,
                        "| {} | {} | — | — | — | — | — | not applicable |",
                        r.strategy, f.kind
                    );
                    continue;
                }
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} | {:.1} | {} / {} | {} | {} | {} |",
                    r.strategy,
                    f.kind,
                    f.at_s,
                    f.duration_s,
                    f.interrupted_writes,
                    f.rejected_writes,
                    r.unpropagated,
                    r.lost_in_mysql,
                    f.recovery_s
                        .map_or("not recovered".to_owned(), |s| format!("{s:.2}")),
                );
            }
        }
        let _ = writeln!(
            out,
            "\nwrites/s: acknowledged writes over the measured time; write latency: the \
             application's write call. Propagation: MySQL commit → first moment an outside \
             observer saw Redis hold that version or a newer one (keyspace notification + \
             MGET, mean {} µs per read, the same for every strategy). Stale reads: reads \
             older than the newest version acknowledged when the read began; staleness: \
             since when a newer version had been committed. Divergent: keys differing from \
             MySQL after the drain (`verify`). Lost: acknowledged changes Redis never \
             showed. Out of order: Redis seen going back to an older version. Applied \
             twice / guard drops: changes the applier's version guard saw at the version \
             Redis held / older than it (n/a: an unversioned write carries nothing to \
             compare).",
            self.results
                .iter()
                .map(|r| r.observer_read_mean_us)
                .fold(0.0, f64::max)
                .round()
        );
        if self.results.iter().any(|r| r.propagation_to == "MySQL") {
            let _ = writeln!(
                out,
                "\nwrite-back writes the cache and MySQL trails it: its propagation is cache → \
                 MySQL commit (an observer reading the rows every 5 ms), and its lost changes \
                 are acknowledged writes MySQL never received."
            );
        }
        for r in &self.results {
            if let Some(e) = &r.first_error {
                let _ = writeln!(out, "\n{}: first write error: {e}", r.strategy);
            }
            if !r.divergent.examples.is_empty() {
                let _ = writeln!(
                    out,
                    "\n{}: divergent keys, e.g. {}",
                    r.strategy,
                    r.divergent.examples.join(", ")
                );
            }
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut s: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        s.reverse();
        let q = Quantiles::of_micros(&mut s);
        assert_eq!(q.count, 1000);
        assert_eq!((q.p50, q.p99, q.p999, q.max), (500.0, 990.0, 999.0, 1000.0));
        assert_eq!(Quantiles::of_micros(&mut []), Quantiles::default());
    }
}
