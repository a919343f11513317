//! `/v1/auth/*` and `/v1/me*`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use unimsg_proto::SessionId;
use unimsg_proto::api::{
    LoginRequest, RefreshRequest, RegisterRequest, SessionList, TokenPair, UserProfile,
};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Authed, Client, Json, PathId, path_id};

/// `POST /v1/auth/register`
pub async fn register(
    State(state): State<AppState>,
    Client(client): Client,
    Json(req): Json<RegisterRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let profile: UserProfile = state.core.register(req, &client).await?;
    Ok((StatusCode::CREATED, axum::Json(profile)))
}

/// `POST /v1/auth/login`
pub async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    Json(req): Json<LoginRequest>,
) -> Result<axum::Json<TokenPair>, ApiError> {
    Ok(axum::Json(state.core.login(req, client).await?))
}

/// `POST /v1/auth/refresh`
pub async fn refresh(
    State(state): State<AppState>,
    Client(client): Client,
    Json(req): Json<RefreshRequest>,
) -> Result<axum::Json<TokenPair>, ApiError> {
    Ok(axum::Json(
        state.core.refresh(&req.refresh_token, &client).await?,
    ))
}

/// `POST /v1/auth/logout`
pub async fn logout(
    State(state): State<AppState>,
    Authed(auth): Authed,
) -> Result<StatusCode, ApiError> {
    state.core.logout(&auth).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/me`
pub async fn me(
    State(state): State<AppState>,
    Authed(auth): Authed,
) -> Result<axum::Json<UserProfile>, ApiError> {
    Ok(axum::Json(state.core.me(&auth).await?))
}

/// `GET /v1/me/sessions`
pub async fn sessions(
    State(state): State<AppState>,
    Authed(auth): Authed,
) -> Result<axum::Json<SessionList>, ApiError> {
    Ok(axum::Json(SessionList {
        sessions: state.core.sessions(&auth).await?,
    }))
}

/// `DELETE /v1/me/sessions/{id}`
pub async fn end_session(
    State(state): State<AppState>,
    Authed(auth): Authed,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let session: SessionId = path_id(&id, "session")?;
    state.core.end_own_session(&auth, &session).await?;
    Ok(StatusCode::NO_CONTENT)
}
