//! The `Groups` trait on PostgreSQL: groups, their members, roles and
//! mutes, versioned changes, the group fan-out and read counts.
//!
//! A group change locks the group row (`FOR UPDATE`) and checks the
//! version under that lock; a membership change also locks the group's
//! conversation row, under which group messages read the member list;
//! then it locks every user it adds or writes an event to, before any
//! edit, so the later inbox append takes no new lock out of order and a
//! user deleted meanwhile is seen as unknown.

use std::collections::HashSet;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use time::OffsetDateTime;
use unimsg_proto::api::Recipient;
use unimsg_proto::groups::{GroupRole, JoinPolicy};
use unimsg_proto::{ConversationId, GroupId, UserId};
use unimsg_store::sql::{
    GROUP_COLUMNS, GROUP_WIDTH, MEMBER_COLUMNS, changed_group, check_version, corrupt, ms,
    one_member, read_group, read_member, to_i64, to_u64, user_id,
};
use unimsg_store::{
    AppendOutcome, Effects, EventDraft, GroupEdit, GroupRow, Groups, MemberRow, NewGroup,
    NewMessage, Result, StoreError, StoredEvent,
};

use crate::inbox::{
    append_message_events, bump_conversation, duplicate_of, insert_message, lost_race, mark_send,
    write_effects,
};
use crate::{DbResult, PgStore, UnknownUsers, broadcast_clock, column, lock_users, read};

/// A group that exists and is not dissolved.
async fn group_by_id(client: &impl GenericClient, id: &GroupId) -> DbResult<Option<GroupRow>> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {GROUP_COLUMNS} FROM chat_groups g \
             WHERE g.group_id = $1 AND g.dissolved_at IS NULL"
        ))
        .await?;
    client
        .query_opt(&stmt, &[&id.as_str()])
        .await?
        .map(|r| read(&r, |r| read_group(r, 0)))
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
) -> DbResult<()> {
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
        .await?;
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
    .await?;
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
) -> DbResult<()> {
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
                .await?;
            tx.execute(
                &stmt,
                &[
                    &id.as_str(),
                    &name.as_deref(),
                    &notice.as_deref(),
                    &join_policy.map(JoinPolicy::as_str),
                ],
            )
            .await?;
        }
        GroupEdit::AllMuted(muted) => {
            let stmt = tx
                .prepare_cached("UPDATE chat_groups SET all_muted = $2 WHERE group_id = $1")
                .await?;
            tx.execute(&stmt, &[&id.as_str(), muted]).await?;
        }
        GroupEdit::AddMembers(members) => {
            if members.iter().any(|(u, _)| !known.contains(u.as_str())) {
                return Err(StoreError::NotFound("user").into());
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
                .await?;
            tx.execute(&stmt, &[&id.as_str(), &users, &conversation.as_str()])
                .await?;
        }
        GroupEdit::SetRole(user, role) => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE group_members SET role = $3 WHERE group_id = $1 AND user_id = $2",
                )
                .await?;
            one_member(
                tx.execute(&stmt, &[&id.as_str(), &user.as_str(), &role.as_str()])
                    .await?
                    > 0,
            )?;
        }
        GroupEdit::Mute(user, until) => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE group_members SET muted_until = $3 WHERE group_id = $1 AND user_id = $2",
                )
                .await?;
            one_member(
                tx.execute(&stmt, &[&id.as_str(), &user.as_str(), &until.map(ms)])
                    .await?
                    > 0,
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
                .await?;
            tx.execute(&stmt, &[&id.as_str(), &conversation.as_str(), &ms(at)])
                .await?;
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
        effects: Effects,
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
                .await?;
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
                .await?;
            if inserted == 0 {
                return Err(StoreError::Conflict("group").into());
            }
            // The conversation exists from the start, so that the group is
            // listed among its members' conversations before any message.
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO conversations (conversation_id, last_conv_seq, updated_at) \
                     VALUES ($1, 0, $2) ON CONFLICT (conversation_id) DO NOTHING",
                )
                .await?;
            tx.execute(&stmt, &[&conversation.as_str(), &at]).await?;
            let mut ids = touched(&[], &effects.events);
            ids.extend(members.iter().map(|(u, _)| u.as_str()));
            let known = lock_users(tx, ids).await?;
            if members.iter().any(|(u, _)| !known.contains(u.as_str())) {
                return Err(StoreError::NotFound("user").into());
            }
            add_members(
                tx,
                &group.group_id,
                &conversation,
                &members,
                group.created_at,
            )
            .await?;
            let events = write_effects(tx, &effects, UnknownUsers::Skip).await?;
            let row = group_by_id(tx, &group.group_id)
                .await?
                .ok_or_else(|| corrupt("new group"))?;
            Ok((row, events))
        })
    }

    async fn group(&self, id: &GroupId) -> Result<Option<GroupRow>> {
        connected!(self, |client| group_by_id(&client, id).await)
    }

    async fn group_members(&self, id: &GroupId) -> Result<Vec<MemberRow>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {MEMBER_COLUMNS} FROM group_members m \
                     LEFT JOIN users u ON u.user_id = m.user_id \
                     WHERE m.group_id = $1 ORDER BY m.joined_at, m.user_id COLLATE \"C\""
                ))
                .await?;
            client
                .query(&stmt, &[&id.as_str()])
                .await?
                .iter()
                .map(|r| read(r, |r| read_member(r, 0)))
                .collect()
        })
    }

    async fn group_member(&self, id: &GroupId, user: &UserId) -> Result<Option<MemberRow>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {MEMBER_COLUMNS} FROM group_members m \
                     LEFT JOIN users u ON u.user_id = m.user_id \
                     WHERE m.group_id = $1 AND m.user_id = $2"
                ))
                .await?;
            client
                .query_opt(&stmt, &[&id.as_str(), &user.as_str()])
                .await?
                .map(|r| read(&r, |r| read_member(r, 0)))
                .transpose()
        })
    }

    async fn user_groups(&self, user: &UserId) -> Result<Vec<(GroupRow, MemberRow)>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {GROUP_COLUMNS}, {MEMBER_COLUMNS} FROM group_members m \
                     JOIN chat_groups g ON g.group_id = m.group_id \
                     LEFT JOIN users u ON u.user_id = m.user_id \
                     WHERE m.user_id = $1 AND g.dissolved_at IS NULL \
                     ORDER BY g.created_at DESC, g.group_id COLLATE \"C\""
                ))
                .await?;
            client
                .query(&stmt, &[&user.as_str()])
                .await?
                .iter()
                .map(|r| {
                    Ok((
                        read(r, |r| read_group(r, 0))?,
                        read(r, |r| read_member(r, GROUP_WIDTH))?,
                    ))
                })
                .collect()
        })
    }

    async fn change_group(
        &self,
        id: &GroupId,
        version: u64,
        edits: Vec<GroupEdit>,
        at: OffsetDateTime,
        effects: Effects,
    ) -> Result<(GroupRow, Vec<StoredEvent>)> {
        let conversation = ConversationId::group(id);
        transaction!(self, |tx| {
            broadcast_clock(tx).await?;
            // The version is checked under the group's row lock: a change
            // decided on the same version on another node waits here and
            // then fails as `Stale`.
            let lock = tx
                .prepare_cached(
                    "SELECT version FROM chat_groups \
                     WHERE group_id = $1 AND dissolved_at IS NULL FOR UPDATE",
                )
                .await?;
            let locked = tx
                .query_opt(&lock, &[&id.as_str()])
                .await?
                .ok_or(StoreError::NotFound("group"))?;
            check_version(to_u64(column(&locked, 0)?), version)?;
            if edits.iter().any(changes_members) {
                // A group message reads the member list under its
                // conversation's row lock (`append_group_message`):
                // holding that row, membership changes land wholly before or
                // after each message, and `since` is the true last position.
                let stmt = tx
                    .prepare_cached(
                        "SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE",
                    )
                    .await?;
                tx.query_opt(&stmt, &[&conversation.as_str()]).await?;
            }
            let before = group_by_id(tx, id)
                .await?
                .ok_or(StoreError::NotFound("group"))?;
            // Users before any edit, in id order: the inbox append below
            // then takes no lock out of order.
            let known = lock_users(tx, touched(&edits, &effects.events)).await?;
            for edit in &edits {
                apply(tx, id, &conversation, edit, at, &known).await?;
            }
            let stmt = tx
                .prepare_cached(
                    "UPDATE chat_groups SET version = version + 1, updated_at = $2 \
                     WHERE group_id = $1",
                )
                .await?;
            tx.execute(&stmt, &[&id.as_str(), &ms(at)]).await?;
            let events = write_effects(tx, &effects, UnknownUsers::Skip).await?;
            let after = group_by_id(tx, id).await?;
            Ok((changed_group(before, after), events))
        })
    }

    async fn append_group_message(&self, message: NewMessage) -> Result<AppendOutcome> {
        append_group_message(self, message).await
    }

    async fn read_count(
        &self,
        conversation: &ConversationId,
        conv_seq: u64,
        sender: &UserId,
    ) -> Result<(u64, u64)> {
        Ok(read_count(self, conversation, conv_seq, sender).await?)
    }
}

/// Stores a group message and appends `message.new` to every member's
/// inbox, the sender included ([`unimsg_store::Groups::append_group_message`]).
///
/// The member list is read after the group's conversation row is locked
/// (by the counter bump), in the transaction that fans the message out:
/// membership changes that lock that row too are either fully before this
/// message (and decide who gets it) or fully after it.
async fn append_group_message(store: &PgStore, message: NewMessage) -> Result<AppendOutcome> {
    transaction!(store, |tx| {
        if let Some(original) = duplicate_of(tx, &message).await? {
            return Ok(AppendOutcome::Duplicate(original));
        }
        let Recipient::Group(group) = &message.recipient else {
            return Err(
                StoreError::Internal("a direct message is not a group message".into()).into(),
            );
        };
        // Lock order: broadcast clock, conversation row, users.
        broadcast_clock(tx).await?;
        mark_send(tx, &message).await?;
        let conv_seq = bump_conversation(tx, &message).await?;
        // Membership is decided here, under the conversation lock: a member
        // removed before this commit gets nothing, one added gets it.
        let stmt = tx
            .prepare_cached(
                "SELECT m.user_id FROM group_members m JOIN chat_groups g ON g.group_id = m.group_id \
                 WHERE m.group_id = $1 AND g.dissolved_at IS NULL ORDER BY m.user_id COLLATE \"C\"",
            )
            .await?;
        let members = tx
            .query(&stmt, &[&group.as_str()])
            .await?
            .iter()
            .map(|row| column::<String>(row, 0).and_then(user_id))
            .collect::<Result<Vec<_>>>()?;
        if !members.contains(&message.sender) {
            // The error rolls the counter bump back with the transaction.
            return Err(StoreError::NotFound("group member").into());
        }
        let Some(stored) = insert_message(tx, &message, conv_seq).await? else {
            return lost_race(tx, &message).await;
        };
        if let Some(hook) = &message.hook {
            crate::webhooks::enqueue(tx, hook).await?;
        }
        // Members are users (deleting a user removes their memberships);
        // one deleted concurrently is skipped rather than failing the send.
        let events = append_message_events(tx, &stored, &members, UnknownUsers::Skip).await?;
        Ok(AppendOutcome::Created {
            message: stored,
            events,
        })
    })
}

/// For the message at `conv_seq` of a conversation: how many members other
/// than `sender` have read up to it, and how many received it and are
/// still members (`(read, members)`), from the read positions. Members who
/// joined after the message (`since >= conv_seq`) did not receive it.
async fn read_count(
    store: &PgStore,
    conversation: &ConversationId,
    conv_seq: u64,
    sender: &UserId,
) -> DbResult<(u64, u64)> {
    crate::timed(async {
        let group = conversation.group_id();
        let group = group.as_ref().map(GroupId::as_str);
        let client = store.client().await?;
        // One pass over the conversation's read positions.
        let stmt = client
            .prepare_cached(
                "SELECT count(*), count(*) FILTER (WHERE cm.read_upto >= $3) FROM conversation_members cm \
                 LEFT JOIN group_members gm ON gm.group_id = $4 AND gm.user_id = cm.user_id \
                 WHERE cm.conversation_id = $1 AND cm.user_id <> $2 AND coalesce(gm.since, 0) < $3",
            )
            .await?;
        let row = client
            .query_one(
                &stmt,
                &[
                    &conversation.as_str(),
                    &sender.as_str(),
                    &to_i64(conv_seq),
                    &group,
                ],
            )
            .await?;
        let members: i64 = column(&row, 0)?;
        let read: i64 = column(&row, 1)?;
        Ok((to_u64(read), to_u64(members)))
    })
    .await
}
