//! The `Notifications` trait on SQLite: notifications stored once, one
//! inbox event per recipient, with their delivery and read status.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use unimsg_proto::{EventType, MessageId, Seq, UserId};
use unimsg_store::sql::{NOTIFICATION_COLUMNS, ms, read_notification, to_i64, to_u64, user_id};
use unimsg_store::{
    AudiencePart, HookDraft, NewNotification, NotificationStatus, Notifications, RecipientState,
    Result, StoreError, StoredNotification,
};

use crate::inbox::insert_event;
use crate::{Cached, DbResult, Error, SqliteStore, db, first, map_unique};

fn notification_by_id(conn: &Connection, id: &str) -> DbResult<Option<StoredNotification>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications n WHERE n.message_id = ?1"
    ))?;
    first(&mut stmt, [id], |r| read_notification(r, 0))
}

#[async_trait]
impl Notifications for SqliteStore {
    async fn append_notification(
        &self,
        n: NewNotification,
        part: AudiencePart,
        recipients: Vec<UserId>,
    ) -> Result<Vec<(UserId, Seq)>> {
        self.write(move |conn| {
            if part == AudiencePart::First {
                conn.execute_cached(
                    "INSERT INTO notifications (message_id, kind, sender, key_id, nonce, content, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        n.message_id.as_str(),
                        n.kind,
                        n.sender,
                        i64::from(n.content.key_id),
                        n.content.nonce,
                        n.content.ciphertext,
                        ms(n.created_at)
                    ],
                )
                .map_err(|e| map_unique(e, "message"))?;
            }
            let mut out = Vec::with_capacity(recipients.len());
            let mut recorded = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO notification_recipients (message_id, user_id, seq) VALUES (?1, ?2, ?3)",
                )?;
            for user in recipients {
                let seq = match insert_event(
                    conn,
                    &user,
                    EventType::NotificationNew,
                    Some(n.message_id.as_str()),
                    None,
                    n.created_at,
                ) {
                    Ok(seq) => seq,
                    // Unknown users are skipped, not fatal.
                    Err(Error::Store(StoreError::NotFound(_))) => continue,
                    Err(e) => return Err(e),
                };
                if recorded.execute(params![n.message_id.as_str(), user.as_str(), to_i64(seq.0)])? == 0 {
                    return Err(StoreError::Conflict("recipient listed twice").into());
                }
                out.push((user, seq));
            }
            Ok(out)
        })
        .await
    }

    async fn notification(&self, id: &MessageId) -> Result<Option<StoredNotification>> {
        let id = id.clone();
        self.read(move |conn| notification_by_id(conn, id.as_str()))
            .await
    }

    async fn notification_status(
        &self,
        id: &MessageId,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<NotificationStatus> {
        let id = id.clone();
        self.read(move |conn| {
            let (recipients, sent_live, delivered, read): (i64, Option<i64>, Option<i64>, Option<i64>) = conn
                .query_row_cached(
                    "SELECT count(*), sum(r.sent_live), sum(u.acked_seq >= r.seq OR r.read_at IS NOT NULL), \
                     sum(r.read_at IS NOT NULL) \
                     FROM notification_recipients r JOIN users u ON u.user_id = r.user_id \
                     WHERE r.message_id = ?1",
                    [id.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )?;
            let mut stmt = conn.prepare_cached(
                "SELECT r.user_id, r.sent_live, (u.acked_seq >= r.seq OR r.read_at IS NOT NULL), r.read_at IS NOT NULL \
                     FROM notification_recipients r JOIN users u ON u.user_id = r.user_id \
                     WHERE r.message_id = ?1 AND r.user_id > ?2 ORDER BY r.user_id LIMIT ?3",
            )?;
            let after = after.map(|u| u.to_string()).unwrap_or_default();
            let page = stmt
                .query_map(params![id.as_str(), after, i64::from(limit)], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, bool>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, bool>(3)?,
                    ))
                })?
                .map(|r| {
                    r.map_err(db).and_then(|(u, sent_live, delivered, read)| {
                        Ok(RecipientState {
                            user: user_id(u)?,
                            sent_live,
                            delivered,
                            read,
                        })
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(NotificationStatus {
                recipients: to_u64(recipients),
                sent_live: to_u64(sent_live.unwrap_or(0)),
                delivered: to_u64(delivered.unwrap_or(0)),
                read: to_u64(read.unwrap_or(0)),
                page,
            })
        })
        .await
    }

    async fn mark_notification_sent_live(&self, id: &MessageId, users: Vec<UserId>) -> Result<()> {
        let id = id.clone();
        self.write(move |conn| {
            let mut mark = conn.prepare_cached(
                "UPDATE notification_recipients SET sent_live = 1 WHERE message_id = ?1 AND user_id = ?2",
            )?;
            for user in &users {
                mark.execute(params![id.as_str(), user.as_str()])?;
            }
            Ok(())
        })
        .await
    }

    async fn mark_notifications_read(
        &self,
        user: &UserId,
        upto: &MessageId,
        at: OffsetDateTime,
        hooks: Vec<HookDraft>,
    ) -> Result<Seq> {
        let (user, upto) = (user.clone(), upto.clone());
        self.write(move |conn| {
            let seq: Option<i64> = conn
                .query_row_cached(
                    "SELECT seq FROM notification_recipients WHERE message_id = ?1 AND user_id = ?2",
                    params![upto.as_str(), user.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            let seq = seq.ok_or(StoreError::NotFound("notification"))?;
            let marked = conn.execute_cached(
                "UPDATE notification_recipients SET read_at = ?3 \
                 WHERE user_id = ?1 AND seq <= ?2 AND read_at IS NULL",
                params![user.as_str(), seq, ms(at)],
            )?;
            if marked > 0 {
                crate::webhooks::enqueue_all(conn, &hooks)?;
            }
            Ok(Seq(to_u64(seq)))
        })
        .await
    }
}
