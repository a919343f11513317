//! The one path every relationship and group change takes.
//!
//! A change is written by the store together with the inbox events it
//! causes (one transaction), then [`Core::changed`] publishes those events
//! live and announces the change to in-process listeners. A later webhook
//! feature subscribes here ([`Core::subscribe_changes`]) instead of
//! touching the friend or group code.

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::broadcast;
use unimsg_proto::{EventData, EventType, UserId};
use unimsg_store::{EventDraft, StoredEvent};

use crate::Core;
use crate::error::{CoreError, Result};

/// A relationship or group change.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The inbox event type it produces (`friend.request`, `friend.changed`,
    /// `block.changed`, `group.changed`).
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Who acted.
    pub actor: UserId,
    /// The event's data, as the inbox event carries it.
    pub data: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl Change {
    /// A change by `actor` whose event carries `data` (its type follows).
    pub fn new<T: EventData>(actor: &UserId, data: &T, at: OffsetDateTime) -> Result<Self> {
        let data = serde_json::to_value(data)
            .map_err(|e| CoreError::Internal(format!("cannot encode a change: {e}")))?;
        Ok(Self {
            kind: T::TYPE,
            actor: actor.clone(),
            data,
            at,
        })
    }

    /// The inbox events this change puts in each of `users`' inboxes.
    pub fn drafts(&self, users: &[&UserId]) -> Vec<EventDraft> {
        let data = self.data.to_string();
        users
            .iter()
            .map(|u| EventDraft {
                user_id: (*u).clone(),
                kind: self.kind,
                data: data.clone(),
                at: self.at,
            })
            .collect()
    }
}

/// Listeners of changes; created with the core.
pub(crate) fn channel() -> broadcast::Sender<Arc<Change>> {
    broadcast::channel(1024).0
}

impl Core {
    /// Publishes the committed inbox events of a change and announces it.
    pub(crate) async fn changed(&self, change: Change, events: &[StoredEvent]) {
        self.publish(events).await;
        metrics::counter!("unimsg_changes_total", "type" => change.kind.as_str()).increment(1);
        // No listener is fine: the inbox events are the durable record.
        let _ = self.changes.send(Arc::new(change));
    }

    /// Every relationship and group change from now on, for webhooks and
    /// other integrations. A slow listener misses changes (`Lagged`), it
    /// never slows the core down.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }
}
