//! Request guards that run before any route: a declared `Content-Length`
//! over `http.max_body_bytes` is refused at once, and a request body must
//! arrive whole within `http.request_timeout_secs` of the request's headers.
//!
//! The deadline applies to reading the body only, never to the handler:
//! a handler cut off halfway could leave work half done (a notification
//! appended to some of its recipients), and WebSocket and SSE connections
//! have no request body, so their streams are never cut by it.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use unimsg_proto::ErrorCode;

use crate::AppState;
use crate::error::ApiError;

/// The error a body that missed its deadline fails with; the JSON
/// extractor recognises it and answers 408.
#[derive(Debug)]
pub(crate) struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimeout {}

/// Whether `error` or one of its sources is a [`BodyTimeout`].
pub(crate) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    // Bounded: rejection chains are a few links long.
    for _ in 0..16 {
        let Some(e) = next else { return false };
        if e.is::<BodyTimeout>() {
            return true;
        }
        next = e.source();
    }
    false
}

pub(crate) fn timeout_error() -> ApiError {
    ApiError::new(
        ErrorCode::RequestTimeout,
        "the request body did not arrive in time",
    )
}

/// The middleware: 413 for a declared length over the limit, and a
/// deadline on reading the body.
pub(crate) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.http.max_body_bytes;
    let headers = req.headers();
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        // Answered before a byte of the body is read; hyper closes the
        // connection after this response, since the body is left unread.
        return ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is too large (at most {limit} bytes)"),
        )
        .into_response();
    }
    let has_body = declared.is_some_and(|n| n > 0) || headers.contains_key(TRANSFER_ENCODING);
    if !has_body {
        return next.run(req).await;
    }
    let wait = Duration::from_secs(state.http.request_timeout_secs.max(1));
    let (parts, body) = req.into_parts();
    let deadline = tokio::time::Instant::now() + wait;
    let data = body.into_data_stream();
    let timed = futures_util::stream::unfold(Some(data), move |data| async move {
        let mut data = data?;
        match tokio::time::timeout_at(deadline, data.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(data))),
            Ok(None) => None,
            Err(_) => Some((Err(axum::Error::new(BodyTimeout)), None)),
        }
    });
    next.run(Request::from_parts(parts, Body::from_stream(timed)))
        .await
}
