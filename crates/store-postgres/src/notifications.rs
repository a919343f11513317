//! The `Notifications` trait on PostgreSQL: notifications stored once, one
//! inbox event per recipient, with their delivery and read status.

use std::collections::HashSet;

use async_trait::async_trait;
use time::OffsetDateTime;
use unimsg_proto::{EventType, MessageId, Seq, UserId};
use unimsg_store::sql::{NOTIFICATION_COLUMNS, ms, read_notification, to_i64, to_u64, user_id};
use unimsg_store::{
    AudiencePart, HookDraft, NewNotification, NotificationStatus, Notifications, RecipientState,
    Result, StoreError, StoredNotification,
};

use crate::{InboxRow, PgStore, UnknownUsers, append_inbox, column, read, unique};

#[async_trait]
impl Notifications for PgStore {
    async fn append_notification(
        &self,
        n: NewNotification,
        part: AudiencePart,
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
            if part == AudiencePart::First {
                let insert = tx
                    .prepare_cached(
                        "INSERT INTO notifications (message_id, kind, sender, key_id, nonce, content, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .await?;
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
                    .await?;
                if known.is_some() {
                    return Err(StoreError::Conflict("recipient listed twice").into());
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
            let seqs = append_inbox(tx, &rows, UnknownUsers::Skip).await?;
            let mut out = Vec::with_capacity(recipients.len());
            let (mut users, mut raw): (Vec<&str>, Vec<i64>) = (Vec::new(), Vec::new());
            let mut delivered = HashSet::with_capacity(recipients.len());
            for (user, seq) in recipients.iter().zip(seqs) {
                // Unknown users are skipped, not fatal.
                let Some(seq) = seq else { continue };
                // Only a user created since the check above can get here.
                if !delivered.insert(user.as_str()) {
                    return Err(StoreError::Conflict("recipient listed twice").into());
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
                    .await?;
                let recorded = tx
                    .execute(&record, &[&n.message_id.as_str(), &users, &raw])
                    .await?;
                // A row already there: an earlier batch of this
                // notification listed the user too.
                if recorded != users.len() as u64 {
                    return Err(StoreError::Conflict("recipient listed twice").into());
                }
            }
            Ok(out)
        })
    }

    async fn notification(&self, id: &MessageId) -> Result<Option<StoredNotification>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {NOTIFICATION_COLUMNS} FROM notifications n WHERE n.message_id = $1"
                ))
                .await?;
            client
                .query_opt(&stmt, &[&id.as_str()])
                .await?
                .map(|row| read(&row, |r| read_notification(r, 0)))
                .transpose()
        })
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
                    "SELECT count(*), count(*) FILTER (WHERE r.sent_live), \
                     count(*) FILTER (WHERE u.acked_seq >= r.seq OR r.read_at IS NOT NULL), \
                     count(*) FILTER (WHERE r.read_at IS NOT NULL) \
                     FROM notification_recipients r JOIN users u ON u.user_id = r.user_id \
                     WHERE r.message_id = $1",
                )
                .await?;
            let row = tx.query_one(&counts, &[&id.as_str()]).await?;
            let (recipients, sent_live, delivered, read): (i64, i64, i64, i64) = (
                column(&row, 0)?,
                column(&row, 1)?,
                column(&row, 2)?,
                column(&row, 3)?,
            );
            let page = tx
                .prepare_cached(
                    "SELECT r.user_id, r.sent_live, (u.acked_seq >= r.seq OR r.read_at IS NOT NULL), \
                     r.read_at IS NOT NULL \
                     FROM notification_recipients r JOIN users u ON u.user_id = r.user_id \
                     WHERE r.message_id = $1 AND r.user_id > $2 ORDER BY r.user_id LIMIT $3",
                )
                .await?;
            let page = tx
                .query(&page, &[&id.as_str(), &after, &i64::from(limit)])
                .await?
                .iter()
                .map(|r| {
                    Ok(RecipientState {
                        user: user_id(column(r, 0)?)?,
                        sent_live: column(r, 1)?,
                        delivered: column(r, 2)?,
                        read: column(r, 3)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(NotificationStatus {
                recipients: to_u64(recipients),
                sent_live: to_u64(sent_live),
                delivered: to_u64(delivered),
                read: to_u64(read),
                page,
            })
        })
    }

    async fn mark_notification_sent_live(&self, id: &MessageId, users: Vec<UserId>) -> Result<()> {
        let users: Vec<&str> = users.iter().map(UserId::as_str).collect();
        transaction!(self, |tx| {
            let mark = tx
                .prepare_cached(
                    "UPDATE notification_recipients SET sent_live = true \
                     WHERE message_id = $1 AND user_id = ANY($2)",
                )
                .await?;
            tx.execute(&mark, &[&id.as_str(), &users]).await?;
            Ok(())
        })
    }

    async fn mark_notifications_read(
        &self,
        user: &UserId,
        upto: &MessageId,
        at: OffsetDateTime,
        hooks: Vec<HookDraft>,
    ) -> Result<Seq> {
        transaction!(self, |tx| {
            let find = tx
                .prepare_cached(
                    "SELECT seq FROM notification_recipients WHERE message_id = $1 AND user_id = $2",
                )
                .await?;
            let seq: i64 = match tx
                .query_opt(&find, &[&upto.as_str(), &user.as_str()])
                .await?
            {
                Some(row) => column(&row, 0)?,
                None => return Err(StoreError::NotFound("notification").into()),
            };
            let mark = tx
                .prepare_cached(
                    "UPDATE notification_recipients SET read_at = $3 \
                     WHERE user_id = $1 AND seq <= $2 AND read_at IS NULL",
                )
                .await?;
            let marked = tx.execute(&mark, &[&user.as_str(), &seq, &ms(at)]).await?;
            if marked > 0 {
                crate::webhooks::enqueue_all(tx, &hooks).await?;
            }
            Ok(Seq(to_u64(seq)))
        })
    }
}
