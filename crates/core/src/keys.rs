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
use std::path::{Path, PathBuf};
use std::time::Duration;

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

    /// Whether two keys are the same (in constant time).
    pub fn same_as(&self, other: &MasterKey) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self(random_bytes::<32>()?))
    }

    /// The key as base64, for an operator to keep (`UNIMSG_MASTER_KEY`).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Writes the key to a new file readable by its owner only.
    pub fn write_new_file(&self, path: &Path) -> Result<(), KeyError> {
        write_secret_file(path, format!("{}\n", self.to_base64()).as_bytes())
    }

    /// The key of `path`, created with fresh random bytes when missing.
    pub fn load_or_create_file(path: &Path) -> Result<Self, KeyError> {
        let path = path.to_path_buf();
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

/// Where the master key comes from, in this order: `UNIMSG_MASTER_KEY`,
/// `keys.master_key_command`, `DIR/master.key`.
#[derive(Clone)]
pub enum MasterSource {
    /// The environment variable's value.
    Env(String),
    /// A command line run with `sh -c`; its standard output is the key.
    Command(String),
    /// The data directory's `master.key`, made at first start.
    File(PathBuf),
}

impl fmt::Debug for MasterSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// How long `keys.master_key_command` may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

impl MasterSource {
    pub fn of(data_dir: &Path, env: Option<String>, command: &str) -> Self {
        match env {
            Some(value) => Self::Env(value),
            None if !command.trim().is_empty() => Self::Command(command.to_owned()),
            None => Self::File(data_dir.join("master.key")),
        }
    }

    /// Names the source without its secret.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Env(_) => "UNIMSG_MASTER_KEY",
            Self::Command(_) => "keys.master_key_command",
            Self::File(_) => "master.key",
        }
    }

    /// The key; the file is created with fresh random bytes when missing.
    pub async fn load(&self) -> Result<MasterKey, KeyError> {
        match self {
            Self::Env(value) => MasterKey::from_base64(value),
            Self::File(path) => MasterKey::load_or_create_file(path),
            Self::Command(command) => {
                let run = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(command)
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::inherit())
                    .kill_on_drop(true)
                    .output();
                let output = tokio::time::timeout(COMMAND_TIMEOUT, run)
                    .await
                    .map_err(|_| {
                        KeyError::Invalid(format!(
                            "keys.master_key_command did not finish within {} s",
                            COMMAND_TIMEOUT.as_secs()
                        ))
                    })?
                    .map_err(|e| {
                        KeyError::Invalid(format!("cannot run keys.master_key_command: {e}"))
                    })?;
                if !output.status.success() {
                    return Err(KeyError::Invalid(format!(
                        "keys.master_key_command failed ({})",
                        output.status
                    )));
                }
                let text = String::from_utf8(output.stdout).map_err(|_| {
                    KeyError::Invalid("keys.master_key_command printed no text".into())
                })?;
                MasterKey::from_base64(&text).map_err(|e| {
                    KeyError::Invalid(format!(
                        "keys.master_key_command printed no master key: {e}"
                    ))
                })
            }
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

/// Re-wraps every stored key (data and signing keys) under `new`. A key
/// that `new` opens already is skipped, so a rotation that was cut off
/// resumes where it stopped; a key neither opens is an error that names
/// it. Content is not touched: it stays sealed by the same data keys.
/// Returns how many keys were re-wrapped.
pub async fn rewrap_all(
    store: &dyn DataKeys,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<u64, KeyError> {
    let mut rewrapped = 0;
    for row in store.data_keys().await? {
        if unwrap_key(new, &row).is_ok() {
            continue;
        }
        let raw = unwrap_key(old, &row)?;
        let fresh = wrap_key(new, row.key_id, &raw)?;
        store.rewrap_data_key(row.key_id, fresh.wrapped).await?;
        rewrapped += 1;
    }
    Ok(rewrapped)
}

/// Rotates the master key from `current` to `given`, or to a fresh one.
///
/// With `master.key` the new key is written to `master.key.new` first and
/// renamed over `master.key` once every stored key is re-wrapped
/// ([`rewrap_all`]); a rotation that was cut off resumes with the key in
/// `master.key.new`. With `UNIMSG_MASTER_KEY` or a command the new key
/// must be given, and the operator changes it there. Returns the new key
/// and how many stored keys were re-wrapped.
pub async fn rotate_master(
    store: &dyn DataKeys,
    source: &MasterSource,
    current: &MasterKey,
    given: Option<MasterKey>,
) -> Result<(MasterKey, u64), crate::error::CoreError> {
    use crate::error::CoreError;
    let internal = |e: KeyError| CoreError::Internal(e.to_string());
    let file = match source {
        MasterSource::File(path) => Some((path.with_extension("key.new"), path.clone())),
        _ => None,
    };
    let new = match (given, &file) {
        (Some(key), None) => key,
        (Some(key), Some((next, _))) => {
            match std::fs::remove_file(next) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(CoreError::Internal(format!(
                        "cannot replace {}: {e}",
                        next.display()
                    )));
                }
            }
            key.write_new_file(next).map_err(internal)?;
            key
        }
        (None, Some((next, _))) if next.exists() => {
            MasterKey::load_or_create_file(next).map_err(internal)?
        }
        (None, Some((next, _))) => {
            let key = MasterKey::generate().map_err(internal)?;
            key.write_new_file(next).map_err(internal)?;
            key
        }
        (None, None) => {
            return Err(CoreError::BadRequest(format!(
                "the master key comes from {}: give the new one (base64 of 32 bytes), \
                 and set it there before the next start",
                source.describe()
            )));
        }
    };
    if new.same_as(current) {
        return Err(CoreError::BadRequest(
            "the new master key is the current one".into(),
        ));
    }
    let rewrapped = rewrap_all(store, current, &new).await.map_err(internal)?;
    if let Some((next, path)) = &file {
        std::fs::rename(next, path)
            .map_err(|e| CoreError::Internal(format!("cannot replace master.key: {e}")))?;
    }
    Ok((new, rewrapped))
}

/// Whether `master` opens every stored key: a node whose master key was
/// rotated away elsewhere must not wrap new keys with it.
pub async fn opens_all(store: &dyn DataKeys, master: &MasterKey) -> Result<bool, KeyError> {
    Ok(store
        .data_keys()
        .await?
        .iter()
        .all(|row| unwrap_key(master, row).is_ok()))
}

/// When a data key is replaced by a new one.
#[derive(Debug, Clone, Copy)]
pub struct DataKeyLimits {
    /// Oldest a sealing key may be.
    pub max_age: time::Duration,
    /// Most contents one node seals with one key. AES-GCM with random
    /// 96-bit nonces must stay far below 2^32 seals per key.
    pub max_seals: u64,
    /// How long a new key waits before it seals, so that every node of a
    /// cluster has read it (three key refreshes) before content sealed
    /// with it can reach them.
    pub activation: time::Duration,
}

impl Default for DataKeyLimits {
    fn default() -> Self {
        Self {
            max_age: time::Duration::days(30),
            max_seals: 1 << 28,
            activation: time::Duration::seconds(30),
        }
    }
}

/// The unwrapped data keys, newest first.
struct Ring {
    keys: HashMap<u32, LessSafeKey>,
    /// `(key_id, created_at)`, newest first.
    order: Vec<(u32, OffsetDateTime)>,
}

impl Ring {
    /// The key that seals at `now`: the newest one past its activation,
    /// or, when none is (a first key), the oldest.
    fn active(
        &self,
        now: OffsetDateTime,
        activation: time::Duration,
    ) -> Option<(u32, OffsetDateTime)> {
        self.order
            .iter()
            .find(|(_, created)| *created + activation <= now)
            .or_else(|| self.order.last())
            .copied()
    }
}

/// The data keys: seals with the active one, opens with any. Replaced by
/// a new key after [`DataKeyLimits`] (see [`Keyring::rotation_due`]) or
/// on demand; each row keeps the id of the key that sealed it.
pub struct Keyring {
    ring: parking_lot::RwLock<Ring>,
    limits: DataKeyLimits,
    /// Seals with `counted` since this process started.
    seals: std::sync::atomic::AtomicU64,
    counted: std::sync::atomic::AtomicU32,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.ring.read();
        f.debug_struct("Keyring")
            .field("keys", &ring.order.len())
            .finish()
    }
}

/// The stored data keys, without the audit and signing keys.
async fn stored_data_keys(store: &dyn DataKeys) -> Result<Vec<WrappedKey>, KeyError> {
    let mut stored = store.data_keys().await?;
    stored.retain(|w| w.key_id < crate::audit::AUDIT_KEY_ID);
    Ok(stored)
}

/// Unwraps `stored` into a ring.
fn ring_of(stored: &[WrappedKey], master: &MasterKey) -> Result<Ring, KeyError> {
    let mut keys = HashMap::new();
    let mut order = Vec::with_capacity(stored.len());
    for w in stored {
        let raw = unwrap_key(master, w)?;
        keys.insert(w.key_id, aead_key(&raw)?);
        order.push((w.key_id, w.created_at));
    }
    order.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    Ok(Ring { keys, order })
}

impl Keyring {
    /// Unwraps every stored data key; creates the first one when there is
    /// none. Nodes starting together agree on the first key: whoever
    /// stores it second reads the winner's.
    pub async fn load(store: &dyn DataKeys, master: &MasterKey) -> Result<Self, KeyError> {
        Self::load_with(store, master, DataKeyLimits::default()).await
    }

    /// [`Self::load`] with other limits.
    pub async fn load_with(
        store: &dyn DataKeys,
        master: &MasterKey,
        limits: DataKeyLimits,
    ) -> Result<Self, KeyError> {
        let mut stored = stored_data_keys(store).await?;
        if stored.is_empty() {
            let wrapped = wrap_key(master, 1, &random_bytes::<32>()?)?;
            match store.insert_data_key(wrapped.clone()).await {
                Ok(()) => stored.push(wrapped),
                Err(StoreError::Conflict(_)) => stored = stored_data_keys(store).await?,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Self {
            ring: parking_lot::RwLock::new(ring_of(&stored, master)?),
            limits,
            seals: std::sync::atomic::AtomicU64::new(0),
            counted: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// Reads the stored data keys again (another node may have added one).
    pub async fn reload(&self, store: &dyn DataKeys, master: &MasterKey) -> Result<(), KeyError> {
        let stored = stored_data_keys(store).await?;
        if !stored.is_empty() {
            *self.ring.write() = ring_of(&stored, master)?;
        }
        Ok(())
    }

    /// Stores a new data key, which seals once its activation has passed.
    /// Two nodes adding one at once add one between them. Returns its id.
    pub async fn add_key(&self, store: &dyn DataKeys, master: &MasterKey) -> Result<u32, KeyError> {
        let next = self.ring.read().order.first().map_or(1, |(id, _)| id + 1);
        if next >= crate::audit::AUDIT_KEY_ID {
            return Err(KeyError::Invalid("no data key id is left".into()));
        }
        let wrapped = wrap_key(master, next, &random_bytes::<32>()?)?;
        match store.insert_data_key(wrapped).await {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.reload(store, master).await?;
        Ok(next)
    }

    /// Whether the key that seals now is older than the limit, or has
    /// sealed more than the limit on this node, and no newer key waits
    /// for its activation.
    pub fn rotation_due(&self, now: OffsetDateTime) -> bool {
        let ring = self.ring.read();
        let Some((active, created)) = ring.active(now, self.limits.activation) else {
            return false;
        };
        if ring
            .order
            .first()
            .is_some_and(|(newest, _)| *newest != active)
        {
            return false;
        }
        let seals = if self.counted.load(std::sync::atomic::Ordering::Relaxed) == active {
            self.seals.load(std::sync::atomic::Ordering::Relaxed)
        } else {
            0
        };
        now - created >= self.limits.max_age || seals >= self.limits.max_seals
    }

    /// Seals `plain`, binding `aad` (the row's identity) to the ciphertext.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Sealed, KeyError> {
        use std::sync::atomic::Ordering;
        let ring = self.ring.read();
        let (active, _) = ring
            .active(OffsetDateTime::now_utc(), self.limits.activation)
            .ok_or(KeyError::Crypto)?;
        let key = ring.keys.get(&active).ok_or(KeyError::Crypto)?;
        if self.counted.swap(active, Ordering::Relaxed) != active {
            self.seals.store(0, Ordering::Relaxed);
        }
        self.seals.fetch_add(1, Ordering::Relaxed);
        let (nonce, ciphertext) = seal_with(key, plain, aad)?;
        Ok(Sealed {
            key_id: active,
            nonce,
            ciphertext,
        })
    }

    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let ring = self.ring.read();
        let key = ring.keys.get(&sealed.key_id).ok_or(KeyError::Crypto)?;
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
impl Keyring {
    /// A ring of one fixed data key (id 1), for unit tests.
    #[allow(clippy::unwrap_used)]
    pub(crate) fn for_tests() -> Self {
        let key = aead_key(&[7u8; 32]).unwrap();
        Keyring {
            ring: parking_lot::RwLock::new(Ring {
                keys: HashMap::from([(1, key)]),
                order: vec![(1, OffsetDateTime::now_utc())],
            }),
            limits: DataKeyLimits::default(),
            seals: std::sync::atomic::AtomicU64::new(0),
            counted: std::sync::atomic::AtomicU32::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_binds_the_row_identity() {
        let ring = Keyring::for_tests();
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
