//! `smoke`: starts a fresh server and runs every scenario once with tiny
//! parameters, so the bench cannot rot unnoticed (`scripts/test` runs it).
//!
//! The server is `--server-bin serve --listen 127.0.0.1:0 --data-dir TMP`
//! with a random admin password and the rate limits off; its address comes
//! from its `listening on http://ADDR` log line. Each scenario's JSON is
//! checked for completeness only: every expected delivery arrived, every
//! connection opened, no send failed. Timings are printed, never checked,
//! so a slow machine cannot fail it. The server is killed at the end, on
//! failure too (and by `kill_on_drop` if the bench itself panics).
//!
//! `idle` and `broadcast` also run once more spread over two holder
//! processes and two source addresses (`--procs 2 --source-ips
//! 127.0.0.1,127.0.0.2`), so that path cannot rot either.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use unimsg_client::{AdminCredentials, Client};

use crate::procfs::Probe;
use crate::{Ctx, Scenario, SummaryTo};
use crate::{broadcast, direct, fanout, group, hold, idle, login, sync, webhooks};

/// Server log lines kept to show when something fails.
const LOG_TAIL: usize = 60;

/// How long the server may take to exit once killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server's log line says before its address.
const LISTENING: &str = "listening on http://";

#[derive(Debug, Clone, clap::Args)]
pub struct SmokeArgs {
    /// The `unimsg` server binary to start (e.g. target/debug/unimsg).
    #[arg(long)]
    pub server_bin: PathBuf,
    /// Seconds the server may take to log its address.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub startup_timeout_secs: u64,
    /// Seconds one scenario may take before it counts as failed.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub scenario_timeout_secs: u64,
}

pub async fn run(args: SmokeArgs) -> Result<Value> {
    let data = tempfile::Builder::new()
        .prefix("unimsg-bench-smoke.")
        .tempdir()
        .context("cannot create a temporary data directory")?;
    let password = format!("smoke-{}", uuid::Uuid::new_v4().simple());
    let mut server = Server::start(
        &args.server_bin,
        data.path(),
        &password,
        Duration::from_secs(args.startup_timeout_secs),
    )
    .await?;
    eprintln!(
        "smoke: server pid {} listening on {}",
        server.pid, server.url
    );
    let outcome = run_all(&mut server, &password, &args).await;
    server.stop().await;
    let (passed, failed) = outcome?;
    let report = json!({
        "scenario": "smoke",
        "server_bin": args.server_bin.display().to_string(),
        "passed": passed,
        "failed": failed.iter().map(|(name, _)| name).collect::<Vec<_>>(),
        "failures": failed.iter().map(|(name, why)| json!({"scenario": name, "why": why})).collect::<Vec<_>>(),
    });
    if failed.is_empty() {
        println!("smoke: all {} scenarios passed", passed.len());
        return Ok(report);
    }
    eprintln!("smoke: last server log lines:");
    for line in server.log_tail() {
        eprintln!("  | {line}");
    }
    println!("{report}");
    let names: Vec<&str> = failed.iter().map(|(name, _)| name.as_str()).collect();
    bail!("smoke failed: {}", names.join(", "))
}

/// Runs every scenario; returns the passed names and the failed ones with
/// why.
async fn run_all(
    server: &mut Server,
    password: &str,
    args: &SmokeArgs,
) -> Result<(Vec<String>, Vec<(String, String)>)> {
    let client = Client::new(&server.url)?;
    client
        .health()
        .await
        .context("the server does not answer /healthz")?;
    let ctx = Ctx {
        admin: Some(client.admin(AdminCredentials::Basic {
            admin_id: "admin".into(),
            secret: password.to_owned(),
        })),
        client,
        server: Probe::new(server.pid).ok(),
        bench: Probe::this_process(),
        ca_pem: None,
        summary_to: SummaryTo::Stderr,
    };
    let timeout = Duration::from_secs(args.scenario_timeout_secs);
    let (mut passed, mut failed) = (Vec::new(), Vec::new());
    for (name, scenario) in plan() {
        if let Some(status) = server.exited() {
            failed.push((
                name.to_owned(),
                format!("not run: the server exited ({status})"),
            ));
            println!("smoke: FAIL {name:<15} not run: the server exited ({status})");
            continue;
        }
        eprintln!("smoke: ----- {name}");
        let started = Instant::now();
        let outcome = match tokio::time::timeout(timeout, crate::run_scenario(&ctx, scenario)).await
        {
            Ok(Ok(report)) => check_complete(name, &report, true),
            Ok(Err(e)) => Err(anyhow!("the scenario failed: {e:#}")),
            Err(_) => Err(anyhow!("did not finish within {} s", timeout.as_secs())),
        };
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(summary) => {
                println!("smoke: ok   {name:<15} {summary} ({secs:.1} s)");
                passed.push(name.to_owned());
            }
            Err(e) => {
                println!("smoke: FAIL {name:<15} {e:#} ({secs:.1} s)");
                failed.push((name.to_owned(), format!("{e:#}")));
            }
        }
    }
    Ok((passed, failed))
}

/// Every scenario with parameters small enough for a few seconds in all.
fn plan() -> Vec<(&'static str, Scenario)> {
    let direct = |transport, client_msg_ids| direct::DirectArgs {
        messages: 200,
        senders: 2,
        window: 16,
        content_bytes: 32,
        transport,
        client_msg_ids,
        // Paced over HTTP (200 messages in about a quarter of a second),
        // so the pacing path runs too.
        rate: if transport == direct::Transport::Http {
            800
        } else {
            0
        },
        stall_secs: 10,
    };
    let fan_out = broadcast::BroadcastArgs {
        connections: 20,
        conns_per_user: 4,
        broadcasts: 3,
        connect_concurrency: 16,
        content_bytes: 32,
        stall_secs: 10,
        spread: hold::SpreadArgs::default(),
    };
    let idle = idle::IdleArgs {
        connections: 20,
        conns_per_user: 10,
        connect_concurrency: 16,
        hold_secs: 1,
        settle_ms: 0,
        quiet_secs: 0,
        spread: hold::SpreadArgs::default(),
    };
    // Two holder processes, two source addresses; shares that do not
    // divide evenly, and users split between the processes.
    let spread = hold::SpreadArgs {
        procs: 2,
        source_ips: vec![[127, 0, 0, 1].into(), [127, 0, 0, 2].into()],
    };
    let idle_spread = idle::IdleArgs {
        connections: 21,
        spread: spread.clone(),
        ..idle.clone()
    };
    let fan_out_spread = broadcast::BroadcastArgs {
        connections: 21,
        spread,
        ..fan_out.clone()
    };
    vec![
        (
            "direct",
            Scenario::Direct(direct(direct::Transport::Http, true)),
        ),
        (
            "direct-ws",
            Scenario::Direct(direct(direct::Transport::Ws, false)),
        ),
        ("idle", Scenario::Idle(idle)),
        ("idle-procs", Scenario::Idle(idle_spread)),
        ("broadcast", Scenario::Broadcast(fan_out.clone())),
        ("broadcast-procs", Scenario::Broadcast(fan_out_spread)),
        (
            "sync",
            Scenario::Sync(sync::SyncArgs {
                messages: 200,
                window: 16,
                page: 64,
                content_bytes: 32,
                stall_secs: 10,
            }),
        ),
        (
            "group",
            Scenario::Group(group::GroupArgs {
                members: 20,
                messages: 20,
                window: 4,
                transport: fanout::Transport::Ws,
                connect_concurrency: 16,
                content_bytes: 32,
                stall_secs: 10,
            }),
        ),
        (
            "login",
            Scenario::Login(login::LoginArgs {
                duration_secs: 1,
                concurrency: 2,
            }),
        ),
        ("sse", Scenario::Sse(fan_out)),
        (
            "webhooks",
            Scenario::Webhooks(webhooks::WebhooksArgs {
                messages: 50,
                window: 8,
                stall_secs: 20,
                backlog: false,
            }),
        ),
    ]
}

/// Checks that a scenario's report is complete; returns a one-line summary.
/// Whether a scenario's report says everything expected happened (not
/// timings); a one-line summary if so. Also used for a scenario run on its
/// own (`main`), where `planned` is false: no smoke plan to compare with.
pub fn check_complete(name: &str, r: &Value, planned: bool) -> Result<String> {
    let num = |ptr: &str| {
        r.pointer(ptr)
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("the report has no number at {ptr}"))
    };
    let is_true = |ptr: &str| r.pointer(ptr).and_then(Value::as_bool) == Some(true);
    let is_empty = |ptr: &str| match r.pointer(ptr) {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    };
    let want = |what: &str, got: u64, expected: u64| {
        if got == expected {
            Ok(())
        } else {
            Err(anyhow!("{what}: {got}, expected {expected}"))
        }
    };
    match name {
        "direct" | "direct-ws" => {
            let requested = num("/config/messages")?;
            want("acked", num("/acked")?, requested)?;
            want("delivered", num("/delivered")?, requested)?;
            want("send errors", num("/send_errors")?, 0)?;
            want("seq anomalies", num("/seq_anomalies")?, 0)?;
            want("bad content", num("/bad_content")?, 0)?;
            if is_true("/stalled")
                || !is_empty("/sender_failures")
                || !is_empty("/receiver_failures")
            {
                bail!(
                    "stalled or failed: stalled={} senders={} receivers={}",
                    r["stalled"],
                    r["sender_failures"],
                    r["receiver_failures"]
                );
            }
            Ok(format!("{requested}/{requested} messages delivered"))
        }
        "idle" | "idle-procs" => {
            if planned {
                spread_as_planned(name, r)?;
            }
            let n = num("/config/connections")?;
            want("opened", num("/opened")?, n)?;
            want("closed by the server", num("/closed_by_server")?, 0)?;
            Ok(format!("{n}/{n} connections opened and held"))
        }
        "broadcast" | "broadcast-procs" | "sse" => {
            if planned {
                spread_as_planned(name, r)?;
            }
            let n = num("/config/connections")?;
            let k = num("/config/broadcasts")?;
            want("opened", num("/opened")?, n)?;
            want("broadcasts sent", num("/broadcasts_sent")?, k)?;
            want("delivered", num("/delivered")?, n * k)?;
            want("duplicates", num("/duplicates")?, 0)?;
            if is_true("/stalled") || !is_empty("/ended_early") {
                bail!("stalled={} ended_early={}", r["stalled"], r["ended_early"]);
            }
            Ok(format!(
                "{}/{} deliveries ({n} connections x {k} broadcasts)",
                n * k,
                n * k
            ))
        }
        "sync" => {
            let m = num("/config/messages")?;
            want("acked", num("/fill/acked")?, m)?;
            for way in ["http", "ws", "sse"] {
                want(
                    &format!("{way} messages"),
                    num(&format!("/{way}/messages"))?,
                    m,
                )?;
                want(&format!("{way} gaps"), num(&format!("/{way}/gaps"))?, 0)?;
                if !is_true(&format!("/{way}/complete")) {
                    bail!("{way} catch-up incomplete: {}", r[way]);
                }
            }
            Ok(format!(
                "{m} missed messages caught up over http ({} pages), ws and sse",
                num("/http/pages")?
            ))
        }
        "group" => {
            let g = num("/config/members")?;
            let s = num("/config/messages")?;
            want("opened", num("/opened")?, g)?;
            want("acked", num("/acked")?, s)?;
            want("delivered", num("/delivered")?, g * s)?;
            want("duplicates", num("/duplicates")?, 0)?;
            if is_true("/stalled") || !is_empty("/ended_early") || !is_empty("/sender_failure") {
                bail!(
                    "stalled={} ended_early={} sender={}",
                    r["stalled"],
                    r["ended_early"],
                    r["sender_failure"]
                );
            }
            Ok(format!(
                "{}/{} deliveries ({g} members x {s} messages)",
                g * s,
                g * s
            ))
        }
        "login" => {
            for phase in ["password", "qr"] {
                want(
                    &format!("{phase} failures"),
                    num(&format!("/{phase}/failed"))?,
                    0,
                )?;
                if num(&format!("/{phase}/ok"))? == 0 {
                    bail!("no {phase} login succeeded");
                }
            }
            Ok(format!(
                "{} password and {} QR logins",
                num("/password/ok")?,
                num("/qr/ok")?
            ))
        }
        "webhooks" => {
            let requested = num("/config/messages")?;
            want("delivered", num("/delivered")?, requested)?;
            if is_true("/stalled") {
                bail!("stalled after {} deliveries", num("/delivered")?);
            }
            Ok(format!("{requested}/{requested} webhook deliveries"))
        }
        other => bail!("no check for scenario {other}"),
    }
}

/// Checks that a `-procs` run says it ran spread as planned.
fn spread_as_planned(name: &str, r: &Value) -> Result<()> {
    let (procs, ips) = if name.ends_with("-procs") {
        (2, json!(["127.0.0.1", "127.0.0.2"]))
    } else {
        (1, json!([]))
    };
    let got = (r.pointer("/config/procs"), r.pointer("/config/source_ips"));
    if got != (Some(&json!(procs)), Some(&ips)) {
        bail!(
            "expected {procs} process(es) from {ips}, the report says {:?} from {:?}",
            got.0,
            got.1
        );
    }
    Ok(())
}

/// The server process under test.
struct Server {
    child: Child,
    pid: u32,
    url: String,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts the server and waits for its `listening on` line.
    async fn start(bin: &Path, data_dir: &Path, password: &str, wait: Duration) -> Result<Server> {
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir);
        // The caller's own UNIMSG_* settings (a config file, another data
        // directory, limits) would change what is tested; only the log
        // filter may come through.
        for (key, _) in std::env::vars_os() {
            if let Some(k) = key.to_str()
                && k.starts_with("UNIMSG_")
                && !k.starts_with("UNIMSG_LOG__")
            {
                cmd.env_remove(k);
            }
        }
        if std::env::var_os("UNIMSG_LOG__LEVEL").is_none() {
            cmd.env("UNIMSG_LOG__LEVEL", "warn");
        }
        cmd.env("UNIMSG_ADMIN_PASSWORD", password)
            .env("UNIMSG_LIMITS__LOGIN_PER_MINUTE", "0")
            .env("UNIMSG_LIMITS__REGISTER_PER_MINUTE", "0")
            .env("UNIMSG_LIMITS__QR_PER_MINUTE", "0")
            .env("UNIMSG_LIMITS__TOKEN_PER_MINUTE", "0")
            .env("UNIMSG_LIMITS__ADMIN_PER_SECOND", "0")
            .env("UNIMSG_LIMITS__SEND_PER_MINUTE", "0")
            .env("UNIMSG_LIMITS__DELIVERIES_PER_MINUTE", "0")
            // The webhooks scenario's receiver is on loopback.
            .env("UNIMSG_HOOKS__ALLOW_PRIVATE_TARGETS", "true")
            // Every connection comes from 127.0.0.1, many share a session.
            .env("UNIMSG_HTTP__MAX_CONNECTIONS_PER_IP", "0")
            .env("UNIMSG_DELIVERY__MAX_CONNECTIONS_PER_SESSION", "0")
            // `direct-ws` keeps 16 sends in flight per socket: pipelined.
            .env("UNIMSG_DELIVERY__WS_SEND_WINDOW", "64")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        let (tx, mut lines) = mpsc::unbounded_channel();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(follow(out, log.clone(), tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(follow(err, log.clone(), tx));
        }
        let mut server = Server {
            child,
            pid,
            url: String::new(),
            log,
        };
        let deadline = Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, lines.recv()).await {
                Ok(Some(line)) => {
                    if let Some(addr) = unimsg_testkit::unimsg::listening_addr(&line) {
                        server.url = format!("http://{addr}");
                        return Ok(server);
                    }
                }
                Ok(None) => {
                    // Both pipes closed: the server is exiting or gone.
                    let status = tokio::time::timeout(STOP_TIMEOUT, server.child.wait()).await;
                    server.stop().await;
                    let status = match status {
                        Ok(Ok(status)) => status.to_string(),
                        _ => "unknown status".to_owned(),
                    };
                    bail!(
                        "the server exited before listening ({status}):\n{}",
                        server.log_tail().join("\n")
                    );
                }
                Err(_) => {
                    server.stop().await;
                    bail!(
                        "the server logged no '{LISTENING}' line within {} s:\n{}",
                        wait.as_secs(),
                        server.log_tail().join("\n")
                    );
                }
            }
        }
    }

    /// The exit status, once the server has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the server and waits for it.
    async fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Err(e) = self.child.start_kill() {
            eprintln!("smoke: cannot kill the server: {e}");
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "smoke: the server did not exit within {} s of SIGKILL",
                STOP_TIMEOUT.as_secs()
            );
        }
    }

    fn log_tail(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Reads one of the server's output pipes line by line into the log tail,
/// and passes each line on while someone listens. Reading until the pipe
/// closes also keeps the server from blocking on a full pipe.
async fn follow(
    pipe: impl AsyncRead + Unpin,
    log: Arc<Mutex<VecDeque<String>>>,
    tx: mpsc::UnboundedSender<String>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(mut log) = log.lock() {
            if log.len() == LOG_TAIL {
                log.pop_front();
            }
            log.push_back(line.clone());
        }
        let _ = tx.send(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_a_check() {
        for (name, _) in plan() {
            let err = check_complete(name, &json!({}), true)
                .err()
                .map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| !e.starts_with("no check for scenario")),
                "{name}: {err:?}"
            );
        }
    }

    #[test]
    fn incomplete_reports_fail() {
        let broadcast = json!({
            "config": {"connections": 20, "broadcasts": 3, "procs": 1, "source_ips": []},
            "opened": 20, "broadcasts_sent": 3, "delivered": 59, "duplicates": 0,
            "stalled": true, "ended_early": {},
        });
        let err = check_complete("broadcast", &broadcast, true)
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("delivered: 59, expected 60"));
        let mut complete = broadcast;
        complete["delivered"] = json!(60);
        complete["stalled"] = json!(false);
        assert!(check_complete("broadcast", &complete, true).is_ok());
    }
}
