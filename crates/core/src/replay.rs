//! Replay protection for the admin API: `X-Nonce` + `X-Timestamp`.
//!
//! A timestamp further than the window from now is refused (401); a nonce
//! already seen inside the window is refused (409). Only requests whose
//! credential was verified record a nonce, keyed by that credential, so a
//! client without credentials cannot put anything into the store.
//!
//! A nonce is never forgotten inside its window: forgetting one would let
//! its request run twice. The store is bounded overall and per credential,
//! and when a bound is reached new nonces are refused (503 `busy`) instead
//! of evicting old ones; one credential can use at most its own share, so
//! it cannot crowd out the others. The store is a trait: one node keeps it
//! in memory, a cluster shares it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::error::{CoreError, Result};

/// What [`NonceStore::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded until its expiry (or already expired: nothing to record).
    New,
    /// Already recorded for this credential and not expired.
    Replayed,
    /// This credential holds its share of unexpired nonces; nothing recorded.
    CredentialFull,
    /// The store holds its capacity of unexpired nonces; nothing recorded.
    StoreFull,
}

/// How many unexpired nonces a store holds, overall and per credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceBounds {
    pub capacity: usize,
    pub per_credential: usize,
}

impl NonceBounds {
    pub fn new(capacity: usize, per_credential: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            per_credential: per_credential.max(1),
        }
    }
}

/// Remembers nonces per credential until they expire.
#[async_trait]
pub trait NonceStore: Send + Sync {
    /// Records `nonce` of `credential` until `expires_at` (Unix seconds;
    /// expired means `expires_at <= now`). Never forgets an unexpired
    /// nonce to make room; an error when the shared store cannot be reached
    /// (the request is refused, not let through).
    async fn insert(
        &self,
        credential: &str,
        nonce: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Recorded>;
}

/// The single-node nonce store: the nonces of each credential, and one
/// heap of every expiry, so that everything expired is forgotten before a
/// bound is judged.
#[derive(Debug)]
pub struct MemoryNonces {
    inner: Mutex<Inner>,
    bounds: NonceBounds,
}

#[derive(Debug, Default)]
struct Inner {
    by_credential: HashMap<String, HashSet<String>>,
    /// One entry per recorded nonce: `(expiry, credential, nonce)`.
    expiries: BinaryHeap<Reverse<(i64, String, String)>>,
}

impl Inner {
    fn forget_expired(&mut self, now: i64) {
        while self
            .expiries
            .peek()
            .is_some_and(|Reverse((expiry, _, _))| *expiry <= now)
        {
            let Some(Reverse((_, credential, nonce))) = self.expiries.pop() else {
                break;
            };
            if let Some(set) = self.by_credential.get_mut(&credential) {
                set.remove(&nonce);
                if set.is_empty() {
                    self.by_credential.remove(&credential);
                }
            }
        }
    }
}

impl MemoryNonces {
    pub fn new(bounds: NonceBounds) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            bounds: NonceBounds::new(bounds.capacity, bounds.per_credential),
        }
    }
}

#[async_trait]
impl NonceStore for MemoryNonces {
    async fn insert(
        &self,
        credential: &str,
        nonce: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Recorded> {
        let mut inner = self.inner.lock();
        inner.forget_expired(now);
        let held = inner.by_credential.get(credential);
        if held.is_some_and(|set| set.contains(nonce)) {
            return Ok(Recorded::Replayed);
        }
        if expires_at <= now {
            return Ok(Recorded::New);
        }
        if held.is_some_and(|set| set.len() >= self.bounds.per_credential) {
            return Ok(Recorded::CredentialFull);
        }
        if inner.expiries.len() >= self.bounds.capacity {
            return Ok(Recorded::StoreFull);
        }
        inner
            .by_credential
            .entry(credential.to_owned())
            .or_default()
            .insert(nonce.to_owned());
        inner.expiries.push(Reverse((
            expires_at,
            credential.to_owned(),
            nonce.to_owned(),
        )));
        Ok(Recorded::New)
    }
}

/// The refusal when a credential holds its share of the store.
pub const CREDENTIAL_FULL: &str =
    "too many recent nonces for this credential; retry when older ones expire";

/// The refusal when the whole store is full.
pub const STORE_FULL: &str = "the replay store is full; retry later";

/// The replay headers of one request, and the credential they are kept
/// under.
#[derive(Debug, Clone, Copy)]
pub struct ReplayHeaders<'a> {
    /// The verified credential (the admin id).
    pub credential: &'a str,
    /// `X-Nonce`.
    pub nonce: Option<&'a str>,
    /// `X-Timestamp`, Unix seconds.
    pub timestamp: Option<&'a str>,
}

/// What [`check`] holds the headers to.
#[derive(Debug, Clone, Copy)]
pub struct ReplayRule {
    /// Unix seconds now.
    pub now: i64,
    /// How far `X-Timestamp` may be from `now`, in seconds.
    pub window: i64,
    /// Whether a request that carries neither header is refused.
    pub required: bool,
}

/// Checks a request's nonce and timestamp for an authenticated credential.
pub async fn check(
    store: &dyn NonceStore,
    headers: ReplayHeaders<'_>,
    rule: ReplayRule,
) -> Result<()> {
    verdict(record(store, headers, rule).await?)
}

/// The answer a request gets for what [`record`] made of its nonce.
pub fn verdict(recorded: Option<Recorded>) -> Result<()> {
    match recorded {
        None | Some(Recorded::New) => Ok(()),
        Some(Recorded::Replayed) => Err(CoreError::Conflict("this nonce was already used".into())),
        Some(Recorded::CredentialFull) => Err(CoreError::Busy(CREDENTIAL_FULL)),
        Some(Recorded::StoreFull) => Err(CoreError::Busy(STORE_FULL)),
    }
}

/// Checks the headers and records the nonce: `None` when the request
/// carries neither header and none is required, else what the store made
/// of the nonce. Malformed or stale headers are errors.
pub async fn record(
    store: &dyn NonceStore,
    headers: ReplayHeaders<'_>,
    rule: ReplayRule,
) -> Result<Option<Recorded>> {
    let ReplayHeaders {
        credential,
        nonce,
        timestamp,
    } = headers;
    let ReplayRule {
        now,
        window,
        required,
    } = rule;
    let (nonce, timestamp) = match (nonce, timestamp) {
        (None, None) if !required => return Ok(None),
        (Some(n), Some(t)) => (n, t),
        _ => {
            return Err(CoreError::Unauthorized(
                "X-Nonce and X-Timestamp are required together",
            ));
        }
    };
    if nonce.is_empty() || nonce.len() > 128 {
        return Err(CoreError::BadRequest(
            "X-Nonce must be 1 to 128 characters".into(),
        ));
    }
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| CoreError::BadRequest("X-Timestamp must be Unix seconds".into()))?;
    if (now - ts).abs() > window {
        return Err(CoreError::Unauthorized(
            "X-Timestamp is outside the accepted window",
        ));
    }
    // Remembered for the whole time its timestamp stays acceptable: the
    // last accepted second is `ts + window`, so it expires one after.
    let recorded = store
        .insert(credential, nonce, now, ts + window + 1)
        .await?;
    Ok(Some(recorded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(capacity: usize, per_credential: usize) -> MemoryNonces {
        MemoryNonces::new(NonceBounds::new(capacity, per_credential))
    }

    fn held(store: &MemoryNonces) -> usize {
        store.inner.lock().expiries.len()
    }

    fn rule(now: i64, required: bool) -> ReplayRule {
        ReplayRule {
            now,
            window: 300,
            required,
        }
    }

    fn headers<'a>(
        credential: &'a str,
        nonce: Option<&'a str>,
        timestamp: Option<&'a str>,
    ) -> ReplayHeaders<'a> {
        ReplayHeaders {
            credential,
            nonce,
            timestamp,
        }
    }

    async fn at(store: &MemoryNonces, who: &str, nonce: &str, ts: i64, now: i64) -> Result<()> {
        let ts = ts.to_string();
        check(
            store,
            headers(who, Some(nonce), Some(&ts)),
            rule(now, false),
        )
        .await
    }

    #[tokio::test]
    async fn a_nonce_is_refused_inside_the_window_and_forgotten_after() {
        let store = store(10, 10);
        assert!(at(&store, "a", "n1", 1000, 1000).await.is_ok());
        assert!(matches!(
            at(&store, "a", "n1", 1000, 1010).await,
            Err(CoreError::Conflict(_))
        ));
        // Another credential may use the same nonce.
        assert!(at(&store, "b", "n1", 1000, 1010).await.is_ok());
        // After the window the timestamp itself is refused.
        assert!(matches!(
            at(&store, "a", "n1", 1000, 1301).await,
            Err(CoreError::Unauthorized(_))
        ));
        assert!(matches!(
            at(&store, "a", "n2", 0, 3600).await,
            Err(CoreError::Unauthorized(_))
        ));
    }

    #[tokio::test]
    async fn missing_headers_pass_unless_required() {
        let store = store(3, 3);
        let none = headers("a", None, None);
        assert!(check(&store, none, rule(0, false)).await.is_ok());
        assert!(matches!(
            check(&store, none, rule(0, true)).await,
            Err(CoreError::Unauthorized(_))
        ));
        assert!(matches!(
            check(&store, headers("a", Some("x"), None), rule(0, false)).await,
            Err(CoreError::Unauthorized(_))
        ));
    }

    /// The attack of the audit: fill the store with fresh nonces, then
    /// replay an old one. A full store refuses the fresh ones instead.
    #[tokio::test]
    async fn a_full_store_refuses_new_nonces_and_never_forgets_unexpired_ones() {
        let store = store(4, 4);
        assert!(at(&store, "admin", "broadcast-1", 1000, 1000).await.is_ok());
        for i in 0..3 {
            assert!(
                at(&store, "other", &format!("f{i}"), 1000, 1000)
                    .await
                    .is_ok()
            );
        }
        for i in 3..100 {
            assert!(matches!(
                at(&store, "other", &format!("f{i}"), 1000, 1001).await,
                Err(CoreError::Busy(STORE_FULL))
            ));
        }
        assert!(
            matches!(
                at(&store, "admin", "broadcast-1", 1000, 1200).await,
                Err(CoreError::Conflict(_))
            ),
            "the replay is still refused"
        );
        assert_eq!(held(&store), 4);
        // Once the window has passed the room is free again.
        assert!(at(&store, "other", "later", 1301, 1301).await.is_ok());
        assert_eq!(held(&store), 1, "every expired nonce was forgotten");
    }

    #[tokio::test]
    async fn one_credential_cannot_take_the_share_of_another() {
        let store = store(10, 3);
        for i in 0..3 {
            assert!(
                at(&store, "greedy", &format!("g{i}"), 1000, 1000)
                    .await
                    .is_ok()
            );
        }
        assert!(matches!(
            at(&store, "greedy", "g3", 1000, 1000).await,
            Err(CoreError::Busy(CREDENTIAL_FULL))
        ));
        assert!(
            matches!(
                at(&store, "greedy", "g0", 1000, 1000).await,
                Err(CoreError::Conflict(_))
            ),
            "a replay is still a replay when the share is full"
        );
        for i in 0..3 {
            assert!(
                at(&store, "modest", &format!("m{i}"), 1000, 1000)
                    .await
                    .is_ok()
            );
        }
    }

    #[tokio::test]
    async fn expiries_out_of_order_are_all_forgotten() {
        let store = store(3, 3);
        // Timestamps anywhere in the window: expiries are not in insertion order.
        assert!(at(&store, "a", "late", 1200, 1000).await.is_ok());
        assert!(at(&store, "a", "early", 800, 1000).await.is_ok());
        assert!(at(&store, "a", "mid", 1000, 1000).await.is_ok());
        // At 1101 only `early` (expiry 1101) has gone.
        assert!(at(&store, "a", "x", 1101, 1101).await.is_ok());
        assert!(matches!(
            at(&store, "a", "y", 1101, 1101).await,
            Err(CoreError::Busy(_))
        ));
        assert!(matches!(
            at(&store, "a", "late", 1200, 1400).await,
            Err(CoreError::Conflict(_))
        ));
    }
}
