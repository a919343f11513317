//! `GET /v1/events`: the receive-only transport (Server-Sent Events).
//!
//! Each event's `id:` is its inbox seq, so a reconnecting `EventSource`
//! resumes by itself with `Last-Event-ID`. The stream replays what the
//! client missed, then follows live events in order; it ends after this
//! session's `session.revoked`, at the access token's expiry, or when the
//! hub drops the connection.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, Sse};
use serde::Deserialize;
use unimsg_core::hub::{Delivery, Wake};
use unimsg_core::stream::InboxStream;
use unimsg_proto::{ErrorBody, Seq, SessionId};
use utoipa::IntoParams;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Query, bearer};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// The access token, for `EventSource` clients that cannot set
    /// `Authorization` (the header wins when both are given).
    access_token: Option<String>,
    /// Replay the inbox after this seq before following live events
    /// (`Last-Event-ID` wins when both are given). Without either, only
    /// live events are sent.
    #[param(minimum = 0)]
    after: Option<u64>,
}

/// `GET /v1/events` (Bearer header or `?access_token=`; `Last-Event-ID` or `?after=`).
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "events",
    tag = "realtime",
    summary = "Server-Sent Events stream of the inbox",
    description = "A `text/event-stream` of the caller's inbox events. Each SSE event has `id:` = its seq and `data:` = one `Event` as JSON (`{seq, type, ts, data}`, see the `Event` schema). The stream replays what the client missed (after `Last-Event-ID` or `after`), then follows live events in seq order, with comment heartbeats every `delivery.heartbeat_secs`. It ends after this session's `session.revoked`, when the access token expires (at its `exp`), or when the server drops a client that does not keep up. A reconnecting `EventSource` resumes by itself with `Last-Event-ID`.",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "Resume after this seq (sent by `EventSource` on reconnect)."),
    ),
    security(("bearer" = []), ("access_token" = [])),
    responses(
        (status = 200, description = "The event stream: `id: <seq>` and `data: <Event JSON>` per event.", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad query parameters or `Last-Event-ID` (`bad_request`).", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked access token (`unauthorized`).", body = ErrorBody),
        (status = 429, description = "The session already holds `delivery.max_connections_per_session` live connections on this server (`rate_limited`).", body = ErrorBody),
    ),
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let query = crate::extract::query_token(&state, q.access_token)?;
    let token = bearer(&headers).map(str::to_owned).or(query);
    let token = token.ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let auth = state.core.authenticate(&token).await?;
    let last_event_id = match headers.get("last-event-id") {
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID must be a seq"))?;
            Some(
                text.trim()
                    .parse::<u64>()
                    .map_err(|_| ApiError::bad_request("Last-Event-ID must be a seq"))?,
            )
        }
        None => None,
    };
    let after = last_event_id.or(q.after).map(Seq);
    let stream = InboxStream::open(state.core.clone(), &auth, after).await?;
    let expiry = state.core.token_deadline(&auth);
    let heartbeat = state.heartbeat();
    let next_beat = tokio::time::Instant::now() + heartbeat;
    stream.set_due(next_beat.min(expiry));
    let follow = Follow {
        _live: crate::live::Live::open(crate::live::Transport::Sse, &auth.platform),
        session: auth.session_id,
        stream,
        expiry,
        heartbeat,
        next_beat,
        pending: VecDeque::new(),
        caught_up: false,
        done: false,
    };
    Ok(Sse::new(futures_util::stream::unfold(follow, next_event)))
}

struct Follow {
    /// Counts the stream in `unimsg_live_connections` while it lives.
    _live: crate::live::Live,
    session: SessionId,
    /// Also wakes the stream for its heartbeats and its expiry (the hub's
    /// timer task, `Hub::run_timers`): no timer of its own.
    stream: InboxStream,
    /// The access token's `exp`: the stream ends then, as HTTP refuses
    /// the token from then on (`EventSource` reconnects, with a fresh one).
    expiry: tokio::time::Instant,
    heartbeat: std::time::Duration,
    /// When the next heartbeat comment is due.
    next_beat: tokio::time::Instant,
    pending: VecDeque<Arc<Delivery>>,
    caught_up: bool,
    done: bool,
}

fn to_sse(d: &Delivery) -> SseEvent {
    let data = std::str::from_utf8(&d.json).unwrap_or("{}");
    SseEvent::default().id(d.seq.to_string()).data(data)
}

async fn next_event(mut f: Follow) -> Option<(Result<SseEvent, Infallible>, Follow)> {
    loop {
        if f.done {
            return None;
        }
        if let Some(d) = f.pending.pop_front() {
            if d.revokes.as_ref() == Some(&f.session) {
                f.done = true;
            }
            let event = to_sse(&d);
            return Some((Ok(event), f));
        }
        if !f.caught_up {
            match f.stream.backlog().await {
                Ok(page) if page.is_empty() => f.caught_up = true,
                Ok(page) => f.pending.extend(page),
                Err(e) => {
                    tracing::error!(error = %e, "SSE replay failed");
                    return None;
                }
            }
            continue;
        }
        // The queue ends when the hub ends the stream (slow consumer,
        // shutdown), so one wait covers deliveries, timers and the end.
        match f.stream.wait().await {
            Wake::Ended => return None,
            Wake::Due => {
                let now = tokio::time::Instant::now();
                if now >= f.expiry {
                    return None;
                }
                let beat = now >= f.next_beat;
                if beat {
                    f.next_beat = now + f.heartbeat;
                }
                f.stream.set_due(f.next_beat.min(f.expiry));
                if beat {
                    return Some((Ok(SseEvent::default().comment("")), f));
                }
            }
            Wake::Delivery(d) => match f.stream.accept_burst(d, 64).await {
                Ok(ordered) => f.pending.extend(ordered),
                Err(e) => {
                    tracing::error!(error = %e, "SSE gap fill failed");
                    return None;
                }
            },
        }
    }
}
