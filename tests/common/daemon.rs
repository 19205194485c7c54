//! A real `cachesync run` process for the tests that kill it (`kill -9`), read its
//! `/metrics` and its log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http_get;

/// A running `cachesync run`, killed (SIGKILL) and reaped on drop. Its output goes to
/// files (nothing can block on a full pipe; readable while it runs).
pub struct Daemon {
    child: Child,
    stderr: PathBuf,
    metrics_port: u16,
    /// After this the daemon counts as hung: [`Daemon::assert_alive`] fails the test.
    deadline: Instant,
}

impl Daemon {
    pub fn start(dir: &Path, config: &Path, metrics_port: u16, limit: Duration) -> Daemon {
        let n = std::fs::read_dir(dir).map_or(0, |d| d.count());
        let stderr = dir.join(format!("stderr.{n}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cachesync"));
        cmd.args(["run", "--config", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(format!("stdout.{n}"))).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .env("RUST_LOG", "info")
            .env_remove("CACHESYNC_CONFIG");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CACHESYNC__") {
                cmd.env_remove(name);
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Daemon {
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
            "cachesync still running past its deadline; killing it\n--- stderr ---\n{}",
            self.stderr()
        );
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the daemon");
        self.child.wait().expect("reap the daemon");
    }

    /// The body of `/metrics`, if it answers.
    pub fn metrics(&self) -> Option<String> {
        http_get(self.metrics_port, "/metrics")
    }
}

impl Drop for Daemon {
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
