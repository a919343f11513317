//! Real PostgreSQL and Redis servers for tests, each in its own temporary
//! directory on a free loopback port, stopped when dropped; and
//! [`unimsg::start`], which starts the unimsg binary and waits for its
//! address.
//!
//! The binaries come from Debian's packages (`postgresql`,
//! `redis-server`), which the README's test command installs; set
//! `UNIMSG_PG_BIN` to use another PostgreSQL `bin` directory. PostgreSQL
//! refuses to run as root, so as root the server runs as the `postgres`
//! user through `runuser`. Nothing depends on a system service.
//!
//! Servers can be stopped and started again on the same port and data, to
//! test how unimsg behaves while they are down.
//!
//! Without those binaries a test that needs them fails at once with one
//! line naming the packages to install ([`MISSING`]), before anything is
//! started: no wait, no failure deeper in the test to decode.

pub mod unimsg;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// What a test needing PostgreSQL or Redis says when their binaries are
/// missing, after naming which.
pub const MISSING: &str = "cluster-mode tests start their own PostgreSQL and Redis: \
    install Debian's postgresql, postgresql-client and redis-server (scripts/test does), \
    or set UNIMSG_PG_BIN to a PostgreSQL bin directory";

/// Whether `program` is an executable file in a directory of `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Fails the test with one line when `what` is absent.
fn require(present: bool, what: &str) {
    assert!(present, "{what} is missing: {MISSING}");
}

/// The directory with `initdb`, `pg_ctl` and `postgres`, if any.
fn pg_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("UNIMSG_PG_BIN") {
        return Some(PathBuf::from(dir));
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
    versions.pop().map(|(_, bin)| bin)
}

/// Checks everything [`Postgres::start`] runs, so that a missing piece is
/// named before anything starts.
fn require_postgres(as_postgres: bool) -> PathBuf {
    let bin = pg_bin();
    require(
        bin.as_ref()
            .is_some_and(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file()),
        "PostgreSQL (initdb and pg_ctl under /usr/lib/postgresql/*/bin or UNIMSG_PG_BIN)",
    );
    require(on_path("psql"), "psql (package postgresql-client)");
    if as_postgres {
        // As root the server runs as `postgres`, which Debian's package creates.
        require(on_path("runuser"), "runuser (package util-linux)");
        let user = Command::new("id")
            .args(["-u", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        require(
            user,
            "the postgres user (PostgreSQL refuses to run as root)",
        );
    }
    bin.unwrap_or_default()
}

/// A PostgreSQL server of its own: trust authentication for `postgres` on
/// 127.0.0.1 only.
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    /// Serves TLS with `server.crt` / `server.key` in its directory.
    tls: bool,
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
        Self::create(None)
    }

    /// [`Self::start`], serving TLS (`ssl = on`) with this certificate
    /// chain and key (PEM) besides plain connections.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        Self::create(Some((cert_pem, key_pem)))
    }

    fn create(tls: Option<(&str, &str)>) -> Self {
        let as_postgres = is_root();
        let bin = require_postgres(as_postgres);
        let dir = tempfile::Builder::new()
            .prefix("unimsg-pg-")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            run(Command::new("chown").arg("postgres").arg(dir.path()));
        }
        let pg = Self {
            dir,
            bin,
            port: free_port(),
            as_postgres,
            tls: tls.is_some(),
        };
        if let Some((cert, key)) = tls {
            // PostgreSQL refuses a key file that others may read.
            for (name, text) in [("server.crt", cert), ("server.key", key)] {
                let path = pg.dir.path().join(name);
                std::fs::write(&path, text).expect("TLS files");
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .expect("chmod 600");
                }
                if as_postgres {
                    run(Command::new("chown").arg("postgres").arg(&path));
                }
            }
        }
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
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            let dir = self.dir.path().display();
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key"
            ));
        }
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
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run {cmd:?}: {e}"),
    };
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
    /// Serves TLS only, with `server.crt`, `server.key` and `ca.crt` in
    /// its directory.
    tls: bool,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("port", &self.port).finish()
    }
}

impl Redis {
    /// Starts a server on a free port; returns once it accepts connections.
    pub fn start() -> Self {
        Self::create(None)
    }

    /// [`Self::start`], serving TLS only (`rediss://`) with this
    /// certificate chain and key, the CA that signed it named too (Redis
    /// wants one; clients are not asked for certificates).
    pub fn start_tls(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Self {
        Self::create(Some((cert_pem, key_pem, ca_pem)))
    }

    fn create(tls: Option<(&str, &str, &str)>) -> Self {
        require(on_path("redis-server"), "redis-server");
        let dir = tempfile::Builder::new()
            .prefix("unimsg-redis-")
            .tempdir()
            .expect("temp dir");
        if let Some((cert, key, ca)) = tls {
            for (name, text) in [("server.crt", cert), ("server.key", key), ("ca.crt", ca)] {
                std::fs::write(dir.path().join(name), text).expect("TLS files");
            }
        }
        let mut redis = Self {
            dir,
            port: free_port(),
            child: None,
            tls: tls.is_some(),
        };
        redis.start_again();
        redis
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again, after [`Self::stop`]) on the same port;
    /// returns once it says it accepts connections.
    pub fn start_again(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1"]);
        if self.tls {
            let file = |name: &str| self.dir.path().join(name);
            cmd.args([
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(file("server.crt"))
            .arg("--tls-key-file")
            .arg(file("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(file("ca.crt"));
        } else {
            cmd.args(["--port", &port]);
        }
        let mut child = cmd
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
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
