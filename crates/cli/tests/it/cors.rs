//! Browser apps on other origins: CORS answers for the user API
//! (`http.cors_origins`), the WebSocket origin check
//! (`http.ws_allowed_origins`) and origins the server refuses to start
//! with. A real browser page on a second origin is in
//! `tests/browser/cors.test.mjs`.

use reqwest::Method;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::TestServer;
use crate::support::*;

const APP: &str = "https://app.example.com";

async fn preflight(server: &TestServer, path: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}{path}", server.base))
        .header(ORIGIN, origin)
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

fn allowed_origin(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get(ACCESS_CONTROL_ALLOW_ORIGIN)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// Opens `/v1/ws` with this `Origin` (none if `None`); the HTTP status of
/// a refusal, or 101.
async fn ws_status(server: &TestServer, token: &str, origin: Option<&str>) -> u16 {
    let url = format!(
        "{}/v1/ws?access_token={token}",
        server.base.replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request().unwrap();
    if let Some(o) = origin {
        request.headers_mut().insert(ORIGIN, o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_socket, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn by_default_no_other_origin_is_allowed() {
    let server = TestServer::start().await;
    let r = preflight(&server, "/v1/messages", APP).await;
    assert_eq!(allowed_origin(&r), None, "no CORS answer");
    let alice = user(&server.client(), "alice").await;
    let token = &alice.tokens.access_token;
    assert_eq!(ws_status(&server, token, Some(APP)).await, 403);
    assert_eq!(ws_status(&server, token, None).await, 101, "not a browser");
    let own = server.base.clone();
    assert_eq!(
        ws_status(&server, token, Some(&own)).await,
        101,
        "the server's own origin"
    );
}

#[tokio::test]
async fn a_listed_origin_gets_preflight_answers_and_may_open_websockets() {
    let server = TestServer::start_with(&[("UNIMSG_HTTP__CORS_ORIGINS", APP)]).await;
    let r = preflight(&server, "/v1/messages", APP).await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(allowed_origin(&r).as_deref(), Some(APP));
    let methods = r.headers()[ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let headers = r.headers()[ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );

    let alice = user(&server.client(), "alice").await;
    let me = reqwest::Client::new()
        .get(format!("{}/v1/me", server.base))
        .header(ORIGIN, APP)
        .bearer_auth(&alice.tokens.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(allowed_origin(&me).as_deref(), Some(APP));

    let other = preflight(&server, "/v1/messages", "https://evil.example").await;
    assert_eq!(allowed_origin(&other), None, "an unlisted origin");
    let admin = preflight(&server, "/v1/admin/users", APP).await;
    assert_eq!(allowed_origin(&admin), None, "not the admin API");

    let token = &alice.tokens.access_token;
    assert_eq!(ws_status(&server, token, Some(APP)).await, 101);
    assert_eq!(
        ws_status(&server, token, Some("https://evil.example")).await,
        403
    );
}

#[tokio::test]
async fn websocket_origins_can_be_listed_on_their_own() {
    let server = TestServer::start_with(&[
        ("UNIMSG_HTTP__CORS_ORIGINS", APP),
        (
            "UNIMSG_HTTP__WS_ALLOWED_ORIGINS",
            "https://ws.example.com, https://other.example.com",
        ),
    ])
    .await;
    let alice = user(&server.client(), "alice").await;
    let token = &alice.tokens.access_token;
    assert_eq!(
        ws_status(&server, token, Some("https://ws.example.com")).await,
        101
    );
    assert_eq!(
        ws_status(&server, token, Some("https://other.example.com")).await,
        101
    );
    assert_eq!(ws_status(&server, token, Some(APP)).await, 403);
}

#[tokio::test]
async fn a_malformed_origin_stops_the_start_with_a_message_naming_the_key() {
    for (key, value) in [
        ("UNIMSG_HTTP__CORS_ORIGINS", "app.example.com"),
        (
            "UNIMSG_HTTP__WS_ALLOWED_ORIGINS",
            "https://app.example.com/chat",
        ),
    ] {
        let logs = TestServer::try_start_with(&[(key, value)])
            .await
            .err()
            .unwrap_or_else(|| panic!("{key}={value} was accepted"));
        let name = key
            .trim_start_matches("UNIMSG_")
            .to_ascii_lowercase()
            .replace("__", ".");
        assert!(
            logs.contains(&name) && logs.contains("scheme://host[:port]"),
            "{key}: {logs}"
        );
    }
}
