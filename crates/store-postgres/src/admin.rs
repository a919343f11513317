//! The admin-side traits on PostgreSQL: notifications, broadcasts and the
//! audit log, plus the notification and broadcast readers the inbox merge
//! uses.

use std::collections::HashSet;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;
use unimsg_proto::{EventType, MessageId, Seq, UserId};
use unimsg_store::{
    Audit, AuditDraft, AuditQuery, AuditRow, Broadcasts, ChainFn, NewNotification,
    NotificationStatus, Notifications, Result, Sealed, StoreError, StoredNotification, audit_bytes,
};

use crate::{
    InboxRow, PgStore, append_inbox, corrupt, from_ms, ms, pg, to_i64, to_u64, unique, user_id,
};

/// Key of the advisory lock that serialises audit appends across nodes:
/// each entry is chained to the newest one, so two appenders must never
/// read the same "newest". ASCII "unimsgau"; distinct from the migration
/// lock.
const AUDIT_LOCK: i64 = 0x756e_696d_7367_6175;

/// The notification columns, in the order [`read_notification`] expects
/// (the same order as the embedded store's), prefixed `n.` for the inbox
/// join.
pub(crate) const NOTIFICATION_COLUMNS: &str =
    "n.message_id, n.kind, n.sender, n.key_id, n.nonce, n.content, n.created_at";

/// Reads column `idx`; a value of an unexpected type is an internal error,
/// not a panic.
pub(crate) fn column<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx)
        .map_err(|e| StoreError::Internal(format!("PostgreSQL: column {idx}: {e}")))
}

/// Reads the [`NOTIFICATION_COLUMNS`] starting at column `at`.
pub(crate) fn read_notification(row: &Row, at: usize) -> Result<StoredNotification> {
    let id: String = column(row, at)?;
    let key_id: i64 = column(row, at + 3)?;
    Ok(StoredNotification {
        message_id: MessageId::parse(id).map_err(|_| corrupt("message id"))?,
        kind: column(row, at + 1)?,
        sender: column(row, at + 2)?,
        content: Sealed {
            key_id: u32::try_from(key_id).map_err(|_| corrupt("key id"))?,
            nonce: column(row, at + 4)?,
            ciphertext: column(row, at + 5)?,
        },
        created_at: from_ms(column(row, at + 6)?)?,
    })
}

/// Broadcasts with `after < bseq <= head`, oldest first, with their bseq.
pub(crate) async fn broadcasts_between(
    tx: &deadpool_postgres::Transaction<'_>,
    after: i64,
    head: i64,
    limit: u32,
) -> Result<Vec<(i64, StoredNotification)>> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {NOTIFICATION_COLUMNS}, n.bseq FROM broadcasts n \
             WHERE n.bseq > $1 AND n.bseq <= $2 ORDER BY n.bseq LIMIT $3"
        ))
        .await
        .map_err(pg)?;
    tx.query(&stmt, &[&after, &head, &i64::from(limit)])
        .await
        .map_err(pg)?
        .iter()
        .map(|row| Ok((column(row, 7)?, read_notification(row, 0)?)))
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
                .await
                .map_err(pg)?;
            let bseq: i64 = column(&tx.query_one(&bump, &[]).await.map_err(pg)?, 0)?;
            let insert = tx
                .prepare_cached(
                    "INSERT INTO broadcasts (bseq, message_id, kind, sender, key_id, nonce, content, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .await
                .map_err(pg)?;
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
        let client = self.client().await?;
        // Inbox rows with `bpos < k` all committed before broadcast `k`
        // (it took the clock FOR UPDATE); `bpos` never decreases along a
        // user's inbox, so the newest of them is found scanning back.
        let stmt = client
            .prepare_cached(
                "SELECT u.user_id, u.bbase, coalesce((SELECT i.seq FROM inbox i \
                   WHERE i.user_id = u.user_id AND i.bpos < $2 ORDER BY i.seq DESC LIMIT 1), 0) \
                 FROM users u WHERE u.user_id = ANY($1) AND u.bbase < $2",
            )
            .await
            .map_err(pg)?;
        let rows = client.query(&stmt, &[&ids, &k]).await.map_err(pg)?;
        rows.iter()
            .map(|row| {
                let bbase: i64 = column(row, 1)?;
                let before: i64 = column(row, 2)?;
                Ok((user_id(column(row, 0)?)?, Seq(to_u64(before + k - bbase))))
            })
            .collect()
    }
}

#[async_trait]
impl Notifications for PgStore {
    async fn append_notification(
        &self,
        n: NewNotification,
        first: bool,
        recipients: Vec<UserId>,
    ) -> Result<Vec<(UserId, Seq)>> {
        // A known user listed twice fails the whole call, as in the embedded
        // store; unknown users are skipped, even when repeated. Settle it
        // before any inbox row is locked or written.
        let mut seen = HashSet::with_capacity(recipients.len());
        let mut repeated: Vec<&str> = recipients
            .iter()
            .map(UserId::as_str)
            .filter(|u| !seen.insert(*u))
            .collect();
        repeated.sort_unstable();
        repeated.dedup();
        transaction!(self, |tx| {
            if first {
                let insert = tx
                    .prepare_cached(
                        "INSERT INTO notifications (message_id, kind, sender, key_id, nonce, content, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .await
                    .map_err(pg)?;
                tx.execute(
                    &insert,
                    &[
                        &n.message_id.as_str(),
                        &n.kind,
                        &n.sender,
                        &i64::from(n.content.key_id),
                        &n.content.nonce,
                        &n.content.ciphertext,
                        &ms(n.created_at),
                    ],
                )
                .await
                .map_err(|e| unique(e, "message"))?;
            }
            if !repeated.is_empty() {
                let known = tx
                    .query_opt(
                        "SELECT 1 FROM users WHERE user_id = ANY($1) LIMIT 1",
                        &[&repeated],
                    )
                    .await
                    .map_err(pg)?;
                if known.is_some() {
                    return Err(StoreError::Conflict("recipient listed twice"));
                }
            }
            let rows: Vec<InboxRow<'_>> = recipients
                .iter()
                .map(|user| InboxRow {
                    user,
                    kind: EventType::NotificationNew,
                    message_id: Some(n.message_id.as_str()),
                    data: None,
                    at: n.created_at,
                })
                .collect();
            let seqs = append_inbox(tx, &rows, true).await?;
            let mut out = Vec::with_capacity(recipients.len());
            let (mut users, mut raw): (Vec<&str>, Vec<i64>) = (Vec::new(), Vec::new());
            let mut delivered = HashSet::with_capacity(recipients.len());
            for (user, seq) in recipients.iter().zip(seqs) {
                // Unknown users are skipped, not fatal.
                let Some(seq) = seq else { continue };
                // Only a user created since the check above can get here.
                if !delivered.insert(user.as_str()) {
                    return Err(StoreError::Conflict("recipient listed twice"));
                }
                users.push(user.as_str());
                raw.push(to_i64(seq.0));
                out.push((user.clone(), seq));
            }
            if !users.is_empty() {
                let record = tx
                    .prepare_cached(
                        "INSERT INTO notification_recipients (message_id, user_id, seq) \
                         SELECT $1::text, u, s FROM unnest($2::text[], $3::int8[]) AS t(u, s) \
                         ON CONFLICT DO NOTHING",
                    )
                    .await
                    .map_err(pg)?;
                let recorded = tx
                    .execute(&record, &[&n.message_id.as_str(), &users, &raw])
                    .await
                    .map_err(pg)?;
                // A row already there: an earlier batch of this
                // notification listed the user too.
                if recorded != users.len() as u64 {
                    return Err(StoreError::Conflict("recipient listed twice"));
                }
            }
            Ok(out)
        })
    }

    async fn notification(&self, id: &MessageId) -> Result<Option<StoredNotification>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM notifications n WHERE n.message_id = $1"
            ))
            .await
            .map_err(pg)?;
        client
            .query_opt(&stmt, &[&id.as_str()])
            .await
            .map_err(pg)?
            .map(|row| read_notification(&row, 0))
            .transpose()
    }

    async fn notification_status(
        &self,
        id: &MessageId,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<NotificationStatus> {
        let after = after.map(|u| u.to_string()).unwrap_or_default();
        // The counts and the page from one snapshot.
        snapshot!(self, |tx| {
            let counts = tx
                .prepare_cached(
                    "SELECT count(*), count(*) FILTER (WHERE u.acked_seq >= r.seq), \
                     count(*) FILTER (WHERE r.read_at IS NOT NULL) \
                     FROM notification_recipients r JOIN users u ON u.user_id = r.user_id \
                     WHERE r.message_id = $1",
                )
                .await
                .map_err(pg)?;
            let row = tx.query_one(&counts, &[&id.as_str()]).await.map_err(pg)?;
            let (recipients, delivered, read): (i64, i64, i64) =
                (column(&row, 0)?, column(&row, 1)?, column(&row, 2)?);
            let page = tx
                .prepare_cached(
                    "SELECT r.user_id, u.acked_seq >= r.seq, r.read_at IS NOT NULL \
                     FROM notification_recipients r JOIN users u ON u.user_id = r.user_id \
                     WHERE r.message_id = $1 AND r.user_id > $2 ORDER BY r.user_id LIMIT $3",
                )
                .await
                .map_err(pg)?;
            let page = tx
                .query(&page, &[&id.as_str(), &after, &i64::from(limit)])
                .await
                .map_err(pg)?
                .iter()
                .map(|r| Ok((user_id(column(r, 0)?)?, column(r, 1)?, column(r, 2)?)))
                .collect::<Result<Vec<_>>>()?;
            Ok(NotificationStatus {
                recipients: to_u64(recipients),
                delivered: to_u64(delivered),
                read: to_u64(read),
                page,
            })
        })
    }

    async fn mark_notifications_read(
        &self,
        user: &UserId,
        upto: &MessageId,
        at: OffsetDateTime,
    ) -> Result<Seq> {
        transaction!(self, |tx| {
            let find = tx
                .prepare_cached(
                    "SELECT seq FROM notification_recipients WHERE message_id = $1 AND user_id = $2",
                )
                .await
                .map_err(pg)?;
            let seq: i64 = match tx
                .query_opt(&find, &[&upto.as_str(), &user.as_str()])
                .await
                .map_err(pg)?
            {
                Some(row) => column(&row, 0)?,
                None => return Err(StoreError::NotFound("notification")),
            };
            let mark = tx
                .prepare_cached(
                    "UPDATE notification_recipients SET read_at = $3 \
                     WHERE user_id = $1 AND seq <= $2 AND read_at IS NULL",
                )
                .await
                .map_err(pg)?;
            tx.execute(&mark, &[&user.as_str(), &seq, &ms(at)])
                .await
                .map_err(pg)?;
            Ok(Seq(to_u64(seq)))
        })
    }
}

/// A hash column: one of the wrong length is tampering too; it reads as
/// zeros so verification reports the entry instead of the reader failing.
fn hash32(v: &[u8]) -> [u8; 32] {
    <[u8; 32]>::try_from(v).unwrap_or([0; 32])
}

/// Reads `id, at, content, prev_hash, hash`.
fn read_audit(row: &Row) -> Result<AuditRow> {
    let id: i64 = column(row, 0)?;
    let prev: Vec<u8> = column(row, 3)?;
    let hash: Vec<u8> = column(row, 4)?;
    Ok(AuditRow {
        id: to_u64(id),
        at_ms: column(row, 1)?,
        content: column(row, 2)?,
        prev_hash: hash32(&prev),
        hash: hash32(&hash),
    })
}

#[async_trait]
impl Audit for PgStore {
    async fn append_audit(&self, draft: AuditDraft, chain: ChainFn) -> Result<AuditRow> {
        transaction!(self, |tx| {
            // One appender at a time across all nodes; in READ COMMITTED the
            // next statement then sees the entry the previous holder
            // committed.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
                .await
                .map_err(pg)?;
            let newest = tx
                .prepare_cached("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
                .await
                .map_err(pg)?;
            let (prev_id, prev_hash) = match tx.query_opt(&newest, &[]).await.map_err(pg)? {
                Some(row) => {
                    let id: i64 = column(&row, 0)?;
                    let hash: Vec<u8> = column(&row, 1)?;
                    (to_u64(id), hash32(&hash))
                }
                None => (0, [0; 32]),
            };
            let id = prev_id + 1;
            let at_ms = ms(draft.at);
            let hash = chain(&prev_hash, &audit_bytes(id, at_ms, &draft.content));
            let insert = tx
                .prepare_cached(
                    "INSERT INTO audit_log (id, at, content, prev_hash, hash) VALUES ($1, $2, $3, $4, $5)",
                )
                .await
                .map_err(pg)?;
            tx.execute(
                &insert,
                &[
                    &to_i64(id),
                    &at_ms,
                    &draft.content,
                    &&prev_hash[..],
                    &&hash[..],
                ],
            )
            .await
            .map_err(pg)?;
            Ok(AuditRow {
                id,
                at_ms,
                content: draft.content.clone(),
                prev_hash,
                hash,
            })
        })
    }

    async fn audit_entries(&self, q: AuditQuery) -> Result<Vec<AuditRow>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, at, content, prev_hash, hash FROM audit_log WHERE id > $1 \
                 AND ($2::text IS NULL OR content::jsonb ->> 'action' = $2::text) \
                 AND ($3::text IS NULL OR content::jsonb ->> 'actor' = $3::text) \
                 AND ($4::text IS NULL OR content::jsonb ->> 'operation_id' = $4::text) \
                 ORDER BY id LIMIT $5",
            )
            .await
            .map_err(pg)?;
        client
            .query(
                &stmt,
                &[
                    &to_i64(q.after),
                    &q.action,
                    &q.actor,
                    &q.operation_id,
                    &i64::from(q.limit),
                ],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(read_audit)
            .collect()
    }
}
