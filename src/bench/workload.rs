//! What the benchmark runs: which strategy variants, and the workload they all get.
//!
//! Every variant sees the same writes: writer `i` draws its keys from its own generator
//! seeded with `(seed, i)`, so the key sequence of each writer is identical from one
//! variant to the next, and the hot keys are the same keys.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::strategy::StrategyKind;
use crate::strategy::mq::config::PublishMode;

/// A strategy and how it is set up: `dual-write`, `dual-write:versioned`, `mq`,
/// `mq:outbox`, `binlog`, `binlog:invalidate`, … (`kind[:modifier]…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub kind: StrategyKind,
    /// The bench table's trigger-maintained `v` column is the `version_column`, so the
    /// applier's guard orders the changes of a row. Without it dual-write and direct mq
    /// write whatever arrives last.
    pub versioned: bool,
    /// mq only: how events reach the broker.
    pub publish: PublishMode,
    /// The table's `mode = "invalidate"`: changes delete the key instead of writing it.
    pub invalidate: bool,
}

impl Variant {
    /// The canonical name, also the `strategy` label of the benchmark's own metrics.
    pub fn name(&self) -> String {
        let mut name = self.kind.name().to_owned();
        if self.kind.needs_broker() && self.publish == PublishMode::Outbox {
            name.push_str(":outbox");
        }
        if self.versioned {
            name.push_str(":versioned");
        }
        if self.invalidate {
            name.push_str(":invalidate");
        }
        name
    }

    /// The name as it may appear in Redis keys, queue and table names.
    pub fn slug(&self) -> String {
        self.name().replace(':', "-")
    }

    /// Whether its changes reach the applier with a version (binlog coordinates, outbox
    /// id or the `v` column), so the guard keeps a row's changes in commit order (drops
    /// older ones, tells repeats): the variants that must end a run with zero divergent
    /// keys.
    pub fn ordered(&self) -> bool {
        self.kind.keeps_commit_order(self.versioned, self.publish)
    }

    /// The textbook's "what the application must do" column.
    pub fn application_duty(&self) -> &'static str {
        self.kind.application_duty(self.versioned, self.publish)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Variant {
    type Err = String;

    fn from_str(s: &str) -> Result<Variant, String> {
        let mut parts = s.trim().split(':');
        let kind: StrategyKind = parts
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|e: crate::strategy::UnknownStrategy| e.to_string())?;
        let mut variant = Variant {
            kind,
            versioned: false,
            publish: PublishMode::Direct,
            invalidate: false,
        };
        for modifier in parts {
            match (modifier, kind) {
                ("versioned", _) => variant.versioned = true,
                ("invalidate", _) => variant.invalidate = true,
                ("outbox", kind) if kind.needs_broker() => variant.publish = PublishMode::Outbox,
                ("direct", kind) if kind.needs_broker() => variant.publish = PublishMode::Direct,
                _ => {
                    return Err(format!(
                        "{s:?}: unknown modifier {modifier:?} for {kind}; modifiers: versioned, \
                         invalidate, and for mq outbox or direct"
                    ));
                }
            }
        }
        Ok(variant)
    }
}

/// How writers and readers pick keys among `1..=keys`.
#[derive(Debug, Clone, PartialEq)]
pub enum Skew {
    Uniform,
    /// Zipf with exponent `s`: key 1 is the hottest.
    Zipf(f64),
}

impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skew::Uniform => f.write_str("uniform"),
            Skew::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

impl FromStr for Skew {
    type Err = String;

    fn from_str(s: &str) -> Result<Skew, String> {
        if s == "uniform" {
            return Ok(Skew::Uniform);
        }
        let exponent = s
            .strip_prefix("zipf:")
            .and_then(|e| e.parse::<f64>().ok())
            .filter(|e| e.is_finite() && *e > 0.0)
            .ok_or_else(|| {
                format!(
                    "{s:?}: expected `uniform` or `zipf:S` with an exponent S > 0, e.g. zipf:1.1"
                )
            })?;
        Ok(Skew::Zipf(exponent))
    }
}

/// Draws key ids from a [`Skew`] over `1..=keys`.
#[derive(Debug, Clone)]
pub struct KeyPicker {
    keys: u64,
    /// Zipf: cumulative probabilities of keys 1..=keys (binary-searched per draw).
    cdf: Option<std::sync::Arc<Vec<f64>>>,
}

impl KeyPicker {
    pub fn new(skew: &Skew, keys: u64) -> KeyPicker {
        let cdf = match skew {
            Skew::Uniform => None,
            Skew::Zipf(s) => {
                let mut cdf = Vec::with_capacity(keys as usize);
                let mut total = 0.0;
                for rank in 1..=keys {
                    total += 1.0 / (rank as f64).powf(*s);
                    cdf.push(total);
                }
                for p in &mut cdf {
                    *p /= total;
                }
                Some(std::sync::Arc::new(cdf))
            }
        };
        KeyPicker { keys, cdf }
    }

    pub fn pick(&self, rng: &mut impl Rng) -> u64 {
        match &self.cdf {
            None => rng.random_range(1..=self.keys),
            Some(cdf) => {
                let u: f64 = rng.random();
                (cdf.partition_point(|p| *p < u) as u64 + 1).min(self.keys)
            }
        }
    }

    /// Share of draws that hit key 1, the hottest.
    pub fn hottest_share(&self) -> f64 {
        match &self.cdf {
            None => 1.0 / self.keys as f64,
            Some(cdf) => cdf[0],
        }
    }
}

/// The generator of task `index` (writer or reader) for `seed`.
pub fn task_rng(seed: u64, role: u64, index: u64) -> StdRng {
    StdRng::seed_from_u64(
        seed ^ role.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index.wrapping_mul(0xbf58_476d_1ce4_e5b9),
    )
}

/// Spaces one task's operations so that `tasks` tasks together make `rate` per second.
/// Open loop: a task that falls behind does not wait (and does not make up for it
/// twice); the achieved rate is reported.
#[derive(Debug)]
pub struct Pacer {
    interval: Option<Duration>,
    next: tokio::time::Instant,
}

impl Pacer {
    /// `rate = None`: as fast as possible.
    pub fn new(rate: Option<f64>, tasks: usize, index: usize) -> Pacer {
        let interval = rate.map(|r| Duration::from_secs_f64(tasks as f64 / r));
        // Stagger the tasks over one interval so they do not fire in lockstep.
        let offset = interval.map_or(Duration::ZERO, |i| i.mul_f64(index as f64 / tasks as f64));
        Pacer {
            interval,
            next: tokio::time::Instant::now() + offset,
        }
    }

    /// How many of this task's slots fit in `d` (at least 1; 1 without a rate).
    pub fn slots_in(&self, d: Duration) -> u64 {
        self.interval.map_or(1, |i| {
            (d.as_secs_f64() / i.as_secs_f64()).floor().max(1.0) as u64
        })
    }

    pub async fn wait(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = tokio::time::Instant::now();
        if self.next > now {
            tokio::time::sleep_until(self.next).await;
            self.next += interval;
        } else {
            // Behind schedule: go now and schedule from now.
            self.next = now + interval;
        }
    }
}

/// `30s`, `500ms`, `2m` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{s:?}: expected a duration such as 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s or m")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Operations per second, or `None`: as fast as possible (`max`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub Option<f64>);

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        if s == "max" {
            return Ok(Rate(None));
        }
        s.parse::<f64>()
            .ok()
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Rate(Some(r)))
            .ok_or_else(|| format!("{s:?}: expected `max` or a rate per second above 0"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_and_rates_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3h").unwrap_err().contains("unknown unit"));
        assert_eq!("max".parse(), Ok(Rate(None)));
        assert_eq!("1500".parse(), Ok(Rate(Some(1500.0))));
        assert!("0".parse::<Rate>().is_err());
    }

    use super::*;

    #[test]
    fn variants_parse_and_print_canonically() {
        for name in [
            "dual-write",
            "dual-write:versioned",
            "mq",
            "mq:outbox",
            "mq:versioned",
            "binlog",
            "binlog:invalidate",
            "write-back",
        ] {
            assert_eq!(name.parse::<Variant>().unwrap().name(), name);
        }
        assert_eq!("mq:direct".parse::<Variant>().unwrap().name(), "mq");
        let err = "binlog:outbox".parse::<Variant>().unwrap_err();
        assert!(
            err.contains("unknown modifier \"outbox\" for binlog"),
            "{err}"
        );
        assert!(
            "cdc"
                .parse::<Variant>()
                .unwrap_err()
                .contains("valid strategies")
        );
    }

    #[test]
    fn only_unversioned_dual_write_and_direct_mq_may_reorder() {
        let ordered = |s: &str| s.parse::<Variant>().unwrap().ordered();
        assert!(!ordered("dual-write"));
        assert!(!ordered("mq"));
        assert!(ordered("dual-write:versioned"));
        assert!(ordered("mq:outbox"));
        assert!(ordered("binlog"));
    }

    #[test]
    fn skew_parses_and_rejects_nonsense() {
        assert_eq!("uniform".parse::<Skew>(), Ok(Skew::Uniform));
        assert_eq!("zipf:1.1".parse::<Skew>(), Ok(Skew::Zipf(1.1)));
        for bad in ["zipf", "zipf:0", "zipf:-1", "zipf:x", "pareto"] {
            assert!(bad.parse::<Skew>().is_err(), "{bad}");
        }
    }

    #[test]
    fn zipf_prefers_low_ranks_and_stays_in_range() {
        let picker = KeyPicker::new(&Skew::Zipf(1.1), 100);
        let mut rng = task_rng(7, 0, 0);
        let mut counts = [0u32; 101];
        for _ in 0..20_000 {
            let k = picker.pick(&mut rng);
            assert!((1..=100).contains(&k));
            counts[k as usize] += 1;
        }
        assert!(counts[1] > counts[2] && counts[2] > counts[10] && counts[10] > counts[100]);
        let share = f64::from(counts[1]) / 20_000.0;
        assert!((share - picker.hottest_share()).abs() < 0.02, "{share}");
    }

    #[test]
    fn same_seed_same_keys() {
        let picker = KeyPicker::new(&Skew::Zipf(0.99), 1000);
        let draw = |seed| {
            let mut rng = task_rng(seed, 1, 3);
            (0..50).map(|_| picker.pick(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }
}
