//! `idle`: the memory and CPU cost of idle WebSocket connections.
//!
//! Logging in is expensive (argon2), so connections share sessions: one user
//! (one `cli` session) per `--conns-per-user` connections; the server
//! allows any number of connections per session. Each connection uses the
//! query-token form (`/v1/ws?access_token=…`) and counts as open once the
//! server's `ready` frame arrived. A task per connection keeps reading, so
//! the server's heartbeat pings are answered (by tungstenite, while reading);
//! it would count events of this run, of which there are none.
//!
//! Reported: server RSS before opening, right after all connections are
//! open (plus `--settle-ms`) and at the end of `--hold-secs`; the growth per
//! connection; server CPU spent opening them and during the hold. The
//! server pings every `delivery.heartbeat_secs` (25 s by default), so a hold
//! shorter than that measures timers and nothing else.
//!
//! The server's RSS is noisy in ways unrelated to connections, which the
//! scenario works around:
//! - Every argon2 hash (register, login) takes a 19 MiB scratch buffer on a
//!   blocking thread. Under glibc's malloc those buffers stayed resident
//!   after being freed and were returned at unpredictable later moments
//!   (seen: −170 MiB in the middle of opening 1000 connections). The
//!   server now hashes on a fixed pool of two workers that reuse their
//!   buffers, allocates with jemalloc, and with `--admin-password` users
//!   are imported and given minted tokens, which hashes no password at all
//!   (`scripts/bench` does this).
//! - Opening connections runs store reads on tokio's blocking pool, which
//!   grows by dozens of threads (stacks, arenas) and shrinks again after
//!   10 s idle. The baseline is taken after `--quiet-secs` without
//!   requests, and the per-connection figure uses the sample at the end of
//!   the hold (when the hold is long enough for those threads to exit);
//!   the figure right after opening is reported too.
//!
//! One process can hold about as many sockets as its open-file limit
//! (20 000 on the reference machine, ~19.9k connections), and one source
//! address reaches the server through ~28k ephemeral ports. `--procs P`
//! spreads the connections over P child processes and `--source-ips`
//! over several local addresses (see [`crate::hold`]); the server's RSS and
//! CPU are sampled by this process either way, and the bench's own CPU
//! during the hold is the sum over its processes.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use unimsg_client::proto::EventType;

use crate::Ctx;
use crate::engine::idle::{IdleCosts, IdleSamples, cpu_between, hold, quiet};
use crate::fanout::Transport;
use crate::hold::{self, Holders, OpenedAll, Plan, SpreadArgs};
use crate::users;

#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// WebSocket connections to open.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub connections: u64,
    /// Connections sharing one user (and its one session).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub conns_per_user: u64,
    /// Connection attempts in flight at once (over all processes).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub connect_concurrency: u64,
    /// How long to keep the connections open and idle, in seconds.
    #[arg(long, default_value_t = 10)]
    pub hold_secs: u64,
    /// Pause after opening (and after closing) before sampling RSS, in ms.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// Quiet time between creating the users and the RSS baseline, so the
    /// server's idle blocking threads (kept 10 s) exit first, in seconds.
    #[arg(long, default_value_t = 12)]
    pub quiet_secs: u64,
    #[command(flatten)]
    pub spread: SpreadArgs,
}

pub async fn run(ctx: &Ctx, args: IdleArgs) -> Result<Value> {
    let n = args.connections;
    let per_user = args.conns_per_user;
    let procs = args.spread.procs.max(1);
    if let Some(limit) = open_files_limit()
        && n.div_ceil(procs) + 64 > limit
    {
        eprintln!(
            "idle: warning: {} connections per process need more file descriptors than the limit ({limit}); raise `ulimit -n` or --procs",
            n.div_ceil(procs)
        );
    }
    let run = users::run_id();
    let user_count = usize::try_from(n.div_ceil(per_user))?;
    eprintln!("idle: creating {user_count} users for {n} connections (run {run})");
    let users = users::provision(ctx, &run, "i", user_count, 1).await?;

    let settle = Duration::from_millis(args.settle_ms);
    let before_open = quiet(args.quiet_secs, ctx.server.as_ref()).await;

    // Open.
    let plan = Plan {
        label: "idle",
        url: ctx.client.base_url().to_string(),
        transport: Transport::Ws,
        connect_concurrency: args.connect_concurrency,
        // Nothing is sent to this run: the readers only keep reading.
        kind: EventType::BroadcastNew,
        run: run.clone(),
        spread: &args.spread,
        ca_pem: ctx.ca_pem.clone(),
    };
    let mut holders = Holders::start(&plan, &users, n, per_user).await?;
    let all = OpenedAll::of(&holders.ready().await?)?;
    let (opened, failed) = (all.opened, all.failed());
    let connect_secs = all.connect_secs.max(1e-9);
    let failures = all.failures;
    tokio::time::sleep(settle).await;
    let after_open = ctx.server.as_ref().and_then(|p| p.try_sample());
    let at_open = holders.report(&[]).await?;
    let closed_before_hold: u64 = at_open.iter().map(|c| c.ended).sum();

    // Hold.
    let closed_so_far = async || Ok(holders.report(&[]).await?.iter().map(|c| c.ended).sum());
    let held = hold(
        args.hold_secs,
        opened,
        ctx.server.as_ref(),
        &ctx.bench,
        closed_so_far,
    )
    .await?;
    let (hold_secs, after_hold) = (held.secs, held.after_hold);
    let at_end = holders.report(&[]).await?;
    let closed_during_hold = at_end
        .iter()
        .map(|c| c.ended)
        .sum::<u64>()
        .saturating_sub(closed_before_hold);

    // Close.
    let close_reasons = hold::ended_all(&holders.close().await?).ended_early;
    let closed_by_server: u64 = close_reasons.values().sum();
    tokio::time::sleep(settle).await;
    let after_close = ctx.server.as_ref().and_then(|p| p.try_sample());

    // Report.
    let samples = IdleSamples {
        before_open,
        after_open,
        after_hold,
        after_close,
    };
    let connect = all.connect_latency.summary();
    let costs = IdleCosts::new(samples, opened, connect_secs, connect, hold_secs);
    let bench_cpu = match (
        cpu_between(held.bench_before, held.bench_after),
        Holders::child_cpu_secs(&at_open, &at_end),
    ) {
        (Some(own), Some(children)) => Some(own + children),
        _ => None,
    };
    let source_ips = args.spread.source_ips_json();

    say!(
        ctx,
        "== idle: {n} WebSocket connections, {per_user} per user ({user_count} users), {procs} process(es), source {}",
        if source_ips.is_empty() {
            "any".to_owned()
        } else {
            source_ips.join(",")
        }
    );
    costs.say(ctx, failed);
    if let Some(cpu) = bench_cpu {
        say!(
            ctx,
            "bench cpu      {cpu:.3} s during hold (all bench processes)"
        );
    }
    if failed > 0 || closed_by_server > 0 {
        say!(
            ctx,
            "PROBLEMS       {failed} failed to open, {closed_by_server} closed by the server ({closed_during_hold} during the hold)",
        );
        for (reason, count) in failures.iter().chain(&close_reasons) {
            say!(ctx, "  {count} x {reason}");
        }
    }

    let mut report = json!({
        "scenario": "idle",
        "run": run,
        "config": {
            "connections": n,
            "conns_per_user": per_user,
            "users": user_count,
            "connect_concurrency": args.connect_concurrency,
            "hold_secs": args.hold_secs,
            "settle_ms": args.settle_ms,
            "quiet_secs": args.quiet_secs,
            "procs": procs,
            "source_ips": source_ips,
        },
        "opened": opened,
        "failed": failed,
        "failures": failures,
        "closed_by_server": closed_by_server,
        "closed_during_hold": closed_during_hold,
        "close_reasons": close_reasons,
    });
    costs.add_to(&mut report, ctx.server.as_ref(), bench_cpu);
    Ok(report)
}

/// The soft limit on open files of this process, from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&limits)
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    crate::procfs::first_number_after(limits, "Max open files")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_files_limit_is_parsed() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            20000                40000                files     \n";
        assert_eq!(parse_open_files_limit(limits), Some(20000));
        assert_eq!(parse_open_files_limit("nothing"), None);
    }
}
