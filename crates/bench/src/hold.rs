//! Holding the connections of `idle`, `broadcast` and `sse`, in this
//! process or spread over child processes, from one or several source
//! addresses.
//!
//! One process can hold about as many sockets as its open-file limit
//! (~19.9k here), and one source address reaches one server address and
//! port through ~28k ephemeral ports. So the connections are split into
//! `--procs` contiguous shares, each held by a *holder*, and every
//! connection leaves from one of `--source-ips`, chosen round-robin by its
//! index over the whole run. With `--procs 1` the one holder is a task of
//! this process; with more, each holder is a child process of this
//! executable (the hidden subcommand `hold`), and the parent holds no
//! connection itself. Both kinds run the same [`serve`]; only the channel
//! differs (in-process queues, or JSON lines over the child's stdin and
//! stdout).
//!
//! The protocol, one JSON object per line:
//!
//! 1. parent → holder: a [`Job`] (server URL, tokens with their number of
//!    connections, source addresses, transport, which events to count);
//! 2. the holder opens its connections and answers `{"reply":"ready",…}`
//!    ([`Opened`]: connections open, failures, connect-latency histogram);
//! 3. while events of the run arrive, it reports `{"reply":"progress",
//!    "round":k,"delivered":d,"last_us":t}` when round `k` has reached all
//!    its connections, and otherwise at most every
//!    [`PROGRESS_EVERY`] for rounds that moved (so the parent can wait for
//!    each broadcast and detect a stall);
//! 4. `{"cmd":"report","posted_us":[…]}` asks for [`Counts`]: connections
//!    ended by the server so far, the holder's CPU time and, for each round
//!    `k` posted at `posted_us[k]`, its deliveries, last arrival and a
//!    receive-latency histogram (as `[µs, count]` buckets). Arrival times
//!    are wall-clock microseconds since the UNIX epoch: `Instant`s mean
//!    nothing in another process, and the processes share one clock;
//! 5. `{"cmd":"close"}` closes every connection; the holder answers
//!    `{"reply":"closed",…}` ([`Ended`]) and exits.
//!
//! A holder that fails answers `{"reply":"failed","error":…}` and exits
//! non-zero. A child whose stdin reaches its end before `close` (the
//! parent died) exits at once; the parent kills its children if it gives
//! up. The parent treats a failed or vanished holder, or one that answers
//! out of turn, as a failure of the whole run.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command as Process};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use unimsg_client::proto::EventType;
use unimsg_client::{Authed, Client};

use crate::fanout::{Fleet, Matcher, Seen, Transport};
use crate::procfs::Probe;
use crate::stats::Latency;
use crate::users::User;

/// How often a holder reports the progress of rounds still incomplete.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// How long a holder may take to answer `report`, or to close.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Rounds numbered beyond this are not counted (no scenario sends more).
const MAX_ROUNDS: u64 = 1_000_000;

/// How the connections are spread (flattened into the scenarios' options).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SpreadArgs {
    /// Processes holding the connections. 1 holds them in this process;
    /// more start that many child processes of this executable, each with
    /// an equal share (one process holds at most ~19.9k sockets here).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub procs: u64,
    /// Local addresses the connections leave from, comma-separated (e.g.
    /// 127.0.0.1,127.0.0.2), one per connection in turn; each has its own
    /// ~28k ephemeral ports towards the server [default: the OS chooses].
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
}

impl SpreadArgs {
    /// The source addresses as JSON strings, for reports.
    pub fn source_ips_json(&self) -> Vec<String> {
        self.source_ips.iter().map(ToString::to_string).collect()
    }
}

/// What the holders are to open and count.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// The scenario, for progress lines.
    pub label: &'a str,
    pub url: String,
    pub transport: Transport,
    /// Connection attempts in flight at once, over all holders.
    pub connect_concurrency: u64,
    /// Events of this type with `content.run == run` are counted by round.
    pub kind: EventType,
    pub run: String,
    pub spread: &'a SpreadArgs,
}

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
    let mut fleet = Fleet::open(
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
    let clients = if job.source_ips.is_empty() {
        vec![Client::new(&job.url)?]
    } else {
        job.source_ips
            .iter()
            .map(|&ip| Client::with_local_address(&job.url, Some(ip)))
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

/// `hold`: a child holder talking JSON lines over stdin and stdout.
pub async fn child_main() -> Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await
        .context("cannot read the job from stdin")?
        .context("no job on stdin (`hold` is started by `idle`, `broadcast` or `sse`)")?;
    let job: Job = serde_json::from_str(&first).context("malformed job on stdin")?;
    let label = job.label.clone();
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<Reply>();
    // Cancelled when the parent can no longer be heard or answered.
    let gone = CancellationToken::new();
    let reader = {
        let gone = gone.clone();
        async move {
            loop {
                let line = match lines.next_line().await {
                    Ok(Some(line)) => line,
                    Ok(None) | Err(_) => {
                        gone.cancel();
                        return "stdin closed before `close`: the parent is gone".to_owned();
                    }
                };
                match serde_json::from_str::<Command>(&line) {
                    Ok(command) => {
                        let close = matches!(command, Command::Close);
                        if command_tx.send(command).is_err() || close {
                            // Closing now; the end of stdin no longer matters.
                            return String::new();
                        }
                    }
                    Err(e) => {
                        gone.cancel();
                        return format!("malformed command {line:?}: {e}");
                    }
                }
            }
        }
    };
    let reader = tokio::spawn(reader);
    let writer = {
        let gone = gone.clone();
        tokio::spawn(async move {
            let mut stdout = tokio::io::stdout();
            while let Some(reply) = reply_rx.recv().await {
                let Ok(mut line) = serde_json::to_string(&reply) else {
                    continue;
                };
                line.push('\n');
                if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err()
                {
                    gone.cancel();
                    return;
                }
            }
        })
    };
    let outcome = tokio::select! {
        outcome = serve(job, command_rx, reply_tx.clone()) => outcome,
        () = gone.cancelled() => {
            // Dropping `serve` drops the connections; the process ends next.
            let why = if reader.is_finished() {
                reader.await.unwrap_or_default()
            } else {
                "stdout closed: the parent is gone".to_owned()
            };
            return Err(anyhow!("{label}: {why}; exiting"));
        }
    };
    if let Err(e) = &outcome {
        let _ = reply_tx.send(Reply::Failed {
            error: format!("{e:#}"),
        });
    }
    drop(reply_tx);
    let _ = writer.await;
    outcome.with_context(|| format!("{label}: holder failed"))
}

/// The parent's side: every holder of a run.
pub struct Holders {
    holders: Vec<Holder>,
    replies: mpsc::UnboundedReceiver<(usize, Option<Reply>)>,
    label: String,
}

impl fmt::Debug for Holders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Holders")
            .field("label", &self.label)
            .field("holders", &self.holders.len())
            .finish_non_exhaustive()
    }
}

struct Holder {
    commands: Option<mpsc::UnboundedSender<Command>>,
    /// It has answered `close`.
    closed: bool,
    /// The child process; `None` for a holder in this process.
    child: Option<Child>,
    task: JoinHandle<()>,
}

/// A progress report of one holder (see [`Reply::Progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Index of the holder.
    pub holder: usize,
    pub round: u64,
    pub delivered: u64,
    pub last_us: u64,
}

/// A reply that may come while waiting for another: progress.
fn is_progress(reply: &Reply) -> bool {
    matches!(reply, Reply::Progress { .. })
}

impl Holders {
    /// Splits `n` connections (`per_user` consecutive ones per user of
    /// `users`) into `plan.spread.procs` shares and starts a holder for
    /// each; they start opening at once.
    pub async fn start(plan: &Plan<'_>, users: &[User], n: u64, per_user: u64) -> Result<Holders> {
        let procs = plan.spread.procs.max(1);
        let (tx, replies) = mpsc::unbounded_channel();
        let mut holders = Vec::new();
        for (i, (first, count)) in shares(n, procs).into_iter().enumerate() {
            let job = Job {
                url: plan.url.clone(),
                label: if procs == 1 {
                    plan.label.to_owned()
                } else {
                    format!("{}[{}/{procs}]", plan.label, i + 1)
                },
                transport: plan.transport,
                connect_concurrency: plan.connect_concurrency.div_ceil(procs).max(1),
                kind: plan.kind,
                run: plan.run.clone(),
                first_conn: first,
                owners: share_owners(users, per_user, first, count)?,
                source_ips: plan.spread.source_ips.clone(),
            };
            let holder = if procs == 1 {
                Holder::in_process(i, job, tx.clone())
            } else {
                Holder::child(i, &job, tx.clone())
                    .with_context(|| format!("cannot start holder process {}", i + 1))?
            };
            holders.push(holder);
        }
        Ok(Holders {
            holders,
            replies,
            label: plan.label.to_owned(),
        })
    }

    /// The next reply of any holder; a failed holder, or one that vanished
    /// before answering `close`, is an error.
    async fn recv(&mut self) -> Result<(usize, Reply)> {
        loop {
            let Some((i, reply)) = self.replies.recv().await else {
                bail!("{}: every holder has gone", self.label);
            };
            let closed = self.holders.get(i).is_some_and(|h| h.closed);
            return match reply {
                Some(Reply::Failed { error }) => {
                    bail!("{}: holder {} failed: {error}", self.label, i + 1)
                }
                Some(reply) => {
                    if let (Reply::Closed(_), Some(holder)) = (&reply, self.holders.get_mut(i)) {
                        holder.closed = true;
                    }
                    Ok((i, reply))
                }
                // It answered `close`, then exited: as it should.
                None if closed => continue,
                None => {
                    let status = self.exit_status(i).await;
                    bail!(
                        "{}: holder {} stopped answering ({status})",
                        self.label,
                        i + 1
                    )
                }
            };
        }
    }

    /// How holder `i` ended, for error messages.
    async fn exit_status(&mut self, i: usize) -> String {
        let Some(child) = self.holders.get_mut(i).and_then(|h| h.child.as_mut()) else {
            return "in this process".to_owned();
        };
        match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            Ok(Ok(status)) => format!("process {status}"),
            Ok(Err(e)) => format!("cannot wait for the process: {e}"),
            Err(_) => "the process is still running".to_owned(),
        }
    }

    fn send_all(&self, command: &Command) -> Result<()> {
        for (i, holder) in self.holders.iter().enumerate() {
            let sent = holder
                .commands
                .as_ref()
                .is_some_and(|c| c.send(command.clone()).is_ok());
            if !sent {
                bail!("{}: holder {} no longer takes commands", self.label, i + 1);
            }
        }
        Ok(())
    }

    /// One answer per holder, picked by `pick`; progress is skipped,
    /// anything else is out of turn.
    async fn collect<T>(
        &mut self,
        what: &str,
        wait: Option<Duration>,
        pick: impl Fn(Reply) -> Result<T, Reply>,
    ) -> Result<Vec<T>> {
        let mut answers: Vec<Option<T>> = (0..self.holders.len()).map(|_| None).collect();
        let deadline = wait.map(|w| Instant::now() + w);
        while answers.iter().any(Option::is_none) {
            let (i, reply) = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, self.recv())
                    .await
                    .map_err(|_| {
                        anyhow!(
                            "{}: not every holder answered {what} within {} s",
                            self.label,
                            wait.map_or(0, |w| w.as_secs())
                        )
                    })??,
                None => self.recv().await?,
            };
            match pick(reply) {
                Ok(answer) => match answers.get_mut(i) {
                    Some(slot @ None) => *slot = Some(answer),
                    _ => bail!("{}: holder {} answered {what} twice", self.label, i + 1),
                },
                Err(reply) if is_progress(&reply) => {}
                Err(reply) => bail!(
                    "{}: holder {} answered out of turn (waiting for {what}): {reply:?}",
                    self.label,
                    i + 1
                ),
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// Waits until every holder has opened its connections.
    pub async fn ready(&mut self) -> Result<Vec<Opened>> {
        self.collect("ready", None, |reply| match reply {
            Reply::Ready(opened) => Ok(opened),
            other => Err(other),
        })
        .await
    }

    /// The next progress report, waiting at most `wait`; `None` when
    /// nothing came.
    pub async fn next_progress(&mut self, wait: Duration) -> Result<Option<Progress>> {
        let Ok(next) = tokio::time::timeout(wait, self.recv()).await else {
            return Ok(None);
        };
        match next? {
            (
                holder,
                Reply::Progress {
                    round,
                    delivered,
                    last_us,
                },
            ) => Ok(Some(Progress {
                holder,
                round,
                delivered,
                last_us,
            })),
            (i, other) => bail!(
                "{}: holder {} answered out of turn: {other:?}",
                self.label,
                i + 1
            ),
        }
    }

    /// Every holder's counts; see [`Command::Report`].
    pub async fn report(&mut self, posted_us: &[u64]) -> Result<Vec<Counts>> {
        self.send_all(&Command::Report {
            posted_us: posted_us.to_vec(),
        })?;
        self.collect("report", Some(ANSWER_TIMEOUT), |reply| match reply {
            Reply::Report(counts) => Ok(counts),
            other => Err(other),
        })
        .await
    }

    /// Closes every connection and waits for the holders to exit; a child
    /// that exits with a failure is an error.
    pub async fn close(mut self) -> Result<Vec<Ended>> {
        self.send_all(&Command::Close)?;
        let ended = self
            .collect("close", Some(ANSWER_TIMEOUT), |reply| match reply {
                Reply::Closed(ended) => Ok(ended),
                other => Err(other),
            })
            .await?;
        for (i, holder) in self.holders.iter_mut().enumerate() {
            // The end of stdin tells a child that nothing more comes.
            holder.commands = None;
            if let Some(child) = holder.child.as_mut() {
                let status = tokio::time::timeout(ANSWER_TIMEOUT, child.wait())
                    .await
                    .map_err(|_| anyhow!("{}: holder {} did not exit", self.label, i + 1))??;
                if !status.success() {
                    bail!("{}: holder {} exited with {status}", self.label, i + 1);
                }
            }
        }
        for holder in self.holders {
            let _ = holder.task.await;
        }
        Ok(ended)
    }

    /// The CPU time the holder processes other than this one spent between
    /// two reports (this process's own time is measured by the caller).
    pub fn child_cpu_secs(before: &[Counts], after: &[Counts]) -> Option<f64> {
        let me = std::process::id();
        let mut total = 0.0;
        for (b, a) in before.iter().zip(after) {
            if a.pid != me {
                total += a.cpu_secs? - b.cpu_secs?;
            }
        }
        Some(total)
    }
}

impl Holder {
    /// A holder running [`serve`] as a task of this process.
    fn in_process(
        i: usize,
        job: Job,
        out: mpsc::UnboundedSender<(usize, Option<Reply>)>,
    ) -> Holder {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let (reply_tx, mut reply_rx) = mpsc::unbounded_channel();
            let serving = tokio::spawn(async move {
                if let Err(e) = serve(job, command_rx, reply_tx.clone()).await {
                    let _ = reply_tx.send(Reply::Failed {
                        error: format!("{e:#}"),
                    });
                }
            });
            // Until `serve` has returned and its replies are all passed on.
            while let Some(reply) = reply_rx.recv().await {
                let _ = out.send((i, Some(reply)));
            }
            if let Err(e) = serving.await {
                let _ = out.send((
                    i,
                    Some(Reply::Failed {
                        error: format!("the holder task failed: {e}"),
                    }),
                ));
            }
            let _ = out.send((i, None));
        });
        Holder {
            commands: Some(commands),
            closed: false,
            child: None,
            task,
        }
    }

    /// A holder in a child process of this executable.
    fn child(
        i: usize,
        job: &Job,
        out: mpsc::UnboundedSender<(usize, Option<Reply>)>,
    ) -> Result<Holder> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let mut child = Process::new(exe)
            .arg("hold")
            // It needs none of the parent's secrets.
            .env_remove("UNIMSG_BENCH_ADMIN_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child.stdin.take().context("no stdin pipe")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut job_line = serde_json::to_string(job)?;
        job_line.push('\n');
        let (commands, mut command_rx) = mpsc::unbounded_channel::<Command>();
        let writer = async move {
            if stdin.write_all(job_line.as_bytes()).await.is_err() {
                return;
            }
            while let Some(command) = command_rx.recv().await {
                let Ok(mut line) = serde_json::to_string(&command) else {
                    return;
                };
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    return;
                }
            }
            // Dropping stdin here tells the child nothing more comes.
        };
        let reader = async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply =
                    serde_json::from_str::<Reply>(&line).unwrap_or_else(|e| Reply::Failed {
                        error: format!("malformed reply {line:?}: {e}"),
                    });
                let _ = out.send((i, Some(reply)));
            }
            // The end of stdout (or a failure to read it): the child is gone.
            let _ = out.send((i, None));
        };
        let task = tokio::spawn(async move {
            tokio::join!(writer, reader);
        });
        Ok(Holder {
            commands: Some(commands),
            closed: false,
            child: Some(child),
            task,
        })
    }
}

/// `(first connection, count)` of each of `procs` near-equal contiguous
/// shares of `n` connections; empty shares are left out.
fn shares(n: u64, procs: u64) -> Vec<(u64, u64)> {
    let procs = procs.max(1);
    let mut first = 0;
    (0..procs)
        .map(|i| {
            let count = n / procs + u64::from(i < n % procs);
            let share = (first, count);
            first += count;
            share
        })
        .filter(|&(_, count)| count > 0)
        .collect()
}

/// The owners of connections `first..first + count`, where connection `i`
/// belongs to `users[i / per_user]`.
fn share_owners(users: &[User], per_user: u64, first: u64, count: u64) -> Result<Vec<Owner>> {
    let per_user = per_user.max(1);
    let mut owners: Vec<Owner> = Vec::new();
    let mut conn = first;
    let end = first + count;
    while conn < end {
        let u = conn / per_user;
        let user = usize::try_from(u)
            .ok()
            .and_then(|u| users.get(u))
            .with_context(|| format!("no user for connection {conn}"))?;
        let upto = ((u + 1) * per_user).min(end);
        owners.push(Owner {
            token: user.authed.token().to_owned(),
            conns: upto - conn,
        });
        conn = upto;
    }
    Ok(owners)
}

#[cfg(test)]
mod tests {
    use super::*;
    use unimsg_client::proto::UserId;

    fn user(i: usize) -> Result<User> {
        let client = Client::new("http://h")?;
        Ok(User {
            username: format!("u{i}"),
            user_id: UserId::parse(format!("u{i}"))?,
            authed: client.with_token(format!("t{i}")),
        })
    }

    #[test]
    fn spread_options_parse() -> Result<()> {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            spread: SpreadArgs,
        }
        let cli =
            Cli::try_parse_from(["t", "--procs", "2", "--source-ips", "127.0.0.1,127.0.0.2"])?;
        assert_eq!(cli.spread.procs, 2);
        assert_eq!(
            cli.spread.source_ips_json(),
            vec!["127.0.0.1".to_owned(), "127.0.0.2".to_owned()]
        );
        let cli = Cli::try_parse_from(["t"])?;
        assert_eq!((cli.spread.procs, cli.spread.source_ips.len()), (1, 0));
        assert!(Cli::try_parse_from(["t", "--procs", "0"]).is_err());
        assert!(Cli::try_parse_from(["t", "--source-ips", "127.0.0.1,nope"]).is_err());
        Ok(())
    }

    #[test]
    fn shares_cover_every_connection_once() {
        assert_eq!(shares(10, 1), vec![(0, 10)]);
        assert_eq!(shares(10, 3), vec![(0, 4), (4, 3), (7, 3)]);
        assert_eq!(shares(2, 4), vec![(0, 1), (1, 1)]);
        assert_eq!(shares(0, 2), vec![]);
    }

    #[test]
    fn owners_follow_users_across_share_boundaries() -> Result<()> {
        let users = (0..4).map(user).collect::<Result<Vec<_>>>()?;
        let runs = |first, count| -> Result<Vec<(String, u64)>> {
            Ok(share_owners(&users, 3, first, count)?
                .into_iter()
                .map(|o| (o.token, o.conns))
                .collect())
        };
        assert_eq!(runs(0, 5)?, vec![("t0".into(), 3), ("t1".into(), 2)]);
        assert_eq!(
            runs(5, 5)?,
            vec![("t1".into(), 1), ("t2".into(), 3), ("t3".into(), 1)]
        );
        assert!(share_owners(&users, 3, 10, 5).is_err());
        Ok(())
    }

    #[test]
    fn source_addresses_go_round_robin_over_the_whole_run() -> Result<()> {
        let ips: Vec<IpAddr> = vec![[127, 0, 0, 1].into(), [127, 0, 0, 2].into()];
        let job = Job {
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

    #[tokio::test]
    async fn an_in_process_holder_answers_in_turn() -> Result<()> {
        // Nothing listens on port 1: every connection fails, and is counted.
        let users = (0..2).map(user).collect::<Result<Vec<_>>>()?;
        let spread = SpreadArgs::default();
        let plan = Plan {
            label: "test",
            url: "http://127.0.0.1:1".into(),
            transport: Transport::Ws,
            connect_concurrency: 4,
            kind: EventType::BroadcastNew,
            run: "r".into(),
            spread: &spread,
        };
        let mut holders = Holders::start(&plan, &users, 3, 2).await?;
        let all = OpenedAll::of(&holders.ready().await?)?;
        assert_eq!((all.opened, all.failed()), (0, 3));
        let counts = holders.report(&[wall_us()]).await?;
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0].pid, std::process::id());
        assert_eq!(counts[0].rounds[0].delivered, 0);
        let ended = holders.close().await?;
        assert_eq!(ended_all(&ended).ended_early.len(), 0);
        Ok(())
    }

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
