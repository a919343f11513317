//! Replay nonces, rate limits and login back-off shared by every node.
//!
//! - Nonces live in sorted sets scored by their expiry: one per credential
//!   (member: the nonce) and one for all of them (member: credential and
//!   nonce), changed together by one script, so the first node to record a
//!   nonce wins and every other sees it taken. The script first drops what
//!   has expired by the caller's `now` (expiry is judged by the caller's
//!   clock, as in memory; the keys' own expiry only frees the memory), then
//!   refuses a nonce still present, and refuses to record one more when the
//!   credential's share or the whole store is full (never evicting an
//!   unexpired nonce). When Redis cannot be reached the request is refused
//!   (503): a replay must never pass for lack of memory.
//! - A rate limit is a fixed window per key: the first request of a window
//!   starts the key's expiry, each request counts, a request over the
//!   quota is refused until the window ends (`Retry-After`). When Redis
//!   cannot be reached, limits let requests through and say so in the log
//!   and metrics: an outage of Redis must not lock every user out.
//! - Failed password checks count per (account, IP) pair, per account and
//!   (admins only) per IP, by the rule of `unimsg_core::limits` and under
//!   the same key names (`BackoffKeys`): one script counts a failure on
//!   all of them and sets the lock keys whose expiry the back-off doubles,
//!   up to a ceiling. Counters expire when their failures stop.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use unimsg_core::CoreError;
use unimsg_core::limits::{BackoffKeys, Limit, LimitsConfig, RateLimits, Realm, RetryAfter};
use unimsg_core::replay::{NonceBounds, NonceStore, Recorded};

use crate::Cluster;

/// Records a nonce. KEYS[1]: the credential's sorted set, KEYS[2]: the
/// store's. ARGV: now, expiry, nonce, member of the store's set, the
/// credential's share, the store's capacity. Answers 1 recorded, 0
/// replayed, 2 the credential's share is full, 3 the store is full.
const NONCE: &str = r"
local now = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 0 end
if expiry <= now then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then return 2 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then return 3 end
redis.call('ZADD', KEYS[1], expiry, ARGV[3])
redis.call('ZADD', KEYS[2], expiry, ARGV[4])
for i = 1, 2 do
  local last = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  redis.call('EXPIREAT', KEYS[i], math.max(expiry, tonumber(last[2])))
end
return 1
";

/// Replay nonces in Redis, with the same bounds as in memory.
#[derive(Debug, Clone)]
pub struct RedisNonces {
    cluster: Arc<Cluster>,
    script: Script,
    bounds: NonceBounds,
}

impl RedisNonces {
    pub fn new(cluster: Arc<Cluster>, bounds: NonceBounds) -> Self {
        Self {
            cluster,
            script: Script::new(NONCE),
            bounds: NonceBounds::new(bounds.capacity, bounds.per_credential),
        }
    }
}

#[async_trait]
impl NonceStore for RedisNonces {
    async fn insert(
        &self,
        credential: &str,
        nonce: &str,
        now: i64,
        expires_at: i64,
    ) -> unimsg_core::Result<Recorded> {
        let mut conn = self.cluster.conn();
        let answer: i64 = self
            .script
            .key(self.cluster.key(&format!("nonces:{credential}")))
            .key(self.cluster.key("nonces"))
            .arg(now)
            .arg(expires_at)
            .arg(nonce)
            .arg(format!("{credential}\n{nonce}"))
            .arg(self.bounds.per_credential)
            .arg(self.bounds.capacity)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| CoreError::Unavailable(format!("Redis: {e}")))?;
        match answer {
            1 => Ok(Recorded::New),
            0 => Ok(Recorded::Replayed),
            2 => Ok(Recorded::CredentialFull),
            3 => Ok(Recorded::StoreFull),
            other => Err(CoreError::Internal(format!(
                "the nonce script answered {other}"
            ))),
        }
    }
}

/// Counts a failed password check. KEYS: the account's failures, the
/// pair's failures, the pair's lock, and for admins the IP's failures and
/// the IP's lock. ARGV: failures before back-off, the account's failures
/// before the slowdown, longest lock in ms, how long failures are
/// remembered in ms. A lock only grows. Returns the account's failures.
const FAILED: &str = r"
local memory = tonumber(ARGV[4])
local function fail(count_key, lock_key, before)
  local n = redis.call('INCR', count_key)
  redis.call('PEXPIRE', count_key, memory)
  if lock_key and n >= before then
    local over = math.min(n - before, 30)
    local ms = math.floor(math.min(1000 * (2 ^ over), tonumber(ARGV[3])))
    if ms >= 1 and ms > redis.call('PTTL', lock_key) then
      redis.call('SET', lock_key, 1, 'PX', ms)
    end
  end
  return n
end
local before = math.max(tonumber(ARGV[1]), 1)
local account = fail(KEYS[1], nil, 0)
local pair_before = before
if account >= math.max(tonumber(ARGV[2]), 1) then pair_before = 1 end
fail(KEYS[2], KEYS[3], pair_before)
if #KEYS >= 5 then fail(KEYS[4], KEYS[5], before) end
return account
";

/// Counts ARGV[3] units (one request, or a send's deliveries) in the key's
/// window of ARGV[1] ms holding ARGV[2]; answers -1 when they pass, or the
/// milliseconds until the window ends.
const WINDOW: &str = r"
local n = redis.call('INCRBY', KEYS[1], ARGV[3])
if n == tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
  return ttl
end
return -1
";

/// Rate limits and login back-off in Redis.
pub struct RedisLimits {
    cluster: Arc<Cluster>,
    config: LimitsConfig,
    window: Script,
    failed: Script,
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
            Limit::Lookup => ("lookup", self.config.lookup_per_minute, minute),
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
        self.check_n(limit, key, 1).await
    }

    async fn login_locked(
        &self,
        realm: Realm,
        account: &str,
        ip: Option<&str>,
    ) -> Result<(), RetryAfter> {
        let keys = BackoffKeys::new(realm, account, ip);
        let mut pipe = redis::pipe();
        for key in [Some(&keys.pair), keys.ip.as_ref()].into_iter().flatten() {
            pipe.pttl(self.cluster.key(&format!("lock:{key}")));
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

    async fn login_failed(&self, realm: Realm, account: &str, ip: Option<&str>) {
        let keys = BackoffKeys::new(realm, account, ip);
        let memory = u64::try_from(self.config.failure_memory().as_millis()).unwrap_or(u64::MAX);
        let mut invocation = self.failed.prepare_invoke();
        invocation
            .key(self.cluster.key(&format!("fail:{}", keys.account)))
            .key(self.cluster.key(&format!("fail:{}", keys.pair)))
            .key(self.cluster.key(&format!("lock:{}", keys.pair)));
        if let Some(ip) = &keys.ip {
            invocation
                .key(self.cluster.key(&format!("fail:{ip}")))
                .key(self.cluster.key(&format!("lock:{ip}")));
        }
        invocation
            .arg(self.config.login_failures_before_backoff)
            .arg(self.config.account_failures_before_slowdown)
            .arg(self.config.max_backoff_secs.saturating_mul(1000))
            .arg(memory);
        let mut conn = self.cluster.conn();
        let result: Result<i64, _> = invocation.invoke_async(&mut conn).await;
        if let Err(error) = result {
            unavailable("login back-off", &error);
        }
    }

    async fn login_succeeded(&self, realm: Realm, account: &str, ip: Option<&str>) {
        let pair = BackoffKeys::new(realm, account, ip).pair;
        let mut conn = self.cluster.conn();
        let result: Result<(), _> = redis::cmd("DEL")
            .arg(self.cluster.key(&format!("fail:{pair}")))
            .arg(self.cluster.key(&format!("lock:{pair}")))
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
            .window
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
