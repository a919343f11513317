//! The `Audit` trait on SQLite: the hash-chained audit log. The writer
//! thread is the one appender, so the newest entry cannot change under it.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use unimsg_store::sql::{AUDIT_COLUMNS, hash32, ms, read_audit, to_i64, to_u64};
use unimsg_store::{Audit, AuditDraft, AuditQuery, AuditRow, ChainFn, Result, audit_bytes};

use crate::{Cached, SqliteStore, all, first};

#[async_trait]
impl Audit for SqliteStore {
    async fn append_audit(&self, draft: AuditDraft, chain: ChainFn) -> Result<AuditRow> {
        self.write(move |conn| {
            let last: Option<(i64, Vec<u8>)> = conn
                .query_row_cached("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let (prev_id, prev_hash) = match last {
                Some((id, hash)) => (to_u64(id), hash32(&hash)),
                None => (0, [0; 32]),
            };
            let id = prev_id + 1;
            let at_ms = ms(draft.at);
            let hash = chain(&prev_hash, &audit_bytes(id, at_ms, &draft.content));
            conn.execute_cached(
                "INSERT INTO audit_log (id, at, content, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![to_i64(id), at_ms, draft.content, &prev_hash[..], &hash[..]],
            )?;
            Ok(AuditRow { id, at_ms, content: draft.content, prev_hash, hash })
        })
        .await
    }

    async fn audit_entries(&self, q: AuditQuery) -> Result<Vec<AuditRow>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id > ?1 \
                     AND (?2 IS NULL OR json_extract(content, '$.action') = ?2) \
                     AND (?3 IS NULL OR json_extract(content, '$.actor') = ?3) \
                     AND (?4 IS NULL OR json_extract(content, '$.operation_id') = ?4) \
                     AND (?6 IS NULL OR at >= ?6) AND (?7 IS NULL OR at < ?7) \
                     ORDER BY id LIMIT ?5"
            ))?;
            all(
                &mut stmt,
                params![
                    to_i64(q.after),
                    q.action,
                    q.actor,
                    q.operation_id,
                    i64::from(q.limit),
                    q.since.map(ms),
                    q.until.map(ms)
                ],
                read_audit,
            )
        })
        .await
    }

    async fn audit_head(&self) -> Result<Option<AuditRow>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY id DESC LIMIT 1"
            ))?;
            first(&mut stmt, [], read_audit)
        })
        .await
    }
}
