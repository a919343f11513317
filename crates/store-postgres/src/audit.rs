//! The `Audit` trait on PostgreSQL: the hash-chained audit log, one
//! appender at a time across all nodes.

use async_trait::async_trait;
use unimsg_store::sql::{AUDIT_COLUMNS, hash32, ms, read_audit, to_i64, to_u64};
use unimsg_store::{Audit, AuditDraft, AuditQuery, AuditRow, ChainFn, Result, audit_bytes};

use crate::{PgStore, column, read};

/// Key of the advisory lock that serialises audit appends across nodes:
/// each entry is chained to the newest one, so two appenders must never
/// read the same "newest". ASCII "unimsgau"; distinct from the migration
/// lock.
const AUDIT_LOCK: i64 = 0x756e_696d_7367_6175;

#[async_trait]
impl Audit for PgStore {
    async fn append_audit(&self, draft: AuditDraft, chain: ChainFn) -> Result<AuditRow> {
        transaction!(self, |tx| {
            // One appender at a time across all nodes; in READ COMMITTED the
            // next statement then sees the entry the previous holder
            // committed.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
                .await?;
            let newest = tx
                .prepare_cached("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
                .await?;
            let (prev_id, prev_hash) = match tx.query_opt(&newest, &[]).await? {
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
                .await?;
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
            .await?;
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
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id > $1 \
                     AND ($2::text IS NULL OR content::jsonb ->> 'action' = $2::text) \
                     AND ($3::text IS NULL OR content::jsonb ->> 'actor' = $3::text) \
                     AND ($4::text IS NULL OR content::jsonb ->> 'operation_id' = $4::text) \
                     AND ($6::bigint IS NULL OR at >= $6::bigint) \
                     AND ($7::bigint IS NULL OR at < $7::bigint) \
                     ORDER BY id LIMIT $5"
                ))
                .await?;
            client
                .query(
                    &stmt,
                    &[
                        &to_i64(q.after),
                        &q.action,
                        &q.actor,
                        &q.operation_id,
                        &i64::from(q.limit),
                        &q.since.map(ms),
                        &q.until.map(ms),
                    ],
                )
                .await?
                .iter()
                .map(|r| read(r, read_audit))
                .collect()
        })
    }

    async fn audit_head(&self) -> Result<Option<AuditRow>> {
        connected!(self, |client| {
            client
                .query_opt(
                    &format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY id DESC LIMIT 1"),
                    &[],
                )
                .await?
                .map(|r| read(&r, read_audit))
                .transpose()
        })
    }
}
