//! Replay nonces ([`NonceStore`]): refused while unexpired, accepted again
//! once expired, and bounded without ever evicting.

use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

use super::{Backend, unique};
use crate::replay::{NonceBounds, NonceStore, Recorded};

async fn record(
    store: &dyn NonceStore,
    credential: &str,
    nonce: &str,
    now: i64,
    expires_at: i64,
) -> Recorded {
    store
        .insert(credential, nonce, now, expires_at)
        .await
        .unwrap_or_else(|e| panic!("insert nonce {credential}/{nonce}: {e}"))
}

async fn insert(store: &dyn NonceStore, key: &str, now: i64, expires_at: i64) -> bool {
    match record(store, "suite", key, now, expires_at).await {
        Recorded::New => true,
        Recorded::Replayed => false,
        full => panic!("nonce {key}: the store is not full, yet it answered {full:?}"),
    }
}

/// Bounds: a full store and a full share refuse new nonces, never forget
/// unexpired ones, and one credential's share does not take another's.
///
/// Judged at a `now` far ahead of the clock and later for every call, so
/// that everything recorded before (by other checks and runs on the same
/// server) has expired by then and the store holds only this check's
/// nonces.
pub async fn bounds_refuse_new_nonces_and_evict_none(backend: &dyn Backend) {
    static RUNS: AtomicI64 = AtomicI64::new(0);
    let tag = unique();
    let run = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
    let now = OffsetDateTime::now_utc().unix_timestamp() + run * 10_000_000;
    let store = backend.nonces(NonceBounds::new(5, 3));
    let (a, b, c) = (
        format!("bounds-a-{tag}"),
        format!("bounds-b-{tag}"),
        format!("bounds-c-{tag}"),
    );
    for i in 0..3 {
        assert_eq!(
            record(&*store, &a, &format!("n{i}"), now, now + 300).await,
            Recorded::New
        );
    }
    assert_eq!(
        record(&*store, &a, "n3", now, now + 300).await,
        Recorded::CredentialFull,
        "a credential holding its share records no more"
    );
    assert_eq!(
        record(&*store, &a, "n0", now, now + 300).await,
        Recorded::Replayed,
        "a replay is still refused as a replay when the share is full"
    );
    for i in 0..2 {
        assert_eq!(
            record(&*store, &b, &format!("n{i}"), now, now + 300).await,
            Recorded::New,
            "another credential has its own share"
        );
    }
    assert_eq!(
        record(&*store, &c, "n0", now, now + 300).await,
        Recorded::StoreFull,
        "a full store refuses a new nonce"
    );
    for i in 0..3 {
        assert_eq!(
            record(&*store, &a, &format!("n{i}"), now + 299, now + 600).await,
            Recorded::Replayed,
            "nothing unexpired was evicted to make room"
        );
    }
    assert_eq!(
        record(&*store, &c, "n0", now + 300, now + 600).await,
        Recorded::New,
        "once they expire there is room again"
    );
    assert_eq!(
        record(&*store, &a, "n3", now + 300, now + 600).await,
        Recorded::New,
        "and the credential's share is free again"
    );
}

/// Replay nonces: refused while unexpired, independent per key, accepted
/// again once expired (judged by the `now` given).
pub async fn a_nonce_is_refused_until_it_expires(backend: &dyn Backend) {
    let store = &*backend.nonces(NonceBounds::new(1000, 1000));
    let tag = unique();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (a, b) = (format!("suite-a-{tag}"), format!("suite-b-{tag}"));

    assert!(
        insert(store, &a, now, now + 300).await,
        "a new nonce passes"
    );
    assert!(
        !insert(store, &a, now, now + 300).await,
        "the same nonce is refused while unexpired"
    );
    assert!(
        !insert(store, &a, now + 10, now + 310).await,
        "and still refused later inside its expiry, whatever the new expiry"
    );
    assert!(
        insert(store, &b, now, now + 300).await,
        "another key is independent"
    );
    assert!(!insert(store, &b, now, now + 300).await);
    assert!(
        !insert(store, &a, now, now + 300).await,
        "recording another key did not free the first"
    );

    // An expiry already past (or now) records nothing that could refuse.
    let c = format!("suite-c-{tag}");
    assert!(insert(store, &c, now, now - 1).await);
    assert!(
        insert(store, &c, now, now - 1).await,
        "an already-expired nonce is accepted again"
    );
    assert!(insert(store, &c, now, now).await);
    assert!(
        insert(store, &c, now, now + 300).await,
        "expiring at `now` means expired"
    );
    assert!(
        !insert(store, &c, now, now + 300).await,
        "once recorded with a future expiry it is refused"
    );

    // Expiry is judged by the `now` the caller gives (a test clock may be
    // ahead of the server's).
    let d = format!("suite-d-{tag}");
    assert!(insert(store, &d, now, now + 2).await);
    assert!(!insert(store, &d, now + 1, now + 301).await);
    assert!(
        insert(store, &d, now + 3, now + 303).await,
        "a nonce whose expiry `now` has passed is accepted again"
    );
    assert!(
        !insert(store, &d, now + 4, now + 304).await,
        "and recorded again with its new expiry"
    );
}
