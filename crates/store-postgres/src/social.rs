//! The relationship and group traits on PostgreSQL: friend requests,
//! friendships and blocks; groups, their members, roles and mutes.
//!
//! Ported from the embedded store (`sqlite/friends.rs`, `sqlite/groups.rs`)
//! with the same semantics and errors. What SQLite got from its single
//! writer comes here from row locks taken in the crate's global order
//! (broadcast clock, then group rows, then user rows sorted by id):
//!
//! - a relationship write locks both users' rows first, so two nodes
//!   handling `a → b` and `b → a` at once serialise and the second one sees
//!   the first request (the two become friends, not two pending requests);
//! - a group change locks the group row (`FOR UPDATE`) and checks the
//!   version under that lock; a membership change also locks the group's
//!   conversation row, under which group messages read the member list;
//!   then it locks every user it adds or writes an event to, before any
//!   edit, so the later inbox append takes no new lock out of order and a
//!   user deleted meanwhile is seen as unknown.
//!
//! Group messages and read counts live in `inbox.rs`.

use std::collections::HashSet;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;
use unimsg_proto::groups::{GroupRole, JoinPolicy};
use unimsg_proto::{ConversationId, GroupId, UserId};
use unimsg_store::{
    AppendOutcome, EventDraft, FriendRequestRow, FriendRow, GROUP_CHANGED, GroupEdit, GroupRow,
    Groups, MemberRow, NewGroup, NewMessage, Relationships, RequestOutcome, Result, Sealed,
    StoreError, StoredEvent, StoredText,
};

use crate::inbox::append_drafts;
use crate::{PgStore, broadcast_clock, corrupt, from_ms, ms, pg, to_u64, user_id};

/// Reads column `i`; a type mismatch is a corrupt row, not a lost
/// connection (which is what [`pg`] would make of a driver error without a
/// server code).
fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i)
        .map_err(|e| StoreError::Internal(format!("corrupt row: column {i}: {e}")))
}

/// Locks the rows of `users` `FOR UPDATE` in user-id order (the order
/// [`crate::append_inbox`] uses) and returns the ids of those that exist. The
/// caller has taken the broadcast clock already.
async fn lock_users(tx: &Transaction<'_>, mut ids: Vec<&str>) -> Result<HashSet<String>> {
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let stmt = tx
        .prepare_cached(
            "SELECT user_id FROM users WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE",
        )
        .await
        .map_err(pg)?;
    tx.query(&stmt, &[&ids])
        .await
        .map_err(pg)?
        .iter()
        .map(|r| col::<String>(r, 0))
        .collect()
}

// ---------------------------------------------------------------------------
// Relationships
// ---------------------------------------------------------------------------

/// Where `from` and `to` stand: (friends, `from → to` pending,
/// `to → from` pending).
async fn standing(tx: &Transaction<'_>, from: &UserId, to: &UserId) -> Result<(bool, bool, bool)> {
    let stmt = tx
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM friends WHERE user_id = $1 AND friend_id = $2), \
             EXISTS(SELECT 1 FROM friend_requests WHERE from_id = $1 AND to_id = $2 AND state = 'pending'), \
             EXISTS(SELECT 1 FROM friend_requests WHERE from_id = $2 AND to_id = $1 AND state = 'pending')",
        )
        .await
        .map_err(pg)?;
    let row = tx
        .query_one(&stmt, &[&from.as_str(), &to.as_str()])
        .await
        .map_err(pg)?;
    Ok((col(&row, 0)?, col(&row, 1)?, col(&row, 2)?))
}

/// Makes two users friends (both rows) and closes pending requests between
/// them; `true` if a friendship row was added.
async fn befriend(
    tx: &Transaction<'_>,
    a: &UserId,
    b: &UserId,
    at: OffsetDateTime,
) -> Result<bool> {
    // Tags start empty: the joined form of no tag is ''.
    let insert = tx
        .prepare_cached(
            "INSERT INTO friends (user_id, friend_id, tags, created_at) \
             VALUES ($1, $2, '', $3), ($2, $1, '', $3) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(pg)?;
    let added = tx
        .execute(&insert, &[&a.as_str(), &b.as_str(), &ms(at)])
        .await
        .map_err(pg)?;
    let close = tx
        .prepare_cached(
            "UPDATE friend_requests SET state = 'accepted', updated_at = $3 \
             WHERE ((from_id = $1 AND to_id = $2) OR (from_id = $2 AND to_id = $1)) \
             AND state = 'pending'",
        )
        .await
        .map_err(pg)?;
    tx.execute(&close, &[&a.as_str(), &b.as_str(), &ms(at)])
        .await
        .map_err(pg)?;
    Ok(added > 0)
}

/// Ends a friendship on both sides; `true` if there was one.
async fn unfriend(tx: &Transaction<'_>, a: &UserId, b: &UserId) -> Result<bool> {
    let stmt = tx
        .prepare_cached(
            "DELETE FROM friends \
             WHERE (user_id = $1 AND friend_id = $2) OR (user_id = $2 AND friend_id = $1)",
        )
        .await
        .map_err(pg)?;
    let removed = tx
        .execute(&stmt, &[&a.as_str(), &b.as_str()])
        .await
        .map_err(pg)?;
    Ok(removed > 0)
}

/// Takes the broadcast clock, then the rows of the pair and of every user
/// an event goes to, in order; returns the users that exist.
async fn lock_pair(
    tx: &Transaction<'_>,
    a: &UserId,
    b: &UserId,
    events: &[&[EventDraft]],
) -> Result<HashSet<String>> {
    broadcast_clock(tx).await?;
    let mut ids = vec![a.as_str(), b.as_str()];
    for list in events {
        ids.extend(list.iter().map(|d| d.user_id.as_str()));
    }
    lock_users(tx, ids).await
}

fn friend_request(row: &Row) -> Result<FriendRequestRow> {
    Ok(FriendRequestRow {
        from: user_id(col(row, 0)?)?,
        to: user_id(col(row, 1)?)?,
        message: match (
            col::<Option<Vec<u8>>>(row, 3)?,
            col::<Option<String>>(row, 2)?,
        ) {
            (Some(bytes), _) => Some(StoredText::Sealed(Sealed::from_bytes(&bytes).ok_or_else(
                || StoreError::Internal("a sealed friend-request text is corrupt".into()),
            )?)),
            (None, plain) => plain.map(StoredText::Plain),
        },
        created_at: from_ms(col(row, 4)?)?,
    })
}

#[async_trait]
impl Relationships for PgStore {
    async fn request_friend(
        &self,
        request: FriendRequestRow,
        request_events: Vec<EventDraft>,
        friends_events: Vec<EventDraft>,
    ) -> Result<(RequestOutcome, Vec<StoredEvent>)> {
        let (from, to) = (&request.from, &request.to);
        transaction!(self, |tx| {
            // Both users locked: a concurrent `to → from` request on another
            // node waits here and then sees this one.
            let known = lock_pair(tx, from, to, &[&request_events, &friends_events]).await?;
            if !known.contains(to.as_str()) {
                return Err(StoreError::NotFound("user"));
            }
            let (friends, asked, asked_back) = standing(tx, from, to).await?;
            if friends || asked {
                return Ok((RequestOutcome::Unchanged, Vec::new()));
            }
            if asked_back {
                befriend(tx, from, to, request.created_at).await?;
                let events = append_drafts(tx, &friends_events, false).await?;
                return Ok((RequestOutcome::Friends, events));
            }
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO friend_requests \
                     (from_id, to_id, message, message_sealed, state, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, 'pending', $5, $5) \
                     ON CONFLICT (from_id, to_id) DO UPDATE SET message = EXCLUDED.message, \
                     message_sealed = EXCLUDED.message_sealed, \
                     state = 'pending', created_at = EXCLUDED.created_at, \
                     updated_at = EXCLUDED.updated_at",
                )
                .await
                .map_err(pg)?;
            let (plain, sealed) = match &request.message {
                None => (None, None),
                Some(StoredText::Plain(p)) => (Some(p.as_str()), None),
                Some(StoredText::Sealed(s)) => (None, Some(s.to_bytes())),
            };
            tx.execute(
                &stmt,
                &[
                    &from.as_str(),
                    &to.as_str(),
                    &plain,
                    &sealed,
                    &ms(request.created_at),
                ],
            )
            .await
            .map_err(pg)?;
            let events = append_drafts(tx, &request_events, false).await?;
            Ok((RequestOutcome::Pending, events))
        })
    }

    async fn answer_friend_request(
        &self,
        from: &UserId,
        to: &UserId,
        accept: bool,
        at: OffsetDateTime,
        events: Vec<EventDraft>,
    ) -> Result<Vec<StoredEvent>> {
        transaction!(self, |tx| {
            lock_pair(tx, from, to, &[&events]).await?;
            let (_, pending, _) = standing(tx, from, to).await?;
            if !pending {
                return Err(StoreError::NotFound("friend request"));
            }
            if accept {
                befriend(tx, from, to, at).await?;
            } else {
                let stmt = tx
                    .prepare_cached(
                        "UPDATE friend_requests SET state = 'declined', updated_at = $3 \
                         WHERE from_id = $1 AND to_id = $2",
                    )
                    .await
                    .map_err(pg)?;
                tx.execute(&stmt, &[&from.as_str(), &to.as_str(), &ms(at)])
                    .await
                    .map_err(pg)?;
            }
            append_drafts(tx, &events, false).await
        })
    }

    async fn friend_requests(
        &self,
        user: &UserId,
        incoming: bool,
    ) -> Result<Vec<FriendRequestRow>> {
        // SQLite leaves ties in created_at to its scan order; here they go
        // by the pair, bytewise like SQLite's BINARY collation.
        let sql = if incoming {
            "SELECT from_id, to_id, message, message_sealed, created_at FROM friend_requests \
             WHERE to_id = $1 AND state = 'pending' \
             ORDER BY created_at, from_id COLLATE \"C\""
        } else {
            "SELECT from_id, to_id, message, message_sealed, created_at FROM friend_requests \
             WHERE from_id = $1 AND state = 'pending' \
             ORDER BY created_at, to_id COLLATE \"C\""
        };
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(pg)?;
        client
            .query(&stmt, &[&user.as_str()])
            .await
            .map_err(pg)?
            .iter()
            .map(friend_request)
            .collect()
    }

    async fn friends(&self, user: &UserId) -> Result<Vec<FriendRow>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT friend_id, tags, remark, created_at FROM friends \
                 WHERE user_id = $1 ORDER BY friend_id COLLATE \"C\"",
            )
            .await
            .map_err(pg)?;
        client
            .query(&stmt, &[&user.as_str()])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| {
                let tags: String = col(r, 1)?;
                Ok(FriendRow {
                    friend: user_id(col(r, 0)?)?,
                    tags: split_tags(&tags),
                    remark: col(r, 2)?,
                    since: from_ms(col(r, 3)?)?,
                })
            })
            .collect()
    }

    async fn are_friends(&self, a: &UserId, b: &UserId) -> Result<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM friends WHERE user_id = $1 AND friend_id = $2)",
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_one(&stmt, &[&a.as_str(), &b.as_str()])
            .await
            .map_err(pg)?;
        col(&row, 0)
    }

    async fn remove_friend(
        &self,
        user: &UserId,
        friend: &UserId,
        events: Vec<EventDraft>,
    ) -> Result<(bool, Vec<StoredEvent>)> {
        transaction!(self, |tx| {
            lock_pair(tx, user, friend, &[&events]).await?;
            if !unfriend(tx, user, friend).await? {
                return Ok((false, Vec::new()));
            }
            Ok((true, append_drafts(tx, &events, false).await?))
        })
    }

    async fn update_friend(
        &self,
        user: &UserId,
        friend: &UserId,
        tags: Vec<String>,
        remark: String,
    ) -> Result<FriendRow> {
        // Tags are joined with the unit separator, which a tag cannot contain.
        let joined = tags.join("\u{1f}");
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE friends SET tags = $3, remark = $4 \
                 WHERE user_id = $1 AND friend_id = $2 RETURNING created_at",
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_opt(&stmt, &[&user.as_str(), &friend.as_str(), &joined, &remark])
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound("friend"))?;
        Ok(FriendRow {
            friend: friend.clone(),
            tags,
            remark,
            since: from_ms(col(&row, 0)?)?,
        })
    }

    async fn set_block(
        &self,
        user: &UserId,
        other: &UserId,
        blocked: bool,
        at: OffsetDateTime,
        events: Vec<EventDraft>,
    ) -> Result<(bool, Vec<StoredEvent>)> {
        transaction!(self, |tx| {
            let known = lock_pair(tx, user, other, &[&events]).await?;
            if !known.contains(other.as_str()) {
                return Err(StoreError::NotFound("user"));
            }
            let changed = if blocked {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO blocks (user_id, blocked_id, created_at) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING",
                    )
                    .await
                    .map_err(pg)?;
                tx.execute(&stmt, &[&user.as_str(), &other.as_str(), &ms(at)])
                    .await
                    .map_err(pg)?
            } else {
                let stmt = tx
                    .prepare_cached("DELETE FROM blocks WHERE user_id = $1 AND blocked_id = $2")
                    .await
                    .map_err(pg)?;
                tx.execute(&stmt, &[&user.as_str(), &other.as_str()])
                    .await
                    .map_err(pg)?
            };
            if changed == 0 {
                return Ok((false, Vec::new()));
            }
            Ok((true, append_drafts(tx, &events, false).await?))
        })
    }

    async fn blocks(&self, user: &UserId) -> Result<Vec<(UserId, OffsetDateTime)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT blocked_id, created_at FROM blocks WHERE user_id = $1 \
                 ORDER BY blocked_id COLLATE \"C\"",
            )
            .await
            .map_err(pg)?;
        client
            .query(&stmt, &[&user.as_str()])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| Ok((user_id(col(r, 0)?)?, from_ms(col(r, 1)?)?)))
            .collect()
    }

    async fn is_blocked(&self, blocker: &UserId, other: &UserId) -> Result<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM blocks WHERE user_id = $1 AND blocked_id = $2)",
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_one(&stmt, &[&blocker.as_str(), &other.as_str()])
            .await
            .map_err(pg)?;
        col(&row, 0)
    }

    async fn set_friendship(
        &self,
        a: &UserId,
        b: &UserId,
        friends: bool,
        at: OffsetDateTime,
    ) -> Result<bool> {
        transaction!(self, |tx| {
            let known = lock_pair(tx, a, b, &[]).await?;
            if !known.contains(a.as_str()) || !known.contains(b.as_str()) {
                return Err(StoreError::NotFound("user"));
            }
            if friends {
                befriend(tx, a, b, at).await
            } else {
                unfriend(tx, a, b).await
            }
        })
    }
}

/// Splits the stored form of a friend's tags (joined with U+001F).
fn split_tags(joined: &str) -> Vec<String> {
    joined
        .split('\u{1f}')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------

/// Group columns with the owner and the member count, from `chat_groups g`.
const GROUP_COLUMNS: &str = "g.group_id, g.name, g.notice, g.join_policy, g.all_muted, g.version, \
     g.created_at, \
     (SELECT o.user_id FROM group_members o WHERE o.group_id = g.group_id AND o.role = 'owner' LIMIT 1), \
     (SELECT count(*) FROM group_members c WHERE c.group_id = g.group_id)";

/// How many columns [`GROUP_COLUMNS`] has.
const GROUP_WIDTH: usize = 9;

/// Member columns, from `group_members m LEFT JOIN users u`.
const MEMBER_COLUMNS: &str =
    "m.user_id, coalesce(u.display_name, ''), m.role, m.muted_until, m.joined_at, m.since";

fn read_group(row: &Row, at: usize) -> Result<GroupRow> {
    let id: String = col(row, at)?;
    let policy: String = col(row, at + 3)?;
    let owner: Option<String> = col(row, at + 7)?;
    Ok(GroupRow {
        group_id: GroupId::parse(id).map_err(|_| corrupt("group id"))?,
        name: col(row, at + 1)?,
        notice: col(row, at + 2)?,
        join_policy: JoinPolicy::parse(&policy).ok_or_else(|| corrupt("join policy"))?,
        all_muted: col(row, at + 4)?,
        version: to_u64(col(row, at + 5)?),
        created_at: from_ms(col(row, at + 6)?)?,
        owner: owner.map(user_id).transpose()?,
        member_count: to_u64(col(row, at + 8)?),
    })
}

fn read_member(row: &Row, at: usize) -> Result<MemberRow> {
    let role: String = col(row, at + 2)?;
    let muted: Option<i64> = col(row, at + 3)?;
    Ok(MemberRow {
        user_id: user_id(col(row, at)?)?,
        display_name: col(row, at + 1)?,
        role: GroupRole::parse(&role).ok_or_else(|| corrupt("group role"))?,
        muted_until: muted.map(from_ms).transpose()?,
        joined_at: from_ms(col(row, at + 4)?)?,
        since: to_u64(col(row, at + 5)?),
    })
}

/// A group that exists and is not dissolved.
async fn group_by_id(client: &impl GenericClient, id: &GroupId) -> Result<Option<GroupRow>> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {GROUP_COLUMNS} FROM chat_groups g \
             WHERE g.group_id = $1 AND g.dissolved_at IS NULL"
        ))
        .await
        .map_err(pg)?;
    client
        .query_opt(&stmt, &[&id.as_str()])
        .await
        .map_err(pg)?
        .map(|r| read_group(&r, 0))
        .transpose()
}

/// Adds members (the first role given for a user wins; users already in
/// are skipped) from the conversation's current position on, with a read
/// position there: older messages are not theirs and do not count as
/// unread. One statement whatever the number of members. The caller has
/// checked that every user exists and holds their rows.
async fn add_members(
    tx: &Transaction<'_>,
    id: &GroupId,
    conversation: &ConversationId,
    members: &[(UserId, GroupRole)],
    at: OffsetDateTime,
) -> Result<()> {
    let mut seen = HashSet::with_capacity(members.len());
    let (users, roles): (Vec<&str>, Vec<&str>) = members
        .iter()
        .filter(|(u, _)| seen.insert(u.as_str()))
        .map(|(u, r)| (u.as_str(), r.as_str()))
        .unzip();
    if users.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "WITH pos AS ( \
               SELECT coalesce((SELECT last_conv_seq FROM conversations \
                                WHERE conversation_id = $4), 0) AS since \
             ), added AS ( \
               INSERT INTO group_members (group_id, user_id, role, since, joined_at) \
               SELECT $1, t.u, t.r, pos.since, $5 \
               FROM unnest($2::text[], $3::text[]) AS t(u, r), pos \
               ON CONFLICT (group_id, user_id) DO NOTHING \
               RETURNING user_id, since \
             ) \
             INSERT INTO conversation_members (conversation_id, user_id, read_upto) \
             SELECT $4, user_id, since FROM added \
             ON CONFLICT (conversation_id, user_id) DO UPDATE SET read_upto = EXCLUDED.read_upto",
        )
        .await
        .map_err(pg)?;
    tx.execute(
        &stmt,
        &[
            &id.as_str(),
            &users,
            &roles,
            &conversation.as_str(),
            &ms(at),
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Applies one edit; the group row and the users added are locked.
async fn apply(
    tx: &Transaction<'_>,
    id: &GroupId,
    conversation: &ConversationId,
    edit: &GroupEdit,
    at: OffsetDateTime,
    known: &HashSet<String>,
) -> Result<()> {
    let one_member = |changed: u64| {
        if changed == 0 {
            Err(StoreError::NotFound("group member"))
        } else {
            Ok(())
        }
    };
    match edit {
        GroupEdit::Profile {
            name,
            notice,
            join_policy,
        } => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE chat_groups SET name = coalesce($2, name), \
                     notice = coalesce($3, notice), join_policy = coalesce($4, join_policy) \
                     WHERE group_id = $1",
                )
                .await
                .map_err(pg)?;
            tx.execute(
                &stmt,
                &[
                    &id.as_str(),
                    &name.as_deref(),
                    &notice.as_deref(),
                    &join_policy.map(JoinPolicy::as_str),
                ],
            )
            .await
            .map_err(pg)?;
        }
        GroupEdit::AllMuted(muted) => {
            let stmt = tx
                .prepare_cached("UPDATE chat_groups SET all_muted = $2 WHERE group_id = $1")
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[&id.as_str(), muted])
                .await
                .map_err(pg)?;
        }
        GroupEdit::AddMembers(members) => {
            if members.iter().any(|(u, _)| !known.contains(u.as_str())) {
                return Err(StoreError::NotFound("user"));
            }
            add_members(tx, id, conversation, members, at).await?;
        }
        GroupEdit::RemoveMembers(users) => {
            let users: Vec<&str> = users.iter().map(UserId::as_str).collect();
            let stmt = tx
                .prepare_cached(
                    "WITH gone AS ( \
                       DELETE FROM group_members WHERE group_id = $1 AND user_id = ANY($2::text[]) \
                     ) \
                     DELETE FROM conversation_members \
                     WHERE conversation_id = $3 AND user_id = ANY($2::text[])",
                )
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[&id.as_str(), &users, &conversation.as_str()])
                .await
                .map_err(pg)?;
        }
        GroupEdit::SetRole(user, role) => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE group_members SET role = $3 WHERE group_id = $1 AND user_id = $2",
                )
                .await
                .map_err(pg)?;
            one_member(
                tx.execute(&stmt, &[&id.as_str(), &user.as_str(), &role.as_str()])
                    .await
                    .map_err(pg)?,
            )?;
        }
        GroupEdit::Mute(user, until) => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE group_members SET muted_until = $3 WHERE group_id = $1 AND user_id = $2",
                )
                .await
                .map_err(pg)?;
            one_member(
                tx.execute(&stmt, &[&id.as_str(), &user.as_str(), &until.map(ms)])
                    .await
                    .map_err(pg)?,
            )?;
        }
        GroupEdit::Dissolve => {
            let stmt = tx
                .prepare_cached(
                    "WITH ended AS ( \
                       UPDATE chat_groups SET dissolved_at = $3 WHERE group_id = $1 \
                     ), gone AS ( \
                       DELETE FROM group_members WHERE group_id = $1 \
                     ) \
                     DELETE FROM conversation_members WHERE conversation_id = $2",
                )
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[&id.as_str(), &conversation.as_str(), &ms(at)])
                .await
                .map_err(pg)?;
        }
    }
    Ok(())
}

/// Whether an edit changes who is a member.
fn changes_members(edit: &GroupEdit) -> bool {
    matches!(
        edit,
        GroupEdit::AddMembers(_) | GroupEdit::RemoveMembers(_) | GroupEdit::Dissolve
    )
}

/// Every user a group change adds, and every user it writes an event to.
fn touched<'a>(edits: &'a [GroupEdit], events: &'a [EventDraft]) -> Vec<&'a str> {
    let mut ids: Vec<&str> = events.iter().map(|d| d.user_id.as_str()).collect();
    for edit in edits {
        if let GroupEdit::AddMembers(members) = edit {
            ids.extend(members.iter().map(|(u, _)| u.as_str()));
        }
    }
    ids
}

#[async_trait]
impl Groups for PgStore {
    async fn create_group(
        &self,
        group: NewGroup,
        members: Vec<(UserId, GroupRole)>,
        events: Vec<EventDraft>,
    ) -> Result<(GroupRow, Vec<StoredEvent>)> {
        let conversation = ConversationId::group(&group.group_id);
        transaction!(self, |tx| {
            broadcast_clock(tx).await?;
            let at = ms(group.created_at);
            // A dissolved group keeps its row, so this also refuses an id
            // that was ever taken. A concurrent creation of the same id
            // waits here and then does nothing.
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO chat_groups (group_id, name, notice, join_policy, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (group_id) DO NOTHING",
                )
                .await
                .map_err(pg)?;
            let inserted = tx
                .execute(
                    &stmt,
                    &[
                        &group.group_id.as_str(),
                        &group.name,
                        &group.notice,
                        &group.join_policy.as_str(),
                        &at,
                    ],
                )
                .await
                .map_err(pg)?;
            if inserted == 0 {
                return Err(StoreError::Conflict("group"));
            }
            // The conversation exists from the start, so that the group is
            // listed among its members' conversations before any message.
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO conversations (conversation_id, last_conv_seq, updated_at) \
                     VALUES ($1, 0, $2) ON CONFLICT (conversation_id) DO NOTHING",
                )
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[&conversation.as_str(), &at])
                .await
                .map_err(pg)?;
            let mut ids = touched(&[], &events);
            ids.extend(members.iter().map(|(u, _)| u.as_str()));
            let known = lock_users(tx, ids).await?;
            if members.iter().any(|(u, _)| !known.contains(u.as_str())) {
                return Err(StoreError::NotFound("user"));
            }
            add_members(
                tx,
                &group.group_id,
                &conversation,
                &members,
                group.created_at,
            )
            .await?;
            let events = append_drafts(tx, &events, true).await?;
            let row = group_by_id(tx, &group.group_id)
                .await?
                .ok_or_else(|| corrupt("new group"))?;
            Ok((row, events))
        })
    }

    async fn group(&self, id: &GroupId) -> Result<Option<GroupRow>> {
        let client = self.client().await?;
        group_by_id(&client, id).await
    }

    async fn group_members(&self, id: &GroupId) -> Result<Vec<MemberRow>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {MEMBER_COLUMNS} FROM group_members m \
                 LEFT JOIN users u ON u.user_id = m.user_id \
                 WHERE m.group_id = $1 ORDER BY m.joined_at, m.user_id COLLATE \"C\""
            ))
            .await
            .map_err(pg)?;
        client
            .query(&stmt, &[&id.as_str()])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| read_member(r, 0))
            .collect()
    }

    async fn group_member(&self, id: &GroupId, user: &UserId) -> Result<Option<MemberRow>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {MEMBER_COLUMNS} FROM group_members m \
                 LEFT JOIN users u ON u.user_id = m.user_id \
                 WHERE m.group_id = $1 AND m.user_id = $2"
            ))
            .await
            .map_err(pg)?;
        client
            .query_opt(&stmt, &[&id.as_str(), &user.as_str()])
            .await
            .map_err(pg)?
            .map(|r| read_member(&r, 0))
            .transpose()
    }

    async fn user_groups(&self, user: &UserId) -> Result<Vec<(GroupRow, MemberRow)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {GROUP_COLUMNS}, {MEMBER_COLUMNS} FROM group_members m \
                 JOIN chat_groups g ON g.group_id = m.group_id \
                 LEFT JOIN users u ON u.user_id = m.user_id \
                 WHERE m.user_id = $1 AND g.dissolved_at IS NULL \
                 ORDER BY g.created_at DESC, g.group_id COLLATE \"C\""
            ))
            .await
            .map_err(pg)?;
        client
            .query(&stmt, &[&user.as_str()])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| Ok((read_group(r, 0)?, read_member(r, GROUP_WIDTH)?)))
            .collect()
    }

    async fn change_group(
        &self,
        id: &GroupId,
        version: u64,
        edits: Vec<GroupEdit>,
        at: OffsetDateTime,
        events: Vec<EventDraft>,
    ) -> Result<(GroupRow, Vec<StoredEvent>)> {
        let conversation = ConversationId::group(id);
        transaction!(self, |tx| {
            broadcast_clock(tx).await?;
            // The version is checked under the group's row lock: a change
            // decided on the same version on another node waits here and
            // then fails with GROUP_CHANGED.
            let lock = tx
                .prepare_cached(
                    "SELECT version FROM chat_groups \
                     WHERE group_id = $1 AND dissolved_at IS NULL FOR UPDATE",
                )
                .await
                .map_err(pg)?;
            let locked = tx
                .query_opt(&lock, &[&id.as_str()])
                .await
                .map_err(pg)?
                .ok_or(StoreError::NotFound("group"))?;
            if to_u64(col(&locked, 0)?) != version {
                return Err(StoreError::Conflict(GROUP_CHANGED));
            }
            if edits.iter().any(changes_members) {
                // A group message reads the member list under its
                // conversation's row lock (`inbox::append_group_message`):
                // holding that row, membership changes land wholly before or
                // after each message, and `since` is the true last position.
                let stmt = tx
                    .prepare_cached(
                        "SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE",
                    )
                    .await
                    .map_err(pg)?;
                tx.query_opt(&stmt, &[&conversation.as_str()])
                    .await
                    .map_err(pg)?;
            }
            let before = group_by_id(tx, id)
                .await?
                .ok_or(StoreError::NotFound("group"))?;
            // Users before any edit, in id order: the inbox append below
            // then takes no lock out of order.
            let known = lock_users(tx, touched(&edits, &events)).await?;
            for edit in &edits {
                apply(tx, id, &conversation, edit, at, &known).await?;
            }
            let stmt = tx
                .prepare_cached(
                    "UPDATE chat_groups SET version = version + 1, updated_at = $2 \
                     WHERE group_id = $1",
                )
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[&id.as_str(), &ms(at)])
                .await
                .map_err(pg)?;
            let events = append_drafts(tx, &events, true).await?;
            let after = match group_by_id(tx, id).await? {
                Some(after) => after,
                None => GroupRow {
                    member_count: 0,
                    owner: None,
                    version: before.version + 1,
                    ..before
                },
            };
            Ok((after, events))
        })
    }

    async fn append_group_message(&self, message: NewMessage) -> Result<AppendOutcome> {
        crate::inbox::append_group_message(self, message).await
    }

    async fn read_count(
        &self,
        conversation: &ConversationId,
        conv_seq: u64,
        sender: &UserId,
    ) -> Result<(u64, u64)> {
        crate::inbox::read_count(self, conversation, conv_seq, sender).await
    }
}
