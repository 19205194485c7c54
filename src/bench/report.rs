//! The benchmark's results: what was measured per variant, the same table for the
//! terminal and Markdown, and JSON.
//!
//! Every figure is computed from the raw samples kept in [`Samples`] (exact
//! nearest-rank quantiles, no histogram buckets), and the samples stay attached to the
//! report so tests can check each figure against them. A variant run in several rounds
//! is reported by [`VariantReport::of_rounds`]: each figure's median over the rounds and
//! its range.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use super::cost::CpuPerChange;
use crate::error::{Error, Result};

/// Where a bench's report goes besides stdout: `--out` (the Markdown table) and `--json`
/// (every figure).
#[derive(Debug, Clone, Default)]
pub struct ReportFiles {
    pub markdown: Option<PathBuf>,
    pub json: Option<PathBuf>,
    /// `--plot`: the SVG of the latency CDFs and writes/s over time (strategies scenario
    /// only; see [`super::plot`]).
    pub plot: Option<PathBuf>,
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
    /// CPU µs per acknowledged write of each process over the measured window (writers'
    /// start to the drain's end); `None`: not measured (a remote or unfound process).
    pub cpu_us_per_change: CpuPerChange,
    /// Rounds this report sums up; its figures are medians over them.
    pub rounds: usize,
    /// Per figure in [`FIGURES`] (by its name there): the lowest and highest value of a
    /// round.
    pub range: BTreeMap<&'static str, [f64; 2]>,
    /// Acknowledged writes in each second of the measured window (index 0: its first
    /// second), the median round's like `samples`: throughput over time.
    pub writes_each_second: Vec<u64>,
    /// Changes first seen propagated (in Redis; in MySQL for write-back) in each second
    /// counted from the same start; runs on into the drain.
    pub propagated_each_second: Vec<u64>,
    /// The median round's samples (by writes/s); one round's, so with several rounds
    /// they do not give the reported medians.
    #[serde(skip)]
    pub samples: Samples,
}

/// How many of `times_us` (µs since the Unix epoch) fall in each whole second from
/// `start_us`: index 0 counts `[start, start + 1 s)`. Times before the start count in
/// second 0 (a clock read a hair early); the series ends at the last second with one.
pub fn per_second(start_us: u64, times_us: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut counts = Vec::new();
    for t in times_us {
        let second = (t.saturating_sub(start_us) / 1_000_000) as usize;
        if counts.len() <= second {
            counts.resize(second + 1, 0);
        }
        counts[second] += 1;
    }
    counts
}

/// A figure that differs from round to round by chance: reported as the median round's
/// value and its range.
struct Figure {
    /// Its name in [`VariantReport::range`].
    name: &'static str,
    get: fn(&VariantReport) -> Option<f64>,
    set: fn(&mut VariantReport, f64),
}

/// Every figure taken as a median over rounds. Counts of what must not happen (errors,
/// losses, divergence, disorder, guard drops) are not here: they are the worst round's,
/// so one bad round always shows.
const FIGURES: &[Figure] = &[
    Figure {
        name: "writes_per_s",
        get: |r| Some(r.writes_per_s),
        set: |r, v| r.writes_per_s = v,
    },
    Figure {
        name: "writes",
        get: |r| Some(r.writes as f64),
        set: |r, v| r.writes = v.round() as u64,
    },
    Figure {
        name: "elapsed_s",
        get: |r| Some(r.elapsed_s),
        set: |r, v| r.elapsed_s = v,
    },
    Figure {
        name: "write_latency_ms.p50",
        get: |r| Some(r.write_latency_ms.p50),
        set: |r, v| r.write_latency_ms.p50 = v,
    },
    Figure {
        name: "write_latency_ms.p99",
        get: |r| Some(r.write_latency_ms.p99),
        set: |r, v| r.write_latency_ms.p99 = v,
    },
    Figure {
        name: "write_latency_ms.p999",
        get: |r| Some(r.write_latency_ms.p999),
        set: |r, v| r.write_latency_ms.p999 = v,
    },
    Figure {
        name: "write_latency_ms.max",
        get: |r| Some(r.write_latency_ms.max),
        set: |r, v| r.write_latency_ms.max = v,
    },
    Figure {
        name: "propagation_ms.p50",
        get: |r| Some(r.propagation_ms.p50),
        set: |r, v| r.propagation_ms.p50 = v,
    },
    Figure {
        name: "propagation_ms.p99",
        get: |r| Some(r.propagation_ms.p99),
        set: |r, v| r.propagation_ms.p99 = v,
    },
    Figure {
        name: "propagation_ms.p999",
        get: |r| Some(r.propagation_ms.p999),
        set: |r, v| r.propagation_ms.p999 = v,
    },
    Figure {
        name: "propagation_ms.max",
        get: |r| Some(r.propagation_ms.max),
        set: |r, v| r.propagation_ms.max = v,
    },
    Figure {
        name: "reads",
        get: |r| Some(r.reads as f64),
        set: |r, v| r.reads = v.round() as u64,
    },
    Figure {
        name: "stale_reads",
        get: |r| Some(r.stale_reads as f64),
        set: |r, v| r.stale_reads = v.round() as u64,
    },
    Figure {
        name: "stale_fraction",
        get: |r| Some(r.stale_fraction),
        set: |r, v| r.stale_fraction = v,
    },
    Figure {
        name: "staleness_ms.p99",
        get: |r| Some(r.staleness_ms.p99),
        set: |r, v| r.staleness_ms.p99 = v,
    },
    Figure {
        name: "staleness_ms.max",
        get: |r| Some(r.staleness_ms.max),
        set: |r, v| r.staleness_ms.max = v,
    },
    Figure {
        name: "drain_s",
        get: |r| Some(r.drain_s),
        set: |r, v| r.drain_s = v,
    },
    Figure {
        name: "observer_read_mean_us",
        get: |r| Some(r.observer_read_mean_us),
        set: |r, v| r.observer_read_mean_us = v,
    },
    Figure {
        name: "cpu_us_per_change.cachesync",
        get: |r| r.cpu_us_per_change.cachesync,
        set: |r, v| r.cpu_us_per_change.cachesync = Some(v),
    },
    Figure {
        name: "cpu_us_per_change.redis",
        get: |r| r.cpu_us_per_change.redis,
        set: |r, v| r.cpu_us_per_change.redis = Some(v),
    },
    Figure {
        name: "cpu_us_per_change.mysql",
        get: |r| r.cpu_us_per_change.mysql,
        set: |r, v| r.cpu_us_per_change.mysql = Some(v),
    },
    Figure {
        name: "cpu_us_per_change.rabbitmq",
        get: |r| r.cpu_us_per_change.rabbitmq,
        set: |r, v| r.cpu_us_per_change.rabbitmq = Some(v),
    },
];

/// The median of `values` (the mean of the middle two for an even count); `None` for
/// none.
pub(super) fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

impl VariantReport {
    /// One variant's rounds summed up: each figure of [`FIGURES`] is its median over the
    /// rounds, with its range; the counts of what must not happen are the worst round's;
    /// everything else (samples, the fault's details, examples) is the median round's
    /// (by writes/s). `rounds` must not be empty.
    pub fn of_rounds(mut rounds: Vec<VariantReport>) -> VariantReport {
        assert!(!rounds.is_empty(), "a variant ran at least one round");
        rounds.sort_by(|a, b| a.writes_per_s.total_cmp(&b.writes_per_s));
        let n = rounds.len();
        let worst = |count: fn(&VariantReport) -> u64| rounds.iter().map(count).max();
        let worst_option =
            |count: fn(&VariantReport) -> Option<u64>| rounds.iter().filter_map(count).max();
        let write_errors = worst(|r| r.write_errors).unwrap_or(0);
        let unpropagated = worst(|r| r.unpropagated).unwrap_or(0);
        let lost_in_mysql = worst(|r| r.lost_in_mysql).unwrap_or(0);
        let out_of_order = worst(|r| r.out_of_order).unwrap_or(0);
        let applied_twice = worst_option(|r| r.applied_twice);
        let guard_drops = worst_option(|r| r.guard_drops);
        let drained = rounds.iter().all(|r| r.drained);
        let first_error = rounds.iter().find_map(|r| r.first_error.clone());
        let divergent = rounds
            .iter()
            .map(|r| &r.divergent)
            .max_by_key(|d| d.total)
            .cloned()
            .unwrap_or_default();
        // A round that did not recover is the fault's outcome; else the slowest recovery.
        let recoveries: Vec<Option<f64>> = rounds
            .iter()
            .filter_map(|r| r.fault.as_ref().map(|f| f.recovery_s))
            .collect();
        let recovery_s = if recoveries.iter().any(Option::is_none) {
            None
        } else {
            recoveries.into_iter().flatten().reduce(f64::max)
        };
        let mut range = BTreeMap::new();
        let mut medians = Vec::new();
        for figure in FIGURES {
            let mut values: Vec<f64> = rounds.iter().filter_map(figure.get).collect();
            if let Some(m) = median(&mut values) {
                range.insert(figure.name, [values[0], values[values.len() - 1]]);
                medians.push((figure, m));
            }
        }
        let mut report = rounds.swap_remove(n / 2);
        for (figure, m) in medians {
            (figure.set)(&mut report, m);
        }
        report.rounds = n;
        report.range = range;
        report.write_errors = write_errors;
        report.unpropagated = unpropagated;
        report.lost_in_mysql = lost_in_mysql;
        report.out_of_order = out_of_order;
        report.applied_twice = applied_twice;
        report.guard_drops = guard_drops;
        report.drained = drained;
        report.first_error = first_error;
        report.divergent = divergent;
        if let Some(fault) = &mut report.fault {
            fault.recovery_s = recovery_s;
        }
        report
    }
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
    /// Rounds: every variant ran this many times, interleaved (A B C A B C …).
    pub rounds: usize,
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

pub(super) fn ms(v: f64) -> String {
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

/// CPU µs per change: whole µs from 10 on, else two significant decimals; `n/a` when
/// not measured.
/// A figure's range over the rounds, `lowest–highest` shown by `show`; `n/a` when no
/// round had it.
pub(super) fn range_text(
    range: &BTreeMap<&'static str, [f64; 2]>,
    name: &str,
    show: fn(f64) -> String,
) -> String {
    range.get(name).map_or("n/a".to_owned(), |[lo, hi]| {
        format!("{}–{}", show(*lo), show(*hi))
    })
}

/// A rate in whole units.
pub(super) fn whole(v: f64) -> String {
    format!("{v:.0}")
}

/// A measured CPU µs figure, as [`micros`] shows it.
pub(super) fn cpu(v: f64) -> String {
    micros(Some(v))
}

pub(super) fn micros(v: Option<f64>) -> String {
    match v {
        None => "n/a".to_owned(),
        Some(v) if v >= 10.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
    }
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
        let rounds = if w.rounds > 1 {
            format!(
                "{} interleaved rounds, each figure the median round's (counts of errors, \
                 losses and divergence: the worst round's); ",
                w.rounds
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "\n{rounds}{} cores, load average {} before, {} after; seed {}.\n",
            self.cores, self.load_average_before, self.load_average_after, w.seed
        );
        let _ = writeln!(
            out,
            "| strategy | coupling | the application must | writes/s | write p50 / p99 / p99.9 ms | propagation p50 / p99 / max ms | stale reads | staleness p99 / max ms | divergent after drain | lost | out of order | applied twice | guard drops | CPU µs/change cachesync / Redis / MySQL / RabbitMQ |"
        );
        let _ = writeln!(
            out,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in &self.results {
            let errors = if r.write_errors > 0 {
                format!(" ({} errors)", r.write_errors)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0}{errors} | {} / {} / {} | {} / {} / {} | {} of {} | {} / {} | {} | {} | {} | {} | {} | {} / {} / {} / {} |",
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
                micros(r.cpu_us_per_change.cachesync),
                micros(r.cpu_us_per_change.redis),
                micros(r.cpu_us_per_change.mysql),
                micros(r.cpu_us_per_change.rabbitmq),
            );
        }
        if w.rounds > 1 {
            self.ranges(&mut out);
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
             compare). CPU µs/change: each process's CPU time (/proc) from the writers' \
             start to the drain's end over the acknowledged writes; cachesync is the \
             daemon's threads (its background work, and the write calls of strategies \
             whose writes go through it), not the load generator; Redis, MySQL and \
             RabbitMQ also serve the bench's readers and observer and any other client \
             (n/a: not on this machine, or not found).",
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

    /// The range over the rounds of the figures that tell variants apart.
    fn ranges(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nRange over the rounds (lowest–highest round):\n\n\
             | strategy | writes/s | write p50 ms | write p99 ms | propagation p50 ms | propagation p99 ms | CPU µs/change cachesync | Redis | MySQL | RabbitMQ |\n\
             |---|---|---|---|---|---|---|---|---|---|"
        );
        for r in &self.results {
            let range = |name: &str, show: fn(f64) -> String| range_text(&r.range, name, show);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.strategy,
                range("writes_per_s", whole),
                range("write_latency_ms.p50", ms),
                range("write_latency_ms.p99", ms),
                range("propagation_ms.p50", ms),
                range("propagation_ms.p99", ms),
                range("cpu_us_per_change.cachesync", cpu),
                range("cpu_us_per_change.redis", cpu),
                range("cpu_us_per_change.mysql", cpu),
                range("cpu_us_per_change.rabbitmq", cpu),
            );
        }
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

    fn round(writes_per_s: f64, p50: f64, redis_us: Option<f64>, lost: u64) -> VariantReport {
        VariantReport {
            strategy: "binlog".to_owned(),
            coupling: "low",
            application_must: "nothing",
            ordered: true,
            writes: writes_per_s as u64 * 10,
            write_errors: 0,
            first_error: None,
            elapsed_s: 10.0,
            writes_per_s,
            write_latency_ms: Quantiles {
                count: 1,
                p50,
                p99: p50 * 2.0,
                p999: p50 * 3.0,
                max: p50 * 4.0,
            },
            propagation_to: "Redis",
            propagation_ms: Quantiles::default(),
            unpropagated: lost,
            lost_in_mysql: 0,
            out_of_order: 0,
            applied_twice: None,
            guard_drops: Some(lost),
            reads: 0,
            read_misses: 0,
            stale_reads: 0,
            stale_fraction: 0.0,
            staleness_ms: Quantiles::default(),
            drain_s: 0.0,
            drained: lost == 0,
            divergent: Divergent::default(),
            fault: None,
            observer_notifications: 0,
            observer_reads: 0,
            observer_read_mean_us: 0.0,
            cpu_us_per_change: CpuPerChange {
                cachesync: Some(writes_per_s / 100.0),
                redis: redis_us,
                mysql: None,
                rabbitmq: None,
            },
            rounds: 1,
            range: BTreeMap::new(),
            writes_each_second: Vec::new(),
            propagated_each_second: Vec::new(),
            samples: Samples::default(),
        }
    }

    #[test]
    fn rounds_give_each_figure_its_median_and_range_and_the_worst_losses() {
        let r = VariantReport::of_rounds(vec![
            round(900.0, 3.0, Some(20.0), 0),
            round(1000.0, 1.0, None, 2),
            round(950.0, 2.0, Some(10.0), 0),
        ]);
        assert_eq!(r.rounds, 3);
        assert_eq!(r.writes_per_s, 950.0);
        assert_eq!(r.writes, 9500);
        assert_eq!(r.range["writes_per_s"], [900.0, 1000.0]);
        // Medians of each figure, not one round's: p99 is 2 × the median p50 here only
        // because every round's is.
        assert_eq!((r.write_latency_ms.p50, r.write_latency_ms.p99), (2.0, 4.0));
        assert_eq!(r.range["write_latency_ms.p50"], [1.0, 3.0]);
        assert_eq!(r.cpu_us_per_change.cachesync, Some(9.5));
        // Measured in two rounds only: the median of those two.
        assert_eq!(r.cpu_us_per_change.redis, Some(15.0));
        assert_eq!(r.range["cpu_us_per_change.redis"], [10.0, 20.0]);
        assert_eq!(r.cpu_us_per_change.mysql, None);
        assert!(!r.range.contains_key("cpu_us_per_change.mysql"));
        // A loss in any round shows.
        assert_eq!(
            (r.unpropagated, r.guard_drops, r.drained),
            (2, Some(2), false)
        );

        let one = VariantReport::of_rounds(vec![round(900.0, 3.0, None, 0)]);
        assert_eq!((one.rounds, one.writes_per_s), (1, 900.0));
        assert_eq!(one.range["writes_per_s"], [900.0, 900.0]);
    }

    #[test]
    fn per_second_counts_each_whole_second_from_the_start() {
        let start = 1_000_000_000;
        let times = [
            start - 5,
            start,
            start + 999_999,
            start + 1_000_000,
            start + 3_500_000,
        ];
        assert_eq!(per_second(start, times), vec![3, 1, 0, 1]);
        assert_eq!(per_second(start, []), Vec::<u64>::new());
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut [7.0]), Some(7.0));
        assert_eq!(median(&mut []), None);
    }
}
