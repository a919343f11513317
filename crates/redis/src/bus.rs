//! The cross-node bus on Redis pub/sub, routed by user, and presence.
//!
//! A node subscribes to `{prefix}u:{user_id}` while the user has a
//! connection on it, and publishes each committed event on its user's
//! channel; the node that committed also hands it to its own hub at once
//! and ignores its own publication when it comes back. Payloads are a small
//! JSON envelope around the event's wire JSON, which is carried verbatim
//! (rendered once, on the committing node).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use unimsg_core::bus::{BroadcastNote, Bus, BusError, Departure, NODE_REPORT_KEPT, PresenceChange};
use unimsg_core::hub::Delivery;
use unimsg_proto::admin::NodeStatus;
use unimsg_proto::{EventType, Platform, Seq, SessionId, UserId};

use crate::{Cluster, RedisError};

/// Users connected to this node: how many connections per platform.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    users: HashMap<UserId, HashMap<Platform, usize>>,
}

/// One event between nodes.
#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    /// The node that committed it.
    #[serde(borrow)]
    o: &'a str,
    s: u64,
    k: &'a str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<&'a str>,
    #[serde(borrow)]
    e: &'a RawValue,
}

/// A broadcast committed on node `o` (`bus::BroadcastNote`): its bseq,
/// its time in unix nanoseconds and its rendered data.
#[derive(Serialize, Deserialize)]
struct BroadcastEnvelope<'a> {
    #[serde(borrow)]
    o: &'a str,
    b: u64,
    t: i64,
    #[serde(borrow)]
    d: &'a RawValue,
}

fn bus_error(e: impl std::fmt::Display) -> BusError {
    BusError(e.to_string())
}

/// The Redis bus of one node.
#[derive(Debug, Clone)]
pub struct RedisBus {
    cluster: Arc<Cluster>,
}

impl RedisBus {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }
}

fn encode(node: &str, d: &Delivery) -> Result<Vec<u8>, BusError> {
    let json = std::str::from_utf8(&d.json).map_err(bus_error)?;
    let raw: &RawValue = serde_json::from_str(json).map_err(bus_error)?;
    serde_json::to_vec(&Envelope {
        o: node,
        s: d.seq.0,
        k: d.kind.as_str(),
        r: d.revokes.as_ref().map(SessionId::as_str),
        e: raw,
    })
    .map_err(bus_error)
}

/// An event published by another node for a user connected here.
pub(crate) fn on_event(cluster: &Cluster, user: &str, payload: &[u8]) {
    let Ok(env) = serde_json::from_slice::<Envelope<'_>>(payload) else {
        tracing::warn!("ignoring a malformed bus message");
        return;
    };
    if env.o == cluster.node_id() {
        return;
    }
    let (Ok(user), Some(kind)) = (UserId::parse(user), EventType::parse(env.k)) else {
        return;
    };
    let revokes = match env.r.map(SessionId::parse) {
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => return,
        None => None,
    };
    cluster.hub.deliver(Arc::new(Delivery {
        user,
        seq: Seq(env.s),
        kind,
        json: Bytes::copy_from_slice(env.e.get().as_bytes()),
        revokes,
    }));
}

/// A broadcast another node committed: placed in the local streams, or,
/// if the message cannot be read, announced to every local connection so
/// that each reads its stream.
pub(crate) fn on_broadcast(cluster: &Cluster, payload: &[u8]) {
    let Ok(env) = serde_json::from_slice::<BroadcastEnvelope<'_>>(payload) else {
        cluster.hub.broadcast();
        return;
    };
    if env.o == cluster.node_id() {
        return;
    }
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(env.t)) {
        Ok(at) => cluster.hub.remote_broadcast(BroadcastNote {
            bseq: env.b,
            at,
            data: env.d.to_owned(),
        }),
        Err(_) => cluster.hub.broadcast(),
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, deliveries: Vec<Arc<Delivery>>) -> Result<(), BusError> {
        let node = self.cluster.node_id();
        let mut out = Vec::with_capacity(deliveries.len());
        for d in &deliveries {
            out.push((self.cluster.key(&format!("u:{}", d.user)), encode(node, d)?));
        }
        // Local connections first: they need no round trip.
        for d in deliveries {
            self.cluster.hub.deliver(d);
        }
        self.cluster.publisher.offer(out);
        Ok(())
    }

    async fn broadcast(&self, note: &BroadcastNote) -> Result<(), BusError> {
        let payload = serde_json::to_vec(&BroadcastEnvelope {
            o: self.cluster.node_id(),
            b: note.bseq,
            t: i64::try_from(note.at.unix_timestamp_nanos()).map_err(bus_error)?,
            d: &note.data,
        })
        .map_err(bus_error)?;
        let mut conn = self.cluster.conn();
        let started = tokio::time::Instant::now();
        let sent = redis::cmd("PUBLISH")
            .arg(self.cluster.key("broadcast"))
            .arg(payload)
            .query_async::<()>(&mut conn)
            .await;
        crate::observe(crate::BusCall::Broadcast, started.elapsed());
        sent.map_err(bus_error)
    }

    async fn attach(&self, user: &UserId, platform: &Platform) -> Result<PresenceChange, BusError> {
        let (first, platforms) = {
            let mut routes = self
                .cluster
                .routes
                .lock()
                .map_err(|_| BusError("routes poisoned".into()))?;
            let first = !routes.users.contains_key(user);
            let entry = routes.users.entry(user.clone()).or_default();
            let count = entry.entry(platform.clone()).or_default();
            *count += 1;
            // Presence changes only when a platform appears on this node.
            let new_platform = *count == 1;
            (first, new_platform.then(|| platform_list(entry)))
        };
        if first {
            // Every attach of a user subscribes through the same ordered
            // queue, so a second connection's attach resolves only after
            // the first's subscription is confirmed.
            self.cluster
                .subscribe(vec![self.cluster.key(&format!("u:{user}"))])
                .await
                .map_err(bus_error)?;
        } else {
            self.cluster.barrier().await.map_err(bus_error)?;
        }
        let Some(platforms) = platforms else {
            return Ok(PresenceChange::Unchanged);
        };
        if !first {
            write_presence(&self.cluster, user, &platforms)
                .await
                .map_err(bus_error)?;
            return Ok(PresenceChange::Unchanged);
        }
        // The user arrives on this node: online if no other node has them.
        let others = swap_presence(&self.cluster, user, &platforms)
            .await
            .map_err(bus_error)?;
        Ok(if others == 0 {
            PresenceChange::Online
        } else {
            PresenceChange::Unchanged
        })
    }

    fn detach(&self, user: &UserId, platform: &Platform) -> Departure {
        let unchanged = || -> Departure { Box::pin(std::future::ready(PresenceChange::Unchanged)) };
        let Ok(mut routes) = self.cluster.routes.lock() else {
            return unchanged();
        };
        let Some(entry) = routes.users.get_mut(user) else {
            return unchanged();
        };
        let Some(n) = entry.get_mut(platform) else {
            return unchanged();
        };
        *n = n.saturating_sub(1);
        if *n > 0 {
            // Another connection of this platform remains: nothing changes.
            return unchanged();
        }
        entry.remove(platform);
        let platforms = platform_list(entry);
        if platforms.is_empty() {
            routes.users.remove(user);
            // Queued under the lock: ordered before any later subscribe.
            self.cluster
                .unsubscribe(self.cluster.key(&format!("u:{user}")));
        }
        drop(routes);
        let cluster = self.cluster.clone();
        let user = user.clone();
        // Run whether or not the caller waits for the answer.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let change = if platforms.is_empty() {
                // The user leaves this node: offline if no other node has them.
                match swap_presence(&cluster, &user, &platforms).await {
                    Ok(0) => PresenceChange::Offline,
                    Ok(_) => PresenceChange::Unchanged,
                    Err(error) => {
                        tracing::debug!(%error, "presence not updated");
                        PresenceChange::Unchanged
                    }
                }
            } else {
                if let Err(error) = write_presence(&cluster, &user, &platforms).await {
                    tracing::debug!(%error, "presence not updated");
                }
                PresenceChange::Unchanged
            };
            let _ = tx.send(change);
        });
        Box::pin(async move { rx.await.unwrap_or(PresenceChange::Unchanged) })
    }

    async fn presence(&self, users: &[UserId]) -> Result<Vec<Vec<Platform>>, BusError> {
        let mut pipe = redis::pipe();
        for user in users {
            pipe.hgetall(self.cluster.key(&format!("presence:{user}")));
        }
        let mut conn = self.cluster.conn();
        let started = tokio::time::Instant::now();
        let found = pipe
            .query_async::<Vec<HashMap<String, String>>>(&mut conn)
            .await;
        crate::observe(crate::BusCall::Presence, started.elapsed());
        let found = found.map_err(bus_error)?;
        let now = now_ms();
        Ok(found
            .into_iter()
            .map(|nodes| {
                let mut platforms: Vec<Platform> = nodes
                    .values()
                    .filter_map(|v| v.split_once('|'))
                    .filter(|(until, _)| until.parse::<i64>().is_ok_and(|u| u > now))
                    .flat_map(|(_, list)| list.split(','))
                    .filter(|p| !p.is_empty())
                    .filter_map(|p| Platform::parse(p).ok())
                    .collect();
                platforms.sort();
                platforms.dedup();
                platforms
            })
            .collect())
    }

    async fn report_node(&self, status: &NodeStatus) -> Result<(), BusError> {
        let report = serde_json::to_string(status).map_err(bus_error)?;
        let mut conn = self.cluster.conn();
        redis::cmd("HSET")
            .arg(self.cluster.key("nodes"))
            .arg(&status.node_id)
            .arg(report)
            .query_async::<()>(&mut conn)
            .await
            .map_err(bus_error)
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>, BusError> {
        let key = self.cluster.key("nodes");
        let mut conn = self.cluster.conn();
        let reports: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(bus_error)?;
        let oldest = time::OffsetDateTime::now_utc() - NODE_REPORT_KEPT;
        let mut nodes = Vec::new();
        let mut gone = Vec::new();
        for (node, report) in reports {
            match serde_json::from_str::<NodeStatus>(&report) {
                Ok(status) if status.reported_at >= oldest => nodes.push(status),
                // Silent for too long (by this node's clock).
                Ok(_) => gone.push(node),
                // Another version's report: left to that node, not listed.
                Err(_) => {}
            }
        }
        if !gone.is_empty() {
            let _ = redis::cmd("HDEL")
                .arg(&key)
                .arg(&gone)
                .query_async::<()>(&mut conn)
                .await;
        }
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(nodes)
    }
}

fn platform_list(entry: &HashMap<Platform, usize>) -> Vec<Platform> {
    let mut list: Vec<Platform> = entry.keys().cloned().collect();
    list.sort();
    list
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn presence_value(cluster: &Cluster, platforms: &[Platform]) -> String {
    let until = now_ms() + i64::try_from(cluster.options.presence_ttl.as_millis()).unwrap_or(0);
    let list: Vec<&str> = platforms.iter().map(Platform::as_str).collect();
    format!("{until}|{}", list.join(","))
}

/// Records (or, with no platform left, removes) this node's entry in the
/// user's presence hash.
async fn write_presence(
    cluster: &Cluster,
    user: &UserId,
    platforms: &[Platform],
) -> Result<(), RedisError> {
    let key = cluster.key(&format!("presence:{user}"));
    let mut pipe = redis::pipe();
    if platforms.is_empty() {
        pipe.hdel(&key, cluster.node_id()).ignore();
    } else {
        pipe.hset(&key, cluster.node_id(), presence_value(cluster, platforms))
            .ignore()
            .pexpire(&key, ttl_ms(cluster) * 2)
            .ignore();
    }
    let mut conn = cluster.conn();
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

/// Sets (or, with no platform, removes) this node's entry in the user's
/// presence hash and counts the other nodes' live entries, atomically:
/// of two nodes the user arrives on or leaves at once, exactly one sees
/// no other.
const SWAP_PRESENCE: &str = r"
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local others = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  if entries[i] ~= ARGV[1] then
    local live = tonumber(string.match(entries[i + 1], '^(%d+)|'))
    if live and live > tonumber(ARGV[3]) then
      others = others + 1
    end
  end
end
return others
";

async fn swap_presence(
    cluster: &Cluster,
    user: &UserId,
    platforms: &[Platform],
) -> Result<u64, RedisError> {
    let value = if platforms.is_empty() {
        String::new()
    } else {
        presence_value(cluster, platforms)
    };
    static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SWAP_PRESENCE));
    let mut conn = cluster.conn();
    let others: u64 = SCRIPT
        .key(cluster.key(&format!("presence:{user}")))
        .arg(cluster.node_id())
        .arg(value)
        .arg(now_ms())
        .arg(ttl_ms(cluster) * 2)
        .invoke_async(&mut conn)
        .await?;
    Ok(others)
}

fn ttl_ms(cluster: &Cluster) -> i64 {
    i64::try_from(cluster.options.presence_ttl.as_millis()).unwrap_or(i64::MAX)
}

/// The channels of the users connected here.
pub(crate) fn local_channels(cluster: &Cluster) -> Vec<String> {
    match cluster.routes.lock() {
        Ok(routes) => routes
            .users
            .keys()
            .map(|u| cluster.key(&format!("u:{u}")))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Rewrites every local user's presence entry (after a reconnect, and
/// periodically so that entries stay fresh).
pub(crate) async fn republish_presence(cluster: &Cluster) {
    let snapshot: Vec<(UserId, Vec<Platform>)> = match cluster.routes.lock() {
        Ok(routes) => routes
            .users
            .iter()
            .map(|(u, p)| (u.clone(), platform_list(p)))
            .collect(),
        Err(_) => return,
    };
    for chunk in snapshot.chunks(1000) {
        let mut pipe = redis::pipe();
        for (user, platforms) in chunk {
            let key = cluster.key(&format!("presence:{user}"));
            pipe.hset(&key, cluster.node_id(), presence_value(cluster, platforms))
                .ignore()
                .pexpire(&key, ttl_ms(cluster) * 2)
                .ignore();
        }
        let mut conn = cluster.conn();
        if let Err(error) = pipe.query_async::<()>(&mut conn).await {
            tracing::debug!(%error, "presence refresh failed");
            return;
        }
    }
}

/// Keeps presence fresh and forgets QR listeners nobody holds any more.
pub(crate) async fn refresh_presence(cluster: Weak<Cluster>) {
    let period = match cluster.upgrade() {
        Some(c) => (c.options.presence_ttl / 3).max(Duration::from_millis(100)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        republish_presence(&cluster).await;
        crate::qr::forget_idle(&cluster);
    }
}

/// Removes this node's presence entries (graceful shutdown).
pub(crate) async fn leave(cluster: &Cluster) {
    let users: Vec<UserId> = match cluster.routes.lock() {
        Ok(mut routes) => routes.users.drain().map(|(u, _)| u).collect(),
        Err(_) => return,
    };
    for chunk in users.chunks(1000) {
        let mut pipe = redis::pipe();
        for user in chunk {
            pipe.hdel(cluster.key(&format!("presence:{user}")), cluster.node_id())
                .ignore();
        }
        let mut conn = cluster.conn();
        if let Err(error) = pipe.query_async::<()>(&mut conn).await {
            tracing::debug!(%error, "presence not cleared");
            return;
        }
    }
}
