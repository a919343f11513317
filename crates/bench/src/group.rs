//! `group`: fan-out of group messages to every member's live connection.
//!
//! G users are created (imported with minted tokens when the bench has
//! admin credentials), the first creates a group with the others as
//! members (`POST /v1/groups`), every member, the sender included, opens
//! one WebSocket (or SSE with `--transport sse`), then the first member
//! sends S messages to the group (`POST /v1/messages` with
//! `{"to": {"group": id}}`, `--window` sends in flight). Each member's inbox
//! gets its own `message.new` for every message, the sender's included, so
//! G × S deliveries are expected.
//!
//! The content carries the send time (nanoseconds since an `Instant` shared
//! by the bench process), so every delivery yields a send → receive
//! latency. Reported: the time from the first send to the last delivery,
//! deliveries per second over it, the latency percentiles, per message the
//! time until its last member received it (percentiles), the send ack
//! latency, and with `--server-pid` the server CPU time per delivery.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::time::Instant;
use unimsg_client::proto::api::{MessageKind, Recipient, SendRequest};
use unimsg_client::proto::{EventType, GroupId};
use unimsg_client::{Authed, Method};

use crate::Ctx;
use crate::fanout::{self, Matcher, Next, Transport};
use crate::stats::{Latency, round3};
use crate::users;

/// Users registered at once without admin credentials.
const REGISTER_CONCURRENCY: usize = 8;

/// How often the wait loop looks at the sender's progress.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, clap::Args)]
pub struct GroupArgs {
    /// Members of the group, the sender included; each holds one connection.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    pub members: u64,
    /// Messages the first member sends to the group.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub messages: u64,
    /// Sends in flight.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub window: u64,
    /// How the members receive.
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub connect_concurrency: u64,
    /// Length of the `text` padding of each message, in bytes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub content_bytes: u64,
    /// Give up waiting after this many seconds without a send or a delivery.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stall_secs: u64,
}

/// The sender's counters, read by the wait loop.
#[derive(Debug, Default)]
struct Sending {
    acked: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    ack_latency: Mutex<Option<Latency>>,
}

/// One message's deliveries.
#[derive(Debug, Clone, Copy)]
struct PerMessage {
    sent_nanos: u64,
    delivered: u64,
    last_at: Instant,
}

pub async fn run(ctx: &Ctx, args: GroupArgs) -> Result<Value> {
    let run = users::run_id();
    let g = usize::try_from(args.members)?;
    eprintln!("group: creating {g} members (run {run})");
    let members = users::provision(ctx, &run, "g", g, REGISTER_CONCURRENCY).await?;
    let Some(owner) = members.first() else {
        bail!("no members");
    };
    let group_id = create_group(&owner.authed, &run, &members[1..]).await?;
    eprintln!("group: group {group_id} created; connecting {g} members");

    let matcher = Matcher {
        kind: EventType::MessageNew,
        run: run.as_str().into(),
    };
    let owners = members.iter().map(|m| m.authed.clone()).collect();
    let mut fleet = fanout::open_fleet(
        owners,
        args.transport,
        usize::try_from(args.connect_concurrency)?,
        matcher,
        "group",
    )
    .await?;
    let opened = fleet.opened as u64;

    let base = Instant::now();
    let sending = Arc::new(Sending::default());
    let server_before = ctx.server.as_ref().and_then(|p| p.try_sample());
    let bench_before = ctx.bench.try_sample();
    let started = Instant::now();
    let plan = Plan {
        authed: owner.authed.clone(),
        group: group_id.clone(),
        run: run.clone(),
        pad: "x".repeat(usize::try_from(args.content_bytes)?),
        messages: args.messages,
        window: usize::try_from(args.window)?,
        base,
    };
    let sender = tokio::spawn(send_all(plan, sending.clone()));

    // Collect until every acked message reached every connection.
    let stall = Duration::from_secs(args.stall_secs);
    let mut latency = Latency::new()?;
    let mut per_message: HashMap<u64, PerMessage> = HashMap::new();
    let mut pairs: HashSet<(usize, u64)> = HashSet::new();
    let (mut delivered, mut duplicates, mut unstamped) = (0u64, 0u64, 0u64);
    let mut last_delivery = None::<Instant>;
    let mut last_progress = Instant::now();
    let mut last_acked = 0;
    let mut last_print = Instant::now();
    let mut stalled = false;
    loop {
        // Finished first: once it is, the acked count is final.
        let sender_done = sender.is_finished();
        let acked = sending.acked.load(Ordering::Relaxed);
        if sender_done && delivered >= opened * acked {
            break;
        }
        if acked != last_acked {
            last_acked = acked;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() >= stall {
            stalled = true;
            eprintln!(
                "group: STALLED: no send or delivery for {} s (acked {acked}, delivered {delivered} of {})",
                stall.as_secs(),
                opened * acked
            );
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!(
                "group: [{:5.1}s] acked {acked}  delivered {delivered}",
                started.elapsed().as_secs_f64()
            );
        }
        let seen = match fleet.next(POLL).await {
            Next::Seen(seen) => seen,
            Next::Quiet => continue,
            Next::AllEnded => {
                stalled = true;
                eprintln!("group: every connection has ended (delivered {delivered})");
                break;
            }
        };
        let Some(stamp) = seen.stamp else {
            unstamped += 1;
            continue;
        };
        if !pairs.insert((seen.conn, seen.round)) {
            duplicates += 1;
            continue;
        }
        delivered += 1;
        last_progress = Instant::now();
        last_delivery = last_delivery.max(Some(seen.at));
        let at_nanos = fanout::nanos_between(base, seen.at);
        latency.record_nanos(at_nanos.saturating_sub(stamp));
        let m = per_message.entry(seen.round).or_insert(PerMessage {
            sent_nanos: stamp,
            delivered: 0,
            last_at: seen.at,
        });
        m.delivered += 1;
        m.last_at = m.last_at.max(seen.at);
    }
    let finished = Instant::now();
    let server_after = ctx.server.as_ref().and_then(|p| p.try_sample());
    let bench_after = ctx.bench.try_sample();
    if !sender.is_finished() {
        sender.abort();
    }
    let sender_failure = match sender.await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(e) if e.is_cancelled() => Some("sender aborted".to_owned()),
        Err(e) => Some(format!("sender task failed: {e}")),
    };
    let connect = fleet.connect_latency.summary();
    let connect_secs = fleet.connect_secs.max(1e-9);
    let failed = fleet.failed();
    let failures = fleet.failures.clone();
    let closed = fleet.close().await;

    // Report.
    let acked = sending.acked.load(Ordering::Relaxed);
    let send_errors = sending.errors.load(Ordering::Relaxed);
    let first_error = sending.first_error.lock().ok().and_then(|g| g.clone());
    let ack = sending
        .ack_latency
        .lock()
        .ok()
        .and_then(|g| g.as_ref().map(Latency::summary))
        .unwrap_or_default();
    let expected = opened * acked;
    let wall = last_delivery.unwrap_or(finished).duration_since(started);
    let wall_secs = wall.as_secs_f64().max(1e-9);
    let rate = delivered as f64 / wall_secs;
    let mut fan_out = Latency::new()?;
    let mut complete_messages = 0;
    for m in per_message.values() {
        if m.delivered == opened {
            complete_messages += 1;
            let last = fanout::nanos_between(base, m.last_at);
            fan_out.record_nanos(last.saturating_sub(m.sent_nanos));
        }
    }
    let server = fanout::server_usage(
        ctx.server.as_ref(),
        server_before,
        server_after,
        finished.duration_since(started).as_secs_f64(),
        Some(("delivery", delivered)),
    );
    let bench_cpu = match (bench_before, bench_after) {
        (Some(b), Some(a)) => Some(round3(a.cpu_secs - b.cpu_secs)),
        _ => None,
    };
    let lat = latency.summary();
    let fan = fan_out.summary();

    say!(
        ctx,
        "== group: {g} members on {}, {} messages from one member, window {}, {} B text",
        args.transport.as_str(),
        args.messages,
        args.window,
        args.content_bytes
    );
    say!(
        ctx,
        "opened         {opened} in {connect_secs:.3} s ({:.0}/s), {failed} failed",
        opened as f64 / connect_secs
    );
    say!(
        ctx,
        "messages       {} requested, {acked} acked, {send_errors} send errors",
        args.messages
    );
    say!(
        ctx,
        "delivered      {delivered} of {expected} in {wall_secs:.3} s  =>  {rate:.0} deliveries/s"
    );
    say!(ctx, "latency        {}", lat.line());
    say!(ctx, "to last member {}", fan.line());
    say!(ctx, "send ack       {}", ack.line());
    if let Some(server) = &server {
        say!(ctx, "{}", crate::fanout::server_line(server, "delivery"));
    }
    if let Some(cpu) = bench_cpu {
        say!(ctx, "bench          cpu {cpu} s");
    }
    if stalled
        || failed > 0
        || send_errors > 0
        || delivered < expected
        || duplicates > 0
        || unstamped > 0
        || sender_failure.is_some()
        || closed.ended_early_count() > 0
    {
        say!(
            ctx,
            "PROBLEMS       stalled={stalled} failed_to_open={failed} send_errors={send_errors} missing={} duplicates={duplicates} unstamped={unstamped} ended_early={}",
            expected.saturating_sub(delivered),
            closed.ended_early_count()
        );
        for e in first_error.iter().chain(&sender_failure) {
            say!(ctx, "  {e}");
        }
        for (reason, count) in failures.iter().chain(&closed.ended_early) {
            say!(ctx, "  {count} x {reason}");
        }
    }

    Ok(json!({
        "scenario": "group",
        "run": run,
        "group_id": group_id.as_str(),
        "config": {
            "members": args.members,
            "messages": args.messages,
            "window": args.window,
            "transport": args.transport.as_str(),
            "connect_concurrency": args.connect_concurrency,
            "content_bytes": args.content_bytes,
            "stall_secs": args.stall_secs,
        },
        "opened": opened,
        "failed_to_open": failed,
        "open_failures": failures,
        "connect_secs": round3(connect_secs),
        "connect_latency_ms": connect.to_json(),
        "acked": acked,
        "send_errors": send_errors,
        "first_send_error": first_error,
        "sender_failure": sender_failure,
        "expected_deliveries": expected,
        "delivered": delivered,
        "missing": expected.saturating_sub(delivered),
        "duplicates": duplicates,
        "unstamped": unstamped,
        "stalled": stalled,
        "complete_messages": complete_messages,
        "ended_early": closed.ended_early,
        "other_events": closed.other_events,
        "wall_secs": round3(wall_secs),
        "deliveries_per_sec": round3(rate),
        "latency_ms": lat.to_json(),
        "time_to_last_member_ms": fan.to_json(),
        "ack_latency_ms": ack.to_json(),
        "server": server,
        "bench_cpu_secs": bench_cpu,
    }))
}

/// `POST /v1/groups` by `owner` with `others` as members; the group's id.
async fn create_group(owner: &Authed, run: &str, others: &[users::User]) -> Result<GroupId> {
    let body = json!({
        "name": format!("bench {run}"),
        "members": others.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(),
    });
    let (status, resp) = owner
        .raw(
            Method::POST,
            "/v1/groups",
            serde_json::to_vec(&body)?,
            Some("application/json"),
        )
        .await
        .context("POST /v1/groups failed")?;
    if status != 201 {
        bail!("POST /v1/groups answered {status}: {resp}");
    }
    let id = resp["group_id"]
        .as_str()
        .with_context(|| format!("POST /v1/groups answered without a group_id: {resp}"))?;
    Ok(GroupId::parse(id)?)
}

/// What the sender sends.
#[derive(Debug)]
struct Plan {
    authed: Authed,
    group: GroupId,
    run: String,
    pad: String,
    messages: u64,
    window: usize,
    /// The origin of the `t` stamps.
    base: Instant,
}

/// Sends the planned messages to the group, `window` at a time.
async fn send_all(plan: Plan, sending: Arc<Sending>) -> Result<()> {
    let ack = Mutex::new(Latency::new()?);
    let Plan {
        authed,
        group,
        run,
        pad,
        messages,
        window,
        base,
    } = plan;
    stream::iter(0..messages)
        .map(|i| {
            let (authed, group, run, pad, sending, ack) =
                (&authed, &group, &run, &pad, &sending, &ack);
            async move {
                let req = SendRequest {
                    to: Recipient::Group(group.clone()),
                    kind: MessageKind::Chat,
                    content: json!({
                        "text": pad,
                        "run": run,
                        "round": i,
                        "t": fanout::nanos_since(base),
                    }),
                    client_msg_id: None,
                };
                let t0 = Instant::now();
                match authed.send(&req).await {
                    Ok(_) => {
                        if let Ok(mut ack) = ack.lock() {
                            ack.record(t0.elapsed());
                        }
                        sending.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        sending.errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut first) = sending.first_error.lock() {
                            first.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
            }
        })
        .buffer_unordered(window)
        .collect::<()>()
        .await;
    if let (Ok(mut out), Ok(ack)) = (sending.ack_latency.lock(), ack.into_inner()) {
        *out = Some(ack);
    }
    Ok(())
}
