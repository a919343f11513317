//! What the two SQL backends share, pure and driver-free: the time and id
//! conversions of their columns, the column lists whose row shape is the
//! same on both, and the readers that turn such a row into the model.
//!
//! The SQL that writes stays in each backend: they differ where it matters
//! (one writer thread with savepoints against row locks in a global
//! order). A backend reads a row through [`SqlRow`], which it implements
//! on a thin wrapper of its driver's row.

use time::OffsetDateTime;
use unimsg_proto::api::Recipient;
use unimsg_proto::groups::{GroupRole, JoinPolicy};
use unimsg_proto::hooks::{DeliveryState, EventFilter, HookEventType};
use unimsg_proto::{
    ConversationId, EventType, GroupId, MessageId, Platform, Seq, SessionId, UserId,
};

use crate::{
    Admin, AuditRow, EventBody, FriendRequestRow, FriendRow, GroupRow, MemberRow, PasswordHash,
    RefreshOutcome, Result, Sealed, Session, StoreError, StoredEvent, StoredMessage,
    StoredNotification, StoredText, User, UserStatus, WrappedKey,
};
use crate::{AdminKeyRow, AttemptOutcome, DeliveryRow, HookEventRow, TokenHash, WebhookRow};

/// A row that failed to decode: a bug or corruption, never the client's.
pub fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("corrupt row: {what}"))
}

/// A time as stored: Unix milliseconds.
pub fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// A stored time (Unix milliseconds) back as a time.
pub fn from_ms(v: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1_000_000)
        .map_err(|_| corrupt("timestamp"))
}

/// A count or seq as a column value (SQL integers are signed).
pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A column value as a count or seq; a negative one reads as 0.
pub fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub fn user_id(s: String) -> Result<UserId> {
    UserId::parse(s).map_err(|_| corrupt("user id"))
}

pub fn key_id(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt("key id"))
}

/// A hash column: one of the wrong length is tampering too; it reads as
/// zeros so verification reports the entry instead of the reader failing.
pub fn hash32(v: &[u8]) -> [u8; 32] {
    <[u8; 32]>::try_from(v).unwrap_or([0; 32])
}

/// A friend's tags are stored joined with the unit separator, which a tag
/// cannot contain.
pub fn join_tags(tags: &[String]) -> String {
    tags.join("\u{1f}")
}

/// The tags of [`join_tags`]' stored form.
pub fn split_tags(joined: &str) -> Vec<String> {
    joined
        .split('\u{1f}')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An admin's scopes are stored joined with commas.
pub fn split_scopes(joined: &str) -> Vec<String> {
    joined
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The `(message, message_sealed)` columns of a friend request's text.
pub fn text_columns(text: Option<&StoredText>) -> (Option<&str>, Option<Vec<u8>>) {
    match text {
        None => (None, None),
        Some(StoredText::Plain(p)) => (Some(p.as_str()), None),
        Some(StoredText::Sealed(s)) => (None, Some(s.to_bytes())),
    }
}

/// A text from its two columns: sealed when sealed, plaintext in older rows.
pub fn stored_text(plain: Option<String>, sealed: Option<Vec<u8>>) -> Result<Option<StoredText>> {
    match (sealed, plain) {
        (Some(bytes), _) => Sealed::from_bytes(&bytes)
            .map(|s| Some(StoredText::Sealed(s)))
            .ok_or_else(|| StoreError::Internal("a sealed friend-request text is corrupt".into())),
        (None, plain) => Ok(plain.map(StoredText::Plain)),
    }
}

/// A row of either backend, read by column index. A value of another type
/// than asked is a corrupt row.
pub trait SqlRow {
    fn text(&self, i: usize) -> Result<String>;
    fn text_opt(&self, i: usize) -> Result<Option<String>>;
    fn int(&self, i: usize) -> Result<i64>;
    fn int_opt(&self, i: usize) -> Result<Option<i64>>;
    fn bytes(&self, i: usize) -> Result<Vec<u8>>;
    fn bytes_opt(&self, i: usize) -> Result<Option<Vec<u8>>>;
    fn flag(&self, i: usize) -> Result<bool>;
}

/// The error of a column that does not decode as asked.
pub fn bad_column(i: usize, e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("corrupt row: column {i}: {e}"))
}

pub const USER_COLUMNS: &str = "user_id, username, display_name, password_hash, status, created_at";

/// Reads the [`USER_COLUMNS`].
pub fn read_user(row: &dyn SqlRow) -> Result<User> {
    Ok(User {
        user_id: user_id(row.text(0)?)?,
        username: row.text(1)?,
        display_name: row.text(2)?,
        password_hash: row.text_opt(3)?.map(PasswordHash),
        status: UserStatus::parse(&row.text(4)?).ok_or_else(|| corrupt("user status"))?,
        created_at: from_ms(row.int(5)?)?,
    })
}

/// A session's columns and its user's status (a primary-key lookup in
/// the same statement: a request still costs one point read).
pub const SESSION_COLUMNS: &str = "session_id, user_id, platform, device_id, created_at, revoked_at, \
     (SELECT u.status FROM users u WHERE u.user_id = sessions.user_id)";

/// Reads the [`SESSION_COLUMNS`].
pub fn read_session(row: &dyn SqlRow) -> Result<Session> {
    Ok(Session {
        // A session whose user is gone counts as disabled.
        user_status: row
            .text_opt(6)?
            .as_deref()
            .and_then(UserStatus::parse)
            .unwrap_or(UserStatus::Disabled),
        session_id: SessionId::parse(row.text(0)?).map_err(|_| corrupt("session id"))?,
        user_id: user_id(row.text(1)?)?,
        platform: Platform::parse(row.text(2)?).map_err(|_| corrupt("platform"))?,
        device_id: row.text_opt(3)?,
        created_at: from_ms(row.int(4)?)?,
        revoked_at: row.int_opt(5)?.map(from_ms).transpose()?,
    })
}

/// Message columns, prefixed for the joins that use them (12 columns, read
/// by [`read_message`]).
pub const MESSAGE_COLUMNS: &str = "m.message_id, m.conversation_id, m.conv_seq, m.sender_id, m.recipient_id, m.kind, \
     m.key_id, m.nonce, m.content, m.client_msg_id, m.created_at, m.recalled_at";

/// How many columns [`MESSAGE_COLUMNS`] has.
pub const MESSAGE_WIDTH: usize = 12;

/// Reads the [`MESSAGE_COLUMNS`] starting at `at`.
pub fn read_message(row: &dyn SqlRow, at: usize) -> Result<StoredMessage> {
    let conversation_id =
        ConversationId::parse(row.text(at + 1)?).map_err(|_| corrupt("conversation id"))?;
    let recipient = row.text(at + 4)?;
    // `recipient_id` holds the group's id for a group message.
    let recipient = if conversation_id.group_id().is_some() {
        Recipient::Group(GroupId::parse(recipient).map_err(|_| corrupt("group id"))?)
    } else {
        Recipient::User(user_id(recipient)?)
    };
    Ok(StoredMessage {
        message_id: MessageId::parse(row.text(at)?).map_err(|_| corrupt("message id"))?,
        conversation_id,
        conv_seq: to_u64(row.int(at + 2)?),
        sender: user_id(row.text(at + 3)?)?,
        recipient,
        kind: row.text(at + 5)?,
        content: Sealed {
            key_id: key_id(row.int(at + 6)?)?,
            nonce: row.bytes(at + 7)?,
            ciphertext: row.bytes(at + 8)?,
        },
        client_msg_id: row.text_opt(at + 9)?,
        created_at: from_ms(row.int(at + 10)?)?,
        recalled_at: row.int_opt(at + 11)?.map(from_ms).transpose()?,
    })
}

/// The notification columns, prefixed `n.` for the inbox join; broadcasts
/// have the same.
pub const NOTIFICATION_COLUMNS: &str =
    "n.message_id, n.kind, n.sender, n.key_id, n.nonce, n.content, n.created_at";

/// How many columns [`NOTIFICATION_COLUMNS`] has.
pub const NOTIFICATION_WIDTH: usize = 7;

/// Reads the [`NOTIFICATION_COLUMNS`] starting at `at`.
pub fn read_notification(row: &dyn SqlRow, at: usize) -> Result<StoredNotification> {
    Ok(StoredNotification {
        message_id: MessageId::parse(row.text(at)?).map_err(|_| corrupt("message id"))?,
        kind: row.text(at + 1)?,
        sender: row.text(at + 2)?,
        content: Sealed {
            key_id: key_id(row.int(at + 3)?)?,
            nonce: row.bytes(at + 4)?,
            ciphertext: row.bytes(at + 5)?,
        },
        created_at: from_ms(row.int(at + 6)?)?,
    })
}

pub const ADMIN_COLUMNS: &str =
    "admin_id, secret_hash, scopes, created_at, disabled, tokens_valid_after, signing_secret";

/// Reads the [`ADMIN_COLUMNS`].
pub fn read_admin(row: &dyn SqlRow) -> Result<Admin> {
    Ok(Admin {
        admin_id: row.text(0)?,
        secret_hash: PasswordHash(row.text(1)?),
        scopes: split_scopes(&row.text(2)?),
        created_at: from_ms(row.int(3)?)?,
        disabled: row.flag(4)?,
        tokens_valid_after: from_ms(row.int(5)?)?,
        signing_secret: row.bytes_opt(6)?,
    })
}

pub const ADMIN_KEY_COLUMNS: &str = "key_id, admin_id, key_hash, scopes, created_at, expires_at, \
     last_used_at, last_used_ip, revoked_at";

/// Reads the [`ADMIN_KEY_COLUMNS`].
pub fn read_admin_key(row: &dyn SqlRow) -> Result<AdminKeyRow> {
    let hash: [u8; 32] = row
        .bytes(2)?
        .try_into()
        .map_err(|_| bad_column(2, "not a SHA-256"))?;
    Ok(AdminKeyRow {
        key_id: row.text(0)?,
        admin_id: row.text(1)?,
        key_hash: TokenHash(hash),
        scopes: split_scopes(&row.text(3)?),
        created_at: from_ms(row.int(4)?)?,
        expires_at: from_ms(row.int(5)?)?,
        last_used_at: row.int_opt(6)?.map(from_ms).transpose()?,
        last_used_ip: row.text_opt(7)?,
        revoked_at: row.int_opt(8)?.map(from_ms).transpose()?,
    })
}

pub const DATA_KEY_COLUMNS: &str = "key_id, wrapped, created_at";

/// Reads the [`DATA_KEY_COLUMNS`].
pub fn read_data_key(row: &dyn SqlRow) -> Result<WrappedKey> {
    Ok(WrappedKey {
        key_id: key_id(row.int(0)?)?,
        wrapped: row.bytes(1)?,
        created_at: from_ms(row.int(2)?)?,
    })
}

pub const AUDIT_COLUMNS: &str = "id, at, content, prev_hash, hash";

/// Reads the [`AUDIT_COLUMNS`].
pub fn read_audit(row: &dyn SqlRow) -> Result<AuditRow> {
    Ok(AuditRow {
        id: to_u64(row.int(0)?),
        at_ms: row.int(1)?,
        content: row.text(2)?,
        prev_hash: hash32(&row.bytes(3)?),
        hash: hash32(&row.bytes(4)?),
    })
}

pub const FRIEND_REQUEST_COLUMNS: &str = "from_id, to_id, message, message_sealed, created_at";

/// Reads the [`FRIEND_REQUEST_COLUMNS`].
pub fn read_friend_request(row: &dyn SqlRow) -> Result<FriendRequestRow> {
    Ok(FriendRequestRow {
        from: user_id(row.text(0)?)?,
        to: user_id(row.text(1)?)?,
        message: stored_text(row.text_opt(2)?, row.bytes_opt(3)?)?,
        created_at: from_ms(row.int(4)?)?,
    })
}

pub const FRIEND_COLUMNS: &str = "friend_id, tags, remark, created_at";

/// Reads the [`FRIEND_COLUMNS`].
pub fn read_friend(row: &dyn SqlRow) -> Result<FriendRow> {
    Ok(FriendRow {
        friend: user_id(row.text(0)?)?,
        tags: split_tags(&row.text(1)?),
        remark: row.text(2)?,
        since: from_ms(row.int(3)?)?,
    })
}

/// Group columns with the owner and the member count, from `chat_groups g`.
pub const GROUP_COLUMNS: &str = "g.group_id, g.name, g.notice, g.join_policy, g.all_muted, g.version, \
     g.created_at, \
     (SELECT o.user_id FROM group_members o WHERE o.group_id = g.group_id AND o.role = 'owner' LIMIT 1), \
     (SELECT count(*) FROM group_members c WHERE c.group_id = g.group_id)";

/// How many columns [`GROUP_COLUMNS`] has.
pub const GROUP_WIDTH: usize = 9;

/// Reads the [`GROUP_COLUMNS`] starting at `at`.
pub fn read_group(row: &dyn SqlRow, at: usize) -> Result<GroupRow> {
    Ok(GroupRow {
        group_id: GroupId::parse(row.text(at)?).map_err(|_| corrupt("group id"))?,
        name: row.text(at + 1)?,
        notice: row.text(at + 2)?,
        join_policy: JoinPolicy::parse(&row.text(at + 3)?).ok_or_else(|| corrupt("join policy"))?,
        all_muted: row.flag(at + 4)?,
        version: to_u64(row.int(at + 5)?),
        created_at: from_ms(row.int(at + 6)?)?,
        owner: row.text_opt(at + 7)?.map(user_id).transpose()?,
        member_count: to_u64(row.int(at + 8)?),
    })
}

/// Member columns, from `group_members m LEFT JOIN users u`.
pub const MEMBER_COLUMNS: &str =
    "m.user_id, coalesce(u.display_name, ''), m.role, m.muted_until, m.joined_at, m.since";

/// Reads the [`MEMBER_COLUMNS`] starting at `at`.
pub fn read_member(row: &dyn SqlRow, at: usize) -> Result<MemberRow> {
    Ok(MemberRow {
        user_id: user_id(row.text(at)?)?,
        display_name: row.text(at + 1)?,
        role: GroupRole::parse(&row.text(at + 2)?).ok_or_else(|| corrupt("group role"))?,
        muted_until: row.int_opt(at + 3)?.map(from_ms).transpose()?,
        joined_at: from_ms(row.int(at + 4)?)?,
        since: to_u64(row.int(at + 5)?),
    })
}

/// What every `change_group` checks first, under its backend's guard (the
/// writer thread, the group's row lock): the group is still at the version
/// the change was decided on.
pub fn check_version(current: u64, decided_on: u64) -> Result<()> {
    if current == decided_on {
        Ok(())
    } else {
        Err(StoreError::Stale)
    }
}

/// What `change_group` returns: the group as read after the change, or,
/// after a dissolution (when it no longer reads), as it was before, empty,
/// at the next version.
pub fn changed_group(before: GroupRow, after: Option<GroupRow>) -> GroupRow {
    after.unwrap_or(GroupRow {
        member_count: 0,
        owner: None,
        version: before.version + 1,
        ..before
    })
}

/// An inbox row with what it refers to, from `inbox i LEFT JOIN messages m
/// LEFT JOIN notifications n` (both on `message_id`): 0 seq, 1 kind,
/// 2 created_at, 3 data, 4..=15 the message ([`MESSAGE_COLUMNS`]), 16..=22
/// the notification ([`NOTIFICATION_COLUMNS`]), 23 bpos.
pub const INBOX_COLUMNS: &str = "i.seq, i.kind, i.created_at, i.data, \
     m.message_id, m.conversation_id, m.conv_seq, m.sender_id, m.recipient_id, m.kind, \
     m.key_id, m.nonce, m.content, m.client_msg_id, m.created_at, m.recalled_at, \
     n.message_id, n.kind, n.sender, n.key_id, n.nonce, n.content, n.created_at, i.bpos";

/// Reads the [`INBOX_COLUMNS`] of `user`'s inbox: the row's `bpos` and its
/// event, numbered with the row's own seq (the caller renumbers it into the
/// visible stream).
pub fn read_inbox_row(row: &dyn SqlRow, user: &UserId) -> Result<(i64, StoredEvent)> {
    let message_at = 4;
    let notification_at = message_at + MESSAGE_WIDTH;
    let bpos_at = notification_at + NOTIFICATION_WIDTH;
    let body = match (
        row.text_opt(3)?,
        row.text_opt(message_at)?,
        row.text_opt(notification_at)?,
    ) {
        (Some(data), _, _) => EventBody::Data(data),
        (None, Some(_), _) => EventBody::Message(Box::new(read_message(row, message_at)?)),
        (None, None, Some(_)) => {
            EventBody::Notification(Box::new(read_notification(row, notification_at)?))
        }
        (None, None, None) => return Err(corrupt("inbox event without data")),
    };
    let event = StoredEvent {
        user_id: user.clone(),
        seq: Seq(to_u64(row.int(0)?)),
        kind: EventType::parse(&row.text(1)?).ok_or_else(|| corrupt("event type"))?,
        at: from_ms(row.int(2)?)?,
        body,
    };
    Ok((row.int(bpos_at)?, event))
}

/// The outcome of an edit of one group member: `NotFound` when it
/// changed no row (they are not a member).
pub fn one_member(changed_a_row: bool) -> Result<()> {
    if changed_a_row {
        Ok(())
    } else {
        Err(StoreError::NotFound("group member"))
    }
}

/// What a presented refresh token allows, given its row (`expires_at`,
/// whether it was `rotated` already) and its session: `Rotated(session)`
/// when it may be exchanged for the next token (which the caller then
/// does), otherwise the answer to give at once (an invalid token, or a
/// reused one, which the caller treats as theft).
pub fn refresh_check(
    session: Option<Session>,
    expires_at: i64,
    rotated: bool,
    now: OffsetDateTime,
) -> RefreshOutcome {
    match session {
        None => RefreshOutcome::Invalid,
        Some(session) if !session.is_active() => RefreshOutcome::Invalid,
        Some(session) if rotated => RefreshOutcome::Reused(session),
        Some(_) if expires_at <= ms(now) => RefreshOutcome::Invalid,
        Some(session) => RefreshOutcome::Rotated(session),
    }
}

/// An endpoint's event filter as stored: the names between commas
/// (`,message.created,user.login,`; `,*,` for all), so that one `instr`
/// / `strpos` of `,{type},` tells whether it subscribes to a type.
pub fn filter_column(filter: &EventFilter) -> String {
    format!(",{},", filter.names().join(","))
}

/// Reads [`filter_column`]'s stored form.
pub fn read_filter(stored: &str) -> Result<EventFilter> {
    let names: Vec<String> = stored
        .split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    EventFilter::parse(&names).map_err(|_| corrupt("webhook events"))
}

pub const WEBHOOK_COLUMNS: &str = "webhook_id, url, events, description, enabled, include_content, \
     secret, previous_secret, previous_until, failing_since, disabled_reason, created_at, updated_at";

fn sealed(bytes: &[u8]) -> Result<Sealed> {
    Sealed::from_bytes(bytes).ok_or_else(|| corrupt("sealed secret"))
}

/// Reads the [`WEBHOOK_COLUMNS`].
pub fn read_webhook(row: &dyn SqlRow) -> Result<WebhookRow> {
    let previous_secret = match (row.bytes_opt(7)?, row.int_opt(8)?) {
        (Some(secret), Some(until)) => Some((sealed(&secret)?, from_ms(until)?)),
        _ => None,
    };
    Ok(WebhookRow {
        webhook_id: row.text(0)?,
        url: row.text(1)?,
        events: read_filter(&row.text(2)?)?,
        description: row.text(3)?,
        enabled: row.flag(4)?,
        include_content: row.flag(5)?,
        secret: sealed(&row.bytes(6)?)?,
        previous_secret,
        failing_since: row.int_opt(9)?.map(from_ms).transpose()?,
        disabled_reason: row.text_opt(10)?,
        created_at: from_ms(row.int(11)?)?,
        updated_at: from_ms(row.int(12)?)?,
    })
}

/// An outbox event's columns, from `hook_events e`.
pub const HOOK_EVENT_COLUMNS: &str =
    "e.seq, e.event_id, e.kind, e.data, e.message_id, e.created_at";

/// Reads the [`HOOK_EVENT_COLUMNS`].
pub fn read_hook_event(row: &dyn SqlRow) -> Result<HookEventRow> {
    Ok(HookEventRow {
        seq: row.int(0)?,
        event_id: row.text(1)?,
        kind: HookEventType::parse(&row.text(2)?).ok_or_else(|| corrupt("hook event type"))?,
        data: row.text(3)?,
        message_id: row
            .text_opt(4)?
            .map(|id| MessageId::parse(id).map_err(|_| corrupt("message id")))
            .transpose()?,
        at: from_ms(row.int(5)?)?,
    })
}

/// A delivery's columns, from `hook_deliveries d JOIN hook_events e`.
pub const DELIVERY_COLUMNS: &str = "e.seq, e.event_id, e.kind, e.data, e.message_id, e.created_at, \
     d.state, d.attempts, d.last_status, d.last_error, d.next_at";

/// Reads the [`DELIVERY_COLUMNS`].
pub fn read_delivery(row: &dyn SqlRow) -> Result<DeliveryRow> {
    Ok(DeliveryRow {
        event: read_hook_event(row)?,
        state: DeliveryState::parse(&row.text(6)?).ok_or_else(|| corrupt("delivery state"))?,
        attempts: u32::try_from(row.int(7)?).unwrap_or(0),
        last_status: row
            .int_opt(8)?
            .map(|s| u16::try_from(s).map_err(|_| corrupt("status code")))
            .transpose()?,
        last_error: row.text_opt(9)?,
        next_at: from_ms(row.int(10)?)?,
    })
}

/// The stored columns of an attempt's result: the state, when it is due
/// next (`None`: unchanged), and whether it failed.
pub fn attempt_columns(outcome: &AttemptOutcome) -> (DeliveryState, Option<i64>, bool) {
    match outcome {
        AttemptOutcome::Succeeded => (DeliveryState::Succeeded, None, false),
        AttemptOutcome::RetryAt(at) => (DeliveryState::Pending, Some(ms(*at)), true),
        AttemptOutcome::Failed => (DeliveryState::Failed, None, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inbox_columns_are_the_message_and_notification_columns_in_place() {
        assert_eq!(
            INBOX_COLUMNS,
            format!(
                "i.seq, i.kind, i.created_at, i.data, {MESSAGE_COLUMNS}, {NOTIFICATION_COLUMNS}, i.bpos"
            )
        );
        assert_eq!(MESSAGE_COLUMNS.split(", ").count(), MESSAGE_WIDTH);
        assert_eq!(NOTIFICATION_COLUMNS.split(", ").count(), NOTIFICATION_WIDTH);
    }
}
