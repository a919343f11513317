//! `POST /v1/admin/keys/signing/rotate`: key rotation.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use unimsg_proto::ErrorBody;
use unimsg_proto::admin::{Scope, SigningKeyInfo};

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
