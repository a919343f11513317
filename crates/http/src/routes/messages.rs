//! `/v1/messages*`, `/v1/sync`, `/v1/ack`, `/v1/conversations*`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use unimsg_proto::api::{
    AckRequest, AckResponse, ConversationList, HistoryPage, ReadCount, ReadRequest, ReadResponse,
    SendRequest, SendResponse, SyncResponse,
};
use unimsg_proto::{ConversationId, ErrorBody, MessageId, Seq};
use utoipa::IntoParams;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, PathId, PathPair, Query, UserAuth, path_id};

#[utoipa::path(
    post,
    path = "/v1/messages",
    operation_id = "send_message",
    tag = "messages",
    summary = "Send a direct or group message",
    description = "`to` is `{\"user\": id}` or `{\"group\": id}`. Idempotent on `client_msg_id`: a retry returns the original message with `duplicate: true`. Answered only once the message is durable; `seq` is its position in the sender's own inbox. The recipient — or every member of the group, each with their own seq, in one transaction — receives `message.new`.",
    request_body = SendRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The stored message.", body = SendResponse),
        (status = 403, description = "Refused: the recipient does not take messages from the caller, or the caller is not a member of the group or is muted in it (`forbidden`); or the before-send hook (`hooks.before_send`) rejected it, with its reason as the message (`rejected`).", body = ErrorBody),
        (status = 404, description = "The recipient or the group does not exist (`not_found`).", body = ErrorBody),
        (status = 413, description = "The body or the content is over its limit (`payload_too_large`).", body = ErrorBody),
        (status = 429, description = "The sender is over `limits.send_per_minute` messages or `limits.deliveries_per_minute` inbox rows for others (a group message counts its other members); `Retry-After` says when to try again (`rate_limited`).", body = ErrorBody),
    ),
)]
/// `POST /v1/messages`
pub(crate) async fn send(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    Json(req): Json<SendRequest>,
) -> Result<axum::Json<SendResponse>, ApiError> {
    Ok(axum::Json(state.core.send(&auth, req).await?))
}

#[utoipa::path(
    post,
    path = "/v1/messages/{id}/recall",
    operation_id = "recall_message",
    tag = "messages",
    summary = "Recall a message",
    description = "The sender withdraws a message within `messaging.recall_window_secs`; both sides receive `message.recalled` and the content becomes `null`.",
    params(("id" = MessageId, Path, description = "The message id.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Recalled."),
        (status = 403, description = "Not the caller's message (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such message (`not_found`).", body = ErrorBody),
        (status = 410, description = "The recall window has passed (`gone`).", body = ErrorBody),
    ),
)]
/// `POST /v1/messages/{id}/recall`
pub(crate) async fn recall(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let id: MessageId = path_id(&id, "message")?;
    state.core.recall(&auth, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SyncQuery {
    /// Events after this seq (0, the default, is the beginning).
    #[serde(default)]
    #[param(minimum = 0)]
    after: u64,
    /// Events per page, 1 to `messaging.max_page` (default and maximum 1000).
    #[param(minimum = 1)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/sync",
    operation_id = "sync",
    tag = "messages",
    summary = "Inbox events after a seq",
    description = "Gap-free catch-up: the caller's inbox events with `seq > after`, in order. Repeat with `after = next_after` while `has_more`.",
    params(SyncQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of events.", body = SyncResponse),
        (status = 400, description = "Bad query parameters (`bad_request`).", body = ErrorBody),
    ),
)]
/// `GET /v1/sync?after=SEQ&limit=N`
pub(crate) async fn sync(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    Query(q): Query<SyncQuery>,
) -> Result<axum::Json<SyncResponse>, ApiError> {
    Ok(axum::Json(
        state.core.sync(&auth, Seq(q.after), q.limit).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/ack",
    operation_id = "ack",
    tag = "messages",
    summary = "Acknowledge inbox events",
    description = "Records that the caller has everything up to `seq`; acks never move backwards.",
    request_body = AckRequest,
    security(("bearer" = [])),
    responses((status = 200, description = "The highest seq acknowledged so far.", body = AckResponse)),
)]
/// `POST /v1/ack`
pub(crate) async fn ack(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    Json(req): Json<AckRequest>,
) -> Result<axum::Json<AckResponse>, ApiError> {
    Ok(axum::Json(AckResponse {
        acked: state.core.ack(&auth, req.seq).await?,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/conversations",
    operation_id = "list_conversations",
    tag = "messages",
    summary = "The caller's conversations",
    description = "Each with its last message, unread count and read positions.",
    security(("bearer" = [])),
    responses((status = 200, description = "The conversations.", body = ConversationList)),
)]
/// `GET /v1/conversations`
pub(crate) async fn conversations(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
) -> Result<axum::Json<ConversationList>, ApiError> {
    Ok(axum::Json(state.core.conversations(&auth).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// Messages before this position in the conversation (`conv_seq`;
    /// `next_before` of the previous page). The newest when absent.
    #[param(minimum = 1)]
    before: Option<u64>,
    /// Messages per page, 1 to `messaging.max_page` (default 50).
    #[param(minimum = 1)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/messages",
    operation_id = "history",
    tag = "messages",
    summary = "Message history of a conversation",
    description = "Newest first; page back with `before = next_before`.",
    params(("id" = ConversationId, Path, description = "The conversation id."), HistoryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of messages.", body = HistoryPage),
        (status = 400, description = "Bad query parameters (`bad_request`).", body = ErrorBody),
        (status = 404, description = "No such conversation of the caller (`not_found`).", body = ErrorBody),
    ),
)]
/// `GET /v1/conversations/{id}/messages?before=&limit=`
pub(crate) async fn history(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
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

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/read",
    operation_id = "mark_read",
    tag = "messages",
    summary = "Mark a conversation read",
    description = "Marks the conversation read up to and including the message; the other member receives `receipt.read`. For notifications use the system conversation `s:{me}`.",
    params(("id" = ConversationId, Path, description = "The conversation id.")),
    request_body = ReadRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new read position.", body = ReadResponse),
        (status = 404, description = "No such conversation or message (`not_found`).", body = ErrorBody),
    ),
)]
/// `POST /v1/conversations/{id}/read`
pub(crate) async fn read(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
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

#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/messages/{message_id}/reads",
    operation_id = "read_count",
    tag = "messages",
    summary = "How many have read a message",
    description = "For the sender of the message: how many of the members who received it (the sender not counted, members who joined later neither) have read up to it, from their read positions (`POST /v1/conversations/{id}/read`). Direct and group conversations alike.",
    params(
        ("id" = ConversationId, Path, description = "The conversation id."),
        ("message_id" = MessageId, Path, description = "The message id."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The read count.", body = ReadCount),
        (status = 403, description = "The caller did not send the message (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such conversation of the caller, or no such message in it (`not_found`).", body = ErrorBody),
    ),
)]
/// `GET /v1/conversations/{id}/messages/{message_id}/reads`
pub(crate) async fn reads(
    State(state): State<AppState>,
    UserAuth(auth): UserAuth,
    PathPair(id, message): PathPair,
) -> Result<axum::Json<ReadCount>, ApiError> {
    let conversation: ConversationId = path_id(&id, "conversation")?;
    let message: MessageId = path_id(&message, "message")?;
    Ok(axum::Json(
        state
            .core
            .read_count(&auth, &conversation, &message)
            .await?,
    ))
}
