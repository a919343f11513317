//! Cluster mode's shared ephemeral state on Redis.
//!
//! One [`Cluster`] per node holds one multiplexed RESP3 connection
//! (redis-rs's `ConnectionManager`, which reconnects and resubscribes by
//! itself) and hands out the core's pluggable parts:
//!
//! - [`RedisBus`] ([`unimsg_core::bus::Bus`]): events are routed by user.
//!   A node subscribes to the channel `{prefix}u:{user_id}` of each user
//!   connected to it, for as long as one is, and a commit publishes each
//!   event on its user's channel: only the nodes holding that user receive
//!   it, never every node. Broadcasts go to `{prefix}broadcast`.
//! - presence: `{prefix}presence:{user_id}`, a hash of node → platforms
//!   with an expiry per entry, refreshed while connected;
//! - [`RedisNonces`], [`RedisLimits`] and [`RedisTickets`]: replay nonces,
//!   rate-limit and login back-off counters, and QR login tickets, shared
//!   by every node.
//!
//! When the connection drops, live delivery pauses; once it is back (and
//! subscriptions are restored), every local connection reads what it missed
//! from the store, so nothing committed meanwhile is skipped.

mod bus;
mod limits;
mod qr;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use unimsg_core::hub::Hub;

pub use bus::RedisBus;
pub use limits::{RedisLimits, RedisNonces};
pub use qr::RedisTickets;

/// Options of the Redis connection.
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://[:password@]host:port/[db]`, or `rediss://…` for TLS.
    pub url: String,
    /// For `rediss://`: the CA certificates (PEM) the server's certificate
    /// must chain to; `None` trusts the system's roots.
    pub ca_cert: Option<Vec<u8>>,
    /// Prefix of every key and channel, so several deployments can share
    /// one Redis.
    pub prefix: String,
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// How long a node's presence entries outlive it if it dies without
    /// saying goodbye; refreshed every third of this.
    pub presence_ttl: Duration,
    /// How long a command may take before it fails.
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("RedisOptions")
            .field("url", &"[redacted]")
            .field("prefix", &self.prefix)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Why Redis could not be used.
#[derive(Debug)]
pub struct RedisError(pub String);

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redis: {}", self.0)
    }
}

impl std::error::Error for RedisError {}

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        RedisError(e.to_string())
    }
}

/// What the subscription keeper is asked to do, in order.
enum Command {
    Subscribe(Vec<String>, oneshot::Sender<Result<(), RedisError>>),
    Unsubscribe(String),
    /// Answers once every earlier command ran.
    Barrier(oneshot::Sender<Result<(), RedisError>>),
}

/// The node's connection to Redis and the state its parts share.
pub struct Cluster {
    conn: ConnectionManager,
    options: RedisOptions,
    hub: Arc<Hub>,
    /// Serialises SUBSCRIBE / UNSUBSCRIBE so that an unsubscribe queued
    /// before a subscribe of the same channel cannot undo it.
    commands: mpsc::UnboundedSender<Command>,
    pub(crate) routes: Mutex<bus::Routes>,
    pub(crate) publisher: Publisher,
    pub(crate) tickets:
        Mutex<HashMap<String, tokio::sync::broadcast::Sender<unimsg_core::qr::QrEvent>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects and starts the node's background tasks (message dispatch,
    /// subscription keeping, presence refresh). Fails if Redis cannot be
    /// reached now; after that, outages are survived.
    pub async fn connect(options: RedisOptions, hub: Arc<Hub>) -> Result<Arc<Self>, RedisError> {
        let info = options.url.as_str().into_connection_info()?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(settings);
        let client = if options.url.starts_with("rediss://") {
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: options.ca_cert.clone(),
            };
            redis::Client::build_with_tls(info, certs)?
        } else {
            redis::Client::open(info)?
        };
        let (push_tx, push_rx) = mpsc::unbounded_channel::<PushInfo>();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(push_tx)
            .set_automatic_resubscription()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = client.get_connection_manager_with_config(config).await?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (publisher, outbox) = Publisher::new();
        let cluster = Arc::new(Self {
            conn,
            options,
            hub,
            commands,
            routes: Mutex::new(bus::Routes::default()),
            publisher,
            tickets: Mutex::new(HashMap::new()),
        });
        tokio::spawn(keep_subscriptions(cluster.conn.clone(), command_rx));
        tokio::spawn(publish_loop(cluster.conn.clone(), outbox));
        cluster.subscribe(vec![cluster.key("broadcast")]).await?;
        tokio::spawn(dispatch(Arc::downgrade(&cluster), push_rx));
        tokio::spawn(bus::refresh_presence(Arc::downgrade(&cluster)));
        tracing::info!(node_id = %cluster.options.node_id, "joined the cluster bus");
        Ok(cluster)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.options.node_id
    }

    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.options.prefix)
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Subscribes to channels; resolves once Redis confirmed them.
    pub(crate) async fn subscribe(&self, channel: Vec<String>) -> Result<(), RedisError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Subscribe(channel, tx))
            .map_err(|_| RedisError("the node is shutting down".into()))?;
        match tokio::time::timeout(self.options.timeout * 2, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RedisError("the node is shutting down".into())),
            Err(_) => Err(RedisError("subscribing timed out".into())),
        }
    }

    /// Resolves once every subscription change asked before has run.
    pub(crate) async fn barrier(&self) -> Result<(), RedisError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Barrier(tx))
            .map_err(|_| RedisError("the node is shutting down".into()))?;
        match tokio::time::timeout(self.options.timeout * 2, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RedisError("the node is shutting down".into())),
            Err(_) => Err(RedisError("subscribing timed out".into())),
        }
    }

    pub(crate) fn unsubscribe(&self, channel: String) {
        let _ = self.commands.send(Command::Unsubscribe(channel));
    }

    /// Says goodbye: removes this node's presence entries. Called on
    /// graceful shutdown; a killed node's entries expire instead.
    pub async fn leave(&self) {
        bus::leave(self).await;
    }
}

/// Publications waiting for Redis: `(channel, payload)`.
type Batch = Vec<(String, Vec<u8>)>;

/// Most publications queued before new ones are dropped (they are
/// recovered from the store: see [`recover`] and the stream's gap fill).
const OUTBOX: usize = 4096;

/// Hands publications to one task that sends them in order, many per
/// round trip, so a commit never waits for Redis.
pub(crate) struct Publisher {
    tx: mpsc::Sender<Batch>,
}

impl Publisher {
    fn new() -> (Self, mpsc::Receiver<Batch>) {
        let (tx, rx) = mpsc::channel(OUTBOX);
        (Self { tx }, rx)
    }

    pub(crate) fn offer(&self, batch: Batch) {
        if self.tx.try_send(batch).is_err() {
            metrics::counter!("unimsg_bus_dropped_total").increment(1);
            tracing::debug!("bus outbox full; live delivery falls back to sync");
        }
    }
}

/// What a round trip to Redis was for, on `/metrics` as
/// `unimsg_bus_duration_seconds{call}`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BusCall {
    /// The events queued for other nodes, pipelined.
    Publish,
    /// A committed broadcast's note.
    Broadcast,
    /// A presence lookup of a list of users.
    Presence,
}

/// Records one round trip; the handles are registered once.
pub(crate) fn observe(call: BusCall, took: Duration) {
    static HANDLES: std::sync::OnceLock<[metrics::Histogram; 3]> = std::sync::OnceLock::new();
    let handles = HANDLES.get_or_init(|| {
        let named =
            |call: &'static str| metrics::histogram!("unimsg_bus_duration_seconds", "call" => call);
        [named("publish"), named("broadcast"), named("presence")]
    });
    let handle = match call {
        BusCall::Publish => &handles[0],
        BusCall::Broadcast => &handles[1],
        BusCall::Presence => &handles[2],
    };
    handle.record(took.as_secs_f64());
}

/// Sends queued publications in order, pipelining what has piled up.
async fn publish_loop(mut conn: ConnectionManager, mut rx: mpsc::Receiver<Batch>) {
    while let Some(first) = rx.recv().await {
        let mut pipe = redis::pipe();
        let mut count = 0usize;
        let mut next = Some(first);
        while let Some(batch) = next.take() {
            for (channel, payload) in batch {
                pipe.publish(channel, payload).ignore();
                count += 1;
            }
            if count < 1024 {
                next = rx.try_recv().ok();
            }
        }
        let started = tokio::time::Instant::now();
        let sent = pipe.query_async::<()>(&mut conn).await;
        observe(BusCall::Publish, started.elapsed());
        if let Err(error) = sent {
            metrics::counter!("unimsg_bus_dropped_total").increment(1);
            tracing::debug!(%error, "publishing failed; live delivery falls back to sync");
        }
    }
}

/// Runs subscription changes one at a time, in the order they were asked.
async fn keep_subscriptions(mut conn: ConnectionManager, mut rx: mpsc::UnboundedReceiver<Command>) {
    while let Some(command) = rx.recv().await {
        match command {
            Command::Subscribe(channel, done) => {
                let result = conn.subscribe(&channel).await.map_err(RedisError::from);
                let _ = done.send(result);
            }
            Command::Barrier(done) => {
                let _ = done.send(Ok(()));
            }
            Command::Unsubscribe(channel) => {
                if let Err(error) = conn.unsubscribe(&channel).await {
                    // The connection manager forgets it anyway on reconnect
                    // only if it is gone from its tracker; log and go on.
                    tracing::debug!(%error, channel, "unsubscribe failed");
                }
            }
        }
    }
}

/// Hands each pushed message to its handler; after a disconnection, waits
/// for Redis to answer again and makes every local connection catch up.
async fn dispatch(cluster: std::sync::Weak<Cluster>, mut rx: mpsc::UnboundedReceiver<PushInfo>) {
    while let Some(push) = rx.recv().await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        match push.kind {
            PushKind::Message => {
                let mut data = push.data.into_iter();
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                else {
                    continue;
                };
                let Ok(channel) = std::str::from_utf8(&channel) else {
                    continue;
                };
                let Some(name) = channel.strip_prefix(cluster.options.prefix.as_str()) else {
                    continue;
                };
                if let Some(user) = name.strip_prefix("u:") {
                    bus::on_event(&cluster, user, &payload);
                } else if name == "broadcast" {
                    bus::on_broadcast(&cluster, &payload);
                } else if let Some(ticket) = name.strip_prefix("qr:e:") {
                    qr::on_event(&cluster, ticket, &payload);
                }
            }
            PushKind::Disconnection => {
                tracing::warn!("lost the connection to Redis; live delivery pauses");
                metrics::counter!("unimsg_bus_disconnects_total").increment(1);
                tokio::spawn(recover(cluster.clone()));
            }
            _ => {}
        }
    }
}

/// Waits until Redis answers again (the connection manager reconnects and
/// resubscribes by itself), then has every local connection read what it
/// missed from the store.
async fn recover(cluster: Arc<Cluster>) {
    let mut conn = cluster.conn();
    let mut delay = Duration::from_millis(50);
    loop {
        let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
        if pong.is_ok() {
            break;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    tracing::info!("Redis is back; connections catch up from the store");
    // The connection manager resubscribes what it tracked; subscribe again
    // to everything this node needs in case a subscription was asked while
    // Redis was away.
    let mut channels = vec![cluster.key("broadcast")];
    channels.extend(bus::local_channels(&cluster));
    channels.extend(qr::local_channels(&cluster));
    for chunk in channels.chunks(1000) {
        if let Err(error) = cluster.subscribe(chunk.to_vec()).await {
            tracing::warn!(%error, "cannot resubscribe");
        }
    }
    bus::republish_presence(&cluster).await;
    cluster.hub.broadcast();
}
