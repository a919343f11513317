//! Rate limits and login back-off.
//!
//! Keyed token buckets (governor's GCRA) limit logins, registrations and
//! token requests per IP and admin calls per credential; a refusal carries
//! the time until the next request may pass (`Retry-After`). Failed logins
//! back off per account and per IP: after a few failures each further one
//! doubles the lock, up to a ceiling. One node keeps the counters in
//! memory; the trait lets a cluster share them.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock as _, MonotonicClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter as Gcra};
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
    /// Failed logins (per account, and per IP) before back-off starts.
    pub login_failures_before_backoff: u32,
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
            login_failures_before_backoff: 5,
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

/// Counters a cluster shares; one node keeps them in memory.
#[async_trait]
pub trait RateLimits: Send + Sync {
    async fn check(&self, limit: Limit, key: &str) -> Result<(), RetryAfter>;
    /// Whether logins for this account or from this IP are locked now.
    async fn login_locked(&self, account: &str, ip: Option<&str>) -> Result<(), RetryAfter>;
    /// Records a failed login, which may start a lock.
    async fn login_failed(&self, account: &str, ip: Option<&str>);
    /// A successful login clears the account's failures.
    async fn login_succeeded(&self, account: &str);

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
            &self.send,
            &self.deliveries,
        ]
        .into_iter()
        .flatten()
        {
            limiter.retain_recent();
        }
        let horizon = Duration::from_secs(self.config.max_backoff_secs.max(60));
        if let Ok(mut f) = self.failures.lock() {
            let now = tokio::time::Instant::now();
            f.retain(|_, v| now.duration_since(v.last) < horizon || v.locked_until > now);
        }
    }

    fn lock_for(&self, count: u32) -> Duration {
        let over = count.saturating_sub(self.config.login_failures_before_backoff);
        if count < self.config.login_failures_before_backoff {
            return Duration::ZERO;
        }
        let secs = 1u64
            .checked_shl(over.min(30))
            .unwrap_or(u64::MAX)
            .min(self.config.max_backoff_secs);
        Duration::from_secs(secs)
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

    async fn login_locked(&self, account: &str, ip: Option<&str>) -> Result<(), RetryAfter> {
        let now = tokio::time::Instant::now();
        let Ok(f) = self.failures.lock() else {
            return Ok(());
        };
        let keys = [
            Some(format!("acct:{account}")),
            ip.map(|ip| format!("ip:{ip}")),
        ];
        let wait = keys
            .iter()
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

    async fn login_failed(&self, account: &str, ip: Option<&str>) {
        let now = tokio::time::Instant::now();
        let Ok(mut f) = self.failures.lock() else {
            return;
        };
        for key in [
            Some(format!("acct:{account}")),
            ip.map(|ip| format!("ip:{ip}")),
        ]
        .into_iter()
        .flatten()
        {
            let entry = f.entry(key).or_insert(Failures {
                count: 0,
                locked_until: now,
                last: now,
            });
            entry.count += 1;
            entry.last = now;
            entry.locked_until = now + self.lock_for(entry.count);
        }
    }

    async fn login_succeeded(&self, account: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(&format!("acct:{account}"));
        }
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

    #[tokio::test(start_paused = true)]
    async fn failed_logins_back_off_exponentially_and_success_clears_the_account() {
        let limits = MemoryLimits::new(LimitsConfig {
            login_failures_before_backoff: 3,
            max_backoff_secs: 8,
            ..LimitsConfig::default()
        });
        for _ in 0..2 {
            limits.login_failed("bob", Some("9.9.9.9")).await;
        }
        assert!(limits.login_locked("bob", Some("9.9.9.9")).await.is_ok());
        limits.login_failed("bob", Some("9.9.9.9")).await;
        assert_eq!(
            limits.login_locked("bob", None).await,
            Err(RetryAfter(Duration::from_secs(1)))
        );
        // The IP is locked for other accounts too.
        assert!(limits.login_locked("carol", Some("9.9.9.9")).await.is_err());
        for _ in 0..10 {
            limits.login_failed("bob", None).await;
        }
        assert_eq!(
            limits.login_locked("bob", None).await,
            Err(RetryAfter(Duration::from_secs(8))),
            "capped"
        );
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(limits.login_locked("bob", None).await.is_ok());
        limits.login_failed("dave", None).await;
        limits.login_succeeded("dave").await;
        assert!(
            limits
                .failures
                .lock()
                .map(|f| !f.contains_key("acct:dave"))
                .unwrap_or(false)
        );
    }
}
