//! `GET /v1/admin/audit`: the audit log, one filtered page at a time.

use axum::extract::State;
use serde::Deserialize;
use unimsg_core::audit::AuditQuery;
use unimsg_proto::ErrorBody;
use unimsg_proto::admin::{AuditPage, Scope};
use utoipa::IntoParams;

use super::AdminAuth;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::Query;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditParams {
    /// Entries after this entry id (`next_after` of the previous page; default 0).
    #[serde(default)]
    after: u64,
    /// Entries per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only this action, e.g. `admin.request`, `auth.login`, `session.revoked`.
    action: Option<String>,
    /// Only this actor (admin id or user id).
    actor: Option<String>,
    /// Only entries recorded with this `X-Operation-Id`.
    operation_id: Option<String>,
    /// Only entries recorded at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    since: Option<time::OffsetDateTime>,
    /// Only entries recorded before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    until: Option<time::OffsetDateTime>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    operation_id = "admin_audit",
    tag = "admin",
    summary = "Read the audit log",
    description = "Entries of the hash-chained audit log in order, filtered. Scope: `audit:read`.",
    params(AuditParams),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "One page of entries.", body = AuditPage),
        (status = 400, description = "Bad query parameters (`bad_request`).", body = ErrorBody),
    ),
)]
/// `GET /v1/admin/audit?after=&limit=&action=&actor=&operation_id=&since=&until=`
pub(super) async fn audit(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Query(q): Query<AuditParams>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    admin.require(Scope::AuditRead)?;
    let query = AuditQuery {
        after: q.after,
        limit: q.limit.unwrap_or(100),
        action: q.action,
        actor: q.actor,
        operation_id: q.operation_id,
        since: q.since,
        until: q.until,
    };
    Ok(axum::Json(state.core.audit_page(query).await?))
}

#[utoipa::path(
    get,
    path = "/v1/admin/audit/head",
    operation_id = "admin_audit_head",
    tag = "admin",
    summary = "The head of the audit chain",
    description = "The newest entry's number and hash. Kept outside the server (a file, a ticket, another system), it shows later whether the newest entries were removed: `unimsg audit verify --head SEQ:HASH` fails if that entry is gone or changed. Scope: `audit:read`.",
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The head.", body = unimsg_proto::admin::AuditHead),
    ),
)]
pub(super) async fn audit_head(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    super::AdminAuth(admin): super::AdminAuth,
) -> Result<axum::Json<unimsg_proto::admin::AuditHead>, crate::error::ApiError> {
    admin.require(unimsg_proto::admin::Scope::AuditRead)?;
    Ok(axum::Json(state.core.audit_head().await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct VerifyParams {
    /// An exported head, `SEQ:HASH`: its entry must still be there unchanged.
    head: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/audit/verify",
    operation_id = "admin_audit_verify",
    tag = "admin",
    summary = "Verify the audit chain",
    description = "Walks the whole audit log on the server (the store may be SQLite or PostgreSQL) and checks every entry's keyed hash and link; with `head` (from `GET /v1/admin/audit/head`, kept elsewhere) that entry must still be there, so removing the newest entries is found too. A broken chain answers `intact: false` naming the first entry that does not fit, and raises an `audit_chain_broken` security alert. One walk at a time per node. Scope: `audit:read`.",
    params(VerifyParams),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The result.", body = unimsg_proto::admin::AuditVerification),
        (status = 400, description = "`head` is not `SEQ:HASH` (`bad_request`).", body = ErrorBody),
    ),
)]
pub(super) async fn audit_verify(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Query(q): Query<VerifyParams>,
) -> Result<axum::Json<unimsg_proto::admin::AuditVerification>, ApiError> {
    admin.require(Scope::AuditRead)?;
    let expected = q
        .head
        .as_deref()
        .map(|h| {
            unimsg_core::audit::parse_head(h).ok_or_else(|| {
                ApiError::new(
                    unimsg_proto::ErrorCode::BadRequest,
                    "head must be SEQ:HASH, as GET /v1/admin/audit/head gives it",
                )
            })
        })
        .transpose()?;
    Ok(axum::Json(state.core.verify_audit_log(expected).await?))
}
