//! `POST /v1/admin/messages` (a notification to users or a group),
//! `POST /v1/admin/broadcasts` (an announcement to every user) and
//! `GET /v1/admin/messages/{id}/status` (a notification's delivery and
//! read status).

use axum::extract::State;
use serde::Deserialize;
use unimsg_proto::admin::{
    BroadcastRequest, BroadcastResponse, MessageStatus, NotifyRequest, NotifyResponse, Scope,
};
use unimsg_proto::{ErrorBody, MessageId, UserId};
use utoipa::IntoParams;

use super::AdminAuth;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, PathId, Query, path_id};

#[utoipa::path(
    post,
    path = "/v1/admin/messages",
    operation_id = "admin_notify",
    tag = "admin",
    summary = "Send a notification to users",
    description = "Stores the notification once and appends a `notification.new` event to each recipient's inbox (conversation `s:{user}`); `to: {group}` reaches the group's members at this moment. Scope: `messages:send`.",
    request_body = NotifyRequest,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The notification's id and recipient count.", body = NotifyResponse),
        (status = 404, description = "A recipient or the group does not exist (`not_found`); the message names the unknown user ids (the first 20, and how many more), and nothing is sent.", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/messages`
pub(super) async fn notify(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Json(req): Json<NotifyRequest>,
) -> Result<axum::Json<NotifyResponse>, ApiError> {
    admin.require(Scope::MessagesSend)?;
    Ok(axum::Json(state.core.notify(req).await?))
}

#[utoipa::path(
    post,
    path = "/v1/admin/broadcasts",
    operation_id = "admin_broadcast",
    tag = "admin",
    summary = "Broadcast to every user",
    description = "Stores the announcement once; it reaches every user as `broadcast.new`, live when online and in sync. Scope: `messages:send`.",
    request_body = BroadcastRequest,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The broadcast's id and position.", body = BroadcastResponse),
    ),
)]
/// `POST /v1/admin/broadcasts`
pub(super) async fn broadcast(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Json(req): Json<BroadcastRequest>,
) -> Result<axum::Json<BroadcastResponse>, ApiError> {
    admin.require(Scope::MessagesSend)?;
    Ok(axum::Json(state.core.broadcast(req).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StatusQuery {
    /// Page after this user id (`next_after` of the previous page).
    after: Option<UserId>,
    /// Recipients per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/messages/{id}/status",
    operation_id = "admin_message_status",
    tag = "admin",
    summary = "Delivery and read status of a notification",
    description = "Counts and one page of per-recipient state, by user id. Scope: `messages:send`.",
    params(("id" = MessageId, Path, description = "The notification's message id."), StatusQuery),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The status.", body = MessageStatus),
        (status = 400, description = "Bad query parameters (`bad_request`).", body = ErrorBody),
        (status = 404, description = "No such notification (`not_found`).", body = ErrorBody),
    ),
)]
/// `GET /v1/admin/messages/{id}/status?after=&limit=`
pub(super) async fn status(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
    Query(q): Query<StatusQuery>,
) -> Result<axum::Json<MessageStatus>, ApiError> {
    admin.require(Scope::MessagesSend)?;
    let id: MessageId = path_id(&id, "message")?;
    Ok(axum::Json(
        state
            .core
            .message_status(&id, q.after, q.limit.unwrap_or(100))
            .await?,
    ))
}
