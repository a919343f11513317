//! `POST /v1/admin/keys/signing/rotate` and `…/master/rotate`: key rotation.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use unimsg_proto::ErrorBody;
use unimsg_proto::admin::{
    DataKeyRotated, MasterRotated, RotateMasterRequest, Scope, SigningKeyInfo,
};

use super::AdminAuth;
use crate::AppState;
use crate::error::ApiError;

#[utoipa::path(
    post,
    path = "/v1/admin/keys/signing/rotate",
    operation_id = "admin_rotate_signing_key",
    tag = "admin",
    summary = "Rotate the token signing key",
    description = "Adds an Ed25519 key that signs every token from now on. The previous keys keep verifying the tokens they signed for 30 days (the longest a token lives), and `GET /.well-known/jwks.json` lists them until then. The other nodes of a cluster start signing with the new key within 10 s. Scope: `admin`.",
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 201, description = "The new key's `kid`.", body = SigningKeyInfo),
        (status = 403, description = "The credential lacks the `admin` scope (`forbidden`).", body = ErrorBody),
    ),
)]
pub(super) async fn rotate_signing(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
) -> Result<(StatusCode, Json<SigningKeyInfo>), ApiError> {
    admin.require(Scope::Admin)?;
    Ok((
        StatusCode::CREATED,
        Json(state.core.rotate_signing_key().await?),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/admin/keys/master/rotate",
    operation_id = "admin_rotate_master_key",
    tag = "admin",
    summary = "Rotate the master key",
    description = "Wraps every stored data and signing key again under a new master key; message content is not re-encrypted and reads go on meanwhile. With `master.key` the server makes the new key (or takes `new_master_key`), writes it to `master.key.new` and renames it over `master.key` once every key is re-wrapped: asking again after an interruption resumes with the same key. With `UNIMSG_MASTER_KEY` or `keys.master_key_command`, give `new_master_key` and change it there before any node starts again; until then the other nodes of a cluster refuse to wrap new keys with the old one (409). The old master key then opens nothing and can be destroyed. Scope: `admin`.",
    request_body = RotateMasterRequest,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "How many keys were re-wrapped, and where the new master key is.", body = MasterRotated),
        (status = 400, description = "No new key where one is needed, or not the base64 of 32 bytes (`bad_request`).", body = ErrorBody),
        (status = 403, description = "The credential lacks the `admin` scope (`forbidden`).", body = ErrorBody),
    ),
)]
pub(super) async fn rotate_master(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    crate::extract::Json(req): crate::extract::Json<RotateMasterRequest>,
) -> Result<Json<MasterRotated>, ApiError> {
    admin.require(Scope::Admin)?;
    Ok(Json(state.core.rotate_master_key(req).await?))
}

#[utoipa::path(
    post,
    path = "/v1/admin/keys/data/rotate",
    operation_id = "admin_rotate_data_key",
    tag = "admin",
    summary = "Add a data key",
    description = "Adds an AES-256 data key (wrapped by the master key). It seals new content from `seals_from` on — three key refreshes (`keys.refresh_interval_secs`) later, so that every node of a cluster can open what it seals —; stored content keeps the key that sealed it. Data keys are also replaced on their own after `keys.data_key_max_age_days` or `keys.data_key_max_seals`. Scope: `admin`.",
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 201, description = "The new key.", body = DataKeyRotated),
        (status = 403, description = "The credential lacks the `admin` scope (`forbidden`).", body = ErrorBody),
        (status = 409, description = "This node's master key was rotated away on another node (`conflict`).", body = ErrorBody),
    ),
)]
pub(super) async fn rotate_data(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
) -> Result<(StatusCode, Json<DataKeyRotated>), ApiError> {
    admin.require(Scope::Admin)?;
    Ok((
        StatusCode::CREATED,
        Json(state.core.rotate_data_key().await?),
    ))
}
