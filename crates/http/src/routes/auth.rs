//! `/v1/auth/*` and `/v1/me*`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use unimsg_proto::api::{
    LoginRequest, PublicUser, RefreshRequest, RegisterRequest, SessionList, TokenPair, UserProfile,
};
use unimsg_proto::{ErrorBody, SessionId};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, PathId, RequestOrigin, UserAuth, path_id};

#[utoipa::path(
    post,
    path = "/v1/auth/register",
    operation_id = "register",
    tag = "auth",
    summary = "Register an account",
    description = "Creates a user with a password (argon2id). Can be switched off (`auth.allow_registration`). Rate limited per address.",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The new user.", body = UserProfile),
        (status = 403, description = "Registration is closed (`registration_closed`).", body = ErrorBody),
        (status = 409, description = "The username is taken (`conflict`).", body = ErrorBody),
        (status = 429, description = "Too many registrations from this address (`rate_limited`).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
/// `POST /v1/auth/register`
pub(crate) async fn register(
    State(state): State<AppState>,
    RequestOrigin(client): RequestOrigin,
    Json(req): Json<RegisterRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let profile: UserProfile = state.core.register(req, &client).await?;
    Ok((StatusCode::CREATED, axum::Json(profile)))
}

#[utoipa::path(
    post,
    path = "/v1/auth/login",
    operation_id = "login",
    tag = "auth",
    summary = "Log in",
    description = "Opens a session on a platform (and device) and returns an access token (EdDSA JWT) and an opaque refresh token. The device policy (`auth.device_policy`) may end older sessions. Failed logins back off exponentially per account and per address.",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "The session's tokens.", body = TokenPair),
        (status = 401, description = "Wrong username or password, or a disabled account (`unauthorized`).", body = ErrorBody),
        (status = 429, description = "Too many attempts (`rate_limited`).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
/// `POST /v1/auth/login`
pub(crate) async fn login(
    State(state): State<AppState>,
    RequestOrigin(client): RequestOrigin,
    Json(req): Json<LoginRequest>,
) -> Result<axum::Json<TokenPair>, ApiError> {
    Ok(axum::Json(state.core.login(req, client).await?))
}

#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    operation_id = "refresh",
    tag = "auth",
    summary = "Rotate the token pair",
    description = "Exchanges a refresh token for a new pair. Presenting an already rotated refresh token again revokes the whole session.",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "The new tokens.", body = TokenPair),
        (status = 401, description = "Unknown, expired, reused or revoked refresh token (`unauthorized`).", body = ErrorBody),
        (status = 429, description = "Too many token requests from this address (`rate_limited`).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
/// `POST /v1/auth/refresh`
pub(crate) async fn refresh(
    State(state): State<AppState>,
    RequestOrigin(client): RequestOrigin,
    Json(req): Json<RefreshRequest>,
) -> Result<axum::Json<TokenPair>, ApiError> {
    Ok(axum::Json(
        state.core.refresh(&req.refresh_token, &client).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    operation_id = "logout",
    tag = "auth",
    summary = "Log out",
    description = "Revokes the caller's session; its live connections receive `session.revoked` and close.",
    security(("bearer" = [])),
    responses((status = 204, description = "Logged out.")),
)]
/// `POST /v1/auth/logout`
pub(crate) async fn logout(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
) -> Result<StatusCode, ApiError> {
    state.core.logout(&auth).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/me",
    operation_id = "me",
    tag = "auth",
    summary = "The caller's profile",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller.", body = UserProfile)),
)]
/// `GET /v1/me`
pub(crate) async fn me(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
) -> Result<axum::Json<UserProfile>, ApiError> {
    Ok(axum::Json(state.core.me(&auth).await?))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LookupParams {
    /// The username to look up, exactly.
    username: Option<String>,
    /// Or the user id.
    #[param(value_type = Option<String>)]
    user_id: Option<unimsg_proto::UserId>,
}

#[utoipa::path(
    get,
    path = "/v1/users",
    operation_id = "lookup_user",
    tag = "auth",
    summary = "Find a user by username or id",
    description = "Another user's public profile (id, username, display name), e.g. to start a chat by username: `?username=` or `?user_id=`. Limited to `limits.lookup_per_minute` per caller.",
    params(LookupParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user.", body = PublicUser),
        (status = 404, description = "No active user has this username (`not_found`).", body = ErrorBody),
        (status = 429, description = "Too many lookups (`rate_limited`).", body = ErrorBody),
    ),
)]
/// `GET /v1/users?username=` or `?user_id=`
pub(crate) async fn lookup_user(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    crate::extract::Query(q): crate::extract::Query<LookupParams>,
) -> Result<axum::Json<PublicUser>, ApiError> {
    let by = match (q.username, q.user_id) {
        (Some(name), None) => unimsg_core::auth::LookupBy::Username(name),
        (None, Some(id)) => unimsg_core::auth::LookupBy::Id(id),
        _ => {
            return Err(ApiError::bad_request("give either username or user_id"));
        }
    };
    Ok(axum::Json(state.core.lookup_user(&auth, by).await?))
}

#[utoipa::path(
    get,
    path = "/v1/me/sessions",
    operation_id = "list_sessions",
    tag = "auth",
    summary = "The caller's active sessions",
    security(("bearer" = [])),
    responses((status = 200, description = "Every active session; `current` marks the caller's.", body = SessionList)),
)]
/// `GET /v1/me/sessions`
pub(crate) async fn sessions(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
) -> Result<axum::Json<SessionList>, ApiError> {
    Ok(axum::Json(SessionList {
        sessions: state.core.sessions(&auth).await?,
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/me/sessions/{id}",
    operation_id = "end_session",
    tag = "auth",
    summary = "End one of the caller's sessions",
    description = "Revokes the session; its live connections receive `session.revoked` and close.",
    params(("id" = SessionId, Path, description = "The session id.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Ended."),
        (status = 404, description = "No such session of the caller (`not_found`).", body = ErrorBody),
    ),
)]
/// `DELETE /v1/me/sessions/{id}`
pub(crate) async fn end_session(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let session: SessionId = path_id(&id, "session")?;
    state.core.end_own_session(&auth, &session).await?;
    Ok(StatusCode::NO_CONTENT)
}
