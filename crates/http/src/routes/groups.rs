//! `/v1/groups…`: groups with roles (owner, admins, members), membership,
//! mutes, profile, ownership transfer and dissolution. Group messages go
//! through `POST /v1/messages` with `{"to": {"group": id}}`.

use axum::extract::State;
use axum::http::StatusCode;
use unimsg_core::groups::GroupActor;
use unimsg_proto::groups::{
    AddMembersRequest, CreateGroupRequest, GroupDetail, GroupInfo, GroupList, GroupMember,
    GroupMuteRequest, MemberUpdate, TransferRequest, UpdateGroupRequest,
};
use unimsg_proto::{ErrorBody, GroupId, UserId};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, PathId, PathPair, UserAuth, path_id};

fn group(raw: &str) -> Result<GroupId, ApiError> {
    path_id(raw, "group")
}

#[utoipa::path(
    post,
    path = "/v1/groups",
    operation_id = "create_group",
    tag = "groups",
    summary = "Create a group",
    description = "The caller becomes the owner; `members` join as ordinary members. Every member receives `group.changed` (`created`). At most `groups.max_members` members in all.",
    request_body = CreateGroupRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The new group.", body = GroupInfo),
        (status = 403, description = "A member does not take this from the caller (a block either way; the answer does not say which), or is no friend of the caller while `groups.add_requires_friendship` is on (`forbidden`).", body = ErrorBody),
        (status = 404, description = "A member does not exist (`not_found`).", body = ErrorBody),
        (status = 409, description = "More than `groups.max_members` members (`conflict`).", body = ErrorBody),
    ),
)]
/// `POST /v1/groups`
pub(crate) async fn create(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    Json(req): Json<CreateGroupRequest>,
) -> Result<(StatusCode, axum::Json<GroupInfo>), ApiError> {
    let info = state.core.create_group(&auth, req).await?;
    Ok((StatusCode::CREATED, axum::Json(info)))
}

#[utoipa::path(
    get,
    path = "/v1/groups",
    operation_id = "list_groups",
    tag = "groups",
    summary = "The caller's groups",
    description = "Every group the caller is a member of, with the caller's role, newest first.",
    security(("bearer" = [])),
    responses((status = 200, description = "The groups.", body = GroupList)),
)]
/// `GET /v1/groups`
pub(crate) async fn list(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
) -> Result<axum::Json<GroupList>, ApiError> {
    Ok(axum::Json(state.core.my_groups(&auth).await?))
}

#[utoipa::path(
    get,
    path = "/v1/groups/{id}",
    operation_id = "get_group",
    tag = "groups",
    summary = "A group and its members",
    description = "Members see the group and its members. Others see an open group without its members (to decide whether to join), and nothing of an invitation-only group.",
    params(("id" = GroupId, Path, description = "The group id.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The group.", body = GroupDetail),
        (status = 404, description = "No such group, or an invitation-only group of others (`not_found`).", body = ErrorBody),
    ),
)]
/// `GET /v1/groups/{id}`
pub(crate) async fn get(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
) -> Result<axum::Json<GroupDetail>, ApiError> {
    let id = group(&id)?;
    Ok(axum::Json(state.core.group_detail(&auth, &id).await?))
}

#[utoipa::path(
    patch,
    path = "/v1/groups/{id}",
    operation_id = "update_group",
    tag = "groups",
    summary = "Change a group's name, notice or join policy",
    description = "Owner and admins. Members receive `group.changed` (`updated`).",
    params(("id" = GroupId, Path, description = "The group id.")),
    request_body = UpdateGroupRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The group after the change.", body = GroupInfo),
        (status = 403, description = "Not a member, or an ordinary member (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such group (`not_found`).", body = ErrorBody),
    ),
)]
/// `PATCH /v1/groups/{id}`
pub(crate) async fn update(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
    Json(req): Json<UpdateGroupRequest>,
) -> Result<axum::Json<GroupInfo>, ApiError> {
    let id = group(&id)?;
    Ok(axum::Json(state.core.update_group(&auth, &id, req).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/groups/{id}",
    operation_id = "dissolve_group",
    tag = "groups",
    summary = "Dissolve a group",
    description = "The owner ends the group. Every member receives `group.changed` (`dissolved`) and loses the conversation; the id is never reused.",
    params(("id" = GroupId, Path, description = "The group id.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Dissolved."),
        (status = 403, description = "Not the owner (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such group (`not_found`).", body = ErrorBody),
    ),
)]
/// `DELETE /v1/groups/{id}`
pub(crate) async fn dissolve(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let id = group(&id)?;
    state
        .core
        .dissolve_group(GroupActor::User(&auth.user_id), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/groups/{id}/members",
    operation_id = "add_group_members",
    tag = "groups",
    summary = "Add members",
    description = "Owner and admins; in an open group any member. Users already in are skipped. Everyone in the group, the new members included, receives `group.changed` (`members_added`); new members receive the messages sent from then on.",
    params(("id" = GroupId, Path, description = "The group id.")),
    request_body = AddMembersRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The group after the change.", body = GroupInfo),
        (status = 403, description = "Not allowed to add members, or one of them does not take this from the caller (a block either way; the answer does not say which), or is no friend of the caller while `groups.add_requires_friendship` is on (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such group or user (`not_found`).", body = ErrorBody),
        (status = 409, description = "The group would exceed `groups.max_members` (`conflict`).", body = ErrorBody),
    ),
)]
/// `POST /v1/groups/{id}/members`
pub(crate) async fn add_members(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
    Json(req): Json<AddMembersRequest>,
) -> Result<axum::Json<GroupInfo>, ApiError> {
    let id = group(&id)?;
    Ok(axum::Json(
        state
            .core
            .add_group_members(GroupActor::User(&auth.user_id), &id, req.user_ids)
            .await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/groups/{id}/members/{user_id}",
    operation_id = "remove_group_member",
    tag = "groups",
    summary = "Remove a member, or leave",
    description = "With the caller's own id: leave the group (`member_left`). Otherwise the owner removes admins and members, admins remove ordinary members (`members_removed`). The owner neither leaves nor is removed: transfer ownership or dissolve. The member concerned receives the event too, then nothing more from the group.",
    params(
        ("id" = GroupId, Path, description = "The group id."),
        ("user_id" = UserId, Path, description = "The member."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed."),
        (status = 403, description = "Not allowed to remove this member (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such group or member (`not_found`).", body = ErrorBody),
    ),
)]
/// `DELETE /v1/groups/{id}/members/{user_id}`
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathPair(id, user): PathPair,
) -> Result<StatusCode, ApiError> {
    let id = group(&id)?;
    let user: UserId = path_id(&user, "member")?;
    state
        .core
        .remove_group_member(GroupActor::User(&auth.user_id), &id, &user)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    put,
    path = "/v1/groups/{id}/members/{user_id}",
    operation_id = "update_group_member",
    tag = "groups",
    summary = "Change a member's role or mute them",
    description = "`role` (`admin` or `member`): the owner only. `muted_until`: a time mutes the member until then, `null` lifts the mute; the owner mutes admins and members, admins mute ordinary members. Members receive `group.changed` (`role_changed` or `member_muted`).",
    params(
        ("id" = GroupId, Path, description = "The group id."),
        ("user_id" = UserId, Path, description = "The member."),
    ),
    request_body = MemberUpdate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The member after the change.", body = GroupMember),
        (status = 403, description = "Not allowed (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such group or member (`not_found`).", body = ErrorBody),
    ),
)]
/// `PUT /v1/groups/{id}/members/{user_id}`
pub(crate) async fn update_member(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathPair(id, user): PathPair,
    Json(req): Json<MemberUpdate>,
) -> Result<axum::Json<GroupMember>, ApiError> {
    let id = group(&id)?;
    let user: UserId = path_id(&user, "member")?;
    Ok(axum::Json(
        state
            .core
            .update_group_member(&auth, &id, &user, req)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/groups/{id}/join",
    operation_id = "join_group",
    tag = "groups",
    summary = "Join an open group",
    description = "Only groups with `join_policy: open`; a member joining again changes nothing. Everyone in the group receives `group.changed` (`member_joined`).",
    params(("id" = GroupId, Path, description = "The group id.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The group.", body = GroupInfo),
        (status = 403, description = "The group is joined by invitation only (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such group (`not_found`).", body = ErrorBody),
        (status = 409, description = "The group is full (`conflict`).", body = ErrorBody),
    ),
)]
/// `POST /v1/groups/{id}/join`
pub(crate) async fn join(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
) -> Result<axum::Json<GroupInfo>, ApiError> {
    let id = group(&id)?;
    Ok(axum::Json(state.core.join_group(&auth, &id).await?))
}

#[utoipa::path(
    post,
    path = "/v1/groups/{id}/transfer",
    operation_id = "transfer_group",
    tag = "groups",
    summary = "Transfer ownership",
    description = "The owner makes another member the owner and becomes an ordinary member. Members receive `group.changed` (`owner_transferred`).",
    params(("id" = GroupId, Path, description = "The group id.")),
    request_body = TransferRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The group after the change.", body = GroupInfo),
        (status = 403, description = "Not the owner (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such group or member (`not_found`).", body = ErrorBody),
    ),
)]
/// `POST /v1/groups/{id}/transfer`
pub(crate) async fn transfer(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
    Json(req): Json<TransferRequest>,
) -> Result<axum::Json<GroupInfo>, ApiError> {
    let id = group(&id)?;
    Ok(axum::Json(
        state.core.transfer_group(&auth, &id, &req.user_id).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/groups/{id}/mute",
    operation_id = "mute_group",
    tag = "groups",
    summary = "Mute or unmute the whole group",
    description = "Owner and admins. While `all_muted`, ordinary members' sends are refused (403); the owner and admins still speak. Members receive `group.changed` (`group_muted`).",
    params(("id" = GroupId, Path, description = "The group id.")),
    request_body = GroupMuteRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The group after the change.", body = GroupInfo),
        (status = 403, description = "Not the owner or an admin (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such group (`not_found`).", body = ErrorBody),
    ),
)]
/// `POST /v1/groups/{id}/mute`
pub(crate) async fn mute(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
    Json(req): Json<GroupMuteRequest>,
) -> Result<axum::Json<GroupInfo>, ApiError> {
    let id = group(&id)?;
    Ok(axum::Json(
        state.core.mute_group(&auth, &id, req.all_muted).await?,
    ))
}
