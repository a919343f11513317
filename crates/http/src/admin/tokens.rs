//! `POST /v1/admin/token` (admin credentials for an admin token) and
//! `POST /v1/admin/admins` (another admin account).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use unimsg_core::replay::ReplayHeaders;
use unimsg_proto::ErrorBody;
use unimsg_proto::admin::{AdminToken, AdminTokenRequest, NewAdminRequest, Scope};

use super::gate::{AuditActor, ClaimedAdmin};
use super::{AdminAuth, header};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, RequestOrigin};

#[utoipa::path(
    post,
    path = "/v1/admin/token",
    operation_id = "admin_token",
    tag = "admin",
    summary = "Exchange admin credentials for an admin token",
    description = "Returns a Bearer token for the admin API with the account's scopes, for Basic credentials (`admin_id:password`, as every admin call takes them) or a JSON body `{admin_id, password}`. Rate limited per address. `X-Nonce` is checked and recorded only once the secret is verified, so a failed attempt does not use it up.",
    request_body = AdminTokenRequest,
    responses(
        (status = 200, description = "An admin token.", body = AdminToken),
        (status = 401, description = "Unknown admin or wrong secret (`unauthorized`).", body = ErrorBody),
        (status = 429, description = "Too many failed secrets from this address, or for this admin id from it (`rate_limited`, with `Retry-After`).", body = ErrorBody),
        (status = 503, description = "Too many password checks in progress (`busy`, with `Retry-After`).", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/token`
///
/// The nonce is checked only after the credential verified, keyed by the
/// admin id: a failed attempt records nothing, so it neither consumes the
/// nonce of the real request nor fills the store.
pub(super) async fn token(
    State(state): State<AppState>,
    RequestOrigin(client): RequestOrigin,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = match credentials(&headers, &body) {
        Ok(req) => req,
        Err(error) => return error.into_response(),
    };
    // The same client `gate` found, for the back-off of failed secrets.
    let result = match state
        .core
        .admin_token(&req.admin_id, &req.secret, client.ip.as_deref())
        .await
    {
        Ok(token) => state
            .core
            .check_replay(ReplayHeaders {
                credential: &req.admin_id,
                nonce: header(&headers, "x-nonce"),
                timestamp: header(&headers, "x-timestamp"),
            })
            .await
            .map(|()| token)
            .map_err(|e| (ApiError::from(e), true)),
        Err(e) => Err((ApiError::from(e), false)),
    };
    match result {
        Ok(token) => {
            if let Some(ip) = &client.ip {
                state.core.admin_seen(&req.admin_id, ip).await;
            }
            let mut response = axum::Json(token).into_response();
            response
                .extensions_mut()
                .insert(AuditActor(req.admin_id.clone()));
            response
        }
        Err((error, verified)) => {
            let mut response = error.into_response();
            if verified {
                response
                    .extensions_mut()
                    .insert(AuditActor(req.admin_id.clone()));
            } else {
                response
                    .extensions_mut()
                    .insert(ClaimedAdmin(req.admin_id.chars().take(64).collect()));
            }
            response
        }
    }
}

/// The credentials of a token request: Basic, as every other admin call
/// takes them, or the JSON body `{admin_id, password}` (`secret` is the
/// older name of `password`).
fn credentials(headers: &HeaderMap, body: &[u8]) -> Result<AdminTokenRequest, ApiError> {
    if let Some(value) = header(headers, "authorization") {
        return match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
                let (admin_id, secret) = super::gate::basic_pair(rest)?;
                Ok(AdminTokenRequest { admin_id, secret })
            }
            _ => Err(ApiError::unauthorized(
                "exchange Basic credentials (admin_id:password) or a JSON body for a token",
            )),
        };
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "send Basic credentials, or a JSON body {\"admin_id\": ..., \"password\": ...}",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(crate::error::plain_words(&e.to_string())))
}

#[utoipa::path(
    post,
    path = "/v1/admin/admins",
    operation_id = "admin_create_admin",
    tag = "admin",
    summary = "Create an admin account",
    description = "Creates another admin account with the given scopes. Scope: `admin`.",
    request_body = NewAdminRequest,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 201, description = "Created."),
        (status = 409, description = "The admin id exists, or `X-Nonce` was reused (`conflict`).", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/admins` (scope `admin`)
pub(super) async fn create_admin(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Json(req): Json<NewAdminRequest>,
) -> Result<StatusCode, ApiError> {
    admin.require(Scope::Admin)?;
    state
        .core
        .create_admin(&req.admin_id, req.secret, req.scopes)
        .await?;
    Ok(StatusCode::CREATED)
}
