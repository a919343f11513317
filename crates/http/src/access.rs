//! The request id and the access log: every response carries an
//! `X-Request-Id` (the client's, if it sent a plain one, else a fresh
//! one), and with `http.log_requests` (on by default) every request is one
//! `info` line of target `unimsg::http` with its method, route, status,
//! duration and request id. Every request also counts in
//! `unimsg_http_requests_total{route, status}` and
//! `unimsg_http_request_duration_seconds{route}`.
//!
//! The route is the matched template (`/v1/users/{id}`), never the
//! request's path or query: a WebSocket's `?access_token=` or an id in
//! a path does not reach the log.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use parking_lot::RwLock;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-given request id that is kept.
const MAX_ID: usize = 64;

pub(crate) async fn log(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| plain(v.as_bytes()))
        .cloned()
        .unwrap_or_else(fresh_id);
    req.headers_mut().insert(REQUEST_ID.clone(), id.clone());
    let logged =
        state.http.log_requests && tracing::enabled!(target: "unimsg::http", tracing::Level::INFO);
    // The template, so that the label set stays small: "-" for requests
    // no route matched.
    // (A clone of the shared template, not a copy of its text.)
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let method = logged.then(|| req.method().clone());
    let started = tokio::time::Instant::now();
    let mut response = next.run(req).await;
    let took: Duration = started.elapsed();
    let status = response.status().as_u16();
    let route = matched.as_ref().map_or("-", MatchedPath::as_str);
    let (requests, duration) = series(route, status);
    requests.increment(1);
    duration.record(took.as_secs_f64());
    if let Some(method) = method {
        tracing::info!(
            target: "unimsg::http",
            %method,
            %route,
            status,
            ms = took.as_secs_f64() * 1000.0,
            request_id = %id.to_str().unwrap_or("-"),
            "request"
        );
    }
    response.headers_mut().insert(REQUEST_ID.clone(), id);
    response
}

/// The request counter of (route, status) and the duration histogram of
/// the route, registered once and kept: building a labelled key and
/// looking it up in the recorder on every request cost about 7 µs.
/// Routes are templates and statuses HTTP codes, so the map stays small.
fn series(route: &str, status: u16) -> (metrics::Counter, metrics::Histogram) {
    type Series = HashMap<String, (metrics::Histogram, HashMap<u16, metrics::Counter>)>;
    static SERIES: LazyLock<RwLock<Series>> = LazyLock::new(RwLock::default);
    if let Some((duration, by_status)) = SERIES.read().get(route)
        && let Some(requests) = by_status.get(&status)
    {
        return (requests.clone(), duration.clone());
    }
    let mut all = SERIES.write();
    let (duration, by_status) = all.entry(route.to_owned()).or_insert_with(|| {
        let duration =
            metrics::histogram!("unimsg_http_request_duration_seconds", "route" => route.to_owned());
        (duration, HashMap::new())
    });
    let requests = by_status.entry(status).or_insert_with(|| {
        metrics::counter!(
            "unimsg_http_requests_total",
            "route" => route.to_owned(),
            "status" => status.to_string()
        )
    });
    (requests.clone(), duration.clone())
}

/// 1 to 64 letters, digits, `-` or `_`.
fn plain(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

fn fresh_id() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::now_v7().simple().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_client_ids_are_kept() {
        assert!(plain(b"abc-123_X"));
        assert!(!plain(b""));
        assert!(!plain(b"has space"));
        assert!(!plain(b"line\nbreak"));
        assert!(!plain(&[b'a'; 65]));
        assert!(plain(fresh_id().as_bytes()));
    }
}
