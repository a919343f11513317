//! `POST /v1/admin/qr/{ticket_id}/confirm`: a business system confirms a
//! QR login ticket for a user it verified elsewhere.

use axum::extract::State;
use unimsg_proto::ErrorBody;
use unimsg_proto::admin::{AdminQrConfirm, Scope};

use super::AdminAuth;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, PathId};

#[utoipa::path(
    post,
    path = "/v1/admin/qr/{ticket_id}/confirm",
    operation_id = "admin_qr_confirm",
    tag = "admin",
    summary = "Confirm a QR ticket for a user (third-party identity)",
    description = "For a business system that verified the user elsewhere (e.g. a WeChat official-account callback): the waiting page is logged in as `user_id` and receives `confirmed` with its tokens. Scope `tokens:mint`.",
    params(("ticket_id" = String, Path, description = "The ticket id.")),
    request_body = AdminQrConfirm,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The session opened for the waiting page.", body = unimsg_proto::api::QrConfirmed),
        (status = 404, description = "Unknown ticket or user (`not_found`).", body = ErrorBody),
        (status = 409, description = "Already confirmed (`conflict`).", body = ErrorBody),
        (status = 410, description = "Cancelled or expired (`gone`).", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/qr/{ticket_id}/confirm`
pub(super) async fn qr_confirm(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
    Json(req): Json<AdminQrConfirm>,
) -> Result<axum::Json<unimsg_proto::api::QrConfirmed>, ApiError> {
    admin.require(Scope::TokensMint)?;
    let session_id = unimsg_core::qr::counted(
        unimsg_core::qr::QrStep::AdminConfirm,
        state
            .core
            .admin_confirm_qr(&admin.admin_id, &id, req.user_id)
            .await,
    )?;
    Ok(axum::Json(unimsg_proto::api::QrConfirmed { session_id }))
}
