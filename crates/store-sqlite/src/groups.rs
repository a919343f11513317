//! The `Groups` trait on SQLite: groups, members with roles and mutes, and
//! group messages fanned out to every member's inbox in one transaction.

use async_trait::async_trait;
use rusqlite::{Connection, params};
use time::OffsetDateTime;
use unimsg_proto::api::Recipient;
use unimsg_proto::groups::{GroupRole, JoinPolicy};
use unimsg_proto::{ConversationId, GroupId, UserId};
use unimsg_store::sql::{
    GROUP_COLUMNS, GROUP_WIDTH, MEMBER_COLUMNS, changed_group, check_version, corrupt, ms,
    one_member, read_group, read_member, to_i64, to_u64, user_id,
};
use unimsg_store::{
    AppendOutcome, Effects, EventBody, EventDraft, GroupEdit, GroupRow, Groups, MemberRow,
    NewGroup, NewMessage, Result, StoreError, StoredEvent,
};

use crate::inbox::{append_message_events, duplicate_of, insert_event, insert_message};
use crate::{Cached, DbResult, Error, SqliteStore, all, db, first};

fn group_by_id(conn: &Connection, id: &GroupId) -> DbResult<Option<GroupRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {GROUP_COLUMNS} FROM chat_groups g WHERE g.group_id = ?1 AND g.dissolved_at IS NULL"
    ))?;
    first(&mut stmt, [id.as_str()], |r| read_group(r, 0))
}

fn member(conn: &Connection, id: &GroupId, user: &UserId) -> DbResult<Option<MemberRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MEMBER_COLUMNS} FROM group_members m LEFT JOIN users u ON u.user_id = m.user_id \
             WHERE m.group_id = ?1 AND m.user_id = ?2"
    ))?;
    first(&mut stmt, [id.as_str(), user.as_str()], |r| {
        read_member(r, 0)
    })
}

/// Adds a member from the conversation's current position on; `false` if
/// the user was a member already.
fn add_member(
    conn: &Connection,
    id: &GroupId,
    conversation: &ConversationId,
    user: &UserId,
    role: GroupRole,
    at: OffsetDateTime,
) -> DbResult<bool> {
    let known: bool = conn
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM users WHERE user_id = ?1)")?
        .query_row([user.as_str()], |r| r.get(0))?;
    if !known {
        return Err(StoreError::NotFound("user").into());
    }
    let since: i64 = conn
        .prepare_cached(
            "SELECT coalesce((SELECT last_conv_seq FROM conversations WHERE conversation_id = ?1), 0)",
        )?
        .query_row([conversation.as_str()], |r| r.get(0))?;
    let added = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO group_members (group_id, user_id, role, since, joined_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            id.as_str(),
            user.as_str(),
            role.as_str(),
            since,
            ms(at)
        ])?;
    if added == 0 {
        return Ok(false);
    }
    // The read position starts where the member came in: older messages
    // are not theirs and do not count as unread.
    conn.prepare_cached(
        "INSERT INTO conversation_members (conversation_id, user_id, read_upto) VALUES (?1, ?2, ?3) \
         ON CONFLICT (conversation_id, user_id) DO UPDATE SET read_upto = excluded.read_upto",
    )?
    .execute(params![conversation.as_str(), user.as_str(), since])?;
    Ok(true)
}

fn remove_member(
    conn: &Connection,
    id: &GroupId,
    conversation: &ConversationId,
    user: &UserId,
) -> DbResult<()> {
    conn.execute_cached(
        "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
        params![id.as_str(), user.as_str()],
    )?;
    conn.execute_cached(
        "DELETE FROM conversation_members WHERE conversation_id = ?1 AND user_id = ?2",
        params![conversation.as_str(), user.as_str()],
    )?;
    Ok(())
}

/// Appends event drafts, skipping users deleted since the caller read the
/// member list (their inbox is gone).
fn append_to_known(conn: &Connection, drafts: Vec<EventDraft>) -> DbResult<Vec<StoredEvent>> {
    let mut out = Vec::with_capacity(drafts.len());
    for d in drafts {
        let seq = match insert_event(conn, &d.user_id, d.kind, None, Some(&d.data), d.at) {
            Ok(seq) => seq,
            Err(Error::Store(StoreError::NotFound(_))) => continue,
            Err(e) => return Err(e),
        };
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

fn apply(
    conn: &Connection,
    id: &GroupId,
    conversation: &ConversationId,
    edit: GroupEdit,
    at: OffsetDateTime,
) -> DbResult<()> {
    match edit {
        GroupEdit::Profile {
            name,
            notice,
            join_policy,
        } => {
            conn.execute_cached(
                "UPDATE chat_groups SET name = coalesce(?2, name), notice = coalesce(?3, notice), \
                 join_policy = coalesce(?4, join_policy) WHERE group_id = ?1",
                params![
                    id.as_str(),
                    name,
                    notice,
                    join_policy.map(JoinPolicy::as_str)
                ],
            )?;
        }
        GroupEdit::AllMuted(muted) => {
            conn.execute_cached(
                "UPDATE chat_groups SET all_muted = ?2 WHERE group_id = ?1",
                params![id.as_str(), muted],
            )?;
        }
        GroupEdit::AddMembers(members) => {
            for (user, role) in members {
                add_member(conn, id, conversation, &user, role, at)?;
            }
        }
        GroupEdit::RemoveMembers(users) => {
            for user in users {
                remove_member(conn, id, conversation, &user)?;
            }
        }
        GroupEdit::SetRole(user, role) => one_member(
            conn.execute_cached(
                "UPDATE group_members SET role = ?3 WHERE group_id = ?1 AND user_id = ?2",
                params![id.as_str(), user.as_str(), role.as_str()],
            )? > 0,
        )?,
        GroupEdit::Mute(user, until) => one_member(
            conn.execute_cached(
                "UPDATE group_members SET muted_until = ?3 WHERE group_id = ?1 AND user_id = ?2",
                params![id.as_str(), user.as_str(), until.map(ms)],
            )? > 0,
        )?,
        GroupEdit::Dissolve => {
            conn.execute_cached(
                "UPDATE chat_groups SET dissolved_at = ?2 WHERE group_id = ?1",
                params![id.as_str(), ms(at)],
            )?;
            conn.execute_cached(
                "DELETE FROM group_members WHERE group_id = ?1",
                [id.as_str()],
            )?;
            conn.execute_cached(
                "DELETE FROM conversation_members WHERE conversation_id = ?1",
                [conversation.as_str()],
            )?;
        }
    }
    Ok(())
}

#[async_trait]
impl Groups for SqliteStore {
    async fn create_group(
        &self,
        group: NewGroup,
        members: Vec<(UserId, GroupRole)>,
        effects: Effects,
    ) -> Result<(GroupRow, Vec<StoredEvent>)> {
        self.write(move |conn| {
            let taken: bool = conn
                .query_row_cached(
                    "SELECT EXISTS(SELECT 1 FROM chat_groups WHERE group_id = ?1)",
                    [group.group_id.as_str()],
                    |r| r.get(0),
                )?;
            if taken {
                return Err(StoreError::Conflict("group").into());
            }
            let at = ms(group.created_at);
            conn.execute_cached(
                "INSERT INTO chat_groups (group_id, name, notice, join_policy, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![
                    group.group_id.as_str(),
                    group.name,
                    group.notice,
                    group.join_policy.as_str(),
                    at
                ],
            )?;
            let conversation = ConversationId::group(&group.group_id);
            // The conversation exists from the start, so that the group is
            // listed among its members' conversations before any message.
            conn.execute_cached(
                "INSERT OR IGNORE INTO conversations (conversation_id, last_conv_seq, updated_at) \
                 VALUES (?1, 0, ?2)",
                params![conversation.as_str(), at],
            )?;
            for (user, role) in members {
                add_member(conn, &group.group_id, &conversation, &user, role, group.created_at)?;
            }
            crate::webhooks::enqueue_all(conn, &effects.hooks)?;
            let events = append_to_known(conn, effects.events)?;
            let row = group_by_id(conn, &group.group_id)?.ok_or_else(|| corrupt("new group"))?;
            Ok((row, events))
        })
        .await
    }

    async fn group(&self, id: &GroupId) -> Result<Option<GroupRow>> {
        let id = id.clone();
        self.read(move |conn| group_by_id(conn, &id)).await
    }

    async fn group_members(&self, id: &GroupId) -> Result<Vec<MemberRow>> {
        let id = id.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {MEMBER_COLUMNS} FROM group_members m LEFT JOIN users u ON u.user_id = m.user_id \
                     WHERE m.group_id = ?1 ORDER BY m.joined_at, m.user_id"
                ))?;
            all(&mut stmt, [id.as_str()], |r| read_member(r, 0))
        })
        .await
    }

    async fn group_member(&self, id: &GroupId, user: &UserId) -> Result<Option<MemberRow>> {
        let (id, user) = (id.clone(), user.clone());
        self.read(move |conn| member(conn, &id, &user)).await
    }

    async fn user_groups(&self, user: &UserId) -> Result<Vec<(GroupRow, MemberRow)>> {
        let user = user.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {GROUP_COLUMNS}, {MEMBER_COLUMNS} FROM group_members m \
                     JOIN chat_groups g ON g.group_id = m.group_id \
                     LEFT JOIN users u ON u.user_id = m.user_id \
                     WHERE m.user_id = ?1 AND g.dissolved_at IS NULL \
                     ORDER BY g.created_at DESC, g.group_id"
            ))?;
            all(&mut stmt, [user.as_str()], |r| {
                Ok((read_group(r, 0)?, read_member(r, GROUP_WIDTH)?))
            })
        })
        .await
    }

    async fn change_group(
        &self,
        id: &GroupId,
        version: u64,
        edits: Vec<GroupEdit>,
        at: OffsetDateTime,
        effects: Effects,
    ) -> Result<(GroupRow, Vec<StoredEvent>)> {
        let id = id.clone();
        self.write(move |conn| {
            let before = group_by_id(conn, &id)?.ok_or(StoreError::NotFound("group"))?;
            check_version(before.version, version)?;
            let conversation = ConversationId::group(&id);
            for edit in edits {
                apply(conn, &id, &conversation, edit, at)?;
            }
            conn.execute_cached(
                "UPDATE chat_groups SET version = version + 1, updated_at = ?2 WHERE group_id = ?1",
                params![id.as_str(), ms(at)],
            )?;
            crate::webhooks::enqueue_all(conn, &effects.hooks)?;
            let events = append_to_known(conn, effects.events)?;
            let after = group_by_id(conn, &id)?;
            Ok((changed_group(before, after), events))
        })
        .await
    }

    async fn append_group_message(&self, message: NewMessage) -> Result<AppendOutcome> {
        self.write_repeatable(move |conn| {
            if let Some(original) = duplicate_of(conn, &message)? {
                return Ok(AppendOutcome::Duplicate(original));
            }
            let Recipient::Group(group) = message.recipient.clone() else {
                return Err(StoreError::Internal("a direct message is not a group message".into()).into());
            };
            // Membership is decided here, in the transaction that fans the
            // message out: a member removed before this commit gets nothing.
            let member: bool = conn
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM group_members m JOIN chat_groups g ON g.group_id = m.group_id \
                     WHERE m.group_id = ?1 AND m.user_id = ?2 AND g.dissolved_at IS NULL)",
                )?
                .query_row([group.as_str(), message.sender.as_str()], |r| r.get(0))?;
            if !member {
                return Err(StoreError::NotFound("group member").into());
            }
            if let Some(hook) = &message.hook {
                crate::webhooks::enqueue(conn, hook)?;
            }
            let stored = insert_message(conn, &message)?;
            let members = conn
                .prepare_cached("SELECT user_id FROM group_members WHERE group_id = ?1")?
                .query_map([group.as_str()], |r| r.get::<_, String>(0))?
                .map(|r| r.map_err(db).and_then(user_id))
                .collect::<Result<Vec<_>>>()?;
            let events = append_message_events(conn, &stored, &members)?;
            Ok(AppendOutcome::Created { message: stored, events })
        })
        .await
    }

    async fn read_count(
        &self,
        conversation: &ConversationId,
        conv_seq: u64,
        sender: &UserId,
    ) -> Result<(u64, u64)> {
        let (conversation, sender) = (conversation.clone(), sender.clone());
        self.read(move |conn| {
            let group = conversation.group_id().map(|g| g.to_string());
            // One pass over the conversation's read positions; members who
            // joined after the message (`since`) did not receive it.
            let (members, read): (i64, i64) = conn
                .prepare_cached(
                    "SELECT count(*), coalesce(sum(cm.read_upto >= ?3), 0) FROM conversation_members cm \
                     LEFT JOIN group_members gm ON gm.group_id = ?4 AND gm.user_id = cm.user_id \
                     WHERE cm.conversation_id = ?1 AND cm.user_id != ?2 AND coalesce(gm.since, 0) < ?3",
                )?
                .query_row(
                    params![conversation.as_str(), sender.as_str(), to_i64(conv_seq), group],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
            Ok((to_u64(read), to_u64(members)))
        })
        .await
    }
}
