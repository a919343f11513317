//! The webhook dispatcher: one loop per node, and one worker per enabled
//! endpoint while that endpoint has due deliveries.
//!
//! A worker runs four rounds at once. Each claims up to
//! `4 × hooks.max_in_flight` due deliveries of its endpoint, oldest event
//! first, under a lease long enough for all the worker's claims
//! (`16 × hooks.timeout_ms` + 10 s); attempts them, with at most
//! `max_in_flight` in flight for the endpoint; records every result in one
//! write; and goes on while claims come back full. Each round uses the
//! endpoint as the dispatcher last read it (every poll, and at once after
//! a change on this node), so a new URL or secret, or a disabling, takes
//! effect at the next round even while a backlog drains. A node that dies mid-attempt leaves
//! its claims to expire: another node (or this one, restarted) attempts
//! them again with the same `webhook-id`. Delivery is at least once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use unimsg_proto::hooks::{AlertKind, SecurityAlertData};
use unimsg_store::{AttemptOutcome, AttemptResult, ClaimedDelivery, WebhookRow};

use super::sign::{self, HookSecret};
use super::{HookRequest, HookResponse, HookTransport, TransportError};
use crate::Core;
use crate::audit::AuditRecord;
use crate::error::{CoreError, Result};

/// How many claims of one round per allowed attempt in flight.
const CLAIM_FACTOR: usize = 4;
/// Rounds of one endpoint that run at once.
const ROUNDS: usize = 4;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The body of a webhook request.
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
    data: &'a RawValue,
}

/// A worker running on this node.
struct Worker {
    /// The endpoint as the dispatcher last read it; each round uses the
    /// latest (a new URL or secret takes effect at the next round), and
    /// `None` (disabled or deleted) stops the worker at its next round.
    endpoint: Arc<parking_lot::RwLock<Option<WebhookRow>>>,
    /// The endpoint got new work while the worker ran: it goes round once
    /// more.
    again: bool,
}

/// The workers running on this node, by endpoint.
type Running = Arc<parking_lot::Mutex<HashMap<String, Worker>>>;

impl Core {
    /// Runs the dispatcher until the task is dropped. `transport` makes
    /// the requests.
    pub async fn run_webhooks(self: Arc<Self>, transport: Arc<dyn HookTransport>) {
        let running: Running = Arc::default();
        let poll = Duration::from_millis(self.config.hooks.poll_interval_ms.max(10));
        let mut last_prune: Option<Instant> = None;
        let mut last_gauge: Option<Instant> = None;
        loop {
            let mut ids = Vec::new();
            match self.store.webhooks().await {
                Ok(endpoints) => {
                    *self.hook_interest.write() = super::Interest::of(&endpoints);
                    ids = endpoints.iter().map(|e| e.webhook_id.clone()).collect();
                    self.sync_workers(&running, &transport, endpoints);
                }
                Err(error) => tracing::warn!(%error, "cannot read the webhook endpoints"),
            }
            if last_gauge.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                last_gauge = Some(Instant::now());
                self.outbox_gauges(&ids).await;
            }
            if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                last_prune = Some(Instant::now());
                self.prune_outbox().await;
            }
            tokio::select! {
                () = self.hooks_wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Hands every running worker its endpoint as just read (or stops it
    /// at its next round) and starts a worker for each enabled endpoint
    /// that has none.
    fn sync_workers(
        self: &Arc<Self>,
        running: &Running,
        transport: &Arc<dyn HookTransport>,
        endpoints: Vec<WebhookRow>,
    ) {
        let mut map = running.lock();
        let mut enabled: HashMap<String, WebhookRow> = endpoints
            .into_iter()
            .filter(|e| e.enabled)
            .map(|e| (e.webhook_id.clone(), e))
            .collect();
        for (id, worker) in map.iter_mut() {
            let latest = enabled.remove(id);
            worker.again = latest.is_some();
            *worker.endpoint.write() = latest;
        }
        for (id, endpoint) in enabled {
            let row = Arc::new(parking_lot::RwLock::new(Some(endpoint)));
            map.insert(
                id.clone(),
                Worker {
                    endpoint: row.clone(),
                    again: false,
                },
            );
            self.spawn_worker(running.clone(), transport.clone(), id, row);
        }
    }

    fn spawn_worker(
        self: &Arc<Self>,
        running: Running,
        transport: Arc<dyn HookTransport>,
        id: String,
        row: Arc<parking_lot::RwLock<Option<WebhookRow>>>,
    ) {
        let core = self.clone();
        tokio::spawn(async move {
            // Rounds overlap (one claims and records while another's
            // attempts are out); the permits keep the endpoint's attempts
            // in flight at `max_in_flight`.
            let permits = Semaphore::new(core.config.hooks.max_in_flight.max(1));
            loop {
                let rounds = (0..ROUNDS).map(|_| async {
                    loop {
                        let Some(endpoint) = row.read().clone() else {
                            return;
                        };
                        match core.deliver_round(&*transport, &endpoint, &permits).await {
                            Ok(true) => {}
                            Ok(false) => return,
                            Err(error) => {
                                tracing::warn!(%error, webhook_id = %id, "webhook round failed");
                                return;
                            }
                        }
                    }
                });
                futures_util::future::join_all(rounds).await;
                let mut map = running.lock();
                match map.get_mut(&id) {
                    Some(worker) if worker.again => worker.again = false,
                    _ => {
                        map.remove(&id);
                        return;
                    }
                }
            }
        });
    }

    /// One claim and its attempts; `true` when the claim came back full
    /// (there may be more due right now).
    async fn deliver_round(
        &self,
        transport: &dyn HookTransport,
        endpoint: &WebhookRow,
        permits: &Semaphore,
    ) -> Result<bool> {
        let hooks = &self.config.hooks;
        let in_flight = hooks.max_in_flight.max(1);
        let batch = in_flight * CLAIM_FACTOR;
        let timeout = Duration::from_millis(hooks.timeout_ms.max(1));
        let now = self.clock.now();
        // Long enough for every claimed attempt to wait its turn for a
        // permit and time out.
        let lease = timeout * (CLAIM_FACTOR * ROUNDS) as u32 + Duration::from_secs(10);
        let claimed = self
            .store
            .claim_deliveries(
                &endpoint.webhook_id,
                now,
                now + lease,
                u32::try_from(batch).unwrap_or(u32::MAX),
            )
            .await?;
        if claimed.is_empty() {
            return Ok(false);
        }
        let full = claimed.len() == batch;
        let mut secrets = vec![self.open_secret(&endpoint.webhook_id, &endpoint.secret)?];
        if let Some((previous, until)) = &endpoint.previous_secret
            && *until > now
        {
            secrets.push(self.open_secret(&endpoint.webhook_id, previous)?);
        }
        let results: Vec<AttemptResult> = futures_util::stream::iter(claimed)
            .map(|c| async {
                // The semaphore is never closed.
                let _permit = permits.acquire().await;
                self.attempt(transport, endpoint, &secrets, c, timeout)
                    .await
            })
            .buffer_unordered(in_flight)
            .collect()
            .await;
        let failing_since = self
            .store
            .finish_deliveries(&endpoint.webhook_id, results, self.clock.now())
            .await?;
        if let Some(since) = failing_since {
            let limit = time::Duration::hours(hooks.disable_after_hours as i64);
            if self.clock.now() - since >= limit {
                self.disable_failing(endpoint).await?;
                return Ok(false);
            }
        }
        Ok(full)
    }

    /// The request body of one event for one endpoint.
    async fn body(&self, endpoint: &WebhookRow, c: &ClaimedDelivery) -> Result<Vec<u8>> {
        let event = &c.event;
        let mut data = event.data.clone();
        if endpoint.include_content
            && let Some(message_id) = &event.message_id
            && let Some(message) = self.store.message(message_id).await?
        {
            let plain = crate::render::open_message(&self.keyring, &message)
                .map_err(|e| CoreError::Internal(format!("cannot open a message: {e}")))?;
            let content: serde_json::Value = serde_json::from_slice(&plain)
                .map_err(|e| CoreError::Internal(format!("stored content is not JSON: {e}")))?;
            let mut map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&data).map_err(|e| CoreError::Internal(e.to_string()))?;
            map.insert("content".into(), content);
            data = serde_json::to_string(&map).map_err(|e| CoreError::Internal(e.to_string()))?;
        }
        let raw = RawValue::from_string(data)
            .map_err(|e| CoreError::Internal(format!("a stored webhook event is not JSON: {e}")))?;
        serde_json::to_vec(&Envelope {
            kind: event.kind.as_str(),
            timestamp: event.at,
            data: &raw,
        })
        .map_err(|e| CoreError::Internal(e.to_string()))
    }

    async fn attempt(
        &self,
        transport: &dyn HookTransport,
        endpoint: &WebhookRow,
        secrets: &[HookSecret],
        claimed: ClaimedDelivery,
        timeout: Duration,
    ) -> AttemptResult {
        let (seq, attempt) = (claimed.event.seq, claimed.attempt);
        let body = match self.body(endpoint, &claimed).await {
            Ok(b) => b,
            Err(error) => {
                tracing::error!(%error, event_id = %claimed.event.event_id, "cannot build a webhook body");
                return AttemptResult {
                    event_seq: seq,
                    attempt,
                    outcome: self.next_attempt(claimed.attempt, None),
                    status: None,
                    error: Some("the event could not be built".into()),
                };
            }
        };
        let ts = self.clock.now().unix_timestamp();
        let mut headers = sign::headers(secrets, &claimed.event.event_id, ts, &body);
        headers.push(("content-type", "application/json".into()));
        let request = HookRequest {
            url: endpoint.url.clone(),
            headers,
            body,
            timeout,
        };
        let answer = transport.post(request).await;
        let (result, label) = match answer {
            Ok(HookResponse { status, .. }) if (200..300).contains(&status) => {
                let waited = (self.clock.now() - claimed.event.at).as_seconds_f64();
                metrics::histogram!("unimsg_webhook_delivery_seconds").record(waited.max(0.0));
                (
                    AttemptResult {
                        event_seq: seq,
                        attempt,
                        outcome: AttemptOutcome::Succeeded,
                        status: Some(status),
                        error: None,
                    },
                    "success",
                )
            }
            Ok(HookResponse {
                status,
                retry_after,
                ..
            }) => (
                AttemptResult {
                    event_seq: seq,
                    attempt,
                    outcome: self.next_attempt(claimed.attempt, retry_after),
                    status: Some(status),
                    error: None,
                },
                "http_error",
            ),
            Err(e) => {
                let label = match e {
                    TransportError::Timeout => "timeout",
                    TransportError::Connect(_) => "connect",
                    TransportError::Forbidden(_) => "forbidden",
                    TransportError::Other(_) => "error",
                };
                (
                    AttemptResult {
                        event_seq: seq,
                        attempt,
                        outcome: self.next_attempt(claimed.attempt, None),
                        status: None,
                        error: Some(e.to_string()),
                    },
                    label,
                )
            }
        };
        metrics::counter!("unimsg_webhook_attempts_total", "result" => label).increment(1);
        result
    }

    /// After failed attempt number `attempt` (from 1): when to try again,
    /// or `Failed` once the schedule is used up.
    fn next_attempt(&self, attempt: u32, retry_after: Option<Duration>) -> AttemptOutcome {
        let schedule = &self.config.hooks.retry_schedule_secs;
        let Some(&wait) = schedule.get(attempt.saturating_sub(1) as usize) else {
            return AttemptOutcome::Failed;
        };
        let wait = jittered(Duration::from_secs(wait));
        let wait = retry_after.map_or(wait, |r| wait.max(r.min(MAX_RETRY_AFTER)));
        AttemptOutcome::RetryAt(self.clock.now() + wait)
    }

    /// Disables an endpoint whose every attempt failed for
    /// `hooks.disable_after_hours`: audited, logged and announced as a
    /// `security.alert`. Its pending deliveries stay for re-enabling.
    async fn disable_failing(&self, endpoint: &WebhookRow) -> Result<()> {
        let hours = self.config.hooks.disable_after_hours;
        let reason = format!("every attempt failed for {hours} hours");
        self.store
            .disable_webhook(&endpoint.webhook_id, &reason, self.clock.now())
            .await?;
        tracing::warn!(webhook_id = %endpoint.webhook_id, url = %endpoint.url, hours,
            "disabled a webhook endpoint that kept failing; re-enable it with PATCH {{\"enabled\": true}}");
        self.audit(AuditRecord {
            action: "webhook.disabled".into(),
            actor_kind: "system".into(),
            actor: "-".into(),
            outcome: "ok".into(),
            target: Some(endpoint.webhook_id.clone()),
            detail: Some(reason.clone()),
            ..AuditRecord::default()
        })
        .await;
        self.refresh_hook_interest().await?;
        self.alert(SecurityAlertData {
            alert: AlertKind::WebhookDisabled,
            user_id: None,
            ip: None,
            detail: Some(format!("{}: {reason}", endpoint.webhook_id)),
        })
        .await;
        Ok(())
    }

    /// `unimsg_webhook_pending{webhook_id}`: the outbox depth of each
    /// endpoint (0 for one with nothing pending).
    async fn outbox_gauges(&self, endpoints: &[String]) {
        match self.store.pending_deliveries().await {
            Ok(pending) => {
                for id in endpoints {
                    let n = pending.iter().find(|(w, _)| w == id).map_or(0, |(_, n)| *n);
                    metrics::gauge!("unimsg_webhook_pending", "webhook_id" => id.clone())
                        .set(n as f64);
                }
            }
            Err(error) => tracing::debug!(%error, "cannot count pending webhook deliveries"),
        }
    }

    async fn prune_outbox(&self) {
        let days = self.config.hooks.retention_days as i64;
        let before = self.clock.now() - time::Duration::days(days);
        match self.store.prune_hook_events(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "pruned delivered webhook events"),
            Err(error) => tracing::warn!(%error, "cannot prune the webhook outbox"),
        }
    }
}

/// `wait` ± 20 %, so that many failed deliveries do not all come back at
/// the same instant.
fn jittered(wait: Duration) -> Duration {
    let [a, b] = crate::keys::random_bytes::<2>().unwrap_or([0x80, 0]);
    let unit = f64::from(u16::from_be_bytes([a, b])) / f64::from(u16::MAX); // 0..=1
    wait.mul_f64(0.8 + 0.4 * unit)
}
