//! Rate limits and login back-off
//! ([`RateLimits`](crate::limits::RateLimits)): fixed quotas per key and
//! limit, the pair and account rules for users, the address rule for
//! admins, and the per-user send windows.

use std::time::Duration;

use super::{Backend, unique};
use crate::limits::{Limit, LimitsConfig, Realm, RetryAfter};

/// The configuration the checks of rate limits build their limiters with.
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

/// A quota of 2 per minute: the third call is refused until the window
/// allows again; other keys and other limits are independent.
pub async fn quotas_hold_per_key_and_per_limit(backend: &dyn Backend) {
    let limits = backend.limits(suite_limits());
    let tag = unique();
    let minute = Duration::from_secs(60);
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
}

/// A rate of 0 switches the limit off.
pub async fn a_rate_of_zero_switches_a_limit_off(backend: &dyn Backend) {
    let off = backend.limits(LimitsConfig {
        register_per_minute: 0,
        ..suite_limits()
    });
    let tag = unique();
    let k3 = format!("10.0.0.3-{tag}");
    for n in 0..50 {
        assert!(
            off.check(Limit::Register, &k3).await.is_ok(),
            "call {n} with the limit off"
        );
    }
}

/// Per-user send limits (audit item 9): `Limit::Send` counts one per
/// call, `Limit::Deliveries` counts `n` per call with `check_n`; more than
/// the quota at once takes the whole quota.
pub async fn sends_and_deliveries_are_counted_per_user(backend: &dyn Backend) {
    let tag = unique();
    let minute = Duration::from_secs(60);
    let limits = backend.limits(LimitsConfig {
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
    let off = backend.limits(LimitsConfig {
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

/// Back-off per (account, IP), with the account ceiling out of reach so
/// the pair rule acts alone: the pair locks from the threshold on, longer
/// with each failure, and a success clears it; nothing else is locked.
pub async fn a_failing_pair_backs_off_until_a_success(backend: &dyn Backend) {
    let config = suite_limits();
    let limits = &*backend.limits(LimitsConfig {
        account_failures_before_slowdown: 1000,
        ..config.clone()
    });
    let tag = unique();
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
pub async fn past_the_account_ceiling_every_failing_pair_locks(backend: &dyn Backend) {
    let config = suite_limits();
    let limits = &*backend.limits(config.clone());
    let tag = unique();
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
pub async fn admin_failures_back_off_their_address(backend: &dyn Backend) {
    let config = suite_limits();
    let limits = &*backend.limits(config.clone());
    let tag = unique();
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
