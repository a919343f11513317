//! Token signing keys: the newest signs, older ones still verify the
//! tokens they signed until those can have expired, and the public halves
//! are published as a JWK set (`GET /.well-known/jwks.json`).
//!
//! Every key is an Ed25519 key kept in the store like a data key (wrapped
//! by the master key), under the ids counting down from
//! [`FIRST_SIGNING_ID`]; its `kid` is its RFC 7638 JWK thumbprint, and
//! every token carries it. A rotation adds a key (on any node); the other
//! nodes load it on their next refresh ([`Core::run_key_refresh`], every
//! `keys.refresh_interval_secs`, and at once when a token names a `kid`
//! they do not know, at most once per [`UNKNOWN_KID_REFRESH`]). The same
//! loop reads the data keys again and adds one when it is due; the master
//! key's rotations are here too.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;
use time::OffsetDateTime;
use unimsg_proto::admin::{
    DataKeyRotated, Jwk, JwkSet, MasterRotated, RotateMasterRequest, SigningKeyInfo,
};
use unimsg_store::{DataKeys, StoreError};

use crate::Core;
use crate::error::{CoreError, Result};
use crate::keys::{KeyError, MasterKey, SigningKey, unwrap_key, wrap_key};

/// The store id of the first signing key; later ones count down from it.
pub const FIRST_SIGNING_ID: u32 = u32::MAX;

/// Ids at or above this are signing keys, below it data keys.
pub const SIGNING_IDS: u32 = 0xF000_0000;

/// The longest a token can live (minted user tokens: 30 days): an older
/// key verifies for this long after its successor appeared.
pub const MAX_TOKEN_LIFETIME: time::Duration = time::Duration::days(30);

/// How often an unknown `kid` may make a node read them at once.
pub const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(5);

/// One signing key with its `kid` and life.
#[derive(Debug, Clone)]
pub struct SigningEntry {
    pub kid: String,
    pub key: SigningKey,
    pub created_at: OffsetDateTime,
    /// When it stops verifying: its successor's creation plus
    /// [`MAX_TOKEN_LIFETIME`]; `None` for the newest.
    pub retires_at: Option<OffsetDateTime>,
    store_id: u32,
}

/// The signing keys, newest first.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    keys: Vec<SigningEntry>,
}

/// RFC 7638 thumbprint of an Ed25519 public key: base64url of the SHA-256
/// of `{"crv":"Ed25519","kty":"OKP","x":…}`.
pub fn thumbprint(public: &[u8]) -> String {
    let x = URL_SAFE_NO_PAD.encode(public);
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
}

impl SigningKeys {
    /// Reads every signing key of the store. With none, imports
    /// `legacy` (the key of a version that kept it in `signing.key`) or
    /// makes a first one; nodes starting together agree on it.
    pub async fn load_or_create(
        store: &dyn DataKeys,
        master: &MasterKey,
        legacy: Option<SigningKey>,
    ) -> std::result::Result<Self, KeyError> {
        if let Some(keys) = Self::load(store, master).await? {
            return Ok(keys);
        }
        let first = match legacy {
            Some(key) => key,
            None => SigningKey::generate()?,
        };
        let wrapped = wrap_key(master, FIRST_SIGNING_ID, first.pkcs8())?;
        match store.insert_data_key(wrapped).await {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Self::load(store, master)
            .await?
            .ok_or_else(|| KeyError::Invalid("the first signing key vanished".into()))
    }

    /// The stored signing keys; `None` when there are none.
    pub async fn load(
        store: &dyn DataKeys,
        master: &MasterKey,
    ) -> std::result::Result<Option<Self>, KeyError> {
        let mut rows: Vec<_> = store
            .data_keys()
            .await?
            .into_iter()
            .filter(|w| w.key_id >= SIGNING_IDS)
            .collect();
        if rows.is_empty() {
            return Ok(None);
        }
        // Oldest first: ids count down.
        rows.sort_by_key(|w| std::cmp::Reverse(w.key_id));
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let key = SigningKey::from_pkcs8(&unwrap_key(master, row)?)?;
            keys.push(SigningEntry {
                kid: thumbprint(key.public()),
                key,
                created_at: row.created_at,
                retires_at: None,
                store_id: row.key_id,
            });
        }
        for i in 1..keys.len() {
            keys[i - 1].retires_at = Some(keys[i].created_at + MAX_TOKEN_LIFETIME);
        }
        keys.reverse();
        Ok(Some(Self { keys }))
    }

    /// Adds a key that signs from now on; the others keep verifying.
    pub async fn rotate(
        store: &dyn DataKeys,
        master: &MasterKey,
    ) -> std::result::Result<Self, KeyError> {
        // Two rotations at once: the second one's id is taken, it reads
        // the winner's key and tries the next id.
        for _ in 0..8 {
            let current = Self::load(store, master).await?;
            let next_id = current
                .as_ref()
                .and_then(|k| k.keys.iter().map(|e| e.store_id).min())
                .map_or(FIRST_SIGNING_ID, |id| id - 1);
            if next_id < SIGNING_IDS {
                return Err(KeyError::Invalid("no signing key id is left".into()));
            }
            let key = SigningKey::generate()?;
            match store
                .insert_data_key(wrap_key(master, next_id, key.pkcs8())?)
                .await
            {
                Ok(()) => {
                    return Self::load(store, master)
                        .await?
                        .ok_or_else(|| KeyError::Invalid("the signing keys vanished".into()));
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(KeyError::Invalid(
            "the signing key could not be rotated: too many rotations at once".into(),
        ))
    }

    /// The key that signs.
    pub fn current(&self) -> &SigningEntry {
        &self.keys[0]
    }

    /// The key named `kid` if it still verifies at `now`; a token without
    /// a `kid` (made before keys had one) names the oldest key.
    pub fn verifying(&self, kid: Option<&str>, now: OffsetDateTime) -> Option<&SigningEntry> {
        let entry = match kid {
            Some(kid) => self.keys.iter().find(|e| e.kid == kid)?,
            None => self.keys.last()?,
        };
        entry.retires_at.is_none_or(|t| t > now).then_some(entry)
    }

    /// The keys that still verify, newest first.
    pub fn live(&self, now: OffsetDateTime) -> impl Iterator<Item = &SigningEntry> {
        self.keys
            .iter()
            .filter(move |e| e.retires_at.is_none_or(|t| t > now))
    }
}

impl Core {
    /// The current signing keys.
    pub(crate) fn signing_keys(&self) -> Arc<SigningKeys> {
        self.signing.read().clone()
    }

    /// Signs `claims` with the current key, naming it in the header.
    pub(crate) fn sign_token<T: Serialize>(&self, claims: &T) -> Result<String> {
        let keys = self.signing_keys();
        let current = keys.current();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(current.kid.clone());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_ed_der(current.key.pkcs8()),
        )
        .map_err(|e| CoreError::Internal(format!("cannot sign a token: {e}")))
    }

    /// The key a token names, if it verifies. An unknown `kid` reads the
    /// keys again first (another node may have rotated), rate-limited so
    /// that made-up `kid`s cannot make the store work.
    pub(crate) async fn verifying_key(&self, token: &str) -> Option<DecodingKey> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::EdDSA {
            return None;
        }
        let now = self.clock.now();
        let found = |keys: &SigningKeys| {
            keys.verifying(header.kid.as_deref(), now)
                .map(|e| DecodingKey::from_ed_der(e.key.public()))
        };
        if let Some(key) = found(&self.signing_keys()) {
            return Some(key);
        }
        let known = header
            .kid
            .as_deref()
            .is_some_and(|kid| self.signing_keys().keys.iter().any(|e| e.kid == kid));
        if header.kid.is_none() || known || self.kid_refreshes.allow("unknown kid").is_none() {
            return None;
        }
        if let Err(error) = self.refresh_signing_keys().await {
            tracing::warn!(%error, "cannot read the signing keys");
        }
        found(&self.signing_keys())
    }

    /// Reads the signing keys from the store again.
    pub async fn refresh_signing_keys(&self) -> Result<()> {
        let master = self.master.read().clone();
        let keys = SigningKeys::load(&*self.store, &master)
            .await
            .map_err(|e| CoreError::Internal(e.to_string()))?
            .ok_or_else(|| CoreError::Internal("no signing key in the store".into()))?;
        *self.signing.write() = Arc::new(keys);
        Ok(())
    }

    /// Every `keys.refresh_interval_secs` until dropped: reads the
    /// signing and data keys again (another node's rotation), and adds a
    /// data key when the one that seals is due ([`Keyring::rotation_due`]).
    ///
    /// [`Keyring::rotation_due`]: crate::keys::Keyring::rotation_due
    pub async fn run_key_refresh(self: Arc<Self>) {
        let every = Duration::from_secs(self.config.keys.refresh_interval_secs.max(1));
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if let Err(error) = self.refresh_signing_keys().await {
                tracing::warn!(%error, "cannot read the signing keys");
            }
            let master = self.master.read().clone();
            if let Err(error) = self.keyring.reload(&*self.store, &master).await {
                tracing::warn!(%error, "cannot read the data keys");
                continue;
            }
            if self.keyring.rotation_due(self.clock.now()) {
                match self.rotate_data_key().await {
                    Ok(info) => {
                        tracing::info!(key_id = info.key_id, "a new data key is due: added one")
                    }
                    Err(error) => tracing::warn!(%error, "cannot add a data key"),
                }
            }
        }
    }

    /// `POST /v1/admin/keys/data/rotate`: a new data key seals contents
    /// from its activation on (a few key refreshes from now, so that every
    /// node has it first); rows keep the key that sealed them.
    pub async fn rotate_data_key(&self) -> Result<DataKeyRotated> {
        let master = self.current_master().await?;
        let key_id = self
            .keyring
            .add_key(&*self.store, &master)
            .await
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok(DataKeyRotated {
            key_id,
            seals_from: self.clock.now() + self.config.keys.data_key_limits().activation,
        })
    }

    /// `POST /v1/admin/keys/signing/rotate`: a new key signs from now on.
    pub async fn rotate_signing_key(&self) -> Result<SigningKeyInfo> {
        let master = self.current_master().await?;
        let keys = SigningKeys::rotate(&*self.store, &master)
            .await
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let current = keys.current();
        let info = SigningKeyInfo {
            kid: current.kid.clone(),
            created_at: current.created_at,
        };
        *self.signing.write() = Arc::new(keys);
        tracing::info!(kid = %info.kid, "rotated the token signing key");
        Ok(info)
    }

    /// This node's master key, if it still opens every stored key; after a
    /// rotation on another node it does not, and nothing new may be
    /// wrapped with it.
    pub(crate) async fn current_master(&self) -> Result<MasterKey> {
        let master = self.master.read().clone();
        let fresh = crate::keys::opens_all(&*self.store, &master)
            .await
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        if !fresh {
            return Err(CoreError::Conflict(
                "the master key was rotated on another node: start this node again with the new key"
                    .into(),
            ));
        }
        Ok(master)
    }

    /// `POST /v1/admin/keys/master/rotate`: see [`crate::keys::rotate_master`].
    pub async fn rotate_master_key(&self, req: RotateMasterRequest) -> Result<MasterRotated> {
        let _one = self.rotating.lock().await;
        let given = req
            .new_master_key
            .as_deref()
            .map(MasterKey::from_base64)
            .transpose()
            .map_err(|_| {
                CoreError::BadRequest("new_master_key must be the base64 of 32 bytes".into())
            })?;
        // Not `current_master`: a rotation cut off on this node left some
        // keys under the new key already, and asking again resumes it.
        let old = self.master.read().clone();
        let (new, rewrapped) =
            crate::keys::rotate_master(&*self.store, &self.master_source, &old, given).await?;
        *self.master.write() = new;
        tracing::warn!(
            rewrapped,
            source = self.master_source.describe(),
            "rotated the master key; the old one no longer opens anything"
        );
        Ok(MasterRotated {
            rewrapped,
            key_source: self.master_source.describe().to_owned(),
        })
    }

    /// `GET /.well-known/jwks.json`: the public keys that verify tokens now.
    pub fn jwks(&self) -> JwkSet {
        let now = self.clock.now();
        JwkSet {
            keys: self
                .signing_keys()
                .live(now)
                .map(|e| Jwk {
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    x: URL_SAFE_NO_PAD.encode(e.key.public()),
                    kid: e.kid.clone(),
                    alg: "EdDSA".into(),
                    key_use: "sig".into(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thumbprint_follows_rfc_7638() {
        // RFC 8037 appendix A.3: the thumbprint of its Ed25519 key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        assert_eq!(
            thumbprint(&x),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
