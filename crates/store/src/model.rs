//! Plain data passed through the storage traits.

use std::fmt;

use time::OffsetDateTime;
use unimsg_proto::api::Recipient;
use unimsg_proto::groups::{GroupRole, JoinPolicy};
use unimsg_proto::hooks::{DeliveryState, EventFilter, HookEventType};
use unimsg_proto::{
    ConversationId, EventType, GroupId, MessageId, Platform, Seq, SessionId, UserId,
};

/// An argon2id PHC string. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

/// SHA-256 of an opaque token; the token itself is never stored.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Disabled,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }

    /// The status named `name` on the wire (`active`, `disabled`).
    pub fn parse(name: &str) -> Option<Self> {
        [UserStatus::Active, UserStatus::Disabled]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub user_id: UserId,
    pub username: String,
    pub display_name: String,
    pub password_hash: Option<PasswordHash>,
    pub created_at: OffsetDateTime,
    /// `user.created`, written with the user.
    pub hook: Option<HookDraft>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub user_id: UserId,
    pub username: String,
    pub display_name: String,
    pub password_hash: Option<PasswordHash>,
    pub status: UserStatus,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub platform: Platform,
    pub device_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub platform: Platform,
    pub device_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    /// The status of the session's user, read in the same statement as the
    /// session (a user that no longer exists reads as disabled), so that
    /// one point read per request checks both.
    pub user_status: UserStatus,
}

impl Session {
    /// Not revoked, and its user is not disabled: the only state in which
    /// a session's tokens are accepted. Disabling a user revokes their
    /// sessions too; this covers a session opened while that happened.
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none() && self.user_status == UserStatus::Active
    }
}

#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub hash: TokenHash,
    pub expires_at: OffsetDateTime,
}

/// One session to revoke, with the `session.revoked` event its user gets.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub session_id: SessionId,
    pub reason: String,
    pub at: OffsetDateTime,
    /// The event's JSON data.
    pub event_data: String,
    /// Webhook events written only if this session is revoked by the call
    /// (not when it already was).
    pub hooks: Vec<HookDraft>,
}

#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    /// The token was current: the next one is stored and the old one retired.
    Rotated(Session),
    /// The token had been exchanged before: someone replays it.
    Reused(Session),
    /// Unknown, expired, or its session is revoked.
    Invalid,
}

/// AES-256-GCM output as stored: which data key, the per-row nonce and the
/// ciphertext with its tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: u32,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl Sealed {
    /// One byte string for a single column or a JSON field: a format
    /// byte (1), the key id (4 bytes, big-endian), the nonce's length
    /// (1 byte), the nonce, the ciphertext.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 + self.nonce.len() + self.ciphertext.len());
        out.push(1);
        out.extend_from_slice(&self.key_id.to_be_bytes());
        out.push(u8::try_from(self.nonce.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Reads [`Self::to_bytes`]; `None` for anything else.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (&format, rest) = bytes.split_first()?;
        if format != 1 || rest.len() < 5 {
            return None;
        }
        let key_id = u32::from_be_bytes(rest[..4].try_into().ok()?);
        let nonce_len = usize::from(rest[4]);
        let rest = &rest[5..];
        if rest.len() < nonce_len {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(nonce_len);
        Some(Self {
            key_id,
            nonce: nonce.to_vec(),
            ciphertext: ciphertext.to_vec(),
        })
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sealed(key {}, {} bytes)",
            self.key_id,
            self.ciphertext.len()
        )
    }
}

/// A data key encrypted under the master key.
#[derive(Clone)]
pub struct WrappedKey {
    pub key_id: u32,
    pub wrapped: Vec<u8>,
    pub created_at: OffsetDateTime,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WrappedKey({})", self.key_id)
    }
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub sender: UserId,
    /// A user (direct message) or a group.
    pub recipient: Recipient,
    /// `chat`, `event`, `status`, …
    pub kind: String,
    pub content: Sealed,
    pub client_msg_id: Option<String>,
    pub created_at: OffsetDateTime,
    /// Its `message.created` webhook event, written in the same
    /// transaction (only if an endpoint subscribes to it).
    pub hook: Option<HookDraft>,
    /// A direct message needs the sender and recipient to be friends
    /// (`messaging.require_friendship`); checked in the write's
    /// transaction with the rest of [`DirectRefusal`]. Ignored for groups.
    pub require_friendship: bool,
}

/// Why a direct message was not written. The write checks these in its
/// own transaction, in this order, before it looks for a duplicate. On
/// SQLite the one writer makes the check and the write one step, so a
/// block committed meanwhile cannot slip between them; on PostgreSQL the
/// check runs at READ COMMITTED before the send's row locks, as the read
/// before the write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectRefusal {
    /// The recipient does not exist.
    NoRecipient,
    /// The recipient blocked the sender.
    Blocked,
    /// `require_friendship` is set and they are not friends.
    NotFriends,
}

/// What a direct message's write reads about its recipient.
#[derive(Debug, Clone, Copy)]
pub struct RecipientFacts {
    pub exists: bool,
    /// The recipient blocked the sender.
    pub blocked: bool,
    pub friends: bool,
}

impl DirectRefusal {
    /// The refusal, if any, of a message to a recipient with these facts.
    pub fn of(facts: RecipientFacts, require_friendship: bool) -> Option<Self> {
        if !facts.exists {
            Some(DirectRefusal::NoRecipient)
        } else if facts.blocked {
            Some(DirectRefusal::Blocked)
        } else if require_friendship && !facts.friends {
            Some(DirectRefusal::NotFriends)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub conv_seq: u64,
    pub sender: UserId,
    /// A user (direct message) or a group.
    pub recipient: Recipient,
    pub kind: String,
    pub content: Sealed,
    pub client_msg_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub recalled_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone)]
pub enum AppendOutcome {
    Created {
        message: StoredMessage,
        events: Vec<StoredEvent>,
    },
    Duplicate(StoredMessage),
    /// A direct message the write refused; nothing was written.
    Refused(DirectRefusal),
}

/// An event to append that carries its own JSON data.
#[derive(Debug, Clone)]
pub struct EventDraft {
    pub user_id: UserId,
    pub kind: EventType,
    pub data: String,
    pub at: OffsetDateTime,
}

/// What a change writes besides itself, in its own transaction and only
/// when the change takes effect: inbox events for the users it concerns
/// and the webhook events that report it (the durable outbox).
#[derive(Debug, Clone, Default)]
pub struct Effects {
    pub events: Vec<EventDraft>,
    pub hooks: Vec<HookDraft>,
}

impl Effects {
    /// Inbox events and no webhook event.
    pub fn events(events: Vec<EventDraft>) -> Self {
        Self {
            events,
            hooks: Vec::new(),
        }
    }
}

/// A notification from a business system to many users, stored once.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub message_id: MessageId,
    /// `notification`, `event` or `status`.
    pub kind: String,
    /// Who it is shown as coming from (`system` by default).
    pub sender: String,
    pub content: Sealed,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct StoredNotification {
    pub message_id: MessageId,
    pub kind: String,
    pub sender: String,
    pub content: Sealed,
    pub created_at: OffsetDateTime,
}

/// Counts of a notification's recipients and one page of their states.
#[derive(Debug, Clone, Default)]
pub struct NotificationStatus {
    pub recipients: u64,
    pub sent_live: u64,
    pub delivered: u64,
    pub read: u64,
    /// One page of recipients, by user id.
    pub page: Vec<RecipientState>,
}

/// Where one recipient's copy of a notification is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientState {
    pub user: UserId,
    /// Pushed at once to a live connection of the user when it was sent.
    pub sent_live: bool,
    /// Acknowledged by a client, or read.
    pub delivered: bool,
    pub read: bool,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub display_name: Option<String>,
    pub password_hash: Option<PasswordHash>,
    pub status: Option<UserStatus>,
}

/// An admin account of the admin API.
#[derive(Debug, Clone)]
pub struct Admin {
    pub admin_id: String,
    pub secret_hash: PasswordHash,
    /// Scope names (`users:write`, `admin`, …).
    pub scopes: Vec<String>,
    pub created_at: OffsetDateTime,
    /// A disabled admin's secret, keys and tokens are all refused.
    pub disabled: bool,
    /// Admin tokens issued before this are refused: any change of the
    /// account moves it, so a changed secret or scope revokes its tokens.
    pub tokens_valid_after: OffsetDateTime,
    /// The secret its signed requests are checked with, sealed
    /// (`Sealed::to_bytes`); `None` until one is made.
    pub signing_secret: Option<Vec<u8>>,
}

/// Changes to an admin account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AdminChange {
    pub secret_hash: Option<PasswordHash>,
    pub scopes: Option<Vec<String>>,
    pub disabled: Option<bool>,
}

/// A machine's API key of an admin account. Only the key's SHA-256 is
/// stored.
#[derive(Debug, Clone)]
pub struct AdminKeyRow {
    /// `umk_…`, shown in lists; the secret part is not.
    pub key_id: String,
    pub admin_id: String,
    pub key_hash: TokenHash,
    /// Scope names; the admin's own scopes still bound them.
    pub scopes: Vec<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub last_used_ip: Option<String>,
    pub revoked_at: Option<OffsetDateTime>,
}

/// One audit record to append; the store numbers and chains it.
#[derive(Debug, Clone)]
pub struct AuditDraft {
    pub at: OffsetDateTime,
    /// Canonical JSON of the record.
    pub content: String,
}

/// A stored audit entry: `hash = H(prev_hash, id, at, content)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: u64,
    pub at_ms: i64,
    pub content: String,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// Filters of an audit query.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub after: u64,
    pub limit: u32,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub operation_id: Option<String>,
    /// Only entries recorded at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only entries recorded before this time.
    pub until: Option<OffsetDateTime>,
}

#[derive(Debug, Clone)]
pub enum EventBody {
    /// `message.new`: the message itself (still sealed).
    Message(Box<StoredMessage>),
    /// `notification.new`: the notification (still sealed).
    Notification(Box<StoredNotification>),
    /// `broadcast.new`: the broadcast (still sealed).
    Broadcast(Box<StoredNotification>),
    /// Any other event: its JSON data.
    Data(String),
}

#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub user_id: UserId,
    pub seq: Seq,
    pub kind: EventType,
    pub at: OffsetDateTime,
    pub body: EventBody,
}

/// A conversation as one member sees it.
#[derive(Debug, Clone)]
pub struct ConversationState {
    pub conversation_id: ConversationId,
    pub read_upto: u64,
    /// Every member's read position, this user's included.
    pub members_read: Vec<(UserId, u64)>,
    pub last_message: Option<StoredMessage>,
    /// Messages from others after this user's read position.
    pub unread: u64,
}

/// A friend request.
#[derive(Debug, Clone, PartialEq)]
pub struct FriendRequestRow {
    pub from: UserId,
    pub to: UserId,
    /// The requester's words, sealed like message content.
    pub message: Option<StoredText>,
    pub created_at: OffsetDateTime,
}

/// User-written text as a row holds it: sealed, or plaintext in rows
/// written before the text was sealed (they still read).
#[derive(Debug, Clone, PartialEq)]
pub enum StoredText {
    Sealed(Sealed),
    /// A row from before sealing; never written any more by the core.
    Plain(String),
}

/// Which of a user's pending friend requests: to them or from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDirection {
    Incoming,
    Outgoing,
}

/// What the addressee of a friend request does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accept,
    Decline,
}

/// Whether a block is put on or lifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockChange {
    Block,
    Unblock,
}

/// Whether a friendship is made or ended (the admin batch update).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FriendshipChange {
    Befriend,
    Unfriend,
}

/// Which part of a notification's audience an append carries: the first
/// part also stores the notification itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudiencePart {
    First,
    Rest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Recorded; waiting for the other side.
    Pending,
    /// The other side had asked too: they are friends now.
    Friends,
    /// Nothing to do: a request is already pending, or they are friends.
    Unchanged,
}

/// A friendship as one side sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FriendRow {
    pub friend: UserId,
    pub tags: Vec<String>,
    pub remark: String,
    pub since: OffsetDateTime,
}

/// A group as stored (dissolved groups are not returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub group_id: GroupId,
    pub name: String,
    pub notice: String,
    pub join_policy: JoinPolicy,
    pub all_muted: bool,
    /// `None` only if the owner's account was deleted.
    pub owner: Option<UserId>,
    pub member_count: u64,
    /// Counts the group's changes; a change names the version it was
    /// decided on (optimistic concurrency).
    pub version: u64,
    pub created_at: OffsetDateTime,
}

/// A new group; its members come separately.
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub group_id: GroupId,
    pub name: String,
    pub notice: String,
    pub join_policy: JoinPolicy,
    pub created_at: OffsetDateTime,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub user_id: UserId,
    pub display_name: String,
    pub role: GroupRole,
    pub muted_until: Option<OffsetDateTime>,
    pub joined_at: OffsetDateTime,
    /// The conversation position when the member joined: they receive and
    /// see only later messages.
    pub since: u64,
}

/// One edit of a group, applied by [`crate::Groups::change_group`].
#[derive(Debug, Clone)]
pub enum GroupEdit {
    /// `None` fields stay as they are.
    Profile {
        name: Option<String>,
        notice: Option<String>,
        join_policy: Option<JoinPolicy>,
    },
    AllMuted(bool),
    /// Users already in are skipped; unknown users are `NotFound("user")`.
    AddMembers(Vec<(UserId, GroupRole)>),
    RemoveMembers(Vec<UserId>),
    SetRole(UserId, GroupRole),
    Mute(UserId, Option<OffsetDateTime>),
    /// Ends the group: its members and read positions go, its id stays
    /// taken.
    Dissolve,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_round_trip_and_garbage_is_refused() {
        let sealed = Sealed {
            key_id: 0x0102_0304,
            nonce: vec![9; 12],
            ciphertext: b"cipher and tag".to_vec(),
        };
        assert_eq!(Sealed::from_bytes(&sealed.to_bytes()), Some(sealed.clone()));
        let empty = Sealed {
            key_id: 1,
            nonce: Vec::new(),
            ciphertext: Vec::new(),
        };
        assert_eq!(Sealed::from_bytes(&empty.to_bytes()), Some(empty));
        assert_eq!(Sealed::from_bytes(b""), None);
        assert_eq!(Sealed::from_bytes(b"plain text"), None, "wrong format byte");
        let mut short = sealed.to_bytes();
        short.truncate(8);
        assert_eq!(Sealed::from_bytes(&short), None, "nonce cut off");
    }
}

/// A webhook endpoint as stored. Secrets are sealed with the master key
/// (the endpoint id as associated data).
#[derive(Clone)]
pub struct WebhookRow {
    pub webhook_id: String,
    pub url: String,
    pub events: EventFilter,
    pub description: String,
    pub enabled: bool,
    pub include_content: bool,
    pub secret: Sealed,
    /// The secret before the last rotation, and until when it signs too.
    pub previous_secret: Option<(Sealed, OffsetDateTime)>,
    /// Since when every attempt failed (cleared by a success).
    pub failing_since: Option<OffsetDateTime>,
    /// Why the server disabled it, if it did.
    pub disabled_reason: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl fmt::Debug for WebhookRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookRow")
            .field("webhook_id", &self.webhook_id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .field("secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The fields of an endpoint to change (`None`: unchanged). Enabling
/// clears `failing_since` and `disabled_reason` and makes what is pending
/// due at once.
#[derive(Debug, Clone, Default)]
pub struct WebhookChange {
    pub url: Option<String>,
    pub events: Option<EventFilter>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub include_content: Option<bool>,
}

/// An event for the webhook outbox. It is written only if an enabled
/// endpoint subscribes to its type, with one pending delivery for each
/// such endpoint.
#[derive(Debug, Clone)]
pub struct HookDraft {
    /// `evt_…`: the `webhook-id` of every attempt.
    pub event_id: String,
    pub kind: HookEventType,
    /// The event's `data`, JSON.
    pub data: String,
    /// `message.created`: the message whose content endpoints with
    /// `include_content` receive (read and opened at delivery, so the
    /// outbox holds no plaintext).
    pub message_id: Option<MessageId>,
    pub at: OffsetDateTime,
}

/// An event of the outbox.
#[derive(Debug, Clone)]
pub struct HookEventRow {
    /// The outbox position (commit order on one node).
    pub seq: i64,
    pub event_id: String,
    pub kind: HookEventType,
    pub data: String,
    pub message_id: Option<MessageId>,
    pub at: OffsetDateTime,
}

/// A delivery claimed for one attempt: nobody else attempts it until the
/// lease given to [`crate::Webhooks::claim_deliveries`] ends.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub event: HookEventRow,
    /// This attempt's number, from 1.
    pub attempt: u32,
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    /// Attempt again at this time.
    RetryAt(OffsetDateTime),
    /// No attempts left.
    Failed,
}

/// The result of one attempt, recorded with [`crate::Webhooks::finish_deliveries`].
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub event_seq: i64,
    /// The claim's [`ClaimedDelivery::attempt`]. A result is recorded only
    /// while the delivery is still at that attempt: one queued again
    /// meanwhile (a retry, a replay, another node's claim after the lease)
    /// keeps its new state.
    pub attempt: u32,
    pub outcome: AttemptOutcome,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// One delivery as listed.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub event: HookEventRow,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// When a pending delivery is due (or its lease ends).
    pub next_at: OffsetDateTime,
}
