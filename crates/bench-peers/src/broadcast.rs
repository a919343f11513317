//! `peer … broadcast`: one message fanned out to N connections of a peer,
//! K rounds; the counterpart of unimsg's `broadcast` (same flags where they
//! apply, same JSON keys).
//!
//! Every connection subscribes to one channel (nchan, soketi) or topic
//! (mosquitto) of this run. Each round publishes one message and waits
//! until every connection received it (or nothing arrived for
//! `--stall-secs`) before the next:
//! - nchan: `POST /pub/CHANNEL`; "post" is the HTTP round trip.
//! - soketi: signed `POST /apps/ID/events`; "post" is the HTTP round trip.
//! - mosquitto: one QoS 1 PUBLISH on a separate publisher session, to
//!   QoS 0 subscriptions (so deliveries are QoS 0, like a WebSocket push);
//!   "post" is PUBLISH → PUBACK.
//!
//! Measured per round and overall: time from the publish to the last
//! delivery, deliveries per second, per-connection latency (publish →
//! payload read) and, with `--server-pid`, server CPU per delivery.
//! Complete means every connection got every round exactly once.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Packet;
use serde_json::json;
use tokio::time::Instant;

use crate::fleet::{self, Fleet, Next, Seen, Sub};
use crate::{Outcome, Peer, PeerCtx, mqtt, nchan, soketi};
use unimsg_bench::engine::idle::merge;
use unimsg_bench::engine::rounds::{Publish, Round as RoundReport, Rounds, publish_rounds};
use unimsg_bench::engine::say_opened;
use unimsg_bench::fanout::server_usage;
use unimsg_bench::say;
use unimsg_bench::stats::{Latency, round3};

/// Longest wait for the publisher's PUBACK.
const PUBACK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct BroadcastArgs {
    /// Connections receiving the broadcasts.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub connections: u64,
    /// Broadcasts, sent one after another.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub broadcasts: u64,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub connect_concurrency: u64,
    /// Length of the `text` padding of each broadcast, in bytes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub content_bytes: u64,
    /// Give up on a broadcast after this many seconds without a new delivery.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stall_secs: u64,
}

/// Where broadcasts are published.
enum Publisher {
    Nchan {
        channel: String,
    },
    Soketi {
        channel: String,
    },
    Mqtt {
        conn: Box<mqtt::Conn>,
        topic: String,
    },
}

impl Publisher {
    async fn publish(&mut self, ctx: &PeerCtx, content: String) -> Result<()> {
        match self {
            Publisher::Nchan { channel } => nchan::publish(ctx, channel, content).await,
            Publisher::Soketi { channel } => soketi::trigger(ctx, channel, content).await,
            Publisher::Mqtt { conn, topic } => {
                let pkid = conn
                    .publish(topic, QoS::AtLeastOnce, content.into_bytes())
                    .await?;
                tokio::time::timeout(PUBACK_TIMEOUT, async {
                    loop {
                        match conn.next_packet().await? {
                            Some(Packet::PubAck(ack)) if ack.pkid == pkid => return Ok(()),
                            Some(_) => {}
                            None => bail!("the broker closed the publisher's session"),
                        }
                    }
                })
                .await
                .context("no PUBACK in time")?
            }
        }
    }
}

/// One broadcast's measurements.
#[derive(Debug)]
struct Round {
    posted_at: Instant,
    post_latency: Option<Duration>,
    post_error: Option<String>,
    delivered: u64,
    last_at: Option<Instant>,
    latency: Latency,
}

impl Round {
    fn time_to_last(&self) -> Option<Duration> {
        self.last_at.map(|l| l.duration_since(self.posted_at))
    }
}

/// The publishes of one run, counted from the fleet's deliveries.
struct Broadcasts<'a> {
    ctx: &'a PeerCtx,
    publisher: &'a mut Publisher,
    fleet: &'a mut Fleet,
    rounds: Vec<Round>,
    /// (connection, round) pairs seen.
    seen_pairs: HashSet<(usize, u64)>,
    duplicates: u64,
    run: &'a str,
    pad: &'a str,
    base: Instant,
}

impl Publish for Broadcasts<'_> {
    async fn publish(&mut self, k: u64) -> Result<bool> {
        let content = crate::content(
            self.run,
            "round",
            k,
            crate::nanos_since(self.base),
            self.pad,
        );
        let posted_at = Instant::now();
        let posted = self.publisher.publish(self.ctx, content).await;
        let ok = posted.is_ok();
        self.rounds.push(Round {
            posted_at,
            post_latency: ok.then(|| posted_at.elapsed()),
            post_error: posted.err().map(|e| format!("{e:#}")),
            delivered: 0,
            last_at: None,
            latency: Latency::new()?,
        });
        Ok(ok)
    }

    async fn next_delivery(&mut self, wait: Duration) -> Result<Option<bool>> {
        let Next::Seen(seen) = self.fleet.next(wait).await else {
            return Ok(None);
        };
        let news = account(seen, &mut self.rounds, &mut self.seen_pairs);
        if !news {
            self.duplicates += 1;
        }
        Ok(Some(news))
    }

    fn reached(&self, k: u64) -> (u64, Option<Duration>) {
        usize::try_from(k)
            .ok()
            .and_then(|k| self.rounds.get(k))
            .map_or((0, None), |r| (r.delivered, r.time_to_last()))
    }
}

pub(crate) async fn run(ctx: &PeerCtx, args: BroadcastArgs) -> Result<Outcome> {
    let peer = ctx.peer;
    let run = crate::run_id();
    let n = args.connections;
    let channel = crate::channel("b", &run, None);
    let topic = format!("unimsg-bench/{run}/broadcast");
    let mut publisher = match peer {
        Peer::Nchan => Publisher::Nchan {
            channel: channel.clone(),
        },
        Peer::Soketi => Publisher::Soketi {
            channel: channel.clone(),
        },
        Peer::Mosquitto => {
            let client_id = format!("b{run}pub");
            let session = mqtt::Session {
                client_id: &client_id,
                clean: true,
            };
            Publisher::Mqtt {
                conn: Box::new(mqtt::Conn::connect(&ctx.ws_url("/"), session).await?),
                topic: topic.clone(),
            }
        }
        Peer::Ejabberd => bail!(
            "broadcast is not implemented for ejabberd: XMPP has no plain one-to-N publish (it would take MUC or PubSub)"
        ),
        Peer::RedisStreams | Peer::Nats => bail!(
            "broadcast is not implemented for {}: it is a durable peer of `direct` only",
            peer.as_str()
        ),
    };
    eprintln!(
        "broadcast: opening {n} connections to {} (run {run})",
        peer.as_str()
    );
    let (channel_ref, topic_ref, run_ref) = (channel.as_str(), topic.as_str(), run.as_str());
    let mut fleet = fleet::open(
        n,
        usize::try_from(args.connect_concurrency)?,
        &run,
        "broadcast",
        |i| async move {
            Ok(match peer {
                Peer::Nchan => Sub::Nchan(Box::new(nchan::subscribe(ctx, channel_ref).await?)),
                Peer::Soketi => Sub::Pusher(Box::new(soketi::subscribe(ctx, channel_ref).await?)),
                Peer::Mosquitto => {
                    let client_id = format!("b{run_ref}c{i}");
                    let session = mqtt::Session {
                        client_id: &client_id,
                        clean: true,
                    };
                    let mut conn = mqtt::Conn::connect(&ctx.ws_url("/"), session).await?;
                    conn.subscribe(topic_ref, QoS::AtMostOnce).await?;
                    Sub::Mqtt(Box::new(conn))
                }
                Peer::Ejabberd | Peer::RedisStreams | Peer::Nats => {
                    bail!("unreachable: {} was refused above", peer.as_str())
                }
            })
        },
    )
    .await?;
    let opened = fleet.opened as u64;
    eprintln!(
        "broadcast: {opened} connections open ({} failed); {} broadcasts",
        fleet.failed(),
        args.broadcasts
    );

    let pad = "x".repeat(usize::try_from(args.content_bytes)?);
    let base = Instant::now();
    let stall = Duration::from_secs(args.stall_secs);
    let server_before = ctx.server.as_ref().and_then(|p| p.try_sample());
    let bench_before = ctx.bench.try_sample();
    let started = Instant::now();
    let mut side = Broadcasts {
        ctx,
        publisher: &mut publisher,
        fleet: &mut fleet,
        rounds: Vec::new(),
        seen_pairs: HashSet::new(),
        duplicates: 0,
        run: &run,
        pad: &pad,
        base,
    };
    let stalled = publish_rounds("broadcast", args.broadcasts, opened, stall, &mut side).await?;
    let Broadcasts {
        mut rounds,
        mut seen_pairs,
        mut duplicates,
        ..
    } = side;
    let finished = Instant::now();
    let server_after = ctx.server.as_ref().and_then(|p| p.try_sample());
    let bench_after = ctx.bench.try_sample();
    while let Some(seen) = fleet.try_next() {
        if !account(seen, &mut rounds, &mut seen_pairs) {
            duplicates += 1;
        }
    }
    let connect = fleet.connect_latency.summary();
    let connect_secs = fleet.connect_secs.max(1e-9);
    let failed = fleet.failed();
    let failures = fleet.failures.clone();
    let closed = fleet.close().await;
    if let Publisher::Mqtt { conn, .. } = publisher {
        conn.close().await;
    }

    // Report.
    let measured = rounds
        .iter()
        .map(|r| RoundReport {
            post_latency: r.post_latency,
            post_error: r.post_error.clone(),
            delivered: r.delivered,
            time_to_first: None,
            time_to_last: r.time_to_last(),
            latency: &r.latency,
        })
        .collect();
    let totals = Rounds::new(measured, opened, "publish", false)?;
    let wall_secs = finished.duration_since(started).as_secs_f64();
    let server = server_usage(
        ctx.server.as_ref(),
        server_before,
        server_after,
        wall_secs,
        Some(("delivery", totals.delivered)),
    );
    let bench_cpu = match (bench_before, bench_after) {
        (Some(b), Some(a)) => Some(round3(a.cpu_secs - b.cpu_secs)),
        _ => None,
    };

    say!(
        ctx,
        "== {} broadcast: {opened} connections, {} broadcasts, {} B text",
        peer.as_str(),
        args.broadcasts,
        args.content_bytes
    );
    say_opened(ctx, opened, failed, connect_secs, connect);
    totals.say(ctx);
    if let Some(server) = &server {
        say!(
            ctx,
            "{}",
            unimsg_bench::fanout::server_line(server, "delivery")
        );
    }
    if let Some(cpu) = bench_cpu {
        say!(ctx, "bench          cpu {cpu} s");
    }
    let post_errors = totals.post_errors;
    let missing = totals.missing();
    let mut problems = Vec::new();
    if stalled {
        problems.push("stalled".to_owned());
    }
    if failed > 0 {
        problems.push(format!("{failed} of {n} connections failed to open"));
    }
    if missing > 0 {
        problems.push(format!("{missing} deliveries missing"));
    }
    if duplicates > 0 {
        problems.push(format!("{duplicates} duplicate deliveries"));
    }
    if post_errors > 0 {
        problems.push(format!("{post_errors} publishes failed"));
    }
    if closed.ended_early_count() > 0 {
        problems.push(format!(
            "{} connections ended early",
            closed.ended_early_count()
        ));
    }
    if !problems.is_empty() {
        say!(ctx, "PROBLEMS       {}", problems.join("; "));
        for (reason, count) in failures.iter().chain(&closed.ended_early) {
            say!(ctx, "  {count} x {reason}");
        }
        if let Some(e) = rounds.iter().find_map(|r| r.post_error.as_ref()) {
            say!(ctx, "  first publish error: {e}");
        }
    }

    let mut report = json!({
        "scenario": "broadcast",
        "peer": peer.as_str(),
        "run": run,
        "config": {
            "transport": "ws",
            "connections": n,
            "broadcasts": args.broadcasts,
            "connect_concurrency": args.connect_concurrency,
            "content_bytes": args.content_bytes,
            "stall_secs": args.stall_secs,
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
    Ok(Outcome { report, problems })
}

/// Counts one delivery; false when it is a copy already seen or of no
/// round sent.
fn account(seen: Seen, rounds: &mut [Round], seen_pairs: &mut HashSet<(usize, u64)>) -> bool {
    let Some(r) = usize::try_from(seen.round)
        .ok()
        .and_then(|i| rounds.get_mut(i))
    else {
        return false;
    };
    if !seen_pairs.insert((seen.conn, seen.round)) {
        return false;
    }
    r.delivered += 1;
    r.latency
        .record(seen.at.saturating_duration_since(r.posted_at));
    r.last_at = r.last_at.max(Some(seen.at));
    true
}
