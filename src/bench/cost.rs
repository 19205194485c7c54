//! What a variant costs in CPU: the CPU time of cachesync, Redis, MySQL and RabbitMQ over
//! the measured window, per change the run made.
//!
//! The services are other processes: their CPU is `utime + stime` of `/proc/<pid>/stat`
//! (every thread, living or exited), found once per bench ([`Pids::find`]) and only for
//! services on this machine (a loopback URL). cachesync runs in the bench's own process
//! next to the load generator, so the bench starts the daemon on a runtime of its own
//! ([`daemon_runtime`]) whose threads are named [`DAEMON_THREAD`], and counts the CPU of
//! the threads named in [`DAEMON_THREADS`] only (`/proc/self/task/<tid>/stat`). The figures are clock ticks
//! (usually 10 ms), so a window must hold many of them to mean anything.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};

/// Name of the daemon runtime's threads; the CPU counted as cachesync's is theirs.
/// Short enough for the 15 bytes Linux keeps of a thread name.
pub const DAEMON_THREAD: &str = "cachesync-d";

/// Names (prefixes) of the threads whose CPU is cachesync's: the daemon's runtime, and
/// the thread lapin runs each AMQP connection's I/O on (whatever runtime opened it) —
/// during the measured window only the daemon holds AMQP connections.
pub const DAEMON_THREADS: &[&str] = &[DAEMON_THREAD, "lapin-io-loop"];

/// A multi-threaded runtime for the daemon alone (as many workers as `cachesync run`
/// would have), so its CPU can be told apart from the load generator's.
pub fn daemon_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name(DAEMON_THREAD)
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "bench: starting the daemon's runtime".to_owned(),
            source,
        })
}

/// Clock ticks per second of the times in `/proc/*/stat`.
fn ticks_per_s() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        // SAFETY: sysconf reads a constant of the system and has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // 100 is what Linux reports everywhere; a failed call should not stop a bench.
        if ticks > 0 { ticks as u64 } else { 100 }
    })
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_micros(ticks.saturating_mul(1_000_000) / ticks_per_s())
}

/// The name (field 2) and `utime + stime` in clock ticks (fields 14 and 15) of a
/// `/proc/…/stat` text. The name is between the first `(` and the *last* `)`: it may
/// itself hold spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    // After the name: field 3 (state) is index 0, so field N is index N - 3.
    let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// CPU time a process has used since it started; `None` if it does not exist (or is
/// not readable).
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, ticks)| ticks_to_duration(ticks))
}

/// CPU ticks of each living thread of this process whose name starts with one of
/// `prefixes`, by thread id. A thread that ends between two readings takes its time with it (tokio's
/// workers live as long as their runtime; only idle blocking threads come and go).
fn threads_ticks(prefixes: &[&str]) -> HashMap<u32, u64> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return HashMap::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (name, ticks) = parse_stat(&stat)?;
            prefixes
                .iter()
                .any(|p| name.starts_with(p))
                .then_some((tid, ticks))
        })
        .collect()
}

/// The pids of the services whose CPU a bench reports; `None`: not found, or not on
/// this machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pids {
    pub redis: Option<u32>,
    pub mysql: Option<u32>,
    pub rabbitmq: Option<u32>,
}

impl Pids {
    /// Finds the local services of `config`: Redis by `INFO server`, MySQL by its pid
    /// file, RabbitMQ as the one Erlang VM (`beam.smp`) running here. A service behind
    /// a non-loopback URL runs elsewhere: its CPU cannot be read here.
    pub async fn find(config: &Config, pool: &mysql_async::Pool) -> Pids {
        let mut pids = Pids::default();
        if is_local(&config.redis_url, 6379).await {
            pids.redis = redis_pid(&config.redis_url).await;
        }
        if is_local(&config.mysql_url, 3306).await {
            pids.mysql = mysql_pid(pool).await;
        }
        if let Some(amqp) = &config.amqp
            && is_local(&amqp.url, 5672).await
        {
            pids.rabbitmq = only_process_named(&["beam.smp"]);
        }
        pids
    }
}

async fn is_local(url: &str, default_port: u16) -> bool {
    super::faults::service_addr(url, default_port)
        .await
        .is_ok_and(|addr| addr.ip().is_loopback())
}

async fn redis_pid(url: &str) -> Option<u32> {
    let mut redis = crate::redis::connection::connect(url).await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut redis)
        .await
        .ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

async fn mysql_pid(pool: &mysql_async::Pool) -> Option<u32> {
    use mysql_async::prelude::Queryable;
    let mut conn = pool.get_conn().await.ok()?;
    let pid_file: Option<String> = conn.query_first("SELECT @@pid_file").await.ok()??;
    // The server process is running now: a pid file left over from an earlier one
    // would name a process that is gone (or another one).
    std::fs::read_to_string(pid_file?)
        .ok()
        .and_then(|pid| pid.trim().parse().ok())
        .filter(|&pid: &u32| process_cpu(pid).is_some())
}

/// The pid of the one process named one of `names`; `None` when there are none or
/// several (which one would be ours is unknown).
fn only_process_named(names: &[&str]) -> Option<u32> {
    let mut found = std::fs::read_dir("/proc").ok()?.flatten().filter_map(|p| {
        let pid: u32 = p.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(p.path().join("comm")).ok()?;
        names.contains(&comm.trim_end()).then_some(pid)
    });
    let pid = found.next()?;
    found.next().is_none().then_some(pid)
}

/// CPU counters at one moment.
#[derive(Debug, Clone)]
pub struct CpuSample {
    daemon_threads: HashMap<u32, u64>,
    redis: Option<Duration>,
    mysql: Option<Duration>,
    rabbitmq: Option<Duration>,
}

impl CpuSample {
    /// Reads every counter now.
    pub fn take(pids: &Pids) -> CpuSample {
        CpuSample {
            daemon_threads: threads_ticks(DAEMON_THREADS),
            redis: pids.redis.and_then(process_cpu),
            mysql: pids.mysql.and_then(process_cpu),
            rabbitmq: pids.rabbitmq.and_then(process_cpu),
        }
    }

    /// The CPU each used from `before` to this sample.
    pub fn since(&self, before: &CpuSample) -> CpuUsed {
        let diff = |after: Option<Duration>, before: Option<Duration>| {
            Some(after?.saturating_sub(before?))
        };
        // Per thread: threads started in between count from zero.
        let daemon_ticks = self
            .daemon_threads
            .iter()
            .map(|(tid, &ticks)| {
                ticks.saturating_sub(before.daemon_threads.get(tid).copied().unwrap_or(0))
            })
            .sum();
        CpuUsed {
            cachesync: ticks_to_duration(daemon_ticks),
            redis: diff(self.redis, before.redis),
            mysql: diff(self.mysql, before.mysql),
            rabbitmq: diff(self.rabbitmq, before.rabbitmq),
        }
    }
}

/// CPU used over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUsed {
    pub cachesync: Duration,
    pub redis: Option<Duration>,
    pub mysql: Option<Duration>,
    pub rabbitmq: Option<Duration>,
}

impl CpuUsed {
    /// Per change, in µs; `None` where the process was not measured or nothing changed.
    pub fn per_change(&self, changes: u64) -> CpuPerChange {
        let per = |cpu: Option<Duration>| {
            let cpu = cpu.filter(|_| changes > 0)?;
            Some(cpu.as_secs_f64() * 1e6 / changes as f64)
        };
        CpuPerChange {
            cachesync: per(Some(self.cachesync)),
            redis: per(self.redis),
            mysql: per(self.mysql),
            rabbitmq: per(self.rabbitmq),
        }
    }
}

/// CPU µs per change of each process; `None` (JSON `null`, "n/a"): not measured.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct CpuPerChange {
    pub cachesync: Option<f64>,
    pub redis: Option<f64>,
    pub mysql: Option<f64>,
    pub rabbitmq: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 99 0 0";
        assert_eq!(parse_stat(stat), Some(("a (b) c", 12)));
        assert_eq!(parse_stat("42 (x) S 1"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat(&own).is_some(), "{own}");
    }

    #[test]
    fn a_process_that_does_not_exist_has_no_cpu() {
        // Above the kernel's largest pid (4194304).
        assert_eq!(process_cpu(4_194_305 * 2), None);
        assert!(process_cpu(std::process::id()).is_some());
    }

    /// Burns about `cpu` of CPU time on the calling thread.
    fn burn(cpu: Duration) {
        let start = cpu_now();
        let mut x: u64 = 1;
        while cpu_now() - start < cpu {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
    }

    fn cpu_now() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write into.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[test]
    fn the_cpu_of_named_threads_is_counted_and_no_other() {
        // A name of its own: tests of this binary run in parallel on unnamed threads.
        let prefix = "cost-test-burn";
        let before = threads_ticks(&[prefix, "cost-test-none"]);
        assert!(before.is_empty(), "{before:?}");
        let (started, release) = (
            std::sync::Arc::new(std::sync::Barrier::new(2)),
            std::sync::Arc::new(std::sync::Barrier::new(2)),
        );
        let burner = std::thread::Builder::new()
            .name(prefix.to_owned())
            .spawn({
                let (started, release) = (started.clone(), release.clone());
                move || {
                    started.wait();
                    burn(Duration::from_millis(300));
                    // Stay alive until the reading: an ended thread leaves /proc/self/task.
                    release.wait();
                }
            })
            .unwrap();
        started.wait();
        // This thread burns too, and must not be counted.
        burn(Duration::from_millis(300));
        let mut after;
        loop {
            after = threads_ticks(&[prefix, "cost-test-none"]);
            let ticks: u64 = after.values().sum();
            // The burner's 300 ms are at least 25 ticks at any tick rate Linux uses
            // (≤ 1000/s would be 300); wait until it is done.
            if ticks_to_duration(ticks) >= Duration::from_millis(250) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        release.wait();
        burner.join().unwrap();
        assert_eq!(after.len(), 1, "only the named thread: {after:?}");
        let counted = ticks_to_duration(after.values().sum());
        assert!(
            counted >= Duration::from_millis(250) && counted < Duration::from_millis(450),
            "the burner's ~300 ms, not this thread's too: {counted:?}"
        );
    }

    #[test]
    fn usage_is_per_change_and_missing_processes_stay_missing() {
        let used = CpuUsed {
            cachesync: Duration::from_millis(30),
            redis: Some(Duration::from_millis(10)),
            mysql: None,
            rabbitmq: Some(Duration::ZERO),
        };
        assert_eq!(
            used.per_change(1000),
            CpuPerChange {
                cachesync: Some(30.0),
                redis: Some(10.0),
                mysql: None,
                rabbitmq: Some(0.0),
            }
        );
        assert_eq!(used.per_change(0), CpuPerChange::default());
    }

    #[test]
    fn a_sample_counts_threads_started_in_between_from_zero() {
        let before = CpuSample {
            daemon_threads: HashMap::from([(1, 100), (2, 50)]),
            redis: Some(Duration::from_secs(1)),
            mysql: None,
            rabbitmq: Some(Duration::from_secs(2)),
        };
        let after = CpuSample {
            // Thread 2 ended (its time is gone), thread 3 started.
            daemon_threads: HashMap::from([(1, 110), (3, 5)]),
            redis: Some(Duration::from_millis(1500)),
            mysql: Some(Duration::from_secs(9)),
            rabbitmq: Some(Duration::from_secs(2)),
        };
        let used = after.since(&before);
        assert_eq!(used.cachesync, ticks_to_duration(15));
        assert_eq!(used.redis, Some(Duration::from_millis(500)));
        assert_eq!(used.mysql, None, "not measured at the start");
        assert_eq!(used.rabbitmq, Some(Duration::ZERO));
    }
}
