//! A private, throwaway `redis-server` for tests that must lose Redis' data (kill it and
//! start it again empty) or change its settings, without touching the shared one.
//! It listens on a free loopback port, keeps nothing on disk (`--save "" --appendonly
//! no`), lives under the worktree's `.services/`, and is killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    /// More server options (`--maxmemory-policy`, `allkeys-lru`, …).
    options: Vec<String>,
}

impl PrivateRedis {
    /// Starts a private Redis with `options` added to the command line.
    pub fn start(options: &[&str]) -> PrivateRedis {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(".services")
            .join(super::unique("test-redis"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = PrivateRedis {
            child: None,
            port: super::free_port(),
            dir,
            options: options.iter().map(|o| (*o).to_owned()).collect(),
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(&self.options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start redis-server (is redis-server installed? scripts/services.sh installs it): {e}")
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.answers() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "redis-server exited during start-up ({status}):\n{}",
                    std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers PING.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok();
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    /// `kill -9`: every connection is cut and the data is gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Starts it again on the same port; it comes back empty (nothing was persisted).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        self.spawn();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill9();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
