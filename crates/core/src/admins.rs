//! The admin credential lifecycle: listing, changing, disabling and
//! deleting admin accounts, and the API keys machines use.
//!
//! Any change of an account moves its `tokens_valid_after`, which every
//! admin token carries as `ver`: a changed secret, changed scopes or a
//! disabling refuse the account's earlier tokens on the next call, on
//! every node (each call reads the account). A remembered Basic secret
//! is remembered with the stored hash it matched, so a changed secret is
//! refused at once too.
//!
//! An API key is `umk_<id>_<secret>`; only its SHA-256 is stored. It is
//! refused once revoked or expired, or when its admin is disabled or
//! deleted; its scopes are bounded by its admin's.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;
use unimsg_proto::admin::{
    AdminInfo, AdminKeyCreated, AdminKeyInfo, AdminKeyList, AdminList, AdminPatch, NewAdminKey,
    Scope,
};
use unimsg_store::{Admin, AdminChange, AdminKeyRow, StoreError};

use crate::Core;
use crate::admin::AdminContext;
use crate::error::{CoreError, Result};
use crate::keys::OpaqueToken;

/// What every API key starts with, so it is told from an admin token.
pub const KEY_PREFIX: &str = "umk_";

/// The longest an API key may live.
const MAX_KEY_LIFETIME: u64 = 365 * 24 * 3600;

/// A key's last use is written at most this often per node.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Secrets refused whatever their length (compared without case).
const DENIED_SECRETS: &[&str] = &[
    "password1234",
    "passwordpassword",
    "123456789012",
    "1234567890123",
    "12345678901234",
    "123456123456",
    "qwertyuiopas",
    "qwerty123456",
    "administrator",
    "adminadminadmin",
    "changemechangeme",
    "letmeinletmein",
    "unimsgunimsg",
    "iloveyouiloveyou",
];

/// The strength rule of every admin secret: `min_len` (at least 12) to
/// 1,024 bytes, not on the deny-list, not one repeated character, not
/// the admin id.
pub fn check_admin_secret(admin_id: &str, secret: &str, min_len: usize) -> Result<()> {
    let min_len = min_len.max(12);
    if secret.len() < min_len || secret.len() > 1024 {
        return Err(CoreError::BadRequest(format!(
            "an admin secret must be {min_len} to 1024 bytes"
        )));
    }
    let lower = secret.to_lowercase();
    let mut chars = lower.chars();
    let first = chars.next();
    let one_char = chars.all(|c| Some(c) == first);
    if one_char || DENIED_SECRETS.contains(&lower.as_str()) || lower == admin_id.to_lowercase() {
        return Err(CoreError::BadRequest(
            "this admin secret is too easy to guess: use a long random one".into(),
        ));
    }
    Ok(())
}

/// Last writes of each key's use on this node.
#[derive(Debug, Default)]
pub(crate) struct KeyTouches(
    parking_lot::Mutex<HashMap<String, (tokio::time::Instant, Option<String>)>>,
);

impl KeyTouches {
    /// Whether the use of `key_id` from `ip` should be written now.
    fn due(&self, key_id: &str, ip: Option<&str>) -> bool {
        let now = tokio::time::Instant::now();
        let mut seen = self.0.lock();
        if seen.len() > 10_000 {
            seen.retain(|_, (at, _)| now.duration_since(*at) < TOUCH_EVERY);
        }
        match seen.get(key_id) {
            Some((at, last_ip))
                if now.duration_since(*at) < TOUCH_EVERY && last_ip.as_deref() == ip =>
            {
                false
            }
            _ => {
                seen.insert(key_id.to_owned(), (now, ip.map(str::to_owned)));
                true
            }
        }
    }
}

fn scopes_of(names: &[String]) -> Vec<Scope> {
    names.iter().filter_map(|s| Scope::parse(s)).collect()
}

fn info(admin: Admin) -> AdminInfo {
    AdminInfo {
        scopes: scopes_of(&admin.scopes),
        admin_id: admin.admin_id,
        disabled: admin.disabled,
        created_at: admin.created_at,
    }
}

fn key_info(key: AdminKeyRow) -> AdminKeyInfo {
    AdminKeyInfo {
        scopes: scopes_of(&key.scopes),
        key_id: key.key_id,
        created_at: key.created_at,
        expires_at: key.expires_at,
        last_used_at: key.last_used_at,
        last_used_ip: key.last_used_ip,
        revoked_at: key.revoked_at,
    }
}

fn not_found() -> CoreError {
    CoreError::NotFound("admin not found".into())
}

/// The actor may manage `id`: with the `admin` scope, or its own account.
fn may_manage(actor: &AdminContext, id: &str) -> Result<()> {
    if actor.admin_id == id {
        return Ok(());
    }
    actor.require(Scope::Admin)
}

impl Core {
    /// `GET /v1/admin/admins`
    pub async fn list_admins(&self) -> Result<AdminList> {
        let admins = self.store.admins().await?;
        Ok(AdminList {
            admins: admins.into_iter().map(info).collect(),
        })
    }

    /// Whether another enabled account with the `admin` scope is left
    /// besides `id`: the last one is not disabled, deleted or demoted.
    async fn another_admin_left(&self, id: &str) -> Result<bool> {
        Ok(self.store.admins().await?.iter().any(|a| {
            a.admin_id != id && !a.disabled && a.scopes.iter().any(|s| s == Scope::Admin.as_str())
        }))
    }

    /// `PATCH /v1/admin/admins/{id}`: with the `admin` scope anything; an
    /// admin's own secret with any scope.
    pub async fn update_admin(
        &self,
        actor: &AdminContext,
        id: &str,
        patch: AdminPatch,
    ) -> Result<AdminInfo> {
        let own_secret_only =
            actor.admin_id == id && patch.scopes.is_none() && patch.disabled.is_none();
        if !own_secret_only {
            actor.require(Scope::Admin)?;
        }
        if patch.secret.is_none() && patch.scopes.is_none() && patch.disabled.is_none() {
            return Err(CoreError::BadRequest(
                "give a secret, scopes or disabled".into(),
            ));
        }
        let current = self.store.admin(id).await?.ok_or_else(not_found)?;
        if let Some(scopes) = &patch.scopes
            && scopes.is_empty()
        {
            return Err(CoreError::BadRequest("give at least one scope".into()));
        }
        let loses_admin = patch.disabled == Some(true)
            || patch
                .scopes
                .as_ref()
                .is_some_and(|s| !s.contains(&Scope::Admin));
        let is_admin = current.scopes.iter().any(|s| s == Scope::Admin.as_str());
        if is_admin && !current.disabled && loses_admin && !self.another_admin_left(id).await? {
            return Err(CoreError::Conflict(
                "this is the last enabled account with the admin scope".into(),
            ));
        }
        let secret_hash = match patch.secret {
            Some(secret) => {
                check_admin_secret(id, &secret, self.config.admin.min_secret_length)?;
                Some(self.passwords.hash(secret).await?)
            }
            None => None,
        };
        let change = AdminChange {
            secret_hash,
            scopes: patch
                .scopes
                .map(|s| s.iter().map(|s| s.as_str().to_owned()).collect()),
            disabled: patch.disabled,
        };
        let admin = self
            .store
            .update_admin(id, change, self.clock.now())
            .await?;
        self.verified.forget(id);
        Ok(info(admin))
    }

    /// `DELETE /v1/admin/admins/{id}`: its secret, keys and tokens stop
    /// working at once.
    pub async fn delete_admin(&self, actor: &AdminContext, id: &str) -> Result<()> {
        actor.require(Scope::Admin)?;
        let current = self.store.admin(id).await?.ok_or_else(not_found)?;
        let is_admin = current.scopes.iter().any(|s| s == Scope::Admin.as_str());
        if is_admin && !current.disabled && !self.another_admin_left(id).await? {
            return Err(CoreError::Conflict(
                "this is the last enabled account with the admin scope".into(),
            ));
        }
        if !self.store.delete_admin(id).await? {
            return Err(not_found());
        }
        self.verified.forget(id);
        self.known_admin_addresses.forget(id);
        Ok(())
    }

    /// `POST /v1/admin/admins/{id}/keys`: a key shown once.
    pub async fn create_admin_key(
        &self,
        actor: &AdminContext,
        id: &str,
        req: NewAdminKey,
    ) -> Result<AdminKeyCreated> {
        may_manage(actor, id)?;
        if !(60..=MAX_KEY_LIFETIME).contains(&req.expires_in) {
            return Err(CoreError::BadRequest(
                "expires_in must be 60 to 31536000 seconds".into(),
            ));
        }
        let admin = self.store.admin(id).await?.ok_or_else(not_found)?;
        let own = scopes_of(&admin.scopes);
        let scopes = req.scopes.unwrap_or_else(|| own.clone());
        if scopes.is_empty() {
            return Err(CoreError::BadRequest("give at least one scope".into()));
        }
        let within = own.contains(&Scope::Admin) || scopes.iter().all(|s| own.contains(s));
        if !within {
            return Err(CoreError::Forbidden(
                "a key cannot have a scope its admin lacks".into(),
            ));
        }
        let id_bytes =
            crate::keys::random_bytes::<9>().map_err(|e| CoreError::Internal(e.to_string()))?;
        let secret =
            crate::keys::random_bytes::<32>().map_err(|e| CoreError::Internal(e.to_string()))?;
        let key_id = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(id_bytes));
        let key = format!("{key_id}_{}", URL_SAFE_NO_PAD.encode(secret));
        let now = self.clock.now();
        let expires_at = now + time::Duration::seconds(req.expires_in as i64);
        let row = AdminKeyRow {
            key_id: key_id.clone(),
            admin_id: id.to_owned(),
            key_hash: OpaqueToken(key.clone()).hash(),
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            created_at: now,
            expires_at,
            last_used_at: None,
            last_used_ip: None,
            revoked_at: None,
        };
        self.store
            .create_admin_key(row)
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => not_found(),
                other => other.into(),
            })?;
        Ok(AdminKeyCreated {
            key_id,
            key,
            scopes,
            expires_at,
        })
    }

    /// `GET /v1/admin/admins/{id}/keys`
    pub async fn admin_keys(&self, actor: &AdminContext, id: &str) -> Result<AdminKeyList> {
        may_manage(actor, id)?;
        if self.store.admin(id).await?.is_none() {
            return Err(not_found());
        }
        let keys = self.store.admin_keys(id).await?;
        Ok(AdminKeyList {
            keys: keys.into_iter().map(key_info).collect(),
        })
    }

    /// `DELETE /v1/admin/admins/{id}/keys/{key_id}`
    pub async fn revoke_admin_key(
        &self,
        actor: &AdminContext,
        id: &str,
        key_id: &str,
    ) -> Result<()> {
        may_manage(actor, id)?;
        if !self
            .store
            .revoke_admin_key(id, key_id, self.clock.now())
            .await?
        {
            return Err(CoreError::NotFound("key not found".into()));
        }
        Ok(())
    }

    /// An API key presented as a Bearer token, from `ip`.
    pub(crate) async fn admin_by_key(&self, key: &str, ip: Option<&str>) -> Result<AdminContext> {
        const DENIED: CoreError = CoreError::Unauthorized("invalid, expired or revoked admin key");
        if key.len() > 256 {
            return Err(DENIED);
        }
        let row = self
            .store
            .admin_key(&OpaqueToken(key.to_owned()).hash())
            .await?
            .ok_or(DENIED)?;
        let now: OffsetDateTime = self.clock.now();
        if row.revoked_at.is_some() || row.expires_at <= now {
            return Err(DENIED);
        }
        let admin = self
            .store
            .admin(&row.admin_id)
            .await?
            .filter(|a| !a.disabled)
            .ok_or(DENIED)?;
        let own = scopes_of(&admin.scopes);
        let scopes = scopes_of(&row.scopes)
            .into_iter()
            .filter(|s| own.contains(&Scope::Admin) || own.contains(s))
            .collect();
        if self.key_touches.due(&row.key_id, ip)
            && let Err(error) = self
                .store
                .touch_admin_key(&row.key_id, now, ip.map(str::to_owned))
                .await
        {
            tracing::warn!(%error, "cannot record an admin key's use");
        }
        Ok(AdminContext {
            admin_id: admin.admin_id,
            scopes,
        })
    }
}

/// What every request signing secret starts with.
pub const SIGNING_SECRET_PREFIX: &str = "umss_";

/// The string a signed admin request's `X-Signature` is the HMAC-SHA256
/// of (keyed with the signing secret's bytes): lines of the version, the
/// method, the path with its query, `X-Timestamp`, `X-Nonce` and the hex
/// SHA-256 of the body.
pub fn canonical_request(
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("unimsg-admin-v1\n{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{hex}")
}

/// `X-Signature` for `canonical` under `secret`: `v1=` and the base64 of
/// the HMAC-SHA256.
pub fn sign_request(secret: &str, canonical: &str) -> String {
    use base64::engine::general_purpose::STANDARD;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, canonical.as_bytes());
    format!("v1={}", STANDARD.encode(tag.as_ref()))
}

fn signing_aad(admin_id: &str) -> Vec<u8> {
    format!("unimsg-admin-signing-secret:{admin_id}").into_bytes()
}

impl Core {
    /// `POST /v1/admin/admins/{id}/signing-secret`: a new secret that signs
    /// the account's requests (the previous one stops at once).
    pub async fn new_signing_secret(
        &self,
        actor: &AdminContext,
        id: &str,
    ) -> Result<unimsg_proto::admin::SigningSecret> {
        may_manage(actor, id)?;
        let bytes =
            crate::keys::random_bytes::<32>().map_err(|e| CoreError::Internal(e.to_string()))?;
        let secret = format!("{SIGNING_SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let sealed = self
            .keyring
            .seal(secret.as_bytes(), &signing_aad(id))
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        self.store
            .set_admin_signing_secret(id, sealed.to_bytes())
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => not_found(),
                other => other.into(),
            })?;
        Ok(unimsg_proto::admin::SigningSecret {
            signing_secret: secret,
        })
    }

    /// Whether `admin_id` has no request signing secret yet.
    pub async fn store_admin_has_no_signing_secret(&self, admin_id: &str) -> Result<bool> {
        Ok(self
            .store
            .admin(admin_id)
            .await?
            .is_some_and(|a| a.signing_secret.is_none()))
    }

    /// Checks a signed admin request (`admin.require_signature`): the
    /// signature must be the account's over exactly this method, path,
    /// timestamp, nonce and body.
    pub async fn check_signature(
        &self,
        admin_id: &str,
        canonical: &str,
        signature: Option<&str>,
    ) -> Result<()> {
        const BAD: CoreError = CoreError::Unauthorized("the request signature does not match");
        let signature = signature.ok_or(CoreError::Unauthorized(
            "this server takes signed admin requests only: send X-Signature",
        ))?;
        let admin = self.store.admin(admin_id).await?.ok_or(BAD)?;
        let sealed = admin
            .signing_secret
            .as_deref()
            .and_then(unimsg_store::Sealed::from_bytes)
            .ok_or(CoreError::Unauthorized(
                "this admin has no signing secret: make one with POST /v1/admin/admins/{id}/signing-secret",
            ))?;
        let secret = self
            .keyring
            .open(&sealed, &signing_aad(admin_id))
            .map_err(|e| CoreError::Internal(format!("cannot open a signing secret: {e}")))?;
        let secret = String::from_utf8(secret).map_err(|_| BAD)?;
        let expected = sign_request(&secret, canonical);
        aws_lc_rs::constant_time::verify_slices_are_equal(
            expected.as_bytes(),
            signature.trim().as_bytes(),
        )
        .map_err(|_| BAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the README, checked against Python's `hmac`
    /// and `hashlib` (an implementation of its own).
    #[test]
    fn the_signature_of_the_worked_example() {
        let canonical = canonical_request(
            "POST",
            "/v1/admin/notify",
            "1765000000",
            "7f3c9a",
            br#"{"to":{"users":["alice"]},"content":{"text":"hi"}}"#,
        );
        assert_eq!(
            canonical.lines().last().unwrap(),
            PY_BODY_SHA256,
            "the body's SHA-256"
        );
        assert_eq!(sign_request(PY_SECRET, &canonical), PY_SIGNATURE);
    }

    const PY_SECRET: &str = "umss_example-secret";
    const PY_BODY_SHA256: &str = "834df16f807db0140ef0011745f248e073559cc4e501072b3e292e53632f4214";
    const PY_SIGNATURE: &str = "v1=uUu4Z/771idm4zeq45nL+OvWyJB1qHXL90fX0cAp4EA=";

    #[test]
    fn weak_admin_secrets_are_refused() {
        assert!(check_admin_secret("ops", "short", 12).is_err());
        assert!(check_admin_secret("ops", "aaaaaaaaaaaaaaaa", 12).is_err());
        assert!(check_admin_secret("ops", "Password1234", 12).is_err());
        assert!(check_admin_secret("operations-ops", "Operations-Ops", 12).is_err());
        assert!(check_admin_secret("ops", "a-long-enough-secret", 24).is_err());
        assert!(check_admin_secret("ops", "correct horse battery", 12).is_ok());
    }
}
