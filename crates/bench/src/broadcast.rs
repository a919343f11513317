//! `broadcast` and `sse`: admin broadcasts fanned out to N live
//! connections (WebSocket for `broadcast`, SSE for `sse`).
//!
//! Users are imported through the admin API with a minted `cli` token each
//! (`--conns-per-user` connections share one user and its session), the N
//! connections are opened, then K broadcasts are sent one after another with
//! `POST /v1/admin/broadcasts`: each starts once the previous one reached
//! every connection (or stalled). The content carries the run id and the
//! round, so broadcasts of other runs on the same server are ignored.
//!
//! For each broadcast: the time from the POST to the last connection
//! receiving its `broadcast.new` event, deliveries per second (connections /
//! that time) and the percentiles of the per-connection receive latency
//! (POST → event read). Over all broadcasts: the same, and with
//! `--server-pid` the server's CPU time during the broadcasts per delivered
//! event. A broadcast is stored once and placed for every online user in
//! one store read; each connection then writes its own copy (the rendered
//! data is shared, only the `seq` differs), so this is mostly the cost of N
//! socket writes per broadcast.
//!
//! `--procs` and `--source-ips` spread the connections over child
//! processes and local addresses ([`crate::hold`]). Arrivals are then
//! timed on the wall clock (shared by the processes) against the moment
//! the POST was sent; each holder reports per broadcast its deliveries,
//! its last arrival and a latency histogram, and this process adds them up.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use tokio::time::Instant;
use unimsg_client::AdminClient;
use unimsg_client::proto::EventType;
use unimsg_client::proto::admin::BroadcastRequest;

use crate::Ctx;
use crate::engine::idle::merge;
use crate::engine::rounds::{Publish, Round as RoundReport, Rounds, publish_rounds};
use crate::engine::say_opened;
use crate::fanout::{self, Transport};
use crate::hold::{self, Holders, OpenedAll, Plan, SpreadArgs};
use crate::stats::{Latency, round3};
use crate::users;

/// Users registered at once if [`users::provision`] had no admin
/// credentials; unused in practice, since broadcasting needs them and
/// users are then imported.
const REGISTER_CONCURRENCY: usize = 8;

#[derive(Debug, Clone, clap::Args)]
pub struct BroadcastArgs {
    /// Connections receiving the broadcasts.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub connections: u64,
    /// Connections sharing one user (and its one session).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub conns_per_user: u64,
    /// Broadcasts, sent one after another.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub broadcasts: u64,
    /// Connection attempts in flight at once (over all processes).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub connect_concurrency: u64,
    /// Length of the `text` padding of each broadcast, in bytes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub content_bytes: u64,
    /// Give up on a broadcast after this many seconds without a new delivery.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stall_secs: u64,
    #[command(flatten)]
    pub spread: SpreadArgs,
}

/// One broadcast's measurements.
#[derive(Debug)]
struct Round {
    /// When the POST was sent, wall clock µs since the UNIX epoch.
    posted_us: u64,
    post_latency: Option<Duration>,
    post_error: Option<String>,
    /// Deliveries so far, by holder (from progress reports; replaced by
    /// the holders' final counts at the end).
    by_holder: Vec<u64>,
    delivered: u64,
    /// The earliest and latest arrival, wall clock µs (the earliest only
    /// from the holders' final counts).
    first_us: Option<u64>,
    last_us: Option<u64>,
    latency: Latency,
}

impl Round {
    fn time_to_last(&self) -> Option<Duration> {
        self.last_us
            .map(|l| Duration::from_micros(l.saturating_sub(self.posted_us)))
    }

    fn time_to_first(&self) -> Option<Duration> {
        self.first_us
            .map(|f| Duration::from_micros(f.saturating_sub(self.posted_us)))
    }

    /// Takes a holder's progress report; true when it is news.
    fn progress(&mut self, holder: usize, delivered: u64, last_us: u64) -> bool {
        if self.by_holder.len() <= holder {
            self.by_holder.resize(holder + 1, 0);
        }
        self.last_us = self.last_us.max(Some(last_us));
        let known = &mut self.by_holder[holder];
        if delivered <= *known {
            return false;
        }
        self.delivered += delivered - *known;
        *known = delivered;
        true
    }
}

/// The admin broadcasts of one run, counted from the holders' progress.
struct Broadcasts<'a> {
    admin: &'a AdminClient,
    holders: &'a mut Holders,
    rounds: Vec<Round>,
    run: &'a str,
    pad: &'a str,
    base: Instant,
}

impl Publish for Broadcasts<'_> {
    async fn publish(&mut self, k: u64) -> Result<bool> {
        let content = json!({
            "text": self.pad,
            "run": self.run,
            "round": k,
            "t": fanout::nanos_since(self.base),
        });
        let req = BroadcastRequest {
            kind: "notification".into(),
            content,
            from: None,
        };
        let posted_us = hold::wall_us();
        let posted_at = Instant::now();
        let posted = self.admin.broadcast(&req).await;
        let ok = posted.is_ok();
        self.rounds.push(Round {
            posted_us,
            post_latency: ok.then(|| posted_at.elapsed()),
            post_error: posted.err().map(|e| format!("{e:#}")),
            by_holder: Vec::new(),
            delivered: 0,
            first_us: None,
            last_us: None,
            latency: Latency::new()?,
        });
        Ok(ok)
    }

    async fn next_delivery(&mut self, wait: Duration) -> Result<Option<bool>> {
        let Some(p) = self.holders.next_progress(wait).await? else {
            return Ok(None);
        };
        let round = usize::try_from(p.round)
            .ok()
            .and_then(|r| self.rounds.get_mut(r));
        Ok(Some(round.is_some_and(|round| {
            round.progress(p.holder, p.delivered, p.last_us)
        })))
    }

    fn reached(&self, k: u64) -> (u64, Option<Duration>) {
        usize::try_from(k)
            .ok()
            .and_then(|k| self.rounds.get(k))
            .map_or((0, None), |r| (r.delivered, r.time_to_last()))
    }
}

pub async fn run(ctx: &Ctx, args: BroadcastArgs, transport: Transport) -> Result<Value> {
    let name = match transport {
        Transport::Ws => "broadcast",
        Transport::Sse => "sse",
    };
    let admin = ctx.admin(name)?.clone();
    let run = users::run_id();
    let n = args.connections;
    let procs = args.spread.procs.max(1);
    let user_count = usize::try_from(n.div_ceil(args.conns_per_user))?;
    eprintln!("{name}: creating {user_count} users for {n} connections (run {run})");
    let users = users::provision(ctx, &run, "b", user_count, REGISTER_CONCURRENCY).await?;
    let plan = Plan {
        label: name,
        url: ctx.client.base_url().to_string(),
        transport,
        connect_concurrency: args.connect_concurrency,
        kind: EventType::BroadcastNew,
        run: run.clone(),
        spread: &args.spread,
        ca_pem: ctx.ca_pem.clone(),
    };
    let mut holders = Holders::start(&plan, &users, n, args.conns_per_user).await?;
    let open = OpenedAll::of(&holders.ready().await?)?;
    let opened = open.opened;
    let failed = open.failed();
    eprintln!(
        "{name}: {opened} connections open ({failed} failed) in {procs} process(es); {} broadcasts",
        args.broadcasts
    );
    let baseline = holders.report(&[]).await?;

    let pad = "x".repeat(usize::try_from(args.content_bytes)?);
    let base = Instant::now();
    let stall = Duration::from_secs(args.stall_secs);
    let server_before = ctx.server.as_ref().and_then(|p| p.try_sample());
    let bench_before = ctx.bench.try_sample();
    let started = Instant::now();
    let mut side = Broadcasts {
        admin: &admin,
        holders: &mut holders,
        rounds: Vec::new(),
        run: &run,
        pad: &pad,
        base,
    };
    let stalled = publish_rounds(name, args.broadcasts, opened, stall, &mut side).await?;
    let mut rounds = side.rounds;
    let finished = Instant::now();
    let server_after = ctx.server.as_ref().and_then(|p| p.try_sample());
    let bench_after = ctx.bench.try_sample();
    // The holders' own counts, late copies included, replace the progress.
    let posted_us: Vec<u64> = rounds.iter().map(|r| r.posted_us).collect();
    let counts = holders.report(&posted_us).await?;
    let duplicates: u64 = counts.iter().map(|c| c.duplicates).sum();
    for (i, r) in rounds.iter_mut().enumerate() {
        r.delivered = 0;
        r.last_us = None;
        for holder in &counts {
            let Some(c) = holder.rounds.get(i) else {
                continue;
            };
            r.delivered += c.delivered;
            r.first_us = match (r.first_us, c.first_us) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            r.last_us = r.last_us.max(c.last_us);
            r.latency.merge(&Latency::from_buckets(&c.latency)?)?;
        }
    }
    let connect = open.connect_latency.summary();
    let connect_secs = open.connect_secs.max(1e-9);
    let failures = open.failures;
    let closed = hold::ended_all(&holders.close().await?);
    let ended_early_count: u64 = closed.ended_early.values().sum();

    // Report.
    let measured = rounds
        .iter()
        .map(|r| RoundReport {
            post_latency: r.post_latency,
            post_error: r.post_error.clone(),
            delivered: r.delivered,
            time_to_first: r.time_to_first(),
            time_to_last: r.time_to_last(),
            latency: &r.latency,
        })
        .collect();
    let totals = Rounds::new(measured, opened, "POST", true)?;
    let (delivered, expected, post_errors) =
        (totals.delivered, totals.expected, totals.post_errors);
    let wall_secs = finished.duration_since(started).as_secs_f64();
    let server = fanout::server_usage(
        ctx.server.as_ref(),
        server_before,
        server_after,
        wall_secs,
        Some(("delivery", delivered)),
    );
    let bench_cpu = match (
        bench_before,
        bench_after,
        Holders::child_cpu_secs(&baseline, &counts),
    ) {
        (Some(b), Some(a), Some(children)) => Some(round3(a.cpu_secs - b.cpu_secs + children)),
        _ => None,
    };
    let source_ips = args.spread.source_ips_json();

    say!(
        ctx,
        "== {name}: {opened} {} connections ({user_count} users, {} per user), {} broadcasts, {} B text, {procs} process(es), source {}",
        transport.as_str(),
        args.conns_per_user,
        args.broadcasts,
        args.content_bytes,
        if source_ips.is_empty() {
            "any".to_owned()
        } else {
            source_ips.join(",")
        }
    );
    say_opened(ctx, opened, failed, connect_secs, connect);
    totals.say(ctx);
    if let Some(server) = &server {
        say!(ctx, "{}", crate::fanout::server_line(server, "delivery"));
    }
    if let Some(cpu) = bench_cpu {
        say!(ctx, "bench          cpu {cpu} s (all bench processes)");
    }
    if stalled
        || failed > 0
        || delivered < expected
        || duplicates > 0
        || post_errors > 0
        || ended_early_count > 0
    {
        say!(
            ctx,
            "PROBLEMS       stalled={stalled} failed_to_open={failed} missing={} duplicates={duplicates} post_errors={post_errors} ended_early={ended_early_count}",
            totals.missing(),
        );
        for (reason, count) in failures.iter().chain(&closed.ended_early) {
            say!(ctx, "  {count} x {reason}");
        }
    }

    let mut report = json!({
        "scenario": name,
        "run": run,
        "config": {
            "transport": transport.as_str(),
            "connections": n,
            "conns_per_user": args.conns_per_user,
            "users": user_count,
            "broadcasts": args.broadcasts,
            "connect_concurrency": args.connect_concurrency,
            "content_bytes": args.content_bytes,
            "stall_secs": args.stall_secs,
            "procs": procs,
            "source_ips": source_ips,
        },
        "opened": opened,
        "failed_to_open": failed,
        "open_failures": failures,
        "connect_secs": round3(connect_secs),
        "connect_latency_ms": connect.to_json(),
        "duplicates": duplicates,
        "stalled": stalled,
        "ended_early": closed.ended_early,
        "other_events": closed.other_events,
        "wall_secs": round3(wall_secs),
        "server": server,
        "bench_cpu_secs": bench_cpu,
    });
    merge(&mut report, totals.to_json());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_each_holder_once() -> Result<()> {
        let mut r = Round {
            posted_us: 1_000,
            post_latency: None,
            post_error: None,
            by_holder: Vec::new(),
            delivered: 0,
            first_us: None,
            last_us: None,
            latency: Latency::new()?,
        };
        assert!(r.progress(1, 3, 1_500));
        assert!(r.progress(0, 2, 1_200));
        assert!(!r.progress(1, 3, 1_500), "no news");
        assert!(r.progress(1, 5, 2_000));
        assert_eq!(r.delivered, 7);
        assert_eq!(r.time_to_last(), Some(Duration::from_micros(1_000)));
        Ok(())
    }
}
