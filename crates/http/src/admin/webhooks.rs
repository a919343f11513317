//! `/v1/admin/webhooks…`: webhook endpoints (create, list, show, change,
//! remove), their secrets (`…/secret`), test events (`…/test`), the
//! delivery log (`…/deliveries`), retries (`…/deliveries/{event_id}/retry`)
//! and replays (`…/replay`). Scope: `webhooks`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use unimsg_proto::ErrorBody;
use unimsg_proto::admin::Scope;
use unimsg_proto::hooks::{
    CreateWebhook, DeliveryPage, DeliveryState, PatchWebhook, ReplayRequest, Requeued, Webhook,
    WebhookList, WebhookWithSecret,
};
use utoipa::IntoParams;

use super::AdminAuth;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, PathId, PathPair, Query};

#[utoipa::path(
    post,
    path = "/v1/admin/webhooks",
    operation_id = "admin_create_webhook",
    tag = "webhooks",
    summary = "Register a webhook endpoint",
    description = "Events of the listed types (or `[\"*\"]`) are POSTed to `url`, signed per Standard Webhooks 1.0 with the `secret` of the answer, which is shown only here. Private, loopback and link-local targets are refused unless `hooks.allow_private_targets`. Scope: `webhooks`.",
    request_body = CreateWebhook,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 201, description = "The endpoint and its secret.", body = WebhookWithSecret),
        (status = 400, description = "A bad URL, a refused target or an unknown event type (`bad_request`).", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/webhooks`
pub(super) async fn create_webhook(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Json(req): Json<CreateWebhook>,
) -> Result<(StatusCode, axum::Json<WebhookWithSecret>), ApiError> {
    admin.require(Scope::Webhooks)?;
    let created = state.core.create_webhook(req).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

#[utoipa::path(
    get,
    path = "/v1/admin/webhooks",
    operation_id = "admin_list_webhooks",
    tag = "webhooks",
    summary = "List webhook endpoints",
    description = "Every endpoint, oldest first, with its count of pending deliveries; never the secrets. Scope: `webhooks`.",
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses((status = 200, description = "The endpoints.", body = WebhookList)),
)]
/// `GET /v1/admin/webhooks`
pub(super) async fn list_webhooks(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
) -> Result<axum::Json<WebhookList>, ApiError> {
    admin.require(Scope::Webhooks)?;
    Ok(axum::Json(state.core.webhooks().await?))
}

#[utoipa::path(
    get,
    path = "/v1/admin/webhooks/{id}",
    operation_id = "admin_get_webhook",
    tag = "webhooks",
    summary = "Show a webhook endpoint",
    description = "Scope: `webhooks`.",
    params(("id" = String, Path, description = "The webhook id.")),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The endpoint.", body = Webhook),
        (status = 404, description = "No such endpoint (`not_found`).", body = ErrorBody),
    ),
)]
/// `GET /v1/admin/webhooks/{id}`
pub(super) async fn get_webhook(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
) -> Result<axum::Json<Webhook>, ApiError> {
    admin.require(Scope::Webhooks)?;
    Ok(axum::Json(state.core.webhook(&id).await?))
}

#[utoipa::path(
    patch,
    path = "/v1/admin/webhooks/{id}",
    operation_id = "admin_update_webhook",
    tag = "webhooks",
    summary = "Change a webhook endpoint",
    description = "Only the fields given change. `enabled: true` on a disabled endpoint makes its pending deliveries due at once. Scope: `webhooks`.",
    params(("id" = String, Path, description = "The webhook id.")),
    request_body = PatchWebhook,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The endpoint after the change.", body = Webhook),
        (status = 400, description = "A bad URL, a refused target or an unknown event type (`bad_request`).", body = ErrorBody),
        (status = 404, description = "No such endpoint (`not_found`).", body = ErrorBody),
    ),
)]
/// `PATCH /v1/admin/webhooks/{id}`
pub(super) async fn update_webhook(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
    Json(patch): Json<PatchWebhook>,
) -> Result<axum::Json<Webhook>, ApiError> {
    admin.require(Scope::Webhooks)?;
    Ok(axum::Json(state.core.update_webhook(&id, patch).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/webhooks/{id}",
    operation_id = "admin_delete_webhook",
    tag = "webhooks",
    summary = "Remove a webhook endpoint",
    description = "The endpoint and its deliveries are deleted. Scope: `webhooks`.",
    params(("id" = String, Path, description = "The webhook id.")),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, description = "No such endpoint (`not_found`).", body = ErrorBody),
    ),
)]
/// `DELETE /v1/admin/webhooks/{id}`
pub(super) async fn delete_webhook(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    admin.require(Scope::Webhooks)?;
    state.core.delete_webhook(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/admin/webhooks/{id}/secret",
    operation_id = "admin_rotate_webhook_secret",
    tag = "webhooks",
    summary = "Rotate a webhook endpoint's secret",
    description = "The answer shows the new secret (only here). For `hooks.secret_overlap_secs` every request carries two signatures, the new one first, so that a receiver can switch without a gap. Scope: `webhooks`.",
    params(("id" = String, Path, description = "The webhook id.")),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The endpoint and its new secret.", body = WebhookWithSecret),
        (status = 404, description = "No such endpoint (`not_found`).", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/webhooks/{id}/secret`
pub(super) async fn rotate_secret(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
) -> Result<axum::Json<WebhookWithSecret>, ApiError> {
    admin.require(Scope::Webhooks)?;
    Ok(axum::Json(state.core.rotate_webhook_secret(&id).await?))
}

#[utoipa::path(
    post,
    path = "/v1/admin/webhooks/{id}/test",
    operation_id = "admin_test_webhook",
    tag = "webhooks",
    summary = "Queue a test event",
    description = "A `webhook.test` event for this endpoint alone, whatever it subscribes to. Scope: `webhooks`.",
    params(("id" = String, Path, description = "The webhook id.")),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 202, description = "Queued; `event_id` is its `webhook-id`.", body = Requeued),
        (status = 404, description = "No such endpoint (`not_found`).", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/webhooks/{id}/test`
pub(super) async fn test_webhook(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
) -> Result<(StatusCode, axum::Json<Requeued>), ApiError> {
    admin.require(Scope::Webhooks)?;
    let queued = state.core.test_webhook(&id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(queued)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveriesQuery {
    /// `pending`, `succeeded` or `failed`; all when absent.
    status: Option<DeliveryState>,
    /// At most this many, newest first (1 to 1000, default 100).
    limit: Option<u32>,
    /// Only deliveries of events before this outbox position (`next_before`).
    before: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/webhooks/{id}/deliveries",
    operation_id = "admin_webhook_deliveries",
    tag = "webhooks",
    summary = "The delivery log of an endpoint",
    description = "Newest event first: each with its attempts, the last status code or error, and when a pending one is next attempted. Scope: `webhooks`.",
    params(("id" = String, Path, description = "The webhook id."), DeliveriesQuery),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "One page.", body = DeliveryPage),
        (status = 404, description = "No such endpoint (`not_found`).", body = ErrorBody),
    ),
)]
/// `GET /v1/admin/webhooks/{id}/deliveries?status=&limit=&before=`
pub(super) async fn deliveries(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
    Query(q): Query<DeliveriesQuery>,
) -> Result<axum::Json<DeliveryPage>, ApiError> {
    admin.require(Scope::Webhooks)?;
    let page = state
        .core
        .webhook_deliveries(&id, q.status, q.before, q.limit.unwrap_or(100))
        .await?;
    Ok(axum::Json(page))
}

#[utoipa::path(
    post,
    path = "/v1/admin/webhooks/{id}/deliveries/{event_id}/retry",
    operation_id = "admin_retry_webhook_delivery",
    tag = "webhooks",
    summary = "Retry one delivery",
    description = "Queues the delivery again at once, with a new series of attempts and the same `webhook-id`. Scope: `webhooks`.",
    params(
        ("id" = String, Path, description = "The webhook id."),
        ("event_id" = String, Path, description = "The event id (`webhook-id`)."),
    ),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 202, description = "Queued.", body = Requeued),
        (status = 404, description = "No such endpoint, or no delivery of that event to it (`not_found`).", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/webhooks/{id}/deliveries/{event_id}/retry`
pub(super) async fn retry_delivery(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathPair(id, event_id): PathPair,
) -> Result<(StatusCode, axum::Json<Requeued>), ApiError> {
    admin.require(Scope::Webhooks)?;
    let queued = state.core.retry_webhook_delivery(&id, &event_id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(queued)))
}

#[utoipa::path(
    post,
    path = "/v1/admin/webhooks/{id}/replay",
    operation_id = "admin_replay_webhook",
    tag = "webhooks",
    summary = "Replay events since a time",
    description = "Every event since `since` that the endpoint subscribes to (and is still in the outbox: `hooks.retention_days`) is queued again, delivered before or not. Scope: `webhooks`.",
    params(("id" = String, Path, description = "The webhook id.")),
    request_body = ReplayRequest,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 202, description = "Queued; `queued` says how many.", body = Requeued),
        (status = 404, description = "No such endpoint (`not_found`).", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/webhooks/{id}/replay`
pub(super) async fn replay(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
    Json(req): Json<ReplayRequest>,
) -> Result<(StatusCode, axum::Json<Requeued>), ApiError> {
    admin.require(Scope::Webhooks)?;
    let queued = state.core.replay_webhook(&id, req.since).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(queued)))
}
