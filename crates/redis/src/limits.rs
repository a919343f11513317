//! Replay nonces, rate limits and login back-off shared by every node.
//!
//! - A nonce is a key holding its expiry, set with that absolute expiry
//!   by a script that refuses it while the stored expiry is after the
//!   caller's `now`: the first node to record it wins, every other sees it
//!   taken. Expiry is judged by the caller's clock, as in memory, not by
//!   Redis's (the key's own expiry only frees the memory). When Redis
//!   cannot be reached the request is refused (503): a replay must never
//!   pass for lack of memory.
//! - A rate limit is a fixed window per key: the first request of a window
//!   starts the key's expiry, each request counts, a request over the
//!   quota is refused until the window ends (`Retry-After`). When Redis
//!   cannot be reached, limits let requests through and say so in the log
//!   and metrics: an outage of Redis must not lock every user out.
//! - Failed logins count per account and per IP; from the configured
//!   number on, each failure doubles a lock key's expiry, up to a ceiling.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use unimsg_core::CoreError;
use unimsg_core::limits::{Limit, LimitsConfig, RateLimits, RetryAfter};
use unimsg_core::replay::NonceStore;

use crate::Cluster;

/// Records a nonce (KEYS[1]) until ARGV[2] unless it is recorded with an
/// expiry after ARGV[1] (now); 1 when recorded, 0 when refused.
const NONCE: &str = r"
local seen = tonumber(redis.call('GET', KEYS[1]))
if seen and seen > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EXAT', ARGV[2])
return 1
";

/// Replay nonces in Redis.
#[derive(Debug, Clone)]
pub struct RedisNonces {
    cluster: Arc<Cluster>,
    script: Script,
}

impl RedisNonces {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self {
            cluster,
            script: Script::new(NONCE),
        }
    }
}

#[async_trait]
impl NonceStore for RedisNonces {
    async fn insert(&self, key: &str, now: i64, expires_at: i64) -> unimsg_core::Result<bool> {
        if expires_at <= now {
            return Ok(true);
        }
        let mut conn = self.cluster.conn();
        let recorded: i64 = self
            .script
            .key(self.cluster.key(&format!("nonce:{key}")))
            .arg(now)
            .arg(expires_at)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| CoreError::Unavailable(format!("Redis: {e}")))?;
        Ok(recorded == 1)
    }
}

/// Counts a request in the key's window; answers -1 when it passes, or
/// the milliseconds until the window ends.
const WINDOW: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
  return ttl
end
return -1
";

/// Counts a failed login (KEYS[1] = failures, KEYS[2] = lock). ARGV:
/// failures before back-off, longest lock in ms, how long failures are
/// remembered in ms.
const FAILED: &str = r"
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local before = tonumber(ARGV[1])
if n >= before then
  local over = math.min(n - before, 30)
  local ms = math.floor(math.min(1000 * (2 ^ over), tonumber(ARGV[2])))
  if ms >= 1 then redis.call('SET', KEYS[2], 1, 'PX', ms) end
end
return n
";

// ---- Per-user send limits (audit item 9) ----
/// [`WINDOW`] counting ARGV[3] units at once.
const WINDOW_N: &str = r"
local n = redis.call('INCRBY', KEYS[1], ARGV[3])
if n == tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
  return ttl
end
return -1
";
// ---- end of per-user send limits ----

/// Rate limits and login back-off in Redis.
pub struct RedisLimits {
    cluster: Arc<Cluster>,
    config: LimitsConfig,
    window: Script,
    failed: Script,
    /// Per-user send limits (audit item 9).
    window_n: Script,
}

impl std::fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimits")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisLimits {
    /// A rate of 0 switches that limit off.
    pub fn new(cluster: Arc<Cluster>, config: LimitsConfig) -> Self {
        Self {
            cluster,
            config,
            window: Script::new(WINDOW),
            failed: Script::new(FAILED),
            window_n: Script::new(WINDOW_N),
        }
    }

    /// `(name, quota, window)` of a limit; `None` when it is off.
    fn quota(&self, limit: Limit) -> Option<(&'static str, u32, Duration)> {
        let minute = Duration::from_secs(60);
        let (name, n, window) = match limit {
            Limit::Login => ("login", self.config.login_per_minute, minute),
            Limit::Register => ("register", self.config.register_per_minute, minute),
            Limit::Token => ("token", self.config.token_per_minute, minute),
            Limit::Admin => (
                "admin",
                self.config.admin_per_second,
                Duration::from_secs(1),
            ),
            Limit::Qr => ("qr", self.config.qr_per_minute, minute),
            // Per-user send limits (audit item 9).
            Limit::Send => ("send", self.config.send_per_minute, minute),
            Limit::Deliveries => ("deliveries", self.config.deliveries_per_minute, minute),
        };
        (n > 0).then_some((name, n, window))
    }
}

fn unavailable(what: &str, error: &redis::RedisError) {
    tracing::warn!(%error, "{what}: Redis unavailable; letting the request through");
    metrics::counter!("unimsg_limits_unavailable_total").increment(1);
}

#[async_trait]
impl RateLimits for RedisLimits {
    async fn check(&self, limit: Limit, key: &str) -> Result<(), RetryAfter> {
        let Some((name, quota, window)) = self.quota(limit) else {
            return Ok(());
        };
        let mut conn = self.cluster.conn();
        let result: Result<i64, _> = self
            .window
            .key(self.cluster.key(&format!("rl:{name}:{key}")))
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX))
            .arg(quota)
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok(wait) if wait >= 0 => Err(RetryAfter(Duration::from_millis(
                u64::try_from(wait).unwrap_or(0).max(1),
            ))),
            Ok(_) => Ok(()),
            Err(error) => {
                unavailable("rate limit", &error);
                Ok(())
            }
        }
    }

    async fn login_locked(&self, account: &str, ip: Option<&str>) -> Result<(), RetryAfter> {
        let mut pipe = redis::pipe();
        pipe.pttl(self.cluster.key(&format!("lock:acct:{account}")));
        if let Some(ip) = ip {
            pipe.pttl(self.cluster.key(&format!("lock:ip:{ip}")));
        }
        let mut conn = self.cluster.conn();
        let ttls: Vec<i64> = match pipe.query_async(&mut conn).await {
            Ok(t) => t,
            Err(error) => {
                unavailable("login back-off", &error);
                return Ok(());
            }
        };
        match ttls.into_iter().max() {
            Some(ms) if ms > 0 => Err(RetryAfter(Duration::from_millis(
                u64::try_from(ms).unwrap_or(0),
            ))),
            _ => Ok(()),
        }
    }

    async fn login_failed(&self, account: &str, ip: Option<&str>) {
        let keys = [
            Some(format!("acct:{account}")),
            ip.map(|ip| format!("ip:{ip}")),
        ];
        let horizon = self.config.max_backoff_secs.max(60) * 1000;
        for key in keys.into_iter().flatten() {
            let mut conn = self.cluster.conn();
            let result: Result<i64, _> = self
                .failed
                .key(self.cluster.key(&format!("fail:{key}")))
                .key(self.cluster.key(&format!("lock:{key}")))
                .arg(self.config.login_failures_before_backoff.max(1))
                .arg(self.config.max_backoff_secs.saturating_mul(1000))
                .arg(horizon)
                .invoke_async(&mut conn)
                .await;
            if let Err(error) = result {
                unavailable("login back-off", &error);
            }
        }
    }

    async fn login_succeeded(&self, account: &str) {
        let mut conn = self.cluster.conn();
        let result: Result<(), _> = redis::cmd("DEL")
            .arg(self.cluster.key(&format!("fail:acct:{account}")))
            .arg(self.cluster.key(&format!("lock:acct:{account}")))
            .query_async(&mut conn)
            .await;
        if let Err(error) = result {
            unavailable("login back-off", &error);
        }
    }

    // ---- Per-user send limits (audit item 9) ----
    async fn check_n(&self, limit: Limit, key: &str, n: u32) -> Result<(), RetryAfter> {
        let Some((name, quota, window)) = self.quota(limit) else {
            return Ok(());
        };
        if n == 0 {
            return Ok(());
        }
        let mut conn = self.cluster.conn();
        let result: Result<i64, _> = self
            .window_n
            .key(self.cluster.key(&format!("rl:{name}:{key}")))
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX))
            .arg(quota)
            // More than the window holds counts as the whole window.
            .arg(n.min(quota))
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok(wait) if wait >= 0 => Err(RetryAfter(Duration::from_millis(
                u64::try_from(wait).unwrap_or(0).max(1),
            ))),
            Ok(_) => Ok(()),
            Err(error) => {
                unavailable("rate limit", &error);
                Ok(())
            }
        }
    }
}
