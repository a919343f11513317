//! Hooks: webhooks delivered from a durable outbox, and the synchronous
//! before-send hook.
//!
//! The core decides what is sent and signs it; the HTTP itself goes
//! through a [`HookTransport`] (the `unimsg-hooks` crate, with reqwest),
//! so that the core stays free of HTTP.
//!
//! - [`sign`] — Standard Webhooks 1.0 signatures and `whsec_` secrets
//! - [`target`] — the SSRF guard
//! - [`endpoints`] — the admin API's endpoint and delivery operations
//! - [`dispatch`] — the dispatcher: claims, attempts, back-off, disabling
//! - [`before_send`] — the check of every user message before it is stored

pub mod before_send;
pub mod dispatch;
pub mod endpoints;
pub mod sign;
pub mod target;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use unimsg_proto::MessageId;
use unimsg_proto::hooks::{EventFilter, HookEventType};
use unimsg_store::{HookDraft, WebhookRow};

use crate::Core;

/// One POST of a hook.
#[derive(Debug, Clone)]
pub struct HookRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

/// What the receiver answered. The body is read up to
/// [`MAX_RESPONSE_BYTES`]; the rest is dropped.
#[derive(Debug, Clone)]
pub struct HookResponse {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// How much of a receiver's answer is read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why an attempt got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    /// The SSRF guard refused the address the host resolved to.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Other(String),
}

/// Sends hook requests. Implementations apply the SSRF guard to every
/// address they connect to (unless private targets are allowed), keep
/// connections alive and honour [`HookRequest::timeout`] for the whole
/// exchange.
#[async_trait]
pub trait HookTransport: Send + Sync {
    async fn post(&self, request: HookRequest) -> Result<HookResponse, TransportError>;
}

/// Which event types some enabled endpoint subscribes to, so that
/// nothing is written to the outbox for events nobody wants. Refreshed
/// by the dispatcher every `hooks.poll_interval_ms` and at once after a
/// change on this node; another node's change is seen by the next
/// refresh.
#[derive(Debug, Default)]
pub(crate) struct Interest {
    all: bool,
    kinds: HashSet<HookEventType>,
}

impl Interest {
    fn of(endpoints: &[WebhookRow]) -> Self {
        let mut interest = Interest::default();
        for e in endpoints.iter().filter(|e| e.enabled) {
            match &e.events {
                EventFilter::All => interest.all = true,
                EventFilter::Only(kinds) => interest.kinds.extend(kinds.iter().copied()),
            }
        }
        interest
    }

    fn wants(&self, kind: HookEventType) -> bool {
        self.all || self.kinds.contains(&kind)
    }
}

/// A new outbox event id: `evt_` and a time-ordered UUID.
pub(crate) fn event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

impl Core {
    /// Re-reads which event types are wanted.
    pub async fn refresh_hook_interest(&self) -> crate::Result<()> {
        let endpoints = self.store.webhooks().await?;
        *self.hook_interest.write() = Interest::of(&endpoints);
        Ok(())
    }

    /// Whether an enabled endpoint subscribes to `kind`.
    pub(crate) fn hook_wanted(&self, kind: HookEventType) -> bool {
        self.hook_interest.read().wants(kind)
    }

    /// The outbox event for `data`, if an endpoint wants `kind`.
    pub(crate) fn hook_draft<T: Serialize>(
        &self,
        kind: HookEventType,
        data: &T,
        message_id: Option<MessageId>,
    ) -> Option<HookDraft> {
        if !self.hook_wanted(kind) {
            return None;
        }
        let data = match serde_json::to_string(data) {
            Ok(d) => d,
            Err(error) => {
                tracing::error!(%error, kind = kind.as_str(), "cannot encode a webhook event");
                return None;
            }
        };
        Some(HookDraft {
            event_id: event_id(),
            kind,
            data,
            message_id,
            at: self.clock.now(),
        })
    }

    /// Puts an event that reports no stored change (a presence change, a
    /// security alert) in the outbox, if an endpoint wants it, and wakes
    /// this node's dispatcher. A failure is logged, not returned. Events
    /// that report a change are written in its transaction instead: the
    /// store call takes their [`HookDraft`]s.
    pub(crate) async fn emit<T: Serialize>(&self, kind: HookEventType, data: &T) {
        let Some(draft) = self.hook_draft(kind, data, None) else {
            return;
        };
        self.enqueue_hooks(vec![draft]).await;
    }

    pub(crate) async fn enqueue_hooks(&self, drafts: Vec<HookDraft>) {
        if drafts.is_empty() {
            return;
        }
        match self.store.enqueue_hook_events(drafts).await {
            Ok(()) => self.hooks_wake.notify_one(),
            Err(error) => tracing::error!(%error, "cannot write webhook events to the outbox"),
        }
    }

    /// Wakes the dispatcher after this node committed outbox events.
    pub(crate) fn wake_dispatcher(&self) {
        self.hooks_wake.notify_one();
    }
}
