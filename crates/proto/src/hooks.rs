//! Hooks: the webhook admin API (`/v1/admin/webhooks…`), the events a
//! webhook receives, and the synchronous before-send hook's request and
//! answer.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Seq;
use crate::api::MessageKind;
use crate::ids::{ConversationId, GroupId, MessageId, Platform, SessionId, UserId};

wire_names! {
    /// The events a webhook endpoint can subscribe to (the catalogue).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum HookEventType {
        /// A direct or group message was stored.
        MessageCreated = "message.created",
        /// A recipient acknowledged its inbox up to a message.
        MessageDelivered = "message.delivered",
        /// A recipient read a conversation up to a message.
        MessageRead = "message.read",
        MessageRecalled = "message.recalled",
        /// A recipient's client acknowledged a notification.
        NotificationDelivered = "notification.delivered",
        NotificationRead = "notification.read",
        UserCreated = "user.created",
        UserUpdated = "user.updated",
        UserDisabled = "user.disabled",
        UserDeleted = "user.deleted",
        /// A session was created (password, code or QR login).
        UserLogin = "user.login",
        UserLogout = "user.logout",
        SessionRevoked = "session.revoked",
        /// The user's first live connection opened.
        UserOnline = "user.online",
        /// The user's last live connection closed.
        UserOffline = "user.offline",
        FriendRequested = "friend.requested",
        FriendAdded = "friend.added",
        FriendRemoved = "friend.removed",
        BlockAdded = "block.added",
        BlockRemoved = "block.removed",
        GroupCreated = "group.created",
        GroupUpdated = "group.updated",
        GroupMemberAdded = "group.member_added",
        GroupMemberRemoved = "group.member_removed",
        GroupDissolved = "group.dissolved",
        QrConfirmed = "qr.confirmed",
        /// Refresh-token reuse, a refused admin credential, a lockout, a
        /// disabled webhook endpoint.
        SecurityAlert = "security.alert",
        /// Queued by `POST /v1/admin/webhooks/{id}/test`.
        WebhookTest = "webhook.test",
    }
}

/// What an endpoint subscribes to: a list of event types, or `["*"]` for
/// all of them (also the ones added later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Only(Vec<HookEventType>),
}

impl EventFilter {
    /// The wire names, `["*"]` for all.
    pub fn names(&self) -> Vec<String> {
        match self {
            EventFilter::All => vec!["*".to_owned()],
            EventFilter::Only(kinds) => kinds.iter().map(|k| k.as_str().to_owned()).collect(),
        }
    }

    /// Parses a list of wire names; names the first one that is unknown.
    pub fn parse(names: &[String]) -> Result<Self, String> {
        if names.is_empty() {
            return Err("events must list at least one event type, or \"*\"".into());
        }
        if names.iter().any(|n| n == "*") {
            return Ok(EventFilter::All);
        }
        let mut kinds = Vec::with_capacity(names.len());
        for name in names {
            let kind = HookEventType::parse(name)
                .ok_or_else(|| format!("{name:?} is not a webhook event type"))?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(EventFilter::Only(kinds))
    }
}

/// `POST /v1/admin/webhooks`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `http` or `https`; private, loopback and link-local targets are
    /// refused unless `hooks.allow_private_targets`.
    #[cfg_attr(feature = "openapi", schema(example = "https://example.com/unimsg"))]
    pub url: String,
    /// Event types, or `["*"]` for every type.
    #[cfg_attr(feature = "openapi", schema(example = json!(["message.created", "user.login"])))]
    pub events: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `message.created` carries the message content.
    #[serde(default)]
    pub include_content: bool,
}

fn yes() -> bool {
    true
}

/// `PATCH /v1/admin/webhooks/{id}`: the fields to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PatchWebhook {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Re-enabling makes what is pending due at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_content: Option<bool>,
}

/// A webhook endpoint, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Webhook {
    pub webhook_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub include_content: bool,
    /// Why it was disabled by the server, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Since when every attempt failed, while it keeps failing.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub failing_since: Option<OffsetDateTime>,
    /// Deliveries waiting (due or retrying).
    pub pending: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The answer to creating an endpoint or rotating its secret: the only
/// time the secret is shown.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_` and the base64 of the key: give it to a Standard Webhooks
    /// library as it is.
    pub secret: String,
}

impl std::fmt::Debug for WebhookWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookWithSecret")
            .field("webhook", &self.webhook)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// `GET /v1/admin/webhooks`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

wire_names! {
    /// Where one delivery stands.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum DeliveryState {
        /// Waiting for its first attempt or for a retry.
        Pending = "pending",
        Succeeded = "succeeded",
        /// Every attempt failed; listed for a retry or a replay.
        Failed = "failed",
    }
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// The `webhook-id` header of every attempt.
    pub event_id: String,
    /// The outbox position, for paging (`before`).
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: HookEventType,
    pub status: DeliveryState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub attempts: u32,
    /// The HTTP status of the last attempt, if it got an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// Why the last attempt failed without an answer (timeout, refused, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When a pending delivery is next attempted.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_attempt_at: Option<OffsetDateTime>,
}

/// `GET /v1/admin/webhooks/{id}/deliveries`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    /// Pass as `before` for the next (older) page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// `POST /v1/admin/webhooks/{id}/replay`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Every event since this time that the endpoint subscribes to is
    /// queued again (a new attempt series, the same `webhook-id`).
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

/// The answer to a retry, a replay or a test.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Requeued {
    /// How many deliveries are now pending because of the call.
    pub queued: u64,
    /// The event queued by a test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

/// What the before-send hook receives (signed like a webhook).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BeforeSendRequest {
    pub sender: UserId,
    /// `{"user": id}` or `{"group": id}`, as the sender wrote it.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub to: serde_json::Value,
    pub kind: MessageKind,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub content: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
}

/// The before-send hook's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum BeforeSendAnswer {
    /// Store and deliver the message as it is.
    Allow,
    /// Refuse it: the sender gets 403 `rejected` with `reason`.
    Reject {
        #[serde(default)]
        reason: String,
    },
    /// Store and deliver `content` instead.
    Modify {
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        content: serde_json::Value,
    },
}

/// `message.created`: a message was stored. `content` is there only for
/// endpoints with `include_content`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageCreatedData {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub sender: UserId,
    /// A direct message's recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<UserId>,
    /// A group message's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    pub kind: MessageKind,
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
}

/// `message.delivered`: `user_id` acknowledged its inbox up to `seq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageDeliveredData {
    pub user_id: UserId,
    pub seq: Seq,
}

/// `message.read`: `user_id` read the conversation up to `message_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageReadData {
    pub user_id: UserId,
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
}

/// `message.recalled`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageRecalledHookData {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub sender: UserId,
}

/// `notification.delivered` and `notification.read`: one recipient.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotificationStatusData {
    pub message_id: MessageId,
    pub user_id: UserId,
}

/// `user.created`, `user.updated`, `user.disabled`, `user.deleted`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserData {
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `active` or `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// `user.login`: a session was created.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginData {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub platform: Platform,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `user.logout` and `session.revoked` (with the reason).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionData {
    pub user_id: UserId,
    pub session_id: SessionId,
    /// `session.revoked`: `logout`, `kicked`, `admin`, `password_changed`,
    /// `refresh_token_reuse`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `user.online`, `user.offline`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceData {
    pub user_id: UserId,
}

/// `friend.requested` (`user_id` asked `other_id`), `friend.added`,
/// `friend.removed`, `block.added` and `block.removed` (`user_id` blocked
/// `other_id`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RelationData {
    pub user_id: UserId,
    pub other_id: UserId,
}

/// `qr.confirmed`: a QR login was confirmed from a logged-in device.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QrConfirmedData {
    pub ticket_id: String,
    pub user_id: UserId,
}

wire_names! {
    /// What a `security.alert` is about.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum AlertKind {
        /// A refresh token was used twice: its session is revoked.
        RefreshTokenReuse = "refresh_token_reuse",
        /// A sign-in from a device and an address the user never used.
        NewPlace = "new_place",
        /// Failed logins put an account or address under back-off.
        LoginBackoff = "login_backoff",
        /// A request with a wrong admin credential.
        AdminCredentialRefused = "admin_credential_refused",
        /// A webhook endpoint failed for `hooks.disable_after_hours`.
        WebhookDisabled = "webhook_disabled",
        /// Failed logins for many accounts from one address (credential
        /// stuffing): `auth.stuffing_accounts` within `auth.stuffing_window_secs`.
        CredentialStuffing = "credential_stuffing",
        /// An admin credential was used from an address its account never
        /// used before.
        AdminNewIp = "admin_new_ip",
        /// Verifying the audit log's chain failed: an entry was altered,
        /// removed or written without the audit key.
        AuditChainBroken = "audit_chain_broken",
    }
}

/// `security.alert`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecurityAlertData {
    pub alert: AlertKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `webhook.test`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookTestData {
    pub webhook_id: String,
}
