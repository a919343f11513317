//! Starts the real `unimsg` binary on `127.0.0.1:0` in a temporary data
//! directory (through `unimsg_testkit::unimsg::start`, which finds its
//! address from the `listening on http://ADDR` line), and can kill it
//! (`SIGKILL` or `SIGTERM`) and start it again on the same data directory.

use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use unimsg_testkit::unimsg::{self, Logs};

/// The password of the `admin` account of every test server.
pub(crate) const ADMIN_PASSWORD: &str = "test-admin-password";

/// How long a server may take to start (a debug build on a busy machine).
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server process.
pub(crate) struct TestServer {
    child: Child,
    pub base: String,
    dir: Arc<tempfile::TempDir>,
    env: Vec<(String, String)>,
    /// Extra `serve` arguments (`--tls-cert FILE`…).
    args: Vec<String>,
    logs: Logs,
}

impl TestServer {
    /// A server with the default configuration.
    pub(crate) async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A server with extra `UNIMSG_*` environment settings.
    pub(crate) async fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_with_args(env, &[]).await
    }

    /// A server with extra environment settings and `serve` arguments.
    pub(crate) async fn start_with_args(env: &[(&str, &str)], args: &[&str]) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        Self::spawn(dir, env, args).await
    }

    /// A server on a data directory that `prepare` filled first.
    pub(crate) async fn start_prepared(
        env: &[(&str, &str)],
        prepare: impl FnOnce(&std::path::Path),
    ) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        prepare(dir.path());
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::spawn(dir, env, Vec::new()).await
    }

    /// Starts a server that may fail to start; its log when it does.
    pub(crate) async fn try_start_with(env: &[(&str, &str)]) -> Result<Self, String> {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        match unimsg::start(Self::command(&dir, &env, &[]), START_TIMEOUT).await {
            Ok(started) => Ok(Self::started(started, dir, env, Vec::new())),
            Err(unimsg::StartError::Exited(logs)) => Err(logs.text()),
            Err(other) => panic!("{other}"),
        }
    }

    fn command(dir: &tempfile::TempDir, env: &[(String, String)], args: &[String]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_unimsg"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env_remove("RUST_LOG")
            .env("UNIMSG_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env(
                "UNIMSG_LOG__LEVEL",
                "debug,hyper=info,h2=info,tungstenite=info,tokio_tungstenite=info",
            )
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    fn started(
        started: unimsg::Started,
        dir: Arc<tempfile::TempDir>,
        env: Vec<(String, String)>,
        args: Vec<String>,
    ) -> Self {
        TestServer {
            child: started.child,
            base: format!("{}://{}", started.scheme, started.addr),
            dir,
            env,
            args,
            logs: started.logs,
        }
    }

    async fn spawn(
        dir: Arc<tempfile::TempDir>,
        env: Vec<(String, String)>,
        args: Vec<String>,
    ) -> Self {
        let started = unimsg::start(Self::command(&dir, &env, &args), START_TIMEOUT)
            .await
            .expect("the test server");
        Self::started(started, dir, env, args)
    }

    pub(crate) fn client(&self) -> unimsg_client::Client {
        unimsg_client::Client::new(&self.base).expect("client")
    }

    pub(crate) fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Everything the server logged so far.
    pub(crate) fn logs(&self) -> String {
        self.logs.text()
    }

    /// Sends `SIGHUP` (a TLS certificate reload).
    pub(crate) async fn hangup(&self) {
        let pid = self.child.id().expect("no pid");
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(pid.to_string())
            .status()
            .await;
        assert!(status.is_ok_and(|s| s.success()), "kill -HUP failed");
    }

    /// `kill -9`: no chance to flush or clean up.
    pub(crate) async fn kill9(&mut self) {
        self.child.kill().await.expect("kill");
    }

    /// `SIGTERM`, then waits for a clean exit.
    pub(crate) async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("no pid");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM failed");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server did not stop after SIGTERM")
            .expect("wait")
    }

    /// Kills this process (if still running) and starts a new one on the
    /// same data directory, with `env` set over the settings it had; the
    /// log of a start that failed.
    pub(crate) async fn restart_with(mut self, env: &[(&str, &str)]) -> Result<Self, String> {
        let _ = self.child.kill().await;
        let mut settings = self.env.clone();
        for (k, v) in env {
            settings.retain(|(key, _)| key != k);
            settings.push(((*k).to_owned(), (*v).to_owned()));
        }
        match unimsg::start(
            Self::command(&self.dir, &settings, &self.args),
            START_TIMEOUT,
        )
        .await
        {
            Ok(started) => Ok(Self::started(
                started,
                self.dir.clone(),
                settings,
                self.args.clone(),
            )),
            Err(unimsg::StartError::Exited(logs)) => Err(logs.text()),
            Err(other) => panic!("{other}"),
        }
    }

    /// Kills this process (if still running) and starts a new one on the
    /// same data directory and settings.
    pub(crate) async fn restart(mut self) -> Self {
        let _ = self.child.kill().await;
        Self::spawn(self.dir.clone(), self.env.clone(), self.args.clone()).await
    }
}
