//! `/v1/admin/*`: the API for business systems.
//!
//! One middleware, [`gate`], guards every admin route in this order: the
//! IP allowlist (403; the client by [`crate::extract::client_addr`], an
//! unknown client is refused), the credential — HTTP Basic
//! `admin_id:password` or a Bearer admin token — (401), the credential's
//! rate limit (429), replay protection with `X-Nonce` and `X-Timestamp`
//! keyed by the verified admin id (409 / 401, 503 `busy` when the replay
//! store is full); then it runs the handler. Served requests, and refused
//! ones with a valid credential, are audited one entry each; refusals
//! without one (and over a credential's limit) are counted per source
//! ([`unimsg_core::Core::audit_refusal`]). Handlers check the scope they
//! need (403).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use unimsg_core::admin::{AdminContext, ImportItem};
use unimsg_core::audit::AuditRecord;
use unimsg_core::groups::GroupActor;
use unimsg_core::limits::Limit;
use unimsg_core::replay::ReplayHeaders;
use unimsg_proto::admin::{
    AdminQrConfirm, AdminToken, AdminTokenRequest, AdminUser, AuditPage, BroadcastRequest,
    BroadcastResponse, ForceLogoutRequest, ForceLogoutResponse, ImportRequest, ImportResponse,
    ImportUser, MessageStatus, MintRequest, NewAdminRequest, NotifyRequest, NotifyResponse,
    PresenceResponse, Scope, UserPatch,
};
use unimsg_proto::api::TokenPair;
use unimsg_proto::friends::{
    RelationshipsResponse, RelationshipsUpdate, RelationshipsUpdateResponse,
};
use unimsg_proto::groups::{AddMembersRequest, AdminCreateGroupRequest, GroupDetail, GroupInfo};
use unimsg_proto::{ErrorBody, ErrorCode, GroupId, MessageId, UserId};
use unimsg_store::AuditQuery;

use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{
    ClientAddr, Json, PathId, PathPair, Query, RequestOrigin, path_id, request_client,
};

/// The admin routes; [`crate::router`] puts them behind [`gate`].
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(create_admin))
        .routes(routes!(import_users))
        .routes(routes!(get_user, patch_user, delete_user))
        .routes(routes!(mint))
        .routes(routes!(logout))
        .routes(routes!(notify))
        .routes(routes!(broadcast))
        .routes(routes!(status))
        .routes(routes!(audit))
        .routes(routes!(presence))
        .routes(routes!(qr_confirm))
        .routes(routes!(relationships, update_relationships))
        .routes(routes!(create_group))
        .routes(routes!(get_group, dissolve_group))
        .routes(routes!(add_group_members))
        .routes(routes!(remove_group_member))
}

/// The admin credential of the request, put there by [`gate`].
pub struct AdminAuth(pub AdminContext);

impl<S: Send + Sync> FromRequestParts<S> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<AdminContext>()
            .cloned()
            .map(AdminAuth)
            .ok_or_else(|| ApiError::unauthorized("admin credentials required"))
    }
}

/// Set by a handler on its response to name the actor when the request
/// itself carried no credential (`POST /v1/admin/token`), once the
/// credential in the body was verified.
#[derive(Clone)]
struct AuditActor(String);

/// Set by `POST /v1/admin/token` when the credential in the body was
/// refused: the admin id it named, recorded as the target, never as the actor.
#[derive(Clone)]
struct ClaimedAdmin(String);

/// A comma-separated list of 1 to 1000 user ids.
fn user_ids(raw: &str) -> Result<Vec<UserId>, ApiError> {
    let ids = raw
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| UserId::parse(s).map_err(|e| ApiError::bad_request(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() || ids.len() > 1000 {
        return Err(ApiError::bad_request("give 1 to 1000 user_ids"));
    }
    Ok(ids)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Guards and audits every admin request.
pub(crate) async fn gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let core = state.core.clone();
    let client = request_client(request.extensions(), request.headers(), &state);
    let mut record = AuditRecord {
        action: "admin.request".into(),
        actor_kind: "admin".into(),
        actor: "-".into(),
        ip: Some(client.key()),
        operation_id: header(request.headers(), "x-operation-id")
            .map(|s| s.chars().take(128).collect()),
        method: Some(request.method().to_string()),
        path: Some(request.uri().path().chars().take(256).collect()),
        ..AuditRecord::default()
    };
    let outcome = admit(&state, client, request, next, &mut record).await;
    let response = match outcome {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    if let Some(actor) = response.extensions().get::<AuditActor>() {
        record.actor = actor.0.clone();
    }
    if let Some(claimed) = response.extensions().get::<ClaimedAdmin>() {
        record.target = Some(claimed.0.clone());
    }
    let status = response.status().as_u16();
    record.outcome = status.to_string();
    // Only a verified credential sets the actor. Refusals no credential
    // vouches for, and refusals over a credential's limits, are counted
    // per source instead of written one row each: otherwise anyone could
    // make the audit log (and the writer that message sends use) write
    // as fast as they can send.
    let verified = record.actor != "-";
    if status >= 400 && (!verified || matches!(status, 429 | 503)) {
        core.audit_refusal(record).await;
    } else {
        core.audit(record).await;
    }
    response
}

/// The allowlist, the credential, the credential's rate limit and its
/// nonce, in this order: a nonce is recorded only once a credential is
/// verified, keyed by it. `POST /v1/admin/token` carries its credential in
/// the body, so its handler checks the nonce after verifying it.
async fn admit(
    state: &AppState,
    client: ClientAddr,
    mut request: Request,
    next: Next,
    record: &mut AuditRecord,
) -> Result<Response, ApiError> {
    let core = &state.core;
    let allow = &core.config().admin.ip_allowlist;
    let allowed = match client {
        ClientAddr::Ip(ip) => allow.iter().any(|net| net.contains(&ip)),
        // An unknown client cannot be shown to be on the list.
        ClientAddr::Unknown => false,
    };
    if !allow.is_empty() && !allowed {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this address may not use the admin API",
        ));
    }
    if request.uri().path() == "/v1/admin/token" {
        core.check_limit(Limit::Token, &client.key()).await?;
        return Ok(next.run(request).await);
    }
    let ctx = authenticate(state, request.headers(), &client.key()).await?;
    record.actor = ctx.admin_id.clone();
    record.scope = Some(
        ctx.scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    core.check_limit(Limit::Admin, &ctx.admin_id).await?;
    core.check_replay(ReplayHeaders {
        credential: &ctx.admin_id,
        nonce: header(request.headers(), "x-nonce"),
        timestamp: header(request.headers(), "x-timestamp"),
    })
    .await?;
    request.extensions_mut().insert(ctx);
    Ok(next.run(request).await)
}

/// The request's admin credential; `ip` is the client's address, which the
/// back-off of failed Basic authentications counts by.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    client: &str,
) -> Result<AdminContext, ApiError> {
    let value = header(headers, "authorization")
        .ok_or_else(|| ApiError::unauthorized("admin credentials required"))?;
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("malformed Authorization"))?;
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
        Ok(state.core.admin_basic(id, secret, Some(client)).await?)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Ok(state.core.admin_bearer(rest.trim()).await?)
    } else {
        Err(ApiError::unauthorized("use Basic or Bearer credentials"))
    }
}

#[utoipa::path(
    post,
    path = "/v1/admin/token",
    operation_id = "admin_token",
    tag = "admin",
    summary = "Exchange admin credentials for an admin token",
    description = "Returns a Bearer token for the admin API with the account's scopes. Rate limited per address. `X-Nonce` is checked and recorded only once the secret is verified, so a failed attempt does not use it up.",
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
async fn token(
    State(state): State<AppState>,
    RequestOrigin(client): RequestOrigin,
    headers: HeaderMap,
    Json(req): Json<AdminTokenRequest>,
) -> Response {
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
async fn create_admin(
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
async fn import_users(
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
            reason: e.to_string(),
        },
    }
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
async fn get_user(
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
async fn patch_user(
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
async fn delete_user(
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
async fn mint(
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
async fn logout(
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
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let platform = req.platform;
    Ok(axum::Json(state.core.force_logout(&id, platform).await?))
}

#[utoipa::path(
    post,
    path = "/v1/admin/messages",
    operation_id = "admin_notify",
    tag = "admin",
    summary = "Send a notification to users",
    description = "Stores the notification once and appends a `notification.new` event to each recipient's inbox (conversation `s:{user}`); `to: {group}` reaches the group's members at this moment. Scope: `messages:send`.",
    request_body = NotifyRequest,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The notification's id and recipient count.", body = NotifyResponse),
        (status = 404, description = "A recipient or the group does not exist (`not_found`); the message names the unknown user ids (the first 20, and how many more), and nothing is sent.", body = ErrorBody),
    ),
)]
/// `POST /v1/admin/messages`
async fn notify(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Json(req): Json<NotifyRequest>,
) -> Result<axum::Json<NotifyResponse>, ApiError> {
    admin.require(Scope::MessagesSend)?;
    Ok(axum::Json(state.core.notify(req).await?))
}

#[utoipa::path(
    post,
    path = "/v1/admin/broadcasts",
    operation_id = "admin_broadcast",
    tag = "admin",
    summary = "Broadcast to every user",
    description = "Stores the announcement once; it reaches every user as `broadcast.new`, live when online and in sync. Scope: `messages:send`.",
    request_body = BroadcastRequest,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The broadcast's id and position.", body = BroadcastResponse),
    ),
)]
/// `POST /v1/admin/broadcasts`
async fn broadcast(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Json(req): Json<BroadcastRequest>,
) -> Result<axum::Json<BroadcastResponse>, ApiError> {
    admin.require(Scope::MessagesSend)?;
    Ok(axum::Json(state.core.broadcast(req).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RelationshipsQuery {
    /// Comma-separated user ids (at most 1000).
    user_ids: String,
}

#[utoipa::path(
    get,
    path = "/v1/admin/relationships",
    operation_id = "admin_relationships",
    tag = "admin",
    summary = "Relationships of many users",
    description = "Friends and blocks of up to 1000 users in one call. Scope `users:read`.",
    params(RelationshipsQuery),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses((status = 200, description = "Per user, in request order.", body = RelationshipsResponse)),
)]
/// `GET /v1/admin/relationships?user_ids=a,b,c`
async fn relationships(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Query(q): Query<RelationshipsQuery>,
) -> Result<axum::Json<RelationshipsResponse>, ApiError> {
    admin.require(Scope::UsersRead)?;
    let ids = user_ids(&q.user_ids)?;
    Ok(axum::Json(state.core.relationships(ids).await?))
}

#[utoipa::path(
    put,
    path = "/v1/admin/relationships",
    operation_id = "admin_update_relationships",
    tag = "admin",
    summary = "Change many relationships",
    description = "Each op (`friend`, `unfriend`, `block`, `unblock` between `user_id` and `other_id`) succeeds or fails alone; the users get the same inbox events as when they act themselves. At most 1000 ops. Scope `users:write`.",
    request_body = RelationshipsUpdate,
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses((status = 200, description = "The outcome of each op, in order.", body = RelationshipsUpdateResponse)),
)]
/// `PUT /v1/admin/relationships`
async fn update_relationships(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Json(req): Json<RelationshipsUpdate>,
) -> Result<axum::Json<RelationshipsUpdateResponse>, ApiError> {
    admin.require(Scope::UsersWrite)?;
    if req.ops.len() > 1000 {
        return Err(ApiError::bad_request("at most 1000 ops per request"));
    }
    Ok(axum::Json(state.core.update_relationships(req.ops).await?))
}

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
async fn qr_confirm(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
    Json(req): Json<AdminQrConfirm>,
) -> Result<axum::Json<unimsg_proto::api::QrConfirmed>, ApiError> {
    admin.require(Scope::TokensMint)?;
    let session_id = state
        .core
        .admin_confirm_qr(&admin.admin_id, &id, req.user_id)
        .await?;
    Ok(axum::Json(unimsg_proto::api::QrConfirmed { session_id }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StatusQuery {
    /// Page after this user id (`next_after` of the previous page).
    after: Option<UserId>,
    /// Recipients per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/messages/{id}/status",
    operation_id = "admin_message_status",
    tag = "admin",
    summary = "Delivery and read status of a notification",
    description = "Counts and one page of per-recipient state, by user id. Scope: `messages:send`.",
    params(("id" = MessageId, Path, description = "The notification's message id."), StatusQuery),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "The status.", body = MessageStatus),
        (status = 400, description = "Bad query parameters (`bad_request`).", body = ErrorBody),
        (status = 404, description = "No such notification (`not_found`).", body = ErrorBody),
    ),
)]
/// `GET /v1/admin/messages/{id}/status?after=&limit=`
async fn status(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    PathId(id): PathId,
    Query(q): Query<StatusQuery>,
) -> Result<axum::Json<MessageStatus>, ApiError> {
    admin.require(Scope::MessagesSend)?;
    let id: MessageId = path_id(&id, "message")?;
    Ok(axum::Json(
        state
            .core
            .message_status(&id, q.after, q.limit.unwrap_or(100))
            .await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PresenceQuery {
    /// Comma-separated user ids, 1 to 1000.
    #[param(example = "alice,bob")]
    user_ids: String,
}

#[utoipa::path(
    get,
    path = "/v1/admin/presence",
    operation_id = "admin_presence",
    tag = "admin",
    summary = "Live presence of users",
    description = "For each user: online or not, and the platforms with a live WebSocket or SSE connection (on this node). Scope: `users:read`.",
    params(PresenceQuery),
    security(("admin_basic" = []), ("admin_bearer" = [])),
    responses(
        (status = 200, description = "One entry per requested user.", body = PresenceResponse),
        (status = 400, description = "Missing, malformed or more than 1000 user ids (`bad_request`).", body = ErrorBody),
    ),
)]
/// `GET /v1/admin/presence?user_ids=a,b,c` (at most 1000 ids)
async fn presence(
    State(state): State<AppState>,
    AdminAuth(admin): AdminAuth,
    Query(q): Query<PresenceQuery>,
) -> Result<axum::Json<PresenceResponse>, ApiError> {
    admin.require(Scope::UsersRead)?;
    let ids = user_ids(&q.user_ids)?;
    Ok(axum::Json(state.core.presence(ids).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditParams {
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
/// `GET /v1/admin/audit?after=&limit=&action=&actor=&operation_id=`
async fn audit(
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
    };
    Ok(axum::Json(state.core.audit_page(query).await?))
}

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
async fn create_group(
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
async fn get_group(
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
async fn dissolve_group(
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
async fn add_group_members(
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
async fn remove_group_member(
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
