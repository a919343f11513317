//! The cross-node bus: how committed inbox events reach the node that
//! holds the recipient's connections.
//!
//! On one node the bus is [`LocalBus`], a direct hand-off to the [`Hub`].
//! A cluster plugs in another implementation (Redis) without touching the
//! core: the core only ever calls [`Bus::publish`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use unimsg_proto::admin::NodeStatus;
use unimsg_proto::{Platform, UserId};

use crate::hub::{Delivery, Hub};

#[derive(Debug, thiserror::Error)]
#[error("bus unavailable: {0}")]
pub struct BusError(pub String);

#[async_trait]
pub trait Bus: Send + Sync {
    /// Delivers committed events to their users' live connections, on
    /// whichever node they are. Best effort: a missed live delivery is
    /// recovered by sync, never lost.
    async fn publish(&self, deliveries: Vec<Arc<Delivery>>) -> Result<(), BusError>;

    /// Tells every other node that a broadcast was committed (this node's
    /// connections got it already, placed in their streams), with what
    /// each node needs to place it in its own connections' streams.
    async fn broadcast(&self, note: &BroadcastNote) -> Result<(), BusError>;

    /// A connection of `user` on `platform` opened on this node: from now
    /// on the user's events must reach this node. Resolves once they do,
    /// so that reading the inbox's end afterwards cannot miss an event,
    /// with [`PresenceChange::Online`] if the user had no connection on
    /// any node before. The connection counts even when this fails; a bus
    /// that reconnects routes it again and makes every connection catch up
    /// from the store.
    async fn attach(&self, user: &UserId, platform: &Platform) -> Result<PresenceChange, BusError>;

    /// That connection closed. Never waits: the bookkeeping across nodes
    /// is the returned future, which the caller spawns; it answers
    /// [`PresenceChange::Offline`] if the user has no connection left on
    /// any node.
    fn detach(&self, user: &UserId, platform: &Platform) -> Departure;

    /// Where each user is connected, over all nodes: their live platforms,
    /// sorted and without repeats (empty when offline), in input order.
    async fn presence(&self, users: &[UserId]) -> Result<Vec<Vec<Platform>>, BusError>;

    /// Keeps this node's latest report where every node can read it.
    async fn report_node(&self, status: &NodeStatus) -> Result<(), BusError>;

    /// The latest report of every node that reported in the last
    /// [`NODE_REPORT_KEPT`], by node id.
    async fn nodes(&self) -> Result<Vec<NodeStatus>, BusError>;
}

/// How often each node reports itself ([`Bus::report_node`]).
pub const NODE_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a node's last report is listed after it stopped reporting.
pub const NODE_REPORT_KEPT: std::time::Duration = std::time::Duration::from_secs(60);

/// A committed broadcast as it travels between nodes: its position in the
/// broadcast stream, its time and its rendered data (the same for every
/// user; only the seq differs), so the node that receives it places it
/// with one store read ([`crate::Core::place_remote_broadcasts`]).
#[derive(Debug, Clone)]
pub struct BroadcastNote {
    pub bseq: u64,
    pub at: time::OffsetDateTime,
    pub data: Box<serde_json::value::RawValue>,
}

/// Whether a connection opening or closing changed its user's presence
/// over all nodes (`user.online`, `user.offline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    /// The user's first connection anywhere.
    Online,
    /// The user's last connection anywhere closed.
    Offline,
    Unchanged,
}

/// What [`Bus::detach`] leaves to do.
pub type Departure = Pin<Box<dyn Future<Output = PresenceChange> + Send>>;

/// The single-node bus.
#[derive(Debug)]
pub struct LocalBus {
    hub: Arc<Hub>,
    /// Connections per user, counted under one lock so that the first
    /// and the last are each seen by exactly one connection.
    connected: Mutex<HashMap<UserId, usize>>,
    /// This node's latest report: the only node.
    report: Mutex<Option<NodeStatus>>,
}

impl LocalBus {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self {
            hub,
            connected: Mutex::default(),
            report: Mutex::default(),
        }
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, deliveries: Vec<Arc<Delivery>>) -> Result<(), BusError> {
        for d in deliveries {
            self.hub.deliver(d);
        }
        Ok(())
    }

    async fn broadcast(&self, _note: &BroadcastNote) -> Result<(), BusError> {
        // There is no other node.
        Ok(())
    }

    async fn attach(
        &self,
        user: &UserId,
        _platform: &Platform,
    ) -> Result<PresenceChange, BusError> {
        // The hub registered the connection already; nothing else routes.
        let mut connected = self.connected.lock();
        let count = connected.entry(user.clone()).or_default();
        *count += 1;
        Ok(if *count == 1 {
            PresenceChange::Online
        } else {
            PresenceChange::Unchanged
        })
    }

    fn detach(&self, user: &UserId, _platform: &Platform) -> Departure {
        let mut connected = self.connected.lock();
        let change = match connected.get_mut(user) {
            Some(count) if *count > 1 => {
                *count -= 1;
                PresenceChange::Unchanged
            }
            Some(_) => {
                connected.remove(user);
                PresenceChange::Offline
            }
            None => PresenceChange::Unchanged,
        };
        Box::pin(std::future::ready(change))
    }

    async fn presence(&self, users: &[UserId]) -> Result<Vec<Vec<Platform>>, BusError> {
        Ok(users.iter().map(|u| self.hub.platforms(u)).collect())
    }

    async fn report_node(&self, status: &NodeStatus) -> Result<(), BusError> {
        *self.report.lock() = Some(status.clone());
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>, BusError> {
        Ok(self.report.lock().iter().cloned().collect())
    }
}
