//! unimsg's side of the fan-out receivers of `broadcast`, `sse` and
//! `group`: WebSocket or SSE connections as a [`Receiver`] of the scenario
//! engine's [`Fleet`], and which of their events belong to this run.
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

use std::sync::Arc;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;
use unimsg_client::proto::{Event, EventType, Seq};
use unimsg_client::{Authed, SseConnection, WsConnection};

pub use crate::engine::fleet::{Closed, Fleet, Next, Seen};
use crate::engine::fleet::{Incoming, Matches, Receiver};

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

impl Receiver for Conn {
    type Payload = Event;

    async fn next_payload(&mut self) -> Result<Option<Incoming<Event>>> {
        Ok(self.next_event().await?.map(Incoming::Payload))
    }

    async fn close(self) {
        Conn::close(self).await;
    }

    fn ended_reason(&self) -> String {
        Conn::ended_reason(self)
    }

    fn read_failed(&self, error: &anyhow::Error) -> String {
        let kind = match self {
            Conn::Ws(_) => "websocket",
            Conn::Sse(_) => "event stream",
        };
        format!("{kind} read failed: {error}")
    }
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

    /// The matcher as the engine's fleet takes it.
    fn into_matches(self) -> Matches<Event> {
        Arc::new(move |event| self.matches(event))
    }
}

/// Opens `owners.len()` connections, connection `i` with the token of
/// `owners[i]`, `concurrency` attempts at a time, and starts a reader on
/// each (see [`Fleet::open`]).
pub async fn open_fleet(
    owners: Vec<Authed>,
    transport: Transport,
    concurrency: usize,
    matcher: Matcher,
    label: &str,
) -> Result<Fleet> {
    let owners = &owners;
    Fleet::open(
        owners.len() as u64,
        concurrency,
        label,
        &format!("{} connections", transport.as_str()),
        |i| async move {
            let authed = usize::try_from(i)
                .ok()
                .and_then(|i| owners.get(i))
                .ok_or_else(|| anyhow::anyhow!("no owner for connection {i}"))?;
            Conn::open(authed, transport, None).await
        },
        matcher.into_matches(),
    )
    .await
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
