//! The HTTP transport of unimsg's hooks ([`unimsg_core::hooks::HookTransport`]):
//! one pooled, kept-alive reqwest client for every webhook endpoint and
//! the before-send hook.
//!
//! The SSRF guard runs on every connection: a host name is resolved by
//! [`GuardedResolver`], which refuses private, loopback and link-local
//! addresses, and an address literal in the URL is checked before the
//! request. Redirects are not followed (a redirect could point anywhere)
//! and no proxy from the environment is used.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use unimsg_core::hooks::target::{self, is_private};
use unimsg_core::hooks::{
    HookRequest, HookResponse, HookTransport, MAX_RESPONSE_BYTES, TransportError,
};

/// Resolves host names, then drops every private address; a name left
/// with none fails to resolve.
#[derive(Debug, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                found.into_iter().filter(|a| !is_private(a.ip())).collect();
            if allowed.is_empty() {
                return Err(format!(
                    "{host} resolves only to private, loopback or link-local addresses"
                )
                .into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The reqwest transport.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    allow_private: bool,
}

impl HttpTransport {
    /// A client with pooled keep-alive connections; with `allow_private`
    /// the guard is off (`hooks.allow_private_targets`).
    pub fn new(allow_private: bool) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .user_agent(concat!("unimsg-hooks/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        Ok(Self {
            client: builder.build()?,
            allow_private,
        })
    }
}

/// `Retry-After` as seconds or as an HTTP date (RFC 9110 §10.2.3); a
/// date in the past means now.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

fn classify(e: &reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else if e.is_connect() {
        // The guard's refusal reaches here as a failed resolution.
        let text = format!("{e:#}");
        let source = std::error::Error::source(e).map(ToString::to_string);
        let detail = source.unwrap_or(text);
        if detail.contains("private, loopback or link-local") {
            TransportError::Forbidden(detail)
        } else {
            TransportError::Connect(detail)
        }
    } else {
        TransportError::Other(e.to_string())
    }
}

#[async_trait]
impl HookTransport for HttpTransport {
    async fn post(&self, request: HookRequest) -> Result<HookResponse, TransportError> {
        let url = target::parse(&request.url).map_err(|e| TransportError::Other(e.to_string()))?;
        if !self.allow_private
            && let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = url.host()
        {
            // An address literal never reaches the resolver.
            target::check(url.as_str(), false)
                .await
                .map_err(|e| TransportError::Forbidden(e.to_string()))?;
        }
        let mut builder = self
            .client
            .post(url)
            .timeout(request.timeout)
            .body(request.body);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        let exchange = async {
            let response = builder.send().await.map_err(|e| classify(&e))?;
            let status = response.status().as_u16();
            let retry_after = retry_after(response.headers());
            let mut body = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else { break };
                let room = MAX_RESPONSE_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_RESPONSE_BYTES {
                    break;
                }
            }
            Ok(HookResponse {
                status,
                retry_after,
                body,
            })
        };
        // The whole exchange, body included, within the deadline.
        tokio::time::timeout(request.timeout, exchange)
            .await
            .map_err(|_| TransportError::Timeout)?
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_a_date() {
        assert_eq!(retry_after(&with("120")), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(600));
        let wait = retry_after(&with(&later)).unwrap();
        assert!(
            (Duration::from_secs(590)..=Duration::from_secs(600)).contains(&wait),
            "{wait:?}"
        );
        assert_eq!(
            retry_after(&with("Sun, 06 Nov 1994 08:49:37 GMT")),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(retry_after(&with("soon")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
