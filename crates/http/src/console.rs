//! The web console: the login page and message center (`GET /`), the
//! phone-side QR confirm page (`GET /m/qr`), the admin console
//! (`GET /admin`) and their static assets (`GET /console/{file}`).
//!
//! The assets are plain HTML, CSS and ES-module JavaScript from
//! `crates/http/console/`, compiled into the binary: no CDN, no build step,
//! no file read at run time. Pages carry a strict Content-Security-Policy
//! (same-origin scripts, styles and connections only; no framing, so the
//! confirm page cannot be clickjacked) and `Referrer-Policy: no-referrer`
//! (the QR code in `/m/qr?code=` never leaks to another site). Every
//! response is `Cache-Control: no-cache` with a strong `ETag`: the file
//! names are not versioned, so browsers revalidate and get `304 Not
//! Modified` until the binary changes.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use unimsg_proto::ErrorCode;

use crate::AppState;
use crate::error::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file of `crates/http/console/`. The HTML pages are served at
/// `/`, `/m/qr` and `/admin`; everything else at `/console/{name}`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: HTML,
        body: include_bytes!("../console/index.html"),
    },
    Asset {
        name: "admin.html",
        content_type: HTML,
        body: include_bytes!("../console/admin.html"),
    },
    Asset {
        name: "phone.html",
        content_type: HTML,
        body: include_bytes!("../console/phone.html"),
    },
    Asset {
        name: "style.css",
        content_type: CSS,
        body: include_bytes!("../console/style.css"),
    },
    Asset {
        name: "i18n.js",
        content_type: JS,
        body: include_bytes!("../console/i18n.js"),
    },
    Asset {
        name: "unimsg.js",
        content_type: JS,
        body: include_bytes!("../console/unimsg.js"),
    },
    Asset {
        name: "ui.js",
        content_type: JS,
        body: include_bytes!("../console/ui.js"),
    },
    Asset {
        name: "app.js",
        content_type: JS,
        body: include_bytes!("../console/app.js"),
    },
    Asset {
        name: "admin.js",
        content_type: JS,
        body: include_bytes!("../console/admin.js"),
    },
    Asset {
        name: "phone.js",
        content_type: JS,
        body: include_bytes!("../console/phone.js"),
    },
    Asset {
        name: "icon.svg",
        content_type: SVG,
        body: include_bytes!("../console/icon.svg"),
    },
];

/// The policy of the two pages: everything from this origin only. `'self'`
/// in `connect-src` covers the same host's `ws:` / `wss:` in current
/// browsers; the QR image and the icon are same-origin too.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// Strong validators, one per asset, in the order of [`ASSETS`]: the
/// package version and a hash of the content (stable within one binary,
/// which is all a validator needs).
static ETAGS: LazyLock<Vec<Option<HeaderValue>>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let mut h = DefaultHasher::new();
            a.body.hash(&mut h);
            HeaderValue::try_from(format!(
                "\"{}-{:016x}\"",
                env!("CARGO_PKG_VERSION"),
                h.finish()
            ))
            .ok()
        })
        .collect()
});

/// The console's routes; merged into the application by [`crate::router`].
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(login_page))
        .route("/m/qr", get(phone_page))
        .route("/admin", get(admin_page))
        .route("/console/{file}", get(asset))
}

/// `GET /`: the login page, which becomes the message center after login.
async fn login_page(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /m/qr?code=…`: the page a QR code points to, for the phone that
/// confirms a login. The code is read by the page's script.
async fn phone_page(headers: HeaderMap) -> Response {
    serve("phone.html", &headers)
}

/// `GET /admin`: the admin console, signed in with an admin id and secret.
async fn admin_page(headers: HeaderMap) -> Response {
    serve("admin.html", &headers)
}

/// `GET /console/{file}`: a script, the style sheet or the icon.
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file.ends_with(".html") {
        // The pages have their own paths; one URL per page.
        return ApiError::new(ErrorCode::NotFound, "no such file").into_response();
    }
    serve(&file, &headers)
}

/// Whether an `If-None-Match` header names `etag` (or is `*`).
fn matches(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    list.split(',').map(str::trim).any(|tag| {
        tag == "*" || tag == etag || tag.strip_prefix("W/").is_some_and(|weak| weak == etag)
    })
}

/// Answers with the named asset, or 304 when the client's copy is current.
fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some((index, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.name == name) else {
        return ApiError::new(ErrorCode::NotFound, "no such file").into_response();
    };
    let etag = ETAGS.get(index).cloned().flatten();
    let mut headers = HeaderMap::new();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if asset.content_type == HTML {
        headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    if let Some(etag) = etag {
        let fresh = request
            .get(IF_NONE_MATCH)
            .is_some_and(|inm| matches(inm, &etag));
        headers.insert(ETAG, etag);
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(name: &str) -> &'static str {
        let asset = ASSETS
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no asset {name}"));
        std::str::from_utf8(asset.body).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Every `/console/…` URL in the pages and every `./….js` import in the
    /// scripts names an embedded file, so no page asks for a missing asset.
    #[test]
    fn every_reference_is_embedded() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        for asset in ASSETS {
            let body = text(asset.name);
            let mut refs = Vec::new();
            for piece in body.split("/console/").skip(1) {
                refs.push(piece.split(['"', '\'', '`', ')', '?']).next().unwrap_or(""));
            }
            if asset.content_type == JS {
                for piece in body.split("from './").skip(1) {
                    refs.push(piece.split('\'').next().unwrap_or(""));
                }
            }
            for r in refs {
                if r.is_empty() || r.contains('$') {
                    continue; // a template, not a file name
                }
                assert!(names.contains(&r), "{} refers to missing {r}", asset.name);
            }
        }
    }

    /// Each script opens with a comment saying what it is for.
    #[test]
    fn scripts_start_with_a_comment() {
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            assert!(
                text(asset.name).starts_with("//"),
                "{} has no leading comment",
                asset.name
            );
        }
    }

    #[test]
    fn assets_have_types_validators_and_revalidate() {
        let r = serve("app.js", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], JS);
        assert_eq!(r.headers()[CACHE_CONTROL], "no-cache");
        assert!(r.headers().get(CONTENT_SECURITY_POLICY).is_none());
        let etag = r.headers()[ETAG].clone();

        let mut again = HeaderMap::new();
        again.insert(IF_NONE_MATCH, etag.clone());
        let r = serve("app.js", &again);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[ETAG], etag);

        let mut other = HeaderMap::new();
        other.insert(IF_NONE_MATCH, HeaderValue::from_static("\"nope\", W/\"x\""));
        assert_eq!(serve("app.js", &other).status(), StatusCode::OK);

        let page = serve("index.html", &HeaderMap::new());
        assert_eq!(page.headers()[CONTENT_TYPE], HTML);
        assert!(page.headers().contains_key(CONTENT_SECURITY_POLICY));
        assert_eq!(page.headers()[X_FRAME_OPTIONS], "DENY");
        assert_eq!(
            serve("style.css", &HeaderMap::new()).headers()[CONTENT_TYPE],
            CSS
        );
        assert_eq!(
            serve("icon.svg", &HeaderMap::new()).headers()[CONTENT_TYPE],
            SVG
        );
    }

    #[tokio::test]
    async fn unknown_files_and_pages_under_console_are_404() {
        let r = asset(Path("nope.js".into()), HeaderMap::new()).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = asset(Path("index.html".into()), HeaderMap::new()).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = asset(Path("../Cargo.toml".into()), HeaderMap::new()).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(phone_page(HeaderMap::new()).await.status(), StatusCode::OK);
        assert_eq!(login_page(HeaderMap::new()).await.status(), StatusCode::OK);
    }
}
