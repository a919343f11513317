//! `GET /v1/admin/presence`: the live presence of up to 1000 users;
//! `GET /v1/admin/nodes`: the nodes that serve them.

use axum::extract::State;
use serde::Deserialize;
use unimsg_proto::ErrorBody;
use unimsg_proto::admin::{NodeList, PresenceResponse, Scope};
use utoipa::IntoParams;

use super::{AdminAuth, user_ids};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::Query;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct PresenceQuery {
    /// Comma-separated user ids, 1 to 1000.
    #[param(example = "alice,bob")]
    user_ids: String,
}

#[utoipa::path(
    get,
    path = "/v1/admin/presence",
    operation_id = "admin_presence",
    tag = "admin",
    summary = "Live presence of users",
    description = "For each user: online or not, and the platforms with a live WebSocket or SSE connection (on this node). Scope: `users:read`.",
    params(PresenceQuery),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "One entry per requested user.", body = PresenceResponse),
        (status = 400, description = "Missing, malformed or more than 1000 user ids (`bad_request`).", body = ErrorBody),
    ),
)]
/// `GET /v1/admin/presence?user_ids=a,b,c` (at most 1000 ids)
pub(super) async fn presence(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Query(q): Query<PresenceQuery>,
) -> Result<axum::Json<PresenceResponse>, ApiError> {
    admin.require(Scope::UsersRead)?;
    let ids = user_ids(&q.user_ids)?;
    Ok(axum::Json(state.core.presence(ids).await?))
}

#[utoipa::path(
    get,
    path = "/v1/admin/nodes",
    operation_id = "admin_nodes",
    tag = "admin",
    summary = "The nodes and their live counts",
    description = "Every node's latest report (each node reports every 5 s; one that stopped is listed for a minute with its last report): live connections and users, connections by transport and platform, totals since its start by `/metrics` series name, and whether its store answered. A single node lists itself. Any admin.",
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The nodes, by node id.", body = NodeList),
        (status = 503, description = "The cluster's Redis cannot be reached (`unavailable`).", body = ErrorBody),
    ),
)]
/// `GET /v1/admin/nodes`
pub(super) async fn nodes(
    State(state): State<AppState>,
    AdminAuth(_admin): AdminAuth,
) -> Result<axum::Json<NodeList>, ApiError> {
    Ok(axum::Json(state.core.nodes().await?))
}
