//! Rate limits and login back-off.
//!
//! Keyed token buckets (governor's GCRA) limit logins, registrations and
//! token requests per IP and admin calls per credential; a refusal carries
//! the time until the next request may pass (`Retry-After`). One node
//! keeps the counters in memory; the trait lets a cluster share them.
//!
//! Failed password checks back off by **(account, IP)**, so that nobody
//! can lock someone else's account from their own address:
//!
//! - Each pair counts its failures; from
//!   `limits.login_failures_before_backoff` on, each failure locks that
//!   pair for 1 s, 2 s, 4 s… up to `limits.max_backoff_secs`. A success
//!   clears the pair.
//! - Each account also counts its failures from every address. From
//!   `limits.account_failures_before_slowdown` on, every pair of that
//!   account is locked after its *first* failure instead: a guesser spread
//!   over many addresses gets one guess per address per back-off period,
//!   while the right password from an address without failures is never
//!   refused. The account itself is never locked; its count is forgotten
//!   when its failures stop (a success does not clear it, or the owner's
//!   login would hand a distributed guesser a fresh allowance).
//! - There is no lock per IP across user accounts: spraying one password
//!   over many accounts from one address is bounded by the per-IP login
//!   rate (`limits.login_per_minute`).
//! - Admin credentials ([`Realm::Admin`]) follow the same rule in their
//!   own key namespace, plus a back-off per IP across admin ids (from
//!   `login_failures_before_backoff` failures on): business systems call
//!   from fixed addresses and their remembered secrets are checked before
//!   any back-off, so a flood of made-up admin ids from one address stops
//!   costing password hashes after a few attempts.
//!
//! Failures are remembered until twice the longest lock (at least two
//! minutes) has passed since the last one, so a lock at the ceiling ends
//! while its count is still known and the next failure locks at the
//! ceiling again.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock as _, MonotonicClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter as Gcra};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// What is being limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `POST /v1/auth/login`, per IP.
    Login,
    /// `POST /v1/auth/register`, per IP.
    Register,
    /// `POST /v1/auth/refresh` and `POST /v1/admin/token`, per IP.
    Token,
    /// Any admin request, per admin credential.
    Admin,
    /// `POST /v1/auth/qr` (new login tickets), per IP.
    Qr,
    /// `GET /v1/users?username=` (a user looked up by username), per user.
    Lookup,
    // ---- Per-user send limits (audit item 9) ----
    /// Messages a user sends, direct and to groups (WebSocket `send` too),
    /// per user id.
    Send,
    /// Inbox rows a user's messages write for others — 1 per direct
    /// message, the other members for a group message — per user id;
    /// counted with [`RateLimits::check_n`].
    Deliveries,
    // ---- end of per-user send limits ----
}

impl Limit {
    /// The name `unimsg_rate_limited_total{limit}` counts it under.
    pub fn label(self) -> &'static str {
        match self {
            Limit::Login => "login",
            Limit::Register => "register",
            Limit::Token => "token",
            Limit::Admin => "admin",
            Limit::Qr => "qr",
            Limit::Lookup => "lookup",
            Limit::Send => "send",
            Limit::Deliveries => "deliveries",
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Login attempts per minute from one IP.
    pub login_per_minute: u32,
    /// Registrations per minute from one IP.
    pub register_per_minute: u32,
    /// Token requests (refresh, admin token) per minute from one IP.
    pub token_per_minute: u32,
    /// Admin API requests per second per admin credential.
    pub admin_per_second: u32,
    /// QR login tickets created per minute from one IP.
    pub qr_per_minute: u32,
    /// Users one user may look up by username per minute.
    pub lookup_per_minute: u32,
    /// Failed logins of one account from one IP before that pair backs
    /// off (and failed admin authentications from one IP, across admin
    /// ids, before that IP backs off).
    pub login_failures_before_backoff: u32,
    /// Failed logins of one account, from all IPs together, after which
    /// every IP backs off after its first failure for that account. The
    /// account is slowed, never locked.
    pub account_failures_before_slowdown: u32,
    /// Longest back-off after repeated failed logins, in seconds.
    pub max_backoff_secs: u64,
    // ---- Per-user send limits (audit item 9) ----
    /// Messages (direct and group) one user may send per minute.
    pub send_per_minute: u32,
    /// Inbox rows one user's messages may write for other users per
    /// minute: a direct message counts 1, a group message the group's
    /// other members (one larger than this takes the whole minute).
    pub deliveries_per_minute: u32,
    // ---- end of per-user send limits ----
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            login_per_minute: 120,
            register_per_minute: 60,
            token_per_minute: 120,
            admin_per_second: 500,
            qr_per_minute: 60,
            lookup_per_minute: 60,
            login_failures_before_backoff: 5,
            account_failures_before_slowdown: 20,
            max_backoff_secs: 900,
            // Per-user send limits (audit item 9).
            send_per_minute: 600,
            deliveries_per_minute: 20_000,
        }
    }
}

/// A refusal: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

/// Whose credentials a back-off counts. Each realm has its own keys, so a
/// user named like an admin id shares nothing with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realm {
    /// User logins: (account, IP) pairs and the account's slowdown.
    User,
    /// Admin credentials: the same, plus a back-off per IP across admin ids.
    Admin,
}

impl Realm {
    pub fn as_str(self) -> &'static str {
        match self {
            Realm::User => "user",
            Realm::Admin => "admin",
        }
    }
}

/// The keys one password check counts under (see the module docs); both
/// implementations name them the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackoffKeys {
    /// Failures of the account from every IP (never locked, only slowed).
    pub account: String,
    /// Failures of the account from this IP, and its lock.
    pub pair: String,
    /// Admins only: failures from this IP across admin ids, and its lock.
    pub ip: Option<String>,
}

impl BackoffKeys {
    pub fn new(realm: Realm, account: &str, ip: Option<&str>) -> Self {
        let r = realm.as_str();
        // An IP address never contains `/`, so `{ip}/{account}` cannot be
        // read two ways; a missing address is `-`.
        let at = ip.unwrap_or("-");
        Self {
            account: format!("{r}:acct:{account}"),
            pair: format!("{r}:pair:{at}/{account}"),
            ip: match (realm, ip) {
                (Realm::Admin, Some(ip)) => Some(format!("{r}:ip:{ip}")),
                _ => None,
            },
        }
    }
}

impl LimitsConfig {
    /// How long a lock lasts after the `count`-th failure when locking
    /// starts at `before` failures: 0 below it, then 1 s, 2 s, 4 s… up to
    /// `max_backoff_secs`.
    pub fn lock_for(&self, count: u32, before: u32) -> Duration {
        let before = before.max(1);
        if count < before {
            return Duration::ZERO;
        }
        let secs = 1u64
            .checked_shl((count - before).min(30))
            .unwrap_or(u64::MAX)
            .min(self.max_backoff_secs);
        Duration::from_secs(secs)
    }

    /// The failures of a pair from which it locks, given its account's
    /// failure count: `login_failures_before_backoff`, or 1 once the
    /// account is slowed.
    pub fn pair_threshold(&self, account_failures: u32) -> u32 {
        if account_failures >= self.account_failures_before_slowdown.max(1) {
            1
        } else {
            self.login_failures_before_backoff.max(1)
        }
    }

    /// How long failures are remembered after the last one.
    pub fn failure_memory(&self) -> Duration {
        Duration::from_secs(self.max_backoff_secs.max(60).saturating_mul(2))
    }
}

/// Counters a cluster shares; one node keeps them in memory.
#[async_trait]
pub trait RateLimits: Send + Sync {
    async fn check(&self, limit: Limit, key: &str) -> Result<(), RetryAfter>;
    /// Whether password checks of this account from this IP are locked
    /// now (for admins, also whether this IP is). Asked before hashing.
    async fn login_locked(
        &self,
        realm: Realm,
        account: &str,
        ip: Option<&str>,
    ) -> Result<(), RetryAfter>;
    /// Records a failed password check, which may start a lock.
    async fn login_failed(&self, realm: Realm, account: &str, ip: Option<&str>);
    /// A successful check clears the failures of this (account, IP) pair.
    async fn login_succeeded(&self, realm: Realm, account: &str, ip: Option<&str>);

    // ---- Per-user send limits (audit item 9) ----
    /// Counts `n` units at once against `limit` for `key` (for
    /// [`Limit::Deliveries`]); `n` larger than the whole quota counts as
    /// the whole quota, so one big request can pass on a full bucket.
    /// `n == 0` always passes.
    async fn check_n(&self, limit: Limit, key: &str, n: u32) -> Result<(), RetryAfter>;
}

type Keyed = Gcra<String, HashMapStateStore<String>, MonotonicClock>;

fn keyed(quota: Option<Quota>) -> Option<Keyed> {
    quota.map(|q| Gcra::hashmap_with_clock(q, MonotonicClock))
}

/// In-memory limits of one node.
pub struct MemoryLimits {
    login: Option<Keyed>,
    register: Option<Keyed>,
    token: Option<Keyed>,
    admin: Option<Keyed>,
    qr: Option<Keyed>,
    lookup: Option<Keyed>,
    // Per-user send limits (audit item 9).
    send: Option<Keyed>,
    deliveries: Option<Keyed>,
    failures: Mutex<HashMap<String, Failures>>,
    config: LimitsConfig,
    checks: AtomicU64,
}

impl std::fmt::Debug for MemoryLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLimits")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: tokio::time::Instant,
    last: tokio::time::Instant,
}

impl MemoryLimits {
    /// A rate of 0 switches that limit off.
    pub fn new(config: LimitsConfig) -> Self {
        let per_minute = |n: u32| NonZeroU32::new(n).map(Quota::per_minute);
        let per_second = |n: u32| NonZeroU32::new(n).map(Quota::per_second);
        Self {
            login: keyed(per_minute(config.login_per_minute)),
            register: keyed(per_minute(config.register_per_minute)),
            token: keyed(per_minute(config.token_per_minute)),
            admin: keyed(per_second(config.admin_per_second)),
            qr: keyed(per_minute(config.qr_per_minute)),
            lookup: keyed(per_minute(config.lookup_per_minute)),
            send: keyed(per_minute(config.send_per_minute)),
            deliveries: keyed(per_minute(config.deliveries_per_minute)),
            failures: Mutex::new(HashMap::new()),
            config,
            checks: AtomicU64::new(0),
        }
    }

    fn limiter(&self, limit: Limit) -> Option<&Keyed> {
        match limit {
            Limit::Login => self.login.as_ref(),
            Limit::Register => self.register.as_ref(),
            Limit::Token => self.token.as_ref(),
            Limit::Admin => self.admin.as_ref(),
            Limit::Qr => self.qr.as_ref(),
            Limit::Lookup => self.lookup.as_ref(),
            Limit::Send => self.send.as_ref(),
            Limit::Deliveries => self.deliveries.as_ref(),
        }
    }

    /// Forgets idle keys now and then, so the maps stay small.
    fn housekeeping(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 != 4095 {
            return;
        }
        for limiter in [
            &self.login,
            &self.register,
            &self.token,
            &self.admin,
            &self.qr,
            &self.lookup,
            &self.send,
            &self.deliveries,
        ]
        .into_iter()
        .flatten()
        {
            limiter.retain_recent();
        }
        let horizon = self.config.failure_memory();
        let now = tokio::time::Instant::now();
        self.failures
            .lock()
            .retain(|_, v| now.duration_since(v.last) < horizon || v.locked_until > now);
    }
}

#[async_trait]
impl RateLimits for MemoryLimits {
    async fn check(&self, limit: Limit, key: &str) -> Result<(), RetryAfter> {
        self.housekeeping();
        let Some(limiter) = self.limiter(limit) else {
            return Ok(());
        };
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| RetryAfter(not_until.wait_time_from(MonotonicClock.now())))
    }

    async fn login_locked(
        &self,
        realm: Realm,
        account: &str,
        ip: Option<&str>,
    ) -> Result<(), RetryAfter> {
        let now = tokio::time::Instant::now();
        let f = self.failures.lock();
        let keys = BackoffKeys::new(realm, account, ip);
        let wait = [Some(&keys.pair), keys.ip.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|k| f.get(k))
            .map(|v| v.locked_until.saturating_duration_since(now))
            .max()
            .unwrap_or(Duration::ZERO);
        if wait.is_zero() {
            Ok(())
        } else {
            Err(RetryAfter(wait))
        }
    }

    async fn login_failed(&self, realm: Realm, account: &str, ip: Option<&str>) {
        let now = tokio::time::Instant::now();
        let mut f = self.failures.lock();
        let keys = BackoffKeys::new(realm, account, ip);
        let config = &self.config;
        let memory = config.failure_memory();
        let mut count = |key: String, before: Option<u32>| {
            let entry = f.entry(key).or_insert(Failures {
                count: 0,
                locked_until: now,
                last: now,
            });
            // Forgotten as Redis forgets an expired key, even if
            // housekeeping has not removed it yet.
            if now.duration_since(entry.last) >= memory && entry.locked_until <= now {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
            if let Some(before) = before {
                // A lock only grows: a failure that raced a longer lock
                // (checked before it was set) does not shorten it.
                entry.locked_until = entry
                    .locked_until
                    .max(now + config.lock_for(entry.count, before));
            }
            entry.count
        };
        let account_failures = count(keys.account, None);
        count(keys.pair, Some(config.pair_threshold(account_failures)));
        if let Some(ip) = keys.ip {
            count(ip, Some(config.login_failures_before_backoff));
        }
    }

    async fn login_succeeded(&self, realm: Realm, account: &str, ip: Option<&str>) {
        self.failures
            .lock()
            .remove(&BackoffKeys::new(realm, account, ip).pair);
    }

    // ---- Per-user send limits (audit item 9) ----
    async fn check_n(&self, limit: Limit, key: &str, n: u32) -> Result<(), RetryAfter> {
        self.housekeeping();
        let (Some(limiter), Some(n)) = (self.limiter(limit), NonZeroU32::new(n)) else {
            return Ok(());
        };
        let key = key.to_owned();
        let result = match limiter.check_key_n(&key, n) {
            // More than the bucket holds: take the whole bucket.
            Err(governor::InsufficientCapacity(all)) => match NonZeroU32::new(all) {
                Some(all) => limiter.check_key_n(&key, all),
                None => return Ok(()),
            },
            other => other,
        };
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(RetryAfter(not_until.wait_time_from(MonotonicClock.now()))),
            Err(_) => Err(RetryAfter(Duration::from_secs(60))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bucket_refuses_with_a_retry_time_per_key() {
        let limits = MemoryLimits::new(LimitsConfig {
            register_per_minute: 2,
            ..LimitsConfig::default()
        });
        assert!(limits.check(Limit::Register, "1.2.3.4").await.is_ok());
        assert!(limits.check(Limit::Register, "1.2.3.4").await.is_ok());
        let refused = limits.check(Limit::Register, "1.2.3.4").await;
        assert!(
            matches!(refused, Err(RetryAfter(d)) if d > Duration::ZERO && d <= Duration::from_secs(60))
        );
        assert!(
            limits.check(Limit::Register, "5.6.7.8").await.is_ok(),
            "keys are independent"
        );
        let off = MemoryLimits::new(LimitsConfig {
            register_per_minute: 0,
            ..LimitsConfig::default()
        });
        for _ in 0..1000 {
            assert!(off.check(Limit::Register, "k").await.is_ok());
        }
    }

    const A: Option<&str> = Some("10.0.0.1");
    const B: Option<&str> = Some("10.0.0.2");

    fn secs(n: u64) -> Result<(), RetryAfter> {
        Err(RetryAfter(Duration::from_secs(n)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_backs_off_exponentially_and_a_success_clears_it() {
        let limits = MemoryLimits::new(LimitsConfig {
            login_failures_before_backoff: 3,
            max_backoff_secs: 8,
            ..LimitsConfig::default()
        });
        let user = Realm::User;
        for _ in 0..2 {
            limits.login_failed(user, "bob", A).await;
        }
        assert_eq!(limits.login_locked(user, "bob", A).await, Ok(()));
        limits.login_failed(user, "bob", A).await;
        assert_eq!(limits.login_locked(user, "bob", A).await, secs(1));
        // Only that pair: the account from another address, and another
        // account from the same address, are not locked.
        assert_eq!(limits.login_locked(user, "bob", B).await, Ok(()));
        assert_eq!(limits.login_locked(user, "carol", A).await, Ok(()));
        assert_eq!(limits.login_locked(Realm::Admin, "bob", A).await, Ok(()));
        limits.login_failed(user, "bob", A).await;
        assert_eq!(limits.login_locked(user, "bob", A).await, secs(2));
        for _ in 0..10 {
            limits.login_failed(user, "bob", A).await;
        }
        assert_eq!(limits.login_locked(user, "bob", A).await, secs(8), "capped");
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(limits.login_locked(user, "bob", A).await, Ok(()));
        // Still counted: the next failure locks at the ceiling again.
        limits.login_failed(user, "bob", A).await;
        assert_eq!(limits.login_locked(user, "bob", A).await, secs(8));
        // A success clears the pair: its next failure is the first again.
        limits.login_succeeded(user, "bob", A).await;
        assert_eq!(limits.login_locked(user, "bob", A).await, Ok(()));
        limits.login_failed(user, "bob", A).await;
        assert_eq!(limits.login_locked(user, "bob", A).await, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_account_over_its_ceiling_slows_every_address_and_locks_none_unfailed() {
        let limits = MemoryLimits::new(LimitsConfig {
            login_failures_before_backoff: 5,
            account_failures_before_slowdown: 4,
            max_backoff_secs: 60,
            ..LimitsConfig::default()
        });
        let user = Realm::User;
        let ip = |n: u8| format!("10.0.1.{n}");
        for n in 1..=3 {
            limits.login_failed(user, "bob", Some(&ip(n))).await;
            assert_eq!(
                limits.login_locked(user, "bob", Some(&ip(n))).await,
                Ok(()),
                "below both thresholds"
            );
        }
        // The fourth failure of the account: its pair locks at once.
        limits.login_failed(user, "bob", Some(&ip(4))).await;
        assert_eq!(
            limits.login_locked(user, "bob", Some(&ip(4))).await,
            secs(1)
        );
        // An address without failures is never refused.
        assert_eq!(limits.login_locked(user, "bob", Some(&ip(9))).await, Ok(()));
        // A pair that failed before the slowdown locks on its next failure.
        limits.login_failed(user, "bob", Some(&ip(1))).await;
        assert_eq!(
            limits.login_locked(user, "bob", Some(&ip(1))).await,
            secs(2)
        );
        // The owner's success clears their own pair, not the slowdown.
        limits.login_succeeded(user, "bob", Some(&ip(9))).await;
        limits.login_failed(user, "bob", Some(&ip(5))).await;
        assert_eq!(
            limits.login_locked(user, "bob", Some(&ip(5))).await,
            secs(1)
        );
        // Other accounts are not slowed.
        limits.login_failed(user, "carol", Some(&ip(5))).await;
        assert_eq!(
            limits.login_locked(user, "carol", Some(&ip(5))).await,
            Ok(())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn admin_failures_also_back_off_per_ip_across_admin_ids() {
        let limits = MemoryLimits::new(LimitsConfig {
            login_failures_before_backoff: 3,
            ..LimitsConfig::default()
        });
        let admin = Realm::Admin;
        for id in ["ghost-1", "ghost-2", "ghost-3"] {
            limits.login_failed(admin, id, A).await;
        }
        assert_eq!(limits.login_locked(admin, "ghost-4", A).await, secs(1));
        assert_eq!(limits.login_locked(admin, "ghost-4", B).await, Ok(()));
        assert_eq!(
            limits.login_locked(Realm::User, "ghost-4", A).await,
            Ok(()),
            "user logins have no per-IP lock"
        );
        limits.login_failed(admin, "ghost-4", A).await;
        assert_eq!(limits.login_locked(admin, "real", A).await, secs(2));
        // Users share no keys with admins: many user failures from one
        // address lock no other user, and no admin.
        let many = MemoryLimits::new(LimitsConfig {
            login_failures_before_backoff: 3,
            ..LimitsConfig::default()
        });
        for n in 0..10 {
            many.login_failed(Realm::User, &format!("nobody-{n}"), A)
                .await;
        }
        assert_eq!(many.login_locked(Realm::User, "alice", A).await, Ok(()));
        assert_eq!(many.login_locked(Realm::Admin, "admin", A).await, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_forgotten_after_their_memory() {
        let config = LimitsConfig {
            login_failures_before_backoff: 3,
            account_failures_before_slowdown: 3,
            max_backoff_secs: 60,
            ..LimitsConfig::default()
        };
        let memory = config.failure_memory();
        assert_eq!(memory, Duration::from_secs(120));
        let limits = MemoryLimits::new(config);
        limits.login_failed(Realm::User, "bob", A).await;
        limits.login_failed(Realm::User, "bob", B).await;
        tokio::time::advance(memory).await;
        // Both the pair's count and the account's were forgotten: one
        // more failure is the first of each.
        limits.login_failed(Realm::User, "bob", A).await;
        assert_eq!(limits.login_locked(Realm::User, "bob", A).await, Ok(()));
        limits.login_failed(Realm::User, "bob", B).await;
        assert_eq!(limits.login_locked(Realm::User, "bob", B).await, Ok(()));
        limits.login_failed(Realm::User, "bob", B).await;
        assert_eq!(
            limits.login_locked(Realm::User, "bob", B).await,
            secs(2),
            "the third failure inside the memory slows the account: B's \
             second failure locks"
        );
    }

    #[test]
    fn keys_are_per_realm_and_the_address_comes_first() {
        // An address has no `/`, so the first `/` ends it.
        let a = BackoffKeys::new(Realm::User, "x/y", Some("1.2.3.4"));
        assert_eq!(a.pair, "user:pair:1.2.3.4/x/y");
        assert_eq!(
            BackoffKeys::new(Realm::User, "x/y", None).pair,
            "user:pair:-/x/y"
        );
        let admin = BackoffKeys::new(Realm::Admin, "bob", Some("::1"));
        let user = BackoffKeys::new(Realm::User, "bob", Some("::1"));
        assert_ne!(admin.pair, user.pair);
        assert_ne!(admin.account, user.account);
        assert_eq!(admin.ip.as_deref(), Some("admin:ip:::1"));
        assert_eq!(user.ip, None);
        assert_eq!(BackoffKeys::new(Realm::Admin, "bob", None).ip, None);
    }
}
