//! The backend-independent test suite of the core's pluggable ephemeral
//! state: every [`NonceStore`], [`RateLimits`] and [`QrTickets`]
//! implementation must pass it. Backends call [`run_all`] (or the single
//! checks) from their own tests.
//!
//! Every check uses keys of its own (a random suffix), so the suite can run
//! several times against one shared server. Nothing waits for time to pass:
//! expiries are chosen in the past or the future instead, and waiting for
//! an event is bounded by a timeout that only turns a lost event into a
//! failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::broadcast;
use unimsg_proto::{Platform, UserId};

use crate::error::{CoreError, Result};
use crate::limits::{Limit, LimitsConfig, RateLimits, Realm, RetryAfter};
use crate::qr::{QrEvent, QrTickets, Ticket, TicketState};
use crate::replay::{NonceBounds, NonceStore, Recorded};

/// How long an announced event may take to reach a listener.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A random suffix, so that runs against one shared server do not meet.
fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Builds a nonce store with the given bounds (on a shared server, over
/// the same data as every other store it builds).
pub type MakeNonces<'a> = dyn Fn(NonceBounds) -> Arc<dyn NonceStore> + Sync + 'a;

/// Runs every check of the suite. `make_nonces` and `make_limits` build a
/// store or limiter with the given bounds or configuration (the suite needs
/// small ones).
pub async fn run_all(
    make_nonces: &MakeNonces<'_>,
    make_limits: &(dyn Fn(LimitsConfig) -> Arc<dyn RateLimits> + Sync),
    tickets_store: &dyn QrTickets,
) {
    nonces(&*make_nonces(NonceBounds::new(1000, 1000))).await;
    nonce_bounds(make_nonces).await;
    limits(make_limits).await;
    tickets(tickets_store).await;
}

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
pub async fn nonce_bounds(make: &MakeNonces<'_>) {
    static RUNS: AtomicI64 = AtomicI64::new(0);
    let tag = unique();
    let run = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
    let now = OffsetDateTime::now_utc().unix_timestamp() + run * 10_000_000;
    let store = make(NonceBounds::new(5, 3));
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
pub async fn nonces(store: &dyn NonceStore) {
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

/// The configuration [`limits`] builds its limiters with.
pub fn suite_limits() -> LimitsConfig {
    LimitsConfig {
        login_per_minute: 2,
        register_per_minute: 2,
        login_failures_before_backoff: 2,
        account_failures_before_slowdown: 3,
        max_backoff_secs: 4,
        ..LimitsConfig::default()
    }
}

fn refused_within(result: Result<(), RetryAfter>, most: Duration, what: &str) -> Duration {
    match result {
        Err(RetryAfter(d)) => {
            assert!(
                d > Duration::ZERO && d <= most,
                "{what}: retry after {d:?}, expected more than 0 and at most {most:?}"
            );
            d
        }
        Ok(()) => panic!("{what}: expected a refusal"),
    }
}

/// Rate limits and login back-off, with limiters built by `make` from the
/// configuration it is given.
pub async fn limits(make: &(dyn Fn(LimitsConfig) -> Arc<dyn RateLimits> + Sync)) {
    let config = suite_limits();
    let limits = make(config.clone());
    let tag = unique();
    let minute = Duration::from_secs(60);

    // A quota of 2 per minute: the third call is refused until the window
    // allows again; other keys and other limits are independent.
    let (k1, k2) = (format!("10.0.0.1-{tag}"), format!("10.0.0.2-{tag}"));
    for n in 1..=2 {
        assert!(
            limits.check(Limit::Register, &k1).await.is_ok(),
            "call {n} within the quota passes"
        );
    }
    refused_within(
        limits.check(Limit::Register, &k1).await,
        minute,
        "the call over the quota",
    );
    refused_within(
        limits.check(Limit::Register, &k1).await,
        minute,
        "and the one after it",
    );
    assert!(
        limits.check(Limit::Register, &k2).await.is_ok(),
        "another key passes"
    );
    assert!(
        limits.check(Limit::Login, &k1).await.is_ok(),
        "another limit on the same key passes"
    );
    assert!(limits.check(Limit::Login, &k1).await.is_ok());
    refused_within(
        limits.check(Limit::Login, &k1).await,
        minute,
        "the login limit counts on its own",
    );

    // A rate of 0 switches the limit off.
    let off = make(LimitsConfig {
        register_per_minute: 0,
        ..config.clone()
    });
    let k3 = format!("10.0.0.3-{tag}");
    for n in 0..50 {
        assert!(
            off.check(Limit::Register, &k3).await.is_ok(),
            "call {n} with the limit off"
        );
    }

    // The pair rule alone, with an account ceiling out of reach.
    let pairs = make(LimitsConfig {
        account_failures_before_slowdown: 1000,
        ..config.clone()
    });
    login_back_off(&*pairs, &config, &tag).await;
    account_slowdown(&*limits, &config, &tag).await;
    admin_back_off(&*limits, &config, &tag).await;
    send_limits(make, &tag).await;
}

// ---- Per-user send limits (audit item 9) ----
/// `Limit::Send` counts one per call, `Limit::Deliveries` counts `n` per
/// call with `check_n`; more than the quota at once takes the whole quota.
async fn send_limits(make: &(dyn Fn(LimitsConfig) -> Arc<dyn RateLimits> + Sync), tag: &str) {
    let minute = Duration::from_secs(60);
    let limits = make(LimitsConfig {
        send_per_minute: 3,
        deliveries_per_minute: 10,
        ..suite_limits()
    });
    let (u1, u2) = (format!("user1-{tag}"), format!("user2-{tag}"));
    for n in 1..=3 {
        assert!(
            limits.check(Limit::Send, &u1).await.is_ok(),
            "send {n} passes"
        );
    }
    refused_within(
        limits.check(Limit::Send, &u1).await,
        minute,
        "the fourth send",
    );
    for n in 1..=2 {
        assert!(
            limits.check_n(Limit::Deliveries, &u1, 4).await.is_ok(),
            "4 deliveries, time {n}, pass"
        );
    }
    refused_within(
        limits.check_n(Limit::Deliveries, &u1, 4).await,
        minute,
        "12 deliveries of 10",
    );
    assert!(
        limits.check_n(Limit::Deliveries, &u1, 0).await.is_ok(),
        "nothing to deliver passes"
    );
    assert!(
        limits.check_n(Limit::Deliveries, &u2, 25).await.is_ok(),
        "more than the quota at once passes on a full bucket"
    );
    refused_within(
        limits.check_n(Limit::Deliveries, &u2, 1).await,
        minute,
        "and leaves nothing",
    );
    let off = make(LimitsConfig {
        deliveries_per_minute: 0,
        ..suite_limits()
    });
    for n in 0..20 {
        assert!(
            off.check_n(Limit::Deliveries, &u1, 1000).await.is_ok(),
            "call {n} with the limit off"
        );
    }
}
// ---- end of per-user send limits ----

/// Back-off per (account, IP): the pair locks from the threshold on, longer
/// with each failure, and a success clears it; nothing else is locked.
async fn login_back_off(limits: &dyn RateLimits, config: &LimitsConfig, tag: &str) {
    let most = Duration::from_secs(config.max_backoff_secs);
    let user = Realm::User;
    let (bob, carol) = (format!("bob-{tag}"), format!("carol-{tag}"));
    let (ip, other_ip) = (format!("9.9.9.9-{tag}"), format!("8.8.8.8-{tag}"));
    let (ip, other_ip) = (Some(ip.as_str()), Some(other_ip.as_str()));

    assert!(limits.login_locked(user, &bob, ip).await.is_ok());
    // Below the threshold (2): not locked.
    limits.login_failed(user, &bob, ip).await;
    assert!(
        limits.login_locked(user, &bob, ip).await.is_ok(),
        "one failure is below the threshold"
    );
    // At the threshold: that pair is locked, nothing else.
    limits.login_failed(user, &bob, ip).await;
    let first = refused_within(
        limits.login_locked(user, &bob, ip).await,
        most,
        "the pair at the threshold",
    );
    assert!(
        limits.login_locked(user, &bob, other_ip).await.is_ok(),
        "the account from another address is not locked"
    );
    assert!(
        limits.login_locked(user, &carol, ip).await.is_ok(),
        "another account from that address is not locked"
    );
    assert!(
        limits.login_locked(Realm::Admin, &bob, ip).await.is_ok(),
        "an admin id of the same name shares nothing"
    );
    // Each further failure lengthens the lock, up to the ceiling.
    for _ in 0..6 {
        limits.login_failed(user, &bob, ip).await;
    }
    let longest = refused_within(
        limits.login_locked(user, &bob, ip).await,
        most,
        "the lock stays under its ceiling",
    );
    assert!(
        longest > first,
        "further failures lengthen the lock: {first:?}, then {longest:?}"
    );
    // A success clears the pair's lock and failures.
    limits.login_succeeded(user, &bob, ip).await;
    assert!(
        limits.login_locked(user, &bob, ip).await.is_ok(),
        "a success clears the pair's lock"
    );
    limits.login_failed(user, &bob, ip).await;
    assert!(
        limits.login_locked(user, &bob, ip).await.is_ok(),
        "the pair's failures were cleared too: one more is below the threshold"
    );

    // Failures of unknown names from one IP lock no other user there.
    let shared_ip = format!("7.7.7.7-{tag}");
    for n in 0..5 {
        limits
            .login_failed(user, &format!("nobody-{n}-{tag}"), Some(&shared_ip))
            .await;
    }
    assert!(
        limits
            .login_locked(user, &format!("frank-{tag}"), Some(&shared_ip))
            .await
            .is_ok(),
        "no lock per IP across user accounts"
    );
}

/// The account ceiling: past it every pair locks after its first failure,
/// an address without failures is never refused, and a success elsewhere
/// does not lift it.
async fn account_slowdown(limits: &dyn RateLimits, config: &LimitsConfig, tag: &str) {
    let most = Duration::from_secs(config.max_backoff_secs);
    let user = Realm::User;
    let dave = format!("dave-{tag}");
    let ips: Vec<String> = (1..=6).map(|n| format!("6.6.6.{n}-{tag}")).collect();
    let ip = |n: usize| Some(ips[n - 1].as_str());

    // Two failures from two addresses: each pair below its threshold.
    for n in [1, 2] {
        limits.login_failed(user, &dave, ip(n)).await;
        assert!(limits.login_locked(user, &dave, ip(n)).await.is_ok());
    }
    // The account's third failure (its ceiling): that pair locks at once.
    limits.login_failed(user, &dave, ip(3)).await;
    refused_within(
        limits.login_locked(user, &dave, ip(3)).await,
        most,
        "a pair of a slowed account after its first failure",
    );
    assert!(
        limits.login_locked(user, &dave, ip(4)).await.is_ok(),
        "an address without failures is never refused"
    );
    assert!(
        limits.login_locked(user, &dave, ip(1)).await.is_ok(),
        "a pair that failed before the slowdown is not locked until it fails again"
    );
    limits.login_failed(user, &dave, ip(1)).await;
    refused_within(
        limits.login_locked(user, &dave, ip(1)).await,
        most,
        "and then it is",
    );
    limits.login_succeeded(user, &dave, ip(5)).await;
    limits.login_failed(user, &dave, ip(6)).await;
    refused_within(
        limits.login_locked(user, &dave, ip(6)).await,
        most,
        "a success from one address does not lift the slowdown",
    );
    assert!(
        limits
            .login_locked(user, &format!("erin-{tag}"), ip(6))
            .await
            .is_ok(),
        "other accounts are not slowed"
    );
}

/// Admin credentials: the pair rule in their own namespace, plus a
/// back-off per IP across admin ids.
async fn admin_back_off(limits: &dyn RateLimits, config: &LimitsConfig, tag: &str) {
    let most = Duration::from_secs(config.max_backoff_secs);
    let admin = Realm::Admin;
    let (ip, other_ip) = (format!("5.5.5.5-{tag}"), format!("4.4.4.4-{tag}"));
    let (ip, other_ip) = (Some(ip.as_str()), Some(other_ip.as_str()));
    let ghost = |n: u32| format!("ghost-{n}-{tag}");

    limits.login_failed(admin, &ghost(1), ip).await;
    assert!(limits.login_locked(admin, &ghost(2), ip).await.is_ok());
    limits.login_failed(admin, &ghost(2), ip).await;
    refused_within(
        limits.login_locked(admin, &ghost(3), ip).await,
        most,
        "the IP after failures of two admin ids",
    );
    assert!(
        limits
            .login_locked(admin, &ghost(3), other_ip)
            .await
            .is_ok(),
        "another IP is not locked"
    );
    assert!(
        limits
            .login_locked(Realm::User, &ghost(3), ip)
            .await
            .is_ok(),
        "user logins from that IP are not locked"
    );
    // The pair rule holds for admins too (without an address, so no IP
    // lock is involved).
    let (real, elsewhere) = (format!("real-{tag}"), format!("3.3.3.3-{tag}"));
    let elsewhere = Some(elsewhere.as_str());
    for _ in 0..2 {
        limits.login_failed(admin, &real, None).await;
    }
    refused_within(
        limits.login_locked(admin, &real, None).await,
        most,
        "the (admin id, IP) pair at the threshold",
    );
    assert!(
        limits.login_locked(admin, &real, elsewhere).await.is_ok(),
        "the admin id from another address is not locked"
    );
}

/// A pending ticket with a unique id, code and device, open for five
/// minutes from `now`.
pub fn pending_ticket(now: OffsetDateTime) -> Ticket {
    let tag = unique();
    Ticket {
        code: tag[..8].to_uppercase(),
        page_hash: crate::qr::page_hash(&format!("secret-{tag}")),
        ticket_id: tag.clone(),
        platform: Platform::parse("web").unwrap_or_else(|e| panic!("{e}")),
        device_id: Some(format!("device-{tag}")),
        ip: Some("192.0.2.1".into()),
        user_agent: Some("suite".into()),
        created_at: now,
        expires_at: now + time::Duration::minutes(5),
        state: TicketState::Pending,
    }
}

/// The next event on `rx`; fails if none comes within a few seconds.
pub async fn next_event(rx: &mut broadcast::Receiver<QrEvent>, what: &str) -> QrEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, rx.recv()).await {
        Ok(Ok(event)) => event,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no event within {EVENT_TIMEOUT:?}"),
    }
}

/// The name a `Scanned` event carries (the suite marks events with it).
fn marker(event: &QrEvent) -> &str {
    match event {
        QrEvent::Scanned { display_name } => display_name,
        other => panic!("expected a Scanned event, got {other:?}"),
    }
}

fn scanned(name: &str) -> QrEvent {
    QrEvent::Scanned {
        display_name: name.to_owned(),
    }
}

async fn get(store: &dyn QrTickets, id: &str) -> Ticket {
    store
        .get(id)
        .await
        .unwrap_or_else(|e| panic!("get {id}: {e}"))
        .unwrap_or_else(|| panic!("ticket {id} not found"))
}

async fn subscribe(store: &dyn QrTickets, id: &str) -> broadcast::Receiver<QrEvent> {
    store
        .subscribe(id)
        .await
        .unwrap_or_else(|e| panic!("subscribe {id}: {e}"))
        .unwrap_or_else(|| panic!("ticket {id} not found to subscribe"))
}

fn same(found: &Ticket, expected: &Ticket, what: &str) {
    assert_eq!(found.ticket_id, expected.ticket_id, "{what}: id");
    assert_eq!(found.code, expected.code, "{what}: code");
    assert_eq!(found.page_hash, expected.page_hash, "{what}: page hash");
    assert_eq!(found.platform, expected.platform, "{what}: platform");
    assert_eq!(found.device_id, expected.device_id, "{what}: device");
    assert_eq!(found.ip, expected.ip, "{what}: ip");
    assert_eq!(found.user_agent, expected.user_agent, "{what}: user agent");
    assert_eq!(found.created_at, expected.created_at, "{what}: created_at");
    assert_eq!(found.expires_at, expected.expires_at, "{what}: expires_at");
    assert_eq!(found.state, expected.state, "{what}: state");
}

/// QR login tickets: lookups, device binding, atomic updates announced to
/// listeners, refused changes, and racing claims.
pub async fn tickets(store: &dyn QrTickets) {
    let now = OffsetDateTime::now_utc();
    lookups(store, now).await;
    updates(store, now).await;
    racing_claims(store, now).await;
}

async fn lookups(store: &dyn QrTickets, now: OffsetDateTime) {
    let ticket = pending_ticket(now);
    let id = ticket.ticket_id.clone();
    let page = ticket.page_hash.clone();
    store
        .insert(ticket.clone())
        .await
        .unwrap_or_else(|e| panic!("insert: {e}"));

    same(&get(store, &id).await, &ticket, "by id");
    let by_code = store
        .by_code(&ticket.code)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("not found by code"));
    same(&by_code, &ticket, "by code");
    let missing = format!("missing-{}", unique());
    assert!(
        store
            .get(&missing)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );
    assert!(
        store
            .by_code(&missing)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );

    // The page's own ticket, by its secret's hash: only while open and unexpired.
    let open = |at: OffsetDateTime| {
        let page = page.clone();
        async move {
            store
                .open_for_page(&page, at)
                .await
                .unwrap_or_else(|e| panic!("open_for_page: {e}"))
        }
    };
    let found = open(now)
        .await
        .unwrap_or_else(|| panic!("the page's open ticket"));
    same(&found, &ticket, "by page");
    assert!(
        open(ticket.expires_at - time::Duration::seconds(1))
            .await
            .is_some()
    );
    assert!(
        open(ticket.expires_at).await.is_none(),
        "not once expired (at `now`)"
    );
    assert!(
        open(ticket.expires_at + time::Duration::minutes(1))
            .await
            .is_none()
    );
    assert!(
        store
            .open_for_page(&crate::qr::page_hash(&missing), now)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "an unknown secret has none"
    );
    // Another ticket of the same device is not this page's.
    let mut same_device = pending_ticket(now);
    same_device.device_id = ticket.device_id.clone();
    store
        .insert(same_device.clone())
        .await
        .unwrap_or_else(|e| panic!("insert: {e}"));
    let found = open(now)
        .await
        .unwrap_or_else(|| panic!("the page's ticket after another of its device"));
    same(
        &found,
        &ticket,
        "by page, beside another ticket of the device",
    );

    // Closed: no longer the device's open ticket, though still readable.
    store
        .update(&id, &mut |t| {
            t.state = TicketState::Cancelled;
            Ok(None)
        })
        .await
        .unwrap_or_else(|e| panic!("cancel: {e}"));
    assert!(open(now).await.is_none(), "a closed ticket is not open");
    assert_eq!(get(store, &id).await.state, TicketState::Cancelled);

    // Unknown tickets cannot be updated or listened to.
    let result = store.update(&missing, &mut |_| Ok(None)).await;
    assert!(
        matches!(result, Err(CoreError::NotFound(_))),
        "update of an unknown ticket: {result:?}"
    );
    assert!(
        store
            .subscribe(&missing)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "subscribing to an unknown ticket"
    );
}

async fn updates(store: &dyn QrTickets, now: OffsetDateTime) {
    let ticket = pending_ticket(now);
    let id = ticket.ticket_id.clone();
    store
        .insert(ticket.clone())
        .await
        .unwrap_or_else(|e| panic!("insert: {e}"));
    let mut rx = subscribe(store, &id).await;
    let mut second = subscribe(store, &id).await;

    // A change is stored whole, returned, and its event announced to every
    // listener.
    let by = UserId::parse(format!("u{}", unique())).unwrap_or_else(|e| panic!("{e}"));
    let updated = store
        .update(&id, &mut |t| {
            assert_eq!(t.state, TicketState::Pending, "the change sees the state");
            t.state = TicketState::Scanned {
                by: by.clone(),
                display_name: "Scanner".into(),
            };
            t.user_agent = Some("changed".into());
            Ok(Some(scanned("first")))
        })
        .await
        .unwrap_or_else(|e| panic!("update: {e}"));
    let mut expected = ticket.clone();
    expected.state = TicketState::Scanned {
        by: by.clone(),
        display_name: "Scanner".into(),
    };
    expected.user_agent = Some("changed".into());
    same(&updated, &expected, "the update's answer");
    same(&get(store, &id).await, &expected, "after the update");
    assert_eq!(
        marker(&next_event(&mut rx, "the update's event").await),
        "first"
    );
    assert_eq!(
        marker(&next_event(&mut second, "the second listener").await),
        "first"
    );

    // A change that fails changes nothing and announces nothing.
    let result = store
        .update(&id, &mut |t| {
            t.state = TicketState::Confirmed;
            t.ip = None;
            Err(CoreError::Conflict("refused by the suite".into()))
        })
        .await;
    assert!(
        matches!(result, Err(CoreError::Conflict(_))),
        "the change's error is returned: {result:?}"
    );
    same(&get(store, &id).await, &expected, "after a refused change");

    // A change without an event is stored, and announces nothing.
    let quiet = store
        .update(&id, &mut |t| {
            t.user_agent = Some("quiet".into());
            Ok(None)
        })
        .await
        .unwrap_or_else(|e| panic!("update: {e}"));
    expected.user_agent = Some("quiet".into());
    same(&quiet, &expected, "a change without an event");
    same(&get(store, &id).await, &expected, "after a quiet change");

    // The next event heard is the next one announced: nothing came from the
    // refused or the quiet change.
    store
        .update(&id, &mut |_| Ok(Some(scanned("second"))))
        .await
        .unwrap_or_else(|e| panic!("update: {e}"));
    assert_eq!(
        marker(&next_event(&mut rx, "the event after").await),
        "second",
        "no event from a refused or quiet change"
    );
    assert_eq!(
        marker(&next_event(&mut second, "the event after").await),
        "second"
    );

    // A listener that joins later hears what follows.
    let mut late = subscribe(store, &id).await;
    store
        .update(&id, &mut |t| {
            t.state = TicketState::Expired;
            Ok(Some(QrEvent::Expired))
        })
        .await
        .unwrap_or_else(|e| panic!("update: {e}"));
    for (rx, who) in [
        (&mut rx, "first"),
        (&mut second, "second"),
        (&mut late, "late"),
    ] {
        let event = next_event(rx, who).await;
        assert!(
            matches!(event, QrEvent::Expired),
            "{who} listener: {event:?}"
        );
    }
    assert_eq!(get(store, &id).await.state, TicketState::Expired);
}

async fn racing_claims(store: &dyn QrTickets, now: OffsetDateTime) {
    let ticket = pending_ticket(now);
    let id = ticket.ticket_id.clone();
    store
        .insert(ticket)
        .await
        .unwrap_or_else(|e| panic!("insert: {e}"));
    let mut rx = subscribe(store, &id).await;

    // Two claims at once: each confirms the ticket only if it is still
    // open; exactly one may win.
    let calls = AtomicUsize::new(0);
    let claim = |name: &'static str| {
        let calls = &calls;
        move |t: &mut Ticket| -> Result<Option<QrEvent>> {
            calls.fetch_add(1, Ordering::Relaxed);
            if !t.state.is_open() {
                return Err(CoreError::Conflict("already claimed".into()));
            }
            t.state = TicketState::Confirmed;
            Ok(Some(scanned(name)))
        }
    };
    let (mut a, mut b) = (claim("a"), claim("b"));
    let (ra, rb) = tokio::join!(store.update(&id, &mut a), store.update(&id, &mut b));
    let winner = match (&ra, &rb) {
        (Ok(t), Err(CoreError::Conflict(_))) | (Err(CoreError::Conflict(_)), Ok(t)) => {
            assert_eq!(t.state, TicketState::Confirmed);
            if ra.is_ok() { "a" } else { "b" }
        }
        _ => panic!("exactly one claim must win, the other see a conflict: {ra:?}, {rb:?}"),
    };
    assert!(calls.load(Ordering::Relaxed) >= 2);
    assert_eq!(get(store, &id).await.state, TicketState::Confirmed);

    // Only the winner announced: its event, then the next one announced.
    assert_eq!(
        marker(&next_event(&mut rx, "the winning claim").await),
        winner
    );
    store
        .update(&id, &mut |_| Ok(Some(scanned("after"))))
        .await
        .unwrap_or_else(|e| panic!("update: {e}"));
    assert_eq!(
        marker(&next_event(&mut rx, "after the race").await),
        "after",
        "the losing claim announced nothing"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MemoryLimits;
    use crate::qr::MemoryTickets;
    use crate::replay::MemoryNonces;

    #[tokio::test]
    async fn the_memory_implementations_pass_the_suite() {
        let tickets = MemoryTickets::default();
        let nonces =
            |bounds: NonceBounds| -> Arc<dyn NonceStore> { Arc::new(MemoryNonces::new(bounds)) };
        let make =
            |config: LimitsConfig| -> Arc<dyn RateLimits> { Arc::new(MemoryLimits::new(config)) };
        run_all(&nonces, &make, &tickets).await;
        // Twice on the same stores: every run uses keys of its own.
        run_all(&nonces, &make, &tickets).await;
    }
}
