//! The real `cachesync run` as a child process, for tests that kill it, restart it and
//! read its metrics and logs. Its output goes to files (nothing blocks on a full pipe;
//! readable while it runs); it is killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

pub struct RunningDaemon {
    child: Child,
    stderr: PathBuf,
    pub metrics_port: u16,
    /// After this the daemon counts as hung: [`RunningDaemon::assert_alive`] fails.
    deadline: Instant,
}

impl RunningDaemon {
    /// `cachesync run --config <config>`, its output under `dir`.
    pub fn start(dir: &Path, config: &Path, metrics_port: u16, limit: Duration) -> RunningDaemon {
        let n = std::fs::read_dir(dir).map_or(0, |d| d.count());
        let stderr = dir.join(format!("stderr.{n}"));
        let mut cmd = super::cachesync_command(&["run", "--config", config.to_str().unwrap()]);
        cmd.stdout(std::fs::File::create(dir.join(format!("stdout.{n}"))).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        RunningDaemon {
            child,
            stderr,
            metrics_port,
            deadline: Instant::now() + limit,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Fails the test (with the daemon's stderr) if it exited or overran its deadline.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "cachesync exited early ({status})\n--- stderr ---\n{}",
                self.stderr()
            );
        }
        assert!(
            Instant::now() < self.deadline,
            "cachesync still running past its deadline\n--- stderr ---\n{}",
            self.stderr()
        );
    }

    /// Waits (at most `limit`) for it to exit by itself; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// SIGTERM (a graceful stop), then wait for it (at most 60 s).
    pub fn stop(&mut self) {
        super::mariadb::checked(
            std::process::Command::new("kill").args(["-TERM", &self.pid().to_string()]),
        );
        assert!(
            self.wait_exit(Duration::from_secs(60)).is_some(),
            "cachesync did not stop within 60 s of SIGTERM\n--- stderr ---\n{}",
            self.stderr()
        );
    }

    /// The body of `/metrics`, if it answers.
    pub fn metrics(&self) -> Option<String> {
        super::http_get(self.metrics_port, "/metrics")
    }

    /// The value of the sample `series` (name with labels, as exported), if scraped.
    pub fn sample(&self, series: &str) -> Option<f64> {
        sample(&self.metrics()?, series)
    }
}

impl Drop for RunningDaemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// The value of the sample `series` (name with labels, as exported) in a scrape.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// A field of `/proc/<pid>/status` in KiB (`VmHWM`, `VmRSS`).
pub fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
