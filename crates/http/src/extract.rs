//! Extractors whose failures speak the API's error format: JSON bodies,
//! query strings, path ids and the caller's identity.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{ACCEPT_LANGUAGE, AUTHORIZATION, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use unimsg_core::auth::{AuthContext, ClientInfo, Language};
use unimsg_proto::ErrorCode;

use crate::AppState;
use crate::error::ApiError;

/// A JSON body. Malformed JSON, wrong types and unknown fields are 400,
/// a wrong content type 415 and an oversized body 413.
pub(crate) struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    if crate::guard::is_body_timeout(&r) {
        return crate::guard::timeout_error();
    }
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ),
        _ => ApiError::bad_request(crate::error::plain_words(&r.body_text())),
    }
}

/// A query string; parse failures are 400.
pub(crate) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|r: QueryRejection| {
                ApiError::bad_request(crate::error::plain_words(&r.body_text()))
            })
    }
}

/// The bearer token of the `Authorization` header, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The authenticated caller (Bearer access token of an active session).
pub(crate) struct UserAuth(pub AuthContext);

impl FromRequestParts<AppState> for UserAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token =
            bearer(&parts.headers).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        Ok(UserAuth(state.core.authenticate(token).await?))
    }
}

/// Where a request comes from, as far as the server can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAddr {
    Ip(IpAddr),
    /// A trusted proxy named the hop before it in a form that does not
    /// parse (`unknown`, an obfuscated name, garbage), or there is no peer.
    /// Nothing about the client can be believed: an allowlist refuses it,
    /// and rate limits count all unknown clients under one key.
    Unknown,
}

impl ClientAddr {
    /// The key of per-IP rate limits and the address recorded in sessions
    /// and the audit log.
    pub(crate) fn key(self) -> String {
        match self {
            ClientAddr::Ip(ip) => ip.to_string(),
            ClientAddr::Unknown => "unknown".to_owned(),
        }
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]`
/// or `[::1]:443`; `None` for anything else.
fn forwarded_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse::<Ipv6Addr>().ok())
                .map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

/// The client of a request: the one rule for the admin allowlist, the
/// admin limits and every per-IP limit of the user routes.
///
/// The TCP peer is the client unless it is a trusted proxy. Then the
/// `X-Forwarded-For` entries (all such headers, in order) are walked from
/// the right, the nearest hop first: each trusted proxy passes the walk on
/// to the entry before it; the first entry that is not a trusted proxy is
/// the client, and the first that does not parse makes the client
/// [`ClientAddr::Unknown`] — never skipped, since what lies to its left was
/// written by someone no trusted proxy vouches for. When every entry is a
/// trusted proxy, the leftmost is the client (the peer, without entries).
pub(crate) fn client_addr(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> ClientAddr {
    let Some(peer) = peer.map(|p| p.to_canonical()) else {
        return ClientAddr::Unknown;
    };
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return ClientAddr::Ip(peer);
    }
    let values: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
    let mut nearest = peer;
    for value in values.into_iter().rev() {
        let Ok(value) = value.to_str() else {
            return ClientAddr::Unknown;
        };
        for entry in value.rsplit(',') {
            match forwarded_hop(entry) {
                None => return ClientAddr::Unknown,
                Some(ip) if !is_trusted(&ip) => return ClientAddr::Ip(ip),
                Some(ip) => nearest = ip,
            }
        }
    }
    ClientAddr::Ip(nearest)
}

/// The client of a request (see [`client_addr`]).
pub(crate) fn request_client(
    extensions: &axum::http::Extensions,
    headers: &HeaderMap,
    state: &AppState,
) -> ClientAddr {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    client_addr(peer, headers, &state.core.config().admin.trusted_proxies)
}

/// An access token given as `?access_token=`, unless `auth.allow_query_token`
/// is off: then such a request is refused (401) rather than served
/// without its token, so that a client learns at once to send it
/// another way.
pub(crate) fn query_token(
    state: &AppState,
    token: Option<String>,
) -> Result<Option<String>, ApiError> {
    match token {
        Some(_) if !state.core.config().auth.allow_query_token => Err(ApiError::unauthorized(
            "tokens in the URL are switched off on this server (auth.allow_query_token): \
             send it in the Authorization header, or in the first WebSocket frame",
        )),
        other => Ok(other),
    }
}

/// Whether a request arrived over TLS: on this server's own TLS listener,
/// or from a trusted proxy whose nearest `X-Forwarded-Proto` says `https`.
pub(crate) fn arrived_over_tls(
    extensions: &axum::http::Extensions,
    headers: &HeaderMap,
    state: &AppState,
) -> bool {
    if extensions.get::<crate::ArrivedOverTls>().is_some() {
        return true;
    }
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical());
    let trusted = &state.core.config().admin.trusted_proxies;
    let from_proxy = peer.is_some_and(|p| trusted.iter().any(|net| net.contains(&p)));
    // The proxy's own header is the last one it wrote: the rightmost entry.
    let proto = headers
        .get_all("x-forwarded-proto")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim);
    from_proxy && proto.is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// Where the request comes from (the client by [`client_addr`], and the
/// user agent). The address is always set — `unknown` when it cannot be
/// told — so per-IP limits in the core always apply.
pub(crate) struct RequestOrigin(pub ClientInfo);

impl FromRequestParts<AppState> for RequestOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ip = Some(request_client(&parts.extensions, &parts.headers, state).key());
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect());
        let language = parts
            .headers
            .get(ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .map(Language::from_accept_language)
            .unwrap_or_default();
        Ok(RequestOrigin(ClientInfo {
            ip,
            user_agent,
            language,
        }))
    }
}

/// Parses a path segment into an id type; a malformed id is 404 (no such thing).
pub(crate) fn path_id<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::new(ErrorCode::NotFound, format!("{what} not found")))
}

/// The single `{id}` segment of a route, percent-decoded.
pub(crate) struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| PathId(id))
            .map_err(|r| ApiError::bad_request(r.body_text()))
    }
}

/// The two segments of a route like `/v1/groups/{id}/members/{user_id}`,
/// percent-decoded, in route order.
pub(crate) struct PathPair(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathPair {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path((a, b))| PathPair(a, b))
            .map_err(|r| ApiError::bad_request(r.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(
                "x-forwarded-for",
                v.parse().unwrap_or_else(|e| panic!("{v}: {e}")),
            );
        }
        headers
    }

    #[test]
    fn every_usual_form_of_an_entry_parses() {
        for (entry, want) in [
            ("1.2.3.4", "1.2.3.4"),
            (" 1.2.3.4 ", "1.2.3.4"),
            ("1.2.3.4:5678", "1.2.3.4"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("[::1]:443", "::1"),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]:8080", "2001:db8::7"),
            ("::ffff:10.0.0.5", "10.0.0.5"),
        ] {
            assert_eq!(forwarded_hop(entry), Some(ip(want)), "{entry}");
        }
        for entry in [
            "",
            "unknown",
            "_hidden",
            "1.2.3",
            "1.2.3.4:",
            "[::1",
            "::1]:80",
            "fe80::1%eth0",
            "300.1.1.1",
        ] {
            assert_eq!(forwarded_hop(entry), None, "{entry:?}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = [net("10.0.0.0/8")];
        let headers = forwarded(&["203.0.113.9, 10.1.1.1"]);
        assert_eq!(
            client_addr(Some(ip("10.2.2.2")), &headers, &trusted),
            ClientAddr::Ip(ip("203.0.113.9"))
        );
        assert_eq!(
            client_addr(Some(ip("198.51.100.7")), &headers, &trusted),
            ClientAddr::Ip(ip("198.51.100.7")),
            "an untrusted peer is the client whatever it says"
        );
        assert_eq!(
            client_addr(Some(ip("10.2.2.2")), &HeaderMap::new(), &trusted),
            ClientAddr::Ip(ip("10.2.2.2")),
            "a proxy without the header is the client itself"
        );
        assert_eq!(
            client_addr(
                Some(ip("10.2.2.2")),
                &forwarded(&["10.3.3.3, 10.1.1.1"]),
                &trusted
            ),
            ClientAddr::Ip(ip("10.3.3.3")),
            "all trusted: the leftmost"
        );
        assert_eq!(client_addr(None, &headers, &trusted), ClientAddr::Unknown);
    }

    /// The audit's bypass: a proxy that appends a form the old parser
    /// skipped made the client-written entry to its left the client.
    #[test]
    fn an_unparsable_entry_makes_the_client_unknown_never_the_entry_before_it() {
        let trusted = [net("127.0.0.1/32")];
        let peer = Some(ip("127.0.0.1"));
        for value in [
            "10.0.0.5, unknown",
            "10.0.0.5, _obfuscated",
            "10.0.0.5,",
            "10.0.0.5, 1.2.3",
        ] {
            assert_eq!(
                client_addr(peer, &forwarded(&[value]), &trusted),
                ClientAddr::Unknown,
                "{value}"
            );
        }
        for (value, want) in [
            ("10.0.0.5, 203.0.113.9:4711", "203.0.113.9"),
            ("10.0.0.5, [2001:db8::9]", "2001:db8::9"),
            ("10.0.0.5, [2001:db8::9]:443", "2001:db8::9"),
            ("10.0.0.5, 2001:db8::9", "2001:db8::9"),
            ("10.0.0.5, 127.0.0.1:9000, 203.0.113.9", "203.0.113.9"),
        ] {
            assert_eq!(
                client_addr(peer, &forwarded(&[value]), &trusted),
                ClientAddr::Ip(ip(want)),
                "{value}"
            );
        }
        // Several headers are one list, in order: the last one is nearest.
        assert_eq!(
            client_addr(peer, &forwarded(&["10.0.0.5", "203.0.113.9"]), &trusted),
            ClientAddr::Ip(ip("203.0.113.9"))
        );
        assert_eq!(
            client_addr(peer, &forwarded(&["10.0.0.5", "unknown"]), &trusted),
            ClientAddr::Unknown
        );
    }

    #[test]
    fn mapped_peers_are_judged_as_ipv4() {
        let trusted = [net("127.0.0.1/32")];
        assert_eq!(
            client_addr(
                Some(ip("::ffff:127.0.0.1")),
                &forwarded(&["203.0.113.9"]),
                &trusted
            ),
            ClientAddr::Ip(ip("203.0.113.9"))
        );
    }

    proptest::proptest! {
        /// Whatever a client writes to the left, the entry a trusted proxy
        /// appended for it decides: the client's own address when it
        /// parses, unknown when it does not. Nothing panics.
        #[test]
        fn what_the_client_writes_never_decides(
            left in proptest::collection::vec("[ -~]{0,24}", 0..6),
            client in proptest::prelude::any::<[u8; 4]>(),
        ) {
            let trusted = [net("127.0.0.1/32")];
            let peer = Some(ip("127.0.0.1"));
            let client = IpAddr::from(client);
            // A client that is itself the trusted proxy hands the walk on.
            proptest::prop_assume!(client != ip("127.0.0.1"));
            let mut entries = left;
            entries.push(client.to_string());
            for (value, want) in [
                (entries.join(","), ClientAddr::Ip(client)),
                (format!("{},unknown", entries.join(",")), ClientAddr::Unknown),
            ] {
                if let Ok(value) = value.parse::<axum::http::HeaderValue>() {
                    let mut headers = HeaderMap::new();
                    headers.insert("x-forwarded-for", value);
                    proptest::prop_assert_eq!(client_addr(peer, &headers, &trusted), want);
                }
            }
        }
    }
}
