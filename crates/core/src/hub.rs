//! The local connection registry: which WebSocket / SSE connections of
//! which users live on this node, and live delivery to them.
//!
//! Every connection has a bounded queue. Delivery never waits: when a
//! connection's queue is full, the connection is a slow consumer, it is
//! cancelled, removed and counted, so one client that stops reading can
//! never grow the server's memory. No lock is held across an await.
//!
//! Connections hold no timer of their own: each sets when it is next due
//! (its heartbeat, its token's expiry) with [`Subscription::set_due`],
//! which files its queue in one slot of the node's timing wheel (a slot
//! per [`TICK`], [`SLOTS`] of them going round); one task of the node
//! ([`Hub::run_timers`]) visits the slot of each tick as it comes and
//! wakes the connections due with [`Wake::Due`]. A tick touches only the
//! connections filed in its slot, not every connection; waking a
//! connection for an event polls no timer. A queue has one live entry
//! in the wheel: a time set later than that entry's tick leaves it where
//! it is (its visit moves it on), so setting times, however often and in
//! whatever order, does not grow the wheel ([`Wheel`]).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use unimsg_proto::{EventType, Platform, Seq, SessionId, UserId};

/// One rendered inbox event on its way to a user's connections. The JSON is
/// serialized once and shared by every connection that sends it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub user: UserId,
    pub seq: Seq,
    pub kind: EventType,
    /// The event exactly as the wire carries it (valid UTF-8 JSON).
    pub json: Bytes,
    /// For `session.revoked`: the session whose connections must close
    /// after sending this event.
    pub revokes: Option<SessionId>,
}

/// What a connection's queue carries.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// An event of this connection's user.
    Event(Arc<Delivery>),
    /// A broadcast was committed: the connection reads its place in the
    /// user's stream from the store (see `InboxStream::accept`).
    Broadcast,
}

/// How often [`Hub::run_timers`] looks for connections that are due: a
/// heartbeat or a token's expiry is acted on at most this much late.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(TICK_MS);
const TICK_MS: u64 = 250;

/// Slots of the timing wheel: one round is 64 s, so a default heartbeat
/// (25 s) is found on its slot's first visit.
pub const SLOTS: u64 = 256;

/// What a connection is woken for ([`Subscription::wait`]).
#[derive(Debug)]
pub enum Wake {
    /// A queued delivery.
    Delivery(Outbound),
    /// The time the connection set with [`Subscription::set_due`] came.
    Due,
    /// The hub let go of the connection or ended it: nothing more will come.
    Ended,
}

/// Queues an item; `Full` means a slow consumer.
fn offer(conn: &Registration, item: Outbound) -> Pushed {
    conn.queue.push(item)
}

/// Queues `item` on each of `conns`: how many took it; the ids of those
/// whose queue was full are added to `full`.
fn offer_all(conns: &[Registration], item: &Outbound, full: &mut Vec<u64>) -> u64 {
    let mut queued = 0;
    for conn in conns {
        match offer(conn, item.clone()) {
            Pushed::Queued => queued += 1,
            Pushed::Full => full.push(conn.id),
            Pushed::Closed => {}
        }
    }
    queued
}

/// What [`Queue::push`] did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushed {
    Queued,
    /// Not queued: the consumer is too slow and must be cut off.
    Full,
    /// Dropped: the connection is going away.
    Closed,
}

/// One connection's queue of deliveries: bounded, never waits to push,
/// woken reader. An idle connection holds one of these for its whole life,
/// so it is kept small (a general-purpose channel costs about 0.5 KiB per
/// connection before anything is sent); the buffer is allocated on the
/// first push.
struct Queue {
    state: Mutex<QueueState>,
    /// The reader's waker (one reader per queue): registered and woken
    /// with atomics alone, where a `Notify` takes a lock on each side.
    ready: AtomicWaker,
    /// Wakes whoever waits for the kill ([`Subscription::until_killed`]).
    gone: tokio::sync::Notify,
    limit: usize,
    /// When the connection is next due, in ms since the hub's epoch
    /// ([`NEVER`]: not set, or fired and not set again). Changed under
    /// the wheel's lock only, as is `filed`.
    due_at: AtomicU64,
    /// The tick whose slot holds this queue's live wheel entry ([`NEVER`]:
    /// none). Any other entry of the queue is stale.
    filed: AtomicU64,
}

/// [`Queue::due_at`] and [`Queue::filed`] when not set.
const NEVER: u64 = u64::MAX;

/// The hub's timing wheel: slot `t % SLOTS` holds the queues whose live
/// entry is for tick `t` (and stale entries, dropped when visited).
struct Wheel {
    slots: Vec<Vec<Arc<Queue>>>,
    /// The tick [`Hub::fire_due`] visits first next time (it visits the
    /// current tick again, for what is due later within it).
    cursor: u64,
}

fn slot_of(tick: u64) -> usize {
    usize::try_from(tick % SLOTS).unwrap_or(0)
}

impl Wheel {
    /// Files `queue` to be due at `at` (ms; `now` the present in ms).
    fn file(&mut self, queue: &Arc<Queue>, at: u64, now: u64) {
        queue.due_at.store(at, Ordering::Relaxed);
        // A time already come is for the current tick, which the next
        // visit looks at (a past tick's slot would wait a round).
        let tick = at.max(now) / TICK_MS;
        let filed = queue.filed.load(Ordering::Relaxed);
        if filed != NEVER && filed <= tick {
            // The live entry is visited first, and its visit moves it on.
            return;
        }
        queue.filed.store(tick, Ordering::Relaxed);
        if filed == NEVER || slot_of(filed) != slot_of(tick) {
            self.slots[slot_of(tick)].push(Arc::clone(queue));
        }
    }

    /// Unsets `queue`'s time; its entry goes on its next visit.
    fn cancel(&self, queue: &Queue) {
        queue.due_at.store(NEVER, Ordering::Relaxed);
    }

    /// Visits tick `tick`'s slot at `now` (ms): wakes the queues due, moves
    /// on those due later, drops stale entries.
    fn visit(&mut self, tick: u64, now: u64) {
        let here = slot_of(tick);
        for queue in std::mem::take(&mut self.slots[here]) {
            let filed = queue.filed.load(Ordering::Relaxed);
            if filed == NEVER || slot_of(filed) != here {
                continue;
            }
            if filed > tick {
                // Live, for a later round.
                self.slots[here].push(queue);
                continue;
            }
            let due = queue.due_at.load(Ordering::Relaxed);
            if due == NEVER || due <= now {
                queue.filed.store(NEVER, Ordering::Relaxed);
                if due != NEVER {
                    queue.due_at.store(NEVER, Ordering::Relaxed);
                    queue.mark_due();
                }
                continue;
            }
            let next = due / TICK_MS;
            queue.filed.store(next, Ordering::Relaxed);
            self.slots[slot_of(next)].push(queue);
        }
    }
}

impl QueueState {
    fn pop(&mut self) -> Next {
        if self.killed.is_some() {
            return Next::Closed;
        }
        match self.items.pop_front() {
            Some(item) => Next::Item(item),
            None if self.closed => Next::Closed,
            None => Next::Empty,
        }
    }
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Outbound>,
    /// The hub let go of the connection: nothing more will come.
    closed: bool,
    /// The hub ended the connection, and why.
    killed: Option<KillReason>,
    /// The time set with [`Subscription::set_due`] came ([`Wake::Due`]).
    due: bool,
}

impl Queue {
    fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(QueueState::default()),
            ready: AtomicWaker::new(),
            gone: tokio::sync::Notify::new(),
            limit,
            due_at: AtomicU64::new(NEVER),
            filed: AtomicU64::new(NEVER),
        })
    }

    /// Hands the reader [`Wake::Due`].
    fn mark_due(&self) {
        self.state.lock().due = true;
        self.ready.wake();
    }

    /// What the reader is woken for, if anything yet: a due time first, so
    /// that a steady stream of events cannot hold back a heartbeat or a
    /// token's expiry.
    fn next_wake(&self) -> Option<Wake> {
        let mut state = self.state.lock();
        if state.killed.is_none() && std::mem::take(&mut state.due) {
            return Some(Wake::Due);
        }
        match state.pop() {
            Next::Item(item) => Some(Wake::Delivery(item)),
            Next::Closed => Some(Wake::Ended),
            Next::Empty => None,
        }
    }

    /// Waits for what the reader is woken for next. Cancel-safe.
    async fn wait(&self) -> Wake {
        std::future::poll_fn(|cx| {
            // Registered before the look, so a push in between wakes it.
            self.ready.register(cx.waker());
            self.next_wake().map_or(Poll::Pending, Poll::Ready)
        })
        .await
    }

    /// Queues an item unless the queue is full or closed.
    fn push(&self, item: Outbound) -> Pushed {
        {
            let mut state = self.state.lock();
            if state.closed {
                return Pushed::Closed;
            }
            if state.items.len() >= self.limit {
                return Pushed::Full;
            }
            state.items.push_back(item);
        }
        self.ready.wake();
        Pushed::Queued
    }

    fn close(&self) {
        self.state.lock().closed = true;
        self.ready.wake();
    }

    /// Ends the connection: closes the queue and fires its kill signal
    /// (the first reason given stays).
    fn kill(&self, reason: KillReason) {
        {
            let mut state = self.state.lock();
            state.closed = true;
            state.killed.get_or_insert(reason);
        }
        self.ready.wake();
        self.gone.notify_waiters();
    }

    fn kill_reason(&self) -> Option<KillReason> {
        self.state.lock().killed
    }

    /// Resolves once [`Self::kill`] was called.
    async fn killed(&self) {
        loop {
            let woken = self.gone.notified();
            tokio::pin!(woken);
            // Registered before the check, so a kill in between is seen.
            woken.as_mut().enable();
            if self.kill_reason().is_some() {
                return;
            }
            woken.await;
        }
    }

    /// The next item, if one is queued. Nothing once killed: what is
    /// still queued is not worth sending to a connection being ended.
    fn pop(&self) -> Next {
        self.state.lock().pop()
    }

    /// Waits for the next item; `None` once closed and drained. Cancel-safe:
    /// an item stays queued until it is returned.
    async fn recv(&self) -> Option<Outbound> {
        std::future::poll_fn(|cx| {
            // Registered before the look, so a push in between wakes it.
            self.ready.register(cx.waker());
            match self.pop() {
                Next::Item(item) => Poll::Ready(Some(item)),
                Next::Closed => Poll::Ready(None),
                Next::Empty => Poll::Pending,
            }
        })
        .await
    }
}

/// What [`Queue::pop`] found.
enum Next {
    Item(Outbound),
    /// Nothing queued yet.
    Empty,
    /// Closed and drained: nothing more will come.
    Closed,
}

const SHARDS: usize = 16;

/// A connection as the hub holds it.
struct Registration {
    id: u64,
    session: SessionId,
    platform: Platform,
    queue: Arc<Queue>,
}

/// A session already holds this many connections on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyConnections(pub usize);

/// Why the hub ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    SlowConsumer,
    Shutdown,
}

/// Registry of this node's live connections.
pub struct Hub {
    shards: Vec<RwLock<HashMap<UserId, Vec<Registration>>>>,
    next_id: AtomicU64,
    queue: usize,
    slow_consumers: AtomicU64,
    connections: AtomicU64,
    shutdown: CancellationToken,
    /// Events (and broadcast wake-ups) queued on a live connection, since start.
    deliveries: AtomicU64,
    /// Woken whenever the last connection goes away.
    idle: tokio::sync::Notify,
    /// Where broadcasts committed on other nodes go to be placed
    /// ([`Hub::place_remote_broadcasts_with`]).
    placer: std::sync::OnceLock<tokio::sync::mpsc::Sender<crate::bus::BroadcastNote>>,
    /// What due times count from.
    epoch: tokio::time::Instant,
    /// Every connection's next due time.
    wheel: Mutex<Wheel>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub whose connections queue at most `queue` events each.
    pub fn new(queue: usize) -> Arc<Self> {
        Arc::new(Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
            queue: queue.max(1),
            slow_consumers: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            idle: tokio::sync::Notify::new(),
            placer: std::sync::OnceLock::new(),
            epoch: tokio::time::Instant::now(),
            wheel: Mutex::new(Wheel {
                slots: (0..SLOTS).map(|_| Vec::new()).collect(),
                cursor: 0,
            }),
        })
    }

    /// Wakes `queue` with [`Wake::Due`] once `at` has come.
    fn file(&self, queue: &Arc<Queue>, at: tokio::time::Instant) {
        let at = self.ms_since_epoch(at);
        let now = self.ms_since_epoch(tokio::time::Instant::now());
        self.wheel.lock().file(queue, at, now);
    }

    /// `at` in ms since the hub's epoch (0 for earlier times).
    fn ms_since_epoch(&self, at: tokio::time::Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(NEVER - 1)
    }

    /// Wakes, every [`TICK`], each connection whose due time has come
    /// ([`Wake::Due`]); ends once the hub is dropped. The node runs one.
    pub async fn run_timers(hub: std::sync::Weak<Self>) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(hub) = hub.upgrade() else {
                return;
            };
            hub.fire_due(tokio::time::Instant::now());
        }
    }

    /// Marks due every connection whose time is at or before `now`,
    /// visiting the slots of the ticks since the last visit.
    fn fire_due(&self, now: tokio::time::Instant) {
        let now = self.ms_since_epoch(now);
        let current = now / TICK_MS;
        let mut wheel = self.wheel.lock();
        let first = wheel.cursor.max(current.saturating_sub(SLOTS - 1));
        for tick in first..=current {
            wheel.visit(tick, now);
        }
        wheel.cursor = current;
    }

    /// From now on, broadcasts committed on other nodes are sent to `tx`
    /// to be placed in the local streams (by
    /// [`crate::Core::place_remote_broadcasts`]). Only the first call counts.
    pub fn place_remote_broadcasts_with(
        &self,
        tx: tokio::sync::mpsc::Sender<crate::bus::BroadcastNote>,
    ) {
        let _ = self.placer.set(tx);
    }

    /// A broadcast committed on another node: placed if a placer is set
    /// and keeps up, else every local connection reads its stream
    /// ([`Self::broadcast`]). Never waits.
    pub fn remote_broadcast(&self, note: crate::bus::BroadcastNote) {
        let handed = self
            .placer
            .get()
            .is_some_and(|tx| tx.try_send(note).is_ok());
        if !handed {
            self.broadcast();
        }
    }

    fn shard(&self, user: &UserId) -> &RwLock<HashMap<UserId, Vec<Registration>>> {
        let mut h = DefaultHasher::new();
        user.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// Registers a connection of `user` in `session`.
    pub fn subscribe(
        self: &Arc<Self>,
        user: &UserId,
        session: &SessionId,
        platform: &Platform,
    ) -> Subscription {
        match self.try_subscribe(user, session, platform, 0) {
            Ok(s) => s,
            Err(TooManyConnections(_)) => unreachable!("no cap"),
        }
    }

    /// Registers a connection of `user` in `session`, unless the session
    /// already holds `max_per_session` connections here (0: no cap).
    /// Counted under the shard's write lock, so concurrent connects of one
    /// session cannot pass the cap together, and without memory of its
    /// own: the user's connection list already names each one's session.
    pub fn try_subscribe(
        self: &Arc<Self>,
        user: &UserId,
        session: &SessionId,
        platform: &Platform,
        max_per_session: usize,
    ) -> Result<Subscription, TooManyConnections> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Queue::new(self.queue);
        let conn = Registration {
            id,
            session: session.clone(),
            platform: platform.clone(),
            queue: queue.clone(),
        };
        {
            let mut shard = self.shard(user).write();
            // Checked under the lock [`Self::shutdown`] takes after
            // cancelling: either it sees this connection, or this sees it.
            if self.shutdown.is_cancelled() {
                queue.kill(KillReason::Shutdown);
            }
            let conns = shard.entry(user.clone()).or_default();
            if max_per_session > 0 {
                let held = conns.iter().filter(|c| c.session == *session).count();
                if held >= max_per_session {
                    if conns.is_empty() {
                        shard.remove(user);
                    }
                    metrics::counter!("unimsg_session_connections_refused_total").increment(1);
                    return Err(TooManyConnections(max_per_session));
                }
            }
            conns.push(conn);
        }
        // Counted once, here; `/metrics` renders it as `unimsg_hub_connections`.
        self.connections.fetch_add(1, Ordering::Relaxed);
        Ok(Subscription {
            hub: self.clone(),
            user: user.clone(),
            id,
            queue,
        })
    }

    fn remove(&self, user: &UserId, id: u64) {
        let mut shard = self.shard(user).write();
        if let Some(conns) = shard.get_mut(user) {
            let before = conns.len();
            conns.retain(|c| {
                if c.id == id {
                    c.queue.close();
                }
                c.id != id
            });
            if conns.len() < before && self.connections.fetch_sub(1, Ordering::Relaxed) == 1 {
                self.idle.notify_waiters();
            }
            if conns.is_empty() {
                shard.remove(user);
            }
        }
    }

    /// Queues a delivery on every local connection of its user. Never waits.
    pub fn deliver(&self, delivery: Arc<Delivery>) {
        let user = delivery.user.clone();
        let mut slow = Vec::new();
        {
            let shard = self.shard(&user).read();
            let Some(conns) = shard.get(&user) else {
                return;
            };
            let queued = offer_all(conns, &Outbound::Event(delivery.clone()), &mut slow);
            self.deliveries.fetch_add(queued, Ordering::Relaxed);
        }
        self.drop_slow(&user, &slow);
    }

    /// How many users have at least one connection on this node.
    pub fn online_user_count(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().len()).sum()
    }

    /// The users with at least one connection on this node.
    pub fn online_users(&self) -> Vec<UserId> {
        let mut users = Vec::new();
        for shard in &self.shards {
            users.extend(shard.read().keys().cloned());
        }
        users
    }

    /// Hands a committed broadcast to every local connection: as the
    /// rendered event when its user's seq is among `placed` (see
    /// `Store::broadcast_positions`), else as [`Outbound::Broadcast`], and
    /// the connection reads its stream from the store. Never waits.
    pub fn broadcast_placed(&self, placed: &[Arc<Delivery>]) {
        let by_user: HashMap<&UserId, &Arc<Delivery>> =
            placed.iter().map(|d| (&d.user, d)).collect();
        for shard in &self.shards {
            let mut slow: Vec<(UserId, Vec<u64>)> = Vec::new();
            let mut queued = 0;
            {
                let shard = shard.read();
                for (user, conns) in shard.iter() {
                    let item = match by_user.get(user) {
                        Some(d) => Outbound::Event(Arc::clone(d)),
                        None => Outbound::Broadcast,
                    };
                    let mut full = Vec::new();
                    queued += offer_all(conns, &item, &mut full);
                    if !full.is_empty() {
                        slow.push((user.clone(), full));
                    }
                }
            }
            self.deliveries.fetch_add(queued, Ordering::Relaxed);
            for (user, ids) in slow {
                self.drop_slow(&user, &ids);
            }
        }
    }

    /// Tells every local connection that a broadcast was committed. Never waits.
    pub fn broadcast(&self) {
        self.broadcast_placed(&[]);
    }

    /// Disconnects connections whose queue is full, and counts them.
    fn drop_slow(&self, user: &UserId, slow: &[u64]) {
        if slow.is_empty() {
            return;
        }
        let mut dropped = 0u64;
        {
            let mut shard = self.shard(user).write();
            if let Some(conns) = shard.get_mut(user) {
                conns.retain(|c| {
                    if slow.contains(&c.id) {
                        tracing::info!(user_id = %user, session_id = %c.session, "disconnecting a slow consumer");
                        c.queue.kill(KillReason::SlowConsumer);
                        dropped += 1;
                        false
                    } else {
                        true
                    }
                });
                if conns.is_empty() {
                    shard.remove(user);
                }
            }
        }
        if dropped > 0 && self.connections.fetch_sub(dropped, Ordering::Relaxed) == dropped {
            self.idle.notify_waiters();
        }
        // `/metrics` renders it as `unimsg_hub_slow_consumer_disconnects`.
        self.slow_consumers.fetch_add(dropped, Ordering::Relaxed);
    }

    /// The platforms on which `user` has live connections on this node,
    /// sorted and without repeats.
    pub fn platforms(&self, user: &UserId) -> Vec<Platform> {
        let mut out: Vec<Platform> = self
            .shard(user)
            .read()
            .get(user)
            .map(|c| c.iter().map(|c| c.platform.clone()).collect())
            .unwrap_or_default();
        out.sort();
        out.dedup();
        out
    }

    /// Live connections of `user` on this node.
    pub fn user_connections(&self, user: &UserId) -> usize {
        self.shard(user).read().get(user).map_or(0, Vec::len)
    }

    /// Live connections of `session` on this node.
    pub fn session_connections(&self, user: &UserId, session: &SessionId) -> usize {
        self.shard(user)
            .read()
            .get(user)
            .map_or(0, |c| c.iter().filter(|c| c.session == *session).count())
    }

    /// Live connections on this node.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Events queued on live connections of this node, since start
    /// (`unimsg_hub_deliveries_total`).
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// Connections disconnected because they stopped reading, since start.
    pub fn slow_consumer_disconnects(&self) -> u64 {
        self.slow_consumers.load(Ordering::Relaxed)
    }

    /// Ends every connection (graceful shutdown).
    /// Resolves once no connection is left (after [`Self::shutdown`], when
    /// every connection task has sent its close frame and ended).
    pub async fn drained(&self) {
        loop {
            let woken = self.idle.notified();
            tokio::pin!(woken);
            // Registered before the check, so a wake-up in between is kept.
            woken.as_mut().enable();
            if self.connections() == 0 {
                return;
            }
            woken.await;
        }
    }

    pub fn shutdown(&self) {
        self.shutdown.cancel();
        for shard in &self.shards {
            for conn in shard.write().values().flatten() {
                conn.queue.kill(KillReason::Shutdown);
            }
        }
    }
}

/// A live connection's handle: its queue of deliveries and its kill signal.
/// Dropping it unregisters the connection.
pub struct Subscription {
    hub: Arc<Hub>,
    user: UserId,
    id: u64,
    queue: Arc<Queue>,
}

impl Subscription {
    /// The next queued delivery. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Outbound> {
        self.queue.recv().await
    }

    /// The next delivery, or the due time set with [`Self::set_due`], or
    /// the end. Cancel-safe.
    pub async fn wait(&mut self) -> Wake {
        self.queue.wait().await
    }

    /// Asks to be woken with [`Wake::Due`] once `at` has come (on the
    /// hub's next [`TICK`] after it), instead of any time set before.
    pub fn set_due(&self, at: tokio::time::Instant) {
        self.hub.file(&self.queue, at);
    }

    /// A queued delivery, if one is ready now.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        match self.queue.pop() {
            Next::Item(item) => Some(item),
            Next::Empty | Next::Closed => None,
        }
    }

    /// Resolves when the hub ends this connection. Borrowed: nothing is
    /// allocated, so a transport can make one for the while it writes.
    pub async fn until_killed(&self) {
        self.queue.killed().await;
    }

    /// Why the connection was ended, once [`Self::until_killed`] resolved.
    pub fn kill_reason(&mut self) -> KillReason {
        self.queue.kill_reason().unwrap_or(KillReason::SlowConsumer)
    }

    /// Why the hub ended the connection; `None` while it has not.
    pub fn killed_for(&self) -> Option<KillReason> {
        self.queue.kill_reason()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(&self.user, self.id);
        // The wheel drops its entry on its next visit; nothing queued is
        // kept until then, the reader being gone.
        self.hub.wheel.lock().cancel(&self.queue);
        self.queue.state.lock().items.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn seq_of(o: Outbound) -> Seq {
        match o {
            Outbound::Event(d) => d.seq,
            Outbound::Broadcast => Seq(0),
        }
    }

    /// A user, a session and a platform for a test connection.
    fn ids() -> (UserId, SessionId, Platform) {
        (
            UserId::parse("u").unwrap(),
            SessionId::parse("s").unwrap(),
            Platform::parse("web").unwrap(),
        )
    }

    fn delivery(user: &UserId, seq: u64) -> Arc<Delivery> {
        Arc::new(Delivery {
            user: user.clone(),
            seq: Seq(seq),
            kind: EventType::MessageNew,
            json: Bytes::from_static(b"{}"),
            revokes: None,
        })
    }

    /// A connection is woken once for the due time it set, not before,
    /// ahead of queued events (a stream of events cannot hold back a
    /// heartbeat or an expiry), and not again until it sets another; the
    /// node's timer task does this every tick and ends with the hub.
    #[tokio::test(start_paused = true)]
    async fn a_due_time_wakes_its_connection_once_ahead_of_its_events() {
        let (user, sid, web) = ids();
        let hub = Hub::new(8);
        let mut conn = hub.subscribe(&user, &sid, &web);
        let start = tokio::time::Instant::now();
        conn.set_due(start + Duration::from_secs(1));
        hub.deliver(delivery(&user, 1));
        hub.fire_due(start + Duration::from_millis(999));
        assert_eq!(
            conn.queue.next_wake().map(|w| matches!(w, Wake::Due)),
            Some(false)
        );
        hub.deliver(delivery(&user, 2));
        hub.fire_due(start + Duration::from_secs(1));
        assert!(matches!(conn.wait().await, Wake::Due));
        assert!(matches!(conn.wait().await, Wake::Delivery(Outbound::Event(d)) if d.seq == Seq(2)));
        hub.fire_due(start + Duration::from_secs(5));
        assert!(
            conn.queue.next_wake().is_none(),
            "woken twice for one due time"
        );

        // The timer task, on the runtime's (paused) clock.
        conn.set_due(tokio::time::Instant::now() + Duration::from_secs(3));
        let timers = tokio::spawn(Hub::run_timers(Arc::downgrade(&hub)));
        let woken = tokio::time::Instant::now();
        assert!(matches!(conn.wait().await, Wake::Due));
        let late = woken.elapsed();
        assert!(
            late >= Duration::from_secs(3) && late <= Duration::from_secs(3) + TICK,
            "{late:?}"
        );
        hub.shutdown();
        assert!(matches!(conn.wait().await, Wake::Ended));
        drop(conn);
        drop(hub);
        tokio::time::timeout(TICK * 4, timers)
            .await
            .expect("the timer task outlived its hub")
            .unwrap();
    }

    fn filed(hub: &Hub) -> usize {
        hub.wheel.lock().slots.iter().map(Vec::len).sum()
    }

    /// The wheel holds one live entry per connection: a time set again is
    /// not filed twice, a later time is reached by moving the entry on at
    /// its visit, times alternating between two slots (a client sending
    /// `auth` frames with two tokens) leave at most one stale entry, a
    /// time beyond one round fires on its own round and not on the first,
    /// and a connection that went away is dropped from the wheel.
    #[tokio::test(start_paused = true)]
    async fn the_timing_wheel_files_each_time_once_and_fires_it_on_its_round() {
        let (user, sid, web) = ids();
        let hub = Hub::new(8);
        let mut conn = hub.subscribe(&user, &sid, &web);
        let start = tokio::time::Instant::now();
        let round = TICK * u32::try_from(SLOTS).unwrap();
        for _ in 0..100 {
            conn.set_due(start + Duration::from_secs(2));
        }
        assert_eq!(filed(&hub), 1);
        // Moved further than one round: same slot number, a later round.
        conn.set_due(start + Duration::from_secs(2) + round);
        assert_eq!(filed(&hub), 1);
        hub.fire_due(start + Duration::from_secs(3));
        assert!(conn.queue.next_wake().is_none(), "fired a round early");
        assert_eq!(filed(&hub), 1, "the entry for the next round is kept");
        hub.fire_due(start + Duration::from_secs(2) + round);
        assert!(matches!(conn.wait().await, Wake::Due));
        assert_eq!(filed(&hub), 0);
        // Later, in another slot: the entry stays, and its visit moves it on.
        conn.set_due(start + round + Duration::from_secs(10));
        conn.set_due(start + round + Duration::from_secs(20));
        assert_eq!(filed(&hub), 1);
        hub.fire_due(start + round + Duration::from_secs(15));
        assert_eq!(filed(&hub), 1);
        assert!(conn.queue.next_wake().is_none());
        // Alternating between two slots, later time last: no growth, and
        // the time that counts is the last one set.
        for _ in 0..1000 {
            conn.set_due(start + round + Duration::from_secs(17));
            conn.set_due(start + round + Duration::from_secs(19));
        }
        assert!(filed(&hub) <= 2, "{} entries", filed(&hub));
        hub.fire_due(start + round + Duration::from_secs(18));
        assert!(
            conn.queue.next_wake().is_none(),
            "fired at a time set before"
        );
        hub.fire_due(start + round + Duration::from_secs(19));
        assert!(matches!(conn.wait().await, Wake::Due));
        conn.set_due(start + round + Duration::from_secs(20));
        drop(conn);
        hub.fire_due(start + round + Duration::from_secs(25));
        assert_eq!(filed(&hub), 0, "a closed connection stays in the wheel");

        // A time already past (a token that expired before the socket
        // opened) fires on the next visit, not a round later.
        tokio::time::advance(round * 3).await;
        let now = tokio::time::Instant::now();
        hub.fire_due(now);
        let late = hub.subscribe(&user, &sid, &web);
        late.set_due(now - Duration::from_secs(30));
        hub.fire_due(now);
        assert!(matches!(late.queue.next_wake(), Some(Wake::Due)));
    }

    #[tokio::test]
    async fn a_queue_is_bounded_wakes_its_reader_and_ends_when_closed() {
        let user = UserId::parse("u").unwrap();
        let q = Queue::new(2);
        assert!(matches!(q.pop(), Next::Empty));
        let reader = {
            let q = q.clone();
            tokio::spawn(async move { q.recv().await.map(seq_of) })
        };
        assert_eq!(q.push(Outbound::Event(delivery(&user, 1))), Pushed::Queued);
        assert_eq!(reader.await.unwrap(), Some(Seq(1)));
        assert_eq!(q.push(Outbound::Event(delivery(&user, 2))), Pushed::Queued);
        assert_eq!(q.push(Outbound::Event(delivery(&user, 3))), Pushed::Queued);
        assert_eq!(q.push(Outbound::Event(delivery(&user, 4))), Pushed::Full);
        q.close();
        assert_eq!(q.recv().await.map(seq_of), Some(Seq(2)));
        assert_eq!(q.recv().await.map(seq_of), Some(Seq(3)));
        assert!(q.recv().await.is_none());
        assert_eq!(q.push(Outbound::Broadcast), Pushed::Closed);
        assert!(matches!(q.pop(), Next::Closed));
    }

    #[tokio::test]
    async fn a_killed_queue_ends_its_reader_even_with_items_left() {
        let (user, sid, web) = ids();
        let hub = Hub::new(4);
        let mut conn = hub.subscribe(&user, &sid, &web);
        hub.deliver(delivery(&user, 1));
        hub.deliver(delivery(&user, 2));
        assert_eq!(conn.recv().await.map(seq_of), Some(Seq(1)));
        assert_eq!(conn.killed_for(), None);
        hub.shutdown();
        assert!(
            conn.recv().await.is_none(),
            "seq 2 is not handed out once killed"
        );
        assert_eq!(conn.killed_for(), Some(KillReason::Shutdown));
        conn.until_killed().await;
        // A reader parked on its queue alone is woken by the kill.
        let other = Hub::new(4);
        let mut parked = other.subscribe(&user, &sid, &web);
        let reader = tokio::spawn(async move { parked.recv().await.is_none() });
        // On this single-threaded runtime the reader runs until it parks.
        tokio::task::yield_now().await;
        assert!(!reader.is_finished());
        other.shutdown();
        assert!(reader.await.unwrap());
    }

    #[tokio::test]
    async fn shutdown_ends_every_connection_and_any_that_opens_after() {
        let hub = Hub::new(4);
        let (user, sid, web) = ids();
        let mut before = hub.subscribe(&user, &sid, &web);
        hub.shutdown();
        before.until_killed().await;
        assert_eq!(before.kill_reason(), KillReason::Shutdown);
        assert!(before.recv().await.is_none(), "the queue is closed");
        let mut after = hub.subscribe(&user, &sid, &web);
        after.until_killed().await;
        assert_eq!(after.kill_reason(), KillReason::Shutdown);
        drop((before, after));
        assert_eq!(hub.connections(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_disconnects_only_that_connection() {
        let hub = Hub::new(2);
        let (user, sid, web) = ids();
        let ios = Platform::parse("ios").unwrap();
        let mut reader = hub.subscribe(&user, &sid, &web);
        let stalled = hub.subscribe(&user, &sid, &ios);
        assert_eq!(hub.platforms(&user), vec![ios.clone(), web.clone()]);
        assert_eq!(hub.connections(), 2);
        for seq in 1..=2 {
            hub.deliver(delivery(&user, seq));
            assert_eq!(reader.recv().await.map(seq_of), Some(Seq(seq)));
        }
        hub.deliver(delivery(&user, 3));
        assert_eq!(hub.slow_consumer_disconnects(), 1);
        // Two events on two connections, then one on the reader only: the
        // stalled one's third was refused.
        assert_eq!(hub.deliveries(), 5);
        assert_eq!(hub.connections(), 1);
        let mut stalled = stalled;
        stalled.until_killed().await;
        assert_eq!(stalled.kill_reason(), KillReason::SlowConsumer);
        assert_eq!(hub.platforms(&user), vec![web]);
        assert_eq!(reader.recv().await.map(seq_of), Some(Seq(3)));
        hub.broadcast();
        assert!(matches!(reader.recv().await, Some(Outbound::Broadcast)));
        assert_eq!(hub.deliveries(), 6);
        drop(reader);
        assert_eq!(hub.connections(), 0);
    }
}
