//! One connection's ordered view of an inbox: replay from a seq, then live
//! events, with no gap and no duplicate.
//!
//! Live deliveries can arrive out of order (concurrent commits publish
//! independently, and a cluster bus reorders). The stream tracks the last
//! seq it handed out: an older seq is dropped, the next seq passes, and a
//! seq beyond a gap first pulls the missing events from the store, which
//! already holds them because publishing follows the commit.

use std::sync::Arc;

use unimsg_proto::hooks::{HookEventType, PresenceData};
use unimsg_proto::{Platform, Seq, SessionId, UserId};

use crate::auth::AuthContext;
use crate::bus::PresenceChange;
use crate::error::{CoreError, Result};
use crate::hub::{Delivery, KillReason, Outbound, Subscription, Wake};
use crate::{Core, render};

const PAGE: u32 = 500;

/// How long a live event that arrived ahead of others waits for them on
/// the queue before they are read from the store (see
/// [`InboxStream::accept_burst`]).
pub const GAP_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

pub struct InboxStream {
    core: Arc<Core>,
    session: SessionId,
    subscription: Subscription,
    /// Also whose stream this is (`attached.user`).
    attached: Attached,
    last: Seq,
    /// The inbox's end when the stream opened.
    newest: Seq,
}

/// Keeps the user's events routed to this node while the stream lives.
struct Attached {
    core: Arc<Core>,
    user: UserId,
    platform: Platform,
}

impl Drop for Attached {
    /// The user's last connection on any node closing is `user.offline`.
    fn drop(&mut self) {
        let departure = self.core.bus.detach(&self.user, &self.platform);
        if !self.core.hook_wanted(HookEventType::UserOffline) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let core = self.core.clone();
        let data = PresenceData {
            user_id: self.user.clone(),
        };
        runtime.spawn(async move {
            if departure.await == PresenceChange::Offline {
                core.emit(HookEventType::UserOffline, &data).await;
            }
        });
    }
}

impl std::fmt::Debug for InboxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxStream")
            .field("user", &self.attached.user)
            .field("last", &self.last)
            .finish()
    }
}

impl InboxStream {
    /// Subscribes to live events of the caller. With `after`, the events
    /// after that seq are replayed first ([`Self::backlog`]); without it the
    /// stream starts at the inbox's current end.
    pub async fn open(core: Arc<Core>, auth: &AuthContext, after: Option<Seq>) -> Result<Self> {
        let cap = core.config().delivery.max_connections_per_session;
        let subscription = core
            .hub
            .try_subscribe(&auth.user_id, &auth.session_id, &auth.platform, cap)
            .map_err(|crate::hub::TooManyConnections(max)| {
                CoreError::TooManyConnections(format!(
                    "this session already has {max} live connections (WebSocket and SSE) \
                     on this server; close one first"
                ))
            })?;
        let attached = Attached {
            core: core.clone(),
            user: auth.user_id.clone(),
            platform: auth.platform.clone(),
        };
        match core.bus.attach(&auth.user_id, &auth.platform).await {
            // Reported before anything else can fail, so that every
            // `user.online` has its `user.offline` when `attached` drops.
            Ok(PresenceChange::Online) if core.hook_wanted(HookEventType::UserOnline) => {
                let data = PresenceData {
                    user_id: auth.user_id.clone(),
                };
                core.emit(HookEventType::UserOnline, &data).await;
            }
            Ok(_) => {}
            // Still counted: when the bus is back, it routes this user
            // again and every connection catches up from the store.
            Err(error) => tracing::warn!(%error, "live routing is not in place yet"),
        }
        // Checked after subscribing: a revocation committed from now on is
        // published to this subscription, one committed before is seen here.
        if !core.session_active(&auth.session_id).await? {
            return Err(CoreError::Unauthorized("the session was revoked"));
        }
        let newest = core.store.last_seq(&auth.user_id).await?;
        let last = after.map_or(newest, |a| a.min(newest));
        Ok(Self {
            newest,
            core,
            session: auth.session_id.clone(),
            subscription,
            attached,
            last,
        })
    }

    /// The inbox's end when the stream opened (what a `ready` frame reports).
    pub fn newest(&self) -> Seq {
        self.newest
    }

    /// The last seq handed out.
    pub fn last(&self) -> Seq {
        self.last
    }

    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// The next page of stored events after [`Self::last`]; empty when
    /// caught up. Nothing is read once the stream has reached the inbox's
    /// end as it was when the stream opened, which is where a stream
    /// without `after` starts: what was committed since comes on the
    /// queue (subscribed before that end was read), and [`Self::accept`]
    /// reads the store for any gap there.
    pub async fn backlog(&mut self) -> Result<Vec<Arc<Delivery>>> {
        if self.last >= self.newest {
            return Ok(Vec::new());
        }
        self.fetch(PAGE).await
    }

    async fn fetch(&mut self, limit: u32) -> Result<Vec<Arc<Delivery>>> {
        let stored = self
            .core
            .store
            .events_after(&self.attached.user, self.last, limit)
            .await?;
        let mut out = Vec::with_capacity(stored.len());
        for e in &stored {
            out.push(Arc::new(render::delivery(&self.core.keyring, e)?));
        }
        if let Some(d) = out.last() {
            self.last = d.seq;
        }
        Ok(out)
    }

    /// Waits for the next live delivery. Cancel-safe; pass the result to
    /// [`Self::accept`]. `None` when the hub dropped or ended the
    /// connection ([`Self::killed_for`] says whether and why it ended it).
    pub async fn recv(&mut self) -> Option<Outbound> {
        self.subscription.recv().await
    }

    /// Waits for the next live delivery (pass it to [`Self::accept_burst`]),
    /// the due time set with [`Self::set_due`], or the end. Cancel-safe.
    pub async fn wait(&mut self) -> Wake {
        self.subscription.wait().await
    }

    /// Asks for a [`Wake::Due`] once `at` has come (the connection's next
    /// heartbeat or its token's expiry), replacing any time set before.
    pub fn set_due(&self, at: tokio::time::Instant) {
        self.subscription.set_due(at);
    }

    /// Takes every delivery already queued (up to `max`) without waiting,
    /// so a transport can write a burst in one flush.
    pub fn ready_now(&mut self, max: usize) -> Vec<Outbound> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.subscription.try_recv() {
                Some(d) => out.push(d),
                None => break,
            }
        }
        out
    }

    /// Orders `first` and whatever else is queued (up to `max` more):
    /// returns what to send now, in seq order. Concurrent commits publish
    /// in any order, so when the queued events leave a gap, the stream
    /// first waits up to [`GAP_WAIT`] for the missing ones to arrive on
    /// its queue, and reads from the store only what is still missing.
    pub async fn accept_burst(
        &mut self,
        first: Outbound,
        max: usize,
    ) -> Result<Vec<Arc<Delivery>>> {
        let mut items = vec![first];
        items.extend(self.ready_now(max));
        let deadline = tokio::time::Instant::now() + GAP_WAIT;
        while self.has_gap(&items) && items.len() < max.saturating_mul(4) {
            match tokio::time::timeout_at(deadline, self.subscription.recv()).await {
                Ok(Some(item)) => {
                    items.push(item);
                    items.extend(self.ready_now(max));
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Events in seq order first; broadcast signals read the store
        // for whatever is new after them.
        items.sort_by_key(|item| match item {
            Outbound::Event(d) => (0, d.seq),
            Outbound::Broadcast => (1, Seq(0)),
        });
        let mut out = Vec::new();
        for item in items {
            out.extend(self.accept(item).await?);
        }
        Ok(out)
    }

    /// Whether the queued events, in seq order, do not follow on from the
    /// last seq handed out (a broadcast signal reads the store anyway).
    fn has_gap(&self, items: &[Outbound]) -> bool {
        // The common case, events already in order, without allocating.
        let mut expected = self.last.0 + 1;
        let mut in_order = true;
        for item in items {
            match item {
                Outbound::Event(d) if d.seq.0 == expected => expected += 1,
                Outbound::Event(d) if d.seq <= self.last => {}
                Outbound::Event(_) => {
                    in_order = false;
                    break;
                }
                Outbound::Broadcast => return false,
            }
        }
        if in_order {
            return false;
        }
        let mut seqs = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Outbound::Event(d) if d.seq > self.last => seqs.push(d.seq.0),
                Outbound::Event(_) => {}
                Outbound::Broadcast => return false,
            }
        }
        seqs.sort_unstable();
        seqs.dedup();
        (self.last.0 + 1..)
            .zip(seqs)
            .any(|(expected, seq)| seq != expected)
    }

    /// Orders a live item: returns what to send now, in seq order. A
    /// broadcast takes its place in each user's stream by commit order, so
    /// the stream reads what is new from the store.
    pub async fn accept(&mut self, item: Outbound) -> Result<Vec<Arc<Delivery>>> {
        let d = match item {
            Outbound::Event(d) => d,
            Outbound::Broadcast => {
                metrics::counter!("unimsg_broadcast_stream_reads_total").increment(1);
                let mut out = Vec::new();
                loop {
                    let page = self.fetch(PAGE).await?;
                    if page.is_empty() {
                        return Ok(out);
                    }
                    out.extend(page);
                }
            }
        };
        if d.seq <= self.last {
            return Ok(Vec::new());
        }
        if d.seq == self.last.next() {
            self.last = d.seq;
            return Ok(vec![d]);
        }
        // A gap: the missing events are committed; read them, then this one.
        let missing = u32::try_from(d.seq.0 - self.last.0 - 1).unwrap_or(u32::MAX);
        let mut out = Vec::new();
        while self.last.next() < d.seq {
            let page = self.fetch(missing.min(PAGE)).await?;
            if page.is_empty() {
                break;
            }
            out.extend(page.into_iter().filter(|x| x.seq < d.seq));
        }
        if d.seq > self.last {
            self.last = d.seq;
            out.push(d);
        }
        Ok(out)
    }

    /// Why the hub ended this connection; `None` while it has not.
    pub fn killed_for(&self) -> Option<KillReason> {
        self.subscription.killed_for()
    }

    /// Resolves when the hub ends this connection; borrowed and not
    /// allocated (see [`Subscription::until_killed`]).
    pub async fn until_killed(&self) {
        self.subscription.until_killed().await;
    }
}
