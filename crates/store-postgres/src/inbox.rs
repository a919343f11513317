//! The `Inbox` trait on PostgreSQL: messages, per-user event streams
//! merged with broadcasts, delivery and read positions, conversations; and
//! the message writes the group fan-out (`groups.rs`) shares.
//!
//! Writes take their locks in the crate's order (broadcast clock, then the
//! conversation or message row, then the users through
//! [`crate::append_inbox`]); reads that combine several statements run in
//! one `REPEATABLE READ` snapshot, so a user's visible seqs (ARCHITECTURE.md,
//! "Broadcast positions") are computed from one consistent state.

use std::collections::HashMap;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
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
use crate::{
    DbResult, InboxRow, PgStore, UnknownUsers, append_inbox, broadcast_clock, column, read, unique,
};

/// The savepoint a send with a `client_msg_id` rolls back to when a
/// concurrent send of the same message won the idempotency index.
const SEND_SAVEPOINT: &str = "unimsg_send";

/// The message with this id, on a connection or inside a transaction.
pub(crate) async fn message_by_id<C>(client: &C, id: &str) -> DbResult<Option<StoredMessage>>
where
    C: deadpool_postgres::GenericClient,
{
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.message_id = $1"
        ))
        .await?;
    client
        .query_opt(&stmt, &[&id])
        .await?
        .map(|row| read(&row, |r| read_message(r, 0)))
        .transpose()
}

/// The message an earlier send with the same `(sender, client_msg_id)`
/// stored, if any.
pub(crate) async fn duplicate_of(
    tx: &Transaction<'_>,
    message: &NewMessage,
) -> DbResult<Option<StoredMessage>> {
    let Some(cmid) = &message.client_msg_id else {
        return Ok(None);
    };
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.sender_id = $1 AND m.client_msg_id = $2"
        ))
        .await?;
    tx.query_opt(&stmt, &[&message.sender.as_str(), &cmid.as_str()])
        .await?
        .map(|row| read(&row, |r| read_message(r, 0)))
        .transpose()
}

/// Whether a direct message may not be written ([`DirectRefusal`]), read
/// in the write's transaction in one statement.
pub(crate) async fn direct_refusal(
    tx: &Transaction<'_>,
    message: &NewMessage,
) -> DbResult<Option<DirectRefusal>> {
    let Recipient::User(to) = &message.recipient else {
        return Ok(None);
    };
    let stmt = tx
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM users WHERE user_id = $2), \
             EXISTS(SELECT 1 FROM blocks WHERE user_id = $2 AND blocked_id = $1), \
             EXISTS(SELECT 1 FROM friends WHERE user_id = $1 AND friend_id = $2)",
        )
        .await?;
    let row = tx
        .query_one(&stmt, &[&message.sender.as_str(), &to.as_str()])
        .await?;
    let facts = RecipientFacts {
        exists: column(&row, 0)?,
        blocked: column(&row, 1)?,
        friends: column(&row, 2)?,
    };
    Ok(DirectRefusal::of(facts, message.require_friendship))
}

/// Sets the savepoint a send returns to when it turns out to be a
/// duplicate (only sends with a `client_msg_id` can be).
pub(crate) async fn mark_send(tx: &Transaction<'_>, message: &NewMessage) -> DbResult<()> {
    if message.client_msg_id.is_some() {
        tx.batch_execute(&format!("SAVEPOINT {SEND_SAVEPOINT}"))
            .await?;
    }
    Ok(())
}

/// A concurrent send of the same `(sender, client_msg_id)` committed first:
/// undoes everything since [`mark_send`] (the conversation counter bump)
/// and returns the original, so that nothing of this send is written.
pub(crate) async fn lost_race(
    tx: &Transaction<'_>,
    message: &NewMessage,
) -> DbResult<AppendOutcome> {
    tx.batch_execute(&format!("ROLLBACK TO SAVEPOINT {SEND_SAVEPOINT}"))
        .await?;
    // READ COMMITTED: this statement sees the winner's committed row.
    let original = duplicate_of(tx, message)
        .await?
        .ok_or_else(|| corrupt("idempotency index"))?;
    Ok(AppendOutcome::Duplicate(original))
}

/// Moves the conversation's counter on and returns the message's
/// `conv_seq`. The row stays locked until commit: concurrent sends to the
/// conversation (and group membership changes) queue behind it.
pub(crate) async fn bump_conversation(tx: &Transaction<'_>, message: &NewMessage) -> DbResult<i64> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO conversations (conversation_id, last_conv_seq, updated_at) VALUES ($1, 1, $2) \
             ON CONFLICT (conversation_id) DO UPDATE \
             SET last_conv_seq = conversations.last_conv_seq + 1, updated_at = excluded.updated_at \
             RETURNING last_conv_seq",
        )
        .await?;
    let row = tx
        .query_one(
            &stmt,
            &[&message.conversation_id.as_str(), &ms(message.created_at)],
        )
        .await?;
    Ok(column(&row, 0)?)
}

/// Stores a message at `conv_seq`. `None` when a concurrent send with the
/// same `(sender, client_msg_id)` committed first (the caller then calls
/// [`lost_race`]); a taken message id is `Conflict("message")`.
pub(crate) async fn insert_message(
    tx: &Transaction<'_>,
    message: &NewMessage,
    conv_seq: i64,
) -> DbResult<Option<StoredMessage>> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO messages (message_id, conversation_id, conv_seq, sender_id, recipient_id, kind, \
             key_id, nonce, content, client_msg_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (sender_id, client_msg_id) WHERE client_msg_id IS NOT NULL DO NOTHING",
        )
        .await?;
    let inserted = tx
        .execute(
            &stmt,
            &[
                &message.message_id.as_str(),
                &message.conversation_id.as_str(),
                &conv_seq,
                &message.sender.as_str(),
                &message.recipient.as_str(),
                &message.kind,
                &i64::from(message.content.key_id),
                &message.content.nonce,
                &message.content.ciphertext,
                &message.client_msg_id,
                &ms(message.created_at),
            ],
        )
        .await
        .map_err(|e| unique(e, "message"))?;
    if inserted == 0 {
        return Ok(None);
    }
    Ok(Some(StoredMessage {
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
    }))
}

/// Appends one `message.new` event per recipient, each carrying the
/// message, with one [`append_inbox`] call. With `UnknownUsers::Skip`, users
/// deleted meanwhile get nothing; otherwise they are `NotFound("user")`.
pub(crate) async fn append_message_events(
    tx: &Transaction<'_>,
    stored: &StoredMessage,
    recipients: &[UserId],
    unknown: UnknownUsers,
) -> DbResult<Vec<StoredEvent>> {
    let rows: Vec<InboxRow<'_>> = recipients
        .iter()
        .map(|user| InboxRow {
            user,
            kind: EventType::MessageNew,
            message_id: Some(stored.message_id.as_str()),
            data: None,
            at: stored.created_at,
        })
        .collect();
    let seqs = append_inbox(tx, &rows, unknown).await?;
    let body = Box::new(stored.clone());
    Ok(recipients
        .iter()
        .zip(seqs)
        .filter_map(|(user, seq)| {
            seq.map(|seq| StoredEvent {
                user_id: user.clone(),
                seq,
                kind: EventType::MessageNew,
                at: stored.created_at,
                body: EventBody::Message(body.clone()),
            })
        })
        .collect())
}

/// Writes a change's [`Effects`]: its webhook events and its inbox events
/// ([`append_drafts`]).
pub(crate) async fn write_effects(
    tx: &Transaction<'_>,
    effects: &Effects,
    unknown: UnknownUsers,
) -> DbResult<Vec<StoredEvent>> {
    crate::webhooks::enqueue_all(tx, &effects.hooks).await?;
    append_drafts(tx, &effects.events, unknown).await
}

/// Appends events that carry their own data with one [`append_inbox`]
/// call, in input order. Unknown users are `NotFound("user")`, or skipped
/// with `UnknownUsers::Skip`.
pub(crate) async fn append_drafts(
    tx: &Transaction<'_>,
    drafts: &[EventDraft],
    unknown: UnknownUsers,
) -> DbResult<Vec<StoredEvent>> {
    let rows: Vec<InboxRow<'_>> = drafts
        .iter()
        .map(|d| InboxRow {
            user: &d.user_id,
            kind: d.kind,
            message_id: None,
            data: Some(d.data.as_str()),
            at: d.at,
        })
        .collect();
    let seqs = append_inbox(tx, &rows, unknown).await?;
    Ok(drafts
        .iter()
        .zip(seqs)
        .filter_map(|(d, seq)| {
            seq.map(|seq| StoredEvent {
                user_id: d.user_id.clone(),
                seq,
                kind: d.kind,
                at: d.at,
                body: EventBody::Data(d.data.clone()),
            })
        })
        .collect())
}

/// A user's raw inbox position, broadcast base and the newest bseq, read
/// without locks (inside a snapshot). `NotFound("user")` for an unknown user.
async fn positions(tx: &Transaction<'_>, user: &UserId) -> DbResult<(i64, i64, i64)> {
    let stmt = tx
        .prepare_cached(
            "SELECT u.last_seq, u.bbase, c.head FROM users u CROSS JOIN broadcast_clock c \
             WHERE u.user_id = $1 AND c.id = 1",
        )
        .await?;
    let row = tx
        .query_opt(&stmt, &[&user.as_str()])
        .await?
        .ok_or(StoreError::NotFound("user"))?;
    Ok((column(&row, 0)?, column(&row, 1)?, column(&row, 2)?))
}

/// A user's visible stream after `after`: inbox rows and broadcasts merged
/// in commit order. Broadcast `k` comes before an inbox row with
/// `bpos >= k` and after one with `bpos < k`; an inbox row's visible seq is
/// `seq + bpos - bbase` (see ARCHITECTURE.md, "Broadcast positions"). Must
/// run inside one snapshot.
async fn merged_events_after(
    tx: &Transaction<'_>,
    user: &UserId,
    after: Seq,
    limit: u32,
) -> DbResult<Vec<StoredEvent>> {
    let (last, base, head) = positions(tx, user).await?;
    let position = to_i64(after.0).min(last + head - base);
    // The inbox rows and broadcasts at or before `position`: the newest
    // inbox row whose visible seq is within it, scanning back from the end.
    let inbox_before: i64 = if head == base {
        // No broadcast since the user was created: every row has
        // `bpos == bbase`, so visible and raw seqs coincide (the scan
        // below would find exactly `position`).
        position
    } else {
        let stmt = tx
            .prepare_cached(
                "SELECT seq FROM inbox WHERE user_id = $1 AND seq + bpos - $2 <= $3 \
                 ORDER BY seq DESC LIMIT 1",
            )
            .await?;
        match tx
            .query_opt(&stmt, &[&user.as_str(), &base, &position])
            .await?
        {
            Some(row) => column(&row, 0)?,
            None => 0,
        }
    };
    let broadcasts_before = base + (position - inbox_before);

    // Both tails at once (pipelined on the connection); with no broadcast
    // after `broadcasts_before` the second is empty and not asked for.
    let (rows, casts) = if broadcasts_before < head {
        tokio::try_join!(
            inbox_rows(tx, user, inbox_before, limit),
            broadcasts_between(tx, broadcasts_before, head, limit)
        )?
    } else {
        (inbox_rows(tx, user, inbox_before, limit).await?, Vec::new())
    };
    Ok(unimsg_store::merge_broadcasts(
        user,
        rows,
        casts,
        to_u64(position),
        limit,
    ))
}

/// Inbox rows of `user` after raw seq `after`, with their `bpos`.
async fn inbox_rows(
    tx: &Transaction<'_>,
    user: &UserId,
    after: i64,
    limit: u32,
) -> DbResult<Vec<(i64, StoredEvent)>> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {INBOX_COLUMNS} \
             FROM inbox i LEFT JOIN messages m ON m.message_id = i.message_id \
             LEFT JOIN notifications n ON n.message_id = i.message_id \
             WHERE i.user_id = $1 AND i.seq > $2 ORDER BY i.seq LIMIT $3"
        ))
        .await?;
    tx.query(&stmt, &[&user.as_str(), &after, &i64::from(limit)])
        .await?
        .iter()
        .map(|row| read(row, |r| read_inbox_row(r, user)))
        .collect()
}

#[async_trait]
impl Inbox for PgStore {
    async fn append_message(
        &self,
        message: NewMessage,
        recipients: Vec<UserId>,
    ) -> Result<AppendOutcome> {
        transaction!(self, |tx| {
            if let Some(refusal) = direct_refusal(tx, &message).await? {
                return Ok(AppendOutcome::Refused(refusal));
            }
            if let Some(original) = duplicate_of(tx, &message).await? {
                return Ok(AppendOutcome::Duplicate(original));
            }
            let members = match &message.recipient {
                Recipient::User(user) => [message.sender.as_str(), user.as_str()],
                Recipient::Group(_) => {
                    return Err(StoreError::Internal(
                        "a group message is not a direct message".into(),
                    )
                    .into());
                }
            };
            // Lock order: broadcast clock, conversation row, users.
            broadcast_clock(tx).await?;
            mark_send(tx, &message).await?;
            let conv_seq = bump_conversation(tx, &message).await?;
            let Some(stored) = insert_message(tx, &message, conv_seq).await? else {
                return lost_race(tx, &message).await;
            };
            if let Some(hook) = &message.hook {
                crate::webhooks::enqueue(tx, hook).await?;
            }
            // A direct conversation's two members join with its first
            // message, and only a user's deletion removes them.
            if stored.conv_seq == 1 {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO conversation_members (conversation_id, user_id) \
                         SELECT $1, u FROM unnest($2::text[]) AS t(u) ON CONFLICT DO NOTHING",
                    )
                    .await?;
                tx.execute(
                    &stmt,
                    &[&message.conversation_id.as_str(), &members.as_slice()],
                )
                .await?;
            }
            let events =
                append_message_events(tx, &stored, &recipients, UnknownUsers::Fail).await?;
            Ok(AppendOutcome::Created {
                message: stored,
                events,
            })
        })
    }

    async fn append_events(&self, events: Vec<EventDraft>) -> Result<Vec<StoredEvent>> {
        transaction!(self, |tx| append_drafts(tx, &events, UnknownUsers::Fail)
            .await)
    }

    async fn events_after(
        &self,
        user: &UserId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        snapshot!(self, |tx| merged_events_after(tx, user, after, limit).await)
    }

    async fn last_seq(&self, user: &UserId) -> Result<Seq> {
        // The user's newest visible seq: inbox rows plus the broadcasts
        // since the user was created.
        snapshot!(self, |tx| {
            let (last, base, head) = positions(tx, user).await?;
            Ok(Seq(to_u64(last + head - base)))
        })
    }

    async fn ack(&self, user: &UserId, seq: Seq, hooks: Vec<HookDraft>) -> Result<Seq> {
        transaction!(self, |tx| {
            // With the clock held no broadcast commits before this does, and
            // the user row is read after its lock: the clamp is exact.
            let head = broadcast_clock(tx).await?;
            let before: Option<i64> = if hooks.is_empty() {
                None
            } else {
                let stmt = tx
                    .prepare_cached("SELECT acked_seq FROM users WHERE user_id = $1 FOR UPDATE")
                    .await?;
                match tx.query_opt(&stmt, &[&user.as_str()]).await? {
                    Some(row) => Some(column(&row, 0)?),
                    None => return Err(StoreError::NotFound("user").into()),
                }
            };
            let stmt = tx
                .prepare_cached(
                    "UPDATE users SET acked_seq = GREATEST(acked_seq, LEAST($2, last_seq + $3 - bbase)) \
                     WHERE user_id = $1 RETURNING acked_seq",
                )
                .await?;
            let row = tx
                .query_opt(&stmt, &[&user.as_str(), &to_i64(seq.0), &head])
                .await?
                .ok_or(StoreError::NotFound("user"))?;
            let acked: i64 = column(&row, 0)?;
            if before.is_some_and(|b| acked > b) {
                crate::webhooks::enqueue_all(tx, &hooks).await?;
            }
            Ok(Seq(to_u64(acked)))
        })
    }

    async fn acked(&self, user: &UserId) -> Result<Seq> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached("SELECT acked_seq FROM users WHERE user_id = $1")
                .await?;
            let row = client
                .query_opt(&stmt, &[&user.as_str()])
                .await?
                .ok_or(StoreError::NotFound("user"))?;
            Ok(Seq(to_u64(column(&row, 0)?)))
        })
    }

    async fn message(&self, id: &MessageId) -> Result<Option<StoredMessage>> {
        connected!(self, |client| message_by_id(&client, id.as_str()).await)
    }

    async fn sent_message(
        &self,
        sender: &UserId,
        client_msg_id: &str,
    ) -> Result<Option<StoredMessage>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.sender_id = $1 AND m.client_msg_id = $2"
                ))
                .await?;
            client
                .query_opt(&stmt, &[&sender.as_str(), &client_msg_id])
                .await?
                .map(|row| read(&row, |r| read_message(r, 0)))
                .transpose()
        })
    }

    async fn message_seq(&self, user: &UserId, id: &MessageId) -> Result<Option<Seq>> {
        connected!(self, |client| {
            // A range scan of this user's inbox: only idempotent retries ask.
            let stmt = client
                .prepare_cached(
                    "SELECT i.seq + i.bpos - u.bbase FROM inbox i JOIN users u ON u.user_id = i.user_id \
                     WHERE i.user_id = $1 AND i.message_id = $2 ORDER BY i.seq LIMIT 1",
                )
                .await?;
            let row = client
                .query_opt(&stmt, &[&user.as_str(), &id.as_str()])
                .await?;
            let seq = row.map(|r| column::<i64>(&r, 0)).transpose()?;
            Ok(seq.map(|s| Seq(to_u64(s))))
        })
    }

    async fn mark_read(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        upto: u64,
        effects: Effects,
    ) -> Result<(u64, Vec<StoredEvent>)> {
        transaction!(self, |tx| {
            if !effects.events.is_empty() {
                // Lock order: the clock before the read position's row.
                broadcast_clock(tx).await?;
            }
            let stmt = tx
                .prepare_cached(
                    "UPDATE conversation_members SET read_upto = $3 \
                     WHERE conversation_id = $1 AND user_id = $2 AND read_upto < $3",
                )
                .await?;
            let moved = tx
                .execute(
                    &stmt,
                    &[&conversation.as_str(), &user.as_str(), &to_i64(upto)],
                )
                .await?;
            if moved == 1 {
                return Ok((upto, write_effects(tx, &effects, UnknownUsers::Fail).await?));
            }
            let stmt = tx
                .prepare_cached(
                    "SELECT read_upto FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
                )
                .await?;
            match tx
                .query_opt(&stmt, &[&conversation.as_str(), &user.as_str()])
                .await?
            {
                Some(row) => Ok((to_u64(column(&row, 0)?), Vec::new())),
                None => Err(StoreError::NotFound("conversation").into()),
            }
        })
    }

    async fn recall(
        &self,
        id: &MessageId,
        now: OffsetDateTime,
        effects: Effects,
    ) -> Result<Vec<StoredEvent>> {
        transaction!(self, |tx| {
            if !effects.events.is_empty() {
                // Lock order: the clock before the message row.
                broadcast_clock(tx).await?;
            }
            let stmt = tx
                .prepare_cached(
                    "UPDATE messages SET recalled_at = $2 WHERE message_id = $1 AND recalled_at IS NULL",
                )
                .await?;
            let changed = tx.execute(&stmt, &[&id.as_str(), &ms(now)]).await?;
            if changed == 0 {
                return match message_by_id(tx, id.as_str()).await? {
                    Some(_) => Err(StoreError::Conflict("already recalled").into()),
                    None => Err(StoreError::NotFound("message").into()),
                };
            }
            write_effects(tx, &effects, UnknownUsers::Fail).await
        })
    }

    async fn conversations(&self, user: &UserId) -> Result<Vec<ConversationState>> {
        snapshot!(self, |tx| {
            // The newest 1000 conversations first, then each one's last
            // message and unread count: one statement instead of a round
            // trip per conversation. Ids sort bytewise, as in SQLite.
            let stmt = tx
                .prepare_cached(&format!(
                    "SELECT s.conversation_id, s.read_upto, \
                     (SELECT count(*) FROM messages x WHERE x.conversation_id = s.conversation_id \
                      AND x.conv_seq > s.read_upto AND x.sender_id <> $1 AND x.recalled_at IS NULL), \
                     {MESSAGE_COLUMNS} \
                     FROM (SELECT cm.conversation_id, cm.read_upto, c.updated_at \
                           FROM conversation_members cm \
                           JOIN conversations c ON c.conversation_id = cm.conversation_id \
                           WHERE cm.user_id = $1 \
                           ORDER BY c.updated_at DESC, c.conversation_id COLLATE \"C\" LIMIT 1000) s \
                     LEFT JOIN LATERAL (SELECT * FROM messages l WHERE l.conversation_id = s.conversation_id \
                                        ORDER BY l.conv_seq DESC LIMIT 1) m ON TRUE \
                     ORDER BY s.updated_at DESC, s.conversation_id COLLATE \"C\""
                ))
                .await?;
            let rows = tx.query(&stmt, &[&user.as_str()]).await?;
            // A group's positions are summed per message (`read_count`),
            // never listed: a group has up to `groups.max_members`.
            let listed: Vec<String> = rows
                .iter()
                .map(|row| column::<String>(row, 0))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .filter(|cid| !cid.starts_with("g:"))
                .collect();
            let mut members_read: HashMap<String, Vec<(UserId, u64)>> = HashMap::new();
            if !listed.is_empty() {
                let stmt = tx
                    .prepare_cached(
                        "SELECT conversation_id, user_id, read_upto FROM conversation_members \
                         WHERE conversation_id = ANY($1) ORDER BY conversation_id, user_id COLLATE \"C\"",
                    )
                    .await?;
                for row in tx.query(&stmt, &[&listed]).await? {
                    let cid: String = column(&row, 0)?;
                    let member = user_id(column(&row, 1)?)?;
                    let read: i64 = column(&row, 2)?;
                    members_read
                        .entry(cid)
                        .or_default()
                        .push((member, to_u64(read)));
                }
            }
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let cid: String = column(row, 0)?;
                let read_upto: i64 = column(row, 1)?;
                let unread: i64 = column(row, 2)?;
                let has_message: Option<String> = column(row, 3)?;
                let last_message = match has_message {
                    Some(_) => Some(read(row, |r| read_message(r, 3))?),
                    None => None,
                };
                out.push(ConversationState {
                    members_read: members_read.remove(&cid).unwrap_or_default(),
                    conversation_id: ConversationId::parse(cid)
                        .map_err(|_| corrupt("conversation id"))?,
                    read_upto: to_u64(read_upto),
                    last_message,
                    unread: to_u64(unread),
                });
            }
            Ok(out)
        })
    }

    async fn history(
        &self,
        conversation: &ConversationId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = $1 AND m.conv_seq < $2 \
                     ORDER BY m.conv_seq DESC LIMIT $3"
                ))
                .await?;
            let before = before.map_or(i64::MAX, to_i64);
            client
                .query(&stmt, &[&conversation.as_str(), &before, &i64::from(limit)])
                .await?
                .iter()
                .map(|row| read(row, |r| read_message(r, 0)))
                .collect()
        })
    }
}
