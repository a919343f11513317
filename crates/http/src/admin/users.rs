//! `/v1/admin/users…`: the batch import (`POST /v1/admin/users`), the
//! search (`GET /v1/admin/users?query=`), one user
//! (`GET|PATCH|DELETE /v1/admin/users/{id}`), minting tokens for a user
//! (`POST /v1/admin/users/{id}/tokens`) and a forced logout
//! (`POST /v1/admin/users/{id}/logout`).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use unimsg_core::admin::ImportItem;
use unimsg_proto::admin::{
    AdminUser, ForceLogoutRequest, ForceLogoutResponse, ImportRequest, ImportResponse, ImportUser,
    MintRequest, Scope, UserPage, UserPatch,
};
use unimsg_proto::api::{SessionList, TokenPair};
use unimsg_proto::{ErrorBody, UserId};
use utoipa::IntoParams;

use super::AdminAuth;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, PathId, Query, path_id};

#[utoipa::path(
    post,
    path = "/v1/admin/users",
    operation_id = "admin_import_users",
    tag = "admin",
    summary = "Import users in a batch",
    description = "Creates up to 10,000 users; each item is parsed and created on its own and has a result in request order. Scope: `users:write`.",
    request_body = ImportRequest,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "A result per item.", body = ImportResponse),
        (status = 400, description = "Not an object with `users`, or more than 10,000 users (`bad_request`).", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/users`
pub(super) async fn import_users(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Json(req): Json<ImportRequest>,
) -> Result<axum::Json<ImportResponse>, ApiError> {
    admin.require(Scope::UsersWrite)?;
    if req.users.len() > 10_000 {
        return Err(ApiError::bad_request(
            "import at most 10000 users per request",
        ));
    }
    let items = req.users.into_iter().map(import_item).collect();
    Ok(axum::Json(state.core.import_users(items).await?))
}

/// Parses one item of an import on its own.
fn import_item(raw: serde_json::Value) -> ImportItem {
    let user_id = raw
        .get("user_id")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    match serde_json::from_value::<ImportUser>(raw) {
        Ok(user) => ImportItem::User(user),
        Err(e) => ImportItem::Malformed {
            user_id,
            reason: crate::error::plain_words(&e.to_string()),
        },
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct SearchParams {
    /// A part of the user id, username or display name (ASCII letters
    /// without case); empty or absent: every user. At most 100 characters.
    #[serde(default)]
    query: String,
    /// Users per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// Users after this user id (`next_after` of the previous page).
    #[param(value_type = Option<String>)]
    after: Option<UserId>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/users",
    operation_id = "admin_search_users",
    tag = "admin",
    summary = "Search users",
    description = "Users whose id, username or display name contains `query`, ordered by user id, one page at a time. Scope: `users:read`.",
    params(SearchParams),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "One page of users.", body = UserPage),
        (status = 400, description = "Bad query parameters (`bad_request`).", body = ErrorBody),
    ),
)]
/// `GET /v1/admin/users?query=&limit=&after=`
pub(super) async fn search_users(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Query(q): Query<SearchParams>,
) -> Result<axum::Json<UserPage>, ApiError> {
    admin.require(Scope::UsersRead)?;
    let page = state
        .core
        .search_users(&q.query, q.after.as_ref(), q.limit)
        .await?;
    Ok(axum::Json(page))
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{id}/sessions",
    operation_id = "admin_user_sessions",
    tag = "admin",
    summary = "A user's sessions",
    description = "The user's sessions that are not revoked, oldest first (platform, device, since when). Scope: `users:read`.",
    params(("id" = UserId, Path, description = "The user id.")),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The sessions.", body = SessionList),
        (status = 404, description = "No such user (`not_found`).", body = ErrorBody),
    ),
)]
/// `GET /v1/admin/users/{id}/sessions`
pub(super) async fn sessions(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
) -> Result<axum::Json<SessionList>, ApiError> {
    admin.require(Scope::UsersRead)?;
    let id: UserId = path_id(&id, "user")?;
    Ok(axum::Json(SessionList {
        sessions: state.core.user_sessions(&id).await?,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{id}",
    operation_id = "admin_get_user",
    tag = "admin",
    summary = "Get a user",
    description = "Scope: `users:read`.",
    params(("id" = UserId, Path, description = "The user id.")),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The user.", body = AdminUser),
        (status = 404, description = "No such user (`not_found`).", body = ErrorBody),
    ),
)]
/// `GET /v1/admin/users/{id}`
pub(super) async fn get_user(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
) -> Result<axum::Json<AdminUser>, ApiError> {
    admin.require(Scope::UsersRead)?;
    let id: UserId = path_id(&id, "user")?;
    Ok(axum::Json(state.core.admin_user(&id).await?))
}

#[utoipa::path(
    patch,
    path = "/v1/admin/users/{id}",
    operation_id = "admin_update_user",
    tag = "admin",
    summary = "Update a user",
    description = "Changes the display name, the password or the status; disabling revokes every session at once. Scope: `users:write`.",
    params(("id" = UserId, Path, description = "The user id.")),
    request_body = UserPatch,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The updated user.", body = AdminUser),
        (status = 404, description = "No such user (`not_found`).", body = ErrorBody),
    ),
)]
/// `PATCH /v1/admin/users/{id}`
pub(super) async fn patch_user(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
    Json(patch): Json<UserPatch>,
) -> Result<axum::Json<AdminUser>, ApiError> {
    admin.require(Scope::UsersWrite)?;
    let id: UserId = path_id(&id, "user")?;
    Ok(axum::Json(state.core.update_user(&id, patch).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/users/{id}",
    operation_id = "admin_delete_user",
    tag = "admin",
    summary = "Delete a user",
    description = "Deletes the user and revokes every session. Scope: `users:write`.",
    params(("id" = UserId, Path, description = "The user id.")),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such user (`not_found`).", body = ErrorBody),
    ),
)]
/// `DELETE /v1/admin/users/{id}`
pub(super) async fn delete_user(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    admin.require(Scope::UsersWrite)?;
    let id: UserId = path_id(&id, "user")?;
    state.core.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/tokens",
    operation_id = "admin_mint_tokens",
    tag = "admin",
    summary = "Mint tokens for a user",
    description = "Opens a session for the user on the given platform (the device policy applies) and returns its tokens. Scope: `tokens:mint`.",
    params(("id" = UserId, Path, description = "The user id.")),
    request_body = MintRequest,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The new session's tokens.", body = TokenPair),
        (status = 403, description = "The user is disabled, the address is not allowed or the scope is missing (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such user (`not_found`).", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/users/{id}/tokens`
pub(super) async fn mint(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
    Json(req): Json<MintRequest>,
) -> Result<axum::Json<TokenPair>, ApiError> {
    admin.require(Scope::TokensMint)?;
    let id: UserId = path_id(&id, "user")?;
    Ok(axum::Json(
        state
            .core
            .mint_tokens(&id, req.platform, req.device_id, req.ttl_secs)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/logout",
    operation_id = "admin_force_logout",
    tag = "admin",
    summary = "Force a user's logout",
    description = "Revokes the user's sessions (of one platform, or all); their live connections receive `session.revoked` and close. The body is optional. Scope: `users:write`.",
    params(("id" = UserId, Path, description = "The user id.")),
    request_body(content = ForceLogoutRequest, description = "Optional: an empty body means every platform.", content_type = "application/json"),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "How many sessions were revoked.", body = ForceLogoutResponse),
        (status = 404, description = "No such user (`not_found`).", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/users/{id}/logout`
pub(super) async fn logout(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
    body: bytes::Bytes,
) -> Result<axum::Json<ForceLogoutResponse>, ApiError> {
    admin.require(Scope::UsersWrite)?;
    let id: UserId = path_id(&id, "user")?;
    // The body is optional: empty means every platform.
    let req: ForceLogoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ForceLogoutRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "invalid JSON body: {}",
                crate::error::plain_words(&e.to_string())
            ))
        })?
    };
    let platform = req.platform;
    Ok(axum::Json(state.core.force_logout(&id, platform).await?))
}
