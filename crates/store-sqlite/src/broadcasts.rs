//! The `Broadcasts` trait on SQLite: announcements stored once, placed in
//! each user's visible stream by commit order; and the broadcast reader the
//! inbox merge uses.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use unimsg_proto::{Seq, UserId};
use unimsg_store::sql::{
    NOTIFICATION_COLUMNS, NOTIFICATION_WIDTH, ms, read_notification, to_i64, to_u64,
};
use unimsg_store::{Broadcasts, NewNotification, Result, StoredNotification};

use crate::{Cached, DbResult, SqliteStore, all, map_unique};

/// Broadcasts with `after < bseq <= head`, oldest first, with their bseq.
pub(crate) fn broadcasts_between(
    conn: &Connection,
    after: i64,
    head: i64,
    limit: u32,
) -> DbResult<Vec<(i64, StoredNotification)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {NOTIFICATION_COLUMNS}, n.bseq \
             FROM broadcasts n WHERE n.bseq > ?1 AND n.bseq <= ?2 ORDER BY n.bseq LIMIT ?3"
    ))?;
    all(&mut stmt, params![after, head, i64::from(limit)], |r| {
        Ok((r.int(NOTIFICATION_WIDTH)?, read_notification(r, 0)?))
    })
}

#[async_trait]
impl Broadcasts for SqliteStore {
    async fn append_broadcast(&self, b: NewNotification) -> Result<u64> {
        self.write(move |conn| {
            let bseq: i64 = conn
                .query_row_cached(
                    "INSERT INTO broadcasts (message_id, kind, sender, key_id, nonce, content, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING bseq",
                    params![
                        b.message_id.as_str(),
                        b.kind,
                        b.sender,
                        i64::from(b.content.key_id),
                        b.content.nonce,
                        b.content.ciphertext,
                        ms(b.created_at)
                    ],
                    |r| r.get(0),
                )
                .map_err(|e| map_unique(e, "message"))?;
            Ok(to_u64(bseq))
        })
        .await
    }

    async fn broadcast_positions(
        &self,
        bseq: u64,
        users: Vec<UserId>,
    ) -> Result<Vec<(UserId, Seq)>> {
        let k = to_i64(bseq);
        self.read(move |conn| {
            // One read transaction: a lock taken once, not twice per user.
            let tx = conn.unchecked_transaction()?;
            // Per user one statement: the user's `bbase` and the newest of
            // the inbox rows committed before broadcast `k`, which are
            // those with `bpos < k`; `bpos` never decreases along a user's
            // inbox, so that row is found scanning back from the end, past
            // the few rows committed since.
            let mut position = tx.prepare_cached(
                "SELECT bbase, coalesce((SELECT seq FROM inbox WHERE user_id = ?1 AND bpos < ?2 \
                 ORDER BY seq DESC LIMIT 1), 0) FROM users WHERE user_id = ?1",
            )?;
            let mut out = Vec::with_capacity(users.len());
            for user in users {
                let Some((bbase, rows)) = position
                    .query_row(params![user.as_str(), k], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                    })
                    .optional()?
                else {
                    continue;
                };
                if k <= bbase {
                    continue;
                }
                out.push((user, Seq(to_u64(rows + k - bbase))));
            }
            drop(position);
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}
