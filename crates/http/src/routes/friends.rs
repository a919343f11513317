//! `/v1/friends…` and `/v1/blocks…`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use unimsg_core::RequestDirection;
use unimsg_proto::friends::{
    BlockList, Friend, FriendList, FriendRequestBody, FriendRequestList, FriendRequestOutcome,
    FriendUpdate,
};
use unimsg_proto::{ErrorBody, UserId};
use utoipa::IntoParams;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, PathId, Query, UserAuth, path_id};

#[utoipa::path(
    post,
    path = "/v1/friends/requests",
    operation_id = "friend_request",
    tag = "friends",
    summary = "Send a friend request",
    description = "Both sides get `friend.request`. If the other user had already asked, the two become friends at once (`friend.changed`, state `friends`). A user who blocked the caller refuses with 403 without saying so.",
    request_body = FriendRequestBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`pending` or `friends`.", body = FriendRequestOutcome),
        (status = 403, description = "Refused (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such user (`not_found`).", body = ErrorBody),
    ),
)]
/// `POST /v1/friends/requests`
pub(crate) async fn request(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    Json(req): Json<FriendRequestBody>,
) -> Result<axum::Json<FriendRequestOutcome>, ApiError> {
    Ok(axum::Json(
        state
            .core
            .request_friend(&auth, &req.to, req.message)
            .await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RequestsQuery {
    /// `incoming` (default) or `outgoing`.
    direction: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/friends/requests",
    operation_id = "friend_requests",
    tag = "friends",
    summary = "Pending friend requests",
    params(RequestsQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "Pending requests, oldest first.", body = FriendRequestList)),
)]
/// `GET /v1/friends/requests?direction=incoming|outgoing`
pub(crate) async fn requests(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    Query(q): Query<RequestsQuery>,
) -> Result<axum::Json<FriendRequestList>, ApiError> {
    let direction = match q.direction.as_deref() {
        None | Some("incoming") => RequestDirection::Incoming,
        Some("outgoing") => RequestDirection::Outgoing,
        Some(_) => {
            return Err(ApiError::bad_request(
                "direction must be incoming or outgoing",
            ));
        }
    };
    Ok(axum::Json(
        state.core.friend_requests(&auth, direction).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/friends/requests/{user_id}/accept",
    operation_id = "friend_accept",
    tag = "friends",
    summary = "Accept a friend request",
    description = "Both sides get `friend.changed` with state `friends`.",
    params(("user_id" = String, Path, description = "Who asked.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Friends now."),
        (status = 404, description = "No pending request from this user (`not_found`).", body = ErrorBody),
    ),
)]
/// `POST /v1/friends/requests/{user_id}/accept`
pub(crate) async fn accept(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let from: UserId = path_id(&id, "friend request")?;
    state.core.accept_friend_request(&auth, &from).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/friends/requests/{user_id}/decline",
    operation_id = "friend_decline",
    tag = "friends",
    summary = "Decline a friend request",
    description = "Both sides get `friend.changed` with state `declined`.",
    params(("user_id" = String, Path, description = "Who asked.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Declined."),
        (status = 404, description = "No pending request from this user (`not_found`).", body = ErrorBody),
    ),
)]
/// `POST /v1/friends/requests/{user_id}/decline`
pub(crate) async fn decline(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let from: UserId = path_id(&id, "friend request")?;
    state.core.decline_friend_request(&auth, &from).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/friends",
    operation_id = "friends",
    tag = "friends",
    summary = "My friends",
    security(("bearer" = [])),
    responses((status = 200, description = "Friends with my tags and remarks for them.", body = FriendList)),
)]
/// `GET /v1/friends`
pub(crate) async fn list(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
) -> Result<axum::Json<FriendList>, ApiError> {
    Ok(axum::Json(state.core.friends(&auth).await?))
}

#[utoipa::path(
    put,
    path = "/v1/friends/{user_id}",
    operation_id = "friend_update",
    tag = "friends",
    summary = "Tag a friend",
    description = "Sets this side's relationship tags and private remark. Only the caller's devices get `friend.changed`.",
    params(("user_id" = String, Path, description = "The friend.")),
    request_body = FriendUpdate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The friend.", body = Friend),
        (status = 404, description = "Not a friend (`not_found`).", body = ErrorBody),
    ),
)]
/// `PUT /v1/friends/{user_id}`
pub(crate) async fn update(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
    Json(req): Json<FriendUpdate>,
) -> Result<axum::Json<Friend>, ApiError> {
    let friend: UserId = path_id(&id, "friend")?;
    Ok(axum::Json(
        state
            .core
            .update_friend(&auth, &friend, req.tags, req.remark)
            .await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/friends/{user_id}",
    operation_id = "friend_remove",
    tag = "friends",
    summary = "Remove a friend",
    description = "Ends the friendship on both sides; both get `friend.changed` with state `removed`.",
    params(("user_id" = String, Path, description = "The friend.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, description = "Not a friend (`not_found`).", body = ErrorBody),
    ),
)]
/// `DELETE /v1/friends/{user_id}`
pub(crate) async fn remove(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let friend: UserId = path_id(&id, "friend")?;
    state.core.remove_friend(&auth, &friend).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/blocks",
    operation_id = "blocks",
    tag = "friends",
    summary = "Users I blocked",
    security(("bearer" = [])),
    responses((status = 200, description = "Blocked users.", body = BlockList)),
)]
/// `GET /v1/blocks`
pub(crate) async fn blocks(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
) -> Result<axum::Json<BlockList>, ApiError> {
    Ok(axum::Json(state.core.blocks(&auth).await?))
}

#[utoipa::path(
    post,
    path = "/v1/blocks/{user_id}",
    operation_id = "block",
    tag = "friends",
    summary = "Block a user",
    description = "The blocked user's direct messages and friend requests to the caller are refused (403, without saying why). Only the caller's devices get `block.changed`.",
    params(("user_id" = String, Path, description = "The user to block.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Blocked (or already)."),
        (status = 404, description = "No such user (`not_found`).", body = ErrorBody),
    ),
)]
/// `POST /v1/blocks/{user_id}`
pub(crate) async fn block(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let other: UserId = path_id(&id, "user")?;
    state.core.block(&auth, &other).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/v1/blocks/{user_id}",
    operation_id = "unblock",
    tag = "friends",
    summary = "Unblock a user",
    params(("user_id" = String, Path, description = "The user to unblock.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Unblocked (or was not blocked)."),
        (status = 404, description = "No such user (`not_found`).", body = ErrorBody),
    ),
)]
/// `DELETE /v1/blocks/{user_id}`
pub(crate) async fn unblock(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let other: UserId = path_id(&id, "user")?;
    state.core.unblock(&auth, &other).await?;
    Ok(StatusCode::NO_CONTENT)
}
