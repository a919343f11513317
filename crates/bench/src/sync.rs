//! `sync`: a user comes back online and catches up on M missed messages.
//!
//! A sender user sends M chat messages to a receiver user that has no
//! connection (`POST /v1/messages`, `--window` requests in flight). Then
//! the receiver catches up three times on the same inbox, each from seq 0
//! (nothing is acknowledged in between, so each sees everything):
//! - `http`: `GET /v1/sync?after=…&limit=--page`, page after page until
//!   `has_more` is false;
//! - `ws`: `GET /v1/ws?after=0`, from the connect until the event with the
//!   inbox's last seq arrived;
//! - `sse`: `GET /v1/events?after=0`, likewise.
//!
//! Each reports its duration, events per second, and whether the events
//! came gap-free (seq 1, 2, 3, …) and complete; with `--server-pid`, the
//! server's CPU time per event.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::time::Instant;
use unimsg_client::Authed;
use unimsg_client::proto::api::{MessageKind, Recipient, SendRequest};
use unimsg_client::proto::{Event, EventType, Seq};

use crate::Ctx;
use crate::fanout::{self, Conn, Transport};
use crate::stats::{Latency, round3};
use crate::users;

#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// Messages the receiver misses while offline.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub messages: u64,
    /// Sends in flight while filling the inbox.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub window: u64,
    /// Events per `GET /v1/sync` page (the server caps it at `messaging.max_page`).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub page: u32,
    /// Length of the `text` padding of each message, in bytes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub content_bytes: u64,
    /// Give up on a catch-up after this many seconds without an event.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stall_secs: u64,
}

/// Checks the order of a catch-up's events as they arrive.
#[derive(Debug, Default)]
struct Tally {
    events: u64,
    messages: u64,
    /// Events whose seq was not the previous one + 1 (the first must be 1).
    gaps: u64,
    last_seq: u64,
}

impl Tally {
    fn add(&mut self, e: &Event) {
        if e.seq.0 != self.last_seq + 1 {
            self.gaps += 1;
        }
        self.last_seq = self.last_seq.max(e.seq.0);
        self.events += 1;
        if e.kind == EventType::MessageNew {
            self.messages += 1;
        }
    }

    fn to_json(&self, secs: f64, complete: bool, server: Option<Value>) -> Value {
        json!({
            "events": self.events,
            "messages": self.messages,
            "gaps": self.gaps,
            "last_seq": self.last_seq,
            "complete": complete,
            "secs": round3(secs),
            "events_per_sec": round3(self.events as f64 / secs.max(1e-9)),
            "server": server,
        })
    }
}

pub async fn run(ctx: &Ctx, args: SyncArgs) -> Result<Value> {
    let run = users::run_id();
    eprintln!("sync: creating a sender and a receiver (run {run})");
    let mut created = users::provision(ctx, &run, "y", 2, 2).await?.into_iter();
    let (Some(sender), Some(receiver)) = (created.next(), created.next()) else {
        bail!("could not create the two users");
    };
    let stall = Duration::from_secs(args.stall_secs);

    // Fill the offline receiver's inbox.
    eprintln!(
        "sync: sending {} messages to the offline receiver, {} in flight",
        args.messages, args.window
    );
    let pad: Arc<str> = "x".repeat(usize::try_from(args.content_bytes)?).into();
    let acked = AtomicU64::new(0);
    let first_error = Mutex::new(None::<String>);
    let fill_started = Instant::now();
    stream::iter(0..args.messages)
        .map(|i| {
            let req = SendRequest {
                to: Recipient::User(receiver.user_id.clone()),
                kind: MessageKind::Chat,
                content: json!({ "text": &*pad, "i": i }),
                client_msg_id: None,
            };
            let sender = &sender.authed;
            let (acked, first_error) = (&acked, &first_error);
            async move {
                match sender.send(&req).await {
                    Ok(_) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
            }
        })
        .buffer_unordered(usize::try_from(args.window)?)
        .collect::<()>()
        .await;
    let fill_secs = fill_started.elapsed().as_secs_f64().max(1e-9);
    let acked = acked.load(Ordering::Relaxed);
    let send_errors = args.messages - acked;
    let first_error = first_error.lock().ok().and_then(|g| g.clone());
    eprintln!("sync: {acked} messages acked in {fill_secs:.3} s; catching up over HTTP");

    // (a) HTTP sync, page by page.
    let sample = || ctx.server.as_ref().and_then(|p| p.try_sample());
    let before = sample();
    let started = Instant::now();
    let (http, pages, page_latency, http_complete) =
        http_sync(&receiver.authed, args.page, acked).await?;
    let http_secs = started.elapsed().as_secs_f64();
    let after = sample();
    let http_server = fanout::server_usage(
        ctx.server.as_ref(),
        before,
        after,
        http_secs,
        Some(("event", http.events)),
    );
    let target = http.last_seq;

    // (b) WebSocket and (c) SSE replay from seq 0.
    let mut replays = Vec::new();
    for transport in [Transport::Ws, Transport::Sse] {
        eprintln!(
            "sync: catching up over {} (until seq {target})",
            transport.as_str()
        );
        let before = sample();
        let r = replay(&receiver.authed, transport, target, stall).await;
        let after = sample();
        let server = match &r {
            Ok(r) => fanout::server_usage(
                ctx.server.as_ref(),
                before,
                after,
                r.secs,
                Some(("event", r.tally.events)),
            ),
            Err(_) => None,
        };
        replays.push((transport, r, server));
    }

    // Report.
    let page_summary = page_latency.summary();
    say!(
        ctx,
        "== sync: {} messages missed, caught up from seq 0 ({} B text)",
        args.messages,
        args.content_bytes
    );
    say!(
        ctx,
        "fill           {acked} acked in {fill_secs:.3} s ({:.0} msg/s), {send_errors} send errors",
        acked as f64 / fill_secs
    );
    say!(
        ctx,
        "http sync      {} events ({} messages) in {http_secs:.3} s  =>  {:.0} events/s, {pages} pages of <= {}",
        http.events,
        http.messages,
        http.events as f64 / http_secs.max(1e-9),
        args.page
    );
    say!(ctx, "  page         {}", page_summary.line());
    let mut problems = Vec::new();
    if send_errors > 0 {
        problems.push(format!(
            "{send_errors} sends failed, first: {}",
            first_error.as_deref().unwrap_or("?")
        ));
    }
    if !http_complete || http.messages != acked || http.gaps > 0 {
        problems.push(format!(
            "http sync: complete={http_complete} messages={} of {acked}, gaps={}",
            http.messages, http.gaps
        ));
    }
    let mut json_replays = serde_json::Map::new();
    for (transport, r, server) in &replays {
        let t = transport.as_str();
        match r {
            Ok(r) => {
                say!(
                    ctx,
                    "{t:<3} replay     {} events ({} messages) in {:.3} s  =>  {:.0} events/s (connected after {:.3} ms)",
                    r.tally.events,
                    r.tally.messages,
                    r.secs,
                    r.tally.events as f64 / r.secs.max(1e-9),
                    r.connect_ms
                );
                if !r.complete || r.tally.messages != acked || r.tally.gaps > 0 {
                    problems.push(format!(
                        "{t} replay: complete={} messages={} of {acked}, gaps={}{}",
                        r.complete,
                        r.tally.messages,
                        r.tally.gaps,
                        r.ended
                            .as_deref()
                            .map(|e| format!(", ended: {e}"))
                            .unwrap_or_default()
                    ));
                }
                let mut v = r.tally.to_json(r.secs, r.complete, server.clone());
                v["connect_ms"] = json!(round3(r.connect_ms));
                v["ended"] = json!(r.ended);
                json_replays.insert(t.to_owned(), v);
            }
            Err(e) => {
                say!(ctx, "{t:<3} replay     FAILED: {e:#}");
                problems.push(format!("{t} replay failed: {e:#}"));
                json_replays.insert(
                    t.to_owned(),
                    json!({ "error": format!("{e:#}"), "complete": false }),
                );
            }
        }
    }
    for (name, server) in std::iter::once(("http", &http_server))
        .chain(replays.iter().map(|(t, _, s)| (t.as_str(), s)))
    {
        if let Some(s) = server {
            say!(
                ctx,
                "server {name:<5}   cpu {} s, {} us/event, rss {} -> {} KiB",
                s["cpu_secs"],
                s["cpu_us_per_event"],
                s["rss_kib_before"],
                s["rss_kib_after"]
            );
        }
    }
    if !problems.is_empty() {
        say!(ctx, "PROBLEMS");
        for p in &problems {
            say!(ctx, "  {p}");
        }
    }

    let mut report = json!({
        "scenario": "sync",
        "run": run,
        "config": {
            "messages": args.messages,
            "window": args.window,
            "page": args.page,
            "content_bytes": args.content_bytes,
            "stall_secs": args.stall_secs,
        },
        "fill": {
            "acked": acked,
            "send_errors": send_errors,
            "first_send_error": first_error,
            "secs": round3(fill_secs),
            "msgs_per_sec": round3(acked as f64 / fill_secs),
        },
        "inbox_last_seq": target,
        "http": http.to_json(http_secs, http_complete, http_server),
        "problems": problems,
    });
    report["http"]["pages"] = json!(pages);
    report["http"]["page_latency_ms"] = page_summary.to_json();
    for (k, v) in json_replays {
        report[k] = v;
    }
    Ok(report)
}

/// Pages through `GET /v1/sync` from seq 0. Returns the tally, the page
/// count, the page latencies and whether `has_more` ended false.
async fn http_sync(
    authed: &Authed,
    page: u32,
    expected: u64,
) -> Result<(Tally, u64, Latency, bool)> {
    let mut tally = Tally::default();
    let mut latency = Latency::new()?;
    let mut after = Seq::ZERO;
    let mut pages = 0;
    // Every page but the last holds at least one event.
    for _ in 0..expected + 2 {
        let t0 = Instant::now();
        let resp = authed
            .sync(Some(after), Some(page))
            .await
            .with_context(|| format!("GET /v1/sync?after={after} failed"))?;
        latency.record(t0.elapsed());
        pages += 1;
        for e in &resp.events {
            tally.add(e);
        }
        if !resp.has_more {
            return Ok((tally, pages, latency, true));
        }
        if resp.events.is_empty() || resp.next_after <= after {
            bail!("GET /v1/sync?after={after} says has_more but does not advance");
        }
        after = resp.next_after;
    }
    Ok((tally, pages, latency, false))
}

/// One real-time catch-up.
#[derive(Debug)]
struct Replay {
    tally: Tally,
    connect_ms: f64,
    secs: f64,
    complete: bool,
    ended: Option<String>,
}

/// Connects with `after=0` and reads until the event with seq `target`.
async fn replay(
    authed: &Authed,
    transport: Transport,
    target: u64,
    stall: Duration,
) -> Result<Replay> {
    let started = Instant::now();
    let mut conn = Conn::open(authed, transport, Some(Seq::ZERO))
        .await
        .with_context(|| format!("cannot open the {} connection", transport.as_str()))?;
    let connect_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut tally = Tally::default();
    let mut ended = None;
    // At most one event per seq is expected; the slack covers surprises.
    for _ in 0..target.saturating_mul(2).saturating_add(16) {
        if tally.last_seq >= target {
            break;
        }
        match tokio::time::timeout(stall, conn.next_event()).await {
            Ok(Ok(Some(e))) => tally.add(&e),
            Ok(Ok(None)) => {
                ended = Some(conn.ended_reason());
                break;
            }
            Ok(Err(e)) => {
                ended = Some(format!("read failed: {e:#}"));
                break;
            }
            Err(_) => {
                ended = Some(format!("no event for {} s", stall.as_secs()));
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    conn.close().await;
    Ok(Replay {
        complete: tally.last_seq >= target,
        tally,
        connect_ms,
        secs,
        ended,
    })
}
