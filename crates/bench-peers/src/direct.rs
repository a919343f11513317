//! `peer … direct`: one-to-one messages, S senders → S receivers (sender i
//! to receiver i), the counterpart of unimsg's `direct` (same flags where
//! they apply, same JSON keys).
//!
//! - mosquitto: MQTT QoS 1 with persistent sessions (`clean_session` off):
//!   receiver i subscribes at QoS 1 to its own topic, sender i publishes
//!   there with up to `--window` PUBLISHes awaiting their PUBACK (the
//!   "ack"); receivers PUBACK every delivery. The broker queues QoS 1
//!   messages for an absent persistent session; with the shared config
//!   (`persistence false`) that queue is in memory only, so this is
//!   at-least-once delivery, not durable storage.
//! - ejabberd: sender user s_i sends `<message type='chat'>` to user r_i,
//!   both logged in over WebSocket with initial presence; ejabberd routes
//!   it to r_i's session (it stores a message offline only when the
//!   recipient has none). XMPP has no per-message acknowledgement without
//!   extensions, so the window is end to end: a sender keeps at most
//!   `--window` messages sent and not yet received, and "acked" counts
//!   messages sent.
//! - redis-streams: the durable peer. Sender i `XADD`s each message to
//!   receiver i's stream with up to `--window` `XADD`s awaiting their
//!   reply (the "ack"; with `appendfsync always` Redis answers after the
//!   fsync); receiver i reads its stream with `XREAD BLOCK`.
//! - nats: the second durable peer, JetStream. One file-backed stream per
//!   run holds a subject per receiver; sender i publishes each message to
//!   receiver i's subject with up to `--window` publishes awaiting their
//!   JetStream ack (with `sync_interval: always` the server acks after the
//!   fsync); receiver i reads its subject through an ordered consumer,
//!   which fails the receiver on a message of another subject.
//!
//! Each message carries its index `i` and send time `t`; each receiver
//! checks that every index arrives exactly once (duplicates and missing
//! ones are reported and fail the run) and counts arrivals out of order
//! (`seq_anomalies`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Packet;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fleet::{Incoming, Sub};
use crate::{Outcome, Peer, PeerCtx, mqtt, nats, redis_streams, xmpp};
use unimsg_bench::engine::direct::{self as engine, Delivery, Received, ReceivedAll, watch};
use unimsg_bench::engine::idle::merge;
use unimsg_bench::fanout::server_usage;
use unimsg_bench::say;
use unimsg_bench::stats::{Latency, round3};

/// Largest MQTT window: packet ids in flight must stay unique.
const MAX_MQTT_WINDOW: u64 = 32_768;

#[derive(Debug, Clone, clap::Args)]
pub struct DirectArgs {
    /// Total messages, split evenly over the senders.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,
    /// Sender users; each sends to its own receiver.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub senders: u64,
    /// Messages in flight per sender (see the module doc for what
    /// "in flight" means for each peer).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub window: u64,
    /// Length of the `text` padding of each message, in bytes.
    #[arg(long, default_value_t = 32)]
    pub content_bytes: usize,
    /// Give up waiting after this many seconds without progress.
    #[arg(long, default_value_t = 10)]
    pub stall_secs: u64,
}

/// Counters shared by every task.
#[derive(Debug, Default)]
struct Progress {
    sent: AtomicU64,
    acked: AtomicU64,
    received: AtomicU64,
    senders_done: AtomicU64,
}

/// What the watch of the run looks at.
struct Watching<'a> {
    progress: &'a Progress,
    senders: u64,
    send_tasks: &'a [JoinHandle<Result<Latency>>],
    receiving: &'a [JoinHandle<Result<Received>>],
}

impl engine::Progress for Watching<'_> {
    fn acked_received(&self) -> (u64, u64) {
        (
            self.progress.acked.load(Ordering::Relaxed),
            self.progress.received.load(Ordering::Relaxed),
        )
    }

    fn senders_done(&self) -> bool {
        self.progress.senders_done.load(Ordering::Relaxed) == self.senders
            || self.send_tasks.iter().all(JoinHandle::is_finished)
    }

    fn receivers_gone(&self) -> bool {
        self.receiving.iter().all(JoinHandle::is_finished)
    }
}

/// What every sender needs to build its messages.
#[derive(Debug, Clone)]
struct Sending {
    run: Arc<str>,
    base: Instant,
    pad: Arc<str>,
    progress: Arc<Progress>,
}

impl Sending {
    fn content(&self, i: u64) -> String {
        crate::content(&self.run, "i", i, crate::nanos_since(self.base), &self.pad)
    }
}

/// A sender's open session.
enum Sender {
    Mqtt {
        conn: mqtt::Conn,
        topic: String,
    },
    Xmpp {
        conn: xmpp::Conn,
        to: String,
    },
    Redis {
        conn: redis::aio::MultiplexedConnection,
        key: String,
    },
    Nats {
        js: async_nats::jetstream::Context,
        subject: String,
    },
}

pub(crate) async fn run(ctx: &PeerCtx, args: DirectArgs) -> Result<Outcome> {
    let peer = ctx.peer;
    let transport = match peer {
        Peer::Mosquitto => "mqtt-qos1",
        Peer::Ejabberd => "xmpp",
        Peer::RedisStreams => "redis-streams-xadd",
        Peer::Nats => "nats-jetstream-publish",
        Peer::Nchan | Peer::Soketi => bail!(
            "direct is implemented for mosquitto, ejabberd, redis-streams and nats: {} has no one-to-one delivery with acknowledgement or storage",
            peer.as_str()
        ),
    };
    if peer == Peer::Mosquitto && args.window > MAX_MQTT_WINDOW {
        bail!("--window is at most {MAX_MQTT_WINDOW} for MQTT (packet ids in flight)");
    }
    let run = crate::run_id();
    let s = usize::try_from(args.senders)?;
    let senders_names: Vec<String> = (0..s).map(|i| format!("d{run}s{i}")).collect();
    let receiver_names: Vec<String> = (0..s).map(|i| format!("d{run}r{i}")).collect();
    if peer == Peer::Ejabberd {
        eprintln!("direct: registering {} ejabberd users (run {run})", 2 * s);
        xmpp::register(ctx, &senders_names).await?;
        xmpp::register(ctx, &receiver_names).await?;
    }
    let window = usize::try_from(args.window)?;
    if peer == Peer::Nats {
        let js = nats::connect(&ctx.host, ctx.port, 1).await?;
        nats::create_stream(&js, &run).await?;
    }
    let per_sender: Vec<u64> = (0..args.senders)
        .map(|i| args.messages / args.senders + u64::from(i < args.messages % args.senders))
        .collect();
    let base = Instant::now();
    let progress = Arc::new(Progress::default());
    let stop = CancellationToken::new();
    // XMPP's end-to-end window: permits taken by sends, given back by
    // receipts.
    let windows: Vec<Arc<Semaphore>> = (0..s)
        .map(|_| Arc::new(Semaphore::new(usize::try_from(args.window).unwrap_or(1))))
        .collect();

    // Receivers first, so nothing is sent before its reader is ready.
    eprintln!("direct: connecting {s} receivers and {s} senders");
    let mut receiving: Vec<JoinHandle<Result<Received>>> = Vec::with_capacity(s);
    for i in 0..s {
        let sub = match peer {
            Peer::Mosquitto => {
                let session = mqtt::Session {
                    client_id: &receiver_names[i],
                    clean: false,
                };
                let mut conn = mqtt::Conn::connect(&ctx.ws_url("/"), session)
                    .await
                    .with_context(|| format!("receiver {i}"))?;
                conn.subscribe(&topic(&run, i), QoS::AtLeastOnce).await?;
                Sub::Mqtt(Box::new(conn))
            }
            Peer::RedisStreams => {
                let conn = redis_streams::connect(&ctx.host, ctx.port)
                    .await
                    .with_context(|| format!("receiver {i}"))?;
                Sub::RedisStream(Box::new(redis_streams::Reader::new(
                    conn,
                    redis_streams::stream(&run, i),
                )))
            }
            Peer::Nats => {
                let js = nats::connect(&ctx.host, ctx.port, 1)
                    .await
                    .with_context(|| format!("receiver {i}"))?;
                Sub::Nats(Box::new(
                    nats::Reader::open(&js, &run, i)
                        .await
                        .with_context(|| format!("receiver {i}"))?,
                ))
            }
            _ => Sub::Xmpp(Box::new(
                xmpp::Conn::login(&ctx.ws_url("/ws"), login(&receiver_names[i]))
                    .await
                    .with_context(|| format!("receiver {i}"))?,
            )),
        };
        receiving.push(tokio::spawn(receive(
            sub,
            per_sender[i],
            base,
            run.as_str().into(),
            progress.clone(),
            (peer == Peer::Ejabberd).then(|| windows[i].clone()),
            stop.clone(),
        )));
    }
    let mut senders = Vec::with_capacity(s);
    for (i, name) in senders_names.iter().enumerate() {
        senders.push(match peer {
            Peer::Mosquitto => {
                let session = mqtt::Session {
                    client_id: name,
                    clean: false,
                };
                Sender::Mqtt {
                    conn: mqtt::Conn::connect(&ctx.ws_url("/"), session)
                        .await
                        .with_context(|| format!("sender {i}"))?,
                    topic: topic(&run, i),
                }
            }
            Peer::RedisStreams => Sender::Redis {
                conn: redis_streams::connect(&ctx.host, ctx.port)
                    .await
                    .with_context(|| format!("sender {i}"))?,
                key: redis_streams::stream(&run, i),
            },
            Peer::Nats => Sender::Nats {
                js: nats::connect(&ctx.host, ctx.port, window)
                    .await
                    .with_context(|| format!("sender {i}"))?,
                subject: nats::subject(&run, i),
            },
            _ => Sender::Xmpp {
                conn: xmpp::Conn::login(&ctx.ws_url("/ws"), login(name))
                    .await
                    .with_context(|| format!("sender {i}"))?,
                to: xmpp::bare_jid(&receiver_names[i]),
            },
        });
    }

    let sending = Sending {
        run: run.as_str().into(),
        base,
        pad: "x".repeat(args.content_bytes).into(),
        progress: progress.clone(),
    };
    let server_before = ctx.server.as_ref().and_then(|p| p.try_sample());
    let bench_before = ctx.bench.try_sample();
    let started = Instant::now();
    let mut send_tasks: Vec<JoinHandle<Result<Latency>>> = Vec::with_capacity(s);
    for (i, sender) in senders.into_iter().enumerate() {
        let n = per_sender[i];
        send_tasks.push(match sender {
            Sender::Mqtt { conn, topic } => {
                tokio::spawn(mqtt_sender(conn, topic, n, window, sending.clone()))
            }
            Sender::Redis { conn, key } => {
                tokio::spawn(redis_sender(conn, key, n, window, sending.clone()))
            }
            Sender::Nats { js, subject } => {
                tokio::spawn(nats_sender(js, subject, n, window, sending.clone()))
            }
            Sender::Xmpp { conn, to } => tokio::spawn(xmpp_sender(
                conn,
                to,
                n,
                windows[i].clone(),
                sending.clone(),
                stop.clone(),
            )),
        });
    }

    // Watch progress until everything sent was delivered, or nothing moves.
    let watching = Watching {
        progress: &progress,
        senders: args.senders,
        send_tasks: &send_tasks,
        receiving: &receiving,
    };
    let stall = Duration::from_secs(args.stall_secs.max(1));
    let watched = watch(started, stall, &watching).await;
    let stalled = watched.stalled;
    let server_after = ctx.server.as_ref().and_then(|p| p.try_sample());
    let bench_after = ctx.bench.try_sample();
    stop.cancel();

    // Collect.
    let mut ack_latency = Latency::new()?;
    let mut sender_failures = Vec::new();
    for task in send_tasks {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(h))) => ack_latency.merge(&h)?,
            Ok(Ok(Err(e))) => sender_failures.push(format!("{e:#}")),
            Ok(Err(e)) => sender_failures.push(format!("sender task failed: {e}")),
            Err(_) => sender_failures.push("sender did not stop".to_owned()),
        }
    }
    let mut all = ReceivedAll::new()?;
    for task in receiving {
        all.add(task.await.context("receiver task failed")??)?;
    }
    let ReceivedAll {
        latency,
        delivered,
        duplicates,
        seq_anomalies,
        bad_content,
        other_events,
        last_delivery,
        failures: receiver_failures,
    } = all;

    let sent = progress.sent.load(Ordering::Relaxed);
    let acked = progress.acked.load(Ordering::Relaxed);
    let delivery = Delivery::new(
        started,
        watched,
        last_delivery,
        (delivered, acked),
        &latency,
        &ack_latency,
    );
    let server = server_usage(
        ctx.server.as_ref(),
        server_before,
        server_after,
        delivery.wall_secs,
        Some(("msg", delivered)),
    );
    let bench_cpu = match (bench_before, bench_after) {
        (Some(b), Some(a)) => Some(round3(a.cpu_secs - b.cpu_secs)),
        _ => None,
    };

    say!(
        ctx,
        "== {} direct: {transport}, {s} sender(s) -> {s} receiver(s), window {}, {} B text",
        peer.as_str(),
        args.window,
        args.content_bytes
    );
    say!(
        ctx,
        "messages       {} requested, {sent} sent, {acked} acked",
        args.messages
    );
    delivery.say(ctx, server.as_ref(), bench_cpu);
    let mut problems = Vec::new();
    if stalled {
        problems.push("stalled".to_owned());
    }
    if delivered < args.messages {
        problems.push(format!(
            "{} of {} messages never arrived",
            args.messages - delivered,
            args.messages
        ));
    }
    if duplicates > 0 {
        problems.push(format!("{duplicates} duplicates"));
    }
    if bad_content > 0 {
        problems.push(format!("{bad_content} malformed messages"));
    }
    problems.extend(sender_failures.iter().map(|f| format!("sender: {f}")));
    problems.extend(receiver_failures.iter().map(|f| format!("receiver: {f}")));
    if !problems.is_empty() {
        say!(ctx, "PROBLEMS       {}", problems.join("; "));
    }

    let mut report = json!({
        "scenario": "direct",
        "peer": peer.as_str(),
        "run": run,
        "config": {
            "messages": args.messages,
            "senders": args.senders,
            "window": args.window,
            "content_bytes": args.content_bytes,
            "transport": transport,
            "ack": match peer {
                Peer::Mosquitto => "PUBACK",
                Peer::RedisStreams => "XADD reply (after the AOF fsync: appendfsync always)",
                Peer::Nats => "publish ack (after fsync: sync_interval always)",
                _ => "none: the window is end to end",
            },
        },
        "sent": sent,
        "acked": acked,
        "send_errors": sender_failures.len(),
        "first_send_error": sender_failures.first(),
        "delivered": delivered,
        "undelivered": args.messages.saturating_sub(delivered),
        "duplicates": duplicates,
        "stalled": stalled,
        "seq_anomalies": seq_anomalies,
        "bad_content": bad_content,
        "other_events": other_events,
        "sender_failures": sender_failures,
        "receiver_failures": receiver_failures,
        "server": server,
        "bench_cpu_secs": bench_cpu,
    });
    merge(&mut report, delivery.to_json());
    Ok(Outcome { report, problems })
}

/// Receiver i's topic.
fn topic(run: &str, i: usize) -> String {
    format!("unimsg-bench/{run}/direct/{i}")
}

fn login(user: &str) -> xmpp::Login<'_> {
    xmpp::Login {
        user,
        password: xmpp::PASSWORD,
        resource: "bench",
    }
}

/// Reads one receiver until `expected` distinct messages arrived, its
/// connection ends, or `stop`.
async fn receive(
    mut sub: Sub,
    expected: u64,
    base: Instant,
    run: Arc<str>,
    progress: Arc<Progress>,
    window: Option<Arc<Semaphore>>,
    stop: CancellationToken,
) -> Result<Received> {
    let mut r = Received {
        latency: Latency::new()?,
        received: 0,
        duplicates: 0,
        seq_anomalies: 0,
        bad_content: 0,
        other_events: 0,
        last_at: None,
        ended: None,
    };
    let mut seen = vec![false; usize::try_from(expected)?];
    let mut next_index = 0;
    while r.received < expected {
        let incoming = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            incoming = sub.next() => incoming,
        };
        let now = crate::nanos_since(base);
        let payload = match incoming {
            Ok(Some(Incoming::Payload(payload))) => payload,
            Ok(Some(Incoming::Other)) => {
                r.other_events += 1;
                continue;
            }
            Ok(None) => {
                r.ended = Some("closed by the server".to_owned());
                return Ok(r);
            }
            Err(e) => {
                r.ended = Some(format!("read failed: {e:#}"));
                return Ok(r);
            }
        };
        let Some((i, t)) = crate::parse_content(&payload, &run, "i") else {
            r.bad_content += 1;
            continue;
        };
        let Some(slot) = usize::try_from(i).ok().and_then(|i| seen.get_mut(i)) else {
            r.bad_content += 1;
            continue;
        };
        if std::mem::replace(slot, true) {
            r.duplicates += 1;
            continue;
        }
        if i != next_index {
            r.seq_anomalies += 1;
        }
        next_index = i + 1;
        r.latency.record_nanos(now.saturating_sub(t));
        r.received += 1;
        r.last_at = Some(Instant::now());
        progress.received.fetch_add(1, Ordering::Relaxed);
        if let Some(window) = &window {
            window.add_permits(1);
        }
    }
    sub.close().await;
    Ok(r)
}

/// An MQTT sender: QoS 1 PUBLISHes, up to `window` awaiting PUBACK.
/// Returns the PUBACK latencies.
async fn mqtt_sender(
    mut conn: mqtt::Conn,
    topic: String,
    n: u64,
    window: usize,
    sending: Sending,
) -> Result<Latency> {
    let progress = &sending.progress;
    let mut ack = Latency::new()?;
    let mut in_flight: HashMap<u16, Instant> = HashMap::with_capacity(window);
    let mut next = 0;
    loop {
        while in_flight.len() < window && next < n {
            let payload = sending.content(next).into_bytes();
            let pkid = conn.publish(&topic, QoS::AtLeastOnce, payload).await?;
            in_flight.insert(pkid, Instant::now());
            progress.sent.fetch_add(1, Ordering::Relaxed);
            next += 1;
        }
        if in_flight.is_empty() {
            break;
        }
        match conn.next_packet().await? {
            Some(Packet::PubAck(a)) => {
                let Some(t0) = in_flight.remove(&a.pkid) else {
                    bail!("PUBACK for packet id {} not in flight", a.pkid);
                };
                ack.record(t0.elapsed());
                progress.acked.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {}
            None => bail!("the broker closed the sender's session"),
        }
    }
    progress.senders_done.fetch_add(1, Ordering::Relaxed);
    conn.close().await;
    Ok(ack)
}

/// A Redis Streams sender: up to `window` `XADD`s awaiting their reply
/// on one multiplexed connection. Returns the reply latencies.
async fn redis_sender(
    conn: redis::aio::MultiplexedConnection,
    key: String,
    n: u64,
    window: usize,
    sending: Sending,
) -> Result<Latency> {
    acked_window(n, window, &sending, |payload| {
        let (mut conn, key) = (conn.clone(), key.clone());
        // Nothing to hand over first: the reply is the acknowledgement.
        std::future::ready(Ok(async move {
            redis_streams::add(&mut conn, &key, &payload).await
        }))
    })
    .await
}

/// A NATS JetStream sender: publishes in order on its own connection, up
/// to `window` awaiting their JetStream ack. Returns the ack latencies.
async fn nats_sender(
    js: async_nats::jetstream::Context,
    subject: String,
    n: u64,
    window: usize,
    sending: Sending,
) -> Result<Latency> {
    acked_window(n, window, &sending, |payload| {
        let (js, subject) = (js.clone(), subject.clone());
        // Each publish is handed to the connection before the next one
        // (its ack is awaited apart), so the stream stores a sender's
        // messages in the order of their index.
        async move {
            let pending = nats::publish(&js, &subject, payload).await?;
            Ok(nats::acked(pending))
        }
    })
    .await
}

/// Sends a run's `n` messages with up to `window` awaiting their
/// acknowledgement: `start(payload)` hands one message to the peer, in
/// index order, and resolves with the future of its acknowledgement.
/// Returns the acknowledgement latencies (from just before `start`).
async fn acked_window<Start, Started, Acked>(
    n: u64,
    window: usize,
    sending: &Sending,
    mut start: Start,
) -> Result<Latency>
where
    Start: FnMut(String) -> Started,
    Started: Future<Output = Result<Acked>>,
    Acked: Future<Output = Result<()>>,
{
    use futures_util::StreamExt;
    use futures_util::stream::FuturesUnordered;

    let progress = &sending.progress;
    let mut ack = Latency::new()?;
    let mut in_flight = FuturesUnordered::new();
    let mut next = 0;
    loop {
        while in_flight.len() < window && next < n {
            let t0 = Instant::now();
            let acked = start(sending.content(next)).await?;
            in_flight.push(async move { acked.await.map(|()| t0.elapsed()) });
            progress.sent.fetch_add(1, Ordering::Relaxed);
            next += 1;
        }
        let Some(done) = in_flight.next().await else {
            break;
        };
        ack.record(done?);
        progress.acked.fetch_add(1, Ordering::Relaxed);
    }
    progress.senders_done.fetch_add(1, Ordering::Relaxed);
    Ok(ack)
}

/// An XMPP sender: a chat message whenever the end-to-end window has room;
/// then stays connected (reading) until `stop`. Returns an empty histogram
/// (XMPP acknowledges nothing).
async fn xmpp_sender(
    mut conn: xmpp::Conn,
    to: String,
    n: u64,
    window: Arc<Semaphore>,
    sending: Sending,
    stop: CancellationToken,
) -> Result<Latency> {
    let progress = &sending.progress;
    for i in 0..n {
        loop {
            tokio::select! {
                permit = window.acquire() => {
                    permit.context("window closed")?.forget();
                    break;
                }
                stanza = conn.next_stanza() => check_sender_stanza(stanza?)?,
                () = stop.cancelled() => bail!("stopped after {i} of {n} messages"),
            }
        }
        conn.send(xmpp::chat(&to, &i.to_string(), &sending.content(i)))
            .await?;
        progress.sent.fetch_add(1, Ordering::Relaxed);
        progress.acked.fetch_add(1, Ordering::Relaxed);
    }
    progress.senders_done.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            stanza = conn.next_stanza() => check_sender_stanza(stanza?)?,
        }
    }
    conn.close().await;
    Latency::new()
}

/// What a sender reads is ignored, unless the stream ends.
fn check_sender_stanza(stanza: Option<xmpp::Stanza>) -> Result<()> {
    match stanza {
        Some(xmpp::Stanza::StreamError(condition)) => bail!("stream error: {condition}"),
        Some(_) => Ok(()),
        None => bail!("the server closed the sender's stream"),
    }
}
