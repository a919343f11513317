//! The WebSocket connection (`GET /v1/ws`): inbox events and request/reply frames
//! on one socket.
//!
//! Events and replies arrive interleaved. Whatever arrives while the caller
//! waits for something else is queued, so no event or reply is ever lost and
//! events keep their order.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde::Deserialize;
use std::sync::Arc;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::{self, Message};

use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use unimsg_proto::api::{ReadResponse, SendRequest, SendResponse};
use unimsg_proto::ws::{ClientFrame, ReplyFrame};
use unimsg_proto::{ConversationId, Event, EventType, MessageId, Seq, SessionId, UserId};

use crate::error::{ClientError, Result};

/// The contents of the server's `ready` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsReady {
    pub user_id: UserId,
    pub session_id: SessionId,
    /// The newest seq of the inbox when the connection was authenticated.
    pub last_seq: Seq,
}

/// An authenticated WebSocket connection.
pub struct WsConnection {
    frames: Frames,
    ready: WsReady,
    next_id: u64,
}

impl fmt::Debug for WsConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsConnection")
            .field("ready", &self.ready)
            .field("queued_events", &self.frames.events.len())
            .field("queued_replies", &self.frames.replies.len())
            .field("close_code", &self.frames.close_code)
            .finish()
    }
}

/// How a WebSocket connection authenticates.
#[derive(Clone, Copy)]
pub(crate) enum WsAuth<'a> {
    /// `Authorization: Bearer` on the upgrade request.
    Header(&'a str),
    /// A first `auth` frame, with the seq to replay after.
    FirstFrame(&'a str, Option<Seq>),
}

impl WsConnection {
    /// Connects to `url`, from the local address `local` when given,
    /// authenticated as `auth` says; then waits for the `ready` frame.
    pub(crate) async fn connect(
        url: Url,
        auth: WsAuth<'_>,
        local: Option<IpAddr>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.as_str().into_client_request()?;
        if let WsAuth::Header(token) = auth {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| ClientError::Protocol("the token is not a header value".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        // `wss://` with the client's own trust, or the system's roots.
        let connector = tls.map(Connector::Rustls);
        let (socket, _response) = match local {
            None => {
                tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector)
                    .await?
            }
            Some(local) => {
                let stream = connect_from(&url, local).await?;
                tokio_tungstenite::client_async_tls_with_config(request, stream, None, connector)
                    .await?
            }
        };
        let mut frames = Frames::new(socket);
        if let WsAuth::FirstFrame(token, after) = auth {
            frames
                .write(&ClientFrame::Auth {
                    token: token.to_owned(),
                    after,
                })
                .await?;
        }
        let ready = match frames.next_reply().await? {
            Some(ReplyFrame::Ready {
                user_id,
                session_id,
                last_seq,
            }) => WsReady {
                user_id,
                session_id,
                last_seq,
            },
            Some(ReplyFrame::Error { error, .. }) => {
                return Err(ClientError::Rejected {
                    code: error.code,
                    message: error.message,
                });
            }
            Some(other) => {
                return Err(ClientError::Protocol(format!(
                    "expected a ready frame, got {other:?}"
                )));
            }
            None => {
                return Err(ClientError::Closed {
                    code: frames.close_code,
                });
            }
        };
        Ok(WsConnection {
            frames,
            ready,
            next_id: 0,
        })
    }

    /// The server's `ready` frame.
    pub fn ready(&self) -> &WsReady {
        &self.ready
    }

    /// The close code sent by the server, once the socket is closed
    /// (4001 when the session was revoked).
    pub fn close_code(&self) -> Option<u16> {
        self.frames.close_code
    }

    /// True once the socket has closed.
    pub fn is_closed(&self) -> bool {
        self.frames.closed
    }

    /// The next inbox event, queued or live. Replies that arrive meanwhile are
    /// queued for [`WsConnection::next_reply`]. `None` once the socket has
    /// closed and every queued event has been returned.
    pub async fn next_event(&mut self) -> Result<Option<Event>> {
        self.frames.next_event().await
    }

    /// The next reply frame, queued or live. Events that arrive meanwhile are
    /// queued for [`WsConnection::next_event`]. `None` once the socket has closed.
    pub async fn next_reply(&mut self) -> Result<Option<ReplyFrame>> {
        self.frames.next_reply().await
    }

    /// Sends a `send` frame and waits for its `send.ok`. The frame carries
    /// `id`, or a generated id when `None`.
    pub async fn send(&mut self, req: SendRequest, id: Option<&str>) -> Result<SendResponse> {
        let id = id.map_or_else(|| self.fresh_id(), str::to_owned);
        let SendRequest {
            to,
            kind,
            content,
            client_msg_id,
        } = req;
        let frame = ClientFrame::Send {
            id: Some(id.clone()),
            to,
            kind,
            content,
            client_msg_id,
        };
        match self.request(&frame, &id).await? {
            ReplyFrame::SendOk { result, .. } => Ok(result),
            other => Err(unexpected("send.ok", &other)),
        }
    }

    /// Sends every request as pipelined `send` frames without waiting
    /// between them, then collects the answers (which may come in any
    /// order) by frame id: the results are in the order of `reqs`, and the
    /// server stores the messages in that order too. A refused send is an
    /// `Err` in its place; a broken socket fails the whole call. All
    /// frames are written before any answer is read, so keep a batch to
    /// what the socket buffers hold (a few hundred small messages).
    pub async fn send_many(
        &mut self,
        reqs: Vec<SendRequest>,
    ) -> Result<Vec<std::result::Result<SendResponse, ClientError>>> {
        let mut ids = Vec::with_capacity(reqs.len());
        for req in reqs {
            let id = self.fresh_id();
            self.frames
                .write(&ClientFrame::Send {
                    id: Some(id.clone()),
                    to: req.to,
                    kind: req.kind,
                    content: req.content,
                    client_msg_id: req.client_msg_id,
                })
                .await?;
            ids.push(id);
        }
        let mut results = Vec::with_capacity(ids.len());
        for id in &ids {
            results.push(match self.frames.reply_to(id).await? {
                ReplyFrame::SendOk { result, .. } => Ok(result),
                ReplyFrame::Error { error, .. } => Err(ClientError::Rejected {
                    code: error.code,
                    message: error.message,
                }),
                other => Err(unexpected("send.ok", &other)),
            });
        }
        Ok(results)
    }

    /// Sends an `ack` frame and returns the acknowledged seq from `ack.ok`.
    pub async fn ack(&mut self, seq: Seq) -> Result<Seq> {
        let id = self.fresh_id();
        match self
            .request(
                &ClientFrame::Ack {
                    id: Some(id.clone()),
                    seq,
                },
                &id,
            )
            .await?
        {
            ReplyFrame::AckOk { acked, .. } => Ok(acked),
            other => Err(unexpected("ack.ok", &other)),
        }
    }

    /// Sends a `read` frame and returns the answer of `read.ok`.
    pub async fn read(
        &mut self,
        conversation: &ConversationId,
        message_id: &MessageId,
    ) -> Result<ReadResponse> {
        let id = self.fresh_id();
        let frame = ClientFrame::Read {
            id: Some(id.clone()),
            conversation_id: conversation.clone(),
            message_id: message_id.clone(),
        };
        match self.request(&frame, &id).await? {
            ReplyFrame::ReadOk {
                conversation_id,
                read_upto,
                ..
            } => Ok(ReadResponse {
                conversation_id,
                read_upto,
            }),
            other => Err(unexpected("read.ok", &other)),
        }
    }

    /// Sends a `ping` frame and waits for its `pong`.
    pub async fn ping(&mut self) -> Result<()> {
        let id = self.fresh_id();
        match self
            .request(
                &ClientFrame::Ping {
                    id: Some(id.clone()),
                },
                &id,
            )
            .await?
        {
            ReplyFrame::Pong { .. } => Ok(()),
            other => Err(unexpected("pong", &other)),
        }
    }

    /// Sends a frame without waiting for its reply; read it with
    /// [`WsConnection::next_reply`].
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<()> {
        self.frames.write(frame).await
    }

    /// Sends an arbitrary text frame, for tests of malformed input.
    pub async fn send_raw_text(&mut self, text: String) -> Result<()> {
        self.frames.write_text(text).await
    }

    /// Starts the closing handshake. Frames still in flight can be read until
    /// the server confirms.
    pub async fn close(&mut self) -> Result<()> {
        match self.frames.socket.close(None).await {
            Ok(())
            | Err(tungstenite::Error::AlreadyClosed | tungstenite::Error::ConnectionClosed) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("c{}", self.next_id)
    }

    /// Sends `frame` and waits for the reply to it; an `error` reply becomes
    /// [`ClientError::Rejected`].
    async fn request(&mut self, frame: &ClientFrame, id: &str) -> Result<ReplyFrame> {
        self.frames.write(frame).await?;
        match self.frames.reply_to(id).await? {
            ReplyFrame::Error { error, .. } => Err(ClientError::Rejected {
                code: error.code,
                message: error.message,
            }),
            reply => Ok(reply),
        }
    }
}

/// A TCP connection to the host and port of `url` whose local end is
/// bound to `local` (any port): the first of the host's addresses of the
/// same family that accepts.
async fn connect_from(url: &Url, local: IpAddr) -> Result<TcpStream> {
    let io = |e: std::io::Error| ClientError::WebSocket(tungstenite::Error::Io(e));
    let host = url
        .host_str()
        .ok_or_else(|| ClientError::Protocol(format!("no host in {url}")))?;
    // `Url` keeps the brackets of an IPv6 literal; the resolver wants none.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url
        .port_or_known_default()
        .ok_or_else(|| ClientError::Protocol(format!("no port for {url}")))?;
    let mut last_error = None;
    for addr in tokio::net::lookup_host((host, port)).await.map_err(io)? {
        if addr.is_ipv4() != local.is_ipv4() {
            continue;
        }
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(io)?;
        socket.bind(SocketAddr::new(local, 0)).map_err(io)?;
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => io(e),
        None => ClientError::Protocol(format!(
            "{host} has no {} address to connect to from {local}",
            if local.is_ipv4() { "IPv4" } else { "IPv6" }
        )),
    })
}

/// A frame from the server.
#[derive(Debug)]
enum Incoming {
    Event(Event),
    Reply(ReplyFrame),
}

/// Tells events from replies by their `type`: event types are the dotted
/// inbox names. (`seq` alone is ambiguous: `send.ok` carries one too.)
fn classify(text: &str) -> Result<Incoming> {
    #[derive(Deserialize)]
    struct Tag<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    let tag: Tag<'_> = serde_json::from_str(text)?;
    if EventType::parse(&tag.kind).is_some() {
        Ok(Incoming::Event(serde_json::from_str(text)?))
    } else {
        Ok(Incoming::Reply(serde_json::from_str(text)?))
    }
}

/// The id a reply echoes, if any.
fn reply_id(reply: &ReplyFrame) -> Option<&str> {
    match reply {
        ReplyFrame::Ready { .. } | ReplyFrame::TokenExpiring { .. } | ReplyFrame::AuthOk { .. } => {
            None
        }
        ReplyFrame::SendOk { id, .. }
        | ReplyFrame::AckOk { id, .. }
        | ReplyFrame::ReadOk { id, .. }
        | ReplyFrame::Pong { id }
        | ReplyFrame::Error { id, .. } => id.as_deref(),
    }
}

/// Whether `reply` answers the frame sent with `id`. An `error` without an id
/// also counts: the server sends one when it could not read the frame at all
/// (too large, not JSON), and waiting for an id that never comes would hang.
fn answers(reply: &ReplyFrame, id: &str) -> bool {
    match reply_id(reply) {
        Some(reply_id) => reply_id == id,
        None => matches!(reply, ReplyFrame::Error { .. }),
    }
}

fn unexpected(expected: &str, got: &ReplyFrame) -> ClientError {
    ClientError::Protocol(format!("expected a {expected} reply, got {got:?}"))
}

/// The socket plus the queues of frames read ahead.
struct Frames {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    events: VecDeque<Event>,
    replies: VecDeque<ReplyFrame>,
    close_code: Option<u16>,
    closed: bool,
}

impl Frames {
    fn new(socket: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Frames {
            socket,
            events: VecDeque::new(),
            replies: VecDeque::new(),
            close_code: None,
            closed: false,
        }
    }

    async fn next_event(&mut self) -> Result<Option<Event>> {
        if let Some(event) = self.events.pop_front() {
            return Ok(Some(event));
        }
        while let Some(incoming) = self.read().await? {
            match incoming {
                Incoming::Event(event) => return Ok(Some(event)),
                Incoming::Reply(reply) => self.replies.push_back(reply),
            }
        }
        Ok(None)
    }

    async fn next_reply(&mut self) -> Result<Option<ReplyFrame>> {
        if let Some(reply) = self.replies.pop_front() {
            return Ok(Some(reply));
        }
        while let Some(incoming) = self.read().await? {
            match incoming {
                Incoming::Event(event) => self.events.push_back(event),
                Incoming::Reply(reply) => return Ok(Some(reply)),
            }
        }
        Ok(None)
    }

    /// Waits for the reply to the frame sent with `id`, queueing everything else.
    async fn reply_to(&mut self, id: &str) -> Result<ReplyFrame> {
        let queued = self.replies.iter().position(|r| answers(r, id));
        if let Some(reply) = queued.and_then(|pos| self.replies.remove(pos)) {
            return Ok(reply);
        }
        while let Some(incoming) = self.read().await? {
            match incoming {
                Incoming::Event(event) => self.events.push_back(event),
                Incoming::Reply(reply) if answers(&reply, id) => return Ok(reply),
                Incoming::Reply(reply) => self.replies.push_back(reply),
            }
        }
        Err(ClientError::Closed {
            code: self.close_code,
        })
    }

    /// Reads the next event or reply from the socket; `None` once it has closed.
    async fn read(&mut self) -> Result<Option<Incoming>> {
        while !self.closed {
            let Some(message) = self.socket.next().await else {
                self.closed = true;
                break;
            };
            match message {
                Ok(Message::Text(text)) => return classify(text.as_str()).map(Some),
                Ok(Message::Binary(_)) => {
                    return Err(ClientError::Protocol("unexpected binary frame".into()));
                }
                Ok(Message::Close(frame)) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    self.closed = true;
                    // Send the close reply tungstenite has queued, completing the
                    // handshake without waiting for the server to drop the TCP
                    // connection. The peer may be gone already; that is fine.
                    let _ = self.socket.flush().await;
                }
                // tungstenite answers pings itself as long as the socket is read.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(e) => {
                    self.closed = true;
                    return Err(e.into());
                }
            }
        }
        Ok(None)
    }

    async fn write(&mut self, frame: &ClientFrame) -> Result<()> {
        self.write_text(serde_json::to_string(frame)?).await
    }

    async fn write_text(&mut self, text: String) -> Result<()> {
        if self.closed {
            return Err(ClientError::Closed {
                code: self.close_code,
            });
        }
        match self.socket.send(Message::text(text)).await {
            Ok(()) => Ok(()),
            Err(tungstenite::Error::AlreadyClosed | tungstenite::Error::ConnectionClosed) => {
                Err(ClientError::Closed {
                    code: self.close_code,
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unimsg_proto::ErrorCode;

    fn classify_ok(text: &str) -> Incoming {
        classify(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn events_and_replies_are_told_apart() {
        let event = r#"{"seq":3,"type":"message.new","ts":"2024-01-01T00:00:00Z","data":{}}"#;
        assert!(matches!(classify_ok(event), Incoming::Event(e) if e.seq == Seq(3)));

        let revoked =
            r#"{"seq":4,"type":"session.revoked","ts":"2024-01-01T00:00:00Z","data":null}"#;
        assert!(
            matches!(classify_ok(revoked), Incoming::Event(e) if e.kind == EventType::SessionRevoked)
        );

        // send.ok carries a seq too, but is a reply.
        let send_ok = r#"{"type":"send.ok","id":"c1","message_id":"m1","conversation_id":"d:a:b","seq":9,"sent_at":"2024-01-01T00:00:00Z"}"#;
        match classify_ok(send_ok) {
            Incoming::Reply(ReplyFrame::SendOk { id, result, .. }) => {
                assert_eq!(id.as_deref(), Some("c1"));
                assert_eq!(result.seq, Seq(9));
                assert!(!result.duplicate);
            }
            other => panic!("unexpected {other:?}"),
        }

        let ready = r#"{"type":"ready","user_id":"alice","session_id":"s1","last_seq":0}"#;
        assert!(matches!(
            classify_ok(ready),
            Incoming::Reply(ReplyFrame::Ready { .. })
        ));
    }

    #[test]
    fn malformed_frames_are_errors() {
        for bad in [
            "",
            "not json",
            "{}",
            r#"{"type":"bogus"}"#,
            r#"{"type":"message.new"}"#,
        ] {
            assert!(classify(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[tokio::test]
    async fn connections_leave_from_the_local_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let local = IpAddr::from([127, 0, 0, 2]);
        for host in ["127.0.0.1", "localhost"] {
            let url = Url::parse(&format!("ws://{host}:{port}/v1/ws")).unwrap();
            let (stream, accepted) = tokio::join!(connect_from(&url, local), listener.accept());
            let stream = stream.unwrap_or_else(|e| panic!("{host}: {e}"));
            let (_, peer) = accepted.unwrap();
            assert_eq!(peer.ip(), local);
            assert_eq!(stream.local_addr().map(|a| a.ip()).ok(), Some(local));
        }
        // No IPv6 address of 127.0.0.1 to connect to.
        let url = Url::parse(&format!("ws://127.0.0.1:{port}/")).unwrap();
        let v6 = connect_from(&url, IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])).await;
        assert!(matches!(v6, Err(ClientError::Protocol(_))), "{v6:?}");
    }

    #[test]
    fn replies_match_by_id() {
        let pong = |id: Option<&str>| ReplyFrame::Pong {
            id: id.map(str::to_owned),
        };
        let error = |id: Option<&str>| ReplyFrame::Error {
            id: id.map(str::to_owned),
            client_msg_id: None,
            error: unimsg_proto::ErrorDetail {
                code: ErrorCode::BadRequest,
                message: "x".into(),
            },
        };
        assert!(answers(&pong(Some("c1")), "c1"));
        assert!(!answers(&pong(Some("c2")), "c1"));
        assert!(!answers(&pong(None), "c1"));
        assert!(answers(&error(Some("c1")), "c1"));
        assert!(!answers(&error(Some("c2")), "c1"));
        assert!(answers(&error(None), "c1"));
    }
}
