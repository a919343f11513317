//! `GET /v1/admin/relationships` (friends and blocks of many users) and
//! `PUT /v1/admin/relationships` (many friend / block changes at once).

use axum::extract::State;
use serde::Deserialize;
use unimsg_proto::admin::Scope;
use unimsg_proto::friends::{
    RelationshipsResponse, RelationshipsUpdate, RelationshipsUpdateResponse,
};
use utoipa::IntoParams;

use super::{AdminAuth, user_ids};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, Query};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RelationshipsQuery {
    /// Comma-separated user ids (at most 1000).
    user_ids: String,
}

#[utoipa::path(
    get,
    path = "/v1/admin/relationships",
    operation_id = "admin_relationships",
    tag = "admin",
    summary = "Relationships of many users",
    description = "Friends and blocks of up to 1000 users in one call. Scope `users:read`.",
    params(RelationshipsQuery),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses((status = 200, description = "Per user, in request order.", body = RelationshipsResponse)),
)]
/// `GET /v1/admin/relationships?user_ids=a,b,c`
pub(super) async fn relationships(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Query(q): Query<RelationshipsQuery>,
) -> Result<axum::Json<RelationshipsResponse>, ApiError> {
    admin.require(Scope::UsersRead)?;
    let ids = user_ids(&q.user_ids)?;
    Ok(axum::Json(state.core.relationships(ids).await?))
}

#[utoipa::path(
    put,
    path = "/v1/admin/relationships",
    operation_id = "admin_update_relationships",
    tag = "admin",
    summary = "Change many relationships",
    description = "Each op (`friend`, `unfriend`, `block`, `unblock` between `user_id` and `other_id`) succeeds or fails alone; the users get the same inbox events as when they act themselves. At most 1000 ops. Scope `users:write`.",
    request_body = RelationshipsUpdate,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses((status = 200, description = "The outcome of each op, in order.", body = RelationshipsUpdateResponse)),
)]
/// `PUT /v1/admin/relationships`
pub(super) async fn update_relationships(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Json(req): Json<RelationshipsUpdate>,
) -> Result<axum::Json<RelationshipsUpdateResponse>, ApiError> {
    admin.require(Scope::UsersWrite)?;
    if req.ops.len() > 1000 {
        return Err(ApiError::bad_request("at most 1000 ops per request"));
    }
    Ok(axum::Json(state.core.update_relationships(req.ops).await?))
}
