//! `GET /v1/ws`: the bidirectional transport.
//!
//! One task per connection runs a single loop over two sources: the
//! client's frames and the connection's queue, which carries its
//! deliveries, wakes it when its heartbeat or its access token's expiry
//! is due (the node's one timer task, `Hub::run_timers`; the socket
//! closes with 4001 at the token's `exp`) and ends when the hub ends the
//! connection (slow consumer, shutdown). Writes to the socket happen only in
//! that loop, so no lock is ever held across a write, and a write that
//! blocks on a client that stopped reading is abandoned as soon as the
//! hub gives up on the connection.
//!
//! An idle connection is parked in that loop for its whole life, so the
//! size of its future is memory per connection (measured, with the rest
//! of a connection's memory, by `unimsg-bench idle`). Hence the
//! shapes below: every step that awaits something big runs in a boxed
//! future of its own, frames are parsed in plain functions, and futures
//! are handed on pinned rather than by value.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::Instrument;
use unimsg_core::auth::AuthContext;
use unimsg_core::hub::{Delivery, KillReason, Outbound, Wake};
use unimsg_core::messaging::{SendLine, SendTurn};
use unimsg_core::stream::InboxStream;
use unimsg_core::{Core, CoreError};
use unimsg_proto::ws::{ClientFrame, ReplyFrame};
use unimsg_proto::{ErrorBody, ErrorCode, ErrorDetail, Seq};
use utoipa::IntoParams;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Query, bearer};

/// Most queued events written in one flush.
const BURST: usize = 64;

/// How long before its token's expiry a socket is sent `token.expiring`
/// (at once if the token is younger than that).
const EXPIRY_NOTICE: Duration = Duration::from_secs(30);

/// Close codes of the application range (4000–4999).
mod close {
    pub(super) const IDLE: u16 = 4000;
    pub(super) const UNAUTHORIZED: u16 = 4001;
    pub(super) const SLOW_CONSUMER: u16 = 4008;
    pub(super) const TOO_MANY: u16 = 4029;
    pub(super) const GOING_AWAY: u16 = 1001;
    pub(super) const PROTOCOL: u16 = 1002;
    pub(super) const INVALID_DATA: u16 = 1007;
    pub(super) const TOO_BIG: u16 = 1009;
    pub(super) const INTERNAL: u16 = 1011;
}

/// The close frame owed for a read error: RFC 6455 asks for 1002 after a
/// protocol violation (reserved bits, unknown opcode, bad framing), 1007
/// for a text message that is not UTF-8 and 1009 for a message over
/// `delivery.ws_max_message_bytes`. A peer that just went away gets none.
fn read_error_close(error: axum::Error) -> End {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    let inner = error.into_inner();
    let Some(error) = inner.downcast_ref::<WsError>() else {
        return End::Gone;
    };
    match error {
        WsError::Protocol(
            ProtocolError::ResetWithoutClosingHandshake
            | ProtocolError::ReceivedAfterClosing
            | ProtocolError::SendAfterClosing,
        ) => End::Gone,
        WsError::Protocol(_) => End::Close(close::PROTOCOL, "protocol error"),
        WsError::Utf8(_) => End::Close(close::INVALID_DATA, "text frame is not valid UTF-8"),
        WsError::Capacity(_) => End::Close(close::TOO_BIG, "message too big"),
        _ => End::Gone,
    }
}

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// With this close frame (code, reason).
    Close(u16, &'static str),
    /// Without one: the client is gone, or the socket cannot be written.
    Gone,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct WsQuery {
    /// The access token. Without it (or an `Authorization` header) the
    /// first frame must be `{"type":"auth","token":...}`.
    access_token: Option<String>,
    /// Replay the inbox after this seq before live events.
    #[param(minimum = 0)]
    after: Option<u64>,
}

/// The upgrade request. A token given in the query (or header) is checked
/// before upgrading, so a bad one is a plain 401.
#[utoipa::path(
    get,
    path = "/v1/ws",
    operation_id = "websocket",
    tag = "realtime",
    summary = "WebSocket connection",
    description = "Upgrades to a WebSocket; every frame is one JSON text message. Authenticate with `?access_token=`, an `Authorization: Bearer` header, or a first frame `{\"type\":\"auth\",\"token\":...,\"after\":SEQ}` (`ClientFrame`). The server answers `ready` (`ReplyFrame`), replays the inbox after `after`, then sends live inbox events (`Event`, recognisable by their `seq`) in seq order. Client frames: `send`, `ack`, `read`, `ping`, each with an optional `id` echoed in its reply (`send.ok`, `ack.ok`, `read.ok`, `pong` or `error`). The socket closes with 4001 when its access token expires (at the token's `exp`). 30 s before (at once for a younger token) the server sends `token.expiring`; an `auth` frame with a fresh token of the same session (from a refresh) moves the deadline to that token's expiry and is answered `auth.ok`, one of another session gets an `error` and changes nothing. Close codes: 4000 idle, 4001 unauthorized, session revoked or token expired, 4008 slow consumer, 4029 too many connections for this session, 1001 going away (shutdown), 1002 protocol error, 1007 a text frame that is not UTF-8, 1009 a message over the size limit, 1011 internal error.",
    params(WsQuery),
    security(("bearer" = []), ("access_token" = []), ()),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket is open."),
        (status = 400, description = "Not a WebSocket upgrade request, or bad query parameters (`bad_request`).", body = ErrorBody),
        (status = 401, description = "The token given in the query or header is invalid, expired or revoked (`unauthorized`).", body = ErrorBody),
        (status = 429, description = "The session already holds `delivery.max_connections_per_session` live connections on this server (`rate_limited`).", body = ErrorBody),
    ),
)]
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(r) => {
            return ApiError::bad_request(format!("not a WebSocket upgrade: {}", r.body_text()))
                .into_response();
        }
    };
    if !crate::cors::ws_origin_allowed(&state.http, &headers) {
        return ApiError::new(
            unimsg_proto::ErrorCode::Forbidden,
            "pages from this origin may not open WebSockets here; list it in \
             http.ws_allowed_origins (or http.cors_origins)",
        )
        .into_response();
    }
    let query = match crate::extract::query_token(&state, q.access_token.clone()) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let token = query.or_else(|| bearer(&headers).map(str::to_owned));
    let auth = match token {
        Some(t) => match state.core.authenticate(&t).await {
            Ok(a) => Some(a),
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => None,
    };
    let d = &state.core.config().delivery;
    // Refused before upgrading when the session is known; the hub checks
    // again, under its lock, when the connection subscribes.
    if let Some(a) = &auth
        && d.max_connections_per_session > 0
        && state
            .core
            .hub()
            .session_connections(&a.user_id, &a.session_id)
            >= d.max_connections_per_session
    {
        return ApiError::from(CoreError::TooManyConnections(format!(
            "this session already has {} live connections (WebSocket and SSE) on this \
             server; close one first",
            d.max_connections_per_session
        )))
        .into_response();
    }
    // The read buffer is allocated for every connection up front; writes
    // are gathered up to 8 times that before they go to the socket.
    let buffer = d.ws_buffer_bytes.max(256);
    upgrade
        .read_buffer_size(buffer)
        .write_buffer_size(buffer * 8)
        .max_write_buffer_size(buffer * 64 + d.ws_max_message_bytes)
        .max_message_size(d.ws_max_message_bytes)
        .max_frame_size(d.ws_max_message_bytes)
        .on_upgrade(move |socket| {
            connection(Box::new(WsConnection {
                core: state.core.clone(),
                socket,
                auth,
                after: q.after.map(Seq),
            }))
        })
}

fn frame(reply: &ReplyFrame) -> Message {
    Message::Text(serde_json::to_string(reply).unwrap_or_default().into())
}

fn error_frame(id: Option<String>, e: ApiError) -> Message {
    send_error_frame(id, None, e)
}

fn send_error_frame(id: Option<String>, client_msg_id: Option<String>, e: ApiError) -> Message {
    frame(&ReplyFrame::Error {
        id,
        client_msg_id,
        error: ErrorDetail {
            code: e.code,
            message: e.message,
        },
    })
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

fn event_frame(d: &Delivery) -> Message {
    match Utf8Bytes::try_from(d.json.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Text(Utf8Bytes::from_static("{}")),
    }
}

/// Why a socket waiting for its auth frame is closed: with 4001, or
/// after a protocol violation with the close code that names it.
enum FirstFrameError {
    Unauthorized(ApiError),
    Violation(u16, &'static str),
}

impl From<ApiError> for FirstFrameError {
    fn from(e: ApiError) -> Self {
        FirstFrameError::Unauthorized(e)
    }
}

impl From<CoreError> for FirstFrameError {
    fn from(e: CoreError) -> Self {
        FirstFrameError::Unauthorized(e.into())
    }
}

/// Waits for `{"type":"auth","token":...}` as the first frame.
async fn first_frame_auth(
    core: &Core,
    socket: &mut WebSocket,
    wait: Duration,
) -> Result<(AuthContext, Option<Seq>), FirstFrameError> {
    let first = tokio::time::timeout(wait, socket.recv())
        .await
        .map_err(|_| ApiError::unauthorized("no auth frame in time"))?;
    let text = match first {
        Some(Ok(Message::Text(text))) => text,
        Some(Err(error)) => {
            if let End::Close(code, reason) = read_error_close(error) {
                return Err(FirstFrameError::Violation(code, reason));
            }
            return Err(ApiError::unauthorized("expected an auth frame").into());
        }
        _ => return Err(ApiError::unauthorized("expected an auth frame").into()),
    };
    match serde_json::from_str::<ClientFrame>(&text) {
        Ok(ClientFrame::Auth { token, after }) => Ok((core.authenticate(&token).await?, after)),
        _ => Err(ApiError::unauthorized("expected an auth frame").into()),
    }
}

/// What a connection owns for its whole life, kept in one allocation: the
/// futures below borrow it instead of moving it from one to the next,
/// since every by-value argument of an `async fn` is stored twice in its
/// future, and that future is parked in memory for as long as the
/// connection is open.
struct WsConnection {
    core: Arc<Core>,
    socket: WebSocket,
    /// Known before the upgrade when the token came with the request.
    auth: Option<AuthContext>,
    after: Option<Seq>,
}

async fn connection(mut conn: Box<WsConnection>) {
    // The steps before and after the connection's life run in boxed
    // futures of their own: a step awaited inline would leave its state
    // in this future, parked for as long as the connection is open.
    if conn.auth.is_none() && !Box::pin(auth_by_first_frame(&mut conn)).await {
        return;
    }
    let WsConnection {
        core,
        socket,
        auth: Some(auth),
        after,
    } = &mut *conn
    else {
        return;
    };
    let span = tracing::debug_span!("ws", user_id = %auth.user_id, session_id = %auth.session_id);
    serve_authenticated(core, socket, auth, *after)
        .instrument(span)
        .await;
}

/// Waits for the `auth` frame of a socket opened without a token; `false`
/// when the socket was refused (and told why).
async fn auth_by_first_frame(conn: &mut WsConnection) -> bool {
    let core = conn.core.clone();
    let wait = Duration::from_secs(core.config().delivery.auth_timeout_secs.max(1));
    match first_frame_auth(&core, &mut conn.socket, wait).await {
        Ok((a, first_after)) => {
            conn.auth = Some(a);
            conn.after = first_after.or(conn.after);
            true
        }
        Err(FirstFrameError::Unauthorized(e)) => {
            let _ = conn.socket.send(error_frame(None, e)).await;
            let _ = conn
                .socket
                .send(close_frame(close::UNAUTHORIZED, "unauthorized"))
                .await;
            false
        }
        Err(FirstFrameError::Violation(code, reason)) => {
            let _ = conn.socket.send(close_frame(code, reason)).await;
            false
        }
    }
}

async fn serve_authenticated(
    core: &Arc<Core>,
    socket: &mut WebSocket,
    auth: &AuthContext,
    after: Option<Seq>,
) {
    let Some(mut stream) = Box::pin(open_stream(core, socket, auth, after)).await else {
        return;
    };
    // Counted in `unimsg_live_connections` until this function returns.
    let _live = crate::live::Live::open(crate::live::Transport::Ws, &auth.platform);
    let end = run(core, socket, &mut stream, auth).await;
    if let End::Close(code, reason) = end {
        let _ = socket.send(close_frame(code, reason)).await;
    }
    tracing::debug!("websocket closed");
}

/// Opens the inbox stream and sends `ready`; `None` when the socket was
/// closed instead (and told why).
async fn open_stream(
    core: &Arc<Core>,
    socket: &mut WebSocket,
    auth: &AuthContext,
    after: Option<Seq>,
) -> Option<InboxStream> {
    let stream = match InboxStream::open(core.clone(), auth, after).await {
        Ok(s) => s,
        Err(e) => {
            let (code, reason) = match e {
                CoreError::Unauthorized(_) => (close::UNAUTHORIZED, "cannot open the inbox"),
                CoreError::TooManyConnections(_) => {
                    (close::TOO_MANY, "too many connections for this session")
                }
                _ => (close::INTERNAL, "cannot open the inbox"),
            };
            let _ = socket.send(error_frame(None, e.into())).await;
            let _ = socket.send(close_frame(code, reason)).await;
            return None;
        }
    };
    let ready = frame(&ReplyFrame::Ready {
        user_id: auth.user_id.clone(),
        session_id: auth.session_id.clone(),
        last_seq: stream.newest(),
    });
    socket.send(ready).await.ok()?;
    Some(stream)
}

/// Runs the connection until it ends; returns how it ends.
///
/// An idle connection spends its life parked in the `select!` below, so
/// the size of this future is memory per connection. Everything that
/// awaits something big (store reads, a send's commit, a burst of writes)
/// runs in its own boxed future, allocated only while it runs: the parked
/// state holds little more than the socket, the queue and the times kept.
async fn run(
    core: &Core,
    socket: &mut WebSocket,
    stream: &mut InboxStream,
    auth: &AuthContext,
) -> End {
    if let Some(end) = Box::pin(replay(socket, stream, auth)).await {
        return end;
    }

    let idle = Duration::from_secs(core.config().delivery.idle_timeout_secs.max(1));
    // No timer of its own: the connection asks the hub to wake it at
    // whichever comes first of the heartbeat and the token's expiry (or
    // the notice before it), and acts on what is due when woken.
    // (The period is asked for again rather than kept: every value kept
    // across the select is memory of the parked connection.)
    let mut expiry = core.token_deadline(auth);
    // Whether `token.expiring` was sent for the current deadline.
    let mut warned = false;
    let next_wake = |next_beat: Instant, expiry: Instant, warned: bool| {
        let due = if warned {
            expiry
        } else {
            expiry.checked_sub(EXPIRY_NOTICE).unwrap_or(expiry)
        };
        next_beat.min(due)
    };
    let mut next_beat = Instant::now() + heartbeat(core);
    stream.set_due(next_wake(next_beat, expiry, warned));
    let mut last_heard = Instant::now();
    // Pipelined `send` frames (`delivery.ws_send_window`).
    let window = core.config().delivery.ws_send_window.max(1);
    let mut sends = Pipeline::default();
    loop {
        // Replies of sends that completed (while the socket was busy, or
        // together in one group commit): written with one flush.
        if !sends.done.is_empty() {
            let replies = std::mem::take(&mut sends.done);
            if sends
                .driving(pin!(write_replies(socket, replies)))
                .await
                .is_err()
            {
                return End::Gone;
            }
        }
        let in_flight = sends.in_flight();
        tokio::select! {
            wake = stream.wait() => {
                // The queue ends when the hub ends the connection too, so
                // the parked connection waits on one thing for all three.
                let first = match wake {
                    Wake::Delivery(first) => first,
                    Wake::Ended => {
                        return stream
                            .killed_for()
                            .map_or(End::Close(close::GOING_AWAY, "closed"), killed_end);
                    }
                    Wake::Due => {
                        let now = Instant::now();
                        if now >= expiry {
                            // As HTTP refuses the token from now on; the client
                            // reconnects with a fresh one (from its refresh token).
                            return End::Close(close::UNAUTHORIZED, "access token expired");
                        }
                        if !warned && now + EXPIRY_NOTICE >= expiry {
                            warned = true;
                            let expires_at = core.unix_deadline(expiry);
                            let notice = frame(&ReplyFrame::TokenExpiring { expires_at });
                            if sends.driving(pin!(socket.send(notice))).await.is_err() {
                                return End::Gone;
                            }
                        }
                        if now >= next_beat {
                            if last_heard.elapsed() > idle {
                                return End::Close(close::IDLE, "idle timeout");
                            }
                            let ping = socket.send(Message::Ping(bytes::Bytes::new()));
                            if sends.driving(pin!(ping)).await.is_err() {
                                return End::Gone;
                            }
                            next_beat = now + heartbeat(core);
                        }
                        stream.set_due(next_wake(next_beat, expiry, warned));
                        continue;
                    }
                };
                let delivered = deliver(socket, stream, first, auth);
                if let Some(end) = sends.driving(Box::pin(delivered)).await {
                    return end;
                }
            }
            () = sends.completed(), if in_flight > 0 => {}
            incoming = socket.recv(), if in_flight < window => {
                let message = match incoming {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => return read_error_close(error),
                    None => return End::Gone,
                };
                last_heard = Instant::now();
                let reply = match take_frame(core, auth, message, &mut sends) {
                    Taken::NoReply => continue,
                    Taken::End(end) => return end,
                    Taken::Reply(reply) => reply,
                    Taken::Handle(handled) => {
                        let (reply, fresh) = sends.driving(handled).await;
                        if let Some(deadline) = fresh {
                            expiry = deadline;
                            warned = false;
                            stream.set_due(next_wake(next_beat, expiry, warned));
                        }
                        reply
                    }
                };
                if sends.driving(pin!(socket.send(reply))).await.is_err() {
                    return End::Gone;
                }
            }
        }
    }
}

/// How a connection the hub ended closes.
fn killed_end(reason: KillReason) -> End {
    match reason {
        KillReason::SlowConsumer => End::Close(close::SLOW_CONSUMER, "slow consumer"),
        KillReason::Shutdown => End::Close(close::GOING_AWAY, "server shutting down"),
    }
}

/// The period of the heartbeat ping.
fn heartbeat(core: &Core) -> Duration {
    Duration::from_secs(core.config().delivery.heartbeat_secs.max(1))
}

/// What to do with a message the client sent.
enum Taken<'a> {
    /// Nothing to answer now: a `send`, now in the pipeline, or a ping or
    /// pong (the WebSocket layer answers pings itself).
    NoReply,
    /// Answered without waiting.
    Reply(Message),
    /// Another frame, answered when this completes (with the socket's new
    /// deadline after an accepted `auth`).
    Handle(Pin<Box<dyn Future<Output = (Message, Option<Instant>)> + Send + 'a>>),
    End(End),
}

/// Parses a client message and starts its work. A plain function, not
/// part of [`run`]: the frame's text and its parsed form are borrowed
/// while it is looked at, and a borrowed local of an `async fn` keeps its
/// place in the future across every later await of its scope, so in
/// `run` they would be memory of every parked connection.
fn take_frame<'a>(
    core: &'a Core,
    auth: &'a AuthContext,
    message: Message,
    sends: &mut Pipeline<'a>,
) -> Taken<'a> {
    let text = match message {
        Message::Text(text) => text,
        Message::Binary(_) => {
            return Taken::Reply(error_frame(
                None,
                ApiError::bad_request("binary frames are not supported; send JSON text frames"),
            ));
        }
        Message::Close(_) => return Taken::End(End::Gone),
        Message::Ping(_) | Message::Pong(_) => return Taken::NoReply,
    };
    match serde_json::from_str::<ClientFrame>(&text) {
        Ok(send @ ClientFrame::Send { .. }) => {
            let turn = sends.line.next_turn();
            sends.push(send_reply(core, auth, send, turn));
            Taken::NoReply
        }
        parsed => Taken::Handle(Box::pin(handle_frame(core, auth, parsed))),
    }
}

/// A connection's pipelined `send` frames: up to `delivery.ws_send_window`
/// in flight, stored in the order they arrived (their [`SendLine`]),
/// answered as each completes.
///
/// The sends are futures of the connection's own task, so whatever else
/// the connection awaits (writing events, another frame's store read)
/// goes through [`Pipeline::driving`], which keeps polling them. A send
/// left unpolled could hold what the other work waits for: the store's
/// semaphores hand a freed permit to the next waiter in line, and a
/// waiter nobody polls keeps it for ever.
#[derive(Default)]
struct Pipeline<'a> {
    /// Made on the first send, so a connection that only listens holds no set.
    set: Option<InFlight<'a>>,
    line: SendLine,
    /// Replies of sends that completed during [`Pipeline::driving`].
    done: std::collections::VecDeque<Message>,
}

/// The replies of a connection's pipelined sends, as each completes.
type InFlight<'a> = FuturesUnordered<Pin<Box<dyn Future<Output = Message> + Send + 'a>>>;

impl<'a> Pipeline<'a> {
    fn in_flight(&self) -> usize {
        self.set.as_ref().map_or(0, FuturesUnordered::len)
    }

    fn push(&mut self, send: impl Future<Output = Message> + Send + 'a) {
        // Unconstrained: tokio's task budget and a set of futures polled
        // inside one task can starve a ready future (futures-rs #2053);
        // the window bounds the work instead.
        self.set
            .get_or_insert_with(FuturesUnordered::new)
            .push(Box::pin(tokio::task::unconstrained(send)));
    }

    /// The next completed send's reply; pending while none is in flight.
    async fn next(&mut self) -> Message {
        match &mut self.set {
            Some(set) if !set.is_empty() => match set.next().await {
                Some(reply) => reply,
                None => std::future::pending().await,
            },
            _ => std::future::pending().await,
        }
    }

    /// Moves the replies of every send completed by now into `done`;
    /// pending while none has completed. A group commit completes many of
    /// a connection's sends at once, and their replies then go out in one
    /// write instead of one each.
    async fn completed(&mut self) {
        std::future::poll_fn(|cx| {
            let Some(set) = self.set.as_mut() else {
                return Poll::Pending;
            };
            while let Poll::Ready(Some(reply)) = set.poll_next_unpin(cx) {
                self.done.push_back(reply);
            }
            if self.done.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }

    /// Runs `work` while the sends in flight go on, keeping the replies of
    /// those that complete meanwhile in `done`. `work` comes pinned (by
    /// `pin!` or in a box): a future passed by value would be stored
    /// twice in this one.
    async fn driving<T>(&mut self, mut work: impl Future<Output = T> + Unpin) -> T {
        loop {
            let busy = self.in_flight() > 0;
            tokio::select! {
                biased;
                out = &mut work => return out,
                reply = self.next(), if busy => self.done.push_back(reply),
            }
        }
    }
}

/// Writes `replies` with one flush: one syscall instead of one per reply.
async fn write_replies(
    socket: &mut WebSocket,
    replies: std::collections::VecDeque<Message>,
) -> Result<(), axum::Error> {
    for reply in replies {
        socket.feed(reply).await?;
    }
    socket.flush().await
}

/// Replays what the client missed, one page at a time.
async fn replay(
    socket: &mut WebSocket,
    stream: &mut InboxStream,
    auth: &AuthContext,
) -> Option<End> {
    loop {
        match stream.backlog().await {
            Ok(page) if page.is_empty() => return None,
            Ok(page) => {
                if let Some(end) = send_events(socket, &page, auth, stream).await {
                    return Some(end);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "replay failed");
                return Some(End::Close(close::INTERNAL, "replay failed"));
            }
        }
    }
}

/// Places `first` and whatever else is queued (up to [`BURST`] more) in
/// seq order and writes them in one flush: one syscall instead of one per event.
async fn deliver(
    socket: &mut WebSocket,
    stream: &mut InboxStream,
    first: Outbound,
    auth: &AuthContext,
) -> Option<End> {
    match stream.accept_burst(first, BURST).await {
        Ok(ordered) => send_events(socket, &ordered, auth, stream).await,
        Err(e) => {
            tracing::error!(error = %e, "gap fill failed");
            Some(End::Close(close::INTERNAL, "delivery failed"))
        }
    }
}

/// Writes events in one flush. Returns how the connection must end, if it
/// must: the client is gone, the hub gave up on it, or this session was revoked.
async fn send_events(
    socket: &mut WebSocket,
    events: &[Arc<Delivery>],
    auth: &AuthContext,
    stream: &InboxStream,
) -> Option<End> {
    if events.is_empty() {
        return None;
    }
    let write = async {
        for d in events {
            socket.feed(event_frame(d)).await?;
        }
        socket.flush().await
    };
    // The write first: it usually completes at once, and then the kill
    // signal is never polled (nor its waiter registered).
    tokio::select! {
        biased;
        result = write => {
            if result.is_err() {
                return Some(End::Gone);
            }
        }
        () = stream.until_killed() => {
            return Some(killed_end(
                stream.killed_for().unwrap_or(KillReason::SlowConsumer),
            ));
        }
    }
    if events
        .iter()
        .any(|d| d.revokes.as_ref() == Some(&auth.session_id))
    {
        return Some(End::Close(close::UNAUTHORIZED, "session revoked"));
    }
    None
}

/// Checks a fresh token sent on an open socket, as the first frame's is
/// checked (signature, expiry, active session), and that it belongs to
/// the socket's own session: a socket cannot change hands.
async fn reauthenticate(
    core: &Core,
    auth: &AuthContext,
    token: &str,
) -> Result<AuthContext, ApiError> {
    let fresh = core.authenticate(token).await?;
    if fresh.session_id != auth.session_id || fresh.user_id != auth.user_id {
        return Err(ApiError::unauthorized(
            "the token belongs to another session; open a new socket for it",
        ));
    }
    Ok(fresh)
}

/// Runs one `send` frame in its turn of the connection's line and answers
/// it with its frame id and `client_msg_id`.
async fn send_reply(core: &Core, auth: &AuthContext, send: ClientFrame, turn: SendTurn) -> Message {
    let Some((id, req)) = send.into_send() else {
        return error_frame(None, ApiError::new(ErrorCode::Internal, "internal error"));
    };
    let client_msg_id = req.client_msg_id.clone();
    match core.send_in_turn(auth, req, turn).await {
        Ok(result) => frame(&ReplyFrame::SendOk {
            id,
            client_msg_id,
            result,
        }),
        Err(e) => send_error_frame(id, client_msg_id, e.into()),
    }
}

/// Handles one client frame and returns the reply, and the socket's new
/// deadline when the frame was an accepted `auth`.
async fn handle_frame(
    core: &Core,
    auth: &AuthContext,
    parsed: Result<ClientFrame, serde_json::Error>,
) -> (Message, Option<Instant>) {
    let parsed = match parsed {
        Ok(f) => f,
        Err(e) => {
            let e = ApiError::bad_request(format!(
                "invalid frame: {}",
                crate::error::plain_words(&e.to_string())
            ));
            return (error_frame(None, e), None);
        }
    };
    if let ClientFrame::Auth { token, .. } = &parsed {
        return match reauthenticate(core, auth, token).await {
            Ok(fresh) => (
                frame(&ReplyFrame::AuthOk {
                    expires_at: fresh.expires_at,
                }),
                Some(core.token_deadline(&fresh)),
            ),
            Err(e) => (error_frame(None, e), None),
        };
    }
    (handle_request(core, auth, parsed).await, None)
}

/// Handles one client request frame and returns the reply.
async fn handle_request(core: &Core, auth: &AuthContext, parsed: ClientFrame) -> Message {
    match parsed {
        ClientFrame::Auth { .. } => {
            error_frame(None, ApiError::bad_request("already authenticated"))
        }
        f @ ClientFrame::Send { .. } => send_reply(core, auth, f, SendTurn::alone()).await,
        ClientFrame::Ack { id, seq } => match core.ack(auth, seq).await {
            Ok(acked) => frame(&ReplyFrame::AckOk { id, acked }),
            Err(e) => error_frame(id, e.into()),
        },
        ClientFrame::Read {
            id,
            conversation_id,
            message_id,
        } => match core.mark_read(auth, &conversation_id, &message_id).await {
            Ok(r) => frame(&ReplyFrame::ReadOk {
                id,
                conversation_id: r.conversation_id,
                read_upto: r.read_upto,
            }),
            Err(e) => error_frame(id, e.into()),
        },
        ClientFrame::Ping { id } => frame(&ReplyFrame::Pong { id }),
    }
}
