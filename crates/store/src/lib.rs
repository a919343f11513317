//! Durable state of unimsg behind domain traits.
//!
//! The core talks to [`Store`] only; no backend type appears in a trait
//! signature. Two backends implement the traits, laid out alike (one file
//! per trait): the embedded `unimsg-store-sqlite` and the cluster's
//! `unimsg-store-postgres`. Message content reaches the store already
//! sealed ([`Sealed`]): the store never sees plaintext.

mod model;
pub mod sql;
pub mod timing;
// The suite is test code that backends' tests enable: it unwraps freely,
// like any test (`allow-unwrap-in-tests` cannot see it behind a feature).
#[cfg(feature = "suite")]
#[allow(clippy::unwrap_used)]
pub mod suite;

pub use model::*;

use async_trait::async_trait;
use time::OffsetDateTime;
use unimsg_proto::groups::GroupRole;
use unimsg_proto::hooks::DeliveryState;
use unimsg_proto::{ConversationId, EventType, GroupId, MessageId, Seq, SessionId, UserId};

/// Why a storage operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated; the string names what clashed.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The row changed after the version a change was decided on (see
    /// [`Groups::change_group`]); the caller decides again.
    #[error("changed concurrently")]
    Stale,
    /// A referenced row does not exist.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// The backend cannot be reached or is shutting down; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with something unexpected (a bug or corruption).
    #[error("store failure: {0}")]
    Internal(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Users and their credentials.
#[async_trait]
pub trait Users: Send + Sync {
    /// Creates a user; `Conflict` if the id or the username is taken.
    async fn create_user(&self, user: NewUser) -> Result<User>;
    async fn user(&self, id: &UserId) -> Result<Option<User>>;
    async fn user_by_username(&self, username: &str) -> Result<Option<User>>;
    /// The ids among `ids` that name no user, in input order (duplicates
    /// kept): one read for a whole audience.
    async fn unknown_users(&self, ids: Vec<UserId>) -> Result<Vec<UserId>>;
    /// Creates many users in one transaction; each item succeeds or fails
    /// alone (`Conflict` for a taken id or username), in input order.
    async fn import_users(&self, users: Vec<NewUser>) -> Result<Vec<Result<User>>>;
    /// Users whose id, username or display name contains `query` (ASCII
    /// letters compared without case; an empty query matches everyone),
    /// by user id, those after `after` only, at most `limit`.
    async fn search_users(
        &self,
        query: &str,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<User>>;
    /// `NotFound` for an unknown user. `hooks` are written with the change.
    async fn update_user(
        &self,
        id: &UserId,
        update: UserUpdate,
        hooks: Vec<HookDraft>,
    ) -> Result<User>;
    /// Deletes the user with their sessions, inbox and read positions; the
    /// messages they exchanged stay in the other members' history.
    /// `hooks` are written with the deletion.
    async fn delete_user(&self, id: &UserId, hooks: Vec<HookDraft>) -> Result<()>;
}

/// Friend requests, friendships (with each side's tags and remark) and
/// blocks. Writes take their [`Effects`] and write them in the same
/// transaction, only when something changed.
#[async_trait]
pub trait Relationships: Send + Sync {
    /// Records a request from `from` to `to`. When `to` had already asked
    /// `from`, the two become friends instead (`on_friends` is written
    /// then, `on_request` otherwise).
    async fn request_friend(
        &self,
        request: FriendRequestRow,
        on_request: Effects,
        on_friends: Effects,
    ) -> Result<(RequestOutcome, Vec<StoredEvent>)>;
    /// Accepts or declines the pending request `from → to`.
    /// `NotFound` when there is none.
    async fn answer_friend_request(
        &self,
        from: &UserId,
        to: &UserId,
        answer: Answer,
        at: OffsetDateTime,
        effects: Effects,
    ) -> Result<Vec<StoredEvent>>;
    /// Pending requests to or from the user.
    async fn friend_requests(
        &self,
        user: &UserId,
        direction: RequestDirection,
    ) -> Result<Vec<FriendRequestRow>>;
    async fn friends(&self, user: &UserId) -> Result<Vec<FriendRow>>;
    async fn are_friends(&self, a: &UserId, b: &UserId) -> Result<bool>;
    /// Ends a friendship on both sides; `false` if there was none.
    async fn remove_friend(
        &self,
        user: &UserId,
        friend: &UserId,
        effects: Effects,
    ) -> Result<(bool, Vec<StoredEvent>)>;
    /// `NotFound` when they are not friends.
    async fn update_friend(
        &self,
        user: &UserId,
        friend: &UserId,
        tags: Vec<String>,
        remark: String,
    ) -> Result<FriendRow>;
    /// `false` when nothing changed (already blocked / not blocked).
    async fn set_block(
        &self,
        user: &UserId,
        other: &UserId,
        change: BlockChange,
        at: OffsetDateTime,
        effects: Effects,
    ) -> Result<(bool, Vec<StoredEvent>)>;
    async fn blocks(&self, user: &UserId) -> Result<Vec<(UserId, OffsetDateTime)>>;
    /// Whether `blocker` blocked `other`.
    async fn is_blocked(&self, blocker: &UserId, other: &UserId) -> Result<bool>;
    /// Makes or ends a friendship directly (admin batch update); `false`
    /// when it already was so.
    async fn set_friendship(
        &self,
        a: &UserId,
        b: &UserId,
        change: FriendshipChange,
        at: OffsetDateTime,
        effects: Effects,
    ) -> Result<(bool, Vec<StoredEvent>)>;
}

/// Admin accounts of the admin API.
#[async_trait]
pub trait Admins: Send + Sync {
    async fn admin(&self, id: &str) -> Result<Option<Admin>>;
    /// Every admin account, by id.
    async fn admins(&self) -> Result<Vec<Admin>>;
    /// Applies `change` and moves `tokens_valid_after` to `at`;
    /// `NotFound` for an unknown admin.
    async fn update_admin(
        &self,
        id: &str,
        change: AdminChange,
        at: OffsetDateTime,
    ) -> Result<Admin>;
    /// Replaces the account's request signing secret (sealed);
    /// `NotFound` for an unknown admin.
    async fn set_admin_signing_secret(&self, id: &str, sealed: Vec<u8>) -> Result<()>;
    /// Deletes the account and its keys; `false` if there was none.
    async fn delete_admin(&self, id: &str) -> Result<bool>;
    /// `NotFound("admin")` for an unknown admin; `Conflict` for a taken id.
    async fn create_admin_key(&self, key: AdminKeyRow) -> Result<()>;
    /// An admin's keys, newest first (revoked and expired ones too).
    async fn admin_keys(&self, admin_id: &str) -> Result<Vec<AdminKeyRow>>;
    /// The key with this hash, if any.
    async fn admin_key(&self, hash: &TokenHash) -> Result<Option<AdminKeyRow>>;
    /// Records a use of a key.
    async fn touch_admin_key(
        &self,
        key_id: &str,
        at: OffsetDateTime,
        ip: Option<String>,
    ) -> Result<()>;
    /// `false` when the admin has no such key that is not revoked.
    async fn revoke_admin_key(
        &self,
        admin_id: &str,
        key_id: &str,
        at: OffsetDateTime,
    ) -> Result<bool>;
    /// Creates an admin; `Conflict` if the id exists.
    async fn create_admin(&self, admin: Admin) -> Result<()>;
    /// Records that the admin's credential was used from `ip` and says
    /// whether that address is new for the account.
    async fn note_admin_address(
        &self,
        admin_id: &str,
        ip: &str,
        at: OffsetDateTime,
    ) -> Result<AddressSeen>;
}

/// What [`Admins::note_admin_address`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSeen {
    /// The account's first recorded address.
    First,
    /// An address the account used before.
    Known,
    /// An address the account never used, when it used others.
    New,
}

impl AddressSeen {
    /// From whether the account had any address and whether this one
    /// was inserted now.
    pub fn of(had_any: bool, inserted: bool) -> Self {
        match (had_any, inserted) {
            (_, false) => AddressSeen::Known,
            (false, true) => AddressSeen::First,
            (true, true) => AddressSeen::New,
        }
    }
}

/// Notifications from business systems, stored once, with one inbox event
/// per recipient.
#[async_trait]
pub trait Notifications: Send + Sync {
    /// Stores the notification (with the `First` part) and appends `notification.new`
    /// to each recipient's inbox. Unknown users are skipped. Returns each
    /// recipient's seq. Large audiences are appended in several calls.
    async fn append_notification(
        &self,
        notification: NewNotification,
        part: AudiencePart,
        recipients: Vec<UserId>,
    ) -> Result<Vec<(UserId, Seq)>>;
    async fn notification(&self, id: &MessageId) -> Result<Option<StoredNotification>>;
    /// Recipient counts and the page of recipients after `after`.
    async fn notification_status(
        &self,
        id: &MessageId,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<NotificationStatus>;
    /// Records that the notification was pushed at once to these
    /// recipients, who had a live connection when it was sent. Users who
    /// did not receive it are skipped.
    async fn mark_notification_sent_live(&self, id: &MessageId, users: Vec<UserId>) -> Result<()>;
    /// Marks `user`'s notifications up to the one given as read; returns
    /// that notification's seq in the user's inbox. `NotFound` if the user
    /// did not receive it. `hooks` are written when a notification that
    /// was unread became read.
    async fn mark_notifications_read(
        &self,
        user: &UserId,
        upto: &MessageId,
        at: OffsetDateTime,
        hooks: Vec<HookDraft>,
    ) -> Result<Seq>;
}

/// Announcements to every user, stored once: no per-user row. They take
/// their place in each user's visible stream by commit order (see
/// `events_after`).
#[async_trait]
pub trait Broadcasts: Send + Sync {
    /// Stores a broadcast and returns its position in the global broadcast
    /// stream (`bseq`, 1, 2, 3…).
    async fn append_broadcast(&self, broadcast: NewNotification) -> Result<u64>;
    /// Where committed broadcast `bseq` sits in each listed user's visible
    /// stream: its seq there. Users created after it (who never see it) and
    /// unknown users are left out. One call places a broadcast for every
    /// online user, instead of each connection reading its stream.
    async fn broadcast_positions(
        &self,
        bseq: u64,
        users: Vec<UserId>,
    ) -> Result<Vec<(UserId, Seq)>>;
}

/// The tamper-evident audit log.
#[async_trait]
pub trait Audit: Send + Sync {
    /// Appends one entry chained to the newest: `chain(prev_hash, bytes)`
    /// gives the entry's hash over the previous hash and
    /// [`audit_bytes`] of the entry.
    async fn append_audit(&self, draft: AuditDraft, chain: ChainFn) -> Result<AuditRow>;
    /// Entries with id > `query.after`, oldest first, filtered.
    async fn audit_entries(&self, query: AuditQuery) -> Result<Vec<AuditRow>>;
    /// The newest entry, if any.
    async fn audit_head(&self) -> Result<Option<AuditRow>>;
}

/// Computes an audit entry's hash from the previous hash and the entry's bytes.
pub type ChainFn = std::sync::Arc<dyn Fn(&[u8; 32], &[u8]) -> [u8; 32] + Send + Sync>;

/// The bytes an audit entry's hash covers besides the previous hash: its
/// number, its time and its content, so that reordering, renumbering or
/// editing any of them breaks the chain.
pub fn audit_bytes(id: u64, at_ms: i64, content: &str) -> Vec<u8> {
    format!("{id}\n{at_ms}\n{content}").into_bytes()
}

/// Merges a user's inbox rows (each with its `bpos`) and broadcasts (each
/// with its `bseq`), both in order, into the visible stream after
/// `position`: broadcast `k` comes before an inbox row iff `k <= bpos`, and
/// the events are numbered `position + 1, position + 2, …` (ARCHITECTURE.md,
/// "Broadcast positions"). Every backend reads the two tails and calls this.
pub fn merge_broadcasts(
    user: &UserId,
    rows: Vec<(i64, StoredEvent)>,
    casts: Vec<(i64, StoredNotification)>,
    position: u64,
    limit: u32,
) -> Vec<StoredEvent> {
    let mut rows = rows.into_iter().peekable();
    let mut casts = casts.into_iter().peekable();
    let mut out = Vec::new();
    let mut seq = position;
    while out.len() < limit as usize {
        let take_cast = match (rows.peek(), casts.peek()) {
            (None, None) => break,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (Some((bpos, _)), Some((bseq, _))) => bseq <= bpos,
        };
        seq += 1;
        if take_cast {
            let Some((_, b)) = casts.next() else { break };
            out.push(StoredEvent {
                user_id: user.clone(),
                seq: Seq(seq),
                kind: EventType::BroadcastNew,
                at: b.created_at,
                body: EventBody::Broadcast(Box::new(b)),
            });
        } else {
            let Some((_, mut e)) = rows.next() else { break };
            e.seq = Seq(seq);
            out.push(e);
        }
    }
    out
}

/// Login sessions and their refresh tokens.
#[async_trait]
pub trait Sessions: Send + Sync {
    /// Opens a session with its first refresh token and, in the same
    /// transaction, revokes the sessions the device policy kicks out
    /// (appending their `session.revoked` events) and writes `hooks`.
    async fn open_session(
        &self,
        session: NewSession,
        refresh: NewRefreshToken,
        kick: Vec<Revocation>,
        hooks: Vec<HookDraft>,
    ) -> Result<Vec<StoredEvent>>;
    async fn session(&self, id: &SessionId) -> Result<Option<Session>>;
    /// Whether `user` had a session before (revoked or not) and none of
    /// them came from this device or this IP: a sign-in from somewhere new.
    async fn is_new_place(
        &self,
        user: &UserId,
        device_id: Option<&str>,
        ip: Option<&str>,
    ) -> Result<bool>;
    /// The user's sessions that are not revoked, oldest first.
    async fn active_sessions(&self, user: &UserId) -> Result<Vec<Session>>;
    /// Revokes sessions that are still active and appends one event for each;
    /// sessions already revoked are skipped.
    async fn revoke_sessions(&self, revocations: Vec<Revocation>) -> Result<Vec<StoredEvent>>;
    /// Exchanges a refresh token for the next one. A token that was already
    /// exchanged yields [`RefreshOutcome::Reused`] and nothing changes.
    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        next: NewRefreshToken,
        now: OffsetDateTime,
    ) -> Result<RefreshOutcome>;
}

/// Per-user inboxes, messages and conversations.
#[async_trait]
pub trait Inbox: Send + Sync {
    /// Whether this store's writes (of every trait) are applied in the
    /// order their futures were first polled: a caller that polls one
    /// append once, then starts the next, has them stored in that order
    /// without waiting for the first to commit. Backends that cannot say
    /// so answer `false`, and such callers wait for each commit.
    fn applies_in_poll_order(&self) -> bool {
        false
    }
    /// Stores a message and appends a `message.new` event to each recipient's
    /// inbox (the sender included when listed), atomically. A message whose
    /// `(sender, client_msg_id)` exists already is returned as
    /// [`AppendOutcome::Duplicate`] and nothing is written.
    async fn append_message(
        &self,
        message: NewMessage,
        recipients: Vec<UserId>,
    ) -> Result<AppendOutcome>;
    /// Appends events that carry their own data, atomically.
    async fn append_events(&self, events: Vec<EventDraft>) -> Result<Vec<StoredEvent>>;
    /// Events of `user` with seq > `after`, in seq order, at most `limit`.
    async fn events_after(&self, user: &UserId, after: Seq, limit: u32)
    -> Result<Vec<StoredEvent>>;
    /// The newest seq of the inbox (0 when empty).
    async fn last_seq(&self, user: &UserId) -> Result<Seq>;
    /// Records delivery up to `seq` (clamped to the inbox's last seq; never
    /// moves backwards) and returns the acknowledged position. `hooks` are
    /// written when the position moved.
    async fn ack(&self, user: &UserId, seq: Seq, hooks: Vec<HookDraft>) -> Result<Seq>;
    async fn acked(&self, user: &UserId) -> Result<Seq>;
    async fn message(&self, id: &MessageId) -> Result<Option<StoredMessage>>;
    /// The message `sender` stored with `client_msg_id`, if any (a retry).
    async fn sent_message(
        &self,
        sender: &UserId,
        client_msg_id: &str,
    ) -> Result<Option<StoredMessage>>;
    /// The seq of a message's `message.new` event in `user`'s inbox.
    async fn message_seq(&self, user: &UserId, id: &MessageId) -> Result<Option<Seq>>;
    /// Moves `user`'s read position in a conversation forward to `upto`.
    /// When it moved, `effects` are written too; returns the read position.
    async fn mark_read(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        upto: u64,
        effects: Effects,
    ) -> Result<(u64, Vec<StoredEvent>)>;
    /// Marks a message recalled and writes `effects`; a message already
    /// recalled is `Conflict`.
    async fn recall(
        &self,
        id: &MessageId,
        now: OffsetDateTime,
        effects: Effects,
    ) -> Result<Vec<StoredEvent>>;
    /// The conversations `user` is a member of, most recently active first.
    async fn conversations(&self, user: &UserId) -> Result<Vec<ConversationState>>;
    /// Messages of a conversation with `conv_seq < before`, newest first.
    async fn history(
        &self,
        conversation: &ConversationId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>>;
}

/// Webhook endpoints and the outbox of their events. An event enters the
/// outbox in the transaction of the change that causes it: every write
/// that a webhook event reports takes its [`HookDraft`]s (in [`Effects`],
/// [`NewMessage::hook`], [`NewUser::hook`], [`Revocation::hooks`] or a
/// `hooks` parameter). [`Webhooks::enqueue_hook_events`] is for events
/// that report no stored change (a presence change, an alert). Each
/// endpoint's deliveries are attempted under leases, so that on any
/// number of nodes one attempt is made by one node.
#[async_trait]
pub trait Webhooks: Send + Sync {
    /// `Conflict("webhook")` if the id exists.
    async fn create_webhook(&self, webhook: WebhookRow) -> Result<()>;
    /// Every endpoint, oldest first.
    async fn webhooks(&self) -> Result<Vec<WebhookRow>>;
    async fn webhook(&self, id: &str) -> Result<Option<WebhookRow>>;
    /// `NotFound("webhook")` for an unknown id.
    async fn update_webhook(
        &self,
        id: &str,
        change: WebhookChange,
        at: OffsetDateTime,
    ) -> Result<WebhookRow>;
    /// Removes the endpoint and its deliveries; `false` if there was none.
    async fn delete_webhook(&self, id: &str) -> Result<bool>;
    /// Makes `secret` the signing secret; the current one keeps signing
    /// until `previous_until`.
    async fn rotate_webhook_secret(
        &self,
        id: &str,
        secret: Sealed,
        previous_until: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<WebhookRow>;
    /// Disables an endpoint that kept failing; its pending deliveries stay.
    async fn disable_webhook(&self, id: &str, reason: &str, at: OffsetDateTime) -> Result<()>;
    /// Writes the events that an enabled endpoint subscribes to, with a
    /// pending delivery for each such endpoint, atomically.
    async fn enqueue_hook_events(&self, events: Vec<HookDraft>) -> Result<()>;
    /// Writes an event for one endpoint only, whatever it subscribes to
    /// (`webhook.test`). `NotFound("webhook")` for an unknown id.
    async fn enqueue_hook_event_for(&self, id: &str, event: HookDraft) -> Result<()>;
    /// Claims up to `limit` of the endpoint's pending deliveries that are
    /// due at `now`, oldest event first: each counts an attempt and is not
    /// due again before `lease_until`.
    async fn claim_deliveries(
        &self,
        id: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>>;
    /// Records attempts' results; any success clears the endpoint's
    /// `failing_since`, a failure sets it if unset. Returns it.
    async fn finish_deliveries(
        &self,
        id: &str,
        results: Vec<AttemptResult>,
        at: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>>;
    /// The endpoint's deliveries, newest event first, before the event
    /// seq `before`, in state `state` when given.
    async fn deliveries(
        &self,
        id: &str,
        state: Option<DeliveryState>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>>;
    /// Queues one delivery again (attempts from 0, due at `now`); `false`
    /// if the endpoint has no delivery of that event.
    async fn retry_delivery(&self, id: &str, event_id: &str, now: OffsetDateTime) -> Result<bool>;
    /// Queues again every event since `since` that the endpoint
    /// subscribes to (delivered or not); returns how many.
    async fn replay_deliveries(
        &self,
        id: &str,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64>;
    /// Pending deliveries per endpoint.
    async fn pending_deliveries(&self) -> Result<Vec<(String, u64)>>;
    /// Deletes deliveries that ended (succeeded or failed) before `before`
    /// and events left without deliveries; returns how many events went.
    async fn prune_hook_events(&self, before: OffsetDateTime) -> Result<u64>;
}

/// Groups, their members and roles, and group messages. Changes are
/// decided by the caller on a snapshot ([`GroupRow::version`]) and applied
/// only if the group is still at that version, with the inbox events they
/// cause, in one transaction.
#[async_trait]
pub trait Groups: Send + Sync {
    /// Creates a group with its members (the conversation `g:{id}` and a
    /// read position for each) and writes `effects`. `Conflict("group")`
    /// if the id was ever taken; `NotFound("user")` for an unknown member.
    async fn create_group(
        &self,
        group: NewGroup,
        members: Vec<(UserId, GroupRole)>,
        effects: Effects,
    ) -> Result<(GroupRow, Vec<StoredEvent>)>;
    /// A group that exists and is not dissolved.
    async fn group(&self, id: &GroupId) -> Result<Option<GroupRow>>;
    /// The members, oldest first.
    async fn group_members(&self, id: &GroupId) -> Result<Vec<MemberRow>>;
    async fn group_member(&self, id: &GroupId, user: &UserId) -> Result<Option<MemberRow>>;
    /// The groups `user` belongs to, with their membership, newest first.
    async fn user_groups(&self, user: &UserId) -> Result<Vec<(GroupRow, MemberRow)>>;
    /// Applies `edits` in order if the group is still at `version`
    /// (otherwise [`StoreError::Stale`]), moves the version on and
    /// writes `effects` (inbox events of users deleted meanwhile are skipped). Returns the
    /// group after the change (as it was, for a dissolution).
    async fn change_group(
        &self,
        id: &GroupId,
        version: u64,
        edits: Vec<GroupEdit>,
        at: OffsetDateTime,
        effects: Effects,
    ) -> Result<(GroupRow, Vec<StoredEvent>)>;
    /// Stores a group message and appends `message.new` to the inbox of
    /// every member at commit time, the sender included, in one
    /// transaction. `NotFound("group member")` when the sender is not a
    /// member (or the group is gone); a repeated `(sender, client_msg_id)`
    /// is [`AppendOutcome::Duplicate`] as for direct messages.
    async fn append_group_message(&self, message: NewMessage) -> Result<AppendOutcome>;
    /// For the message at `conv_seq` of a conversation: how many members
    /// other than `sender` received it and are still members, and how many
    /// of them have read up to it. Computed from read positions.
    async fn read_count(
        &self,
        conversation: &ConversationId,
        conv_seq: u64,
        sender: &UserId,
    ) -> Result<(u64, u64)>;
}

/// Data-encryption keys, stored wrapped by the master key.
#[async_trait]
pub trait DataKeys: Send + Sync {
    async fn data_keys(&self) -> Result<Vec<WrappedKey>>;
    /// Stores a new wrapped key; `Conflict` if the id exists.
    async fn insert_data_key(&self, key: WrappedKey) -> Result<()>;
    /// Replaces the wrapping of a stored key (a master-key rotation);
    /// `NotFound` if there is no such key.
    async fn rewrap_data_key(&self, key_id: u32, wrapped: Vec<u8>) -> Result<()>;
}

/// Everything the core needs from durable storage.
#[async_trait]
pub trait Store:
    Users
    + Sessions
    + Inbox
    + DataKeys
    + Admins
    + Notifications
    + Broadcasts
    + Audit
    + Relationships
    + Groups
    + Webhooks
{
    /// Cheap liveness probe of the backend, for `/readyz`.
    async fn ping(&self) -> Result<()>;
}
