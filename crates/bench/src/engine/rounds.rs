//! Broadcast rounds added up, the same against unimsg and against a peer:
//! each round is one publish (an admin broadcast, an HTTP publish, an MQTT
//! PUBLISH) that every connection should receive once. A scenario's side
//! publishes and counts ([`Publish`]); [`publish_rounds`] runs the rounds
//! one after another; [`Rounds`] makes the per-round and overall figures,
//! their summary lines and their JSON keys.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Say;
use crate::stats::{Latency, round3};

/// One round as the scenario measured it.
#[derive(Debug)]
pub struct Round<'a> {
    /// The publish's own round trip, when it succeeded.
    pub post_latency: Option<Duration>,
    pub post_error: Option<String>,
    /// Distinct connections that received it.
    pub delivered: u64,
    /// Publish → the first and the last connection's receipt.
    pub time_to_first: Option<Duration>,
    pub time_to_last: Option<Duration>,
    /// Publish → receipt, per connection.
    pub latency: &'a Latency,
}

impl Round<'_> {
    /// Sent, and received by every connection.
    fn complete(&self, opened: u64) -> bool {
        self.delivered == opened && self.post_error.is_none()
    }
}

/// The rounds of a run, added up.
#[derive(Debug)]
pub struct Rounds<'a> {
    pub rounds: Vec<Round<'a>>,
    /// Connections open, each expected to receive every round sent.
    pub opened: u64,
    /// What the summary calls a publish (`POST`, `publish`).
    pub verb: &'static str,
    /// Whether the report has each round's first receipt.
    pub with_first: bool,
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub post_errors: u64,
    pub latency: Latency,
    pub post: Latency,
    /// Publish → last receipt, summed over the complete rounds.
    pub fan_out_secs: f64,
    /// Deliveries per second over the complete rounds.
    pub rate: f64,
}

impl<'a> Rounds<'a> {
    pub fn new(
        rounds: Vec<Round<'a>>,
        opened: u64,
        verb: &'static str,
        with_first: bool,
    ) -> Result<Rounds<'a>> {
        let mut latency = Latency::new()?;
        let mut post = Latency::new()?;
        let mut fan_out_secs = 0.0;
        let mut complete_deliveries = 0;
        for r in &rounds {
            latency.merge(r.latency)?;
            if let Some(p) = r.post_latency {
                post.record(p);
            }
            if r.complete(opened) {
                fan_out_secs += r.time_to_last.map_or(0.0, |d| d.as_secs_f64());
                complete_deliveries += r.delivered;
            }
        }
        let sent = rounds.iter().filter(|r| r.post_error.is_none()).count() as u64;
        Ok(Rounds {
            opened,
            verb,
            with_first,
            sent,
            expected: opened * sent,
            delivered: rounds.iter().map(|r| r.delivered).sum(),
            post_errors: rounds.len() as u64 - sent,
            latency,
            post,
            fan_out_secs,
            rate: complete_deliveries as f64 / fan_out_secs.max(1e-9),
            rounds,
        })
    }

    pub fn missing(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    /// One line per round, then the totals, the latencies and the
    /// publishes' own latencies.
    pub fn say(&self, out: &impl Say) {
        let (opened, verb) = (self.opened, self.verb);
        for (i, r) in self.rounds.iter().enumerate() {
            let s = r.latency.summary();
            let first = if self.with_first {
                format!(
                    " (first {:.3} ms)",
                    r.time_to_first.map_or(0.0, |f| f.as_secs_f64() * 1e3)
                )
            } else {
                String::new()
            };
            match (&r.post_error, r.time_to_last) {
                (Some(e), _) => say!(out, "broadcast {:<4} {verb} failed: {e}", i + 1),
                (None, Some(d)) => say!(
                    out,
                    "broadcast {:<4} {}/{opened} in {:.3} ms{first} => {:.0} deliveries/s  p50 {:.3}  p99 {:.3} ms ({verb} {:.3} ms)",
                    i + 1,
                    r.delivered,
                    d.as_secs_f64() * 1e3,
                    r.delivered as f64 / d.as_secs_f64().max(1e-9),
                    s.p50,
                    s.p99,
                    r.post_latency.map_or(0.0, |p| p.as_secs_f64() * 1e3)
                ),
                (None, None) => say!(out, "broadcast {:<4} reached no connection", i + 1),
            }
        }
        say!(
            out,
            "delivered      {} of {} expected  =>  {:.0} deliveries/s over complete broadcasts",
            self.delivered,
            self.expected,
            self.rate
        );
        say!(out, "latency        {}", self.latency.summary().line());
        say!(out, "{verb:<15}{}", self.post.summary().line());
    }

    /// The report's keys about the rounds.
    pub fn to_json(&self) -> Value {
        let ms = |d: Duration| round3(d.as_secs_f64() * 1e3);
        let per_round: Vec<Value> = self
            .rounds
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let to_last = r.time_to_last.map(|d| d.as_secs_f64());
                let mut v = json!({
                    "broadcast": i + 1,
                    "post_ms": r.post_latency.map(ms),
                    "post_error": r.post_error,
                    "delivered": r.delivered,
                    "complete": r.complete(self.opened),
                    "time_to_last_ms": to_last.map(|s| round3(s * 1e3)),
                    "deliveries_per_sec": to_last.map(|s| round3(r.delivered as f64 / s.max(1e-9))),
                    "latency_ms": r.latency.summary().to_json(),
                });
                if self.with_first {
                    v["time_to_first_ms"] = json!(r.time_to_first.map(ms));
                }
                v
            })
            .collect();
        json!({
            "broadcasts_sent": self.sent,
            "post_errors": self.post_errors,
            "expected_deliveries": self.expected,
            "delivered": self.delivered,
            "missing": self.missing(),
            "per_broadcast": per_round,
            "fan_out_secs": round3(self.fan_out_secs),
            "deliveries_per_sec": round3(self.rate),
            "latency_ms": self.latency.summary().to_json(),
            "post_latency_ms": self.post.summary().to_json(),
        })
    }
}

/// One side of a broadcast run: what publishes a round (an admin
/// broadcast, an HTTP publish, an MQTT PUBLISH) and counts who got it.
pub trait Publish {
    /// Publishes round `k` and starts counting it; `Ok(false)` when the
    /// publish failed (the side keeps the error for its report).
    fn publish(&mut self, k: u64) -> impl Future<Output = Result<bool>>;

    /// Waits at most `wait` for deliveries: `None` when nothing came (or
    /// nothing more can), else whether a round moved.
    fn next_delivery(&mut self, wait: Duration) -> impl Future<Output = Result<Option<bool>>>;

    /// Connections round `k` has reached so far, and publish → the last
    /// of them.
    fn reached(&self, k: u64) -> (u64, Option<Duration>);
}

/// Publishes `count` rounds one after another, each once the previous one
/// reached all `opened` connections or nothing arrived for `stall`;
/// `Ok(true)` when a round stalled (and the run stopped there).
pub async fn publish_rounds(
    label: &str,
    count: u64,
    opened: u64,
    stall: Duration,
    side: &mut impl Publish,
) -> Result<bool> {
    for k in 0..count {
        if !side.publish(k).await? {
            continue;
        }
        // Wait until every connection has it, or nothing new arrives.
        let mut last_progress = Instant::now();
        while side.reached(k).0 < opened {
            let left = stall.saturating_sub(last_progress.elapsed());
            match side.next_delivery(left).await? {
                Some(true) => last_progress = Instant::now(),
                Some(false) => {}
                None => {
                    eprintln!(
                        "{label}: STALLED: broadcast {} reached {} of {opened} connections; no delivery for {} s",
                        k + 1,
                        side.reached(k).0,
                        stall.as_secs()
                    );
                    return Ok(true);
                }
            }
        }
        eprintln!(
            "{label}: broadcast {} reached {opened} connections in {:.1} ms",
            k + 1,
            side.reached(k).1.map_or(0.0, |d| d.as_secs_f64() * 1e3)
        );
    }
    Ok(false)
}
