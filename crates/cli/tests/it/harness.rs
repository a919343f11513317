//! Starts the real `unimsg` binary on `127.0.0.1:0` in a temporary data
//! directory, finds its address from the `listening on http://ADDR` line,
//! and can kill it (`SIGKILL` or `SIGTERM`) and start it again on the same
//! data directory.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The password of the `admin` account of every test server.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// A running server process.
pub struct TestServer {
    child: Child,
    pub base: String,
    dir: Arc<tempfile::TempDir>,
    env: Vec<(String, String)>,
    logs: Arc<Mutex<String>>,
}

impl TestServer {
    /// A server with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A server with extra `UNIMSG_*` environment settings.
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")));
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::spawn(dir, env).await
    }

    async fn spawn(dir: Arc<tempfile::TempDir>, env: Vec<(String, String)>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_unimsg"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("RUST_LOG")
            .env("UNIMSG_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env(
                "UNIMSG_LOG__LEVEL",
                "debug,hyper=info,h2=info,tungstenite=info,tokio_tungstenite=info",
            )
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start unimsg: {e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let logs = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
        let sink = logs.clone();
        // Keep draining stderr for the whole life of the process, so the
        // server never blocks on a full pipe; remember everything it logged.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(pos) = line.find("listening on http://") {
                    let addr: String = line[pos + "listening on http://".len()..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                        .collect();
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(60), addr_rx)
            .await
            .unwrap_or_else(|_| panic!("the server did not report its address in time"))
            .unwrap_or_else(|_| {
                panic!(
                    "the server exited before listening: {}",
                    logs.lock().map(|l| l.clone()).unwrap_or_default()
                )
            });
        TestServer {
            child,
            base: format!("http://{addr}"),
            dir,
            env,
            logs,
        }
    }

    pub fn client(&self) -> unimsg_client::Client {
        unimsg_client::Client::new(&self.base).unwrap_or_else(|e| panic!("client: {e}"))
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// `kill -9`: no chance to flush or clean up.
    pub async fn kill9(&mut self) {
        self.child
            .kill()
            .await
            .unwrap_or_else(|e| panic!("kill: {e}"));
    }

    /// `SIGTERM`, then waits for a clean exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap_or_else(|| panic!("no pid"));
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM failed");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the server did not stop after SIGTERM"))
            .unwrap_or_else(|e| panic!("wait: {e}"))
    }

    /// Kills this process (if still running) and starts a new one on the
    /// same data directory and settings.
    pub async fn restart(mut self) -> Self {
        let _ = self.child.kill().await;
        Self::spawn(self.dir.clone(), self.env.clone()).await
    }
}
