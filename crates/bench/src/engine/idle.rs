//! What `idle` measures, the same against unimsg and against a peer: the
//! server's RSS before opening, right after opening, after the hold and
//! after closing; the growth per connection; its CPU spent opening and
//! while holding. The scenario opens, holds and closes; [`IdleCosts`]
//! turns its samples into the summary lines and the JSON keys.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Say, say_opened};
use crate::procfs::{Probe, Sample};
use crate::stats::{Summary, round3};

/// The server samples an `idle` run takes, each `None` without
/// `--server-pid` (or when `/proc` could not be read).
#[derive(Debug, Clone, Copy, Default)]
pub struct IdleSamples {
    pub before_open: Option<Sample>,
    pub after_open: Option<Sample>,
    pub after_hold: Option<Sample>,
    pub after_close: Option<Sample>,
}

/// Waits `quiet_secs` without requests, then takes the server's RSS
/// baseline.
pub async fn quiet(quiet_secs: u64, server: Option<&Probe>) -> Option<Sample> {
    eprintln!("idle: quiet for {quiet_secs} s before the baseline");
    tokio::time::sleep(Duration::from_secs(quiet_secs)).await;
    server.and_then(Probe::try_sample)
}

/// What [`hold`] measured.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub secs: f64,
    /// The server after the hold.
    pub after_hold: Option<Sample>,
    /// The bench process before and after the hold.
    pub bench_before: Option<Sample>,
    pub bench_after: Option<Sample>,
}

/// Holds `opened` connections for `hold_secs`, saying every 5 s how many
/// the server has closed so far (`closed_so_far`).
pub async fn hold(
    hold_secs: u64,
    opened: u64,
    server: Option<&Probe>,
    bench: &Probe,
    mut closed_so_far: impl AsyncFnMut() -> Result<u64>,
) -> Result<Held> {
    eprintln!("idle: {opened} open; holding for {hold_secs} s");
    let bench_before = bench.try_sample();
    let hold_start = Instant::now();
    let hold_for = Duration::from_secs(hold_secs);
    while hold_start.elapsed() < hold_for {
        let left = hold_for.saturating_sub(hold_start.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(5))).await;
        let closed = closed_so_far().await?;
        eprintln!(
            "idle: [{:5.1}s] holding; {closed} closed by the server so far",
            hold_start.elapsed().as_secs_f64(),
        );
    }
    let secs = hold_start.elapsed().as_secs_f64();
    Ok(Held {
        secs,
        after_hold: server.and_then(Probe::try_sample),
        bench_before,
        bench_after: bench.try_sample(),
    })
}

/// An `idle` run's costs, computed from its samples.
#[derive(Debug, Clone)]
pub struct IdleCosts {
    pub samples: IdleSamples,
    pub opened: u64,
    pub connect_secs: f64,
    pub connect: Summary,
    pub hold_secs: f64,
    pub rss_per_conn: Option<f64>,
    pub rss_per_conn_at_open: Option<f64>,
    pub connect_cpu: Option<f64>,
    pub connect_cpu_us: Option<f64>,
    pub hold_cpu: Option<f64>,
    pub hold_cpu_us_per_conn_min: Option<f64>,
}

/// CPU seconds between two samples.
pub fn cpu_between(a: Option<Sample>, b: Option<Sample>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(b.cpu_secs - a.cpu_secs),
        _ => None,
    }
}

impl IdleCosts {
    /// `opened` connections opened in `connect_secs` (latencies `connect`)
    /// and held for `hold_secs`.
    pub fn new(
        samples: IdleSamples,
        opened: u64,
        connect_secs: f64,
        connect: Summary,
        hold_secs: f64,
    ) -> IdleCosts {
        let per_conn = |x: f64| (opened > 0).then(|| x / opened as f64);
        let rss_growth = |after: Option<Sample>| match (samples.before_open, after) {
            (Some(b), Some(a)) => per_conn(a.rss_kib as f64 - b.rss_kib as f64),
            _ => None,
        };
        let connect_cpu = cpu_between(samples.before_open, samples.after_open);
        let hold_cpu = cpu_between(samples.after_open, samples.after_hold);
        IdleCosts {
            samples,
            opened,
            connect_secs,
            connect,
            hold_secs,
            rss_per_conn: rss_growth(samples.after_hold),
            rss_per_conn_at_open: rss_growth(samples.after_open),
            connect_cpu,
            connect_cpu_us: connect_cpu.and_then(|c| per_conn(c * 1e6)),
            hold_cpu,
            hold_cpu_us_per_conn_min: hold_cpu
                .and_then(|c| per_conn(c * 1e6 / (hold_secs.max(1e-9) / 60.0))),
        }
    }

    /// The summary lines from `opened` to `hold cpu`.
    pub fn say(&self, out: &impl Say, failed: u64) {
        let opt = |x: Option<f64>, unit: &str| {
            x.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.3} {unit}"))
        };
        let opt_kib = |x: Option<Sample>| {
            x.map_or_else(|| "n/a".to_owned(), |x| format!("{} KiB", x.rss_kib))
        };
        let s = &self.samples;
        say_opened(out, self.opened, failed, self.connect_secs, self.connect);
        say!(
            out,
            "server rss     {} before, {} open, {} after hold, {} after close",
            opt_kib(s.before_open),
            opt_kib(s.after_open),
            opt_kib(s.after_hold),
            opt_kib(s.after_close)
        );
        say!(
            out,
            "rss/conn       {} after hold ({} right after opening)",
            opt(self.rss_per_conn, "KiB"),
            opt(self.rss_per_conn_at_open, "KiB")
        );
        say!(
            out,
            "connect cpu    {} ({} per connection)",
            opt(self.connect_cpu, "s"),
            opt(self.connect_cpu_us, "us")
        );
        say!(
            out,
            "hold cpu       {} over {:.1} s ({} per connection-minute)",
            opt(self.hold_cpu, "s"),
            self.hold_secs,
            opt(self.hold_cpu_us_per_conn_min, "us")
        );
    }

    /// The report's keys about connecting and the server: `connect_secs`,
    /// `connects_per_sec`, `connect_latency_ms`, `server`,
    /// `hold_secs_measured`, plus `bench_hold_cpu_secs` from `bench_cpu`.
    pub fn add_to(&self, report: &mut Value, server: Option<&Probe>, bench_cpu: Option<f64>) {
        let rss = |s: Option<Sample>| s.map(|s| s.rss_kib);
        let s = &self.samples;
        let keys = json!({
            "connect_secs": round3(self.connect_secs),
            "connects_per_sec": round3(self.opened as f64 / self.connect_secs),
            "connect_latency_ms": self.connect.to_json(),
            "server": server.map(|p| json!({
                "pid": p.pid(),
                "rss_kib_before_open": rss(s.before_open),
                "rss_kib_open": rss(s.after_open),
                "rss_kib_after_hold": rss(s.after_hold),
                "rss_kib_after_close": rss(s.after_close),
                "rss_kib_per_conn": self.rss_per_conn.map(round3),
                "rss_kib_per_conn_at_open": self.rss_per_conn_at_open.map(round3),
                "connect_cpu_secs": self.connect_cpu.map(round3),
                "connect_cpu_us_per_conn": self.connect_cpu_us.map(round3),
                "hold_cpu_secs": self.hold_cpu.map(round3),
                "hold_cpu_us_per_conn_per_min": self.hold_cpu_us_per_conn_min.map(round3),
            })),
            "hold_secs_measured": round3(self.hold_secs),
            "bench_hold_cpu_secs": bench_cpu.map(round3),
        });
        merge(report, keys);
    }
}

/// Adds the keys of the object `keys` to the object `report`.
pub fn merge(report: &mut Value, keys: Value) {
    if let (Some(report), Value::Object(keys)) = (report.as_object_mut(), keys) {
        report.extend(keys);
    }
}
