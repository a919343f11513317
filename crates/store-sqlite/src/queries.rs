//! The storage traits implemented on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;
use unimsg_proto::api::Recipient;
use unimsg_proto::{
    ConversationId, EventType, GroupId, MessageId, Platform, Seq, SessionId, UserId,
};

use crate::SqliteStore;
use crate::ops::NOTIFICATION_COLUMNS;
use unimsg_store::{
    AppendOutcome, ConversationState, DataKeys, EventBody, EventDraft, Inbox, NewMessage,
    NewRefreshToken, NewSession, NewUser, PasswordHash, RefreshOutcome, Result, Revocation, Sealed,
    Session, Sessions, Store, StoreError, StoredEvent, StoredMessage, TokenHash, User, UserStatus,
    UserUpdate, Users, WrappedKey,
};

pub(crate) fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Internal(e.to_string())
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("corrupt row: {what}"))
}

pub(crate) fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn from_ms(v: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1_000_000)
        .map_err(|_| corrupt("timestamp"))
}

pub(crate) fn user_id(s: String) -> Result<UserId> {
    UserId::parse(s).map_err(|_| corrupt("user id"))
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) const USER_COLUMNS: &str =
    "user_id, username, display_name, password_hash, status, created_at";

pub(crate) fn read_user(
    row: &Row<'_>,
) -> rusqlite::Result<(String, String, String, Option<String>, String, i64)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

pub(crate) fn build_user(
    raw: (String, String, String, Option<String>, String, i64),
) -> Result<User> {
    let (id, username, display_name, hash, status, created) = raw;
    Ok(User {
        user_id: user_id(id)?,
        username,
        display_name,
        password_hash: hash.map(PasswordHash),
        status: if status == "disabled" {
            UserStatus::Disabled
        } else {
            UserStatus::Active
        },
        created_at: from_ms(created)?,
    })
}

/// A session's columns and its user's status (a primary-key lookup in
/// the same statement: a request still costs one point read).
const SESSION_COLUMNS: &str = "session_id, user_id, platform, device_id, created_at, revoked_at, \
     (SELECT u.status FROM users u WHERE u.user_id = sessions.user_id)";

type RawSession = (
    String,
    String,
    String,
    Option<String>,
    i64,
    Option<i64>,
    Option<String>,
);

fn read_session(row: &Row<'_>) -> rusqlite::Result<RawSession> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn build_session(raw: RawSession) -> Result<Session> {
    let (sid, uid, platform, device_id, created, revoked, status) = raw;
    Ok(Session {
        user_status: match status.as_deref() {
            Some("active") => UserStatus::Active,
            _ => UserStatus::Disabled,
        },
        session_id: SessionId::parse(sid).map_err(|_| corrupt("session id"))?,
        user_id: user_id(uid)?,
        platform: Platform::parse(platform).map_err(|_| corrupt("platform"))?,
        device_id,
        created_at: from_ms(created)?,
        revoked_at: revoked.map(from_ms).transpose()?,
    })
}

fn session_by_id(conn: &Connection, id: &str) -> Result<Option<Session>> {
    conn.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?1"
    ))
    .map_err(db)?
    .query_row([id], read_session)
    .optional()
    .map_err(db)?
    .map(build_session)
    .transpose()
}

/// Message columns, prefixed for the joins that use them.
const MESSAGE_COLUMNS: &str = "m.message_id, m.conversation_id, m.conv_seq, m.sender_id, m.recipient_id, m.kind, \
     m.key_id, m.nonce, m.content, m.client_msg_id, m.created_at, m.recalled_at";

struct RawMessage {
    message_id: String,
    conversation_id: String,
    conv_seq: i64,
    sender: String,
    recipient: String,
    kind: String,
    key_id: i64,
    nonce: Vec<u8>,
    content: Vec<u8>,
    client_msg_id: Option<String>,
    created_at: i64,
    recalled_at: Option<i64>,
}

/// Reads the message columns starting at `at`.
fn read_message(row: &Row<'_>, at: usize) -> rusqlite::Result<RawMessage> {
    Ok(RawMessage {
        message_id: row.get(at)?,
        conversation_id: row.get(at + 1)?,
        conv_seq: row.get(at + 2)?,
        sender: row.get(at + 3)?,
        recipient: row.get(at + 4)?,
        kind: row.get(at + 5)?,
        key_id: row.get(at + 6)?,
        nonce: row.get(at + 7)?,
        content: row.get(at + 8)?,
        client_msg_id: row.get(at + 9)?,
        created_at: row.get(at + 10)?,
        recalled_at: row.get(at + 11)?,
    })
}

fn build_message(raw: RawMessage) -> Result<StoredMessage> {
    let conversation_id =
        ConversationId::parse(raw.conversation_id).map_err(|_| corrupt("conversation id"))?;
    // `recipient_id` holds the group's id for a group message.
    let recipient = if conversation_id.group_id().is_some() {
        Recipient::Group(GroupId::parse(raw.recipient).map_err(|_| corrupt("group id"))?)
    } else {
        Recipient::User(user_id(raw.recipient)?)
    };
    Ok(StoredMessage {
        message_id: MessageId::parse(raw.message_id).map_err(|_| corrupt("message id"))?,
        conversation_id,
        conv_seq: to_u64(raw.conv_seq),
        sender: user_id(raw.sender)?,
        recipient,
        kind: raw.kind,
        content: Sealed {
            key_id: u32::try_from(raw.key_id).map_err(|_| corrupt("key id"))?,
            nonce: raw.nonce,
            ciphertext: raw.content,
        },
        client_msg_id: raw.client_msg_id,
        created_at: from_ms(raw.created_at)?,
        recalled_at: raw.recalled_at.map(from_ms).transpose()?,
    })
}

pub(crate) fn message_by_id(conn: &Connection, id: &str) -> Result<Option<StoredMessage>> {
    conn.query_row(
        &format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.message_id = ?1"),
        [id],
        |r| read_message(r, 0),
    )
    .optional()
    .map_err(db)?
    .map(build_message)
    .transpose()
}

/// Allocates the next seq of a user's inbox. Only the writer calls this,
/// inside its transaction, so seqs are gap-free and never reused.
fn next_seq(conn: &Connection, user: &UserId) -> Result<(i64, i64)> {
    // Cached statements here and in `insert_event`: a group message runs
    // them once per member.
    conn.prepare_cached(
        "UPDATE users SET last_seq = last_seq + 1 WHERE user_id = ?1 RETURNING last_seq, bbase",
    )
    .map_err(db)?
    .query_row([user.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
    .map_err(db)?
    .ok_or(StoreError::NotFound("user"))
}

/// How many broadcasts exist: the newest `bseq`.
pub(crate) fn broadcast_head(conn: &Connection) -> Result<i64> {
    conn.prepare_cached("SELECT coalesce(max(bseq), 0) FROM broadcasts")
        .map_err(db)?
        .query_row([], |r| r.get(0))
        .map_err(db)
}

/// The user's newest visible seq: inbox rows plus the broadcasts since
/// the user was created.
fn visible_last(conn: &Connection, user: &UserId) -> Result<Seq> {
    let head = broadcast_head(conn)?;
    let row: Option<(i64, i64)> = conn
        .prepare_cached("SELECT last_seq, bbase FROM users WHERE user_id = ?1")
        .map_err(db)?
        .query_row([user.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db)?;
    let (last, base) = row.ok_or(StoreError::NotFound("user"))?;
    Ok(Seq(to_u64(last + head - base)))
}

/// The acknowledged position (a visible seq).
fn acked_position(conn: &Connection, user: &UserId) -> Result<Seq> {
    let seq: Option<i64> = conn
        .query_row(
            "SELECT acked_seq FROM users WHERE user_id = ?1",
            [user.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    seq.map(|s| Seq(to_u64(s)))
        .ok_or(StoreError::NotFound("user"))
}

/// Appends one inbox row and returns its visible seq. Only the writer
/// calls this, inside its transaction, so seqs are gap-free.
pub(crate) fn insert_event(
    conn: &Connection,
    user: &UserId,
    kind: EventType,
    message_id: Option<&str>,
    data: Option<&str>,
    at: OffsetDateTime,
) -> Result<Seq> {
    let (seq, base) = next_seq(conn, user)?;
    let head = broadcast_head(conn)?;
    conn.prepare_cached(
        "INSERT INTO inbox (user_id, seq, kind, message_id, data, created_at, bpos) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .map_err(db)?
    .execute(params![
        user.as_str(),
        seq,
        kind.as_str(),
        message_id,
        data,
        ms(at),
        head
    ])
    .map_err(db)?;
    Ok(Seq(to_u64(seq + head - base)))
}

/// A user's visible stream after `after`: inbox rows and broadcasts merged
/// in commit order. Broadcast `k` comes before an inbox row with
/// `bpos >= k` and after one with `bpos < k`; an inbox row's visible seq is
/// `seq + bpos - bbase` (see ARCHITECTURE.md, "Broadcast positions").
fn merged_events_after(
    conn: &Connection,
    user: &UserId,
    after: Seq,
    limit: u32,
) -> Result<Vec<StoredEvent>> {
    let head = broadcast_head(conn)?;
    let (last, base): (i64, i64) = conn
        .query_row(
            "SELECT last_seq, bbase FROM users WHERE user_id = ?1",
            [user.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db)?
        .ok_or(StoreError::NotFound("user"))?;
    let position = to_i64(after.0).min(last + head - base);
    // The inbox rows and broadcasts at or before `position`: the newest
    // inbox row whose visible seq is within it, scanning back from the end.
    let inbox_before: i64 = conn
        .query_row(
            "SELECT seq FROM inbox WHERE user_id = ?1 AND seq + bpos - ?2 <= ?3 ORDER BY seq DESC LIMIT 1",
            params![user.as_str(), base, position],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?
        .unwrap_or(0);
    let broadcasts_before = base + (position - inbox_before);

    let rows = inbox_rows(conn, user, inbox_before, limit)?;
    let casts = crate::ops::broadcasts_between(conn, broadcasts_before, head, limit)?;
    Ok(unimsg_store::merge_broadcasts(
        user,
        rows,
        casts,
        to_u64(position),
        limit,
    ))
}

/// Inbox rows of `user` after internal seq `after`, with their `bpos`.
fn inbox_rows(
    conn: &Connection,
    user: &UserId,
    after: i64,
    limit: u32,
) -> Result<Vec<(i64, StoredEvent)>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT i.seq, i.kind, i.created_at, i.data, {MESSAGE_COLUMNS}, {NOTIFICATION_COLUMNS}, i.bpos \
             FROM inbox i LEFT JOIN messages m ON m.message_id = i.message_id \
             LEFT JOIN notifications n ON n.message_id = i.message_id \
             WHERE i.user_id = ?1 AND i.seq > ?2 ORDER BY i.seq LIMIT ?3"
        ))
        .map_err(db)?;
    let mut rows = stmt
        .query(params![user.as_str(), after, i64::from(limit)])
        .map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        let seq: i64 = row.get(0).map_err(db)?;
        let kind: String = row.get(1).map_err(db)?;
        let at: i64 = row.get(2).map_err(db)?;
        let data: Option<String> = row.get(3).map_err(db)?;
        let has_message: Option<String> = row.get(4).map_err(db)?;
        let has_notification: Option<String> = row.get(16).map_err(db)?;
        let bpos: i64 = row.get(23).map_err(db)?;
        let body = match (data, has_message, has_notification) {
            (Some(data), _, _) => EventBody::Data(data),
            (None, Some(_), _) => {
                EventBody::Message(Box::new(build_message(read_message(row, 4).map_err(db)?)?))
            }
            (None, None, Some(_)) => {
                EventBody::Notification(Box::new(crate::ops::read_notification(row, 16)?))
            }
            (None, None, None) => return Err(corrupt("inbox event without data")),
        };
        let event = StoredEvent {
            user_id: user.clone(),
            seq: Seq(to_u64(seq)),
            kind: EventType::parse(&kind).ok_or_else(|| corrupt("event type"))?,
            at: from_ms(at)?,
            body,
        };
        out.push((bpos, event));
    }
    Ok(out)
}

pub(crate) fn append_drafts(
    conn: &Connection,
    drafts: Vec<EventDraft>,
) -> Result<Vec<StoredEvent>> {
    let mut out = Vec::with_capacity(drafts.len());
    for d in drafts {
        let seq = insert_event(conn, &d.user_id, d.kind, None, Some(&d.data), d.at)?;
        out.push(StoredEvent {
            user_id: d.user_id,
            seq,
            kind: d.kind,
            at: d.at,
            body: EventBody::Data(d.data),
        });
    }
    Ok(out)
}

pub(crate) fn revoke(conn: &Connection, revocations: Vec<Revocation>) -> Result<Vec<StoredEvent>> {
    let mut out = Vec::new();
    for r in revocations {
        let owner: Option<String> = conn
            .query_row(
                "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3 \
                 WHERE session_id = ?1 AND revoked_at IS NULL RETURNING user_id",
                params![r.session_id.as_str(), ms(r.at), r.reason],
                |row| row.get(0),
            )
            .optional()
            .map_err(db)?;
        if let Some(owner) = owner {
            let owner = user_id(owner)?;
            let seq = insert_event(
                conn,
                &owner,
                EventType::SessionRevoked,
                None,
                Some(&r.event_data),
                r.at,
            )?;
            out.push(StoredEvent {
                user_id: owner,
                seq,
                kind: EventType::SessionRevoked,
                at: r.at,
                body: EventBody::Data(r.event_data),
            });
        }
    }
    Ok(out)
}

fn insert_user(conn: &Connection, user: NewUser) -> Result<User> {
    let taken: bool = conn
        .query_row(
            "SELECT EXISTS(SELECT 1 FROM users WHERE user_id = ?1)",
            [user.user_id.as_str()],
            |r| r.get(0),
        )
        .map_err(db)?;
    if taken {
        return Err(StoreError::Conflict("user_id"));
    }
    conn.execute(
        "INSERT INTO users (user_id, username, display_name, password_hash, created_at, bbase) \
         VALUES (?1, ?2, ?3, ?4, ?5, (SELECT coalesce(max(bseq), 0) FROM broadcasts))",
        params![
            user.user_id.as_str(),
            user.username,
            user.display_name,
            user.password_hash.as_ref().map(|h| h.0.as_str()),
            ms(user.created_at)
        ],
    )
    .map_err(|e| map_unique(e, "username"))?;
    Ok(User {
        user_id: user.user_id,
        username: user.username,
        display_name: user.display_name,
        password_hash: user.password_hash,
        status: UserStatus::Active,
        created_at: user.created_at,
    })
}

pub(crate) fn map_unique(e: rusqlite::Error, what: &'static str) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(what)
        }
        other => db(other),
    }
}

#[async_trait]
impl Users for SqliteStore {
    async fn create_user(&self, user: NewUser) -> Result<User> {
        self.write(move |conn| insert_user(conn, user)).await
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>> {
        let id = id.clone();
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1"),
                [id.as_str()],
                read_user,
            )
            .optional()
            .map_err(db)?
            .map(build_user)
            .transpose()
        })
        .await
    }

    async fn import_users(&self, users: Vec<NewUser>) -> Result<Vec<Result<User>>> {
        self.write(move |conn| {
            let mut out = Vec::with_capacity(users.len());
            for user in users {
                // Each item in its own savepoint: a clash undoes only that item.
                conn.execute_batch("SAVEPOINT item").map_err(db)?;
                let result = insert_user(conn, user);
                let end = if result.is_ok() {
                    "RELEASE item"
                } else {
                    "ROLLBACK TO item; RELEASE item"
                };
                conn.execute_batch(end).map_err(db)?;
                out.push(result);
            }
            Ok(out)
        })
        .await
    }

    async fn update_user(&self, id: &UserId, update: UserUpdate) -> Result<User> {
        let id = id.clone();
        self.write(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE users SET display_name = COALESCE(?2, display_name), \
                     password_hash = COALESCE(?3, password_hash), status = COALESCE(?4, status) WHERE user_id = ?1",
                    params![
                        id.as_str(),
                        update.display_name,
                        update.password_hash.as_ref().map(|h| h.0.as_str()),
                        update.status.map(UserStatus::as_str)
                    ],
                )
                .map_err(db)?;
            if changed == 0 {
                return Err(StoreError::NotFound("user"));
            }
            conn.query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1"), [id.as_str()], read_user)
                .map_err(db)
                .and_then(build_user)
        })
        .await
    }

    async fn delete_user(&self, id: &UserId) -> Result<()> {
        let id = id.clone();
        self.write(move |conn| {
            let exists: bool = conn
                .query_row("SELECT EXISTS(SELECT 1 FROM users WHERE user_id = ?1)", [id.as_str()], |r| r.get(0))
                .map_err(db)?;
            if !exists {
                return Err(StoreError::NotFound("user"));
            }
            conn.execute(
                "DELETE FROM refresh_tokens WHERE session_id IN (SELECT session_id FROM sessions WHERE user_id = ?1)",
                [id.as_str()],
            )
            .map_err(db)?;
            // The groups they were in change: decisions taken on an older
            // member list must be taken again.
            conn.execute(
                "UPDATE chat_groups SET version = version + 1 \
                 WHERE group_id IN (SELECT group_id FROM group_members WHERE user_id = ?1)",
                [id.as_str()],
            )
            .map_err(db)?;
            for table in ["sessions", "inbox", "conversation_members", "notification_recipients", "group_members", "users"] {
                conn.execute(&format!("DELETE FROM {table} WHERE user_id = ?1"), [id.as_str()]).map_err(db)?;
            }
            Ok(())
        })
        .await
    }

    async fn unknown_users(&self, ids: Vec<UserId>) -> Result<Vec<UserId>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM users WHERE user_id = ?1)")
                .map_err(db)?;
            let mut unknown = Vec::new();
            for id in ids {
                let known: bool = stmt.query_row([id.as_str()], |r| r.get(0)).map_err(db)?;
                if !known {
                    unknown.push(id);
                }
            }
            Ok(unknown)
        })
        .await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let username = username.to_owned();
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"),
                [username],
                read_user,
            )
            .optional()
            .map_err(db)?
            .map(build_user)
            .transpose()
        })
        .await
    }
}

#[async_trait]
impl Sessions for SqliteStore {
    async fn open_session(
        &self,
        session: NewSession,
        refresh: NewRefreshToken,
        kick: Vec<Revocation>,
    ) -> Result<Vec<StoredEvent>> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO sessions (session_id, user_id, platform, device_id, created_at, ip, user_agent) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    session.session_id.as_str(),
                    session.user_id.as_str(),
                    session.platform.as_str(),
                    session.device_id,
                    ms(session.created_at),
                    session.ip,
                    session.user_agent
                ],
            )
            .map_err(|e| map_unique(e, "session_id"))?;
            conn.execute(
                "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES (?1, ?2, ?3)",
                params![&refresh.hash.0[..], session.session_id.as_str(), ms(refresh.expires_at)],
            )
            .map_err(|e| map_unique(e, "refresh token"))?;
            revoke(conn, kick)
        })
        .await
    }

    async fn is_new_place(
        &self,
        user: &UserId,
        device_id: Option<&str>,
        ip: Option<&str>,
    ) -> Result<bool> {
        let (user, device_id, ip) = (
            user.clone(),
            device_id.map(str::to_owned),
            ip.map(str::to_owned),
        );
        self.read(move |conn| {
            let (any, known): (bool, bool) = conn
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM sessions WHERE user_id = ?1), \
                     EXISTS(SELECT 1 FROM sessions WHERE user_id = ?1 AND \
                     ((?2 IS NOT NULL AND device_id = ?2) OR (?3 IS NOT NULL AND ip = ?3)))",
                    params![user.as_str(), device_id, ip],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(db)?;
            Ok(any && !known)
        })
        .await
    }

    async fn session(&self, id: &SessionId) -> Result<Option<Session>> {
        let id = id.clone();
        self.read_point(move |conn| session_by_id(conn, id.as_str()))
            .await
    }

    async fn active_sessions(&self, user: &UserId) -> Result<Vec<Session>> {
        let user = user.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL \
                     ORDER BY created_at, session_id"
                ))
                .map_err(db)?;
            let rows = stmt.query_map([user.as_str()], read_session).map_err(db)?;
            rows.map(|r| r.map_err(db).and_then(build_session)).collect()
        })
        .await
    }

    async fn revoke_sessions(&self, revocations: Vec<Revocation>) -> Result<Vec<StoredEvent>> {
        self.write(move |conn| revoke(conn, revocations)).await
    }

    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        next: NewRefreshToken,
        now: OffsetDateTime,
    ) -> Result<RefreshOutcome> {
        let presented = presented.clone();
        self.write(move |conn| {
            let found: Option<(String, i64, Option<i64>)> = conn
                .query_row(
                    "SELECT session_id, expires_at, rotated_at FROM refresh_tokens WHERE token_hash = ?1",
                    [&presented.0[..]],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db)?;
            let Some((sid, expires_at, rotated_at)) = found else {
                return Ok(RefreshOutcome::Invalid);
            };
            let Some(session) = session_by_id(conn, &sid)? else {
                return Ok(RefreshOutcome::Invalid);
            };
            if !session.is_active() {
                return Ok(RefreshOutcome::Invalid);
            }
            if rotated_at.is_some() {
                return Ok(RefreshOutcome::Reused(session));
            }
            if expires_at <= ms(now) {
                return Ok(RefreshOutcome::Invalid);
            }
            conn.execute(
                "UPDATE refresh_tokens SET rotated_at = ?2 WHERE token_hash = ?1",
                params![&presented.0[..], ms(now)],
            )
            .map_err(db)?;
            conn.execute(
                "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES (?1, ?2, ?3)",
                params![&next.hash.0[..], sid, ms(next.expires_at)],
            )
            .map_err(|e| map_unique(e, "refresh token"))?;
            Ok(RefreshOutcome::Rotated(session))
        })
        .await
    }
}

/// The message an earlier send with the same `(sender, client_msg_id)`
/// stored, if any.
pub(crate) fn duplicate_of(
    conn: &Connection,
    message: &NewMessage,
) -> Result<Option<StoredMessage>> {
    let Some(cmid) = &message.client_msg_id else {
        return Ok(None);
    };
    let existing: Option<String> = conn
        .prepare_cached(
            "SELECT message_id FROM messages WHERE sender_id = ?1 AND client_msg_id = ?2",
        )
        .map_err(db)?
        .query_row(params![message.sender.as_str(), cmid], |r| r.get(0))
        .optional()
        .map_err(db)?;
    match existing {
        Some(id) => Ok(Some(
            message_by_id(conn, &id)?.ok_or_else(|| corrupt("idempotency index"))?,
        )),
        None => Ok(None),
    }
}

/// Stores a message at the next position of its conversation.
pub(crate) fn insert_message(conn: &Connection, message: NewMessage) -> Result<StoredMessage> {
    let at = ms(message.created_at);
    let conv_seq: i64 = conn
        .prepare_cached(
            "INSERT INTO conversations (conversation_id, last_conv_seq, updated_at) VALUES (?1, 1, ?2) \
             ON CONFLICT (conversation_id) DO UPDATE \
             SET last_conv_seq = last_conv_seq + 1, updated_at = excluded.updated_at \
             RETURNING last_conv_seq",
        )
        .map_err(db)?
        .query_row(params![message.conversation_id.as_str(), at], |r| r.get(0))
        .map_err(db)?;
    conn.prepare_cached(
        "INSERT INTO messages (message_id, conversation_id, conv_seq, sender_id, recipient_id, kind, \
         key_id, nonce, content, client_msg_id, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .map_err(db)?
    .execute(params![
        message.message_id.as_str(),
        message.conversation_id.as_str(),
        conv_seq,
        message.sender.as_str(),
        message.recipient.as_str(),
        message.kind,
        i64::from(message.content.key_id),
        message.content.nonce,
        message.content.ciphertext,
        message.client_msg_id,
        at
    ])
    .map_err(|e| map_unique(e, "message"))?;
    Ok(StoredMessage {
        message_id: message.message_id,
        conversation_id: message.conversation_id,
        conv_seq: to_u64(conv_seq),
        sender: message.sender,
        recipient: message.recipient,
        kind: message.kind,
        content: message.content,
        client_msg_id: message.client_msg_id,
        created_at: message.created_at,
        recalled_at: None,
    })
}

/// Appends one `message.new` event per recipient; each carries the message.
pub(crate) fn append_message_events(
    conn: &Connection,
    stored: &StoredMessage,
    recipients: Vec<UserId>,
) -> Result<Vec<StoredEvent>> {
    let body = Box::new(stored.clone());
    let mut events = Vec::with_capacity(recipients.len());
    for user in recipients {
        let seq = insert_event(
            conn,
            &user,
            EventType::MessageNew,
            Some(stored.message_id.as_str()),
            None,
            stored.created_at,
        )?;
        events.push(StoredEvent {
            user_id: user,
            seq,
            kind: EventType::MessageNew,
            at: stored.created_at,
            body: EventBody::Message(body.clone()),
        });
    }
    Ok(events)
}

#[async_trait]
impl Inbox for SqliteStore {
    async fn append_message(
        &self,
        message: NewMessage,
        recipients: Vec<UserId>,
    ) -> Result<AppendOutcome> {
        self.write(move |conn| {
            if let Some(original) = duplicate_of(conn, &message)? {
                return Ok(AppendOutcome::Duplicate(original));
            }
            let members = match &message.recipient {
                Recipient::User(user) => [message.sender.clone(), user.clone()],
                Recipient::Group(_) => {
                    return Err(StoreError::Internal("a group message is not a direct message".into()));
                }
            };
            let conversation = message.conversation_id.clone();
            let stored = insert_message(conn, message)?;
            for member in &members {
                conn.execute(
                    "INSERT OR IGNORE INTO conversation_members (conversation_id, user_id) VALUES (?1, ?2)",
                    params![conversation.as_str(), member.as_str()],
                )
                .map_err(db)?;
            }
            let events = append_message_events(conn, &stored, recipients)?;
            Ok(AppendOutcome::Created { message: stored, events })
        })
        .await
    }

    async fn append_events(&self, events: Vec<EventDraft>) -> Result<Vec<StoredEvent>> {
        self.write(move |conn| append_drafts(conn, events)).await
    }

    async fn events_after(
        &self,
        user: &UserId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        let user = user.clone();
        self.read(move |conn| {
            // One snapshot for every statement below.
            let tx = conn.unchecked_transaction().map_err(db)?;
            let out = merged_events_after(&tx, &user, after, limit)?;
            tx.commit().map_err(db)?;
            Ok(out)
        })
        .await
    }

    async fn last_seq(&self, user: &UserId) -> Result<Seq> {
        let user = user.clone();
        self.read_point(move |conn| visible_last(conn, &user)).await
    }

    async fn ack(&self, user: &UserId, seq: Seq) -> Result<Seq> {
        let user = user.clone();
        self.write(move |conn| {
            let acked: Option<i64> = conn
                .query_row(
                    "UPDATE users SET acked_seq = MAX(acked_seq, MIN(?2, last_seq + ?3 - bbase)) \
                     WHERE user_id = ?1 RETURNING acked_seq",
                    params![user.as_str(), to_i64(seq.0), broadcast_head(conn)?],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            acked
                .map(|s| Seq(to_u64(s)))
                .ok_or(StoreError::NotFound("user"))
        })
        .await
    }

    async fn acked(&self, user: &UserId) -> Result<Seq> {
        let user = user.clone();
        self.read(move |conn| acked_position(conn, &user)).await
    }

    async fn message(&self, id: &MessageId) -> Result<Option<StoredMessage>> {
        let id = id.clone();
        self.read(move |conn| message_by_id(conn, id.as_str()))
            .await
    }

    async fn message_seq(&self, user: &UserId, id: &MessageId) -> Result<Option<Seq>> {
        let (user, id) = (user.clone(), id.clone());
        // A range scan of this user's inbox: only idempotent retries ask.
        self.read(move |conn| {
            let seq: Option<i64> = conn
                .query_row(
                    "SELECT i.seq + i.bpos - u.bbase FROM inbox i JOIN users u ON u.user_id = i.user_id \
                     WHERE i.user_id = ?1 AND i.message_id = ?2",
                    params![user.as_str(), id.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            Ok(seq.map(|s| Seq(to_u64(s))))
        })
        .await
    }

    async fn mark_read(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        upto: u64,
        events: Vec<EventDraft>,
    ) -> Result<(u64, Vec<StoredEvent>)> {
        let (user, conversation) = (user.clone(), conversation.clone());
        self.write(move |conn| {
            let moved = conn
                .execute(
                    "UPDATE conversation_members SET read_upto = ?3 \
                     WHERE conversation_id = ?1 AND user_id = ?2 AND read_upto < ?3",
                    params![conversation.as_str(), user.as_str(), to_i64(upto)],
                )
                .map_err(db)?;
            if moved == 1 {
                return Ok((upto, append_drafts(conn, events)?));
            }
            let current: Option<i64> = conn
                .query_row(
                    "SELECT read_upto FROM conversation_members WHERE conversation_id = ?1 AND user_id = ?2",
                    params![conversation.as_str(), user.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            match current {
                Some(c) => Ok((to_u64(c), Vec::new())),
                None => Err(StoreError::NotFound("conversation")),
            }
        })
        .await
    }

    async fn recall(
        &self,
        id: &MessageId,
        now: OffsetDateTime,
        events: Vec<EventDraft>,
    ) -> Result<Vec<StoredEvent>> {
        let id = id.clone();
        self.write(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE messages SET recalled_at = ?2 WHERE message_id = ?1 AND recalled_at IS NULL",
                    params![id.as_str(), ms(now)],
                )
                .map_err(db)?;
            if changed == 0 {
                return match message_by_id(conn, id.as_str())? {
                    Some(_) => Err(StoreError::Conflict("already recalled")),
                    None => Err(StoreError::NotFound("message")),
                };
            }
            append_drafts(conn, events)
        })
        .await
    }

    async fn conversations(&self, user: &UserId) -> Result<Vec<ConversationState>> {
        let user = user.clone();
        self.read(move |conn| {
            let mut list = conn
                .prepare_cached(
                    "SELECT cm.conversation_id, cm.read_upto FROM conversation_members cm \
                     JOIN conversations c ON c.conversation_id = cm.conversation_id \
                     WHERE cm.user_id = ?1 ORDER BY c.updated_at DESC, c.conversation_id LIMIT 1000",
                )
                .map_err(db)?;
            let convs: Vec<(String, i64)> = list
                .query_map([user.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db)?
                .collect::<rusqlite::Result<_>>()
                .map_err(db)?;
            let mut out = Vec::with_capacity(convs.len());
            for (cid, read_upto) in convs {
                // A group's positions are summed per message (`read_count`),
                // never listed: a group has up to `groups.max_members`.
                let members_read = if cid.starts_with("g:") {
                    Vec::new()
                } else {
                    let mut members = conn
                        .prepare_cached("SELECT user_id, read_upto FROM conversation_members WHERE conversation_id = ?1")
                        .map_err(db)?;
                    members
                        .query_map([&cid], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                        .map_err(db)?
                        .map(|r| r.map_err(db).and_then(|(u, n)| Ok((user_id(u)?, to_u64(n)))))
                        .collect::<Result<Vec<_>>>()?
                };
                let last_message = conn
                    .query_row(
                        &format!(
                            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = ?1 \
                             ORDER BY m.conv_seq DESC LIMIT 1"
                        ),
                        [&cid],
                        |r| read_message(r, 0),
                    )
                    .optional()
                    .map_err(db)?
                    .map(build_message)
                    .transpose()?;
                let unread: i64 = conn
                    .query_row(
                        "SELECT count(*) FROM messages WHERE conversation_id = ?1 AND conv_seq > ?2 \
                         AND sender_id != ?3 AND recalled_at IS NULL",
                        params![cid, read_upto, user.as_str()],
                        |r| r.get(0),
                    )
                    .map_err(db)?;
                out.push(ConversationState {
                    conversation_id: ConversationId::parse(cid).map_err(|_| corrupt("conversation id"))?,
                    read_upto: to_u64(read_upto),
                    members_read,
                    last_message,
                    unread: to_u64(unread),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn history(
        &self,
        conversation: &ConversationId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>> {
        let conversation = conversation.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = ?1 AND m.conv_seq < ?2 \
                     ORDER BY m.conv_seq DESC LIMIT ?3"
                ))
                .map_err(db)?;
            let before = before.map_or(i64::MAX, to_i64);
            let rows = stmt
                .query_map(params![conversation.as_str(), before, i64::from(limit)], |r| read_message(r, 0))
                .map_err(db)?;
            rows.map(|r| r.map_err(db).and_then(build_message)).collect()
        })
        .await
    }
}

#[async_trait]
impl DataKeys for SqliteStore {
    async fn data_keys(&self) -> Result<Vec<WrappedKey>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT key_id, wrapped, created_at FROM data_keys ORDER BY key_id")
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(db)?;
            rows.map(|r| {
                let (id, wrapped, created) = r.map_err(db)?;
                Ok(WrappedKey {
                    key_id: u32::try_from(id).map_err(|_| corrupt("key id"))?,
                    wrapped,
                    created_at: from_ms(created)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn insert_data_key(&self, key: WrappedKey) -> Result<()> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO data_keys (key_id, wrapped, created_at) VALUES (?1, ?2, ?3)",
                params![i64::from(key.key_id), key.wrapped, ms(key.created_at)],
            )
            .map_err(|e| map_unique(e, "data key"))?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(db))
            .await
    }
}
