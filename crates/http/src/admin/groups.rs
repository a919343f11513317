//! `/v1/admin/groups…`: create a group (`POST /v1/admin/groups`), get or
//! dissolve one (`GET|DELETE /v1/admin/groups/{id}`), add members
//! (`POST /v1/admin/groups/{id}/members`) and remove one
//! (`DELETE /v1/admin/groups/{id}/members/{user_id}`).

use axum::extract::State;
use axum::http::StatusCode;
use unimsg_core::groups::GroupActor;
use unimsg_proto::admin::Scope;
use unimsg_proto::groups::{AddMembersRequest, AdminCreateGroupRequest, GroupDetail, GroupInfo};
use unimsg_proto::{ErrorBody, GroupId, UserId};

use super::AdminAuth;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, PathId, PathPair, path_id};

#[utoipa::path(
    post,
    path = "/v1/admin/groups",
    operation_id = "admin_create_group",
    tag = "admin",
    summary = "Create a group",
    description = "A group with its owner and members, optionally under the business system's own `group_id`. Every member receives `group.changed` (`created`, with `admin` set). Scope: `users:write`.",
    request_body = AdminCreateGroupRequest,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 201, description = "The group and its members.", body = GroupDetail),
        (status = 404, description = "The owner or a member does not exist (`not_found`).", body = ErrorBody),
        (status = 409, description = "The group id was taken, more than `groups.max_members` members, or `X-Nonce` was reused (`conflict`).", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/groups`
pub(super) async fn create_group(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Json(req): Json<AdminCreateGroupRequest>,
) -> Result<(StatusCode, axum::Json<GroupDetail>), ApiError> {
    admin.require(Scope::UsersWrite)?;
    let detail = state.core.admin_create_group(&admin.admin_id, req).await?;
    Ok((StatusCode::CREATED, axum::Json(detail)))
}

#[utoipa::path(
    get,
    path = "/v1/admin/groups/{id}",
    operation_id = "admin_get_group",
    tag = "admin",
    summary = "Get a group with its members",
    description = "Scope: `users:read`.",
    params(("id" = GroupId, Path, description = "The group id.")),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The group and its members.", body = GroupDetail),
        (status = 404, description = "No such group (`not_found`).", body = ErrorBody),
    ),
)]
/// `GET /v1/admin/groups/{id}`
pub(super) async fn get_group(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
) -> Result<axum::Json<GroupDetail>, ApiError> {
    admin.require(Scope::UsersRead)?;
    let id: GroupId = path_id(&id, "group")?;
    Ok(axum::Json(state.core.admin_group(&id).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/groups/{id}",
    operation_id = "admin_dissolve_group",
    tag = "admin",
    summary = "Dissolve a group",
    description = "Every member receives `group.changed` (`dissolved`) and loses the conversation. Scope: `users:write`.",
    params(("id" = GroupId, Path, description = "The group id.")),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 204, description = "Dissolved."),
        (status = 404, description = "No such group (`not_found`).", body = ErrorBody),
    ),
)]
/// `DELETE /v1/admin/groups/{id}`
pub(super) async fn dissolve_group(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    admin.require(Scope::UsersWrite)?;
    let id: GroupId = path_id(&id, "group")?;
    state
        .core
        .dissolve_group(GroupActor::Admin(&admin.admin_id), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/admin/groups/{id}/members",
    operation_id = "admin_add_group_members",
    tag = "admin",
    summary = "Add members to a group",
    description = "Users already in are skipped; everyone in the group receives `group.changed` (`members_added`). Scope: `users:write`.",
    params(("id" = GroupId, Path, description = "The group id.")),
    request_body = AddMembersRequest,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The group after the change.", body = GroupInfo),
        (status = 404, description = "No such group or user (`not_found`).", body = ErrorBody),
        (status = 409, description = "The group would exceed `groups.max_members`, or `X-Nonce` was reused (`conflict`).", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/groups/{id}/members`
pub(super) async fn add_group_members(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
    Json(req): Json<AddMembersRequest>,
) -> Result<axum::Json<GroupInfo>, ApiError> {
    admin.require(Scope::UsersWrite)?;
    let id: GroupId = path_id(&id, "group")?;
    Ok(axum::Json(
        state
            .core
            .add_group_members(GroupActor::Admin(&admin.admin_id), &id, req.user_ids)
            .await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/groups/{id}/members/{user_id}",
    operation_id = "admin_remove_group_member",
    tag = "admin",
    summary = "Remove a member from a group",
    description = "The member and everyone in the group receive `group.changed` (`members_removed`). The owner is not removed (403): ownership is transferred first. Scope: `users:write`.",
    params(
        ("id" = GroupId, Path, description = "The group id."),
        ("user_id" = UserId, Path, description = "The member."),
    ),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, description = "No such group or member (`not_found`).", body = ErrorBody),
    ),
)]
/// `DELETE /v1/admin/groups/{id}/members/{user_id}`
pub(super) async fn remove_group_member(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathPair(id, user): PathPair,
) -> Result<StatusCode, ApiError> {
    admin.require(Scope::UsersWrite)?;
    let id: GroupId = path_id(&id, "group")?;
    let user: UserId = path_id(&user, "member")?;
    state
        .core
        .remove_group_member(GroupActor::Admin(&admin.admin_id), &id, &user)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
