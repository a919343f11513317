//! QR login tickets shared by every node: a ticket created on one node can
//! be waited on from a second and confirmed from a third.
//!
//! A ticket is a JSON value at `{prefix}qr:t:{id}`, with lookups by code
//! (`qr:c:`) and by the hash of its page secret (`qr:p:`), all expiring a
//! minute after the ticket
//! (late listeners still learn the outcome). A change is compare-and-set:
//! read, apply, and write only if the value is still the one read, in one
//! script that also publishes the change's event on `{prefix}qr:e:{id}`,
//! so two nodes confirming at once cannot both win. Listeners subscribe to
//! that channel; events carry the new session's tokens to the waiting
//! page's node (keep Redis on a private network, as PostgreSQL).

use std::sync::Arc;

use async_trait::async_trait;
use redis::Script;
use time::OffsetDateTime;
use tokio::sync::broadcast;
use unimsg_core::CoreError;
use unimsg_core::qr::{QrEvent, QrTickets, Ticket, TicketChange};

use crate::Cluster;

/// Writes ARGV[2] at KEYS[1] if it still holds ARGV[1], keeping its
/// expiry, and publishes ARGV[3] (when not empty) on KEYS[2].
const SWAP: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
if ARGV[3] ~= '' then redis.call('PUBLISH', KEYS[2], ARGV[3]) end
return 1
";

fn unavailable(e: impl std::fmt::Display) -> CoreError {
    CoreError::Unavailable(format!("Redis: {e}"))
}

/// QR login tickets in Redis.
pub struct RedisTickets {
    cluster: Arc<Cluster>,
    swap: Script,
}

impl std::fmt::Debug for RedisTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisTickets")
    }
}

impl RedisTickets {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self {
            cluster,
            swap: Script::new(SWAP),
        }
    }

    fn ticket_key(&self, id: &str) -> String {
        self.cluster.key(&format!("qr:t:{id}"))
    }

    async fn raw(&self, id: &str) -> unimsg_core::Result<Option<String>> {
        let mut conn = self.cluster.conn();
        redis::cmd("GET")
            .arg(self.ticket_key(id))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn load(&self, id: &str) -> unimsg_core::Result<Option<Ticket>> {
        match self.raw(id).await? {
            Some(raw) => serde_json::from_str(&raw)
                .map(Some)
                .map_err(|e| CoreError::Internal(format!("bad ticket in Redis: {e}"))),
            None => Ok(None),
        }
    }

    async fn lookup(&self, index: &str) -> unimsg_core::Result<Option<Ticket>> {
        let mut conn = self.cluster.conn();
        let id: Option<String> = redis::cmd("GET")
            .arg(self.cluster.key(index))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match id {
            Some(id) => self.load(&id).await,
            None => Ok(None),
        }
    }
}

/// Milliseconds a ticket's keys live: until a minute after it expires.
fn keep_ms(ticket: &Ticket) -> i64 {
    let until = ticket.expires_at + time::Duration::minutes(1);
    let ms = (until - OffsetDateTime::now_utc()).whole_milliseconds();
    i64::try_from(ms).unwrap_or(i64::MAX).max(1)
}

#[async_trait]
impl QrTickets for RedisTickets {
    async fn open_for_page(
        &self,
        page_hash: &str,
        now: OffsetDateTime,
    ) -> unimsg_core::Result<Option<Ticket>> {
        Ok(self
            .lookup(&format!("qr:p:{page_hash}"))
            .await?
            .filter(|t| t.state.is_open() && t.expires_at > now))
    }

    async fn insert(&self, ticket: Ticket) -> unimsg_core::Result<()> {
        let json =
            serde_json::to_string(&ticket).map_err(|e| CoreError::Internal(e.to_string()))?;
        let ms = keep_ms(&ticket);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .pset_ex(self.ticket_key(&ticket.ticket_id), json, ms as u64)
            .ignore()
            .pset_ex(
                self.cluster.key(&format!("qr:c:{}", ticket.code)),
                &ticket.ticket_id,
                ms as u64,
            )
            .ignore()
            .pset_ex(
                self.cluster.key(&format!("qr:p:{}", ticket.page_hash)),
                &ticket.ticket_id,
                ms as u64,
            )
            .ignore();
        let mut conn = self.cluster.conn();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    async fn get(&self, ticket_id: &str) -> unimsg_core::Result<Option<Ticket>> {
        self.load(ticket_id).await
    }

    async fn by_code(&self, code: &str) -> unimsg_core::Result<Option<Ticket>> {
        self.lookup(&format!("qr:c:{code}")).await
    }

    async fn update(
        &self,
        ticket_id: &str,
        change: &mut TicketChange<'_>,
    ) -> unimsg_core::Result<Ticket> {
        for _ in 0..16 {
            let raw = self
                .raw(ticket_id)
                .await?
                .ok_or_else(|| CoreError::NotFound("ticket not found".into()))?;
            let mut ticket: Ticket = serde_json::from_str(&raw)
                .map_err(|e| CoreError::Internal(format!("bad ticket in Redis: {e}")))?;
            let event = change(&mut ticket)?;
            let next =
                serde_json::to_string(&ticket).map_err(|e| CoreError::Internal(e.to_string()))?;
            let announce = match &event {
                Some(e) => {
                    serde_json::to_string(e).map_err(|e| CoreError::Internal(e.to_string()))?
                }
                None => String::new(),
            };
            let mut conn = self.cluster.conn();
            let swapped: i64 = self
                .swap
                .key(self.ticket_key(ticket_id))
                .key(self.cluster.key(&format!("qr:e:{ticket_id}")))
                .arg(&raw)
                .arg(&next)
                .arg(&announce)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if swapped == 1 {
                return Ok(ticket);
            }
            // Someone else changed it meanwhile: decide again on the new state.
        }
        Err(CoreError::Unavailable(
            "the ticket keeps changing; try again".into(),
        ))
    }

    async fn subscribe(
        &self,
        ticket_id: &str,
    ) -> unimsg_core::Result<Option<broadcast::Receiver<QrEvent>>> {
        if self.raw(ticket_id).await?.is_none() {
            return Ok(None);
        }
        let (rx, fresh) = {
            let mut listeners = self
                .cluster
                .tickets
                .lock()
                .map_err(|_| CoreError::Internal("ticket listeners poisoned".into()))?;
            match listeners.get(ticket_id) {
                Some(tx) => (tx.subscribe(), false),
                None => {
                    let (tx, rx) = broadcast::channel(8);
                    listeners.insert(ticket_id.to_owned(), tx);
                    (rx, true)
                }
            }
        };
        let channel = self.cluster.key(&format!("qr:e:{ticket_id}"));
        if fresh {
            if let Err(error) = self.cluster.subscribe(vec![channel]).await {
                // Not listening after all: let the next listener try again.
                if let Ok(mut listeners) = self.cluster.tickets.lock() {
                    listeners.remove(ticket_id);
                }
                return Err(unavailable(error));
            }
        } else {
            self.cluster.barrier().await.map_err(unavailable)?;
        }
        Ok(Some(rx))
    }
}

/// A ticket's event from whichever node changed it.
pub(crate) fn on_event(cluster: &Cluster, ticket_id: &str, payload: &[u8]) {
    let Ok(event) = serde_json::from_slice::<QrEvent>(payload) else {
        tracing::warn!("ignoring a malformed ticket event");
        return;
    };
    if let Ok(listeners) = cluster.tickets.lock()
        && let Some(tx) = listeners.get(ticket_id)
    {
        let _ = tx.send(event);
    }
}

/// The channels of the tickets listened to here.
pub(crate) fn local_channels(cluster: &Cluster) -> Vec<String> {
    match cluster.tickets.lock() {
        Ok(listeners) => listeners
            .keys()
            .map(|id| cluster.key(&format!("qr:e:{id}")))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Drops listeners nobody holds any more and unsubscribes their channels.
/// The unsubscribes are queued under the lock, so a new listener of the
/// same ticket (which subscribes after taking the lock) is never undone.
pub(crate) fn forget_idle(cluster: &Cluster) {
    let Ok(mut listeners) = cluster.tickets.lock() else {
        return;
    };
    let idle: Vec<String> = listeners
        .iter()
        .filter(|(_, tx)| tx.receiver_count() == 0)
        .map(|(id, _)| id.clone())
        .collect();
    for id in idle {
        listeners.remove(&id);
        cluster.unsubscribe(cluster.key(&format!("qr:e:{id}")));
    }
}
