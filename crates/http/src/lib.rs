//! The HTTP face of unimsg: every route of the v1 wire contract, the
//! WebSocket and SSE transports, and the one error format.
//!
//! Only this crate parses requests. Handlers are thin: extract, call the
//! core, render. [`router`] builds the whole application from an
//! [`AppState`], so the binary and the tests serve exactly the same thing.
//! Routes are registered through `utoipa_axum`, so every served route is
//! also described in the OpenAPI document ([`openapi`], `/openapi.json`).

mod access;
mod admin;
mod console;
mod cors;
mod error;
mod extract;
mod guard;
mod live;
mod openapi;
mod qr;
mod routes;
mod sse;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use unimsg_core::Core;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, plain_words};
pub use live::live_counts;

/// Marks a request that arrived over this server's own TLS listener; the
/// accept loop inserts it. See `admin.require_tls`.
#[derive(Debug, Clone, Copy)]
pub struct ArrivedOverTls;

/// `[http]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body, in bytes. A request that declares a longer
    /// `Content-Length` gets 413 before its body is read.
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers, in seconds, from the
    /// connection's start or the end of the previous response (an idle
    /// keep-alive connection is closed after it too).
    pub header_read_timeout_secs: u64,
    /// Time a client has to send a request's whole body after its
    /// headers, in seconds; later is 408. Handlers, WebSocket and SSE
    /// streams are not limited by it.
    pub request_timeout_secs: u64,
    /// Most open connections (HTTP, WebSocket and SSE together); one more
    /// is closed at once. 0: the process's open-file limit less a reserve
    /// for the store, logs and the cluster (see `server::limits`).
    pub max_connections: usize,
    /// Most open connections from one IP address; 0: no cap. Peers in
    /// `admin.trusted_proxies` are exempt (behind a proxy every client
    /// shares its address).
    pub max_connections_per_ip: usize,
    /// Origins of browser apps that may call the user API
    /// (`scheme://host[:port]`, or `*` for any); empty: none but the
    /// server's own. Preflight requests are answered for these only.
    pub cors_origins: Vec<String>,
    /// Origins whose pages may open WebSockets besides the server's own;
    /// empty: those of `cors_origins`.
    pub ws_allowed_origins: Vec<String>,
    /// One `info` line per request (target `unimsg::http`: method, route,
    /// status, duration, request id; never the path's values or the
    /// query).
    pub log_requests: bool,
}

impl HttpConfig {
    /// Why this section cannot be used, in words naming the key.
    pub fn check(&self) -> Result<(), String> {
        cors::check_origins("http.cors_origins", &self.cors_origins)?;
        cors::check_origins("http.ws_allowed_origins", &self.ws_allowed_origins)
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            max_connections: 0,
            max_connections_per_ip: 1000,
            cors_origins: Vec::new(),
            ws_allowed_origins: Vec::new(),
            log_requests: true,
        }
    }
}

/// `[metrics]`
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// When set, `GET /metrics` needs `Authorization: Bearer TOKEN`;
    /// empty: anyone who can reach the server may read it.
    pub token: String,
    /// A listener of its own for `GET /metrics` (`HOST:PORT`, plain
    /// HTTP, e.g. `127.0.0.1:9090` for a scraper on this machine or a
    /// private network); the main listener then answers 404 there. Empty:
    /// on the main listener.
    pub listen: String,
}

impl std::fmt::Debug for MetricsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsConfig")
            .field(
                "token",
                &if self.token.is_empty() {
                    ""
                } else {
                    "[redacted]"
                },
            )
            .field("listen", &self.listen)
            .finish()
    }
}

/// Marks a request that arrived over the metrics listener of its own
/// (`metrics.listen`); [`metrics_router`] inserts it.
#[derive(Debug, Clone, Copy)]
pub struct OnMetricsListener;

/// The application of the `metrics.listen` listener: `GET /metrics` and
/// nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(routes::health::metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::Extension(OnMetricsListener))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
        .with_state(state)
}

/// What every handler can reach, behind one `Arc`: axum clones the state
/// for each extractor and middleware of every request, and a clone is
/// then one counter increment rather than a copy of the configuration.
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

/// The parts of an [`AppState`].
pub struct SharedState {
    pub core: Arc<Core>,
    pub http: HttpConfig,
    /// Renders `/metrics`; `None` when another recorder owns the process.
    pub metrics: Option<PrometheusHandle>,
    pub metrics_config: MetricsConfig,
}

impl AppState {
    pub fn new(shared: SharedState) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

impl AppState {
    fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.core.config().delivery.heartbeat_secs.max(1))
    }
}

/// The user-facing routes, health and the document itself.
fn user_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(routes::health::healthz))
        .routes(routes!(routes::health::readyz))
        .routes(routes!(routes::health::metrics))
        .routes(routes!(routes::health::jwks))
        .routes(routes!(openapi::document))
        .routes(routes!(openapi::docs))
        .routes(routes!(routes::auth::register))
        .routes(routes!(routes::auth::login))
        .routes(routes!(routes::auth::refresh))
        .routes(routes!(routes::auth::logout))
        .routes(routes!(routes::auth::me))
        .routes(routes!(routes::auth::lookup_user))
        .routes(routes!(routes::auth::sessions))
        .routes(routes!(routes::auth::end_session))
        .routes(routes!(routes::messages::send))
        .routes(routes!(routes::messages::recall))
        .routes(routes!(routes::messages::sync))
        .routes(routes!(routes::messages::ack))
        .routes(routes!(routes::messages::conversations))
        .routes(routes!(routes::messages::history))
        .routes(routes!(routes::messages::read))
        .routes(routes!(routes::messages::reads))
        .routes(routes!(sse::events))
        .routes(routes!(ws::upgrade))
        .merge(qr::routes())
        .routes(routes!(routes::friends::request, routes::friends::requests))
        .routes(routes!(routes::friends::accept))
        .routes(routes!(routes::friends::decline))
        .routes(routes!(routes::friends::list))
        .routes(routes!(routes::friends::update, routes::friends::remove))
        .routes(routes!(routes::friends::blocks))
        .routes(routes!(routes::friends::block, routes::friends::unblock))
        .routes(routes!(routes::groups::create, routes::groups::list))
        .routes(routes!(
            routes::groups::get,
            routes::groups::update,
            routes::groups::dissolve
        ))
        .routes(routes!(routes::groups::add_members))
        .routes(routes!(
            routes::groups::remove_member,
            routes::groups::update_member
        ))
        .routes(routes!(routes::groups::join))
        .routes(routes!(routes::groups::transfer))
        .routes(routes!(routes::groups::mute))
}

/// The user routes, the admin routes (not yet behind their gate) and the
/// OpenAPI document describing both.
fn documented() -> (Router<AppState>, Router<AppState>, utoipa::openapi::OpenApi) {
    let (user, mut doc) = user_routes().split_for_parts();
    let (admin, admin_doc) = admin::routes().split_for_parts();
    doc.merge(admin_doc);
    openapi::CommonErrors.modify(&mut doc);
    (user, admin, doc)
}

/// The OpenAPI 3.1 document of every route, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().2
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let body_limit = state.http.max_body_bytes;
    let (user, admin, doc) = documented();
    openapi::publish(&doc);
    let app = user
        .route("/docs/", get(openapi::docs_asset))
        .route("/docs/{*file}", get(openapi::docs_asset))
        .merge(admin.route_layer(middleware::from_fn_with_state(state.clone(), admin::gate)))
        .merge(console::routes())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(middleware::from_fn_with_state(state.clone(), access::log))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ));
    // Other origins may call the user API only (`cors::layer`).
    let app = match cors::layer(&state.http) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    app.with_state(state)
}
