//! The peers' connections as the scenario engine reads them: the
//! receivers of `broadcast` and the held connections of `idle` run in the
//! engine's [`Fleet`], like unimsg's.
//!
//! [`Sub`] hides the protocol: it yields the application payloads a
//! connection receives (nchan's frame, the `data` of a Pusher event, an
//! MQTT PUBLISH's payload, a `<message>`'s body) and does the protocol's
//! chores on the way (answering `pusher:ping`, PUBACK for QoS 1, the
//! client keep-alive of Pusher and MQTT). A reader reports every payload
//! that is content of this run ([`crate::parse_content`] with key `round`)
//! to one channel with its arrival time, and counts the rest.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Packet;
pub(crate) use unimsg_bench::engine::fleet::{Fleet, Incoming, Next, Seen};
use unimsg_bench::engine::fleet::{Matches, Receiver};

use crate::ws::{Message, Ws};
use crate::{mqtt, nats, redis_streams, soketi, xmpp};

/// One open, subscribed (or logged-in) connection to a peer.
#[derive(Debug)]
pub(crate) enum Sub {
    Nchan(Box<Ws>),
    Pusher(Box<Ws>),
    Mqtt(Box<mqtt::Conn>),
    Xmpp(Box<xmpp::Conn>),
    RedisStream(Box<redis_streams::Reader>),
    Nats(Box<nats::Reader>),
}

impl Sub {
    /// The next thing read; `None` once the server closed the connection.
    /// Safe to cancel while waiting for the socket.
    pub(crate) async fn next(&mut self) -> Result<Option<Incoming<String>>> {
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
            Sub::RedisStream(reader) => Ok(Some(Incoming::Payload(reader.next().await?))),
            Sub::Nats(reader) => Ok(reader.next().await?.map(Incoming::Payload)),
        }
    }

    /// How often the client must show it is alive, for protocols that ask
    /// the client to (Pusher, MQTT).
    pub(crate) fn keepalive(&self) -> Option<Duration> {
        match self {
            Sub::Pusher(_) => Some(soketi::PING_EVERY),
            Sub::Mqtt(_) => Some(Duration::from_secs(u64::from(mqtt::KEEP_ALIVE_SECS))),
            Sub::Nchan(_) | Sub::Xmpp(_) | Sub::RedisStream(_) | Sub::Nats(_) => None,
        }
    }

    /// Sends the protocol's keep-alive.
    pub(crate) async fn ping(&mut self) -> Result<()> {
        match self {
            Sub::Pusher(ws) => Ok(ws.send(Message::text(soketi::ping_frame())).await?),
            Sub::Mqtt(conn) => conn.ping().await,
            Sub::Nchan(_) | Sub::Xmpp(_) | Sub::RedisStream(_) | Sub::Nats(_) => Ok(()),
        }
    }

    /// Closes politely.
    pub(crate) async fn close(self) {
        match self {
            Sub::Nchan(mut ws) | Sub::Pusher(mut ws) => {
                let _ = Ws::close(&mut ws, None).await;
            }
            Sub::Mqtt(conn) => conn.close().await,
            Sub::Xmpp(conn) => conn.close().await,
            Sub::RedisStream(_) | Sub::Nats(_) => {}
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

impl Receiver for Sub {
    type Payload = String;

    async fn next_payload(&mut self) -> Result<Option<Incoming<String>>> {
        self.next().await
    }

    fn keepalive(&self) -> Option<Duration> {
        Sub::keepalive(self)
    }

    async fn ping(&mut self) -> Result<()> {
        Sub::ping(self).await
    }

    async fn close(self) {
        Sub::close(self).await;
    }
}

/// Opens `n` connections with `open(i)`, `concurrency` at a time, in the
/// engine's [`Fleet`]; its readers report the payloads that are content of
/// `run` by `round`. Failed attempts are counted, not fatal.
pub(crate) async fn open<F, Fut>(
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
    let run: Arc<str> = run.into();
    let matches: Matches<String> = Arc::new(move |payload: &String| {
        crate::parse_content(payload, &run, "round").map(|(round, t)| (round, Some(t)))
    });
    Fleet::open(n, concurrency, label, "connections", open, matches).await
}
