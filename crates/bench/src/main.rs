//! `unimsg-bench`: a load generator for an already running unimsg server.
//!
//! Each scenario prints a human summary on stdout, then, as the very last
//! line of stdout, one JSON object with every measured number. Progress goes
//! to stderr. With `--server-pid`, server CPU time and RSS are read from
//! `/proc` (Linux only) around the measured phases.
//!
//! ```text
//! unimsg-bench --url http://127.0.0.1:8080 --server-pid 1234 direct --messages 20000 --window 64
//! unimsg-bench --url http://127.0.0.1:8080 --server-pid 1234 idle --connections 1000
//! ```

mod direct;
mod idle;
mod procfs;
mod stats;
mod users;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use unimsg_client::Client;

use crate::procfs::Probe;

#[derive(Debug, Parser)]
#[command(
    name = "unimsg-bench",
    version,
    about = "Load generator for a running unimsg server"
)]
struct Cli {
    /// Base URL of the server.
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
    /// Worker threads of the bench's own runtime [default: one per core].
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// One-to-one chat: throughput and send→receive latency.
    Direct(direct::DirectArgs),
    /// Many idle WebSocket connections: server memory and CPU per connection.
    Idle(idle::IdleArgs),
}

/// What every scenario works with.
#[derive(Debug)]
pub struct Ctx {
    pub client: Client,
    /// The server process, when `--server-pid` was given.
    pub server: Option<Probe>,
    /// The bench process itself.
    pub bench: Probe,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.build().context("cannot start the async runtime")?;
    let report = runtime.block_on(run(cli))?;
    println!("{report}");
    Ok(())
}

async fn run(cli: Cli) -> Result<serde_json::Value> {
    let client = Client::new(&cli.url).with_context(|| format!("bad --url {:?}", cli.url))?;
    client
        .health()
        .await
        .with_context(|| format!("the server at {} does not answer /healthz", cli.url))?;
    let server = cli.server_pid.map(Probe::new).transpose()?;
    let ctx = Ctx {
        client,
        server,
        bench: Probe::this_process(),
    };
    match cli.scenario {
        Scenario::Direct(args) => direct::run(&ctx, args).await,
        Scenario::Idle(args) => idle::run(&ctx, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
            Scenario::Idle(_) => panic!("parsed as idle"),
        }
        assert!(Cli::try_parse_from(["unimsg-bench", "direct", "--senders", "0"]).is_err());
        Ok(())
    }
}
