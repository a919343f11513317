//! `direct`: one-to-one chat throughput and end-to-end latency.
//!
//! S sender users each send their share of N messages to their own receiver
//! user (sender i → receiver i). Every receiver holds a WebSocket and reads
//! `message.new` events. The content carries the send time as nanoseconds
//! since an `Instant` shared by the whole bench process
//! (`{"text": "...", "t": NANOS, "i": INDEX}`), so the receiver computes the
//! send → receive latency without any clock synchronisation.
//!
//! Senders keep a window of W sends in flight:
//! - `--transport http` (default): W concurrent `POST /v1/messages` requests
//!   per sender, sharing one connection pool (W connections per sender,
//!   opened before the clock starts).
//! - `--transport ws`: W pipelined `send` frames on the sender's own
//!   WebSocket, matched to their `send.ok` by id. The server keeps up to
//!   `delivery.ws_send_window` of them in flight (64 by default); the
//!   sender's WebSocket also receives the copy of each message in the
//!   sender's own inbox (read and dropped).
//!
//! With `--rate R` (either transport) the senders are paced to R messages per
//! second in all: sender i's message k is not sent before
//! `start + k / (R / S)`, so latency can be measured at a chosen fraction
//! of the peak rate; the window still caps what is in flight.
//!
//! Delivery is complete when every successfully sent message has been
//! received, or "stalled" when nothing progressed for `--stall-secs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::FutureExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use unimsg_client::proto::api::{MessageKind, Recipient, SendRequest};
use unimsg_client::proto::ws::{ClientFrame, ReplyFrame};
use unimsg_client::proto::{EventType, UserId};
use unimsg_client::{Authed, WsConnection};

use crate::Ctx;
use crate::engine::direct::{self as engine, Delivery, Received, ReceivedAll, watch};
use crate::engine::idle::merge;
use crate::stats::{Latency, round3};
use crate::users;

/// Users registered and logged in at once.
const CREATE_CONCURRENCY: usize = 8;

/// How messages leave the senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// `POST /v1/messages`, W requests in flight per sender.
    Http,
    /// `send` frames on the sender's WebSocket, W frames in flight.
    Ws,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Ws => "ws",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct DirectArgs {
    /// Total messages, split evenly over the senders.
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Sender users; each sends to its own receiver user.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub senders: u64,
    /// Sends in flight per sender.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub window: u64,
    /// Length of the `text` padding of each message, in bytes.
    #[arg(long, default_value_t = 32)]
    pub content_bytes: usize,
    /// How senders send.
    #[arg(long, value_enum, default_value_t = Transport::Http)]
    pub transport: Transport,
    /// Give every message a `client_msg_id` (the server then checks for duplicates).
    #[arg(long)]
    pub client_msg_ids: bool,
    /// Pace the senders to this many messages per second in all (0: as
    /// fast as the window allows).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Give up waiting for deliveries after this many seconds without progress.
    #[arg(long, default_value_t = 10)]
    pub stall_secs: u64,
}

/// Counters shared by every task, read by the progress loop.
#[derive(Debug, Default)]
struct Progress {
    sent: AtomicU64,
    acked: AtomicU64,
    send_errors: AtomicU64,
    received: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Progress {
    fn error(&self, e: impl std::fmt::Display) {
        self.send_errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| e.to_string());
        }
    }

    fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|g| g.clone())
    }
}

/// What the watch of the run looks at.
struct Watching<'a> {
    progress: &'a Progress,
    send_tasks: &'a [JoinHandle<Result<Latency>>],
    receiving: &'a [JoinHandle<Received>],
}

impl engine::Progress for Watching<'_> {
    fn acked_received(&self) -> (u64, u64) {
        (
            self.progress.acked.load(Ordering::Relaxed),
            self.progress.received.load(Ordering::Relaxed),
        )
    }

    fn senders_done(&self) -> bool {
        self.send_tasks.iter().all(JoinHandle::is_finished)
    }

    fn receivers_gone(&self) -> bool {
        self.receiving.iter().all(JoinHandle::is_finished)
    }

    fn extra(&self) -> String {
        let errors = self.progress.send_errors.load(Ordering::Relaxed);
        format!("  errors {errors}")
    }
}

/// What every sender needs to build its messages.
#[derive(Debug, Clone)]
struct Sending {
    base: Instant,
    pad: Arc<str>,
    run: Arc<str>,
    client_msg_ids: bool,
    progress: Arc<Progress>,
    /// With `--rate`: when sending starts, and each sender's messages per second.
    pace: Option<(Instant, f64)>,
}

impl Sending {
    fn content(&self, index: u64) -> Value {
        json!({ "text": &*self.pad, "t": nanos_since(self.base), "i": index })
    }

    /// When message `index` of a sender is due, when paced.
    fn due(&self, index: u64) -> Option<Instant> {
        self.pace
            .map(|(start, per_sec)| start + Duration::from_secs_f64(index as f64 / per_sec))
    }

    fn client_msg_id(&self, sender: u64, index: u64) -> Option<String> {
        self.client_msg_ids
            .then(|| format!("{}-{sender}-{index}", self.run))
    }
}

fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

pub async fn run(ctx: &Ctx, args: DirectArgs) -> Result<Value> {
    if args.messages == 0 {
        bail!("--messages must be at least 1");
    }
    let run = users::run_id();
    let s = usize::try_from(args.senders)?;
    eprintln!("direct: creating {s} senders and {s} receivers (run {run})");
    let senders = users::provision(ctx, &run, "s", s, CREATE_CONCURRENCY).await?;
    let receivers = users::provision(ctx, &run, "r", s, CREATE_CONCURRENCY).await?;

    let per_sender: Vec<u64> = (0..args.senders)
        .map(|i| args.messages / args.senders + u64::from(i < args.messages % args.senders))
        .collect();
    let base = Instant::now();
    let progress = Arc::new(Progress::default());
    let stop = CancellationToken::new();

    // Receivers first, so no message is sent before its reader is ready.
    let mut receiving: Vec<JoinHandle<Received>> = Vec::with_capacity(s);
    for (receiver, &expected) in receivers.iter().zip(&per_sender) {
        let ws = receiver
            .authed
            .connect_ws(None)
            .await
            .with_context(|| format!("receiver {} cannot connect", receiver.username))?;
        let latency = Latency::new()?;
        receiving.push(tokio::spawn(receive(
            ws,
            expected,
            base,
            latency,
            progress.clone(),
            stop.clone(),
        )));
    }

    let mut sending = Sending {
        base,
        pad: "x".repeat(args.content_bytes).into(),
        run: run.as_str().into(),
        client_msg_ids: args.client_msg_ids,
        progress: progress.clone(),
        pace: None,
    };
    let window = usize::try_from(args.window)?;
    if args.transport == Transport::Http {
        warm_http_pools(&senders, window).await?;
    }
    let server_before = ctx.server.as_ref().and_then(|p| p.try_sample());
    let bench_before = ctx.bench.try_sample();
    let started = Instant::now();
    sending.pace = (args.rate > 0).then(|| (started, args.rate as f64 / args.senders as f64));

    let mut send_tasks: Vec<JoinHandle<Result<Latency>>> = Vec::new();
    for (i, (sender, receiver)) in senders.iter().zip(&receivers).enumerate() {
        let n = per_sender[i];
        let to = receiver.user_id.clone();
        match args.transport {
            Transport::Http => {
                let next = Arc::new(AtomicU64::new(0));
                for _ in 0..window.min(usize::try_from(n)?.max(1)) {
                    send_tasks.push(tokio::spawn(http_worker(
                        sender.authed.clone(),
                        to.clone(),
                        i as u64,
                        n,
                        next.clone(),
                        sending.clone(),
                    )));
                }
            }
            Transport::Ws => send_tasks.push(tokio::spawn(ws_sender(
                sender.authed.clone(),
                to,
                i as u64,
                n,
                window,
                sending.clone(),
            ))),
        }
    }

    // Watch progress until everything sent was delivered, or nothing moves.
    let watching = Watching {
        progress: &progress,
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
        if !task.is_finished() {
            task.abort();
        }
        match task.await {
            Ok(Ok(h)) => ack_latency.merge(&h)?,
            Ok(Err(e)) => sender_failures.push(format!("{e:#}")),
            Err(e) if e.is_cancelled() => sender_failures.push("sender aborted".to_owned()),
            Err(e) => sender_failures.push(format!("sender task failed: {e}")),
        }
    }
    let mut all = ReceivedAll::new()?;
    for task in receiving {
        all.add(task.await.context("receiver task failed")?)?;
    }
    let ReceivedAll {
        latency,
        delivered,
        duplicates: _,
        seq_anomalies,
        bad_content,
        other_events,
        last_delivery,
        failures: receiver_failures,
    } = all;

    let sent = progress.sent.load(Ordering::Relaxed);
    let acked = progress.acked.load(Ordering::Relaxed);
    let send_errors = progress.send_errors.load(Ordering::Relaxed);
    let delivery = Delivery::new(
        started,
        watched,
        last_delivery,
        (delivered, acked),
        &latency,
        &ack_latency,
    );
    let wall_secs = delivery.wall_secs;

    let server = match (&ctx.server, server_before, server_after) {
        (Some(probe), Some(b), Some(a)) => {
            let cpu = a.cpu_secs - b.cpu_secs;
            Some(json!({
                "pid": probe.pid(),
                "cpu_secs": round3(cpu),
                "cpu_us_per_msg": (delivered > 0).then(|| round3(cpu * 1e6 / delivered as f64)),
                "cpu_cores_busy": round3(cpu / wall_secs),
                "rss_kib_before": b.rss_kib,
                "rss_kib_after": a.rss_kib,
            }))
        }
        _ => None,
    };
    let bench_cpu = match (bench_before, bench_after) {
        (Some(b), Some(a)) => Some(round3(a.cpu_secs - b.cpu_secs)),
        _ => None,
    };

    say!(
        ctx,
        "== direct: {} transport, {s} sender(s) -> {s} receiver(s), window {}, {} B text",
        args.transport.as_str(),
        args.window,
        args.content_bytes
    );
    say!(
        ctx,
        "messages       {} requested, {sent} sent, {acked} acked, {send_errors} send errors",
        args.messages
    );
    delivery.say(ctx, server.as_ref(), bench_cpu);
    let problems = stalled
        || send_errors > 0
        || delivered < acked
        || seq_anomalies > 0
        || bad_content > 0
        || !sender_failures.is_empty()
        || !receiver_failures.is_empty();
    if problems {
        say!(
            ctx,
            "PROBLEMS       stalled={stalled} undelivered={} seq_anomalies={seq_anomalies} bad_content={bad_content}",
            acked.saturating_sub(delivered)
        );
        if let Some(e) = progress.first_error() {
            say!(ctx, "  first send error: {e}");
        }
        for f in sender_failures.iter().chain(&receiver_failures) {
            say!(ctx, "  {f}");
        }
    }

    let mut report = json!({
        "scenario": "direct",
        "run": run,
        "config": {
            "messages": args.messages,
            "senders": args.senders,
            "window": args.window,
            "rate": args.rate,
            "content_bytes": args.content_bytes,
            "transport": args.transport.as_str(),
            "client_msg_ids": args.client_msg_ids,
        },
        "sent": sent,
        "acked": acked,
        "send_errors": send_errors,
        "first_send_error": progress.first_error(),
        "delivered": delivered,
        "undelivered": acked.saturating_sub(delivered),
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
    Ok(report)
}

/// Reads a receiver's WebSocket until `expected` messages arrived, the
/// socket ends, or `stop` fires.
async fn receive(
    mut ws: WsConnection,
    expected: u64,
    base: Instant,
    latency: Latency,
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> Received {
    let mut r = Received {
        latency,
        received: 0,
        duplicates: 0,
        seq_anomalies: 0,
        bad_content: 0,
        other_events: 0,
        last_at: None,
        ended: None,
    };
    let mut next_seq = ws.ready().last_seq.0 + 1;
    while r.received < expected {
        let event = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            event = ws.next_event() => event,
        };
        let event = match event {
            Ok(Some(event)) => event,
            Ok(None) => {
                r.ended = Some(format!(
                    "receiver websocket closed by the server (close code {:?})",
                    ws.close_code()
                ));
                break;
            }
            Err(e) => {
                r.ended = Some(format!("receiver websocket failed: {e}"));
                break;
            }
        };
        let now = nanos_since(base);
        if event.seq.0 != next_seq {
            r.seq_anomalies += 1;
        }
        next_seq = event.seq.0 + 1;
        if event.kind != EventType::MessageNew {
            r.other_events += 1;
            continue;
        }
        match event.data["content"]["t"].as_u64() {
            Some(t) => {
                r.latency.record_nanos(now.saturating_sub(t));
                r.received += 1;
                r.last_at = Some(Instant::now());
                progress.received.fetch_add(1, Ordering::Relaxed);
            }
            None => r.bad_content += 1,
        }
    }
    if r.ended.is_none() {
        let _ = ws.close().await;
    }
    r
}

/// Opens each HTTP sender's `window` pooled connections before the clock
/// starts, with that many concurrent `GET /v1/me`, as a WebSocket
/// sender's socket is open before it: otherwise the run's first requests
/// each wait for a connection of their own, and their connects count in
/// the latency and the server's CPU.
async fn warm_http_pools(senders: &[users::User], window: usize) -> Result<()> {
    for sender in senders {
        let opened = futures_util::future::join_all((0..window).map(|_| sender.authed.me())).await;
        for result in opened {
            result
                .with_context(|| format!("sender {} cannot reach the server", sender.username))?;
        }
    }
    Ok(())
}

/// One of the W concurrent HTTP senders of one sender user: takes the next
/// message index from `next` until `n` are taken. Returns the ack latencies.
async fn http_worker(
    authed: Authed,
    to: UserId,
    sender: u64,
    n: u64,
    next: Arc<AtomicU64>,
    sending: Sending,
) -> Result<Latency> {
    let mut ack = Latency::new()?;
    let progress = &sending.progress;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            return Ok(ack);
        }
        if let Some(due) = sending.due(i) {
            tokio::time::sleep_until(due).await;
        }
        let req = SendRequest {
            to: Recipient::User(to.clone()),
            kind: MessageKind::Chat,
            content: sending.content(i),
            client_msg_id: sending.client_msg_id(sender, i),
        };
        let t0 = Instant::now();
        progress.sent.fetch_add(1, Ordering::Relaxed);
        match authed.send(&req).await {
            Ok(_) => {
                ack.record(t0.elapsed());
                progress.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => progress.error(e),
        }
    }
}

/// A sender over its own WebSocket with up to `window` frames in flight.
async fn ws_sender(
    authed: Authed,
    to: UserId,
    sender: u64,
    n: u64,
    window: usize,
    sending: Sending,
) -> Result<Latency> {
    let mut ack = Latency::new()?;
    let progress = &sending.progress;
    let mut ws = authed
        .connect_ws(None)
        .await
        .context("sender websocket cannot connect")?;
    let mut in_flight: HashMap<u64, Instant> = HashMap::with_capacity(window);
    let mut next = 0;
    loop {
        while in_flight.len() < window
            && next < n
            && sending.due(next).is_none_or(|due| due <= Instant::now())
        {
            let frame = ClientFrame::Send {
                id: Some(next.to_string()),
                to: Recipient::User(to.clone()),
                kind: MessageKind::Chat,
                content: sending.content(next),
                client_msg_id: sending.client_msg_id(sender, next),
            };
            ws.send_frame(&frame)
                .await
                .context("sender websocket write failed")?;
            in_flight.insert(next, Instant::now());
            progress.sent.fetch_add(1, Ordering::Relaxed);
            next += 1;
        }
        if in_flight.is_empty() && next >= n {
            break;
        }
        // Paced: wait for the next message's time or a reply, whichever
        // comes first (reading is cancel-safe).
        let due = (next < n && in_flight.len() < window)
            .then(|| sending.due(next))
            .flatten();
        let reply = match due {
            Some(due) => tokio::select! {
                reply = ws.next_reply() => reply,
                () = tokio::time::sleep_until(due) => continue,
            },
            None => ws.next_reply().await,
        }
        .context("sender websocket read failed")?;
        match reply {
            Some(ReplyFrame::SendOk { id, .. }) => {
                let Some(t0) = take(&mut in_flight, id.as_deref()) else {
                    bail!("send.ok for an unknown id {id:?}");
                };
                ack.record(t0.elapsed());
                progress.acked.fetch_add(1, Ordering::Relaxed);
            }
            Some(ReplyFrame::Error { id, error, .. }) => {
                progress.error(format!("{:?}: {}", error.code, error.message));
                if take(&mut in_flight, id.as_deref()).is_none() {
                    bail!("error frame for no pending send: {}", error.message);
                }
            }
            Some(_) => {}
            None => bail!(
                "sender websocket closed by the server (close code {:?})",
                ws.close_code()
            ),
        }
        // Drop the copies of our own messages queued meanwhile (the
        // sender's inbox), without waiting for more.
        while let Some(Ok(Some(_))) = ws.next_event().now_or_never() {}
    }
    let _ = ws.close().await;
    Ok(ack)
}

fn take(in_flight: &mut HashMap<u64, Instant>, id: Option<&str>) -> Option<Instant> {
    in_flight.remove(&id?.parse::<u64>().ok()?)
}
