//! The library behind `unimsg-bench`: its scenarios, the child-process
//! holders of their connections, the measuring helpers, and the scenario
//! engine that the peer adapters (`crates/bench-peers`) share with them.
//!
//! Each scenario module has its `clap` arguments and one `run` returning
//! the scenario's JSON report; the binary (`src/main.rs`) only parses the
//! command line and prints.

/// Writes one line of a scenario's human summary (see [`Ctx::say`]); any
/// context with a `say(std::fmt::Arguments)` method will do.
#[macro_export]
macro_rules! say {
    ($ctx:expr, $($arg:tt)*) => {
        $ctx.say(format_args!($($arg)*))
    };
}

pub mod broadcast;
pub mod direct;
pub mod engine;
pub mod fanout;
pub mod group;
pub mod hold;
pub mod idle;
pub mod login;
pub mod procfs;
pub mod smoke;
pub mod stats;
pub mod sync;
pub mod users;
pub mod webhooks;

use std::io::Write;

use anyhow::{Context, Result};
use clap::Subcommand;
use unimsg_client::{AdminClient, Client};

use crate::procfs::Probe;

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// One-to-one chat: throughput and send→receive latency.
    Direct(direct::DirectArgs),
    /// Many idle WebSocket connections: server memory and CPU per connection.
    Idle(idle::IdleArgs),
    /// Admin broadcasts fanned out to many WebSocket connections.
    Broadcast(broadcast::BroadcastArgs),
    /// Catching up on many missed messages: HTTP sync, WebSocket and SSE replay.
    Sync(sync::SyncArgs),
    /// Group chat: one member sends, every member's WebSocket receives.
    Group(group::GroupArgs),
    /// Password logins and QR-code logins per second.
    Login(login::LoginArgs),
    /// Webhook deliveries per second to a receiver run by the bench.
    Webhooks(webhooks::WebhooksArgs),
    /// Runs a before-send hook that allows everything (for `direct` with
    /// `hooks.before_send.url` set), until killed.
    AllowHook(webhooks::AllowHookArgs),
    /// Admin broadcasts fanned out to many SSE connections.
    Sse(broadcast::BroadcastArgs),
    /// Starts a server and runs every scenario with tiny parameters,
    /// checking that everything expected was delivered (not timings).
    Smoke(smoke::SmokeArgs),
    /// Internal: holds a share of the connections of `idle`, `broadcast`
    /// or `sse` run with `--procs` > 1 (a job on stdin, JSON lines).
    #[command(hide = true)]
    Hold,
}

impl Scenario {
    /// The scenario's name in reports; empty for `smoke` and `hold`.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Direct(_) => "direct",
            Scenario::Idle(_) => "idle",
            Scenario::Broadcast(_) => "broadcast",
            Scenario::Sync(_) => "sync",
            Scenario::Group(_) => "group",
            Scenario::Login(_) => "login",
            Scenario::Webhooks(_) => "webhooks",
            Scenario::AllowHook(_) => "allow-hook",
            Scenario::Sse(_) => "sse",
            Scenario::Smoke(_) | Scenario::Hold => "",
        }
    }
}

/// Where a scenario's human summary goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryTo {
    /// Standard output, before the JSON line (a scenario run on its own).
    Stdout,
    /// Standard error (inside `smoke`, whose stdout is its own summary).
    Stderr,
}

/// What every scenario works with.
#[derive(Debug)]
pub struct Ctx {
    pub client: Client,
    /// The admin API, when `--admin-password` was given.
    pub admin: Option<AdminClient>,
    /// The server process, when `--server-pid` was given.
    pub server: Option<Probe>,
    /// The bench process itself.
    pub bench: Probe,
    pub summary_to: SummaryTo,
    /// The CA certificates (PEM) an `https://` server is trusted by, from
    /// `--ca-cert`; `None` trusts the system's roots. Handed to the
    /// holder processes too.
    pub ca_pem: Option<String>,
}

impl Ctx {
    /// Writes one line of the human summary (use the `say!` macro).
    pub fn say(&self, line: std::fmt::Arguments<'_>) {
        // A closed stdout or stderr is no reason to abort a measurement.
        let _ = match self.summary_to {
            SummaryTo::Stdout => writeln!(std::io::stdout().lock(), "{line}"),
            SummaryTo::Stderr => writeln!(std::io::stderr().lock(), "{line}"),
        };
    }

    /// The admin API, or an error naming the scenario that needs it.
    pub fn admin(&self, scenario: &str) -> Result<&AdminClient> {
        self.admin.as_ref().with_context(|| {
            format!("`{scenario}` uses the admin API: pass --admin-password (or UNIMSG_BENCH_ADMIN_PASSWORD)")
        })
    }
}

/// Runs one measuring scenario and returns its JSON report.
pub async fn run_scenario(ctx: &Ctx, scenario: Scenario) -> Result<serde_json::Value> {
    match scenario {
        Scenario::Direct(args) => direct::run(ctx, args).await,
        Scenario::Idle(args) => idle::run(ctx, args).await,
        Scenario::Broadcast(args) => broadcast::run(ctx, args, fanout::Transport::Ws).await,
        Scenario::Sync(args) => sync::run(ctx, args).await,
        Scenario::Group(args) => group::run(ctx, args).await,
        Scenario::Login(args) => login::run(ctx, args).await,
        Scenario::Webhooks(args) => webhooks::run(ctx, args).await,
        Scenario::AllowHook(args) => webhooks::allow_hook(args).await,
        Scenario::Sse(args) => broadcast::run(ctx, args, fanout::Transport::Sse).await,
        Scenario::Smoke(_) => anyhow::bail!("smoke does not nest"),
        Scenario::Hold => anyhow::bail!("`hold` is started by `idle`, `broadcast` or `sse`"),
    }
}
