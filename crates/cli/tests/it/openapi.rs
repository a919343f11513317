//! `GET /openapi.json` is a valid OpenAPI 3.1 document (checked by the
//! `openapi-spec-validator` Python package, which `scripts/test` installs)
//! that lists every route the server answers; `GET /docs` is an API
//! reference page served from vendored assets only.

use std::collections::BTreeSet;
use std::process::Command;

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::Value;

use crate::harness::TestServer;

/// Every route of the router, as `(method, path)`.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
    ("post", "/v1/auth/register"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/auth/logout"),
    ("get", "/v1/me"),
    ("get", "/v1/me/sessions"),
    ("delete", "/v1/me/sessions/{id}"),
    ("post", "/v1/messages"),
    ("post", "/v1/messages/{id}/recall"),
    ("get", "/v1/sync"),
    ("post", "/v1/ack"),
    ("get", "/v1/conversations"),
    ("get", "/v1/conversations/{id}/messages"),
    ("post", "/v1/conversations/{id}/read"),
    ("get", "/v1/events"),
    ("get", "/v1/ws"),
    ("post", "/v1/admin/token"),
    ("post", "/v1/admin/admins"),
    ("post", "/v1/admin/users"),
    ("get", "/v1/admin/users/{id}"),
    ("patch", "/v1/admin/users/{id}"),
    ("delete", "/v1/admin/users/{id}"),
    ("post", "/v1/admin/users/{id}/tokens"),
    ("post", "/v1/admin/users/{id}/logout"),
    ("post", "/v1/admin/messages"),
    ("post", "/v1/admin/broadcasts"),
    ("get", "/v1/admin/messages/{id}/status"),
    ("get", "/v1/admin/audit"),
    ("get", "/v1/admin/presence"),
    ("get", "/v1/admin/nodes"),
    ("post", "/v1/admin/qr/{ticket_id}/confirm"),
    ("post", "/v1/auth/qr"),
    ("get", "/v1/auth/qr/{ticket_id}/events"),
    ("get", "/v1/auth/qr/{ticket_id}/qr.svg"),
    ("post", "/v1/auth/qr/scan"),
    ("post", "/v1/auth/qr/{ticket_id}/confirm"),
    ("post", "/v1/auth/qr/{ticket_id}/cancel"),
    ("post", "/v1/friends/requests"),
    ("get", "/v1/friends/requests"),
    ("post", "/v1/friends/requests/{user_id}/accept"),
    ("post", "/v1/friends/requests/{user_id}/decline"),
    ("get", "/v1/friends"),
    ("put", "/v1/friends/{user_id}"),
    ("delete", "/v1/friends/{user_id}"),
    ("get", "/v1/blocks"),
    ("post", "/v1/blocks/{user_id}"),
    ("delete", "/v1/blocks/{user_id}"),
    ("get", "/v1/admin/relationships"),
    ("put", "/v1/admin/relationships"),
    ("get", "/v1/conversations/{id}/messages/{message_id}/reads"),
    ("post", "/v1/groups"),
    ("get", "/v1/groups"),
    ("get", "/v1/groups/{id}"),
    ("patch", "/v1/groups/{id}"),
    ("delete", "/v1/groups/{id}"),
    ("post", "/v1/groups/{id}/members"),
    ("delete", "/v1/groups/{id}/members/{user_id}"),
    ("put", "/v1/groups/{id}/members/{user_id}"),
    ("post", "/v1/groups/{id}/join"),
    ("post", "/v1/groups/{id}/transfer"),
    ("post", "/v1/groups/{id}/mute"),
    ("post", "/v1/admin/groups"),
    ("get", "/v1/admin/groups/{id}"),
    ("delete", "/v1/admin/groups/{id}"),
    ("post", "/v1/admin/groups/{id}/members"),
    ("delete", "/v1/admin/groups/{id}/members/{user_id}"),
    ("post", "/v1/admin/webhooks"),
    ("get", "/v1/admin/webhooks"),
    ("get", "/v1/admin/webhooks/{id}"),
    ("patch", "/v1/admin/webhooks/{id}"),
    ("delete", "/v1/admin/webhooks/{id}"),
    ("post", "/v1/admin/webhooks/{id}/secret"),
    ("post", "/v1/admin/webhooks/{id}/test"),
    ("get", "/v1/admin/webhooks/{id}/deliveries"),
    (
        "post",
        "/v1/admin/webhooks/{id}/deliveries/{event_id}/retry",
    ),
    ("post", "/v1/admin/webhooks/{id}/replay"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn fetch_document(server: &TestServer) -> (String, Value) {
    let response = reqwest::get(format!("{}/openapi.json", server.base))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let doc = serde_json::from_str(&text).unwrap();
    (text, doc)
}

/// `(method, path)` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("no paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| ((*m).to_owned(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn openapi_document_is_valid_and_lists_every_route() {
    let server = TestServer::start().await;
    let (text, doc) = fetch_document(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");

    // A real validator: the OpenAPI 3.1 meta-schema, references, unique
    // operation ids, path parameters.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("cannot run python3 (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document (or is missing: \
         `python3 -m pip install openapi-spec-validator`):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let documented = operations(&doc);
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let missing: Vec<_> = expected.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );

    // Every operation is tagged, and every error response is the error body.
    let tags = [
        "auth", "messages", "realtime", "admin", "health", "friends", "groups", "webhooks",
    ];
    for (method, path) in &documented {
        let op = &doc["paths"][path][method];
        let tag = op["tags"][0].as_str().unwrap_or_default();
        assert!(tags.contains(&tag), "{method} {path}: tag {tag:?}");
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path}: no responses"));
        for (status, response) in responses {
            if status.starts_with('4') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
        // The phone's side of QR login is authenticated; the waiting page's is not.
        let phone_side = path == "/v1/auth/qr/scan"
            || path.ends_with("/confirm") && path.starts_with("/v1/auth/qr/")
            || path.ends_with("/cancel");
        let public = (path.starts_with("/v1/auth/") && path != "/v1/auth/logout" && !phone_side)
            || path == "/v1/admin/token"
            || !path.starts_with("/v1/");
        assert_eq!(
            op["security"].as_array().is_some_and(|s| !s.is_empty()),
            !public,
            "{method} {path}: security"
        );
    }
}

/// Each documented operation is served: none falls through to the
/// router's "no such route" 404 or to 405.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let server = TestServer::start().await;
    let (_, doc) = fetch_document(&server).await;
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    for (method, path) in operations(&doc) {
        let url = format!("{}{}", server.base, path.replace("{id}", "x"));
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = http.request(method.clone(), &url).send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !body.contains("no such route"),
            "{method} {path} is documented but not routed: {status} {body}"
        );
    }
}

/// Absolute `http(s)://` URLs in a text that do not point at this server.
fn outside_urls(text: &str, base: &str) -> Vec<String> {
    let mut found = Vec::new();
    for scheme in ["http://", "https://"] {
        let mut rest = text;
        while let Some(at) = rest.find(scheme) {
            let url: String = rest[at..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | ')' | '<' | '>'))
                .collect();
            if !url.starts_with(base) {
                found.push(url);
            }
            rest = &rest[at + scheme.len()..];
        }
    }
    found
}

/// The values of `attr="..."` in an HTML page.
fn attribute_values(html: &str, attr: &str) -> Vec<String> {
    let needle = format!("{attr}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| rest[..end].to_owned())
        })
        .collect()
}

#[tokio::test]
async fn docs_page_is_served_from_vendored_assets() {
    let server = TestServer::start().await;
    let response = reqwest::get(format!("{}/docs", server.base)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page_url = response.url().clone();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = response.text().await.unwrap();
    assert!(
        outside_urls(&html, &server.base).is_empty(),
        "the page names outside URLs: {:?}",
        outside_urls(&html, &server.base)
    );

    // Every asset the page loads is relative and served here.
    let assets: Vec<String> = attribute_values(&html, "src")
        .into_iter()
        .chain(attribute_values(&html, "href"))
        .collect();
    assert!(
        assets.iter().any(|a| a.ends_with(".js")),
        "no script in {html}"
    );
    for asset in &assets {
        assert!(
            !asset.starts_with("//") && !asset.contains("://"),
            "{asset} is not served by this server"
        );
        let url = page_url.join(asset).unwrap();
        let response = reqwest::get(url.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let text = response.text().await.unwrap_or_default();
        if asset.ends_with(".css") {
            // Stylesheets load nothing from elsewhere (inline SVG data may
            // name the SVG namespace, which is not a request).
            assert!(
                !text.contains("@import") && !text.contains("url(http") && !text.contains("url(//"),
                "{asset} loads from elsewhere"
            );
        }
    }

    // The initializer points the page at our own document, with the online
    // validator badge switched off.
    let init = reqwest::get(page_url.join("swagger-initializer.js").unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("\"/openapi.json\""), "{init}");
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
    assert!(
        outside_urls(&init, &server.base).is_empty(),
        "{:?}",
        outside_urls(&init, &server.base)
    );
}
