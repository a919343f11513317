//! The `Relationships` trait on SQLite: friend requests, friendships, blocks.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use unimsg_proto::UserId;
use unimsg_store::sql::{
    FRIEND_COLUMNS, FRIEND_REQUEST_COLUMNS, from_ms, join_tags, ms, read_friend,
    read_friend_request, text_columns, user_id,
};
use unimsg_store::{
    Answer, BlockChange, Effects, FriendRequestRow, FriendRow, FriendshipChange, Relationships,
    RequestDirection, RequestOutcome, Result, StoreError, StoredEvent,
};

use crate::inbox::write_effects;
use crate::{Cached, DbResult, SqliteStore, all};

fn exists(conn: &Connection, sql: &str, a: &UserId, b: &UserId) -> DbResult<bool> {
    Ok(conn.query_row_cached(sql, params![a.as_str(), b.as_str()], |r| r.get(0))?)
}

fn are_friends(conn: &Connection, a: &UserId, b: &UserId) -> DbResult<bool> {
    exists(
        conn,
        "SELECT EXISTS(SELECT 1 FROM friends WHERE user_id = ?1 AND friend_id = ?2)",
        a,
        b,
    )
}

fn pending(conn: &Connection, from: &UserId, to: &UserId) -> DbResult<bool> {
    exists(
        conn,
        "SELECT EXISTS(SELECT 1 FROM friend_requests WHERE from_id = ?1 AND to_id = ?2 AND state = 'pending')",
        from,
        to,
    )
}

/// Makes two users friends (both rows) and closes requests between them.
fn befriend(conn: &Connection, a: &UserId, b: &UserId, at: OffsetDateTime) -> DbResult<bool> {
    let mut added = 0;
    for (x, y) in [(a, b), (b, a)] {
        added += conn
            .execute_cached(
                "INSERT OR IGNORE INTO friends (user_id, friend_id, tags, created_at) VALUES (?1, ?2, '', ?3)",
                params![x.as_str(), y.as_str(), ms(at)],
            )?;
        conn.execute_cached(
            "UPDATE friend_requests SET state = 'accepted', updated_at = ?3 \
             WHERE from_id = ?1 AND to_id = ?2 AND state = 'pending'",
            params![x.as_str(), y.as_str(), ms(at)],
        )?;
    }
    Ok(added > 0)
}

fn unfriend(conn: &Connection, a: &UserId, b: &UserId) -> DbResult<bool> {
    let removed = conn
        .execute_cached(
            "DELETE FROM friends WHERE (user_id = ?1 AND friend_id = ?2) OR (user_id = ?2 AND friend_id = ?1)",
            params![a.as_str(), b.as_str()],
        )?;
    Ok(removed > 0)
}

fn user_exists(conn: &Connection, u: &UserId) -> DbResult<bool> {
    Ok(conn.query_row_cached(
        "SELECT EXISTS(SELECT 1 FROM users WHERE user_id = ?1)",
        [u.as_str()],
        |r| r.get(0),
    )?)
}

#[async_trait]
impl Relationships for SqliteStore {
    async fn request_friend(
        &self,
        request: FriendRequestRow,
        on_request: Effects,
        on_friends: Effects,
    ) -> Result<(RequestOutcome, Vec<StoredEvent>)> {
        self.write(move |conn| {
            let (from, to) = (&request.from, &request.to);
            if !user_exists(conn, to)? {
                return Err(StoreError::NotFound("user").into());
            }
            if are_friends(conn, from, to)? || pending(conn, from, to)? {
                return Ok((RequestOutcome::Unchanged, Vec::new()));
            }
            if pending(conn, to, from)? {
                befriend(conn, from, to, request.created_at)?;
                return Ok((RequestOutcome::Friends, write_effects(conn, on_friends)?));
            }
            let (plain, sealed) = text_columns(request.message.as_ref());
            conn.execute_cached(
                "INSERT INTO friend_requests (from_id, to_id, message, message_sealed, state, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5) \
                 ON CONFLICT (from_id, to_id) DO UPDATE SET message = excluded.message, \
                 message_sealed = excluded.message_sealed, state = 'pending', \
                 created_at = excluded.created_at, updated_at = excluded.updated_at",
                params![from.as_str(), to.as_str(), plain, sealed, ms(request.created_at)],
            )?;
            Ok((RequestOutcome::Pending, write_effects(conn, on_request)?))
        })
        .await
    }

    async fn answer_friend_request(
        &self,
        from: &UserId,
        to: &UserId,
        answer: Answer,
        at: OffsetDateTime,
        effects: Effects,
    ) -> Result<Vec<StoredEvent>> {
        let (from, to) = (from.clone(), to.clone());
        self.write(move |conn| {
            if !pending(conn, &from, &to)? {
                return Err(StoreError::NotFound("friend request").into());
            }
            if answer == Answer::Accept {
                befriend(conn, &from, &to, at)?;
            } else {
                conn.execute_cached(
                    "UPDATE friend_requests SET state = 'declined', updated_at = ?3 WHERE from_id = ?1 AND to_id = ?2",
                    params![from.as_str(), to.as_str(), ms(at)],
                )?;
            }
            write_effects(conn, effects)
        })
        .await
    }

    async fn friend_requests(
        &self,
        user: &UserId,
        direction: RequestDirection,
    ) -> Result<Vec<FriendRequestRow>> {
        let user = user.clone();
        self.read(move |conn| {
            let column = if direction == RequestDirection::Incoming {
                "to_id"
            } else {
                "from_id"
            };
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {FRIEND_REQUEST_COLUMNS} FROM friend_requests \
                     WHERE {column} = ?1 AND state = 'pending' ORDER BY created_at"
            ))?;
            all(&mut stmt, [user.as_str()], read_friend_request)
        })
        .await
    }

    async fn friends(&self, user: &UserId) -> Result<Vec<FriendRow>> {
        let user = user.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {FRIEND_COLUMNS} FROM friends WHERE user_id = ?1 ORDER BY friend_id"
            ))?;
            all(&mut stmt, [user.as_str()], read_friend)
        })
        .await
    }

    async fn are_friends(&self, a: &UserId, b: &UserId) -> Result<bool> {
        let (a, b) = (a.clone(), b.clone());
        self.read(move |conn| are_friends(conn, &a, &b)).await
    }

    async fn remove_friend(
        &self,
        user: &UserId,
        friend: &UserId,
        effects: Effects,
    ) -> Result<(bool, Vec<StoredEvent>)> {
        let (user, friend) = (user.clone(), friend.clone());
        self.write(move |conn| {
            if !unfriend(conn, &user, &friend)? {
                return Ok((false, Vec::new()));
            }
            Ok((true, write_effects(conn, effects)?))
        })
        .await
    }

    async fn update_friend(
        &self,
        user: &UserId,
        friend: &UserId,
        tags: Vec<String>,
        remark: String,
    ) -> Result<FriendRow> {
        let (user, friend) = (user.clone(), friend.clone());
        self.write(move |conn| {
            let joined = join_tags(&tags);
            let since: Option<i64> = conn
                .query_row_cached(
                    "UPDATE friends SET tags = ?3, remark = ?4 WHERE user_id = ?1 AND friend_id = ?2 RETURNING created_at",
                    params![user.as_str(), friend.as_str(), joined, remark],
                    |r| r.get(0),
                )
                .optional()?;
            let since = since.ok_or(StoreError::NotFound("friend"))?;
            Ok(FriendRow { friend, tags, remark, since: from_ms(since)? })
        })
        .await
    }

    async fn set_block(
        &self,
        user: &UserId,
        other: &UserId,
        change: BlockChange,
        at: OffsetDateTime,
        effects: Effects,
    ) -> Result<(bool, Vec<StoredEvent>)> {
        let (user, other) = (user.clone(), other.clone());
        self.write(move |conn| {
            if !user_exists(conn, &other)? {
                return Err(StoreError::NotFound("user").into());
            }
            let changed = if change == BlockChange::Block {
                conn.execute_cached(
                    "INSERT OR IGNORE INTO blocks (user_id, blocked_id, created_at) VALUES (?1, ?2, ?3)",
                    params![user.as_str(), other.as_str(), ms(at)],
                )
            } else {
                conn.execute_cached(
                    "DELETE FROM blocks WHERE user_id = ?1 AND blocked_id = ?2",
                    params![user.as_str(), other.as_str()],
                )
            }?;
            if changed == 0 {
                return Ok((false, Vec::new()));
            }
            Ok((true, write_effects(conn, effects)?))
        })
        .await
    }

    async fn blocks(&self, user: &UserId) -> Result<Vec<(UserId, OffsetDateTime)>> {
        let user = user.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT blocked_id, created_at FROM blocks WHERE user_id = ?1 ORDER BY blocked_id",
            )?;
            let rows = stmt.query_map([user.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            rows.map(|r| {
                let (u, at) = r?;
                Ok((user_id(u)?, from_ms(at)?))
            })
            .collect()
        })
        .await
    }

    async fn is_blocked(&self, blocker: &UserId, other: &UserId) -> Result<bool> {
        let (blocker, other) = (blocker.clone(), other.clone());
        self.read(move |conn| {
            exists(
                conn,
                "SELECT EXISTS(SELECT 1 FROM blocks WHERE user_id = ?1 AND blocked_id = ?2)",
                &blocker,
                &other,
            )
        })
        .await
    }

    async fn set_friendship(
        &self,
        a: &UserId,
        b: &UserId,
        change: FriendshipChange,
        at: OffsetDateTime,
        effects: Effects,
    ) -> Result<(bool, Vec<StoredEvent>)> {
        let (a, b) = (a.clone(), b.clone());
        self.write(move |conn| {
            if !user_exists(conn, &a)? || !user_exists(conn, &b)? {
                return Err(StoreError::NotFound("user").into());
            }
            let changed = if change == FriendshipChange::Befriend {
                befriend(conn, &a, &b, at)?
            } else {
                unfriend(conn, &a, &b)?
            };
            if !changed {
                return Ok((false, Vec::new()));
            }
            Ok((true, write_effects(conn, effects)?))
        })
        .await
    }
}
