//! Real PostgreSQL and Redis servers for tests, each in its own temporary
//! directory on a free loopback port, stopped when dropped.
//!
//! The binaries come from Debian's packages (`postgresql`,
//! `redis-server`), which the README's test command installs; set
//! `UNIMSG_PG_BIN` to use another PostgreSQL `bin` directory. PostgreSQL
//! refuses to run as root, so as root the server runs as the `postgres`
//! user through `runuser`. Nothing depends on a system service.
//!
//! Servers can be stopped and started again on the same port and data, to
//! test how unimsg behaves while they are down.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The directory with `initdb`, `pg_ctl` and `postgres`.
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("UNIMSG_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed: run scripts/test (it installs Debian's postgresql), \
             or set UNIMSG_PG_BIN to a directory holding initdb and pg_ctl"
        ),
    }
}

/// A PostgreSQL server of its own: trust authentication for `postgres` on
/// 127.0.0.1 only.
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("port", &self.port)
            .finish()
    }
}

impl Postgres {
    /// Creates a cluster and starts it.
    pub fn start() -> Self {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("unimsg-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown").arg("postgres").arg(dir.path()));
        }
        let pg = Self {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        let data = pg.data();
        run(pg
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-N",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&data));
        pg.start_again();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd
    }

    /// The port it listens on (stable across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` (`postgres` exists from the start).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        run(Command::new("psql")
            .arg(self.url("postgres"))
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE \"{name}\""))
            .stdout(Stdio::null())
            .stderr(Stdio::piped()));
        self.url(name)
    }

    /// Starts the server again after [`Self::stop`]; returns once it
    /// accepts connections (`pg_ctl -w`).
    pub fn start_again(&self) {
        // fsync off: a killed process loses nothing (the OS keeps its
        // writes); only a machine crash would, which tests do not simulate.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        run(self
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &options, "start"]));
    }

    /// Stops the server (fast shutdown: open connections are cut).
    pub fn stop(&self) {
        run(self
            .command("pg_ctl")
            .args(["-w", "-D"])
            .arg(self.data())
            .args(["-m", "fast", "stop"]));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D"])
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Redis server of its own, without persistence.
pub struct Redis {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("port", &self.port).finish()
    }
}

impl Redis {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("unimsg-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let mut redis = Self {
            dir,
            port: free_port(),
            child: None,
        };
        redis.start_again();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again, after [`Self::stop`]) on the same port;
    /// returns once it says it accepts connections.
    pub fn start_again(&mut self) {
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): run scripts/test, which installs \
                     Debian's redis-server"
                )
            });
        wait_ready(&mut child, self.dir.path());
        self.child = Some(child);
    }

    /// Kills the server at once (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads the server's log until it is ready; the rest of the output is
/// drained on a thread so the server never blocks on a full pipe.
fn wait_ready(child: &mut Child, dir: &Path) {
    let Some(stdout) = child.stdout.take() else {
        panic!("redis-server has no stdout");
    };
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap_or_default();
        if line.contains("Ready to accept connections") {
            std::thread::spawn(move || for _ in lines {});
            return;
        }
    }
    panic!(
        "redis-server in {} exited before it was ready",
        dir.display()
    );
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
