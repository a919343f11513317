//! `/v1/messages*`, `/v1/sync`, `/v1/ack`, `/v1/conversations*`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use unimsg_proto::api::{
    AckRequest, AckResponse, ConversationList, HistoryPage, ReadRequest, ReadResponse, SendRequest,
    SendResponse, SyncResponse,
};
use unimsg_proto::{ConversationId, MessageId, Seq};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Authed, Json, PathId, Query, path_id};

/// `POST /v1/messages`
pub async fn send(
    State(state): State<AppState>,
    Authed(auth): Authed,
    Json(req): Json<SendRequest>,
) -> Result<axum::Json<SendResponse>, ApiError> {
    Ok(axum::Json(state.core.send(&auth, req).await?))
}

/// `POST /v1/messages/{id}/recall`
pub async fn recall(
    State(state): State<AppState>,
    Authed(auth): Authed,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let id: MessageId = path_id(&id, "message")?;
    state.core.recall(&auth, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncQuery {
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
}

/// `GET /v1/sync?after=SEQ&limit=N`
pub async fn sync(
    State(state): State<AppState>,
    Authed(auth): Authed,
    Query(q): Query<SyncQuery>,
) -> Result<axum::Json<SyncResponse>, ApiError> {
    Ok(axum::Json(
        state.core.sync(&auth, Seq(q.after), q.limit).await?,
    ))
}

/// `POST /v1/ack`
pub async fn ack(
    State(state): State<AppState>,
    Authed(auth): Authed,
    Json(req): Json<AckRequest>,
) -> Result<axum::Json<AckResponse>, ApiError> {
    Ok(axum::Json(AckResponse {
        acked: state.core.ack(&auth, req.seq).await?,
    }))
}

/// `GET /v1/conversations`
pub async fn conversations(
    State(state): State<AppState>,
    Authed(auth): Authed,
) -> Result<axum::Json<ConversationList>, ApiError> {
    Ok(axum::Json(state.core.conversations(&auth).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    before: Option<u64>,
    limit: Option<u32>,
}

/// `GET /v1/conversations/{id}/messages?before=&limit=`
pub async fn history(
    State(state): State<AppState>,
    Authed(auth): Authed,
    PathId(id): PathId,
    Query(q): Query<HistoryQuery>,
) -> Result<axum::Json<HistoryPage>, ApiError> {
    let conversation: ConversationId = path_id(&id, "conversation")?;
    Ok(axum::Json(
        state
            .core
            .history(&auth, &conversation, q.before, q.limit)
            .await?,
    ))
}

/// `POST /v1/conversations/{id}/read`
pub async fn read(
    State(state): State<AppState>,
    Authed(auth): Authed,
    PathId(id): PathId,
    Json(req): Json<ReadRequest>,
) -> Result<axum::Json<ReadResponse>, ApiError> {
    let conversation: ConversationId = path_id(&id, "conversation")?;
    Ok(axum::Json(
        state
            .core
            .mark_read(&auth, &conversation, &req.message_id)
            .await?,
    ))
}
