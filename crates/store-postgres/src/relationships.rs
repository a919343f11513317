//! The `Relationships` trait on PostgreSQL: friend requests, friendships
//! and blocks, with the semantics and errors of the embedded store. What
//! SQLite gets from its single writer comes here from row locks in the
//! crate's global order: a relationship write locks both users' rows
//! first, so two nodes handling `a → b` and `b → a` at once serialise and
//! the second one sees the first request (the two become friends, not two
//! pending requests).

use std::collections::HashSet;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use time::OffsetDateTime;
use unimsg_proto::UserId;
use unimsg_store::sql::{
    FRIEND_COLUMNS, FRIEND_REQUEST_COLUMNS, from_ms, join_tags, ms, read_friend,
    read_friend_request, text_columns, user_id,
};
use unimsg_store::{
    Answer, BlockChange, Effects, EventDraft, FriendRequestRow, FriendRow, FriendshipChange,
    Relationships, RequestDirection, RequestOutcome, Result, StoreError, StoredEvent,
};

use crate::inbox::write_effects;
use crate::{DbResult, PgStore, UnknownUsers, broadcast_clock, column, lock_users, read};

/// Where `from` and `to` stand: (friends, `from → to` pending,
/// `to → from` pending).
async fn standing(
    tx: &Transaction<'_>,
    from: &UserId,
    to: &UserId,
) -> DbResult<(bool, bool, bool)> {
    let stmt = tx
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM friends WHERE user_id = $1 AND friend_id = $2), \
             EXISTS(SELECT 1 FROM friend_requests WHERE from_id = $1 AND to_id = $2 AND state = 'pending'), \
             EXISTS(SELECT 1 FROM friend_requests WHERE from_id = $2 AND to_id = $1 AND state = 'pending')",
        )
        .await?;
    let row = tx.query_one(&stmt, &[&from.as_str(), &to.as_str()]).await?;
    Ok((column(&row, 0)?, column(&row, 1)?, column(&row, 2)?))
}

/// Makes two users friends (both rows) and closes pending requests between
/// them; `true` if a friendship row was added.
async fn befriend(
    tx: &Transaction<'_>,
    a: &UserId,
    b: &UserId,
    at: OffsetDateTime,
) -> DbResult<bool> {
    // Tags start empty: the joined form of no tag is ''.
    let insert = tx
        .prepare_cached(
            "INSERT INTO friends (user_id, friend_id, tags, created_at) \
             VALUES ($1, $2, '', $3), ($2, $1, '', $3) ON CONFLICT DO NOTHING",
        )
        .await?;
    let added = tx
        .execute(&insert, &[&a.as_str(), &b.as_str(), &ms(at)])
        .await?;
    let close = tx
        .prepare_cached(
            "UPDATE friend_requests SET state = 'accepted', updated_at = $3 \
             WHERE ((from_id = $1 AND to_id = $2) OR (from_id = $2 AND to_id = $1)) \
             AND state = 'pending'",
        )
        .await?;
    tx.execute(&close, &[&a.as_str(), &b.as_str(), &ms(at)])
        .await?;
    Ok(added > 0)
}

/// Ends a friendship on both sides; `true` if there was one.
async fn unfriend(tx: &Transaction<'_>, a: &UserId, b: &UserId) -> DbResult<bool> {
    let stmt = tx
        .prepare_cached(
            "DELETE FROM friends \
             WHERE (user_id = $1 AND friend_id = $2) OR (user_id = $2 AND friend_id = $1)",
        )
        .await?;
    let removed = tx.execute(&stmt, &[&a.as_str(), &b.as_str()]).await?;
    Ok(removed > 0)
}

/// Takes the broadcast clock, then the rows of the pair and of every user
/// an event goes to, in order; returns the users that exist.
async fn lock_pair(
    tx: &Transaction<'_>,
    a: &UserId,
    b: &UserId,
    events: &[&[EventDraft]],
) -> DbResult<HashSet<String>> {
    broadcast_clock(tx).await?;
    let mut ids = vec![a.as_str(), b.as_str()];
    for list in events {
        ids.extend(list.iter().map(|d| d.user_id.as_str()));
    }
    lock_users(tx, ids).await
}

#[async_trait]
impl Relationships for PgStore {
    async fn request_friend(
        &self,
        request: FriendRequestRow,
        on_request: Effects,
        on_friends: Effects,
    ) -> Result<(RequestOutcome, Vec<StoredEvent>)> {
        let (from, to) = (&request.from, &request.to);
        transaction!(self, |tx| {
            // Both users locked: a concurrent `to → from` request on another
            // node waits here and then sees this one.
            let known = lock_pair(tx, from, to, &[&on_request.events, &on_friends.events]).await?;
            if !known.contains(to.as_str()) {
                return Err(StoreError::NotFound("user").into());
            }
            let (friends, asked, asked_back) = standing(tx, from, to).await?;
            if friends || asked {
                return Ok((RequestOutcome::Unchanged, Vec::new()));
            }
            if asked_back {
                befriend(tx, from, to, request.created_at).await?;
                let events = write_effects(tx, &on_friends, UnknownUsers::Fail).await?;
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
                .await?;
            let (plain, sealed) = text_columns(request.message.as_ref());
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
            .await?;
            let events = write_effects(tx, &on_request, UnknownUsers::Fail).await?;
            Ok((RequestOutcome::Pending, events))
        })
    }

    async fn answer_friend_request(
        &self,
        from: &UserId,
        to: &UserId,
        answer: Answer,
        at: OffsetDateTime,
        effects: Effects,
    ) -> Result<Vec<StoredEvent>> {
        transaction!(self, |tx| {
            lock_pair(tx, from, to, &[&effects.events]).await?;
            let (_, pending, _) = standing(tx, from, to).await?;
            if !pending {
                return Err(StoreError::NotFound("friend request").into());
            }
            if answer == Answer::Accept {
                befriend(tx, from, to, at).await?;
            } else {
                let stmt = tx
                    .prepare_cached(
                        "UPDATE friend_requests SET state = 'declined', updated_at = $3 \
                         WHERE from_id = $1 AND to_id = $2",
                    )
                    .await?;
                tx.execute(&stmt, &[&from.as_str(), &to.as_str(), &ms(at)])
                    .await?;
            }
            write_effects(tx, &effects, UnknownUsers::Fail).await
        })
    }

    async fn friend_requests(
        &self,
        user: &UserId,
        direction: RequestDirection,
    ) -> Result<Vec<FriendRequestRow>> {
        // SQLite leaves ties in created_at to its scan order; here they go
        // by the pair, bytewise like SQLite's BINARY collation.
        let (column, other) = if direction == RequestDirection::Incoming {
            ("to_id", "from_id")
        } else {
            ("from_id", "to_id")
        };
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {FRIEND_REQUEST_COLUMNS} FROM friend_requests \
                     WHERE {column} = $1 AND state = 'pending' \
                     ORDER BY created_at, {other} COLLATE \"C\""
                ))
                .await?;
            client
                .query(&stmt, &[&user.as_str()])
                .await?
                .iter()
                .map(|r| read(r, read_friend_request))
                .collect()
        })
    }

    async fn friends(&self, user: &UserId) -> Result<Vec<FriendRow>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {FRIEND_COLUMNS} FROM friends \
                     WHERE user_id = $1 ORDER BY friend_id COLLATE \"C\""
                ))
                .await?;
            client
                .query(&stmt, &[&user.as_str()])
                .await?
                .iter()
                .map(|r| read(r, read_friend))
                .collect()
        })
    }

    async fn are_friends(&self, a: &UserId, b: &UserId) -> Result<bool> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM friends WHERE user_id = $1 AND friend_id = $2)",
                )
                .await?;
            let row = client.query_one(&stmt, &[&a.as_str(), &b.as_str()]).await?;
            Ok(column(&row, 0)?)
        })
    }

    async fn remove_friend(
        &self,
        user: &UserId,
        friend: &UserId,
        effects: Effects,
    ) -> Result<(bool, Vec<StoredEvent>)> {
        transaction!(self, |tx| {
            lock_pair(tx, user, friend, &[&effects.events]).await?;
            if !unfriend(tx, user, friend).await? {
                return Ok((false, Vec::new()));
            }
            Ok((true, write_effects(tx, &effects, UnknownUsers::Fail).await?))
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
        let joined = join_tags(&tags);
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(
                    "UPDATE friends SET tags = $3, remark = $4 \
                     WHERE user_id = $1 AND friend_id = $2 RETURNING created_at",
                )
                .await?;
            let row = client
                .query_opt(&stmt, &[&user.as_str(), &friend.as_str(), &joined, &remark])
                .await?
                .ok_or(StoreError::NotFound("friend"))?;
            Ok(FriendRow {
                friend: friend.clone(),
                tags,
                remark,
                since: from_ms(column(&row, 0)?)?,
            })
        })
    }

    async fn set_block(
        &self,
        user: &UserId,
        other: &UserId,
        change: BlockChange,
        at: OffsetDateTime,
        effects: Effects,
    ) -> Result<(bool, Vec<StoredEvent>)> {
        transaction!(self, |tx| {
            let known = lock_pair(tx, user, other, &[&effects.events]).await?;
            if !known.contains(other.as_str()) {
                return Err(StoreError::NotFound("user").into());
            }
            let changed = if change == BlockChange::Block {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO blocks (user_id, blocked_id, created_at) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING",
                    )
                    .await?;
                tx.execute(&stmt, &[&user.as_str(), &other.as_str(), &ms(at)])
                    .await?
            } else {
                let stmt = tx
                    .prepare_cached("DELETE FROM blocks WHERE user_id = $1 AND blocked_id = $2")
                    .await?;
                tx.execute(&stmt, &[&user.as_str(), &other.as_str()])
                    .await?
            };
            if changed == 0 {
                return Ok((false, Vec::new()));
            }
            Ok((true, write_effects(tx, &effects, UnknownUsers::Fail).await?))
        })
    }

    async fn blocks(&self, user: &UserId) -> Result<Vec<(UserId, OffsetDateTime)>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(
                    "SELECT blocked_id, created_at FROM blocks WHERE user_id = $1 \
                     ORDER BY blocked_id COLLATE \"C\"",
                )
                .await?;
            client
                .query(&stmt, &[&user.as_str()])
                .await?
                .iter()
                .map(|r| Ok((user_id(column(r, 0)?)?, from_ms(column(r, 1)?)?)))
                .collect()
        })
    }

    async fn is_blocked(&self, blocker: &UserId, other: &UserId) -> Result<bool> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM blocks WHERE user_id = $1 AND blocked_id = $2)",
                )
                .await?;
            let row = client
                .query_one(&stmt, &[&blocker.as_str(), &other.as_str()])
                .await?;
            Ok(column(&row, 0)?)
        })
    }

    async fn set_friendship(
        &self,
        a: &UserId,
        b: &UserId,
        change: FriendshipChange,
        at: OffsetDateTime,
        effects: Effects,
    ) -> Result<(bool, Vec<StoredEvent>)> {
        transaction!(self, |tx| {
            let known = lock_pair(tx, a, b, &[&effects.events]).await?;
            if !known.contains(a.as_str()) || !known.contains(b.as_str()) {
                return Err(StoreError::NotFound("user").into());
            }
            let changed = if change == FriendshipChange::Befriend {
                befriend(tx, a, b, at).await?
            } else {
                unfriend(tx, a, b).await?
            };
            if !changed {
                return Ok((false, Vec::new()));
            }
            Ok((true, write_effects(tx, &effects, UnknownUsers::Fail).await?))
        })
    }
}
