//! The holder's side, the same in this process and in a child: open the
//! job's connections, count this run's events by round, answer commands.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use tokio::sync::mpsc;
use tokio::time::Instant;
use unimsg_client::{Authed, Client};

use super::protocol::{Command, Counts, Ended, Job, Opened, Reply, RoundCounts, wall_us};
use crate::fanout::{Matcher, Seen, open_fleet};
use crate::procfs::Probe;
use crate::stats::Latency;

/// How often a holder reports the progress of rounds still incomplete.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Rounds numbered beyond this are not counted (no scenario sends more).
const MAX_ROUNDS: u64 = 1_000_000;

/// Turns this process's `Instant`s into wall-clock µs.
#[derive(Debug, Clone, Copy)]
struct Clock {
    instant: Instant,
    wall_us: u64,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            wall_us: wall_us(),
        }
    }

    fn wall_us(self, at: Instant) -> u64 {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if at >= self.instant {
            self.wall_us
                .saturating_add(micros(at.duration_since(self.instant)))
        } else {
            self.wall_us
                .saturating_sub(micros(self.instant.duration_since(at)))
        }
    }
}

/// One round as a holder counts it.
#[derive(Debug, Default)]
struct RoundTally {
    /// Arrival of each distinct connection's copy, wall clock µs.
    arrivals: Vec<u64>,
    last_us: u64,
    /// Changed since the last progress report.
    dirty: bool,
}

/// This run's events seen by one holder.
#[derive(Debug, Default)]
struct Tally {
    opened: u64,
    rounds: Vec<RoundTally>,
    seen: HashSet<(usize, u64)>,
    duplicates: u64,
}

impl Tally {
    /// Counts one event; returns a progress reply when the round has now
    /// reached every connection of the holder.
    fn add(&mut self, seen: Seen, clock: Clock) -> Option<Reply> {
        let at = clock.wall_us(seen.at);
        let Ok(r) = usize::try_from(seen.round) else {
            self.duplicates += 1;
            return None;
        };
        if seen.round >= MAX_ROUNDS || !self.seen.insert((seen.conn, seen.round)) {
            self.duplicates += 1;
            return None;
        }
        if self.rounds.len() <= r {
            self.rounds.resize_with(r + 1, RoundTally::default);
        }
        let round = &mut self.rounds[r];
        round.arrivals.push(at);
        round.last_us = round.last_us.max(at);
        round.dirty = true;
        if round.arrivals.len() as u64 == self.opened {
            round.dirty = false;
            return Some(progress(seen.round, round));
        }
        None
    }

    /// Progress of every round that moved since the last report.
    fn progress(&mut self) -> Vec<Reply> {
        let mut replies = Vec::new();
        for (k, round) in self.rounds.iter_mut().enumerate() {
            if round.dirty {
                round.dirty = false;
                replies.push(progress(k as u64, round));
            }
        }
        replies
    }

    fn counts(&self, posted_us: &[u64], pid: u32, cpu_secs: Option<f64>, ended: u64) -> Counts {
        let mut counts = Counts {
            pid,
            cpu_secs,
            ended,
            rounds: Vec::with_capacity(posted_us.len()),
            duplicates: self.duplicates,
        };
        for (k, &posted) in posted_us.iter().enumerate() {
            let Some(round) = self.rounds.get(k) else {
                counts.rounds.push(RoundCounts::default());
                continue;
            };
            // A fresh histogram cannot fail to be created (fixed bounds);
            // if it ever did, the latencies would be missing, not the counts.
            let latency = Latency::new().ok().map(|mut latency| {
                for &at in &round.arrivals {
                    latency.record_micros(at.saturating_sub(posted));
                }
                latency.to_buckets()
            });
            counts.rounds.push(RoundCounts {
                delivered: round.arrivals.len() as u64,
                first_us: round.arrivals.iter().min().copied(),
                last_us: round.arrivals.iter().max().copied(),
                latency: latency.unwrap_or_default(),
            });
        }
        counts.duplicates += self
            .rounds
            .iter()
            .skip(posted_us.len())
            .map(|r| r.arrivals.len() as u64)
            .sum::<u64>();
        counts
    }
}

fn progress(round: u64, tally: &RoundTally) -> Reply {
    Reply::Progress {
        round,
        delivered: tally.arrivals.len() as u64,
        last_us: tally.last_us,
    }
}

/// A holder: opens the job's connections, reports, and closes them when
/// told; the one implementation behind both kinds of holder.
pub async fn serve(
    job: Job,
    mut commands: mpsc::UnboundedReceiver<Command>,
    replies: mpsc::UnboundedSender<Reply>,
) -> Result<()> {
    let send = |reply: Reply| {
        replies
            .send(reply)
            .map_err(|_| anyhow!("the parent stopped listening"))
    };
    let owners = job_owners(&job)?;
    let clock = Clock::now();
    let probe = Probe::this_process();
    let matcher = Matcher {
        kind: job.kind,
        run: job.run.as_str().into(),
    };
    let mut fleet = open_fleet(
        owners,
        job.transport,
        usize::try_from(job.connect_concurrency)?,
        matcher,
        &job.label,
    )
    .await?;
    send(Reply::Ready(Opened {
        opened: fleet.opened as u64,
        failures: fleet.failures.clone(),
        connect_latency: fleet.connect_latency.to_buckets(),
        connect_secs: fleet.connect_secs,
    }))?;
    let mut tally = Tally {
        opened: fleet.opened as u64,
        ..Tally::default()
    };
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut all_ended = fleet.opened == 0;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Report { posted_us }) => {
                    while let Some(seen) = fleet.try_next() {
                        if let Some(reply) = tally.add(seen, clock) {
                            send(reply)?;
                        }
                    }
                    let cpu = probe.try_sample().map(|s| s.cpu_secs);
                    let counts = tally.counts(&posted_us, probe.pid(), cpu, fleet.ended_so_far());
                    send(Reply::Report(counts))?;
                }
                Some(Command::Close) => break,
                None => bail!("no more commands: the parent is gone"),
            },
            seen = fleet.recv(), if !all_ended => match seen {
                Some(seen) => {
                    if let Some(reply) = tally.add(seen, clock) {
                        send(reply)?;
                    }
                }
                None => all_ended = true,
            },
            _ = tick.tick() => {
                for reply in tally.progress() {
                    send(reply)?;
                }
            }
        }
    }
    let closed = fleet.close().await;
    send(Reply::Closed(Ended {
        other_events: closed.other_events,
        ended_early: closed.ended_early,
    }))?;
    Ok(())
}

/// One authenticated handle per connection of the job, each on the client
/// of its source address.
fn job_owners(job: &Job) -> Result<Vec<Authed>> {
    let ca = job.ca_pem.as_deref().map(str::as_bytes);
    let clients = if job.source_ips.is_empty() {
        vec![Client::with_options(&job.url, None, ca)?]
    } else {
        job.source_ips
            .iter()
            .map(|&ip| Client::with_options(&job.url, Some(ip), ca))
            .collect::<Result<Vec<_>, _>>()?
    };
    let total: u64 = job.owners.iter().map(|o| o.conns).sum();
    let mut authed = Vec::with_capacity(usize::try_from(total)?);
    let mut conn = job.first_conn;
    for owner in &job.owners {
        for _ in 0..owner.conns {
            let client = &clients[usize::try_from(conn % clients.len() as u64)?];
            authed.push(client.with_token(owner.token.clone()));
            conn += 1;
        }
    }
    Ok(authed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    use super::super::protocol::Owner;
    use crate::fanout::Transport;
    use unimsg_client::proto::EventType;

    #[test]
    fn source_addresses_go_round_robin_over_the_whole_run() -> Result<()> {
        let ips: Vec<IpAddr> = vec![[127, 0, 0, 1].into(), [127, 0, 0, 2].into()];
        let job = Job {
            ca_pem: None,
            url: "http://h".into(),
            label: "t".into(),
            transport: Transport::Ws,
            connect_concurrency: 1,
            kind: EventType::BroadcastNew,
            run: "r".into(),
            first_conn: 3,
            owners: vec![
                Owner {
                    token: "a".into(),
                    conns: 2,
                },
                Owner {
                    token: "b".into(),
                    conns: 1,
                },
            ],
            source_ips: ips.clone(),
        };
        let got: Vec<(Option<IpAddr>, String)> = job_owners(&job)?
            .iter()
            .map(|a| (a.client().local_address(), a.token().to_owned()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(ips[1]), "a".into()),
                (Some(ips[0]), "a".into()),
                (Some(ips[1]), "b".into()),
            ]
        );
        let job = Job {
            source_ips: Vec::new(),
            ..job
        };
        assert!(
            job_owners(&job)?
                .iter()
                .all(|a| a.client().local_address().is_none())
        );
        Ok(())
    }

    #[test]
    fn the_tally_counts_rounds_duplicates_and_latency() {
        let clock = Clock::now();
        let seen = |conn, round, after_ms| Seen {
            conn,
            round,
            at: clock.instant + Duration::from_millis(after_ms),
            stamp: None,
        };
        let mut tally = Tally {
            opened: 2,
            ..Tally::default()
        };
        assert!(tally.add(seen(0, 0, 5), clock).is_none());
        assert!(tally.add(seen(0, 0, 6), clock).is_none(), "a duplicate");
        assert!(tally.add(seen(0, 1, 7), clock).is_none());
        let progress = tally.progress();
        assert_eq!(progress.len(), 2);
        assert!(tally.progress().is_empty(), "nothing moved since");
        match tally.add(seen(1, 0, 9), clock) {
            Some(Reply::Progress {
                round: 0,
                delivered: 2,
                last_us,
            }) => assert_eq!(last_us, clock.wall_us + 9_000),
            other => panic!("{other:?}"),
        }
        assert!(tally.add(seen(1, 2, 9), clock).is_none());
        // Rounds 0 and 1 were posted at the clock's origin; round 2 was not.
        let counts = tally.counts(&[clock.wall_us, clock.wall_us], 7, Some(1.5), 0);
        assert_eq!(counts.rounds.len(), 2);
        assert_eq!(counts.rounds[0].delivered, 2);
        assert_eq!(counts.rounds[0].first_us, Some(clock.wall_us + 5_000));
        assert_eq!(counts.rounds[0].last_us, Some(clock.wall_us + 9_000));
        assert_eq!(counts.rounds[1].delivered, 1);
        assert_eq!(counts.duplicates, 2, "one copy and one unposted round");
        let latency = Latency::from_buckets(&counts.rounds[0].latency)
            .unwrap_or_else(|e| panic!("{e:#}"))
            .summary();
        assert_eq!(latency.count, 2);
        assert!((latency.max - 9.0).abs() < 0.01, "{latency:?}");
    }
}
