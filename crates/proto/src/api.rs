//! Request and response bodies of the HTTP API (`/v1/...`).
//!
//! Requests deny unknown fields: a misspelt field is an error, not a silent no-op.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::event::Event;
use crate::ids::{ConversationId, GroupId, MessageId, Platform, Seq, SessionId, UserId};

/// `POST /v1/auth/register`
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

impl std::fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("display_name", &self.display_name)
            .finish()
    }
}

/// A user as the user sees themself (`/v1/me`, register response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserProfile {
    pub user_id: UserId,
    pub username: String,
    pub display_name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// `GET /v1/users?username=`: what any signed-in user may see of another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicUser {
    pub user_id: UserId,
    pub username: String,
    pub display_name: String,
}

/// `POST /v1/auth/login`
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    pub platform: Platform,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("platform", &self.platform)
            .field("device_id", &self.device_id)
            .finish()
    }
}

/// The response of login and refresh.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub user_id: UserId,
    pub session_id: SessionId,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_token", &"[redacted]")
            .field("refresh_token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .field("user_id", &self.user_id)
            .field("session_id", &self.session_id)
            .finish()
    }
}

/// `POST /v1/auth/refresh`
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshRequest([redacted])")
    }
}

/// One entry of `GET /v1/me/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    pub session_id: SessionId,
    pub platform: Platform,
    pub device_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// True for the session that made this request.
    pub current: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionList {
    pub sessions: Vec<SessionInfo>,
}

/// The recipient of a message: `{"user": id}` for a direct message or
/// `{"group": id}` for a group the sender belongs to; exactly one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Recipient {
    User(UserId),
    Group(GroupId),
}

impl Recipient {
    /// The user's or the group's id.
    pub fn as_str(&self) -> &str {
        match self {
            Recipient::User(u) => u.as_str(),
            Recipient::Group(g) => g.as_str(),
        }
    }
}

wire_names! {
    /// The kind of a message sent by a user.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum MessageKind {
        Chat = "chat",
        Event = "event",
        Status = "status",
    }
}

/// `POST /v1/messages`, and the `send` WebSocket frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub to: Recipient,
    #[serde(default = "default_kind")]
    pub kind: MessageKind,
    pub content: serde_json::Value,
    /// The sender's own id for this message: a retry with the same id
    /// returns the original message instead of creating a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
}

fn default_kind() -> MessageKind {
    MessageKind::Chat
}

/// The answer to a send. `seq` is the position of the message in the
/// sender's own inbox (so the sender's devices can recognise it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendResponse {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub seq: Seq,
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
    /// True when this answer repeats an earlier send with the same `client_msg_id`.
    #[serde(default)]
    pub duplicate: bool,
}

/// `GET /v1/sync`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncResponse {
    pub events: Vec<Event>,
    pub next_after: Seq,
    pub has_more: bool,
}

/// `POST /v1/ack`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    pub seq: Seq,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AckResponse {
    /// The highest seq acknowledged so far (acks never move backwards).
    pub acked: Seq,
}

/// `POST /v1/conversations/{id}/read`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    pub message_id: MessageId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadResponse {
    pub conversation_id: ConversationId,
    /// The position in the conversation read up to.
    pub read_upto: u64,
}

/// A stored message, as history returns it and as `message.new` carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    /// Position of the message inside its conversation (1, 2, 3…).
    pub conv_seq: u64,
    pub from: UserId,
    pub to: Recipient,
    pub kind: MessageKind,
    /// `null` once recalled.
    pub content: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
    #[serde(default)]
    pub recalled: bool,
}

/// One entry of `GET /v1/conversations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationSummary {
    pub conversation_id: ConversationId,
    /// The other member of a direct conversation (absent for a group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<UserId>,
    /// The other member's display name (empty if the user was deleted, and
    /// for a group).
    #[serde(default)]
    pub peer_display_name: String,
    /// The group of a group conversation (`g:{group_id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    /// The group's name, for a group conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    pub last_message: Option<Message>,
    pub unread: u64,
    /// Position in the conversation this user has read up to.
    pub read_upto: u64,
    /// Position in the conversation the other side has read up to (direct
    /// conversations; 0 for a group, whose read state is per message:
    /// `GET /v1/conversations/{id}/messages/{message_id}/reads`).
    pub peer_read_upto: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationList {
    pub conversations: Vec<ConversationSummary>,
}

/// `GET /v1/conversations/{id}/messages?before=&limit=` — newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    /// Pass as `before` to get the next (older) page; absent at the beginning.
    pub next_before: Option<u64>,
}

/// `GET /v1/conversations/{id}/messages/{message_id}/reads`: how many of
/// the members who received a message have read it, from their read
/// positions. The sender is not counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadCount {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    /// Members whose read position has reached the message.
    pub read: u64,
    /// Members who received the message and are still members.
    pub members: u64,
}

/// `GET /healthz`, `GET /readyz`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
}

/// `POST /v1/auth/qr`: a login ticket for this page.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QrTicketRequest {
    pub platform: Platform,
    /// A stable id of this browser, for the session that will open. A hint,
    /// not a credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The `page_secret` this page was given with its ticket: asking again
    /// with it (same platform and device) while the ticket is open returns
    /// the same ticket and code. Without it, a new ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_secret: Option<String>,
}

impl std::fmt::Debug for QrTicketRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QrTicketRequest")
            .field("platform", &self.platform)
            .field("device_id", &self.device_id)
            .field(
                "page_secret",
                &self.page_secret.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// A QR login ticket. Keep `page_secret` on the waiting page and show
/// nobody: it is what listening for the tokens takes. The QR code
/// (`qr_url`) carries only `code`; `ticket_id` is not secret.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QrTicket {
    pub ticket_id: String,
    /// 8 characters from `23456789ABCDEFGHJKMNPQRSTUVWXYZ`.
    pub code: String,
    /// The phone page for this code, as the QR image encodes it.
    pub qr_url: String,
    /// Seconds until the ticket expires.
    pub expires_in: u64,
    /// The secret of the page that asked: required to listen on
    /// `GET /v1/auth/qr/{ticket_id}/events` and to get this ticket again.
    pub page_secret: String,
}

impl std::fmt::Debug for QrTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QrTicket")
            .field("ticket_id", &self.ticket_id)
            .field("code", &self.code)
            .field("qr_url", &self.qr_url)
            .field("expires_in", &self.expires_in)
            .field("page_secret", &"[redacted]")
            .finish()
    }
}

/// `POST /v1/auth/qr/scan`: one of the two.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QrScanRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_id: Option<String>,
    /// The human code; case, spaces and dashes do not matter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Who is asking to log in, shown to the phone before it confirms.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QrRequester {
    pub ticket_id: String,
    pub platform: Platform,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// The session a confirmation opened for the waiting page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QrConfirmed {
    pub session_id: SessionId,
}
