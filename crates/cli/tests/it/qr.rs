//! QR-code login: tickets with device binding, the waiting page's SSE
//! events, scan by code or ticket, confirm, cancel, expiry, and the admin
//! (third-party) confirmation.

use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{ADMIN_PASSWORD, TestServer};
use crate::support::*;

async fn ticket(server: &TestServer, device: Option<&str>) -> Value {
    let mut body = json!({"platform": "web"});
    if let Some(d) = device {
        body["device_id"] = json!(d);
    }
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/qr", server.base))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    r.json().await.unwrap_or_else(|e| panic!("{e}"))
}

/// The waiting page: named SSE events as `(event, data)`.
async fn wait_on(
    server: &TestServer,
    ticket_id: &str,
) -> impl Stream<Item = (String, Value)> + Unpin {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/auth/qr/{ticket_id}/events", server.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    Box::pin(r.bytes_stream().eventsource().filter_map(|e| async move {
        let e = e.ok()?;
        Some((
            e.event,
            serde_json::from_str(&e.data).unwrap_or(Value::Null),
        ))
    }))
}

async fn next(stream: &mut (impl Stream<Item = (String, Value)> + Unpin)) -> (String, Value) {
    within("a QR event", stream.next())
        .await
        .unwrap_or_else(|| panic!("the stream ended"))
}

async fn call(
    api: &unimsg_client::Authed,
    method: Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    api.raw(
        method,
        path,
        serde_json::to_vec(&body).unwrap_or_default(),
        Some("application/json"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn the_same_device_gets_the_same_ticket_and_codes_are_typable() {
    let server = TestServer::start().await;
    let a = ticket(&server, Some("browser-1")).await;
    let again = ticket(&server, Some("browser-1")).await;
    let other = ticket(&server, Some("browser-2")).await;
    assert_eq!(
        (&a["ticket_id"], &a["code"]),
        (&again["ticket_id"], &again["code"])
    );
    assert_ne!(a["ticket_id"], other["ticket_id"]);
    let code = a["code"].as_str().unwrap_or_default();
    assert_eq!(code.len(), 8);
    assert!(
        code.chars()
            .all(|c| "23456789ABCDEFGHJKMNPQRSTUVWXYZ".contains(c)),
        "{code}"
    );
    assert!(
        a["qr_url"]
            .as_str()
            .unwrap_or_default()
            .ends_with(&format!("/m/qr?code={code}"))
    );
    assert!(a["expires_in"].as_u64().is_some_and(|s| s > 0 && s <= 300));
    let svg = reqwest::get(format!(
        "{}/v1/auth/qr/{}/qr.svg",
        server.base,
        a["ticket_id"].as_str().unwrap_or("")
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        svg.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("image/svg+xml")
    );
    assert!(svg.text().await.unwrap_or_default().contains("<svg"));
}

#[tokio::test]
async fn scan_by_code_then_confirm_logs_the_page_in_as_the_phone_user() {
    let server = TestServer::start().await;
    let client = server.client();
    // The phone logs in on its own platform: the page's new web session
    // must not replace it under the one-per-platform policy.
    register(&client, "bob").await;
    let phone = login(&client, "bob", "ios", Some("phone")).await;
    let t = ticket(&server, Some("desk")).await;
    let id = t["ticket_id"].as_str().unwrap_or_default().to_owned();
    let mut tab1 = wait_on(&server, &id).await;
    let mut tab2 = wait_on(&server, &id).await;
    assert_eq!(next(&mut tab1).await.0, "pending");
    assert_eq!(next(&mut tab2).await.0, "pending");

    // The code as a person would type it.
    let typed = t["code"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase()
        .replace("", " ");
    let (status, asking) = call(
        &phone.api,
        Method::POST,
        "/v1/auth/qr/scan",
        json!({"code": typed}),
    )
    .await;
    assert_eq!(status, 200, "{asking}");
    assert_eq!(
        (
            asking["ticket_id"].as_str(),
            asking["platform"].as_str(),
            asking["device_id"].as_str()
        ),
        (Some(id.as_str()), Some("web"), Some("desk"))
    );
    assert_eq!(asking["ip"], "127.0.0.1");
    for tab in [&mut tab1, &mut tab2] {
        let (event, data) = next(tab).await;
        assert_eq!(
            (event.as_str(), data["display_name"].as_str()),
            ("scanned", Some("bob"))
        );
    }

    let (status, confirmed) = call(
        &phone.api,
        Method::POST,
        &format!("/v1/auth/qr/{id}/confirm"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{confirmed}");
    let mut tokens = Vec::new();
    for tab in [&mut tab1, &mut tab2] {
        let (event, data) = next(tab).await;
        assert_eq!(event, "confirmed");
        assert_eq!(data["session_id"], confirmed["session_id"]);
        tokens.push(data["access_token"].as_str().unwrap_or_default().to_owned());
        assert!(
            within("the stream to end", tab.next()).await.is_none(),
            "the stream ends after confirmed"
        );
    }
    // The page's tokens are the phone user's.
    let page = client.with_token(tokens[0].clone());
    assert_eq!(
        page.me().await.unwrap_or_else(|e| panic!("{e}")).user_id,
        phone.id
    );
    let sessions = page
        .sessions()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .sessions;
    assert!(
        sessions
            .iter()
            .any(|s| s.current && s.device_id.as_deref() == Some("desk"))
    );

    // Single use.
    let (status, _) = call(
        &phone.api,
        Method::POST,
        &format!("/v1/auth/qr/{id}/confirm"),
        json!({}),
    )
    .await;
    assert!(status == 409 || status == 410, "second confirm: {status}");
    let (status, _) = call(
        &phone.api,
        Method::POST,
        "/v1/auth/qr/scan",
        json!({"ticket_id": id}),
    )
    .await;
    assert!(status == 409 || status == 410);
    let late = reqwest::get(format!("{}/v1/auth/qr/{id}/events", server.base))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(late.status(), 410);
    // The same device now gets a fresh ticket.
    assert_ne!(ticket(&server, Some("desk")).await["ticket_id"], json!(id));
}

#[tokio::test]
async fn cancel_refusal_and_access_rules() {
    let server = TestServer::start().await;
    let client = server.client();
    let phone = user(&client, "bob").await;
    let stranger = user(&client, "eve").await;
    let t = ticket(&server, None).await;
    let id = t["ticket_id"].as_str().unwrap_or_default().to_owned();
    let mut tab = wait_on(&server, &id).await;
    assert_eq!(next(&mut tab).await.0, "pending");

    // Anonymous scan: 401.
    let (status, _) = client
        .raw(
            Method::POST,
            "/v1/auth/qr/scan",
            None,
            serde_json::to_vec(&json!({"ticket_id": id})).unwrap_or_default(),
            Some("application/json"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 401);
    // Unknown code: 404.
    let (status, _) = call(
        &phone.api,
        Method::POST,
        "/v1/auth/qr/scan",
        json!({"code": "ZZZZZZZZ"}),
    )
    .await;
    assert_eq!(status, 404);
    // Confirm before scanning: 403.
    let (status, _) = call(
        &phone.api,
        Method::POST,
        &format!("/v1/auth/qr/{id}/confirm"),
        json!({}),
    )
    .await;
    assert_eq!(status, 403);

    let (status, _) = call(
        &phone.api,
        Method::POST,
        "/v1/auth/qr/scan",
        json!({"ticket_id": id}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(next(&mut tab).await.0, "scanned");
    // Another user cannot take it over or answer it.
    let (status, _) = call(
        &stranger.api,
        Method::POST,
        "/v1/auth/qr/scan",
        json!({"ticket_id": id}),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = call(
        &stranger.api,
        Method::POST,
        &format!("/v1/auth/qr/{id}/confirm"),
        json!({}),
    )
    .await;
    assert_eq!(status, 403);

    let (status, _) = call(
        &phone.api,
        Method::POST,
        &format!("/v1/auth/qr/{id}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(next(&mut tab).await.0, "cancelled");
    let (status, _) = call(
        &phone.api,
        Method::POST,
        &format!("/v1/auth/qr/{id}/confirm"),
        json!({}),
    )
    .await;
    assert_eq!(status, 410);
}

#[tokio::test]
async fn a_business_system_can_confirm_for_a_user_it_verified() {
    let server = TestServer::start().await;
    let client = server.client();
    let carol = user(&client, "carol").await;
    let t = ticket(&server, None).await;
    let id = t["ticket_id"].as_str().unwrap_or_default().to_owned();
    let mut tab = wait_on(&server, &id).await;
    assert_eq!(next(&mut tab).await.0, "pending");
    let r = reqwest::Client::new()
        .post(format!("{}/v1/admin/qr/{id}/confirm", server.base))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .json(&json!({"user_id": carol.id}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let (event, data) = next(&mut tab).await;
    assert_eq!(event, "confirmed");
    let page = client.with_token(data["access_token"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        page.me().await.unwrap_or_else(|e| panic!("{e}")).user_id,
        carol.id
    );
}

#[tokio::test]
async fn an_unanswered_ticket_expires_and_the_page_is_told() {
    let server = TestServer::start_with(&[("UNIMSG_AUTH__QR_TTL_SECS", "2")]).await;
    let t = ticket(&server, Some("slow")).await;
    assert!(t["expires_in"].as_u64().is_some_and(|s| s <= 2));
    let id = t["ticket_id"].as_str().unwrap_or_default().to_owned();
    let mut tab = wait_on(&server, &id).await;
    assert_eq!(next(&mut tab).await.0, "pending");
    assert_eq!(next(&mut tab).await.0, "expired");
    assert!(within("the stream to end", tab.next()).await.is_none());
    let phone = user(&server.client(), "bob").await;
    let (status, _) = call(
        &phone.api,
        Method::POST,
        "/v1/auth/qr/scan",
        json!({"ticket_id": id}),
    )
    .await;
    assert_eq!(status, 410);
}
