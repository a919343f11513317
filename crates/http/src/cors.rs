//! Browser apps on other origins: CORS for the user API
//! (`http.cors_origins`) and the origin check of WebSocket upgrades
//! (`http.ws_allowed_origins`).
//!
//! Both lists are empty by default: a browser page may call the API and
//! open a WebSocket only from the server's own origin. A listed origin
//! (`https://app.example.com`, scheme, host and port, no path) or `*`
//! (any origin) is allowed. The API is authenticated by bearer tokens,
//! never by cookies, so no response allows credentials. Clients that are
//! not browsers send no `Origin` and are not concerned.

use std::time::Duration;

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, ORIGIN, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::HttpConfig;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Why an origin in the configuration cannot be used.
pub(crate) fn check_origins(key: &str, origins: &[String]) -> Result<(), String> {
    for origin in origins {
        if origin != "*" && !is_origin(origin) {
            return Err(format!(
                "{key}: \"{origin}\" is not an origin; write scheme://host[:port] \
                 (e.g. https://app.example.com) or * for any origin"
            ));
        }
    }
    Ok(())
}

/// `scheme://host[:port]`, http or https, nothing after it.
fn is_origin(origin: &str) -> bool {
    let Ok(uri) = origin.parse::<Uri>() else {
        return false;
    };
    // The parser reads a missing path as `/`; a written one is refused below.
    let plain = uri
        .path_and_query()
        .is_none_or(|p| matches!(p.as_str(), "" | "/"));
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some_and(|a| !a.host().is_empty())
        && plain
        && !origin.ends_with('/')
}

/// The CORS layer of the user API, or `None` when no other origin may
/// call it (then browsers apply their same-origin rule).
pub(crate) fn layer(config: &HttpConfig) -> Option<CorsLayer> {
    let origins = &config.cors_origins;
    if origins.is_empty() {
        return None;
    }
    let any = origins.iter().any(|o| o == "*");
    let listed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    // Wraps the whole application (so that preflights of every route are
    // answered, not refused as an unknown method), but allows the user
    // API only: the admin API, the console pages and the docs stay
    // same-origin.
    let allow = AllowOrigin::predicate(move |origin, request| {
        is_user_api(request.uri.path()) && (any || listed.contains(origin))
    });
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                AUTHORIZATION,
                CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([RETRY_AFTER, HeaderName::from_static("x-request-id")])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// The paths other origins may call: `/v1/…` except `/v1/admin/…`.
fn is_user_api(path: &str) -> bool {
    path.starts_with("/v1/") && !path.starts_with("/v1/admin")
}

/// Whether a WebSocket upgrade's `Origin` may open a socket: none (not a
/// browser), the server's own (the `Host` it was asked for), or one that
/// `http.ws_allowed_origins` lists (`http.cors_origins` when that is
/// empty).
pub(crate) fn ws_origin_allowed(config: &HttpConfig, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let same = origin
        .parse::<Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_owned()))
        .zip(headers.get(HOST).and_then(|h| h.to_str().ok()))
        .is_some_and(|(authority, host)| authority.eq_ignore_ascii_case(host));
    if same {
        return true;
    }
    let allowed = if config.ws_allowed_origins.is_empty() {
        &config.cors_origins
    } else {
        &config.ws_allowed_origins
    };
    allowed
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in ["https://app.example.com", "http://127.0.0.1:8080", "*"] {
            assert!(check_origins("k", &[good.into()]).is_ok(), "{good}");
        }
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "ftp://x.example",
            "https://",
            "",
        ] {
            let err = check_origins("http.cors_origins", &[bad.into()]).unwrap_err();
            assert!(err.contains("scheme://host[:port]"), "{bad}: {err}");
        }
    }

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn websocket_origins() {
        let none = HttpConfig::default();
        let host = "chat.example.com:8080";
        assert!(ws_origin_allowed(&none, &headers(None, host)), "no Origin");
        assert!(ws_origin_allowed(
            &none,
            &headers(Some("http://chat.example.com:8080"), host)
        ));
        assert!(!ws_origin_allowed(
            &none,
            &headers(Some("https://evil.example"), host)
        ));
        let cors = HttpConfig {
            cors_origins: vec!["https://app.example.com".into()],
            ..HttpConfig::default()
        };
        assert!(ws_origin_allowed(
            &cors,
            &headers(Some("https://app.example.com"), host)
        ));
        let own = HttpConfig {
            ws_allowed_origins: vec!["https://ws.example.com".into()],
            ..cors.clone()
        };
        assert!(!ws_origin_allowed(
            &own,
            &headers(Some("https://app.example.com"), host)
        ));
        assert!(ws_origin_allowed(
            &own,
            &headers(Some("https://ws.example.com"), host)
        ));
    }
}
