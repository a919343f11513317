//! The `Broadcasts` trait on PostgreSQL: announcements stored once and
//! placed by the broadcast clock; and the broadcast reader the inbox merge
//! uses.

use async_trait::async_trait;
use unimsg_proto::{Seq, UserId};
use unimsg_store::sql::{
    NOTIFICATION_COLUMNS, NOTIFICATION_WIDTH, ms, read_notification, to_i64, to_u64, user_id,
};
use unimsg_store::{Broadcasts, NewNotification, Result, StoredNotification};

use crate::{DbResult, PgStore, column, read, unique};

/// Broadcasts with `after < bseq <= head`, oldest first, with their bseq.
pub(crate) async fn broadcasts_between(
    tx: &deadpool_postgres::Transaction<'_>,
    after: i64,
    head: i64,
    limit: u32,
) -> DbResult<Vec<(i64, StoredNotification)>> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {NOTIFICATION_COLUMNS}, n.bseq FROM broadcasts n \
             WHERE n.bseq > $1 AND n.bseq <= $2 ORDER BY n.bseq LIMIT $3"
        ))
        .await?;
    tx.query(&stmt, &[&after, &head, &i64::from(limit)])
        .await?
        .iter()
        .map(|row| {
            Ok((
                column(row, NOTIFICATION_WIDTH)?,
                read(row, |r| read_notification(r, 0))?,
            ))
        })
        .collect()
}

#[async_trait]
impl Broadcasts for PgStore {
    async fn append_broadcast(&self, b: NewNotification) -> Result<u64> {
        transaction!(self, |tx| {
            // Bumping the clock takes its row FOR UPDATE, which waits for
            // every inbox writer holding it FOR SHARE and holds off new
            // ones until this commits: the broadcast lands strictly between
            // the inbox rows before it and those after it.
            let bump = tx
                .prepare_cached(
                    "UPDATE broadcast_clock SET head = head + 1 WHERE id = 1 RETURNING head",
                )
                .await?;
            let bseq: i64 = column(&tx.query_one(&bump, &[]).await?, 0)?;
            let insert = tx
                .prepare_cached(
                    "INSERT INTO broadcasts (bseq, message_id, kind, sender, key_id, nonce, content, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .await?;
            tx.execute(
                &insert,
                &[
                    &bseq,
                    &b.message_id.as_str(),
                    &b.kind,
                    &b.sender,
                    &i64::from(b.content.key_id),
                    &b.content.nonce,
                    &b.content.ciphertext,
                    &ms(b.created_at),
                ],
            )
            .await
            .map_err(|e| unique(e, "message"))?;
            Ok(to_u64(bseq))
        })
    }

    async fn broadcast_positions(
        &self,
        bseq: u64,
        users: Vec<UserId>,
    ) -> Result<Vec<(UserId, Seq)>> {
        let k = to_i64(bseq);
        let ids: Vec<&str> = users.iter().map(UserId::as_str).collect();
        connected!(self, |client| {
            // Inbox rows with `bpos < k` all committed before broadcast `k`
            // (it took the clock FOR UPDATE); `bpos` never decreases along a
            // user's inbox, so the newest of them is found scanning back.
            let stmt = client
                .prepare_cached(
                    "SELECT u.user_id, u.bbase, coalesce((SELECT i.seq FROM inbox i \
                       WHERE i.user_id = u.user_id AND i.bpos < $2 ORDER BY i.seq DESC LIMIT 1), 0) \
                     FROM users u WHERE u.user_id = ANY($1) AND u.bbase < $2",
                )
                .await?;
            let rows = client.query(&stmt, &[&ids, &k]).await?;
            rows.iter()
                .map(|row| {
                    let bbase: i64 = column(row, 1)?;
                    let before: i64 = column(row, 2)?;
                    Ok((user_id(column(row, 0)?)?, Seq(to_u64(before + k - bbase))))
                })
                .collect()
        })
    }
}
