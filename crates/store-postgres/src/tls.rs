//! TLS to PostgreSQL, chosen in the URL as libpq does:
//! `?sslmode=require|verify-ca|verify-full` and `&sslrootcert=FILE`.
//!
//! unimsg never talks to an unverified server: every mode that asks for
//! TLS checks the server's certificate chain against `sslrootcert` (a PEM
//! file of CA certificates, or `system` for the system's roots, the
//! default) and its host name. `disable` and `prefer` (the default)
//! connect in plain text. The mode and the file are taken out of the URL
//! before tokio-postgres reads it (it knows neither `verify-*` nor
//! `sslrootcert`).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use unimsg_store::StoreError;

/// Where the server's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Roots {
    System,
    File(PathBuf),
}

/// The URL without the TLS parameters, and the roots when TLS is required.
pub(crate) fn split(url: &str) -> Result<(String, Option<Roots>), StoreError> {
    let bad = |why: String| StoreError::Unavailable(format!("bad PostgreSQL URL: {why}"));
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        // The key=value form: tokio-postgres reads `sslmode=require` itself.
        let required = url.split_whitespace().any(|kv| kv == "sslmode=require");
        return Ok((url.to_owned(), required.then_some(Roots::System)));
    }
    let mut parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let (mut mode, mut root) = (None, None);
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter_map(|(k, v)| match &*k {
            "sslmode" => {
                mode = Some(v.into_owned());
                None
            }
            "sslrootcert" => {
                root = Some(v.into_owned());
                None
            }
            _ => Some((k.into_owned(), v.into_owned())),
        })
        .collect();
    let tls = match mode.as_deref() {
        None | Some("disable" | "prefer") => false,
        Some("require" | "verify-ca" | "verify-full") => true,
        Some(other) => {
            return Err(bad(format!(
                "sslmode={other}: use disable, prefer, require, verify-ca or verify-full"
            )));
        }
    };
    if root.is_some() && !tls {
        return Err(bad(
            "sslrootcert is only used with sslmode=require, verify-ca or verify-full".into(),
        ));
    }
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (k, v) in &kept {
            query.append_pair(k, v);
        }
        if tls {
            query.append_pair("sslmode", "require");
        }
    }
    if parsed.query() == Some("") {
        parsed.set_query(None);
    }
    let roots = tls.then(|| match root.as_deref() {
        None | Some("system") => Roots::System,
        Some(path) => Roots::File(PathBuf::from(path)),
    });
    Ok((parsed.into(), roots))
}

/// A client configuration trusting `roots`, with aws-lc-rs and TLS 1.2 / 1.3.
pub(crate) fn client_config(roots: &Roots) -> Result<rustls::ClientConfig, StoreError> {
    let bad = |why: String| StoreError::Unavailable(format!("PostgreSQL TLS: {why}"));
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system certificate rustls cannot use is skipped, as
                // every TLS client does.
                let _ = store.add(cert);
            }
        }
        Roots::File(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| bad(format!("cannot read sslrootcert {}: {e}", path.display())))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(format!("{}: {e}", path.display())))?;
                store
                    .add(cert)
                    .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            }
        }
    }
    if store.is_empty() {
        return Err(bad("no CA certificate to verify the server with".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let (url, roots) = split(
            "postgres://u:p@db:5432/x?application_name=a&sslmode=verify-full&sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://u:p@db:5432/x?application_name=a&sslmode=require"
        );
        assert_eq!(roots, Some(Roots::File("/ca.pem".into())));
        let (url, roots) = split("postgres://db/x?sslmode=require").unwrap();
        assert_eq!(url, "postgres://db/x?sslmode=require");
        assert_eq!(roots, Some(Roots::System));
        let (url, roots) = split("postgres://db/x?sslmode=disable").unwrap();
        assert_eq!((url.as_str(), roots), ("postgres://db/x", None));
        assert_eq!(split("postgres://db/x").unwrap().1, None);
        assert!(split("postgres://db/x?sslmode=maybe").is_err());
        assert!(split("postgres://db/x?sslrootcert=/ca.pem").is_err());
        assert_eq!(
            split("host=db sslmode=require").unwrap().1,
            Some(Roots::System)
        );
    }
}
