//! The HTTP face of unimsg: every route of the v1 wire contract, the
//! WebSocket and SSE transports, and the one error format.
//!
//! Only this crate parses requests. Handlers are thin: extract, call the
//! core, render. [`router`] builds the whole application from an
//! [`AppState`], so the binary and the tests serve exactly the same thing.

mod admin;
mod error;
mod extract;
mod routes;
mod sse;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use unimsg_core::Core;

pub use error::ApiError;

/// `[http]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Core>,
    pub http: HttpConfig,
    /// Renders `/metrics`; `None` when another recorder owns the process.
    pub metrics: Option<PrometheusHandle>,
}

impl AppState {
    fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.core.config().delivery.heartbeat_secs.max(1))
    }
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let body_limit = state.http.max_body_bytes;
    Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .route("/v1/auth/register", post(routes::auth::register))
        .route("/v1/auth/login", post(routes::auth::login))
        .route("/v1/auth/refresh", post(routes::auth::refresh))
        .route("/v1/auth/logout", post(routes::auth::logout))
        .route("/v1/me", get(routes::auth::me))
        .route("/v1/me/sessions", get(routes::auth::sessions))
        .route("/v1/me/sessions/{id}", delete(routes::auth::end_session))
        .route("/v1/messages", post(routes::messages::send))
        .route("/v1/messages/{id}/recall", post(routes::messages::recall))
        .route("/v1/sync", get(routes::messages::sync))
        .route("/v1/ack", post(routes::messages::ack))
        .route("/v1/conversations", get(routes::messages::conversations))
        .route(
            "/v1/conversations/{id}/messages",
            get(routes::messages::history),
        )
        .route("/v1/conversations/{id}/read", post(routes::messages::read))
        .route("/v1/events", get(sse::events))
        .route("/v1/ws", get(ws::upgrade))
        .merge(admin::routes(state.clone()))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
        .with_state(state)
}
