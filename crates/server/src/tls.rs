//! TLS on the listener: rustls with the aws-lc-rs provider, TLS 1.2 and
//! 1.3 only, and a certificate that is replaced while the server runs.
//!
//! The listener's [`rustls::ServerConfig`] asks a [`CertResolver`] for
//! the certificate of every handshake; the resolver holds the current
//! pair behind an [`ArcSwap`], so a reload swaps one pointer: handshakes
//! from then on present the new pair, and connections already open keep
//! the session they negotiated. [`Tls::watch`] reloads on `SIGHUP` and
//! when either file changes; a pair that does not load (a missing file,
//! a key that does not match the certificate) keeps the old one, with a
//! warning that says why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::LIFECYCLE;

/// How often the files are checked for a change.
const POLL: Duration = Duration::from_secs(2);

/// The certificate chain and private key files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The pair every new handshake presents.
#[derive(Debug)]
struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks a pair: at least one certificate, a private key, and
/// the key belongs to the first certificate.
fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let cert_pem = std::fs::read(&files.cert)
        .with_context(|| format!("cannot read the certificate {}", files.cert.display()))?;
    let key_pem = std::fs::read(&files.key)
        .with_context(|| format!("cannot read the private key {}", files.key.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", files.cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no certificate",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("{} holds no PEM private key", files.key.display()))?;
    CertifiedKey::from_der(chain, key, provider).with_context(|| {
        format!(
            "the key {} does not go with the certificate {}",
            files.key.display(),
            files.cert.display()
        )
    })
}

/// The listener's TLS: an acceptor and the files its pair comes from.
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    resolver: Arc<CertResolver>,
    provider: Arc<CryptoProvider>,
    files: TlsFiles,
    /// The files' bytes read just before the first load: the watcher's
    /// starting point, so a change made before it first looks is seen.
    first_read: Contents,
}

/// The certificate's and the key's bytes; `None` for a file not readable.
type Contents = [Option<Vec<u8>>; 2];

impl Tls {
    /// Loads the pair; an error names the file at fault.
    pub(crate) fn new(files: TlsFiles) -> anyhow::Result<Arc<Self>> {
        let provider = provider();
        let first_read = contents(&files);
        let pair = load_pair(&files, &provider)?;
        let resolver = Arc::new(CertResolver {
            current: ArcSwap::from_pointee(pair),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS 1.2 and 1.3 with aws-lc-rs")?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // HTTP/1.1 only: WebSocket upgrades are HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            provider,
            files,
            first_read,
        }))
    }

    /// Loads the files again; on failure the old pair stays. `true` when
    /// the new pair is in use.
    pub(crate) fn reload(&self) -> bool {
        match load_pair(&self.files, &self.provider) {
            Ok(pair) => {
                self.resolver.current.store(Arc::new(pair));
                tracing::info!(target: LIFECYCLE, cert = %self.files.cert.display(),
                    "TLS certificate reloaded: new connections get the new one");
                true
            }
            Err(error) => {
                tracing::warn!(target: LIFECYCLE, error = format!("{error:#}"),
                    "TLS certificate not reloaded; the previous one stays in use");
                false
            }
        }
    }

    /// Reloads on `SIGHUP` and when either file changes, until dropped.
    pub(crate) fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut seen = tls.first_read.clone();
            let mut hangups = hangups();
            let mut ticks = tokio::time::interval(POLL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        let now = contents(&tls.files);
                        if now == seen {
                            continue;
                        }
                        seen = now;
                    }
                    Some(()) = recv(&mut hangups) => {
                        seen = contents(&tls.files);
                    }
                }
                tls.reload();
            }
        })
    }
}

/// What tells a change of the files: their bytes. Times and sizes are not
/// enough: a copy that keeps the times (`cp -p`, `rsync -t`) or a
/// filesystem with one-second times can leave both as they were while
/// the pair changed. Two small files, read every [`POLL`].
fn contents(files: &TlsFiles) -> Contents {
    [
        std::fs::read(&files.cert).ok(),
        std::fs::read(&files.key).ok(),
    ]
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangups() -> Hangups {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; the certificate files are still watched");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangups() -> Hangups {}

/// The next `SIGHUP`; never resolves without a signal handler.
#[cfg(unix)]
async fn recv(hangups: &mut Hangups) -> Option<()> {
    match hangups {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv(_: &mut Hangups) -> Option<()> {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn pair(dir: &Path, name: &str) -> TlsFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn a_pair_loads_only_when_its_key_matches_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a");
        let b = pair(dir.path(), "b");
        assert!(load_pair(&a, &provider()).is_ok());
        let mixed = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let error = format!("{:#}", load_pair(&mixed, &provider()).unwrap_err());
        assert!(error.contains("does not go with"), "{error}");
        let missing = TlsFiles {
            cert: dir.path().join("none.crt"),
            key: a.key,
        };
        let error = format!("{:#}", load_pair(&missing, &provider()).unwrap_err());
        assert!(error.contains("cannot read the certificate"), "{error}");
    }

    #[test]
    fn a_broken_reload_keeps_the_previous_pair() {
        let dir = tempfile::tempdir().unwrap();
        let files = pair(dir.path(), "live");
        let tls = Tls::new(files.clone()).unwrap();
        let before = tls.resolver.current.load_full();
        std::fs::write(&files.key, "not a key").unwrap();
        assert!(!tls.reload());
        assert!(Arc::ptr_eq(&before, &tls.resolver.current.load_full()));
        let fresh = pair(dir.path(), "fresh");
        std::fs::copy(&fresh.cert, &files.cert).unwrap();
        std::fs::copy(&fresh.key, &files.key).unwrap();
        assert!(tls.reload());
        assert!(!Arc::ptr_eq(&before, &tls.resolver.current.load_full()));
    }

    #[test]
    fn a_new_pair_with_the_old_times_and_sizes_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let files = pair(dir.path(), "live");
        let tls = Tls::new(files.clone()).unwrap();
        let seen = contents(&tls.files);
        let times =
            [&files.cert, &files.key].map(|p| std::fs::metadata(p).unwrap().modified().unwrap());
        // The same bytes, one flipped, and the old time put back: what a
        // copy that keeps times leaves on a one-second filesystem.
        let mut cert = std::fs::read(&files.cert).unwrap();
        let last = cert.len() - 30;
        cert[last] = if cert[last] == b'A' { b'B' } else { b'A' };
        std::fs::write(&files.cert, &cert).unwrap();
        for (path, time) in [&files.cert, &files.key].into_iter().zip(times) {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(time)
                .unwrap();
        }
        assert_ne!(contents(&files), seen);
    }
}
