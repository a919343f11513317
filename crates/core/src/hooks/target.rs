//! The SSRF guard: which URLs a hook may call. Only `http` and `https`,
//! and, unless `hooks.allow_private_targets`, no host that is or resolves
//! to a loopback, private, link-local, shared, multicast, unspecified or
//! documentation address (the cloud metadata address 169.254.169.254 is
//! link-local). Checked at registration, and again by the transport on
//! every connection, since a name can resolve differently later.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a target is refused, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the URL does not parse: {0}")]
    Malformed(String),
    #[error("only http and https URLs can be called")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("URLs with a user name or password are not accepted")]
    Credentials,
    #[error(
        "{0} resolves to a private, loopback or link-local address ({1}); set hooks.allow_private_targets to allow it"
    )]
    Private(String, IpAddr),
    #[error("{0} does not resolve")]
    Unresolved(String),
}

/// Whether `ip` is an address a hook must not reach by default.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return private_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) // AWS IMDS v6
        }
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240
}

/// Parses a hook URL and checks its form: scheme, host, no credentials.
pub fn parse(url: &str) -> Result<url::Url, TargetError> {
    let parsed = url::Url::parse(url).map_err(|e| TargetError::Malformed(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(TargetError::Scheme);
    }
    if parsed.host_str().is_none() {
        return Err(TargetError::NoHost);
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(TargetError::Credentials);
    }
    Ok(parsed)
}

/// Checks a URL as registration does: its form, and (unless private
/// targets are allowed) every address its host resolves to now.
pub async fn check(url: &str, allow_private: bool) -> Result<url::Url, TargetError> {
    let parsed = parse(url)?;
    if allow_private {
        return Ok(parsed);
    }
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| TargetError::Unresolved(host.clone()))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(TargetError::Unresolved(host));
    }
    if let Some(ip) = addrs.into_iter().find(|ip| is_private(*ip)) {
        return Err(TargetError::Private(host, ip));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn registration_refuses_forms_and_private_hosts() {
        assert_eq!(
            check("ftp://example.com/", false).await,
            Err(TargetError::Scheme)
        );
        assert_eq!(
            check("http://u:p@example.com/", false).await,
            Err(TargetError::Credentials)
        );
        assert!(matches!(
            check("http://127.0.0.1:9/x", false).await,
            Err(TargetError::Private(..))
        ));
        assert!(matches!(
            check("http://[::1]/x", false).await,
            Err(TargetError::Private(..))
        ));
        assert!(matches!(
            check("http://localhost/x", false).await,
            Err(TargetError::Private(..))
        ));
        assert!(check("http://127.0.0.1:9/x", true).await.is_ok());
    }
}
