//! The `Webhooks` trait on SQLite: endpoints, the outbox and its
//! deliveries. Claims need no row locks here: every write runs on the one
//! writer thread, so a claim and the attempt results never interleave.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use unimsg_proto::hooks::DeliveryState;
use unimsg_store::sql::{
    DELIVERY_COLUMNS, HOOK_EVENT_COLUMNS, WEBHOOK_COLUMNS, attempt_columns, filter_column, ms,
    read_delivery, read_hook_event, read_webhook, to_u64,
};
use unimsg_store::{
    AttemptResult, ClaimedDelivery, DeliveryRow, HookDraft, Result, StoreError, WebhookChange,
    WebhookRow, Webhooks,
};

use crate::{Cached, DbResult, SqliteStore, all, first, map_unique};

/// The endpoints that receive an event of type `?{n}`.
fn subscribed(n: u8) -> String {
    format!("enabled = 1 AND (events = ',*,' OR instr(events, ',' || ?{n} || ',') > 0)")
}

fn webhook_by_id(conn: &Connection, id: &str) -> DbResult<Option<WebhookRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id = ?1"
    ))?;
    first(&mut stmt, [id], read_webhook)
}

fn existing(conn: &Connection, id: &str) -> DbResult<WebhookRow> {
    webhook_by_id(conn, id)?.ok_or_else(|| StoreError::NotFound("webhook").into())
}

fn insert_event(conn: &Connection, event: &HookDraft) -> DbResult<i64> {
    conn.prepare_cached(
        "INSERT INTO hook_events (event_id, kind, data, message_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        event.event_id,
        event.kind.as_str(),
        event.data,
        event.message_id.as_ref().map(|m| m.as_str()),
        ms(event.at)
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Writes `event` and a pending delivery for each endpoint subscribed to
/// it, in the caller's transaction; nothing when none is.
pub(crate) fn enqueue(conn: &Connection, event: &HookDraft) -> DbResult<()> {
    let wanted: bool = conn
        .prepare_cached(&format!(
            "SELECT EXISTS(SELECT 1 FROM webhooks WHERE {})",
            subscribed(1)
        ))?
        .query_row([event.kind.as_str()], |r| r.get(0))?;
    if !wanted {
        return Ok(());
    }
    let seq = insert_event(conn, event)?;
    conn.prepare_cached(&format!(
        "INSERT INTO hook_deliveries (webhook_id, event_seq, state, attempts, next_at, updated_at) \
         SELECT webhook_id, ?2, 'pending', 0, ?3, ?3 FROM webhooks WHERE {}",
        subscribed(1)
    ))?
    .execute(params![event.kind.as_str(), seq, ms(event.at)])?;
    Ok(())
}

/// [`enqueue`] for each of `events`.
pub(crate) fn enqueue_all(conn: &Connection, events: &[HookDraft]) -> DbResult<()> {
    events.iter().try_for_each(|e| enqueue(conn, e))
}

#[async_trait]
impl Webhooks for SqliteStore {
    async fn create_webhook(&self, w: WebhookRow) -> Result<()> {
        self.write(move |conn| {
            conn.execute_cached(
                &format!("INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
                params![
                    w.webhook_id,
                    w.url,
                    filter_column(&w.events),
                    w.description,
                    w.enabled,
                    w.include_content,
                    w.secret.to_bytes(),
                    w.previous_secret.as_ref().map(|(s, _)| s.to_bytes()),
                    w.previous_secret.as_ref().map(|(_, until)| ms(*until)),
                    w.failing_since.map(ms),
                    w.disabled_reason,
                    ms(w.created_at),
                    ms(w.updated_at),
                ],
            )
            .map_err(|e| map_unique(e, "webhook"))?;
            Ok(())
        })
        .await
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRow>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY created_at, webhook_id"
            ))?;
            all(&mut stmt, [], read_webhook)
        })
        .await
    }

    async fn webhook(&self, id: &str) -> Result<Option<WebhookRow>> {
        let id = id.to_owned();
        self.read(move |conn| webhook_by_id(conn, &id)).await
    }

    async fn update_webhook(
        &self,
        id: &str,
        change: WebhookChange,
        at: OffsetDateTime,
    ) -> Result<WebhookRow> {
        let id = id.to_owned();
        self.write(move |conn| {
            let before = existing(conn, &id)?;
            let enabling = change.enabled == Some(true) && !before.enabled;
            conn.execute_cached(
                "UPDATE webhooks SET url = coalesce(?2, url), events = coalesce(?3, events), \
                 description = coalesce(?4, description), enabled = coalesce(?5, enabled), \
                 include_content = coalesce(?6, include_content), updated_at = ?7 WHERE webhook_id = ?1",
                params![
                    id,
                    change.url,
                    change.events.as_ref().map(filter_column),
                    change.description,
                    change.enabled,
                    change.include_content,
                    ms(at)
                ],
            )?;
            if enabling {
                conn.execute_cached(
                    "UPDATE webhooks SET failing_since = NULL, disabled_reason = NULL WHERE webhook_id = ?1",
                    [&id],
                )?;
                conn.execute_cached(
                    "UPDATE hook_deliveries SET next_at = ?2 WHERE webhook_id = ?1 AND state = 'pending'",
                    params![id, ms(at)],
                )?;
            }
            existing(conn, &id)
        })
        .await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |conn| {
            conn.execute_cached("DELETE FROM hook_deliveries WHERE webhook_id = ?1", [&id])?;
            Ok(conn.execute_cached("DELETE FROM webhooks WHERE webhook_id = ?1", [&id])? > 0)
        })
        .await
    }

    async fn rotate_webhook_secret(
        &self,
        id: &str,
        secret: unimsg_store::Sealed,
        previous_until: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<WebhookRow> {
        let id = id.to_owned();
        self.write(move |conn| {
            existing(conn, &id)?;
            conn.execute_cached(
                "UPDATE webhooks SET previous_secret = secret, previous_until = ?3, secret = ?2, \
                 updated_at = ?4 WHERE webhook_id = ?1",
                params![id, secret.to_bytes(), ms(previous_until), ms(at)],
            )?;
            existing(conn, &id)
        })
        .await
    }

    async fn disable_webhook(&self, id: &str, reason: &str, at: OffsetDateTime) -> Result<()> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.write(move |conn| {
            conn.execute_cached(
                "UPDATE webhooks SET enabled = 0, disabled_reason = ?2, updated_at = ?3 WHERE webhook_id = ?1",
                params![id, reason, ms(at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn enqueue_hook_events(&self, events: Vec<HookDraft>) -> Result<()> {
        self.write(move |conn| {
            for event in &events {
                enqueue(conn, event)?;
            }
            Ok(())
        })
        .await
    }

    async fn enqueue_hook_event_for(&self, id: &str, event: HookDraft) -> Result<()> {
        let id = id.to_owned();
        self.write(move |conn| {
            existing(conn, &id)?;
            let seq = insert_event(conn, &event)?;
            conn.execute_cached(
                "INSERT INTO hook_deliveries (webhook_id, event_seq, state, attempts, next_at, updated_at) \
                 VALUES (?1, ?2, 'pending', 0, ?3, ?3)",
                params![id, seq, ms(event.at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        id: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        let id = id.to_owned();
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {HOOK_EVENT_COLUMNS}, d.attempts + 1 FROM hook_deliveries d \
                 JOIN hook_events e ON e.seq = d.event_seq \
                 WHERE d.webhook_id = ?1 AND d.state = 'pending' AND d.next_at <= ?2 \
                 ORDER BY d.event_seq LIMIT ?3"
            ))?;
            let claimed = all(&mut stmt, params![id, ms(now), limit], |row| {
                Ok(ClaimedDelivery {
                    event: read_hook_event(row)?,
                    attempt: u32::try_from(row.int(6)?).unwrap_or(u32::MAX),
                })
            })?;
            let mut lease = conn.prepare_cached(
                "UPDATE hook_deliveries SET attempts = attempts + 1, next_at = ?3, updated_at = ?4 \
                 WHERE webhook_id = ?1 AND event_seq = ?2",
            )?;
            for c in &claimed {
                lease.execute(params![id, c.event.seq, ms(lease_until), ms(now)])?;
            }
            Ok(claimed)
        })
        .await
    }

    async fn finish_deliveries(
        &self,
        id: &str,
        results: Vec<AttemptResult>,
        at: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>> {
        let id = id.to_owned();
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(
                "UPDATE hook_deliveries SET state = ?3, next_at = coalesce(?4, next_at), \
                 last_status = ?5, last_error = ?6, updated_at = ?7 \
                 WHERE webhook_id = ?1 AND event_seq = ?2 AND attempts = ?8",
            )?;
            let (mut succeeded, mut failed) = (false, false);
            for r in &results {
                let (state, next_at, failure) = attempt_columns(&r.outcome);
                succeeded |= !failure;
                failed |= failure;
                stmt.execute(params![
                    id,
                    r.event_seq,
                    state.as_str(),
                    next_at,
                    r.status,
                    r.error,
                    ms(at),
                    r.attempt
                ])?;
            }
            // Written only when it changes: most rounds leave the row as it is.
            if succeeded {
                conn.prepare_cached(
                    "UPDATE webhooks SET failing_since = NULL \
                     WHERE webhook_id = ?1 AND failing_since IS NOT NULL",
                )?
                .execute([&id])?;
            } else if failed {
                conn.prepare_cached(
                    "UPDATE webhooks SET failing_since = ?2 WHERE webhook_id = ?1 AND failing_since IS NULL",
                )?
                .execute(params![id, ms(at)])?;
            }
            Ok(webhook_by_id(conn, &id)?.and_then(|w| w.failing_since))
        })
        .await
    }

    async fn deliveries(
        &self,
        id: &str,
        state: Option<DeliveryState>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>> {
        let id = id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM hook_deliveries d JOIN hook_events e ON e.seq = d.event_seq \
                 WHERE d.webhook_id = ?1 AND (?2 IS NULL OR d.state = ?2) AND (?3 IS NULL OR d.event_seq < ?3) \
                 ORDER BY d.event_seq DESC LIMIT ?4"
            ))?;
            all(
                &mut stmt,
                params![id, state.map(DeliveryState::as_str), before, limit],
                read_delivery,
            )
        })
        .await
    }

    async fn retry_delivery(&self, id: &str, event_id: &str, now: OffsetDateTime) -> Result<bool> {
        let (id, event_id) = (id.to_owned(), event_id.to_owned());
        self.write(move |conn| {
            let seq: Option<i64> = conn
                .query_row_cached("SELECT seq FROM hook_events WHERE event_id = ?1", [&event_id], |r| r.get(0))
                .optional()?;
            let Some(seq) = seq else { return Ok(false) };
            let changed = conn.execute_cached(
                "UPDATE hook_deliveries SET state = 'pending', attempts = 0, next_at = ?3, updated_at = ?3 \
                 WHERE webhook_id = ?1 AND event_seq = ?2",
                params![id, seq, ms(now)],
            )?;
            Ok(changed > 0)
        })
        .await
    }

    async fn replay_deliveries(
        &self,
        id: &str,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64> {
        let id = id.to_owned();
        self.write(move |conn| {
            let hook = existing(conn, &id)?;
            let filter = filter_column(&hook.events);
            let queued = conn.execute_cached(
                "INSERT INTO hook_deliveries (webhook_id, event_seq, state, attempts, next_at, updated_at) \
                 SELECT ?1, seq, 'pending', 0, ?3, ?3 FROM hook_events \
                 WHERE created_at >= ?2 AND (?4 = ',*,' OR instr(?4, ',' || kind || ',') > 0 \
                     OR EXISTS (SELECT 1 FROM hook_deliveries x WHERE x.webhook_id = ?1 AND x.event_seq = seq)) \
                 ON CONFLICT (webhook_id, event_seq) DO UPDATE SET state = 'pending', attempts = 0, \
                     next_at = excluded.next_at, updated_at = excluded.updated_at",
                params![id, ms(since), ms(now), filter],
            )?;
            Ok(u64::try_from(queued).unwrap_or(0))
        })
        .await
    }

    async fn pending_deliveries(&self) -> Result<Vec<(String, u64)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT webhook_id, count(*) FROM hook_deliveries WHERE state = 'pending' GROUP BY webhook_id",
            )?;
            all(&mut stmt, [], |row| Ok((row.text(0)?, to_u64(row.int(1)?))))
        })
        .await
    }

    async fn prune_hook_events(&self, before: OffsetDateTime) -> Result<u64> {
        self.write(move |conn| {
            conn.execute_cached(
                "DELETE FROM hook_deliveries WHERE state != 'pending' AND updated_at < ?1",
                [ms(before)],
            )?;
            let gone = conn.execute_cached(
                "DELETE FROM hook_events WHERE created_at < ?1 AND NOT EXISTS \
                 (SELECT 1 FROM hook_deliveries d WHERE d.event_seq = hook_events.seq)",
                [ms(before)],
            )?;
            Ok(u64::try_from(gone).unwrap_or(0))
        })
        .await
    }
}
