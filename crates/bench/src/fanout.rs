//! Fan-out receivers shared by `broadcast`, `sse` and `group`: many
//! WebSocket or SSE connections, each read by its own task, reporting every
//! event that belongs to this run to one channel with its arrival time.
//!
//! An event belongs to the run when it has the expected type and its
//! `data.content.run` is the run id; its `data.content.round` says which
//! broadcast or message it is, and `data.content.t` (optional) when it was
//! sent, in nanoseconds since an `Instant` shared by the bench process.
//! Everything else (receipts, `group.changed`, broadcasts of other runs) is
//! counted and skipped.
//!
//! `idle`, `broadcast` and `sse` run their fleets through [`crate::hold`],
//! which can spread them over several processes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use unimsg_client::proto::{Event, EventType, Seq};
use unimsg_client::{Authed, SseConnection, WsConnection};

use crate::stats::Latency;

/// How long closing the connections may take at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which real-time transport the receivers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `GET /v1/ws`
    Ws,
    /// `GET /v1/events`
    Sse,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
        }
    }
}

/// One open connection of either kind (the WebSocket boxed: it is 20
/// times the size of the SSE stream).
#[derive(Debug)]
pub enum Conn {
    Ws(Box<WsConnection>),
    Sse(SseConnection),
}

impl Conn {
    /// Opens a connection; with `after`, the inbox after that seq is
    /// replayed first, else it starts at the inbox's end.
    pub async fn open(authed: &Authed, transport: Transport, after: Option<Seq>) -> Result<Conn> {
        Ok(match (transport, after) {
            (Transport::Ws, after) => Conn::Ws(Box::new(authed.connect_ws(after).await?)),
            (Transport::Sse, Some(after)) => Conn::Sse(authed.connect_sse_after(after).await?),
            (Transport::Sse, None) => Conn::Sse(authed.connect_sse(None).await?),
        })
    }

    /// The next inbox event; `None` once the server ended the connection.
    pub async fn next_event(&mut self) -> Result<Option<Event>> {
        Ok(match self {
            Conn::Ws(ws) => ws.next_event().await?,
            Conn::Sse(sse) => sse.next_event().await?.map(|e| e.event),
        })
    }

    /// Why the server ended the connection, for reports.
    pub fn ended_reason(&self) -> String {
        match self {
            Conn::Ws(ws) => format!("websocket closed (close code {:?})", ws.close_code()),
            Conn::Sse(_) => "event stream ended by the server".to_owned(),
        }
    }

    /// Closes politely (WebSocket close frame; an SSE stream is dropped).
    pub async fn close(self) {
        if let Conn::Ws(mut ws) = self {
            let _ = ws.close().await;
        }
    }
}

/// One event of this run seen by one connection.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// Index of the connection in the fleet.
    pub conn: usize,
    /// `data.content.round`.
    pub round: u64,
    /// When the reader got it.
    pub at: Instant,
    /// `data.content.t`, if present.
    pub stamp: Option<u64>,
}

/// What [`Fleet::next`] found.
#[derive(Debug, Clone, Copy)]
pub enum Next {
    Seen(Seen),
    /// Nothing within the wait.
    Quiet,
    /// Every connection has ended: nothing more will come.
    AllEnded,
}

/// Which events the readers report.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub kind: EventType,
    pub run: Arc<str>,
}

impl Matcher {
    /// `(round, stamp)` when `event` belongs to this run.
    fn matches(&self, event: &Event) -> Option<(u64, Option<u64>)> {
        if event.kind != self.kind {
            return None;
        }
        let content = &event.data["content"];
        if content["run"].as_str() != Some(&*self.run) {
            return None;
        }
        Some((content["round"].as_u64()?, content["t"].as_u64()))
    }
}

/// What one reader counted when it stopped.
#[derive(Debug, Default)]
pub struct ReaderEnd {
    /// Events (or frames) of other types or runs.
    pub other_events: u64,
    /// Why the connection ended before the bench closed it.
    pub ended: Option<String>,
}

/// The open connections and their readers.
#[derive(Debug)]
pub struct Fleet {
    /// Connections that opened.
    pub opened: usize,
    /// Failed attempts, by error.
    pub failures: BTreeMap<String, u64>,
    pub connect_latency: Latency,
    pub connect_secs: f64,
    rx: mpsc::UnboundedReceiver<Seen>,
    tasks: Vec<JoinHandle<ReaderEnd>>,
    stop: CancellationToken,
    /// Connections the server has ended so far.
    ended: Arc<AtomicU64>,
}

/// What the readers reported once closed.
#[derive(Debug, Default)]
pub struct Closed {
    pub other_events: u64,
    /// Connections the server ended early, by reason.
    pub ended_early: BTreeMap<String, u64>,
}

impl Closed {
    pub fn ended_early_count(&self) -> u64 {
        self.ended_early.values().sum()
    }
}

impl Fleet {
    /// Opens `owners.len()` connections, connection `i` with the token of
    /// `owners[i]`, `concurrency` attempts at a time, and starts a reader on
    /// each. Attempts that fail are counted, not fatal.
    pub async fn open(
        owners: Vec<Authed>,
        transport: Transport,
        concurrency: usize,
        matcher: Matcher,
        label: &str,
    ) -> Result<Fleet> {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let ended = Arc::new(AtomicU64::new(0));
        let total = owners.len();
        let started = Instant::now();
        let mut attempts = stream::iter(owners.into_iter().enumerate())
            .map(|(i, authed)| async move {
                let t0 = Instant::now();
                let conn = Conn::open(&authed, transport, None).await;
                (i, t0.elapsed(), conn)
            })
            .buffer_unordered(concurrency.max(1));
        let mut fleet = Fleet {
            opened: 0,
            failures: BTreeMap::new(),
            connect_latency: Latency::new()?,
            connect_secs: 0.0,
            rx,
            tasks: Vec::with_capacity(total),
            stop: stop.clone(),
            ended: ended.clone(),
        };
        let mut last_print = Instant::now();
        while let Some((i, took, conn)) = attempts.next().await {
            match conn {
                Ok(conn) => {
                    fleet.connect_latency.record(took);
                    fleet.opened += 1;
                    fleet.tasks.push(tokio::spawn(read(
                        conn,
                        i,
                        matcher.clone(),
                        tx.clone(),
                        stop.clone(),
                        ended.clone(),
                    )));
                }
                Err(e) => *fleet.failures.entry(format!("{e:#}")).or_default() += 1,
            }
            if last_print.elapsed() >= Duration::from_secs(1) {
                last_print = Instant::now();
                eprintln!(
                    "{label}: [{:5.1}s] {} of {total} {} connections open, {} failed",
                    started.elapsed().as_secs_f64(),
                    fleet.opened,
                    transport.as_str(),
                    fleet.failed()
                );
            }
        }
        fleet.connect_secs = started.elapsed().as_secs_f64();
        Ok(fleet)
    }

    /// Failed connection attempts.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// The next event of this run, waiting at most `wait` for it.
    pub async fn next(&mut self, wait: Duration) -> Next {
        match tokio::time::timeout(wait, self.rx.recv()).await {
            Ok(Some(seen)) => Next::Seen(seen),
            Ok(None) => Next::AllEnded,
            Err(_) => Next::Quiet,
        }
    }

    /// An event of this run that has already arrived, without waiting.
    pub fn try_next(&mut self) -> Option<Seen> {
        self.rx.try_recv().ok()
    }

    /// The next event of this run; `None` once every connection has ended.
    pub async fn recv(&mut self) -> Option<Seen> {
        self.rx.recv().await
    }

    /// Connections the server has ended so far (their reasons come with
    /// [`Fleet::close`]).
    pub fn ended_so_far(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }

    /// Stops the readers, closes the connections and collects the readers'
    /// counts.
    pub async fn close(self) -> Closed {
        close_readers(&self.stop, self.tasks).await
    }
}

/// Stops readers (unimsg's or a peer's), waits for them to close their
/// connections (at most [`CLOSE_TIMEOUT`] in all) and adds up their counts.
pub async fn close_readers(stop: &CancellationToken, tasks: Vec<JoinHandle<ReaderEnd>>) -> Closed {
    stop.cancel();
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let mut closed = Closed::default();
    for task in tasks {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(end)) => {
                closed.other_events += end.other_events;
                if let Some(reason) = end.ended {
                    *closed.ended_early.entry(reason).or_default() += 1;
                }
            }
            Ok(Err(e)) => {
                *closed
                    .ended_early
                    .entry(format!("reader task failed: {e}"))
                    .or_default() += 1;
            }
            Err(_) => {
                eprintln!(
                    "warning: connections did not close within {} s",
                    CLOSE_TIMEOUT.as_secs()
                );
                break;
            }
        }
    }
    closed
}

/// Reads one connection until `stop` or its end, reporting this run's events.
async fn read(
    mut conn: Conn,
    index: usize,
    matcher: Matcher,
    tx: mpsc::UnboundedSender<Seen>,
    stop: CancellationToken,
    ended: Arc<AtomicU64>,
) -> ReaderEnd {
    let mut end = ReaderEnd::default();
    loop {
        let event = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            event = conn.next_event() => event,
        };
        let at = Instant::now();
        match event {
            Ok(Some(event)) => match matcher.matches(&event) {
                Some((round, stamp)) => {
                    // The receiver lives as long as the fleet; a send error
                    // only happens while it is being dropped.
                    let _ = tx.send(Seen {
                        conn: index,
                        round,
                        at,
                        stamp,
                    });
                }
                None => end.other_events += 1,
            },
            Ok(None) => {
                ended.fetch_add(1, Ordering::Relaxed);
                end.ended = Some(conn.ended_reason());
                return end;
            }
            Err(e) => {
                ended.fetch_add(1, Ordering::Relaxed);
                end.ended = Some(format!("{} read failed: {e}", conn_kind(&conn)));
                return end;
            }
        }
    }
    conn.close().await;
    end
}

fn conn_kind(conn: &Conn) -> &'static str {
    match conn {
        Conn::Ws(_) => "websocket",
        Conn::Sse(_) => "event stream",
    }
}

/// Nanoseconds from `base` to `at` (0 if `at` is earlier).
pub fn nanos_between(base: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds since `base`, for `content.t` stamps.
pub fn nanos_since(base: Instant) -> u64 {
    nanos_between(base, Instant::now())
}

/// Server CPU and RSS between two samples, in the same shape in every
/// scenario's JSON: `{pid, cpu_secs, cpu_cores_busy, rss_kib_before,
/// rss_kib_after}` plus `cpu_us_per_<unit>` when `count` is given.
pub fn server_usage(
    probe: Option<&crate::procfs::Probe>,
    before: Option<crate::procfs::Sample>,
    after: Option<crate::procfs::Sample>,
    wall_secs: f64,
    per: Option<(&str, u64)>,
) -> Option<Value> {
    use crate::stats::round3;
    let (probe, before, after) = (probe?, before?, after?);
    let cpu = after.cpu_secs - before.cpu_secs;
    let mut v = json!({
        "pid": probe.pid(),
        "cpu_secs": round3(cpu),
        "cpu_cores_busy": round3(cpu / wall_secs.max(1e-9)),
        "rss_kib_before": before.rss_kib,
        "rss_kib_after": after.rss_kib,
    });
    if let Some((unit, count)) = per
        && count > 0
    {
        v[format!("cpu_us_per_{unit}")] = json!(round3(cpu * 1e6 / count as f64));
    }
    Some(v)
}

/// The summary line of [`server_usage`]'s report; `unit` as given there
/// (`delivery`, `msg`).
pub fn server_line(server: &Value, unit: &str) -> String {
    format!(
        "server         cpu {} s ({} cores busy), {} us/{unit}, rss {} -> {} KiB",
        server["cpu_secs"],
        server["cpu_cores_busy"],
        server[format!("cpu_us_per_{unit}")],
        server["rss_kib_before"],
        server["rss_kib_after"]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use unimsg_client::proto::Seq;

    fn event(kind: EventType, content: Value) -> Result<Event> {
        Ok(serde_json::from_value(json!({
            "seq": Seq(1),
            "type": kind.as_str(),
            "ts": "2024-01-01T00:00:00Z",
            "data": {"content": content},
        }))?)
    }

    #[test]
    fn only_this_runs_events_match() -> Result<()> {
        let m = Matcher {
            kind: EventType::BroadcastNew,
            run: "abc".into(),
        };
        let ours = event(
            EventType::BroadcastNew,
            json!({"run": "abc", "round": 3, "t": 9}),
        )?;
        assert_eq!(m.matches(&ours), Some((3, Some(9))));
        let other_run = event(EventType::BroadcastNew, json!({"run": "x", "round": 3}))?;
        assert_eq!(m.matches(&other_run), None);
        let other_kind = event(EventType::MessageNew, json!({"run": "abc", "round": 3}))?;
        assert_eq!(m.matches(&other_kind), None);
        let unstamped = event(EventType::BroadcastNew, json!({"run": "abc", "round": 0}))?;
        assert_eq!(m.matches(&unstamped), Some((0, None)));
        Ok(())
    }
}
