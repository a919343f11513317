//! The cross-node bus: how committed inbox events reach the node that
//! holds the recipient's connections.
//!
//! On one node the bus is [`LocalBus`], a direct hand-off to the [`Hub`].
//! A cluster plugs in another implementation (Redis) without touching the
//! core: the core only ever calls [`Bus::publish`].

use std::sync::Arc;

use async_trait::async_trait;
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

    /// Tells the connections of every other node that a broadcast was
    /// committed (this node's got it already, placed in their streams).
    async fn broadcast(&self) -> Result<(), BusError>;

    /// A connection of `user` on `platform` opened on this node: from now
    /// on the user's events must reach this node. Resolves once they do,
    /// so that reading the inbox's end afterwards cannot miss an event.
    /// The connection counts even when this fails; a bus that reconnects
    /// routes it again and makes every connection catch up from the store.
    async fn attach(&self, user: &UserId, platform: &Platform) -> Result<(), BusError>;

    /// That connection closed. Never waits.
    fn detach(&self, user: &UserId, platform: &Platform);

    /// Where each user is connected, over all nodes: their live platforms,
    /// sorted and without repeats (empty when offline), in input order.
    async fn presence(&self, users: &[UserId]) -> Result<Vec<Vec<Platform>>, BusError>;
}

/// The single-node bus.
#[derive(Debug)]
pub struct LocalBus {
    hub: Arc<Hub>,
}

impl LocalBus {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
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

    async fn broadcast(&self) -> Result<(), BusError> {
        // There is no other node.
        Ok(())
    }

    async fn attach(&self, _user: &UserId, _platform: &Platform) -> Result<(), BusError> {
        // The hub registered the connection already; nothing else routes.
        Ok(())
    }

    fn detach(&self, _user: &UserId, _platform: &Platform) {}

    async fn presence(&self, users: &[UserId]) -> Result<Vec<Vec<Platform>>, BusError> {
        Ok(users.iter().map(|u| self.hub.platforms(u)).collect())
    }
}
