//! Security alerts: what an operator must hear of at once.
//!
//! Every alert goes four ways ([`Core::alert`]): the counter
//! `unimsg_security_alerts_total{alert}`, a log line at WARN, an audit
//! entry `security.alert` and a `security.alert` webhook event. The
//! watchers here decide when the alerts that need memory fire: a burst of
//! failed logins over many accounts from one address
//! ([`StuffingWatch`]), and an admin credential used from an address its
//! account never used ([`Core::admin_seen`]). Both are bounded: what
//! unauthenticated clients cause never grows past a fixed size.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use parking_lot::Mutex;
use time::OffsetDateTime;
use unimsg_proto::hooks::{AlertKind, HookEventType, SecurityAlertData};
use unimsg_store::AddressSeen;

use crate::Core;
use crate::audit::AuditRecord;

/// Most addresses whose failed logins are watched at once.
const MAX_WATCHED: usize = 10_000;

/// Most `(admin, address)` pairs a node remembers as recorded.
const MAX_KNOWN_ADMIN_ADDRESSES: usize = 10_000;

/// Failed password logins by address: which accounts each one tried in
/// its current window.
pub(crate) struct StuffingWatch {
    watched: Mutex<HashMap<String, Tries>>,
    /// Hashes account names (keyed per process): only the count matters.
    hasher: RandomState,
}

struct Tries {
    since: OffsetDateTime,
    accounts: HashSet<u64>,
    alerted: bool,
}

impl Default for StuffingWatch {
    fn default() -> Self {
        Self {
            watched: Mutex::new(HashMap::new()),
            hasher: RandomState::new(),
        }
    }
}

impl StuffingWatch {
    /// Counts a failed login for `account` from `ip`; answers how many
    /// accounts the address tried when that reaches `threshold` within
    /// `window` for the first time in the window.
    pub(crate) fn failed(
        &self,
        now: OffsetDateTime,
        window: time::Duration,
        threshold: usize,
        ip: &str,
        account: &str,
    ) -> Option<usize> {
        if threshold == 0 {
            return None;
        }
        let mut watched = self.watched.lock();
        if !watched.contains_key(ip) && watched.len() >= MAX_WATCHED {
            watched.retain(|_, t| t.since + window > now);
            if watched.len() >= MAX_WATCHED {
                return None;
            }
        }
        let tries = watched.entry(ip.to_owned()).or_insert_with(|| Tries {
            since: now,
            accounts: HashSet::new(),
            alerted: false,
        });
        if tries.since + window <= now {
            *tries = Tries {
                since: now,
                accounts: HashSet::new(),
                alerted: false,
            };
        }
        if tries.alerted {
            return None;
        }
        tries.accounts.insert(self.hasher.hash_one(account));
        if tries.accounts.len() < threshold {
            return None;
        }
        tries.alerted = true;
        let tried = tries.accounts.len();
        tries.accounts = HashSet::new();
        Some(tried)
    }
}

/// The `(admin, address)` pairs this node recorded already, so that an
/// admin's every request does not write.
#[derive(Default)]
pub(crate) struct KnownAdminAddresses(Mutex<HashSet<(String, String)>>);

impl KnownAdminAddresses {
    fn contains(&self, admin_id: &str, ip: &str) -> bool {
        self.0
            .lock()
            .contains(&(admin_id.to_owned(), ip.to_owned()))
    }

    fn insert(&self, admin_id: &str, ip: &str) {
        let mut known = self.0.lock();
        if known.len() >= MAX_KNOWN_ADMIN_ADDRESSES {
            known.clear();
        }
        known.insert((admin_id.to_owned(), ip.to_owned()));
    }

    /// Forgets an account's addresses (it was deleted).
    pub(crate) fn forget(&self, admin_id: &str) {
        self.0.lock().retain(|(admin, _)| admin != admin_id);
    }
}

impl Core {
    /// Raises a security alert: counted in `/metrics`, logged at WARN,
    /// audited and sent to the webhooks that want `security.alert`.
    pub(crate) async fn alert(&self, alert: SecurityAlertData) {
        let kind = alert.alert.as_str();
        metrics::counter!("unimsg_security_alerts_total", "alert" => kind).increment(1);
        tracing::warn!(
            alert = kind,
            user = alert.user_id.as_ref().map_or("-", |u| u.as_str()),
            ip = alert.ip.as_deref().unwrap_or("-"),
            detail = alert.detail.as_deref().unwrap_or(""),
            "security alert"
        );
        self.audit(AuditRecord {
            action: "security.alert".into(),
            actor_kind: "system".into(),
            actor: "-".into(),
            ip: alert.ip.clone(),
            outcome: kind.into(),
            target: alert.user_id.as_ref().map(|u| u.to_string()),
            detail: alert.detail.clone(),
            ..AuditRecord::default()
        })
        .await;
        self.emit(HookEventType::SecurityAlert, &alert).await;
    }

    /// A failed password login for `account` from `ip`: raises
    /// `credential_stuffing` when the address reached the threshold.
    pub(crate) async fn login_failed_from(&self, ip: Option<&str>, account: &str) {
        let Some(ip) = ip else { return };
        let auth = &self.config.auth;
        let window = time::Duration::seconds(
            i64::try_from(auth.stuffing_window_secs.max(1)).unwrap_or(i64::MAX),
        );
        let Some(tried) = self.stuffing.failed(
            self.clock.now(),
            window,
            auth.stuffing_accounts,
            ip,
            account,
        ) else {
            return;
        };
        self.alert(SecurityAlertData {
            alert: AlertKind::CredentialStuffing,
            user_id: None,
            ip: Some(ip.to_owned()),
            detail: Some(format!(
                "failed logins for {tried} different accounts from this address within {} s",
                auth.stuffing_window_secs
            )),
        })
        .await;
    }

    /// An admin credential of `admin_id` was accepted from `ip`: the first
    /// use from an address the account never used raises `admin_new_ip`
    /// (the account's very first address does not).
    pub async fn admin_seen(&self, admin_id: &str, ip: &str) {
        if self.known_admin_addresses.contains(admin_id, ip) {
            return;
        }
        let seen = match self
            .store
            .note_admin_address(admin_id, ip, self.clock.now())
            .await
        {
            Ok(seen) => seen,
            Err(error) => {
                tracing::error!(%error, "cannot record an admin's address");
                return;
            }
        };
        self.known_admin_addresses.insert(admin_id, ip);
        if seen == AddressSeen::New {
            self.alert(SecurityAlertData {
                alert: AlertKind::AdminNewIp,
                user_id: None,
                ip: Some(ip.to_owned()),
                detail: Some(format!(
                    "admin {admin_id:?} used a credential from an address it never used before"
                )),
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing_fires_once_per_window_at_the_threshold() {
        let watch = StuffingWatch::default();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let window = time::Duration::seconds(60);
        let fail =
            |at: OffsetDateTime, ip: &str, account: &str| watch.failed(at, window, 3, ip, account);
        assert_eq!(fail(t0, "a", "u1"), None);
        // The same account again counts once.
        assert_eq!(fail(t0, "a", "u1"), None);
        assert_eq!(fail(t0, "a", "u2"), None);
        // Another address has its own count.
        assert_eq!(fail(t0, "b", "u3"), None);
        assert_eq!(fail(t0, "a", "u3"), Some(3));
        assert_eq!(fail(t0, "a", "u4"), None, "once per window");
        let later = t0 + window;
        assert_eq!(fail(later, "a", "u1"), None);
        assert_eq!(fail(later, "a", "u2"), None);
        assert_eq!(fail(later, "a", "u3"), Some(3), "a new window counts again");
    }

    #[test]
    fn the_watch_stays_bounded() {
        let watch = StuffingWatch::default();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let window = time::Duration::seconds(60);
        for i in 0..MAX_WATCHED + 100 {
            watch.failed(t0, window, 3, &format!("ip{i}"), "u");
        }
        assert_eq!(watch.watched.lock().len(), MAX_WATCHED);
        // Once the windows ended, new addresses are watched again.
        watch.failed(t0 + window, window, 3, "new", "u");
        assert_eq!(watch.watched.lock().len(), 1);
    }
}
