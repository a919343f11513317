//! `peer … idle`: N idle connections to a peer, the counterpart of unimsg's
//! `idle` (same flags, same JSON keys).
//!
//! Each connection is what a client of that peer holds to be reachable:
//! nchan, a WebSocket subscribed to a channel; soketi, a Pusher WebSocket
//! subscribed to a public channel; mosquitto, an MQTT session over
//! WebSocket subscribed to a topic; ejabberd, an authenticated, bound XMPP
//! session with initial presence. `--conns-per-user` connections share one
//! channel, topic or user, as unimsg's connections share one user's inbox
//! (ejabberd allows 10 sessions per user in the bench config). ejabberd's
//! users are registered before the quiet period, so the RSS baseline
//! follows it.
//!
//! Reported, as for unimsg: server RSS before opening, right after opening
//! (plus `--settle-ms`), after `--hold-secs` and after closing; the growth
//! per connection; server CPU spent opening and while holding.

use std::time::Duration;

use anyhow::{Result, bail};
use rumqttc::mqttbytes::QoS;
use serde_json::json;
use unimsg_bench::engine::idle::{IdleCosts, IdleSamples, cpu_between, hold, quiet};
use unimsg_bench::say;

use crate::fleet::{self, Sub};
use crate::{Outcome, Peer, PeerCtx, mqtt, nchan, soketi, xmpp};

/// Sessions per user that `scripts/peers/ejabberd/ejabberd.yml` allows.
const EJABBERD_MAX_SESSIONS: u64 = 10;

#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Connections to open.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub connections: u64,
    /// Connections sharing one channel, topic or (ejabberd) user.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub conns_per_user: u64,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub connect_concurrency: u64,
    /// How long to keep the connections open and idle, in seconds.
    #[arg(long, default_value_t = 10)]
    pub hold_secs: u64,
    /// Pause after opening (and after closing) before sampling RSS, in ms.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// Quiet time before the RSS baseline, in seconds.
    #[arg(long, default_value_t = 12)]
    pub quiet_secs: u64,
}

pub(crate) async fn run(ctx: &PeerCtx, args: IdleArgs) -> Result<Outcome> {
    let peer = ctx.peer;
    if matches!(peer, Peer::RedisStreams | Peer::Nats) {
        bail!(
            "idle is not implemented for {}: it is a durable peer of `direct` only",
            peer.as_str()
        );
    }
    let n = args.connections;
    let per_user = args.conns_per_user;
    if peer == Peer::Ejabberd && per_user > EJABBERD_MAX_SESSIONS {
        bail!(
            "ejabberd allows {EJABBERD_MAX_SESSIONS} sessions per user (max_user_sessions): use --conns-per-user {EJABBERD_MAX_SESSIONS} or less"
        );
    }
    let run = crate::run_id();
    let groups = n.div_ceil(per_user);
    let users: Vec<String> = (0..groups).map(|u| format!("i{run}u{u}")).collect();
    if peer == Peer::Ejabberd {
        eprintln!("idle: registering {groups} ejabberd users (run {run})");
        xmpp::register(ctx, &users).await?;
    }
    let before_open = quiet(args.quiet_secs, ctx.server.as_ref()).await;

    // Open.
    let users = &users;
    let run_ref = run.as_str();
    let fleet = fleet::open(
        n,
        usize::try_from(args.connect_concurrency)?,
        &run,
        "idle",
        |i| async move {
            let group = i / per_user;
            open(ctx, run_ref, i, group, users).await
        },
    )
    .await?;
    let opened = fleet.opened as u64;
    let failed = fleet.failed();
    let connect_secs = fleet.connect_secs.max(1e-9);
    let settle = Duration::from_millis(args.settle_ms);
    tokio::time::sleep(settle).await;
    let after_open = ctx.server.as_ref().and_then(|p| p.try_sample());
    let closed_before_hold = fleet.ended_so_far();

    // Hold.
    let closed_so_far = async || Ok(fleet.ended_so_far());
    let held = hold(
        args.hold_secs,
        opened,
        ctx.server.as_ref(),
        &ctx.bench,
        closed_so_far,
    )
    .await?;
    let (hold_secs, after_hold) = (held.secs, held.after_hold);
    let closed_during_hold = fleet.ended_so_far() - closed_before_hold;

    // Close.
    let connect = fleet.connect_latency.summary();
    let failures = fleet.failures.clone();
    let closed = fleet.close().await;
    tokio::time::sleep(settle).await;
    let after_close = ctx.server.as_ref().and_then(|p| p.try_sample());

    // Report.
    let samples = IdleSamples {
        before_open,
        after_open,
        after_hold,
        after_close,
    };
    let costs = IdleCosts::new(samples, opened, connect_secs, connect, hold_secs);
    let bench_cpu = cpu_between(held.bench_before, held.bench_after);
    let closed_by_server = closed.ended_early_count();

    say!(
        ctx,
        "== {} idle: {n} connections, {per_user} per channel/user ({groups} of them)",
        peer.as_str()
    );
    costs.say(ctx, failed);
    if let Some(cpu) = bench_cpu {
        say!(ctx, "bench cpu      {cpu:.3} s during hold");
    }
    let mut problems = Vec::new();
    if failed > 0 {
        problems.push(format!("{failed} of {n} connections failed to open"));
    }
    if closed_by_server > 0 {
        problems.push(format!(
            "{closed_by_server} connections closed by the server ({closed_during_hold} during the hold)"
        ));
    }
    if !problems.is_empty() {
        say!(ctx, "PROBLEMS       {}", problems.join("; "));
        for (reason, count) in failures.iter().chain(&closed.ended_early) {
            say!(ctx, "  {count} x {reason}");
        }
    }

    let mut report = json!({
        "scenario": "idle",
        "peer": peer.as_str(),
        "run": run,
        "config": {
            "connections": n,
            "conns_per_user": per_user,
            "users": groups,
            "connect_concurrency": args.connect_concurrency,
            "hold_secs": args.hold_secs,
            "settle_ms": args.settle_ms,
            "quiet_secs": args.quiet_secs,
        },
        "opened": opened,
        "failed": failed,
        "failures": failures,
        "closed_by_server": closed_by_server,
        "closed_during_hold": closed_during_hold,
        "close_reasons": closed.ended_early,
        "other_events": closed.other_events,
    });
    costs.add_to(&mut report, ctx.server.as_ref(), bench_cpu);
    Ok(Outcome { report, problems })
}

/// Opens idle connection `i`, member of channel / topic / user `group`.
async fn open(ctx: &PeerCtx, run: &str, i: u64, group: u64, users: &[String]) -> Result<Sub> {
    Ok(match ctx.peer {
        Peer::Nchan => Sub::Nchan(Box::new(
            nchan::subscribe(ctx, &crate::channel("idle", run, Some(group))).await?,
        )),
        Peer::Soketi => Sub::Pusher(Box::new(
            soketi::subscribe(ctx, &crate::channel("idle", run, Some(group))).await?,
        )),
        Peer::Mosquitto => {
            let client_id = format!("i{run}c{i}");
            let session = mqtt::Session {
                client_id: &client_id,
                clean: true,
            };
            let mut conn = mqtt::Conn::connect(&ctx.ws_url("/"), session).await?;
            conn.subscribe(&format!("unimsg-bench/{run}/idle/{group}"), QoS::AtMostOnce)
                .await?;
            Sub::Mqtt(Box::new(conn))
        }
        Peer::Ejabberd => {
            let Some(user) = usize::try_from(group).ok().and_then(|g| users.get(g)) else {
                bail!("no user for connection {i}");
            };
            let login = xmpp::Login {
                user,
                password: xmpp::PASSWORD,
                resource: &format!("c{i}"),
            };
            Sub::Xmpp(Box::new(
                xmpp::Conn::login(&ctx.ws_url("/ws"), login).await?,
            ))
        }
        Peer::RedisStreams | Peer::Nats => {
            bail!("unreachable: {} was refused above", ctx.peer.as_str())
        }
    })
}
