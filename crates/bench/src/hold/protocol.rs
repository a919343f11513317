//! The messages between the parent and a holder, one JSON object per line
//! (see the protocol in [`super`]), and the sums the parent makes of them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use unimsg_client::proto::EventType;

use crate::fanout::Transport;
use crate::stats::Latency;

/// One holder's work: its share of the connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub url: String,
    pub label: String,
    pub transport: Transport,
    pub connect_concurrency: u64,
    pub kind: EventType,
    pub run: String,
    /// Index of this share's first connection over the whole run.
    pub first_conn: u64,
    /// The share's connections in order, by owner.
    pub owners: Vec<Owner>,
    pub source_ips: Vec<IpAddr>,
    /// The CA certificates (PEM) of an `https://` server, if not the
    /// system's.
    #[serde(default)]
    pub ca_pem: Option<String>,
}

/// `conns` consecutive connections with one access token.
#[derive(Clone, Serialize, Deserialize)]
pub struct Owner {
    pub token: String,
    pub conns: u64,
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Owner")
            .field("token", &"[redacted]")
            .field("conns", &self.conns)
            .finish()
    }
}

/// Parent → holder, after the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Answer with [`Counts`]; round `k` was posted at `posted_us[k]`
    /// (wall clock, µs since the UNIX epoch).
    Report { posted_us: Vec<u64> },
    /// Close every connection, answer [`Ended`] and exit.
    Close,
}

/// Holder → parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Ready(Opened),
    Progress {
        round: u64,
        /// Distinct connections of this holder that have the round.
        delivered: u64,
        /// The latest arrival, wall clock µs since the UNIX epoch.
        last_us: u64,
    },
    Report(Counts),
    Closed(Ended),
    Failed {
        error: String,
    },
}

/// What a holder opened.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Opened {
    pub opened: u64,
    /// Failed attempts, by error.
    pub failures: BTreeMap<String, u64>,
    /// Connect latency as [`Latency::to_buckets`].
    pub connect_latency: Vec<[u64; 2]>,
    pub connect_secs: f64,
}

/// What every holder opened, together.
#[derive(Debug, Clone)]
pub struct OpenedAll {
    pub opened: u64,
    pub failures: BTreeMap<String, u64>,
    pub connect_latency: Latency,
    /// The longest any holder took (they open at the same time).
    pub connect_secs: f64,
}

impl OpenedAll {
    pub fn of(ready: &[Opened]) -> Result<OpenedAll> {
        let mut all = OpenedAll {
            opened: 0,
            failures: BTreeMap::new(),
            connect_latency: Latency::new()?,
            connect_secs: 0.0,
        };
        for r in ready {
            all.opened += r.opened;
            for (reason, count) in &r.failures {
                *all.failures.entry(reason.clone()).or_default() += count;
            }
            all.connect_latency
                .merge(&Latency::from_buckets(&r.connect_latency)?)?;
            all.connect_secs = all.connect_secs.max(r.connect_secs);
        }
        Ok(all)
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// A holder's counts so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    /// The holder's process and its CPU time (user + system) so far.
    pub pid: u32,
    pub cpu_secs: Option<f64>,
    /// Connections the server has ended so far.
    pub ended: u64,
    /// One per posted round.
    pub rounds: Vec<RoundCounts>,
    /// Copies of a round a connection already had, or of no posted round.
    pub duplicates: u64,
}

/// One round seen by one holder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoundCounts {
    pub delivered: u64,
    /// Wall clock µs since the UNIX epoch.
    pub first_us: Option<u64>,
    pub last_us: Option<u64>,
    /// Post → arrival, as [`Latency::to_buckets`].
    pub latency: Vec<[u64; 2]>,
}

/// Every holder's [`Ended`], together.
pub fn ended_all(ended: &[Ended]) -> Ended {
    let mut all = Ended::default();
    for e in ended {
        all.other_events += e.other_events;
        for (reason, count) in &e.ended_early {
            *all.ended_early.entry(reason.clone()).or_default() += count;
        }
    }
    all
}

/// What a holder saw while closing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ended {
    /// Events of other types or runs.
    pub other_events: u64,
    /// Connections the server ended before the bench closed them, by reason.
    pub ended_early: BTreeMap<String, u64>,
}

/// Microseconds since the UNIX epoch now.
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_is_json_lines() -> Result<()> {
        let report = serde_json::to_string(&Command::Report {
            posted_us: vec![1, 2],
        })?;
        assert_eq!(report, r#"{"cmd":"report","posted_us":[1,2]}"#);
        assert_eq!(
            serde_json::to_string(&Command::Close)?,
            r#"{"cmd":"close"}"#
        );
        let progress = Reply::Progress {
            round: 1,
            delivered: 2,
            last_us: 3,
        };
        let line = serde_json::to_string(&progress)?;
        assert_eq!(
            line,
            r#"{"reply":"progress","round":1,"delivered":2,"last_us":3}"#
        );
        assert!(matches!(
            serde_json::from_str::<Reply>(&line)?,
            Reply::Progress { round: 1, .. }
        ));
        let ready = serde_json::to_string(&Reply::Ready(Opened::default()))?;
        assert!(
            ready.starts_with(r#"{"reply":"ready","opened":0"#),
            "{ready}"
        );
        Ok(())
    }
}
