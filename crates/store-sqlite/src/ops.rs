//! The admin-side traits on SQLite: admin accounts, notifications and the
//! audit log.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;
use unimsg_proto::{EventType, MessageId, Seq, UserId};

use crate::SqliteStore;
use crate::queries::{corrupt, db, from_ms, insert_event, map_unique, ms, to_i64, to_u64, user_id};
use unimsg_store::{
    Admin, Admins, Audit, AuditDraft, AuditQuery, AuditRow, Broadcasts, ChainFn, NewNotification,
    NotificationStatus, Notifications, PasswordHash, Result, Sealed, StoreError,
    StoredNotification, audit_bytes,
};

pub(crate) const NOTIFICATION_COLUMNS: &str =
    "n.message_id, n.kind, n.sender, n.key_id, n.nonce, n.content, n.created_at";

/// Reads the notification columns starting at `at`.
pub(crate) fn read_notification(row: &Row<'_>, at: usize) -> Result<StoredNotification> {
    let get = |e: rusqlite::Error| db(e);
    let id: String = row.get(at).map_err(get)?;
    let key_id: i64 = row.get(at + 3).map_err(get)?;
    Ok(StoredNotification {
        message_id: MessageId::parse(id).map_err(|_| corrupt("message id"))?,
        kind: row.get(at + 1).map_err(get)?,
        sender: row.get(at + 2).map_err(get)?,
        content: Sealed {
            key_id: u32::try_from(key_id).map_err(|_| corrupt("key id"))?,
            nonce: row.get(at + 4).map_err(get)?,
            ciphertext: row.get(at + 5).map_err(get)?,
        },
        created_at: from_ms(row.get(at + 6).map_err(get)?)?,
    })
}

/// Broadcasts with `after < bseq <= head`, oldest first, with their bseq.
pub(crate) fn broadcasts_between(
    conn: &Connection,
    after: i64,
    head: i64,
    limit: u32,
) -> Result<Vec<(i64, StoredNotification)>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT n.message_id, n.kind, n.sender, n.key_id, n.nonce, n.content, n.created_at, n.bseq \
             FROM broadcasts n WHERE n.bseq > ?1 AND n.bseq <= ?2 ORDER BY n.bseq LIMIT ?3",
        )
        .map_err(db)?;
    let mut rows = stmt
        .query(params![after, head, i64::from(limit)])
        .map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        let bseq: i64 = row.get(7).map_err(db)?;
        out.push((bseq, read_notification(row, 0)?));
    }
    Ok(out)
}

fn notification_by_id(conn: &Connection, id: &str) -> Result<Option<StoredNotification>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications n WHERE n.message_id = ?1"
        ))
        .map_err(db)?;
    let mut rows = stmt.query([id]).map_err(db)?;
    match rows.next().map_err(db)? {
        Some(row) => Ok(Some(read_notification(row, 0)?)),
        None => Ok(None),
    }
}

#[async_trait]
impl Admins for SqliteStore {
    async fn admin(&self, id: &str) -> Result<Option<Admin>> {
        let id = id.to_owned();
        self.read(move |conn| {
            let row: Option<(String, String, String, i64)> = conn
                .query_row(
                    "SELECT admin_id, secret_hash, scopes, created_at FROM admins WHERE admin_id = ?1",
                    [&id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(db)?;
            row.map(|(admin_id, hash, scopes, created)| {
                Ok(Admin {
                    admin_id,
                    secret_hash: PasswordHash(hash),
                    scopes: scopes.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
                    created_at: from_ms(created)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn create_admin(&self, admin: Admin) -> Result<()> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO admins (admin_id, secret_hash, scopes, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![admin.admin_id, admin.secret_hash.0, admin.scopes.join(","), ms(admin.created_at)],
            )
            .map_err(|e| map_unique(e, "admin"))?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl Broadcasts for SqliteStore {
    async fn append_broadcast(&self, b: NewNotification) -> Result<u64> {
        self.write(move |conn| {
            let bseq: i64 = conn
                .query_row(
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
            let tx = conn.unchecked_transaction().map_err(db)?;
            let mut base = tx
                .prepare_cached("SELECT bbase FROM users WHERE user_id = ?1")
                .map_err(db)?;
            // Inbox rows committed before broadcast `k` are those with
            // `bpos < k`; `bpos` never decreases along a user's inbox, so
            // the newest of them is found scanning back from the end, past
            // the few rows committed since.
            let mut before = tx
                .prepare_cached(
                    "SELECT seq FROM inbox WHERE user_id = ?1 AND bpos < ?2 ORDER BY seq DESC LIMIT 1",
                )
                .map_err(db)?;
            let mut out = Vec::with_capacity(users.len());
            for user in users {
                let Some(bbase) = base
                    .query_row([user.as_str()], |r| r.get::<_, i64>(0))
                    .optional()
                    .map_err(db)?
                else {
                    continue;
                };
                if k <= bbase {
                    continue;
                }
                let rows: i64 = before
                    .query_row(params![user.as_str(), k], |r| r.get(0))
                    .optional()
                    .map_err(db)?
                    .unwrap_or(0);
                out.push((user, Seq(to_u64(rows + k - bbase))));
            }
            drop((base, before));
            tx.commit().map_err(db)?;
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl Notifications for SqliteStore {
    async fn append_notification(
        &self,
        n: NewNotification,
        first: bool,
        recipients: Vec<UserId>,
    ) -> Result<Vec<(UserId, Seq)>> {
        self.write(move |conn| {
            if first {
                conn.execute(
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
                )
                .map_err(db)?;
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
                    Err(StoreError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                if recorded.execute(params![n.message_id.as_str(), user.as_str(), to_i64(seq.0)]).map_err(db)? == 0 {
                    return Err(StoreError::Conflict("recipient listed twice"));
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
            let (recipients, delivered, read): (i64, Option<i64>, Option<i64>) = conn
                .query_row(
                    "SELECT count(*), sum(u.acked_seq >= r.seq), sum(r.read_at IS NOT NULL) \
                     FROM notification_recipients r JOIN users u ON u.user_id = r.user_id \
                     WHERE r.message_id = ?1",
                    [id.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .map_err(db)?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT r.user_id, u.acked_seq >= r.seq, r.read_at IS NOT NULL \
                     FROM notification_recipients r JOIN users u ON u.user_id = r.user_id \
                     WHERE r.message_id = ?1 AND r.user_id > ?2 ORDER BY r.user_id LIMIT ?3",
                )
                .map_err(db)?;
            let after = after.map(|u| u.to_string()).unwrap_or_default();
            let page = stmt
                .query_map(params![id.as_str(), after, i64::from(limit)], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, bool>(1)?,
                        r.get::<_, bool>(2)?,
                    ))
                })
                .map_err(db)?
                .map(|r| {
                    r.map_err(db)
                        .and_then(|(u, d, rd)| Ok((user_id(u)?, d, rd)))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(NotificationStatus {
                recipients: to_u64(recipients),
                delivered: to_u64(delivered.unwrap_or(0)),
                read: to_u64(read.unwrap_or(0)),
                page,
            })
        })
        .await
    }

    async fn mark_notifications_read(
        &self,
        user: &UserId,
        upto: &MessageId,
        at: OffsetDateTime,
    ) -> Result<Seq> {
        let (user, upto) = (user.clone(), upto.clone());
        self.write(move |conn| {
            let seq: Option<i64> = conn
                .query_row(
                    "SELECT seq FROM notification_recipients WHERE message_id = ?1 AND user_id = ?2",
                    params![upto.as_str(), user.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            let seq = seq.ok_or(StoreError::NotFound("notification"))?;
            conn.execute(
                "UPDATE notification_recipients SET read_at = ?3 \
                 WHERE user_id = ?1 AND seq <= ?2 AND read_at IS NULL",
                params![user.as_str(), seq, ms(at)],
            )
            .map_err(db)?;
            Ok(Seq(to_u64(seq)))
        })
        .await
    }
}

/// `(id, at, content, prev_hash, hash)` as read.
type RawAudit = (i64, i64, String, Vec<u8>, Vec<u8>);

fn read_audit(row: &Row<'_>) -> rusqlite::Result<RawAudit> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn build_audit(raw: RawAudit) -> Result<AuditRow> {
    let (id, at_ms, content, prev, hash) = raw;
    // A hash of the wrong length is tampering too; keep it visible as zeros
    // so verification reports the entry instead of the reader failing.
    let fixed = |v: Vec<u8>| <[u8; 32]>::try_from(v.as_slice()).unwrap_or([0; 32]);
    Ok(AuditRow {
        id: to_u64(id),
        at_ms,
        content,
        prev_hash: fixed(prev),
        hash: fixed(hash),
    })
}

#[async_trait]
impl Audit for SqliteStore {
    async fn append_audit(&self, draft: AuditDraft, chain: ChainFn) -> Result<AuditRow> {
        self.write(move |conn| {
            let last: Option<(i64, Vec<u8>)> = conn
                .query_row("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(db)?;
            let (prev_id, prev_hash) = match last {
                Some((id, hash)) => (to_u64(id), <[u8; 32]>::try_from(hash.as_slice()).unwrap_or([0; 32])),
                None => (0, [0; 32]),
            };
            let id = prev_id + 1;
            let at_ms = ms(draft.at);
            let hash = chain(&prev_hash, &audit_bytes(id, at_ms, &draft.content));
            conn.execute(
                "INSERT INTO audit_log (id, at, content, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![to_i64(id), at_ms, draft.content, &prev_hash[..], &hash[..]],
            )
            .map_err(db)?;
            Ok(AuditRow { id, at_ms, content: draft.content, prev_hash, hash })
        })
        .await
    }

    async fn audit_entries(&self, q: AuditQuery) -> Result<Vec<AuditRow>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, at, content, prev_hash, hash FROM audit_log WHERE id > ?1 \
                     AND (?2 IS NULL OR json_extract(content, '$.action') = ?2) \
                     AND (?3 IS NULL OR json_extract(content, '$.actor') = ?3) \
                     AND (?4 IS NULL OR json_extract(content, '$.operation_id') = ?4) \
                     ORDER BY id LIMIT ?5",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(
                    params![
                        to_i64(q.after),
                        q.action,
                        q.actor,
                        q.operation_id,
                        i64::from(q.limit)
                    ],
                    read_audit,
                )
                .map_err(db)?;
            rows.map(|r| r.map_err(db).and_then(build_audit)).collect()
        })
        .await
    }
}
