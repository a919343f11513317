//! The admin API's webhook operations: endpoints, their secrets, their
//! delivery log, retries, replays and test events.

use time::Duration;
use unimsg_proto::hooks::{
    CreateWebhook, Delivery, DeliveryPage, DeliveryState, EventFilter, HookEventType, PatchWebhook,
    Requeued, Webhook, WebhookList, WebhookTestData, WebhookWithSecret,
};
use unimsg_store::{DeliveryRow, Sealed, StoreError, WebhookChange, WebhookRow};

use super::sign::HookSecret;
use super::target;
use crate::Core;
use crate::error::{CoreError, Result};

const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 500;

fn not_found() -> CoreError {
    CoreError::NotFound("webhook not found".into())
}

fn view(row: WebhookRow, pending: u64) -> Webhook {
    Webhook {
        webhook_id: row.webhook_id,
        url: row.url,
        events: row.events.names(),
        description: row.description,
        enabled: row.enabled,
        include_content: row.include_content,
        disabled_reason: row.disabled_reason,
        failing_since: row.failing_since,
        pending,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

fn delivery(row: DeliveryRow) -> Delivery {
    Delivery {
        event_id: row.event.event_id,
        seq: row.event.seq,
        kind: row.event.kind,
        status: row.state,
        created_at: row.event.at,
        attempts: row.attempts,
        last_status: row.last_status,
        last_error: row.last_error,
        next_attempt_at: (row.state == DeliveryState::Pending).then_some(row.next_at),
    }
}

fn events(names: &[String]) -> Result<EventFilter> {
    EventFilter::parse(names).map_err(CoreError::BadRequest)
}

fn check_description(description: &str) -> Result<()> {
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(CoreError::BadRequest(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        )));
    }
    Ok(())
}

/// A store error, with an unknown endpoint said in words.
fn store_error(e: StoreError) -> CoreError {
    match e {
        StoreError::NotFound(_) => not_found(),
        e => e.into(),
    }
}

impl Core {
    async fn checked_url(&self, url: &str) -> Result<String> {
        if url.len() > MAX_URL {
            return Err(CoreError::BadRequest(format!(
                "url is longer than {MAX_URL} bytes"
            )));
        }
        target::check(url, self.config.hooks.allow_private_targets)
            .await
            .map(|u| u.to_string())
            .map_err(|e| CoreError::BadRequest(e.to_string()))
    }

    fn seal_secret(&self, id: &str, secret: &HookSecret) -> Result<Sealed> {
        self.keyring
            .seal(secret.as_bytes(), id.as_bytes())
            .map_err(|e| CoreError::Internal(format!("cannot seal a webhook secret: {e}")))
    }

    /// The secret of an endpoint, opened.
    pub(crate) fn open_secret(&self, id: &str, sealed: &Sealed) -> Result<HookSecret> {
        self.keyring
            .open(sealed, id.as_bytes())
            .map(HookSecret::from_bytes)
            .map_err(|e| CoreError::Internal(format!("cannot open a webhook secret: {e}")))
    }

    async fn pending_of(&self, id: &str) -> Result<u64> {
        Ok(self
            .store
            .pending_deliveries()
            .await?
            .into_iter()
            .find(|(w, _)| w == id)
            .map_or(0, |(_, n)| n))
    }

    async fn existing_webhook(&self, id: &str) -> Result<WebhookRow> {
        self.store.webhook(id).await?.ok_or_else(not_found)
    }

    async fn changed_endpoints(&self) {
        if let Err(error) = self.refresh_hook_interest().await {
            tracing::warn!(%error, "cannot refresh which webhook events are wanted");
        }
        self.wake_dispatcher();
    }

    /// `POST /v1/admin/webhooks`
    pub async fn create_webhook(&self, req: CreateWebhook) -> Result<WebhookWithSecret> {
        let url = self.checked_url(&req.url).await?;
        let filter = events(&req.events)?;
        check_description(&req.description)?;
        let id = format!("wh_{}", uuid::Uuid::now_v7().simple());
        let secret = HookSecret::generate()?;
        let now = self.clock.now();
        let row = WebhookRow {
            webhook_id: id.clone(),
            url,
            events: filter,
            description: req.description,
            enabled: req.enabled,
            include_content: req.include_content,
            secret: self.seal_secret(&id, &secret)?,
            previous_secret: None,
            failing_since: None,
            disabled_reason: None,
            created_at: now,
            updated_at: now,
        };
        self.store.create_webhook(row.clone()).await?;
        self.changed_endpoints().await;
        Ok(WebhookWithSecret {
            webhook: view(row, 0),
            secret: secret.to_text(),
        })
    }

    /// `GET /v1/admin/webhooks`
    pub async fn webhooks(&self) -> Result<WebhookList> {
        let pending = self.store.pending_deliveries().await?;
        let rows = self.store.webhooks().await?;
        Ok(WebhookList {
            webhooks: rows
                .into_iter()
                .map(|row| {
                    let n = pending
                        .iter()
                        .find(|(w, _)| *w == row.webhook_id)
                        .map_or(0, |(_, n)| *n);
                    view(row, n)
                })
                .collect(),
        })
    }

    /// `GET /v1/admin/webhooks/{id}`
    pub async fn webhook(&self, id: &str) -> Result<Webhook> {
        let row = self.existing_webhook(id).await?;
        Ok(view(row, self.pending_of(id).await?))
    }

    /// `PATCH /v1/admin/webhooks/{id}`
    pub async fn update_webhook(&self, id: &str, patch: PatchWebhook) -> Result<Webhook> {
        let url = match &patch.url {
            Some(u) => Some(self.checked_url(u).await?),
            None => None,
        };
        let filter = patch.events.as_deref().map(events).transpose()?;
        if let Some(d) = &patch.description {
            check_description(d)?;
        }
        let change = WebhookChange {
            url,
            events: filter,
            description: patch.description,
            enabled: patch.enabled,
            include_content: patch.include_content,
        };
        let row = self
            .store
            .update_webhook(id, change, self.clock.now())
            .await
            .map_err(store_error)?;
        self.changed_endpoints().await;
        Ok(view(row, self.pending_of(id).await?))
    }

    /// `DELETE /v1/admin/webhooks/{id}`
    pub async fn delete_webhook(&self, id: &str) -> Result<()> {
        if !self.store.delete_webhook(id).await? {
            return Err(not_found());
        }
        self.changed_endpoints().await;
        Ok(())
    }

    /// `POST /v1/admin/webhooks/{id}/secret`: a new secret; the old one
    /// signs too for `hooks.secret_overlap_secs`.
    pub async fn rotate_webhook_secret(&self, id: &str) -> Result<WebhookWithSecret> {
        let secret = HookSecret::generate()?;
        let now = self.clock.now();
        let until = now + Duration::seconds(self.config.hooks.secret_overlap_secs as i64);
        let row = self
            .store
            .rotate_webhook_secret(id, self.seal_secret(id, &secret)?, until, now)
            .await
            .map_err(store_error)?;
        let pending = self.pending_of(id).await?;
        Ok(WebhookWithSecret {
            webhook: view(row, pending),
            secret: secret.to_text(),
        })
    }

    /// `POST /v1/admin/webhooks/{id}/test`: queues a `webhook.test` event
    /// for this endpoint alone.
    pub async fn test_webhook(&self, id: &str) -> Result<Requeued> {
        let data = serde_json::to_string(&WebhookTestData {
            webhook_id: id.to_owned(),
        })
        .map_err(|e| CoreError::Internal(e.to_string()))?;
        let draft = unimsg_store::HookDraft {
            event_id: super::event_id(),
            kind: HookEventType::WebhookTest,
            data,
            message_id: None,
            at: self.clock.now(),
        };
        let event_id = draft.event_id.clone();
        self.store
            .enqueue_hook_event_for(id, draft)
            .await
            .map_err(store_error)?;
        self.wake_dispatcher();
        Ok(Requeued {
            queued: 1,
            event_id: Some(event_id),
        })
    }

    /// `GET /v1/admin/webhooks/{id}/deliveries`
    pub async fn webhook_deliveries(
        &self,
        id: &str,
        state: Option<DeliveryState>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<DeliveryPage> {
        self.existing_webhook(id).await?;
        let limit = limit.clamp(1, 1000);
        let rows = self.store.deliveries(id, state, before, limit).await?;
        let next_before = (rows.len() == limit as usize)
            .then(|| rows.last().map(|r| r.event.seq))
            .flatten();
        Ok(DeliveryPage {
            deliveries: rows.into_iter().map(delivery).collect(),
            next_before,
        })
    }

    /// `POST /v1/admin/webhooks/{id}/deliveries/{event_id}/retry`
    pub async fn retry_webhook_delivery(&self, id: &str, event_id: &str) -> Result<Requeued> {
        self.existing_webhook(id).await?;
        if !self
            .store
            .retry_delivery(id, event_id, self.clock.now())
            .await?
        {
            return Err(CoreError::NotFound(
                "this endpoint has no delivery of that event".into(),
            ));
        }
        self.wake_dispatcher();
        Ok(Requeued {
            queued: 1,
            event_id: Some(event_id.to_owned()),
        })
    }

    /// `POST /v1/admin/webhooks/{id}/replay`
    pub async fn replay_webhook(&self, id: &str, since: time::OffsetDateTime) -> Result<Requeued> {
        let queued = self
            .store
            .replay_deliveries(id, since, self.clock.now())
            .await
            .map_err(store_error)?;
        self.wake_dispatcher();
        Ok(Requeued {
            queued,
            event_id: None,
        })
    }
}
