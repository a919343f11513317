//! The unimsg domain, independent of any transport.
//!
//! [`Core`] owns the services: [`auth`] (accounts, sessions, tokens),
//! [`messaging`] (sends, inboxes, receipts, recalls) and live delivery
//! through the [`bus::Bus`] to the local [`hub::Hub`]. It talks to durable
//! state only through [`unimsg_store::Store`]. Nothing here parses HTTP.

pub mod admin;
pub mod admins;
mod alerts;
pub mod audit;
pub mod auth;
pub mod bus;
pub mod catalogue;
pub mod changes;
pub mod clock;
pub mod config;
mod error;
mod friends;
pub mod groups;
pub mod hooks;
pub mod hub;
pub mod keys;
pub mod limits;
pub mod messaging;
pub mod password;
pub mod qr;
mod render;
pub mod replay;
mod sessions;
pub mod signing;
pub mod stream;
/// The test suite every nonce store, rate limiter and ticket store must
/// pass: for tests only, behind the `suite` feature.
#[cfg(any(test, feature = "suite"))]
pub mod suite;
pub mod throttle;

use std::sync::Arc;

pub use error::{CoreError, Result};
pub use friends::RequestDirection;

use bus::Bus;
use clock::Clock;
use config::CoreConfig;
use hub::Hub;
use keys::{Keyring, MasterKey};
use limits::{Limit, RateLimits};
use password::PasswordWorkers;
use qr::QrTickets;
use replay::NonceStore;
use signing::SigningKeys;
use unimsg_store::{Store, StoredEvent};

/// Everything the transports need, shared by all connections.
pub struct Core {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) keyring: Keyring,
    /// Wraps the data and signing keys; kept for rotations.
    pub(crate) master: parking_lot::RwLock<MasterKey>,
    pub(crate) master_source: keys::MasterSource,
    /// One master-key rotation at a time on this node.
    pub(crate) rotating: tokio::sync::Mutex<()>,
    pub(crate) signing: parking_lot::RwLock<Arc<SigningKeys>>,
    /// Bounds the store reads an unknown token `kid` can cause.
    pub(crate) kid_refreshes: throttle::LogThrottle,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) passwords: PasswordWorkers,
    /// Admin secrets are verified here, never on `passwords`.
    pub(crate) admin_passwords: PasswordWorkers,
    pub(crate) nonces: Arc<dyn NonceStore>,
    pub(crate) limits: Arc<dyn RateLimits>,
    pub(crate) qr: Arc<dyn QrTickets>,
    pub(crate) verified: admin::VerifiedSecrets,
    pub(crate) key_touches: admins::KeyTouches,
    pub(crate) tokens: auth::VerifiedTokens,
    pub(crate) sessions: sessions::SessionCache,
    pub(crate) refusals: audit::Refusals,
    pub(crate) audit_key: Arc<audit::AuditKey>,
    pub(crate) audit_chain: unimsg_store::ChainFn,
    /// One verification of the audit log at a time, and where the
    /// periodic one got to.
    pub(crate) audit_checked: tokio::sync::Mutex<audit::Checked>,
    pub(crate) replay_alerts: throttle::LogThrottle,
    pub(crate) stuffing: alerts::StuffingWatch,
    pub(crate) known_admin_addresses: alerts::KnownAdminAddresses,
    /// Makes webhook and before-send requests; `None`: no hooks run.
    pub(crate) transport: Option<Arc<dyn hooks::HookTransport>>,
    pub(crate) before_send_secret: Option<hooks::sign::HookSecret>,
    pub(crate) hook_interest: parking_lot::RwLock<hooks::Interest>,
    /// Wakes this node's webhook dispatcher after it committed events.
    pub(crate) hooks_wake: tokio::sync::Notify,
    pub(crate) config: CoreConfig,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The parts a [`Core`] is built from.
pub struct CoreParts {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub hub: Arc<Hub>,
    pub keyring: Keyring,
    pub master: MasterKey,
    /// Where `master` came from (a rotation writes `master.key` back).
    pub master_source: keys::MasterSource,
    pub signing: SigningKeys,
    /// Chains the audit log ([`audit::AuditKey::load_or_create`]).
    pub audit_key: audit::AuditKey,
    pub clock: Arc<dyn Clock>,
    pub passwords: PasswordWorkers,
    /// A small pool of its own for verifying admin secrets
    /// ([`PasswordWorkers::for_admin_checks`]), so failed admin
    /// authentications cannot starve user logins.
    pub admin_passwords: PasswordWorkers,
    pub nonces: Arc<dyn NonceStore>,
    pub limits: Arc<dyn RateLimits>,
    pub qr: Arc<dyn QrTickets>,
    /// Makes webhook and before-send requests (`unimsg-hooks`).
    pub transport: Option<Arc<dyn hooks::HookTransport>>,
    /// Whether this node is the store's only server (no cluster bus): only
    /// then are active sessions cached ([`sessions`]).
    pub sessions_cached: bool,
    pub config: CoreConfig,
}

impl Core {
    pub fn new(parts: CoreParts) -> Self {
        let audit_key = Arc::new(parts.audit_key);
        Self {
            store: parts.store,
            bus: parts.bus,
            hub: parts.hub,
            keyring: parts.keyring,
            master: parking_lot::RwLock::new(parts.master),
            master_source: parts.master_source,
            rotating: tokio::sync::Mutex::new(()),
            signing: parking_lot::RwLock::new(Arc::new(parts.signing)),
            kid_refreshes: throttle::LogThrottle::new(signing::UNKNOWN_KID_REFRESH),
            clock: parts.clock,
            passwords: parts.passwords,
            admin_passwords: parts.admin_passwords,
            nonces: parts.nonces,
            limits: parts.limits,
            qr: parts.qr,
            verified: admin::VerifiedSecrets::default(),
            key_touches: admins::KeyTouches::default(),
            tokens: auth::VerifiedTokens::default(),
            sessions: sessions::SessionCache::new(parts.sessions_cached),
            refusals: audit::Refusals::default(),
            audit_chain: audit::chain_fn(audit_key.clone()),
            audit_key,
            audit_checked: tokio::sync::Mutex::new(audit::Checked::default()),
            replay_alerts: throttle::LogThrottle::new(std::time::Duration::from_secs(60)),
            stuffing: alerts::StuffingWatch::default(),
            known_admin_addresses: alerts::KnownAdminAddresses::default(),
            transport: parts.transport,
            before_send_secret: hooks::sign::HookSecret::parse(
                &parts.config.hooks.before_send.secret,
            ),
            hook_interest: parking_lot::RwLock::default(),
            hooks_wake: tokio::sync::Notify::new(),
            config: parts.config,
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Checks an admin request's `X-Nonce` / `X-Timestamp` (see [`replay`])
    /// for a credential that was verified: only then is a nonce recorded.
    /// A full store (overall or for this credential) refuses with 503
    /// `busy`, counts `unimsg_replay_store_full_total` and warns at most
    /// once a minute per kind.
    pub async fn check_replay(&self, headers: replay::ReplayHeaders<'_>) -> Result<()> {
        let admin = &self.config.admin;
        let rule = replay::ReplayRule {
            now: self.clock.now().unix_timestamp(),
            window: admin.nonce_window_secs as i64,
            required: admin.require_nonce,
        };
        let recorded = replay::record(&*self.nonces, headers, rule).await?;
        let full = match recorded {
            Some(replay::Recorded::StoreFull) => Some("overall"),
            Some(replay::Recorded::CredentialFull) => Some("credential"),
            _ => None,
        };
        if let Some(scope) = full {
            metrics::counter!("unimsg_replay_store_full_total", "scope" => scope).increment(1);
            if let Some(held_back) = self.replay_alerts.allow(scope) {
                let admin = &self.config.admin;
                tracing::warn!(
                    scope,
                    held_back,
                    capacity = admin.nonce_capacity,
                    per_credential = admin.nonce_per_credential,
                    "the replay store is full: admin requests with new nonces are refused (503) until old nonces expire"
                );
            }
        }
        replay::verdict(recorded)
    }

    /// Counts one request against a rate limit (429 with a retry time when over).
    pub async fn check_limit(&self, limit: Limit, key: &str) -> Result<()> {
        self.limits.check(limit, key).await.map_err(|r| {
            metrics::counter!("unimsg_rate_limited_total", "limit" => limit.label()).increment(1);
            CoreError::RateLimited(r.0)
        })
    }

    /// Whether the store answers.
    pub async fn ready(&self) -> Result<()> {
        self.store.ping().await.map_err(CoreError::from)
    }

    /// Hands committed events to the bus for live delivery. Failures are
    /// logged, not returned: the events are durable and clients get them by
    /// sync.
    pub(crate) async fn publish(&self, events: &[StoredEvent]) {
        if events.is_empty() {
            return;
        }
        // Before any connection hears of a revocation: one that re-checks
        // its session after hearing nothing must read the store.
        if events
            .iter()
            .any(|e| e.kind == unimsg_proto::EventType::SessionRevoked)
        {
            self.sessions.invalidate();
        }
        let mut deliveries = Vec::with_capacity(events.len());
        for (event, rendered) in events.iter().zip(render::deliveries(&self.keyring, events)) {
            match rendered {
                Ok(d) => deliveries.push(Arc::new(d)),
                Err(error) => tracing::error!(%error, seq = event.seq.0, "cannot render an event"),
            }
        }
        if let Err(error) = self.bus.publish(deliveries).await {
            tracing::warn!(%error, "live delivery failed; clients will catch up by sync");
        }
    }
}
