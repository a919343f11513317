//! `GET /v1/admin/admins`, `GET|PATCH|DELETE /v1/admin/admins/{id}` and
//! the API keys under `/v1/admin/admins/{id}/keys`.

use axum::extract::State;
use axum::http::StatusCode;
use unimsg_proto::ErrorBody;
use unimsg_proto::admin::{
    AdminInfo, AdminKeyCreated, AdminKeyList, AdminList, AdminPatch, NewAdminKey, Scope,
};

use super::AdminAuth;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, PathId, PathPair};

#[utoipa::path(
    get,
    path = "/v1/admin/admins",
    operation_id = "admin_list_admins",
    tag = "admin",
    summary = "List the admin accounts",
    description = "Every admin account with its scopes and whether it is disabled; never a secret. Scope: `admin`.",
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The accounts, by id.", body = AdminList),
        (status = 403, description = "The credential lacks the `admin` scope (`forbidden`).", body = ErrorBody),
    ),
)]
pub(super) async fn list_admins(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
) -> Result<axum::Json<AdminList>, ApiError> {
    admin.require(Scope::Admin)?;
    Ok(axum::Json(state.core.list_admins().await?))
}

#[utoipa::path(
    get,
    path = "/v1/admin/admins/{id}",
    operation_id = "admin_get_admin",
    tag = "admin",
    summary = "One admin account",
    description = "Scope: `admin`, or the account itself.",
    params(("id" = String, Path, description = "The admin id.")),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The account.", body = AdminInfo),
        (status = 404, description = "No such admin (`not_found`).", body = ErrorBody),
    ),
)]
pub(super) async fn get_admin(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
) -> Result<axum::Json<AdminInfo>, ApiError> {
    if admin.admin_id != id {
        admin.require(Scope::Admin)?;
    }
    let list = state.core.list_admins().await?;
    list.admins
        .into_iter()
        .find(|a| a.admin_id == id)
        .map(axum::Json)
        .ok_or_else(|| ApiError::new(unimsg_proto::ErrorCode::NotFound, "admin not found"))
}

#[utoipa::path(
    patch,
    path = "/v1/admin/admins/{id}",
    operation_id = "admin_update_admin",
    tag = "admin",
    summary = "Change an admin account",
    description = "A new secret, scopes, or disabling. Any change refuses the account's earlier admin tokens on the next call, on every node, and a changed secret its old one at once. An admin may change its own secret with any scope; everything else needs `admin`. The last enabled account with the `admin` scope cannot lose it (409).",
    params(("id" = String, Path, description = "The admin id.")),
    request_body = AdminPatch,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The account after the change.", body = AdminInfo),
        (status = 400, description = "Nothing to change, no scope, or a secret that is too short or too easy to guess (`bad_request`).", body = ErrorBody),
        (status = 403, description = "Not the account itself, and no `admin` scope (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such admin (`not_found`).", body = ErrorBody),
        (status = 409, description = "It is the last enabled account with the `admin` scope (`conflict`).", body = ErrorBody),
    ),
)]
pub(super) async fn update_admin(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
    Json(patch): Json<AdminPatch>,
) -> Result<axum::Json<AdminInfo>, ApiError> {
    Ok(axum::Json(
        state.core.update_admin(&admin, &id, patch).await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/admins/{id}",
    operation_id = "admin_delete_admin",
    tag = "admin",
    summary = "Delete an admin account",
    description = "Its secret, keys and tokens are refused from the next call on, on every node. Scope: `admin`.",
    params(("id" = String, Path, description = "The admin id.")),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such admin (`not_found`).", body = ErrorBody),
        (status = 409, description = "It is the last enabled account with the `admin` scope (`conflict`).", body = ErrorBody),
    ),
)]
pub(super) async fn delete_admin(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    state.core.delete_admin(&admin, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/admin/admins/{id}/keys",
    operation_id = "admin_create_key",
    tag = "admin",
    summary = "Make an API key",
    description = "A key for a machine, shown in this answer only: send it as `Authorization: Bearer <key>`. An admin may hold several at once, so rotating one has an overlap. It is refused once expired or revoked, or when its admin is disabled or deleted. Scope: `admin`, or the account itself; a key's scopes are at most its admin's.",
    params(("id" = String, Path, description = "The admin id.")),
    request_body = NewAdminKey,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 201, description = "The key.", body = AdminKeyCreated),
        (status = 400, description = "A lifetime outside 60 s to a year, or no scope (`bad_request`).", body = ErrorBody),
        (status = 403, description = "A scope its admin lacks, or not allowed to manage this account (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such admin (`not_found`).", body = ErrorBody),
    ),
)]
pub(super) async fn create_key(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
    Json(req): Json<NewAdminKey>,
) -> Result<(StatusCode, axum::Json<AdminKeyCreated>), ApiError> {
    let key = state.core.create_admin_key(&admin, &id, req).await?;
    Ok((StatusCode::CREATED, axum::Json(key)))
}

#[utoipa::path(
    get,
    path = "/v1/admin/admins/{id}/keys",
    operation_id = "admin_list_keys",
    tag = "admin",
    summary = "List an admin's API keys",
    description = "Newest first, with their last use (time and address, written at most once a minute per node); revoked and expired keys too. Never the key itself. Scope: `admin`, or the account itself.",
    params(("id" = String, Path, description = "The admin id.")),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The keys.", body = AdminKeyList),
        (status = 404, description = "No such admin (`not_found`).", body = ErrorBody),
    ),
)]
pub(super) async fn list_keys(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
) -> Result<axum::Json<AdminKeyList>, ApiError> {
    Ok(axum::Json(state.core.admin_keys(&admin, &id).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/admins/{id}/keys/{key_id}",
    operation_id = "admin_revoke_key",
    tag = "admin",
    summary = "Revoke an API key",
    description = "Refused from the next call on, on every node. Scope: `admin`, or the account itself.",
    params(
        ("id" = String, Path, description = "The admin id."),
        ("key_id" = String, Path, description = "The key id (`umk_…`)."),
    ),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 204, description = "Revoked."),
        (status = 404, description = "No such key that is not revoked (`not_found`).", body = ErrorBody),
    ),
)]
pub(super) async fn revoke_key(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathPair(id, key_id): PathPair,
) -> Result<StatusCode, ApiError> {
    state.core.revoke_admin_key(&admin, &id, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/admin/admins/{id}/signing-secret",
    operation_id = "admin_new_signing_secret",
    tag = "admin",
    summary = "Make a request signing secret",
    description = "A new secret that signs the account's requests (`X-Signature`, needed when the server sets `admin.require_signature`), shown in this answer only; the previous one stops at once. Scope: `admin`, or the account itself.",
    params(("id" = String, Path, description = "The admin id.")),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 201, description = "The secret.", body = unimsg_proto::admin::SigningSecret),
        (status = 404, description = "No such admin (`not_found`).", body = ErrorBody),
    ),
)]
pub(super) async fn new_signing_secret(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
) -> Result<(StatusCode, axum::Json<unimsg_proto::admin::SigningSecret>), ApiError> {
    let secret = state.core.new_signing_secret(&admin, &id).await?;
    Ok((StatusCode::CREATED, axum::Json(secret)))
}
