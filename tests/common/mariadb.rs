//! A private, throwaway MariaDB server for tests that must change the server itself
//! (start it without a binlog, restart it mid-stream) without disturbing the shared one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `mariadbd` with its data in a test's folder, on a free port; killed on drop.
pub struct PrivateMariaDb {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    binlog: bool,
    /// More server options, after cachesync's own so they win (`--server-id=7`).
    options: Vec<String>,
}

pub fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run `id -u`");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Runs `cmd` to completion and fails the test with its output when it fails; returns
/// its standard output.
pub fn checked(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({})\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl PrivateMariaDb {
    /// Initialises `dir/data` and starts mariadbd on a free port; with `binlog`, with
    /// the settings the binlog strategy needs (row format, full images and metadata).
    pub fn start(dir: &Path, binlog: bool) -> PrivateMariaDb {
        PrivateMariaDb::start_with(dir, binlog, Vec::new())
    }

    /// [`PrivateMariaDb::start`] with more server options (`--key=value`, as a my.cnf
    /// line `key = value` would set it).
    pub fn start_with(dir: &Path, binlog: bool, options: Vec<String>) -> PrivateMariaDb {
        use std::os::unix::fs::PermissionsExt;
        let root = is_root();
        let data = dir.join("data");
        // mariadbd drops to `mysql` when started by root: it must reach and own the folder.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        if root {
            checked(Command::new("chown").arg("mysql:mysql").arg(dir));
        }
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if root {
            install.arg("--user=mysql");
        }
        checked(&mut install);
        if root {
            checked(
                Command::new("chown")
                    .arg("-R")
                    .arg("mysql:mysql")
                    .arg(&data),
            );
        }
        let mut server = PrivateMariaDb {
            child: None,
            port: super::free_port(),
            dir: dir.to_owned(),
            binlog,
            options,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let socket = self.dir.join("sock");
        assert!(
            socket.as_os_str().len() < 100,
            "socket path too long: {}",
            socket.display()
        );
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", socket.display()))
            .args(["--server-id=1", "--skip-name-resolve"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.dir.join("mariadbd.out")).unwrap())
            .stderr(std::fs::File::create(self.dir.join("mariadbd.err")).unwrap());
        if self.binlog {
            cmd.arg(format!(
                "--log-bin={}",
                self.dir.join("data/binlog").display()
            ))
            .args([
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
            ]);
        }
        if is_root() {
            cmd.arg("--user=mysql");
        }
        cmd.args(&self.options);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start mariadbd (is mariadb-server installed?): {e}")
        });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ping = Command::new("mariadb-admin")
                .arg("--no-defaults")
                .args(self.client_args())
                .arg("ping")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run mariadb-admin");
            if ping.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "mariadbd exited during start-up ({status}):\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not answer within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mariadbd.err")).unwrap_or_default()
    }

    /// A clean shutdown (SIGTERM, as a service manager stops it) and a start on the same
    /// data and port: every client connection is cut.
    pub fn restart(&mut self) {
        let mut child = self.child.take().expect("running");
        checked(Command::new("kill").args(["-TERM", &child.id().to_string()]));
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not stop within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn();
    }

    pub fn client_args(&self) -> Vec<String> {
        vec![
            "--protocol=tcp".to_owned(),
            "-h127.0.0.1".to_owned(),
            format!("-P{}", self.port),
            "-uroot".to_owned(),
            "--skip-ssl".to_owned(),
        ]
    }

    /// Runs `sql` with the `mariadb` client as root; returns what it printed.
    pub fn sql(&self, sql: &str) -> String {
        checked(
            Command::new("mariadb")
                .arg("--no-defaults")
                .args(self.client_args())
                .args(["-e", sql]),
        )
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}
