//! The parent's side: splitting the connections into shares, starting one
//! holder per share (a task of this process or a child process), sending
//! commands to all and collecting their answers.

use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command as Process};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Plan;
use super::holder::serve;
use super::protocol::{Command, Counts, Ended, Job, Opened, Owner, Reply};
use crate::users::User;

/// How long a holder may take to answer `report`, or to close.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

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
                ca_pem: plan.ca_pem.clone(),
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
    use unimsg_client::Client;
    use unimsg_client::proto::UserId;

    use super::super::{OpenedAll, SpreadArgs, ended_all, wall_us};
    use crate::fanout::Transport;
    use unimsg_client::proto::EventType;

    fn user(i: usize) -> Result<User> {
        let client = Client::new("http://h")?;
        Ok(User {
            username: format!("u{i}"),
            user_id: UserId::parse(format!("u{i}"))?,
            authed: client.with_token(format!("t{i}")),
        })
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

    #[tokio::test]
    async fn an_in_process_holder_answers_in_turn() -> Result<()> {
        // Nothing listens on port 1: every connection fails, and is counted.
        let users = (0..2).map(user).collect::<Result<Vec<_>>>()?;
        let spread = SpreadArgs::default();
        let plan = Plan {
            ca_pem: None,
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
}
