//! `unimsg-bench`: a load generator for an already running unimsg server,
//! and a smoke mode that starts its own server and runs every scenario.
//!
//! Each scenario prints a human summary on stdout, then, as the very last
//! line of stdout, one JSON object with every measured number. Progress goes
//! to stderr. With `--server-pid`, server CPU time and RSS are read from
//! `/proc` (Linux only) around the measured phases. With
//! `--admin-password`, users are created through the admin API (bulk
//! import, minted tokens) instead of register + login, which costs the
//! server an argon2 hash each; `broadcast` and `sse` need it.
//!
//! ```text
//! unimsg-bench --url http://127.0.0.1:8080 --server-pid 1234 direct --messages 20000 --window 64
//! unimsg-bench --url http://127.0.0.1:8080 --server-pid 1234 idle --connections 1000
//! unimsg-bench --url http://127.0.0.1:8080 --server-pid 1234 idle --connections 19000 --procs 2 --source-ips 127.0.0.1,127.0.0.2
//! unimsg-bench --url http://127.0.0.1:8080 --admin-password PW broadcast --connections 1000
//! unimsg-bench --url http://127.0.0.1:8080 sync --messages 10000
//! unimsg-bench smoke --server-bin target/debug/unimsg
//! ```
//!
//! The scenarios live in the library (`src/lib.rs`); the same `idle`,
//! `broadcast` and `direct` against other servers are `unimsg-bench-peers`
//! (`crates/bench-peers`), on the library's scenario engine.

use anyhow::{Context, Result};
use clap::Parser;
use unimsg_bench::procfs::Probe;
use unimsg_bench::{Ctx, Scenario, SummaryTo, hold, run_scenario, smoke};
use unimsg_client::{AdminCredentials, Client};

#[derive(Debug, Parser)]
#[command(
    name = "unimsg-bench",
    version,
    about = "Load generator for a running unimsg server"
)]
struct Cli {
    /// Base URL of the server (ignored by `smoke`, which starts its own).
    #[arg(
        long,
        global = true,
        env = "UNIMSG_BENCH_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// The server's process id, to report its CPU time and RSS (from /proc).
    #[arg(long, global = true, env = "UNIMSG_BENCH_SERVER_PID")]
    server_pid: Option<u32>,
    /// Admin account for the admin API (user import, tokens, broadcasts).
    #[arg(
        long,
        global = true,
        env = "UNIMSG_BENCH_ADMIN_ID",
        default_value = "admin"
    )]
    admin_id: String,
    /// Password of `--admin-id`. Without it users register and log in one
    /// by one, and `broadcast` and `sse` cannot run.
    #[arg(long, global = true, env = "UNIMSG_BENCH_ADMIN_PASSWORD")]
    admin_password: Option<String>,
    /// Trust only the CA certificate(s) in this PEM file for an https://
    /// server (WSS and SSE too).
    #[arg(long, global = true, env = "UNIMSG_BENCH_CA_CERT", value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    /// Worker threads of the bench's own runtime [default: one per core].
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
    #[command(subcommand)]
    scenario: Scenario,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(usize::try_from(threads)?);
    }
    let runtime = runtime.build().context("cannot start the async runtime")?;
    if let Scenario::Hold = cli.scenario {
        let outcome = runtime.block_on(hold::child_main());
        // Without waiting for the blocking read of stdin to return.
        runtime.shutdown_background();
        return outcome;
    }
    let report = runtime.block_on(run(cli))?;
    println!("{report}");
    Ok(())
}

async fn run(cli: Cli) -> Result<serde_json::Value> {
    if let Scenario::Smoke(args) = cli.scenario {
        return smoke::run(args).await;
    }
    if let Scenario::AllowHook(args) = cli.scenario {
        return unimsg_bench::webhooks::allow_hook(args).await;
    }
    let ca_pem = cli
        .ca_cert
        .as_ref()
        .map(|path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --ca-cert {}", path.display()))
        })
        .transpose()?;
    let client = Client::with_options(&cli.url, None, ca_pem.as_deref().map(str::as_bytes))
        .with_context(|| format!("bad --url {:?} or --ca-cert", cli.url))?;
    client
        .health()
        .await
        .with_context(|| format!("the server at {} does not answer /healthz", cli.url))?;
    let server = cli.server_pid.map(Probe::new).transpose()?;
    let admin = cli.admin_password.map(|secret| {
        client.admin(AdminCredentials::Basic {
            admin_id: cli.admin_id.clone(),
            secret,
        })
    });
    let ctx = Ctx {
        client,
        admin,
        server,
        bench: Probe::this_process(),
        summary_to: SummaryTo::Stdout,
        ca_pem,
    };
    let name = cli.scenario.name();
    let report = run_scenario(&ctx, cli.scenario).await?;
    // An incomplete run still reports what it measured, then fails.
    if let Err(problem) = smoke::check_complete(name, &report, false) {
        println!("{report}");
        anyhow::bail!("{name} is incomplete: {problem}");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use unimsg_bench::direct;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() -> Result<()> {
        let cli = Cli::try_parse_from([
            "unimsg-bench",
            "direct",
            "--senders",
            "4",
            "--url",
            "http://h:1",
            "--server-pid",
            "7",
        ])?;
        assert_eq!(cli.url, "http://h:1");
        assert_eq!(cli.server_pid, Some(7));
        match cli.scenario {
            Scenario::Direct(d) => {
                assert_eq!(d.senders, 4);
                assert_eq!(d.messages, 20_000);
                assert_eq!(d.transport, direct::Transport::Http);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["unimsg-bench", "direct", "--senders", "0"]).is_err());
        Ok(())
    }

    #[test]
    fn new_scenarios_have_their_defaults() -> Result<()> {
        let cli = Cli::try_parse_from(["unimsg-bench", "broadcast", "--admin-password", "pw"])?;
        assert_eq!(cli.admin_password.as_deref(), Some("pw"));
        match cli.scenario {
            Scenario::Broadcast(b) => assert_eq!((b.connections, b.broadcasts), (1000, 5)),
            other => panic!("parsed as {other:?}"),
        }
        match Cli::try_parse_from(["unimsg-bench", "sync"])?.scenario {
            Scenario::Sync(s) => assert_eq!(s.messages, 10_000),
            other => panic!("parsed as {other:?}"),
        }
        match Cli::try_parse_from(["unimsg-bench", "group"])?.scenario {
            Scenario::Group(g) => assert_eq!(g.members, 200),
            other => panic!("parsed as {other:?}"),
        }
        match Cli::try_parse_from(["unimsg-bench", "smoke", "--server-bin", "x"])?.scenario {
            Scenario::Smoke(s) => assert_eq!(s.server_bin, std::path::PathBuf::from("x")),
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["unimsg-bench", "smoke"]).is_err());
        assert!(Cli::try_parse_from(["unimsg-bench", "group", "--members", "1"]).is_err());
        Ok(())
    }
}
