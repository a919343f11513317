//! The `Webhooks` trait on PostgreSQL: endpoints, the outbox and its
//! deliveries. A claim takes the due rows with `FOR UPDATE SKIP LOCKED`
//! and moves them past its lease in the same statement, so two nodes
//! claiming at once never get the same delivery, and a node that dies
//! mid-attempt leaves rows that are due again when the lease ends.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use time::OffsetDateTime;
use unimsg_proto::hooks::DeliveryState;
use unimsg_store::sql::{
    DELIVERY_COLUMNS, HOOK_EVENT_COLUMNS, WEBHOOK_COLUMNS, attempt_columns, filter_column, ms,
    read_delivery, read_hook_event, read_webhook, to_u64,
};
use unimsg_store::{
    AttemptResult, ClaimedDelivery, DeliveryRow, HookDraft, Result, Sealed, StoreError,
    WebhookChange, WebhookRow, Webhooks,
};

use crate::{DbResult, PgStore, column, read, unique};

/// The endpoints (`webhooks w`) that receive an event of type `${n}`.
fn subscribed(n: u8) -> String {
    format!("w.enabled AND (w.events = ',*,' OR strpos(w.events, ',' || ${n}::text || ',') > 0)")
}

async fn webhook_by_id(tx: &Transaction<'_>, id: &str) -> DbResult<Option<WebhookRow>> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id = $1"
        ))
        .await?;
    tx.query_opt(&stmt, &[&id])
        .await?
        .map(|row| read(&row, read_webhook))
        .transpose()
}

async fn existing(tx: &Transaction<'_>, id: &str) -> DbResult<WebhookRow> {
    webhook_by_id(tx, id)
        .await?
        .ok_or_else(|| StoreError::NotFound("webhook").into())
}

/// Writes `event` and a pending delivery for each endpoint subscribed to
/// it, in the caller's transaction, with one statement; nothing when none
/// is.
pub(crate) async fn enqueue(tx: &Transaction<'_>, event: &HookDraft) -> DbResult<()> {
    let stmt = tx
        .prepare_cached(&format!(
            "WITH e AS (INSERT INTO hook_events (event_id, kind, data, message_id, created_at) \
                 SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM webhooks w WHERE {}) \
                 RETURNING seq) \
             INSERT INTO hook_deliveries (webhook_id, event_seq, state, attempts, next_at, updated_at) \
             SELECT w.webhook_id, e.seq, 'pending', 0, $5, $5 FROM e, webhooks w WHERE {}",
            subscribed(2),
            subscribed(2)
        ))
        .await?;
    tx.execute(
        &stmt,
        &[
            &event.event_id,
            &event.kind.as_str(),
            &event.data,
            &event.message_id.as_ref().map(|m| m.as_str()),
            &ms(event.at),
        ],
    )
    .await?;
    Ok(())
}

/// [`enqueue`] for each of `events`.
pub(crate) async fn enqueue_all(tx: &Transaction<'_>, events: &[HookDraft]) -> DbResult<()> {
    for event in events {
        enqueue(tx, event).await?;
    }
    Ok(())
}

#[async_trait]
impl Webhooks for PgStore {
    async fn create_webhook(&self, w: WebhookRow) -> Result<()> {
        connected!(self, |client| {
            client
                .execute(
                    &format!(
                        "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                    ),
                    &[
                        &w.webhook_id,
                        &w.url,
                        &filter_column(&w.events),
                        &w.description,
                        &w.enabled,
                        &w.include_content,
                        &w.secret.to_bytes(),
                        &w.previous_secret.as_ref().map(|(s, _)| s.to_bytes()),
                        &w.previous_secret.as_ref().map(|(_, until)| ms(*until)),
                        &w.failing_since.map(ms),
                        &w.disabled_reason,
                        &ms(w.created_at),
                        &ms(w.updated_at),
                    ],
                )
                .await
                .map_err(|e| unique(e, "webhook"))?;
            Ok(())
        })
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRow>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY created_at, webhook_id"
                ))
                .await?;
            client
                .query(&stmt, &[])
                .await?
                .iter()
                .map(|row| read(row, read_webhook))
                .collect()
        })
    }

    async fn webhook(&self, id: &str) -> Result<Option<WebhookRow>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id = $1"
                ))
                .await?;
            client
                .query_opt(&stmt, &[&id])
                .await?
                .map(|row| read(&row, read_webhook))
                .transpose()
        })
    }

    async fn update_webhook(
        &self,
        id: &str,
        change: WebhookChange,
        at: OffsetDateTime,
    ) -> Result<WebhookRow> {
        transaction!(self, |tx| {
            let before = existing(tx, id).await?;
            let enabling = change.enabled == Some(true) && !before.enabled;
            tx.execute(
                "UPDATE webhooks SET url = coalesce($2, url), events = coalesce($3, events), \
                 description = coalesce($4, description), enabled = coalesce($5, enabled), \
                 include_content = coalesce($6, include_content), updated_at = $7 WHERE webhook_id = $1",
                &[
                    &id,
                    &change.url,
                    &change.events.as_ref().map(filter_column),
                    &change.description,
                    &change.enabled,
                    &change.include_content,
                    &ms(at),
                ],
            )
            .await?;
            if enabling {
                tx.execute(
                    "UPDATE webhooks SET failing_since = NULL, disabled_reason = NULL WHERE webhook_id = $1",
                    &[&id],
                )
                .await?;
                tx.execute(
                    "UPDATE hook_deliveries SET next_at = $2 WHERE webhook_id = $1 AND state = 'pending'",
                    &[&id, &ms(at)],
                )
                .await?;
            }
            existing(tx, id).await
        })
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        transaction!(self, |tx| {
            tx.execute("DELETE FROM hook_deliveries WHERE webhook_id = $1", &[&id])
                .await?;
            Ok(tx
                .execute("DELETE FROM webhooks WHERE webhook_id = $1", &[&id])
                .await?
                > 0)
        })
    }

    async fn rotate_webhook_secret(
        &self,
        id: &str,
        secret: Sealed,
        previous_until: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<WebhookRow> {
        transaction!(self, |tx| {
            existing(tx, id).await?;
            tx.execute(
                "UPDATE webhooks SET previous_secret = secret, previous_until = $3, secret = $2, \
                 updated_at = $4 WHERE webhook_id = $1",
                &[&id, &secret.to_bytes(), &ms(previous_until), &ms(at)],
            )
            .await?;
            existing(tx, id).await
        })
    }

    async fn disable_webhook(&self, id: &str, reason: &str, at: OffsetDateTime) -> Result<()> {
        connected!(self, |client| {
            client
                .execute(
                    "UPDATE webhooks SET enabled = FALSE, disabled_reason = $2, updated_at = $3 WHERE webhook_id = $1",
                    &[&id, &reason, &ms(at)],
                )
                .await?;
            Ok(())
        })
    }

    async fn enqueue_hook_events(&self, events: Vec<HookDraft>) -> Result<()> {
        transaction!(self, |tx| {
            for event in &events {
                enqueue(tx, event).await?;
            }
            Ok(())
        })
    }

    async fn enqueue_hook_event_for(&self, id: &str, event: HookDraft) -> Result<()> {
        transaction!(self, |tx| {
            existing(tx, id).await?;
            tx.execute(
                "WITH e AS (INSERT INTO hook_events (event_id, kind, data, message_id, created_at) \
                     VALUES ($2, $3, $4, $5, $6) RETURNING seq) \
                 INSERT INTO hook_deliveries (webhook_id, event_seq, state, attempts, next_at, updated_at) \
                 SELECT $1, e.seq, 'pending', 0, $6, $6 FROM e",
                &[
                    &id,
                    &event.event_id,
                    &event.kind.as_str(),
                    &event.data,
                    &event.message_id.as_ref().map(|m| m.as_str()),
                    &ms(event.at),
                ],
            )
            .await?;
            Ok(())
        })
    }

    async fn claim_deliveries(
        &self,
        id: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        transaction!(self, |tx| {
            let stmt = tx
                .prepare_cached(&format!(
                    "WITH due AS (SELECT event_seq FROM hook_deliveries \
                         WHERE webhook_id = $1 AND state = 'pending' AND next_at <= $2 \
                         ORDER BY event_seq LIMIT $4 FOR UPDATE SKIP LOCKED), \
                     claimed AS (UPDATE hook_deliveries d SET attempts = d.attempts + 1, next_at = $3, updated_at = $2 \
                         FROM due WHERE d.webhook_id = $1 AND d.event_seq = due.event_seq \
                         RETURNING d.event_seq, d.attempts) \
                     SELECT {HOOK_EVENT_COLUMNS}, c.attempts FROM claimed c JOIN hook_events e ON e.seq = c.event_seq \
                     ORDER BY e.seq"
                ))
                .await?;
            tx.query(&stmt, &[&id, &ms(now), &ms(lease_until), &i64::from(limit)])
                .await?
                .iter()
                .map(|row| {
                    Ok(ClaimedDelivery {
                        event: read(row, read_hook_event)?,
                        attempt: u32::try_from(column::<i64>(row, 6)?).unwrap_or(u32::MAX),
                    })
                })
                .collect()
        })
    }

    async fn finish_deliveries(
        &self,
        id: &str,
        results: Vec<AttemptResult>,
        at: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>> {
        transaction!(self, |tx| {
            let (mut seqs, mut states, mut next, mut codes, mut errors, mut attempts) = (
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            );
            let (mut succeeded, mut failed) = (false, false);
            for r in &results {
                let (state, next_at, failure) = attempt_columns(&r.outcome);
                succeeded |= !failure;
                failed |= failure;
                seqs.push(r.event_seq);
                states.push(state.as_str());
                next.push(next_at);
                codes.push(r.status.map(i64::from));
                errors.push(r.error.as_deref());
                attempts.push(i64::from(r.attempt));
            }
            let stmt = tx
                .prepare_cached(
                    "UPDATE hook_deliveries d SET state = r.state, next_at = coalesce(r.next_at, d.next_at), \
                     last_status = r.code, last_error = r.error, updated_at = $2 \
                     FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], \
                         $8::bigint[]) AS r(seq, state, next_at, code, error, attempt) \
                     WHERE d.webhook_id = $1 AND d.event_seq = r.seq AND d.attempts = r.attempt",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &id,
                    &ms(at),
                    &seqs,
                    &states,
                    &next,
                    &codes,
                    &errors,
                    &attempts,
                ],
            )
            .await?;
            // Written only when it changes: most rounds leave the row as it is.
            if succeeded {
                let stmt = tx
                    .prepare_cached(
                        "UPDATE webhooks SET failing_since = NULL \
                         WHERE webhook_id = $1 AND failing_since IS NOT NULL",
                    )
                    .await?;
                tx.execute(&stmt, &[&id]).await?;
            } else if failed {
                let stmt = tx
                    .prepare_cached(
                        "UPDATE webhooks SET failing_since = $2 \
                         WHERE webhook_id = $1 AND failing_since IS NULL",
                    )
                    .await?;
                tx.execute(&stmt, &[&id, &ms(at)]).await?;
            }
            Ok(webhook_by_id(tx, id).await?.and_then(|w| w.failing_since))
        })
    }

    async fn deliveries(
        &self,
        id: &str,
        state: Option<DeliveryState>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM hook_deliveries d JOIN hook_events e ON e.seq = d.event_seq \
                     WHERE d.webhook_id = $1 AND ($2::text IS NULL OR d.state = $2) \
                     AND ($3::bigint IS NULL OR d.event_seq < $3) ORDER BY d.event_seq DESC LIMIT $4"
                ))
                .await?;
            client
                .query(
                    &stmt,
                    &[
                        &id,
                        &state.map(DeliveryState::as_str),
                        &before,
                        &i64::from(limit),
                    ],
                )
                .await?
                .iter()
                .map(|row| read(row, read_delivery))
                .collect()
        })
    }

    async fn retry_delivery(&self, id: &str, event_id: &str, now: OffsetDateTime) -> Result<bool> {
        connected!(self, |client| {
            let changed = client
                .execute(
                    "UPDATE hook_deliveries d SET state = 'pending', attempts = 0, next_at = $3, updated_at = $3 \
                     FROM hook_events e WHERE e.event_id = $2 AND d.webhook_id = $1 AND d.event_seq = e.seq",
                    &[&id, &event_id, &ms(now)],
                )
                .await?;
            Ok(changed > 0)
        })
    }

    async fn replay_deliveries(
        &self,
        id: &str,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64> {
        transaction!(self, |tx| {
            let hook = existing(tx, id).await?;
            let filter = filter_column(&hook.events);
            let queued = tx
                .execute(
                    "INSERT INTO hook_deliveries (webhook_id, event_seq, state, attempts, next_at, updated_at) \
                     SELECT $1, e.seq, 'pending', 0, $3, $3 FROM hook_events e \
                     WHERE e.created_at >= $2 AND ($4::text = ',*,' OR strpos($4::text, ',' || e.kind || ',') > 0 \
                         OR EXISTS (SELECT 1 FROM hook_deliveries x WHERE x.webhook_id = $1 AND x.event_seq = e.seq)) \
                     ON CONFLICT (webhook_id, event_seq) DO UPDATE SET state = 'pending', attempts = 0, \
                         next_at = excluded.next_at, updated_at = excluded.updated_at",
                    &[&id, &ms(since), &ms(now), &filter],
                )
                .await?;
            Ok(queued)
        })
    }

    async fn pending_deliveries(&self) -> Result<Vec<(String, u64)>> {
        connected!(self, |client| {
            client
                .query(
                    "SELECT webhook_id, count(*) FROM hook_deliveries WHERE state = 'pending' GROUP BY webhook_id",
                    &[],
                )
                .await?
                .iter()
                .map(|row| Ok((column::<String>(row, 0)?, to_u64(column::<i64>(row, 1)?))))
                .collect()
        })
    }

    async fn prune_hook_events(&self, before: OffsetDateTime) -> Result<u64> {
        transaction!(self, |tx| {
            tx.execute(
                "DELETE FROM hook_deliveries WHERE state != 'pending' AND updated_at < $1",
                &[&ms(before)],
            )
            .await?;
            let gone = tx
                .execute(
                    "DELETE FROM hook_events e WHERE e.created_at < $1 AND NOT EXISTS \
                     (SELECT 1 FROM hook_deliveries d WHERE d.event_seq = e.seq)",
                    &[&ms(before)],
                )
                .await?;
            Ok(gone)
        })
    }
}
