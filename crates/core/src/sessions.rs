//! The active sessions a node has read, so that checking a request's
//! session is a map lookup rather than a store read.
//!
//! Only a node that is the store's one server uses it (no cluster bus):
//! then every write that can end a session goes through this node, and
//! [`SessionCache::invalidate`] runs after each of them commits and before
//! its caller hears of it, so a revocation takes effect exactly as it did
//! with a read per request. Across nodes the bus could not give that
//! guarantee (a node would accept a revoked token until the news reached
//! it), so a cluster node reads the store every time.
//!
//! Invalidation drops everything: revocations are rare next to requests,
//! and a coarse rule is easy to keep right. A read that raced with a
//! revocation cannot put a stale entry back: it is tagged with the epoch
//! taken before the read, and an entry is stored only if no invalidation
//! came in between.

use std::collections::HashMap;

use parking_lot::Mutex;
use unimsg_proto::{SessionId, UserId};

/// Entries kept at most; past it the map starts again from empty.
const CAPACITY: usize = 65_536;

/// The epoch a session read was tagged with ([`SessionCache::epoch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch(u64);

#[derive(Debug)]
pub(crate) struct SessionCache {
    enabled: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    epoch: u64,
    /// Sessions read as active (and whose user was active), with their user.
    active: HashMap<SessionId, UserId>,
}

impl SessionCache {
    /// A cache that keeps nothing unless `enabled`.
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            state: Mutex::default(),
        }
    }

    /// The user of `session` if it was read as active since the last
    /// invalidation.
    pub(crate) fn active(&self, session: &SessionId) -> Option<UserId> {
        if !self.enabled {
            return None;
        }
        self.state.lock().active.get(session).cloned()
    }

    /// Taken before reading a session from the store, for [`Self::insert`].
    pub(crate) fn epoch(&self) -> Epoch {
        Epoch(self.state.lock().epoch)
    }

    /// Remembers that `session` of `user` was read as active by a read
    /// that started at `epoch`; ignored if an invalidation came since.
    pub(crate) fn insert(&self, session: SessionId, user: UserId, epoch: Epoch) {
        if !self.enabled {
            return;
        }
        let mut state = self.state.lock();
        if state.epoch != epoch.0 {
            return;
        }
        if state.active.len() >= CAPACITY {
            state.active.clear();
        }
        state.active.insert(session, user);
    }

    /// Forgets every session: call after committing anything that can end
    /// a session (a revocation, a user disabled, deleted or given a new
    /// password), before anyone is told it happened.
    pub(crate) fn invalidate(&self) {
        let mut state = self.state.lock();
        state.epoch = state.epoch.wrapping_add(1);
        state.active.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u8) -> (SessionId, UserId) {
        let hex = format!("{n:02x}").repeat(16);
        (
            SessionId::parse(hex.clone()).unwrap(),
            UserId::parse(hex).unwrap(),
        )
    }

    #[test]
    fn a_session_read_as_active_is_found_until_an_invalidation() {
        let cache = SessionCache::new(true);
        let (s, u) = ids(1);
        assert_eq!(cache.active(&s), None);
        cache.insert(s.clone(), u.clone(), cache.epoch());
        assert_eq!(cache.active(&s), Some(u));
        cache.invalidate();
        assert_eq!(cache.active(&s), None);
    }

    #[test]
    fn a_read_that_started_before_an_invalidation_is_not_kept() {
        let cache = SessionCache::new(true);
        let (s, u) = ids(2);
        let before = cache.epoch();
        cache.invalidate();
        cache.insert(s.clone(), u, before);
        assert_eq!(cache.active(&s), None);
    }

    #[test]
    fn a_disabled_cache_keeps_nothing() {
        let cache = SessionCache::new(false);
        let (s, u) = ids(3);
        cache.insert(s.clone(), u, cache.epoch());
        assert_eq!(cache.active(&s), None);
    }

    #[test]
    fn a_full_cache_starts_again_and_keeps_the_new_entry() {
        let cache = SessionCache::new(true);
        let epoch = cache.epoch();
        for i in 0..CAPACITY {
            let hex = format!("{i:032x}");
            cache.insert(
                SessionId::parse(hex.clone()).unwrap(),
                UserId::parse(hex).unwrap(),
                epoch,
            );
        }
        let (s, u) = ids(0xee);
        cache.insert(s.clone(), u.clone(), epoch);
        assert_eq!(cache.active(&s), Some(u));
        assert_eq!(cache.state.lock().active.len(), 1);
    }
}
