//! What `direct` measures, the same against unimsg and against a peer:
//! senders send, receivers count, and the run ends once everything
//! acknowledged has arrived (after the last send) or nothing moved for
//! `--stall-secs`. [`watch`] waits for that end; [`Delivery`] makes the
//! throughput and latency figures, their summary lines and JSON keys.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::Say;
use crate::stats::{Latency, Summary, round3};

/// How the watch of a `direct` run ended.
#[derive(Debug, Clone, Copy)]
pub struct Watched {
    /// When every sender had finished.
    pub sends_done_at: Option<Instant>,
    /// Nothing moved for the stall time.
    pub stalled: bool,
    pub finished: Instant,
}

/// What [`watch`] looks at, every 50 ms.
pub trait Progress {
    /// Messages acknowledged and received so far.
    fn acked_received(&self) -> (u64, u64);
    /// Every sender has finished.
    fn senders_done(&self) -> bool;
    /// Every receiver has ended.
    fn receivers_gone(&self) -> bool;
    /// What the progress line adds after `received N` (e.g. errors).
    fn extra(&self) -> String {
        String::new()
    }
}

/// Watches a `direct` run until everything sent was delivered, or
/// nothing moves for `stall`, with a progress line every second.
pub async fn watch(started: Instant, stall: Duration, progress: &impl Progress) -> Watched {
    let mut seen = (0, 0);
    let mut last_change = Instant::now();
    let mut last_print = Instant::now();
    let mut sends_done_at = None;
    let mut stalled = false;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (acked, received) = progress.acked_received();
        if (acked, received) != seen {
            seen = (acked, received);
            last_change = Instant::now();
        }
        if sends_done_at.is_none() && progress.senders_done() {
            sends_done_at = Some(Instant::now());
        }
        if sends_done_at.is_some() && (received >= acked || progress.receivers_gone()) {
            break;
        }
        if last_change.elapsed() >= stall {
            stalled = true;
            eprintln!(
                "direct: STALLED: no progress for {} s (acked {acked}, received {received})",
                stall.as_secs()
            );
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!(
                "direct: [{:5.1}s] acked {acked}  received {received}{}",
                started.elapsed().as_secs_f64(),
                progress.extra()
            );
        }
    }
    Watched {
        sends_done_at,
        stalled,
        finished: Instant::now(),
    }
}

/// A `direct` run's throughput and latencies.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub delivered: u64,
    pub acked: u64,
    /// Start → the last delivery (or the end of the watch).
    pub wall_secs: f64,
    /// Start → the last send.
    pub send_secs: f64,
    /// Send → receipt.
    pub latency: Summary,
    /// Send → acknowledgement.
    pub ack: Summary,
}

impl Delivery {
    pub fn new(
        started: Instant,
        watched: Watched,
        last_delivery: Option<Instant>,
        (delivered, acked): (u64, u64),
        latency: &Latency,
        ack: &Latency,
    ) -> Delivery {
        let secs = |end: Option<Instant>| {
            end.unwrap_or(watched.finished)
                .duration_since(started)
                .as_secs_f64()
                .max(1e-9)
        };
        Delivery {
            delivered,
            acked,
            wall_secs: secs(last_delivery),
            send_secs: secs(watched.sends_done_at),
            latency: latency.summary(),
            ack: ack.summary(),
        }
    }

    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.wall_secs
    }

    /// The summary lines from `delivered` to the bench's CPU.
    pub fn say(&self, out: &impl Say, server: Option<&Value>, bench_cpu: Option<f64>) {
        say!(
            out,
            "delivered      {} in {:.3} s  =>  {:.0} msg/s",
            self.delivered,
            self.wall_secs,
            self.rate()
        );
        say!(
            out,
            "send rate      {:.0} msg/s acked ({:.3} s)",
            self.acked as f64 / self.send_secs,
            self.send_secs
        );
        say!(out, "latency        {}", self.latency.line());
        say!(out, "ack latency    {}", self.ack.line());
        if let Some(server) = server {
            say!(out, "{}", crate::fanout::server_line(server, "msg"));
        }
        if let Some(cpu) = bench_cpu {
            say!(out, "bench          cpu {cpu} s");
        }
    }

    /// The report's keys about throughput and latency.
    pub fn to_json(&self) -> Value {
        json!({
            "wall_secs": round3(self.wall_secs),
            "send_secs": round3(self.send_secs),
            "msgs_per_sec": round3(self.rate()),
            "acked_per_sec": round3(self.acked as f64 / self.send_secs),
            "latency_ms": self.latency.to_json(),
            "ack_latency_ms": self.ack.to_json(),
        })
    }
}

/// What one receiver of a `direct` run saw.
#[derive(Debug)]
pub struct Received {
    /// Send → receipt.
    pub latency: Latency,
    /// Distinct messages received.
    pub received: u64,
    /// Copies of a message already received.
    pub duplicates: u64,
    /// Arrivals out of sequence (the seq or index not the previous one + 1).
    pub seq_anomalies: u64,
    /// Payloads of this run that are not a valid message.
    pub bad_content: u64,
    /// Events or payloads of other kinds (receipts, revocations, …).
    pub other_events: u64,
    pub last_at: Option<Instant>,
    /// Why the connection ended early, if it did.
    pub ended: Option<String>,
}

/// Every receiver's [`Received`], added up.
#[derive(Debug)]
pub struct ReceivedAll {
    pub latency: Latency,
    pub delivered: u64,
    pub duplicates: u64,
    pub seq_anomalies: u64,
    pub bad_content: u64,
    pub other_events: u64,
    /// The last receipt of any receiver.
    pub last_delivery: Option<Instant>,
    /// Why receivers ended early.
    pub failures: Vec<String>,
}

impl ReceivedAll {
    pub fn new() -> anyhow::Result<ReceivedAll> {
        Ok(ReceivedAll {
            latency: Latency::new()?,
            delivered: 0,
            duplicates: 0,
            seq_anomalies: 0,
            bad_content: 0,
            other_events: 0,
            last_delivery: None,
            failures: Vec::new(),
        })
    }

    pub fn add(&mut self, r: Received) -> anyhow::Result<()> {
        self.latency.merge(&r.latency)?;
        self.delivered += r.received;
        self.duplicates += r.duplicates;
        self.seq_anomalies += r.seq_anomalies;
        self.bad_content += r.bad_content;
        self.other_events += r.other_events;
        self.last_delivery = self.last_delivery.max(r.last_at);
        self.failures.extend(r.ended);
        Ok(())
    }
}
