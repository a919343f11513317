//! QR-code login over HTTP: tickets, the waiting page's SSE stream, the QR
//! image, and the phone's scan / confirm / cancel (see `unimsg_core::qr`).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use unimsg_core::qr::{QrEvent, QrStep, Ticket, TicketState, counted};
use unimsg_proto::api::{QrConfirmed, QrRequester, QrScanRequest, QrTicket, QrTicketRequest};
use unimsg_proto::{ErrorBody, ErrorCode};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, PathId, Query, RequestOrigin, UserAuth};

/// The user-facing QR routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(events))
        .routes(routes!(image))
        .routes(routes!(scan))
        .routes(routes!(confirm))
        .routes(routes!(cancel))
}

/// The page a QR code opens on the phone, for this code: under
/// `auth.public_url`, which `server::run` sets to the listening address when
/// it is empty. Never from the request's `Host` header, which the client
/// chooses.
fn qr_url(state: &AppState, code: &str) -> String {
    let base = state.core.config().auth.public_url.trim_end_matches('/');
    format!("{base}/m/qr?code={code}")
}

/// The header a non-browser page may send its secret in (browsers' EventSource
/// cannot set headers, so `?secret=` is accepted too).
const SECRET_HEADER: &str = "x-qr-secret";

/// `?secret=` of the events stream.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// The ticket's `page_secret` (or send it in the `X-QR-Secret` header).
    #[serde(default)]
    secret: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/auth/qr",
    operation_id = "qr_create",
    tag = "auth",
    summary = "Ask for a QR login ticket",
    description = "Creates a login ticket for this page (valid `auth.qr_ttl_secs`) and a `page_secret` that only this answer carries: keep it on the page. Asking again with that `page_secret` (same platform and `device_id`) while the ticket is open returns the same ticket and code; without it, or with another page's, a new ticket. Show `qr_url` as a QR code (or `GET .../qr.svg`) and the short `code`; wait on `GET /v1/auth/qr/{ticket_id}/events` with the secret. Rate limited per address.",
    request_body = QrTicketRequest,
    responses(
        (status = 200, description = "The ticket.", body = QrTicket),
        (status = 400, description = "A malformed `device_id` or `page_secret` (`bad_request`).", body = ErrorBody),
        (status = 429, description = "Too many tickets from this address (`rate_limited`).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
/// `POST /v1/auth/qr`
pub(crate) async fn create(
    State(state): State<AppState>,
    RequestOrigin(client): RequestOrigin,
    Json(req): Json<QrTicketRequest>,
) -> Result<axum::Json<QrTicket>, ApiError> {
    let new = counted(
        QrStep::Create,
        state
            .core
            .create_qr_ticket(
                req.platform,
                req.device_id,
                req.page_secret.as_deref(),
                &client,
            )
            .await,
    )?;
    let qr_url = qr_url(&state, &new.ticket.code);
    Ok(axum::Json(QrTicket {
        ticket_id: new.ticket.ticket_id,
        code: new.ticket.code,
        qr_url,
        expires_in: new.expires_in,
        page_secret: new.page_secret.0,
    }))
}

/// The data of a page event that carries nothing: `{}`.
#[derive(Serialize)]
struct Nothing {}

/// `scanned`: who scanned the code.
#[derive(Serialize)]
struct Scanned<'a> {
    display_name: &'a str,
}

/// `pending`, at connect. (Fields by name, as a JSON object of them
/// serialized before.)
#[derive(Serialize)]
struct Pending<'a> {
    code: &'a str,
    expires_in: i64,
    ticket_id: &'a str,
}

fn named(name: &'static str, data: &impl Serialize) -> SseEvent {
    let event = SseEvent::default().event(name);
    match serde_json::to_string(data) {
        Ok(json) => event.data(json),
        Err(error) => {
            tracing::error!(%error, event = name, "cannot encode a QR page event");
            event.data("null")
        }
    }
}

fn scanned(display_name: &str) -> SseEvent {
    named("scanned", &Scanned { display_name })
}

/// The SSE event for a ticket event, and whether it ends the stream.
fn to_sse(event: QrEvent) -> (SseEvent, bool) {
    match event {
        QrEvent::Scanned { display_name } => (scanned(&display_name), false),
        QrEvent::Confirmed(pair) => (named("confirmed", &*pair), true),
        QrEvent::Cancelled => (named("cancelled", &Nothing {}), true),
        QrEvent::Expired => (named("expired", &Nothing {}), true),
    }
}

#[utoipa::path(
    get,
    path = "/v1/auth/qr/{ticket_id}/events",
    operation_id = "qr_events",
    tag = "auth",
    summary = "Wait for a QR ticket (SSE)",
    description = "A `text/event-stream` with named events: `pending` `{ticket_id, code, expires_in}` at connect, `scanned` `{display_name}` when a phone scans, then one of `confirmed` (the new session's tokens: `{access_token, refresh_token, expires_in, user_id, session_id}`), `cancelled` `{}` or `expired` `{}`, after which the stream ends. Comment heartbeats keep it open. Only the page that created the ticket may listen: give its `page_secret` as `?secret=` (for EventSource) or in the `X-QR-Secret` header.",
    params(
        ("ticket_id" = String, Path, description = "The ticket id from `POST /v1/auth/qr`."),
        ("X-QR-Secret" = Option<String>, Header, description = "The ticket's `page_secret` (or give it as `?secret=`)."),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "The event stream.", content_type = "text/event-stream", body = String),
        (status = 404, description = "Unknown ticket, or not this page's: a missing or wrong secret (`not_found`).", body = ErrorBody),
        (status = 410, description = "The ticket was already used, cancelled or expired (`gone`).", body = ErrorBody),
    ),
)]
/// `GET /v1/auth/qr/{ticket_id}/events`
pub(crate) async fn events(
    State(state): State<AppState>,
    PathId(id): PathId,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let core = state.core.clone();
    let secret = headers
        .get(SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .or(query.secret.as_deref());
    // Listen first, then read the state: nothing falls between the two.
    let rx = counted(QrStep::Events, core.qr_events(&id, secret).await)?;
    let ticket = core.qr_ticket(&id).await?;
    let mut first = vec![named(
        "pending",
        &Pending {
            code: &ticket.code,
            expires_in: (ticket.expires_at - core.now()).whole_seconds().max(0),
            ticket_id: &ticket.ticket_id,
        },
    )];
    match &ticket.state {
        TicketState::Pending => {}
        TicketState::Scanned { display_name, .. } => first.push(scanned(display_name)),
        TicketState::Confirmed => {
            return Err(ApiError::new(
                ErrorCode::Gone,
                "the ticket was already used",
            ));
        }
        TicketState::Cancelled => {
            return Err(ApiError::new(ErrorCode::Gone, "the ticket was cancelled"));
        }
        TicketState::Expired => return Err(ApiError::new(ErrorCode::Gone, "the ticket expired")),
    }
    let wait = (ticket.expires_at - core.now()).whole_milliseconds().max(0);
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(u64::try_from(wait).unwrap_or(0));
    let heartbeat = Duration::from_secs(core.config().delivery.heartbeat_secs.max(1));
    let waiting = Waiting {
        core,
        id,
        rx,
        deadline,
        first: first.into(),
        done: false,
    };
    let stream = futures_util::stream::unfold(waiting, next_qr_event);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(heartbeat))
        .into_response())
}

/// The event for a ticket's current state (after a missed event or at expiry).
fn state_event(t: &Ticket) -> (SseEvent, bool) {
    match &t.state {
        TicketState::Pending => (named("pending", &Nothing {}), false),
        TicketState::Scanned { display_name, .. } => (scanned(display_name), false),
        TicketState::Confirmed => (named("confirmed", &Nothing {}), true),
        TicketState::Cancelled => (named("cancelled", &Nothing {}), true),
        TicketState::Expired => (named("expired", &Nothing {}), true),
    }
}

/// A waiting page's stream: the opening events, then the ticket's events
/// until one ends it or the ticket expires.
struct Waiting {
    core: std::sync::Arc<unimsg_core::Core>,
    id: String,
    rx: tokio::sync::broadcast::Receiver<QrEvent>,
    deadline: tokio::time::Instant,
    first: std::collections::VecDeque<SseEvent>,
    done: bool,
}

async fn next_qr_event(mut w: Waiting) -> Option<(Result<SseEvent, Infallible>, Waiting)> {
    if let Some(e) = w.first.pop_front() {
        return Some((Ok(e), w));
    }
    if w.done {
        return None;
    }
    let (event, ends) = loop {
        tokio::select! {
            received = w.rx.recv() => break match received {
                Ok(event) => to_sse(event),
                // Missed events: the state tells where the ticket stands.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    state_event(&w.core.qr_ticket(&w.id).await.ok()?)
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            },
            () = tokio::time::sleep_until(w.deadline) => {
                let ticket = w.core.expire_qr(&w.id).await.ok()?;
                if ticket.state == TicketState::Confirmed {
                    // Confirmed just before expiry: its tokens are on their way.
                    w.deadline += Duration::from_secs(60);
                    continue;
                }
                break state_event(&ticket);
            }
        }
    };
    w.done = ends;
    Some((Ok(event), w))
}

#[utoipa::path(
    get,
    path = "/v1/auth/qr/{ticket_id}/qr.svg",
    operation_id = "qr_image",
    tag = "auth",
    summary = "The ticket's QR code",
    description = "An SVG image of the ticket's `qr_url`.",
    params(("ticket_id" = String, Path, description = "The ticket id.")),
    responses(
        (status = 200, description = "The QR code.", content_type = "image/svg+xml", body = String),
        (status = 404, description = "Unknown ticket (`not_found`).", body = ErrorBody),
    ),
)]
/// `GET /v1/auth/qr/{ticket_id}/qr.svg`
pub(crate) async fn image(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let ticket = state.core.qr_ticket(&id).await?;
    let url = qr_url(&state, &ticket.code);
    let code = qrcode::QrCode::new(url.as_bytes())
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot draw the QR code: {e}")))?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    Ok((
        [(CONTENT_TYPE, "image/svg+xml"), (CACHE_CONTROL, "no-store")],
        svg,
    )
        .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/auth/qr/scan",
    operation_id = "qr_scan",
    tag = "auth",
    summary = "Scan a QR ticket (phone)",
    description = "The logged-in phone claims the ticket by `code` (as the QR code or a person gives it) or `ticket_id`, and learns who is asking (platform, address, browser, time; nothing that lets it act as the page). The waiting page receives `scanned`. Scanning again by the same user is harmless; another user gets 409.",
    request_body = QrScanRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Who is asking.", body = QrRequester),
        (status = 404, description = "Unknown ticket or code (`not_found`).", body = ErrorBody),
        (status = 409, description = "Another user scanned it, or it was confirmed (`conflict`).", body = ErrorBody),
        (status = 410, description = "Cancelled or expired (`gone`).", body = ErrorBody),
    ),
)]
/// `POST /v1/auth/qr/scan`
pub(crate) async fn scan(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    Json(req): Json<QrScanRequest>,
) -> Result<axum::Json<QrRequester>, ApiError> {
    let t = counted(
        QrStep::Scan,
        state
            .core
            .scan_qr(&auth, req.ticket_id.as_deref(), req.code.as_deref())
            .await,
    )?;
    Ok(axum::Json(QrRequester {
        ticket_id: t.ticket_id,
        platform: t.platform,
        ip: t.ip,
        user_agent: t.user_agent,
        created_at: t.created_at,
        expires_at: t.expires_at,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/auth/qr/{ticket_id}/confirm",
    operation_id = "qr_confirm",
    tag = "auth",
    summary = "Confirm a QR ticket (phone)",
    description = "The user who scanned the ticket confirms it: a session for that user opens on the ticket's platform and device (the device policy applies) and the waiting page receives its tokens in `confirmed`. A ticket is single-use.",
    params(("ticket_id" = String, Path, description = "The ticket id.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session opened for the waiting page.", body = QrConfirmed),
        (status = 403, description = "Not scanned by this user (`forbidden`).", body = ErrorBody),
        (status = 404, description = "Unknown ticket (`not_found`).", body = ErrorBody),
        (status = 409, description = "Already confirmed (`conflict`).", body = ErrorBody),
        (status = 410, description = "Cancelled or expired (`gone`).", body = ErrorBody),
    ),
)]
/// `POST /v1/auth/qr/{ticket_id}/confirm`
pub(crate) async fn confirm(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
) -> Result<axum::Json<QrConfirmed>, ApiError> {
    let session_id = counted(QrStep::Confirm, state.core.confirm_qr(&auth, &id).await)?;
    Ok(axum::Json(QrConfirmed { session_id }))
}

#[utoipa::path(
    post,
    path = "/v1/auth/qr/{ticket_id}/cancel",
    operation_id = "qr_cancel",
    tag = "auth",
    summary = "Cancel a QR ticket (phone)",
    description = "The user who scanned the ticket refuses it; the waiting page receives `cancelled`.",
    params(("ticket_id" = String, Path, description = "The ticket id.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Cancelled."),
        (status = 403, description = "Not scanned by this user (`forbidden`).", body = ErrorBody),
        (status = 404, description = "Unknown ticket (`not_found`).", body = ErrorBody),
        (status = 409, description = "Already confirmed (`conflict`).", body = ErrorBody),
        (status = 410, description = "Cancelled or expired (`gone`).", body = ErrorBody),
    ),
)]
/// `POST /v1/auth/qr/{ticket_id}/cancel`
pub(crate) async fn cancel(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    counted(QrStep::Cancel, state.core.cancel_qr(&auth, &id).await)?;
    Ok(StatusCode::NO_CONTENT)
}
