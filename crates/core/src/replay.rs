//! Replay protection for the admin API: `X-Nonce` + `X-Timestamp`.
//!
//! A timestamp further than the window from now is refused (401); a nonce
//! already seen inside the window is refused (409). Nonces are kept in a
//! bounded store that forgets them when they age out of the window, so a
//! flood of nonces cannot grow memory. The store is a trait: one node keeps
//! it in memory, a cluster shares it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::{CoreError, Result};

/// Remembers nonces until they expire.
#[async_trait]
pub trait NonceStore: Send + Sync {
    /// Records `key` until `expires_at` (Unix seconds). `false` if it was
    /// already recorded and has not expired; an error when the shared store
    /// cannot be reached (the request is refused, not let through).
    async fn insert(&self, key: &str, now: i64, expires_at: i64) -> Result<bool>;
}

/// The single-node nonce store: a map plus an expiry queue, bounded.
#[derive(Debug)]
pub struct MemoryNonces {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

impl MemoryNonces {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }
}

#[async_trait]
impl NonceStore for MemoryNonces {
    async fn insert(&self, key: &str, now: i64, expires_at: i64) -> Result<bool> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| CoreError::Internal("nonce store poisoned".into()))?;
        // Forget what has expired, and the oldest when over capacity.
        while let Some((expiry, _)) = inner.order.front() {
            if *expiry > now && inner.order.len() < self.capacity {
                break;
            }
            if let Some((expiry, old)) = inner.order.pop_front()
                && inner.seen.get(&old) == Some(&expiry)
            {
                inner.seen.remove(&old);
            }
        }
        if inner.seen.get(key).is_some_and(|expiry| *expiry > now) {
            return Ok(false);
        }
        inner.seen.insert(key.to_owned(), expires_at);
        inner.order.push_back((expires_at, key.to_owned()));
        Ok(true)
    }
}

/// Checks a request's nonce and timestamp. `required` refuses requests
/// that carry neither.
pub async fn check(
    store: &dyn NonceStore,
    credential: &str,
    nonce: Option<&str>,
    timestamp: Option<&str>,
    now: i64,
    window: i64,
    required: bool,
) -> Result<()> {
    let (nonce, timestamp) = match (nonce, timestamp) {
        (None, None) if !required => return Ok(()),
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
    if !store
        .insert(&format!("{credential}\n{nonce}"), now, ts + window + 1)
        .await?
    {
        return Err(CoreError::Conflict("this nonce was already used".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_nonce_is_refused_inside_the_window_and_forgotten_after() {
        let store = MemoryNonces::new(10);
        assert!(
            check(&store, "a", Some("n1"), Some("1000"), 1000, 300, false)
                .await
                .is_ok()
        );
        assert!(matches!(
            check(&store, "a", Some("n1"), Some("1000"), 1010, 300, false).await,
            Err(CoreError::Conflict(_))
        ));
        // Another credential may use the same nonce.
        assert!(
            check(&store, "b", Some("n1"), Some("1000"), 1010, 300, false)
                .await
                .is_ok()
        );
        // After the window the timestamp itself is refused.
        assert!(matches!(
            check(&store, "a", Some("n1"), Some("1000"), 1301, 300, false).await,
            Err(CoreError::Unauthorized(_))
        ));
        assert!(matches!(
            check(&store, "a", Some("n2"), Some("0"), 3600, 300, false).await,
            Err(CoreError::Unauthorized(_))
        ));
    }

    #[tokio::test]
    async fn missing_headers_pass_unless_required_and_the_store_stays_bounded() {
        let store = MemoryNonces::new(3);
        assert!(check(&store, "a", None, None, 0, 300, false).await.is_ok());
        assert!(matches!(
            check(&store, "a", None, None, 0, 300, true).await,
            Err(CoreError::Unauthorized(_))
        ));
        assert!(matches!(
            check(&store, "a", Some("x"), None, 0, 300, false).await,
            Err(CoreError::Unauthorized(_))
        ));
        for i in 0..100 {
            assert!(
                check(
                    &store,
                    "a",
                    Some(&format!("n{i}")),
                    Some("0"),
                    0,
                    300,
                    false
                )
                .await
                .is_ok()
            );
        }
        let inner = store.inner.lock().unwrap_or_else(|p| p.into_inner());
        assert!(inner.seen.len() <= 3 && inner.order.len() <= 3);
    }
}
