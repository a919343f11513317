//! Many open peer connections, each read by its own task: the receivers of
//! `broadcast` and the held connections of `idle`.
//!
//! [`Sub`] hides the protocol: it yields the application payloads a
//! connection receives (nchan's frame, the `data` of a Pusher event, an
//! MQTT PUBLISH's payload, a `<message>`'s body) and does the protocol's
//! chores on the way (answering `pusher:ping`, PUBACK for QoS 1, the
//! client keep-alive of Pusher and MQTT). A reader reports every payload
//! that is content of this run ([`crate::parse_content`] with key `round`)
//! to one channel with its arrival time, and counts the rest.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use futures_util::{SinkExt, StreamExt, stream};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Packet;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ws::{Message, Ws};
use crate::{mqtt, soketi, xmpp};
use unimsg_bench::fanout::{Closed, ReaderEnd, close_readers};
use unimsg_bench::stats::Latency;

/// One open, subscribed (or logged-in) connection to a peer.
#[derive(Debug)]
pub enum Sub {
    Nchan(Box<Ws>),
    Pusher(Box<Ws>),
    Mqtt(Box<mqtt::Conn>),
    Xmpp(Box<xmpp::Conn>),
}

/// What [`Sub::next`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// An application payload.
    Payload(String),
    /// A protocol frame that carries none (pongs, presence, …).
    Other,
}

impl Sub {
    /// The next thing read; `None` once the server closed the connection.
    /// Safe to cancel while waiting for the socket.
    pub async fn next(&mut self) -> Result<Option<Incoming>> {
        match self {
            Sub::Nchan(ws) => Ok(match next_ws(ws).await? {
                Some(Message::Text(text)) => Some(Incoming::Payload(text.as_str().to_owned())),
                Some(_) => Some(Incoming::Other),
                None => None,
            }),
            Sub::Pusher(ws) => {
                let Some(message) = next_ws(ws).await? else {
                    return Ok(None);
                };
                let Message::Text(text) = message else {
                    return Ok(Some(Incoming::Other));
                };
                let frame = soketi::parse_frame(&text)?;
                Ok(Some(match (frame.event.as_str(), frame.data) {
                    (soketi::EVENT, Some(data)) => Incoming::Payload(data),
                    ("pusher:ping", _) => {
                        ws.send(Message::text(soketi::pong_frame())).await?;
                        Incoming::Other
                    }
                    _ => Incoming::Other,
                }))
            }
            Sub::Mqtt(conn) => Ok(match conn.next_packet().await? {
                Some(Packet::Publish(publish)) => {
                    if publish.qos == QoS::AtLeastOnce {
                        conn.puback(publish.pkid).await?;
                    }
                    Some(Incoming::Payload(
                        String::from_utf8_lossy(&publish.payload).into_owned(),
                    ))
                }
                Some(_) => Some(Incoming::Other),
                None => None,
            }),
            Sub::Xmpp(conn) => Ok(match conn.next_stanza().await? {
                Some(xmpp::Stanza::Message {
                    body: Some(body), ..
                }) => Some(Incoming::Payload(body)),
                Some(xmpp::Stanza::StreamError(condition)) => {
                    anyhow::bail!("XMPP stream error: {condition}")
                }
                Some(_) => Some(Incoming::Other),
                None => None,
            }),
        }
    }

    /// How often the client must show it is alive, for protocols that ask
    /// the client to (Pusher, MQTT).
    pub fn keepalive(&self) -> Option<Duration> {
        match self {
            Sub::Pusher(_) => Some(soketi::PING_EVERY),
            Sub::Mqtt(_) => Some(Duration::from_secs(u64::from(mqtt::KEEP_ALIVE_SECS))),
            Sub::Nchan(_) | Sub::Xmpp(_) => None,
        }
    }

    /// Sends the protocol's keep-alive.
    pub async fn ping(&mut self) -> Result<()> {
        match self {
            Sub::Pusher(ws) => Ok(ws.send(Message::text(soketi::ping_frame())).await?),
            Sub::Mqtt(conn) => conn.ping().await,
            Sub::Nchan(_) | Sub::Xmpp(_) => Ok(()),
        }
    }

    /// Closes politely.
    pub async fn close(self) {
        match self {
            Sub::Nchan(mut ws) | Sub::Pusher(mut ws) => {
                let _ = Ws::close(&mut ws, None).await;
            }
            Sub::Mqtt(conn) => conn.close().await,
            Sub::Xmpp(conn) => conn.close().await,
        }
    }
}

/// The next data frame (text or binary); `None` at the close. Control
/// frames are handled by tungstenite (pings answered) and skipped.
async fn next_ws(ws: &mut Ws) -> Result<Option<Message>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(message)) => return Ok(Some(message)),
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// One payload of this run seen by one connection.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// Index of the connection in the fleet.
    pub conn: usize,
    /// The content's `round`.
    pub round: u64,
    /// When the reader got it.
    pub at: Instant,
}

/// What [`Fleet::next`] found.
#[derive(Debug, Clone, Copy)]
pub enum Next {
    Seen(Seen),
    /// Nothing within the wait.
    Quiet,
    /// Every reader has ended.
    AllEnded,
}

/// The open connections and their readers.
#[derive(Debug)]
pub struct Fleet {
    pub opened: usize,
    /// Failed attempts, by error.
    pub failures: BTreeMap<String, u64>,
    pub connect_latency: Latency,
    pub connect_secs: f64,
    rx: mpsc::UnboundedReceiver<Seen>,
    tasks: Vec<JoinHandle<ReaderEnd>>,
    stop: CancellationToken,
    ended: Arc<AtomicU64>,
}

impl Fleet {
    /// Opens `n` connections with `open(i)`, `concurrency` at a time, and
    /// starts a reader on each. Failed attempts are counted, not fatal.
    pub async fn open<F, Fut>(
        n: u64,
        concurrency: usize,
        run: &str,
        label: &str,
        open: F,
    ) -> Result<Fleet>
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Result<Sub>>,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let ended = Arc::new(AtomicU64::new(0));
        let run: Arc<str> = run.into();
        let started = Instant::now();
        let open = &open;
        let mut attempts = stream::iter(0..n)
            .map(|i| async move {
                let t0 = Instant::now();
                let sub = open(i).await;
                (i, t0.elapsed(), sub)
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
        while let Some((i, took, sub)) = attempts.next().await {
            match sub {
                Ok(sub) => {
                    fleet.connect_latency.record(took);
                    fleet.opened += 1;
                    fleet.tasks.push(tokio::spawn(read(
                        sub,
                        usize::try_from(i)?,
                        run.clone(),
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
                    "{label}: [{:5.1}s] {} of {n} connections open, {} failed",
                    started.elapsed().as_secs_f64(),
                    fleet.opened,
                    fleet.failed()
                );
            }
        }
        fleet.connect_secs = started.elapsed().as_secs_f64();
        Ok(fleet)
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Connections that ended (closed by the server or failed) so far.
    pub fn ended(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }

    /// The next payload of this run, waiting at most `wait`.
    pub async fn next(&mut self, wait: Duration) -> Next {
        match tokio::time::timeout(wait, self.rx.recv()).await {
            Ok(Some(seen)) => Next::Seen(seen),
            Ok(None) => Next::AllEnded,
            Err(_) => Next::Quiet,
        }
    }

    /// A payload that has already arrived, without waiting.
    pub fn try_next(&mut self) -> Option<Seen> {
        self.rx.try_recv().ok()
    }

    /// Stops the readers, closes the connections and collects the counts.
    pub async fn close(self) -> Closed {
        close_readers(&self.stop, self.tasks).await
    }
}

/// What a reader's wait ended with.
enum Step {
    Stop,
    Ping,
    Read(Result<Option<Incoming>>),
}

/// Reads one connection until `stop` or its end, reporting this run's
/// payloads and keeping the connection alive.
async fn read(
    mut sub: Sub,
    index: usize,
    run: Arc<str>,
    tx: mpsc::UnboundedSender<Seen>,
    stop: CancellationToken,
    ended: Arc<AtomicU64>,
) -> ReaderEnd {
    let mut end = ReaderEnd::default();
    let mut keepalive = sub
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
            read = sub.next() => Step::Read(read),
        };
        let at = Instant::now();
        let failure = match step {
            Step::Stop => break,
            Step::Ping => sub
                .ping()
                .await
                .err()
                .map(|e| format!("keep-alive failed: {e:#}")),
            Step::Read(Ok(Some(Incoming::Payload(payload)))) => {
                match crate::parse_content(&payload, &run, "round") {
                    // The receiver lives as long as the fleet.
                    Some((round, _)) => {
                        let _ = tx.send(Seen {
                            conn: index,
                            round,
                            at,
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
            Step::Read(Ok(None)) => Some("closed by the server".to_owned()),
            Step::Read(Err(e)) => Some(format!("read failed: {e:#}")),
        };
        if let Some(reason) = failure {
            end.ended = Some(reason);
            ended.fetch_add(1, Ordering::Relaxed);
            return end;
        }
    }
    sub.close().await;
    end
}
