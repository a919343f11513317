//! `GET /healthz`, `GET /readyz`, `GET /metrics`.

use std::sync::LazyLock;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use unimsg_proto::ErrorBody;
use unimsg_proto::api::Health;

use crate::AppState;
use crate::error::ApiError;

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    summary = "Liveness",
    responses((status = 200, description = "The process is up.", body = Health)),
)]
/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    summary = "Readiness",
    responses(
        (status = 200, description = "The store answers.", body = Health),
        (status = 503, description = "The store is unavailable (`unavailable`).", body = ErrorBody),
    ),
)]
/// `GET /readyz`: the process can serve (the store answers).
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.core.ready().await?;
    Ok(Json(Health {
        status: "ok".into(),
    }))
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    summary = "Prometheus metrics",
    description = "Every series with `# HELP` and `# TYPE`. With `metrics.token` set, only for `Authorization: Bearer TOKEN`; with `metrics.listen` set, only on that listener.",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4.", content_type = "text/plain", body = String),
        (status = 401, description = "`metrics.token` is set and the request does not carry it (`unauthorized`).", body = ErrorBody),
        (status = 404, description = "`metrics.listen` is set: the metrics are served on that listener only (`not_found`).", body = ErrorBody),
    ),
)]
/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(
    State(state): State<AppState>,
    listener: Option<axum::Extension<crate::OnMetricsListener>>,
    headers: HeaderMap,
) -> Response {
    // With a listener of its own, the main one does not serve them.
    if !state.metrics_config.listen.is_empty() && listener.is_none() {
        return crate::error::not_found().await.into_response();
    }
    if !allowed(&state.metrics_config.token, &headers) {
        return ApiError::unauthorized(
            "this server's metrics need Authorization: Bearer with metrics.token",
        )
        .into_response();
    }
    process_metrics();
    let hub = state.core.hub();
    let mut body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    // Always present, whichever recorder is installed.
    body.push_str(&format!(
        "# HELP unimsg_hub_connections Live WebSocket and SSE connections on this node.\n\
         # TYPE unimsg_hub_connections gauge\nunimsg_hub_connections {}\n\
         # HELP unimsg_hub_online_users Users with at least one live connection on this node.\n\
         # TYPE unimsg_hub_online_users gauge\nunimsg_hub_online_users {}\n\
         # HELP unimsg_hub_slow_consumer_disconnects Connections closed because they could not keep up.\n\
         # TYPE unimsg_hub_slow_consumer_disconnects counter\nunimsg_hub_slow_consumer_disconnects {}\n\
         # HELP unimsg_hub_deliveries_total Events queued on live connections of this node.\n\
         # TYPE unimsg_hub_deliveries_total counter\nunimsg_hub_deliveries_total {}\n",
        hub.connections(),
        hub.online_user_count(),
        hub.slow_consumer_disconnects(),
        hub.deliveries()
    ));
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    operation_id = "jwks",
    tag = "auth",
    summary = "The public keys of access tokens",
    description = "A JWK set (RFC 7517) of the Ed25519 keys that verify unimsg's access tokens now; each token's header names its key in `kid`. A business system can verify tokens itself with any JOSE library (`EdDSA`). Cache it, and fetch it again when a token names a `kid` you do not have.",
    responses(
        (status = 200, description = "The keys.", body = unimsg_proto::admin::JwkSet),
    ),
)]
/// `GET /.well-known/jwks.json`
pub(crate) async fn jwks(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
) -> (
    [(axum::http::HeaderName, &'static str); 1],
    Json<unimsg_proto::admin::JwkSet>,
) {
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=60")],
        Json(state.core.jwks()),
    )
}

/// Whether the request may read `/metrics`: always without a configured
/// token, else with that token as its bearer (compared in constant time,
/// as digests, so neither its bytes nor its length leak).
fn allowed(token: &str, headers: &HeaderMap) -> bool {
    if token.is_empty() {
        return true;
    }
    let Some(presented) = crate::extract::bearer(headers) else {
        return false;
    };
    let digest = |t: &str| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes());
    aws_lc_rs::constant_time::verify_slices_are_equal(
        digest(presented).as_ref(),
        digest(token).as_ref(),
    )
    .is_ok()
}

/// The process's own series (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`, …, from
/// `metrics-process`), read from `/proc` at most once a second however
/// often `/metrics` is asked for: counting open files walks
/// `/proc/self/fd`.
fn process_metrics() {
    static COLLECTOR: LazyLock<metrics_process::Collector> = LazyLock::new(|| {
        let collector = metrics_process::Collector::default();
        collector.describe();
        collector
    });
    static LAST: Mutex<Option<tokio::time::Instant>> = Mutex::new(None);
    let now = tokio::time::Instant::now();
    {
        let mut last = LAST.lock();
        if last.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
            return;
        }
        *last = Some(now);
    }
    COLLECTOR.collect();
}
