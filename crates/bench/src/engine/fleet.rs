//! Many open connections of one protocol, each read by its own task,
//! reporting every payload of this run to one channel with its arrival
//! time: the receivers of `idle`, `broadcast`, `sse` and `group`, and of
//! the peer scenarios.
//!
//! A protocol is a [`Receiver`]: it yields the payloads one connection
//! receives and does the protocol's chores on the way (a client
//! keep-alive, answering pings). Which payloads belong to the run, and
//! which round each is, a matcher given to [`Fleet::open`] says; the rest
//! are counted as other events.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use futures_util::{StreamExt, stream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::stats::Latency;

/// How long closing the connections may take at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection read: a payload, or a frame that carries none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<P> {
    /// An application payload (an inbox event, a channel message, …).
    Payload(P),
    /// A protocol frame that carries none (pongs, presence, …).
    Other,
}

/// One open, subscribed connection of some protocol, as the engine reads
/// it.
pub trait Receiver: Send + Sized + 'static {
    /// What the connection delivers.
    type Payload: Send;

    /// The next thing read; `None` once the server closed the connection.
    /// Safe to cancel while waiting for the socket.
    fn next_payload(
        &mut self,
    ) -> impl Future<Output = Result<Option<Incoming<Self::Payload>>>> + Send;

    /// How often the client must show it is alive, for protocols that ask
    /// the client to.
    fn keepalive(&self) -> Option<Duration> {
        None
    }

    /// Sends the protocol's keep-alive.
    fn ping(&mut self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Closes politely.
    fn close(self) -> impl Future<Output = ()> + Send;

    /// Why the connection ended, once [`Receiver::next_payload`] said so.
    fn ended_reason(&self) -> String {
        "closed by the server".to_owned()
    }

    /// How a failed read is reported.
    fn read_failed(&self, error: &anyhow::Error) -> String {
        format!("read failed: {error:#}")
    }
}

/// Which payloads belong to the run: `(round, send stamp)` for those.
pub type Matches<P> = Arc<dyn Fn(&P) -> Option<(u64, Option<u64>)> + Send + Sync>;

/// One payload of this run seen by one connection.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// Index of the connection in the fleet.
    pub conn: usize,
    /// The content's `round`.
    pub round: u64,
    /// When the reader got it.
    pub at: Instant,
    /// The content's send stamp `t`, if the matcher found one.
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

/// What one reader counted when it stopped.
#[derive(Debug, Default)]
pub struct ReaderEnd {
    /// Payloads (or frames) of other kinds or runs.
    pub other_events: u64,
    /// Why the connection ended before the bench closed it.
    pub ended: Option<String>,
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

impl Fleet {
    /// Opens `n` connections with `open(i)`, `concurrency` attempts at a
    /// time, and starts a reader on each that reports what `matcher`
    /// matches. Attempts that fail are counted, not fatal. Progress lines
    /// on stderr name the scenario (`label`) and the connections (`what`).
    pub async fn open<R, F, Fut>(
        n: u64,
        concurrency: usize,
        label: &str,
        what: &str,
        open: F,
        matcher: Matches<R::Payload>,
    ) -> Result<Fleet>
    where
        R: Receiver,
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let ended = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let open = &open;
        let mut attempts = stream::iter(0..n)
            .map(|i| async move {
                let t0 = Instant::now();
                let conn = open(i).await;
                (i, t0.elapsed(), conn)
            })
            .buffer_unordered(concurrency.max(1));
        let mut fleet = Fleet {
            opened: 0,
            failures: BTreeMap::new(),
            connect_latency: Latency::new()?,
            connect_secs: 0.0,
            rx,
            tasks: Vec::with_capacity(usize::try_from(n)?),
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
                        usize::try_from(i)?,
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
                    "{label}: [{:5.1}s] {} of {n} {what} open, {} failed",
                    started.elapsed().as_secs_f64(),
                    fleet.opened,
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

    /// The next payload of this run, waiting at most `wait` for it.
    pub async fn next(&mut self, wait: Duration) -> Next {
        match tokio::time::timeout(wait, self.rx.recv()).await {
            Ok(Some(seen)) => Next::Seen(seen),
            Ok(None) => Next::AllEnded,
            Err(_) => Next::Quiet,
        }
    }

    /// A payload of this run that has already arrived, without waiting.
    pub fn try_next(&mut self) -> Option<Seen> {
        self.rx.try_recv().ok()
    }

    /// The next payload of this run; `None` once every connection has
    /// ended.
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

/// Stops readers, waits for them to close their connections (at most
/// [`CLOSE_TIMEOUT`] in all) and adds up their counts.
async fn close_readers(stop: &CancellationToken, tasks: Vec<JoinHandle<ReaderEnd>>) -> Closed {
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

/// What a reader's wait ended with.
enum Step<P> {
    Stop,
    Ping,
    Read(Result<Option<Incoming<P>>>),
}

/// Reads one connection until `stop` or its end, reporting this run's
/// payloads and keeping the connection alive.
async fn read<R: Receiver>(
    mut conn: R,
    index: usize,
    matcher: Matches<R::Payload>,
    tx: mpsc::UnboundedSender<Seen>,
    stop: CancellationToken,
    ended: Arc<AtomicU64>,
) -> ReaderEnd {
    let mut end = ReaderEnd::default();
    let mut keepalive = conn
        .keepalive()
        .map(|every| tokio::time::interval_at(Instant::now() + every, every));
    loop {
        let tick = async {
            match keepalive.as_mut() {
                Some(k) => {
                    k.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let step = tokio::select! {
            biased;
            () = stop.cancelled() => Step::Stop,
            () = tick => Step::Ping,
            read = conn.next_payload() => Step::Read(read),
        };
        let at = Instant::now();
        let failure = match step {
            Step::Stop => break,
            Step::Ping => conn
                .ping()
                .await
                .err()
                .map(|e| format!("keep-alive failed: {e:#}")),
            Step::Read(Ok(Some(Incoming::Payload(payload)))) => {
                match matcher(&payload) {
                    // The receiver lives as long as the fleet; a send error
                    // only happens while it is being dropped.
                    Some((round, stamp)) => {
                        let _ = tx.send(Seen {
                            conn: index,
                            round,
                            at,
                            stamp,
                        });
                    }
                    None => end.other_events += 1,
                }
                None
            }
            Step::Read(Ok(Some(Incoming::Other))) => {
                end.other_events += 1;
                None
            }
            Step::Read(Ok(None)) => Some(conn.ended_reason()),
            Step::Read(Err(e)) => Some(conn.read_failed(&e)),
        };
        if let Some(reason) = failure {
            end.ended = Some(reason);
            ended.fetch_add(1, Ordering::Relaxed);
            return end;
        }
    }
    conn.close().await;
    end
}
