//! Key management: the master key, the data keys it wraps, and the token
//! signing key.
//!
//! Message content is sealed with AES-256-GCM under a data key; each row
//! stores the data key's id and its own random nonce, and the message id is
//! bound in as associated data so a ciphertext cannot be moved to another
//! row. Data keys are stored in the database wrapped (AES-256-GCM) by the
//! master key, which never touches the database: it comes from
//! `UNIMSG_MASTER_KEY` or from `master.key` in the data directory.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use time::OffsetDateTime;
use unimsg_store::{DataKeys, Sealed, StoreError, TokenHash, WrappedKey};

/// Why keys could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the master key does not open data key {0}: wrong UNIMSG_MASTER_KEY or master.key?")]
    WrongMasterKey(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cryptographic failure")]
    Crypto,
}

/// Fills a buffer from the system CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| KeyError::Crypto)?;
    Ok(buf)
}

/// A fresh opaque token (32 random bytes, base64url) and its stored hash.
pub fn new_opaque_token() -> Result<(OpaqueToken, TokenHash), KeyError> {
    let token = OpaqueToken(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?));
    let hash = token.hash();
    Ok((token, hash))
}

/// A bearer secret handed to a client once (refresh tokens). `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct OpaqueToken(pub String);

impl OpaqueToken {
    pub fn hash(&self) -> TokenHash {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.0.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        TokenHash(out)
    }
}

impl fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpaqueToken([redacted])")
    }
}

/// 32 bytes of AES-256 key material. `Debug` hides it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Parses base64 (standard or URL-safe) of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| KeyError::Invalid("the master key is not valid base64".into()))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            KeyError::Invalid("the master key must be 32 bytes (base64 of 32 random bytes)".into())
        })?;
        Ok(Self(key))
    }

    /// The master key from `UNIMSG_MASTER_KEY` when set, else from
    /// `DIR/master.key`, created with fresh random bytes at first start.
    pub fn load_or_create(data_dir: &Path, from_env: Option<&str>) -> Result<Self, KeyError> {
        if let Some(text) = from_env {
            return Self::from_base64(text);
        }
        let path = data_dir.join("master.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_base64(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = random_bytes::<32>()?;
                write_secret_file(&path, format!("{}\n", STANDARD.encode(key)).as_bytes())?;
                tracing::info!(path = %path.display(), "created a new master key");
                Ok(Self(key))
            }
            Err(source) => Err(KeyError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

/// Writes a file readable by its owner only.
fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut file, contents).map_err(io)?;
    file.sync_all().map_err(io)
}

fn aead_key(bytes: &[u8]) -> Result<LessSafeKey, KeyError> {
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KeyError::Crypto)?,
    ))
}

fn seal_with(key: &LessSafeKey, plain: &[u8], aad: &[u8]) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    let nonce_bytes = random_bytes::<NONCE_LEN>()?;
    let mut buf = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce_bytes),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| KeyError::Crypto)?;
    Ok((nonce_bytes.to_vec(), buf))
}

fn open_with(
    key: &LessSafeKey,
    nonce: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Crypto)?;
    let mut buf = ciphertext.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| KeyError::Crypto)?;
    let len = plain.len();
    buf.truncate(len);
    Ok(buf)
}

fn wrap_aad(key_id: u32) -> Vec<u8> {
    format!("unimsg-data-key:{key_id}").into_bytes()
}

/// `key` wrapped by the master key as the store row `key_id`.
pub(crate) fn wrap_key(
    master: &MasterKey,
    key_id: u32,
    key: &[u8],
) -> Result<WrappedKey, KeyError> {
    let (nonce, ct) = seal_with(&aead_key(&master.0)?, key, &wrap_aad(key_id))?;
    Ok(WrappedKey {
        key_id,
        wrapped: [nonce, ct].concat(),
        created_at: OffsetDateTime::now_utc(),
    })
}

/// The key of a store row, unwrapped by the master key.
pub(crate) fn unwrap_key(master: &MasterKey, row: &WrappedKey) -> Result<Vec<u8>, KeyError> {
    if row.wrapped.len() < NONCE_LEN {
        return Err(KeyError::WrongMasterKey(row.key_id));
    }
    let (nonce, ct) = row.wrapped.split_at(NONCE_LEN);
    open_with(&aead_key(&master.0)?, nonce, ct, &wrap_aad(row.key_id))
        .map_err(|_| KeyError::WrongMasterKey(row.key_id))
}

/// The unwrapped data keys; seals with the newest, opens with any.
pub struct Keyring {
    keys: HashMap<u32, LessSafeKey>,
    active: u32,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// The stored data keys, without the signing keys.
async fn stored_data_keys(store: &dyn DataKeys) -> Result<Vec<WrappedKey>, KeyError> {
    let mut stored = store.data_keys().await?;
    stored.retain(|w| w.key_id < crate::signing::SIGNING_IDS);
    Ok(stored)
}

impl Keyring {
    /// Unwraps every stored data key; creates the first one when there is
    /// none. Nodes starting together agree on the first key: whoever
    /// stores it second reads the winner's.
    pub async fn load(store: &dyn DataKeys, master: &MasterKey) -> Result<Self, KeyError> {
        let master_key = aead_key(&master.0)?;
        let mut stored = stored_data_keys(store).await?;
        if stored.is_empty() {
            let fresh = random_bytes::<32>()?;
            let (nonce, ct) = seal_with(&master_key, &fresh, &wrap_aad(1))?;
            let wrapped = WrappedKey {
                key_id: 1,
                wrapped: [nonce, ct].concat(),
                created_at: OffsetDateTime::now_utc(),
            };
            match store.insert_data_key(wrapped.clone()).await {
                Ok(()) => stored.push(wrapped),
                Err(StoreError::Conflict(_)) => stored = stored_data_keys(store).await?,
                Err(e) => return Err(e.into()),
            }
        }
        let mut keys = HashMap::new();
        for w in &stored {
            if w.wrapped.len() < NONCE_LEN {
                return Err(KeyError::WrongMasterKey(w.key_id));
            }
            let (nonce, ct) = w.wrapped.split_at(NONCE_LEN);
            let raw = open_with(&master_key, nonce, ct, &wrap_aad(w.key_id))
                .map_err(|_| KeyError::WrongMasterKey(w.key_id))?;
            keys.insert(w.key_id, aead_key(&raw)?);
        }
        let active = stored.iter().map(|w| w.key_id).max().unwrap_or(1);
        Ok(Self { keys, active })
    }

    /// Seals `plain`, binding `aad` (the row's identity) to the ciphertext.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Sealed, KeyError> {
        let key = self.keys.get(&self.active).ok_or(KeyError::Crypto)?;
        let (nonce, ciphertext) = seal_with(key, plain, aad)?;
        Ok(Sealed {
            key_id: self.active,
            nonce,
            ciphertext,
        })
    }

    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let key = self.keys.get(&sealed.key_id).ok_or(KeyError::Crypto)?;
        open_with(key, &sealed.nonce, &sealed.ciphertext, aad)
    }
}

/// The Ed25519 key that signs access tokens, kept as PKCS#8 in
/// `DIR/signing.key`.
#[derive(Clone)]
pub struct SigningKey {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

impl SigningKey {
    pub fn generate() -> Result<Self, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Crypto)?;
        Self::from_pkcs8(doc.as_ref())
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| {
            KeyError::Invalid("the signing key is not an Ed25519 PKCS#8 key".into())
        })?;
        Ok(Self {
            pkcs8: pkcs8.to_vec(),
            public: pair.public_key().as_ref().to_vec(),
        })
    }

    /// The key of `DIR/signing.key`, where versions before signing-key
    /// rotation kept it; `None` when there is no such file.
    pub fn legacy_file(data_dir: &Path) -> Result<Option<Self>, KeyError> {
        let path = data_dir.join("signing.key");
        match std::fs::read(&path) {
            Ok(bytes) => Self::from_pkcs8(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KeyError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    pub(crate) fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub(crate) fn public(&self) -> &[u8] {
        &self.public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_binds_the_row_identity() {
        let key = aead_key(&[7u8; 32]).unwrap();
        let ring = Keyring {
            keys: HashMap::from([(1, key)]),
            active: 1,
        };
        let sealed = ring.seal(b"secret text", b"m1").unwrap();
        assert_ne!(sealed.ciphertext, b"secret text");
        assert_eq!(ring.open(&sealed, b"m1").unwrap(), b"secret text");
        assert!(
            ring.open(&sealed, b"m2").is_err(),
            "ciphertext moved to another row must not open"
        );
        let again = ring.seal(b"secret text", b"m1").unwrap();
        assert_ne!(again.nonce, sealed.nonce, "nonces must differ per row");
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let master = MasterKey([1; 32]);
        assert_eq!(format!("{master:?}"), "MasterKey([redacted])");
        assert_eq!(
            format!("{:?}", OpaqueToken("abc".into())),
            "OpaqueToken([redacted])"
        );
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        assert!(MasterKey::from_base64(&STANDARD.encode([0u8; 16])).is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(MasterKey::from_base64(&STANDARD.encode([0u8; 32])).is_ok());
    }
}
