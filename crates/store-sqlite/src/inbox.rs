//! The `Inbox` trait on SQLite: per-user inboxes (seqs allocated by the
//! writer, so gap-free), direct messages, read positions, recalls and
//! conversations; and the inbox writes the other traits append through
//! (`insert_event`, `append_drafts`).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use unimsg_proto::api::Recipient;
use unimsg_proto::{ConversationId, EventType, MessageId, Seq, UserId};
use unimsg_store::sql::{
    INBOX_COLUMNS, MESSAGE_COLUMNS, corrupt, ms, read_inbox_row, read_message, to_i64, to_u64,
    user_id,
};
use unimsg_store::{
    AppendOutcome, ConversationState, DirectRefusal, Effects, EventBody, EventDraft, HookDraft,
    Inbox, NewMessage, RecipientFacts, Result, StoreError, StoredEvent, StoredMessage,
};

use crate::broadcasts::broadcasts_between;
use crate::{Cached, DbResult, SqliteStore, all, db, first, map_unique};

pub(crate) fn message_by_id(conn: &Connection, id: &str) -> DbResult<Option<StoredMessage>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.message_id = ?1"
    ))?;
    first(&mut stmt, [id], |r| read_message(r, 0))
}

/// The newest seq of user `?1`'s inbox rows (0 for none), as an SQL
/// expression. No counter is kept: the inbox's primary key
/// `(user_id, seq)` makes it one seek, so an append writes its row and
/// nothing else. This needs inbox rows to be deleted only with their user.
macro_rules! newest_seq {
    () => {
        "coalesce((SELECT seq FROM inbox WHERE user_id = ?1 ORDER BY seq DESC LIMIT 1), 0)"
    };
}

/// The newest seq of a user's inbox rows and the user's broadcast base
/// (`bbase`).
const INBOX_HEAD: &str = concat!(
    "SELECT ",
    newest_seq!(),
    ", bbase FROM users WHERE user_id = ?1"
);

fn inbox_head(conn: &Connection, user: &UserId) -> DbResult<(i64, i64)> {
    conn.query_row_cached(INBOX_HEAD, [user.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or(StoreError::NotFound("user").into())
}

/// Allocates the next seq of a user's inbox. Only the writer calls this,
/// inside its transaction (which then writes the row), so seqs are
/// gap-free and never reused.
fn next_seq(conn: &Connection, user: &UserId) -> DbResult<(i64, i64)> {
    let (last, base) = crate::memo::inbox_head(user, || inbox_head(conn, user))?;
    Ok((last + 1, base))
}

/// How many broadcasts exist: the newest `bseq`.
pub(crate) fn broadcast_head(conn: &Connection) -> DbResult<i64> {
    crate::memo::broadcast_head(|| {
        Ok(conn
            .prepare_cached("SELECT coalesce(max(bseq), 0) FROM broadcasts")?
            .query_row([], |r| r.get(0))?)
    })
}

/// The user's newest visible seq: inbox rows plus the broadcasts since
/// the user was created.
fn visible_last(conn: &Connection, user: &UserId) -> DbResult<Seq> {
    let head = broadcast_head(conn)?;
    let (last, base) = inbox_head(conn, user)?;
    Ok(Seq(to_u64(last + head - base)))
}

/// The acknowledged position (a visible seq).
fn acked_position(conn: &Connection, user: &UserId) -> DbResult<Seq> {
    let seq: Option<i64> = conn
        .query_row_cached(
            "SELECT acked_seq FROM users WHERE user_id = ?1",
            [user.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    Ok(seq
        .map(|s| Seq(to_u64(s)))
        .ok_or(StoreError::NotFound("user"))?)
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
) -> DbResult<Seq> {
    let head = broadcast_head(conn)?;
    insert_event_under(conn, head, user, kind, message_id, data, at)
}

/// [`insert_event`] with the broadcast head already read: a write that
/// appends to many inboxes (a message's two, a group's members) reads it
/// once. No broadcast is written between its appends, so it holds for all.
fn insert_event_under(
    conn: &Connection,
    head: i64,
    user: &UserId,
    kind: EventType,
    message_id: Option<&str>,
    data: Option<&str>,
    at: OffsetDateTime,
) -> DbResult<Seq> {
    let (seq, base) = next_seq(conn, user)?;
    conn.prepare_cached(
        "INSERT INTO inbox (user_id, seq, kind, message_id, data, created_at, bpos) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        user.as_str(),
        seq,
        kind.as_str(),
        message_id,
        data,
        ms(at),
        head
    ])?;
    crate::memo::record_inbox(user, seq, base);
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
) -> DbResult<Vec<StoredEvent>> {
    let head = broadcast_head(conn)?;
    let (last, base) = inbox_head(conn, user)?;
    let position = to_i64(after.0).min(last + head - base);
    // The inbox rows and broadcasts at or before `position`: the newest
    // inbox row whose visible seq is within it, scanning back from the end.
    let inbox_before: i64 = conn
        .query_row_cached(
            "SELECT seq FROM inbox WHERE user_id = ?1 AND seq + bpos - ?2 <= ?3 ORDER BY seq DESC LIMIT 1",
            params![user.as_str(), base, position],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let broadcasts_before = base + (position - inbox_before);

    let rows = inbox_rows(conn, user, inbox_before, limit)?;
    let casts = broadcasts_between(conn, broadcasts_before, head, limit)?;
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
) -> DbResult<Vec<(i64, StoredEvent)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {INBOX_COLUMNS} \
         FROM inbox i LEFT JOIN messages m ON m.message_id = i.message_id \
         LEFT JOIN notifications n ON n.message_id = i.message_id \
         WHERE i.user_id = ?1 AND i.seq > ?2 ORDER BY i.seq LIMIT ?3"
    ))?;
    all(
        &mut stmt,
        params![user.as_str(), after, i64::from(limit)],
        |r| read_inbox_row(r, user),
    )
}

pub(crate) fn append_drafts(
    conn: &Connection,
    drafts: &[EventDraft],
) -> DbResult<Vec<StoredEvent>> {
    let mut out = Vec::with_capacity(drafts.len());
    let head = broadcast_head(conn)?;
    for d in drafts {
        let seq = insert_event_under(conn, head, &d.user_id, d.kind, None, Some(&d.data), d.at)?;
        out.push(StoredEvent {
            user_id: d.user_id.clone(),
            seq,
            kind: d.kind,
            at: d.at,
            body: EventBody::Data(d.data.clone()),
        });
    }
    Ok(out)
}

/// Writes a change's [`Effects`]: its inbox events and its webhook events.
pub(crate) fn write_effects(conn: &Connection, effects: Effects) -> DbResult<Vec<StoredEvent>> {
    crate::webhooks::enqueue_all(conn, &effects.hooks)?;
    append_drafts(conn, &effects.events)
}

/// The message an earlier send with the same `(sender, client_msg_id)`
/// stored, if any.
pub(crate) fn duplicate_of(
    conn: &Connection,
    message: &NewMessage,
) -> DbResult<Option<StoredMessage>> {
    let Some(cmid) = &message.client_msg_id else {
        return Ok(None);
    };
    let existing: Option<String> = conn
        .prepare_cached(
            "SELECT message_id FROM messages WHERE sender_id = ?1 AND client_msg_id = ?2",
        )?
        .query_row(params![message.sender.as_str(), cmid], |r| r.get(0))
        .optional()?;
    match existing {
        Some(id) => Ok(Some(
            message_by_id(conn, &id)?.ok_or_else(|| corrupt("idempotency index"))?,
        )),
        None => Ok(None),
    }
}

/// Stores a message at the next position of its conversation.
pub(crate) fn insert_message(conn: &Connection, message: &NewMessage) -> DbResult<StoredMessage> {
    let at = ms(message.created_at);
    let conv_seq: i64 = conn
        .prepare_cached(
            "INSERT INTO conversations (conversation_id, last_conv_seq, updated_at) VALUES (?1, 1, ?2) \
             ON CONFLICT (conversation_id) DO UPDATE \
             SET last_conv_seq = last_conv_seq + 1, updated_at = excluded.updated_at \
             RETURNING last_conv_seq",
        )?
        .query_row(params![message.conversation_id.as_str(), at], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO messages (message_id, conversation_id, conv_seq, sender_id, recipient_id, kind, \
         key_id, nonce, content, client_msg_id, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
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
        message_id: message.message_id.clone(),
        conversation_id: message.conversation_id.clone(),
        conv_seq: to_u64(conv_seq),
        sender: message.sender.clone(),
        recipient: message.recipient.clone(),
        kind: message.kind.clone(),
        content: message.content.clone(),
        client_msg_id: message.client_msg_id.clone(),
        created_at: message.created_at,
        recalled_at: None,
    })
}

/// Appends one `message.new` event per recipient; each carries the message.
pub(crate) fn append_message_events(
    conn: &Connection,
    stored: &StoredMessage,
    recipients: &[UserId],
) -> DbResult<Vec<StoredEvent>> {
    let body = Box::new(stored.clone());
    let mut events = Vec::with_capacity(recipients.len());
    let head = broadcast_head(conn)?;
    for user in recipients {
        let seq = insert_event_under(
            conn,
            head,
            user,
            EventType::MessageNew,
            Some(stored.message_id.as_str()),
            None,
            stored.created_at,
        )?;
        events.push(StoredEvent {
            user_id: user.clone(),
            seq,
            kind: EventType::MessageNew,
            at: stored.created_at,
            body: EventBody::Message(body.clone()),
        });
    }
    Ok(events)
}

/// Whether a direct message may not be written ([`DirectRefusal`]), read
/// in the write's transaction in one statement.
fn direct_refusal(conn: &Connection, message: &NewMessage) -> DbResult<Option<DirectRefusal>> {
    let Recipient::User(to) = &message.recipient else {
        return Ok(None);
    };
    let facts = conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM users WHERE user_id = ?2), \
             EXISTS(SELECT 1 FROM blocks WHERE user_id = ?2 AND blocked_id = ?1), \
             EXISTS(SELECT 1 FROM friends WHERE user_id = ?1 AND friend_id = ?2)",
        )?
        .query_row(params![message.sender.as_str(), to.as_str()], |r| {
            Ok(RecipientFacts {
                exists: r.get(0)?,
                blocked: r.get(1)?,
                friends: r.get(2)?,
            })
        })?;
    Ok(DirectRefusal::of(facts, message.require_friendship))
}

#[async_trait]
impl Inbox for SqliteStore {
    /// Every write is queued to the one writer thread on its first poll
    /// (the queue is FIFO, and a full queue admits waiters in order), and
    /// the writer applies the queue in order.
    fn applies_in_poll_order(&self) -> bool {
        true
    }

    async fn append_message(
        &self,
        message: NewMessage,
        recipients: Vec<UserId>,
    ) -> Result<AppendOutcome> {
        self.write_repeatable(move |conn| {
            if let Some(refusal) = direct_refusal(conn, &message)? {
                return Ok(AppendOutcome::Refused(refusal));
            }
            if let Some(original) = duplicate_of(conn, &message)? {
                return Ok(AppendOutcome::Duplicate(original));
            }
            let members = match &message.recipient {
                Recipient::User(user) => [message.sender.clone(), user.clone()],
                Recipient::Group(_) => {
                    return Err(StoreError::Internal("a group message is not a direct message".into()).into());
                }
            };
            let conversation = message.conversation_id.clone();
            if let Some(hook) = &message.hook {
                crate::webhooks::enqueue(conn, hook)?;
            }
            let stored = insert_message(conn, &message)?;
            // A direct conversation's two members join with its first
            // message, and only a user's deletion removes them.
            if stored.conv_seq == 1 {
                let mut join = conn.prepare_cached(
                    "INSERT OR IGNORE INTO conversation_members (conversation_id, user_id) VALUES (?1, ?2)",
                )?;
                for member in &members {
                    join.execute(params![conversation.as_str(), member.as_str()])?;
                }
            }
            let events = append_message_events(conn, &stored, &recipients)?;
            Ok(AppendOutcome::Created { message: stored, events })
        })
        .await
    }

    async fn append_events(&self, events: Vec<EventDraft>) -> Result<Vec<StoredEvent>> {
        self.write_repeatable(move |conn| append_drafts(conn, &events))
            .await
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
            let tx = conn.unchecked_transaction()?;
            let out = merged_events_after(&tx, &user, after, limit)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn last_seq(&self, user: &UserId) -> Result<Seq> {
        let user = user.clone();
        self.read_point(move |conn| visible_last(conn, &user)).await
    }

    async fn ack(&self, user: &UserId, seq: Seq, hooks: Vec<HookDraft>) -> Result<Seq> {
        let user = user.clone();
        self.write_repeatable(move |conn| {
            let before = if hooks.is_empty() {
                None
            } else {
                Some(acked_position(conn, &user)?)
            };
            let acked: Option<i64> = conn
                .query_row_cached(
                    concat!(
                        "UPDATE users SET acked_seq = MAX(acked_seq, MIN(?2, ",
                        newest_seq!(),
                        " + ?3 - bbase)) WHERE user_id = ?1 RETURNING acked_seq"
                    ),
                    params![user.as_str(), to_i64(seq.0), broadcast_head(conn)?],
                    |r| r.get(0),
                )
                .optional()?;
            let acked = acked
                .map(|s| Seq(to_u64(s)))
                .ok_or(StoreError::NotFound("user"))?;
            if before.is_some_and(|b| acked > b) {
                crate::webhooks::enqueue_all(conn, &hooks)?;
            }
            Ok(acked)
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

    async fn sent_message(
        &self,
        sender: &UserId,
        client_msg_id: &str,
    ) -> Result<Option<StoredMessage>> {
        let (sender, cmid) = (sender.clone(), client_msg_id.to_owned());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.sender_id = ?1 AND m.client_msg_id = ?2"
            ))?;
            first(&mut stmt, params![sender.as_str(), cmid], |r| read_message(r, 0))
        })
        .await
    }

    async fn message_seq(&self, user: &UserId, id: &MessageId) -> Result<Option<Seq>> {
        let (user, id) = (user.clone(), id.clone());
        // A range scan of this user's inbox: only idempotent retries ask.
        self.read(move |conn| {
            let seq: Option<i64> = conn
                .query_row_cached(
                    "SELECT i.seq + i.bpos - u.bbase FROM inbox i JOIN users u ON u.user_id = i.user_id \
                     WHERE i.user_id = ?1 AND i.message_id = ?2",
                    params![user.as_str(), id.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(seq.map(|s| Seq(to_u64(s))))
        })
        .await
    }

    async fn mark_read(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        upto: u64,
        effects: Effects,
    ) -> Result<(u64, Vec<StoredEvent>)> {
        let (user, conversation) = (user.clone(), conversation.clone());
        self.write(move |conn| {
            let moved = conn
                .execute_cached(
                    "UPDATE conversation_members SET read_upto = ?3 \
                     WHERE conversation_id = ?1 AND user_id = ?2 AND read_upto < ?3",
                    params![conversation.as_str(), user.as_str(), to_i64(upto)],
                )?;
            if moved == 1 {
                return Ok((upto, write_effects(conn, effects)?));
            }
            let current: Option<i64> = conn
                .query_row_cached(
                    "SELECT read_upto FROM conversation_members WHERE conversation_id = ?1 AND user_id = ?2",
                    params![conversation.as_str(), user.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            match current {
                Some(c) => Ok((to_u64(c), Vec::new())),
                None => Err(StoreError::NotFound("conversation").into()),
            }
        })
        .await
    }

    async fn recall(
        &self,
        id: &MessageId,
        now: OffsetDateTime,
        effects: Effects,
    ) -> Result<Vec<StoredEvent>> {
        let id = id.clone();
        self.write(move |conn| {
            let changed = conn
                .execute_cached(
                    "UPDATE messages SET recalled_at = ?2 WHERE message_id = ?1 AND recalled_at IS NULL",
                    params![id.as_str(), ms(now)],
                )?;
            if changed == 0 {
                return match message_by_id(conn, id.as_str())? {
                    Some(_) => Err(StoreError::Conflict("already recalled").into()),
                    None => Err(StoreError::NotFound("message").into()),
                };
            }
            write_effects(conn, effects)
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
                )?;
            let convs: Vec<(String, i64)> = list
                .query_map([user.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut out = Vec::with_capacity(convs.len());
            for (cid, read_upto) in convs {
                // A group's positions are summed per message (`read_count`),
                // never listed: a group has up to `groups.max_members`.
                let members_read = if cid.starts_with("g:") {
                    Vec::new()
                } else {
                    let mut members = conn
                        .prepare_cached("SELECT user_id, read_upto FROM conversation_members WHERE conversation_id = ?1")?;
                    members
                        .query_map([&cid], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                        .map(|r| r.map_err(db).and_then(|(u, n)| Ok((user_id(u)?, to_u64(n)))))
                        .collect::<Result<Vec<_>>>()?
                };
                let mut last = conn
                    .prepare_cached(&format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = ?1 \
                         ORDER BY m.conv_seq DESC LIMIT 1"
                    ))?;
                let last_message = first(&mut last, [&cid], |r| read_message(r, 0))?;
                let unread: i64 = conn
                    .query_row_cached(
                        "SELECT count(*) FROM messages WHERE conversation_id = ?1 AND conv_seq > ?2 \
                         AND sender_id != ?3 AND recalled_at IS NULL",
                        params![cid, read_upto, user.as_str()],
                        |r| r.get(0),
                    )?;
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
                ))?;
            let before = before.map_or(i64::MAX, to_i64);
            all(&mut stmt, params![conversation.as_str(), before, i64::from(limit)], |r| read_message(r, 0))
        })
        .await
    }
}
