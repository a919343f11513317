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
    ticket_again(server, device, None).await
}

/// `POST /v1/auth/qr`, optionally with the page secret of an earlier ticket.
async fn ticket_again(server: &TestServer, device: Option<&str>, secret: Option<&Value>) -> Value {
    let mut body = json!({"platform": "web"});
    if let Some(d) = device {
        body["device_id"] = json!(d);
    }
    if let Some(s) = secret {
        body["page_secret"] = s.clone();
    }
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/qr", server.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn id_of(t: &Value) -> String {
    t["ticket_id"].as_str().unwrap_or_default().to_owned()
}

/// `GET …/events` of ticket `id` with `secret` in the `X-QR-Secret`
/// header (or none): the status and the response.
async fn listen(server: &TestServer, id: &str, secret: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{}/v1/auth/qr/{id}/events", server.base));
    if let Some(secret) = secret {
        request = request.header("x-qr-secret", secret);
    }
    request.send().await.unwrap()
}

/// The waiting page of ticket `t` (with its secret): named SSE events as
/// `(event, data)`.
async fn wait_on(server: &TestServer, t: &Value) -> Events {
    let r = listen(server, &id_of(t), t["page_secret"].as_str()).await;
    assert_eq!(r.status(), 200);
    events_of(r)
}

/// A waiting page's named events.
type Events = std::pin::Pin<Box<dyn Stream<Item = (String, Value)> + Send>>;

fn events_of(r: reqwest::Response) -> Events {
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
        .expect("the stream ended")
}

#[tokio::test]
async fn the_same_device_gets_the_same_ticket_and_codes_are_typable() {
    let server = TestServer::start().await;
    let a = ticket(&server, Some("browser-1")).await;
    let secret = &a["page_secret"];
    assert!(secret.as_str().is_some_and(|s| s.len() >= 32), "{a}");
    // The page asking again with its secret gets the same ticket and code.
    let again = ticket_again(&server, Some("browser-1"), Some(secret)).await;
    assert_eq!(
        (&a["ticket_id"], &a["code"], secret),
        (&again["ticket_id"], &again["code"], &again["page_secret"])
    );
    // Naming the device without the secret, or another device with it,
    // is a new ticket with a secret of its own.
    for other in [
        ticket(&server, Some("browser-1")).await,
        ticket_again(&server, Some("browser-2"), Some(secret)).await,
        ticket_again(&server, Some("browser-1"), Some(&json!("not-the-secret"))).await,
    ] {
        assert_ne!(a["ticket_id"], other["ticket_id"]);
        assert_ne!(a["code"], other["code"]);
        assert_ne!(a["page_secret"], other["page_secret"]);
    }
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
    .unwrap();
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
    let id = id_of(&t);
    // Two tabs of the page, both holding its secret (one in the query, as
    // a browser's EventSource sends it).
    let mut tab1 = wait_on(&server, &t).await;
    let by_query = reqwest::get(format!(
        "{}/v1/auth/qr/{id}/events?secret={}",
        server.base,
        t["page_secret"].as_str().unwrap_or_default()
    ))
    .await
    .unwrap();
    assert_eq!(by_query.status(), 200);
    let mut tab2 = events_of(by_query);
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
        Some(json!({"code": typed})),
    )
    .await;
    assert_eq!(status, 200, "{asking}");
    assert_eq!(
        (asking["ticket_id"].as_str(), asking["platform"].as_str()),
        (Some(id.as_str()), Some("web"))
    );
    // Nothing that lets the scanner act as the page.
    assert!(
        asking.get("device_id").is_none() && asking.get("page_secret").is_none(),
        "{asking}"
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
        Some(json!({})),
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
    assert_eq!(page.me().await.unwrap().user_id, phone.id);
    let sessions = page.sessions().await.unwrap().sessions;
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
        Some(json!({})),
    )
    .await;
    assert!(status == 409 || status == 410, "second confirm: {status}");
    let (status, _) = call(
        &phone.api,
        Method::POST,
        "/v1/auth/qr/scan",
        Some(json!({"ticket_id": id})),
    )
    .await;
    assert!(status == 409 || status == 410);
    let late = listen(&server, &id, t["page_secret"].as_str()).await;
    assert_eq!(late.status(), 410);
    // The page asking again with its secret now gets a fresh ticket.
    assert_ne!(
        ticket_again(&server, Some("desk"), Some(&t["page_secret"])).await["ticket_id"],
        json!(id)
    );
}

#[tokio::test]
async fn cancel_refusal_and_access_rules() {
    let server = TestServer::start().await;
    let client = server.client();
    let phone = user(&client, "bob").await;
    let stranger = user(&client, "eve").await;
    let t = ticket(&server, None).await;
    let id = id_of(&t);
    let mut tab = wait_on(&server, &t).await;
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
        .unwrap();
    assert_eq!(status, 401);
    // Unknown code: 404.
    let (status, _) = call(
        &phone.api,
        Method::POST,
        "/v1/auth/qr/scan",
        Some(json!({"code": "ZZZZZZZZ"})),
    )
    .await;
    assert_eq!(status, 404);
    // Confirm before scanning: 403.
    let (status, _) = call(
        &phone.api,
        Method::POST,
        &format!("/v1/auth/qr/{id}/confirm"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403);

    let (status, _) = call(
        &phone.api,
        Method::POST,
        "/v1/auth/qr/scan",
        Some(json!({"ticket_id": id})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(next(&mut tab).await.0, "scanned");
    // Another user cannot take it over or answer it.
    let (status, _) = call(
        &stranger.api,
        Method::POST,
        "/v1/auth/qr/scan",
        Some(json!({"ticket_id": id})),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = call(
        &stranger.api,
        Method::POST,
        &format!("/v1/auth/qr/{id}/confirm"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403);

    let (status, _) = call(
        &phone.api,
        Method::POST,
        &format!("/v1/auth/qr/{id}/cancel"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(next(&mut tab).await.0, "cancelled");
    let (status, _) = call(
        &phone.api,
        Method::POST,
        &format!("/v1/auth/qr/{id}/confirm"),
        Some(json!({})),
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
    let id = id_of(&t);
    let mut tab = wait_on(&server, &t).await;
    assert_eq!(next(&mut tab).await.0, "pending");
    let r = reqwest::Client::new()
        .post(format!("{}/v1/admin/qr/{id}/confirm", server.base))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .json(&json!({"user_id": carol.id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (event, data) = next(&mut tab).await;
    assert_eq!(event, "confirmed");
    let page = client.with_token(data["access_token"].as_str().unwrap_or_default().to_owned());
    assert_eq!(page.me().await.unwrap().user_id, carol.id);
}

#[tokio::test]
async fn an_unanswered_ticket_expires_and_the_page_is_told() {
    let server = TestServer::start_with(&[("UNIMSG_AUTH__QR_TTL_SECS", "2")]).await;
    let t = ticket(&server, Some("slow")).await;
    assert!(t["expires_in"].as_u64().is_some_and(|s| s <= 2));
    let id = id_of(&t);
    let mut tab = wait_on(&server, &t).await;
    assert_eq!(next(&mut tab).await.0, "pending");
    assert_eq!(next(&mut tab).await.0, "expired");
    assert!(within("the stream to end", tab.next()).await.is_none());
    let phone = user(&server.client(), "bob").await;
    let (status, _) = call(
        &phone.api,
        Method::POST,
        "/v1/auth/qr/scan",
        Some(json!({"ticket_id": id})),
    )
    .await;
    assert_eq!(status, 410);
}

/// The audit's account takeover: the attacker scans the victim's code,
/// cancels it, asks for a ticket naming the victim's device and listens;
/// the victim's page asks again and the victim confirms on the phone. The
/// attacker must never hold a stream that receives the victim's tokens.
#[tokio::test]
async fn the_scan_cancel_reask_chain_never_hands_the_tokens_to_the_attacker() {
    let server = TestServer::start().await;
    let client = server.client();
    let victim_phone = user(&client, "victim").await;
    let attacker_phone = user(&client, "mallory").await;
    let device = "victim-desk";

    // The victim's page shows its code and waits.
    let first = ticket(&server, Some(device)).await;
    let mut victim_page = wait_on(&server, &first).await;
    assert_eq!(next(&mut victim_page).await.0, "pending");

    // The attacker scans it: the answer names nothing that acts as the page.
    let (status, asking) = call(
        &attacker_phone.api,
        Method::POST,
        "/v1/auth/qr/scan",
        Some(json!({"code": first["code"]})),
    )
    .await;
    assert_eq!(status, 200, "{asking}");
    assert!(
        asking.get("device_id").is_none() && asking.get("page_secret").is_none(),
        "the scan answer discloses the page: {asking}"
    );
    // The ticket id it learnt does not let it listen, with or without a guess.
    for secret in [None, Some("guess"), first["code"].as_str()] {
        let r = listen(&server, &id_of(&first), secret).await;
        assert_eq!(
            r.status(),
            404,
            "listening on the victim's ticket with {secret:?}"
        );
    }
    // It cancels, and asks for a ticket of its own naming the victim's device.
    let (status, _) = call(
        &attacker_phone.api,
        Method::POST,
        &format!("/v1/auth/qr/{}/cancel", id_of(&first)),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(next(&mut victim_page).await.0, "scanned");
    assert_eq!(next(&mut victim_page).await.0, "cancelled");
    let planted = ticket(&server, Some(device)).await;
    let mut attacker_listener = wait_on(&server, &planted).await;
    assert_eq!(next(&mut attacker_listener).await.0, "pending");

    // The victim's page asks again for its device: with its old secret, and
    // as a freshly loaded page without one. Neither gets the planted ticket.
    let fresh_load = ticket(&server, Some(device)).await;
    let again = ticket_again(&server, Some(device), Some(&first["page_secret"])).await;
    for t in [&fresh_load, &again] {
        assert_ne!(
            id_of(t),
            id_of(&planted),
            "the victim's page got the attacker's ticket"
        );
        assert_ne!(t["code"], planted["code"]);
    }

    // The victim confirms the code their page shows: only their page hears it.
    let mut victim_page = wait_on(&server, &again).await;
    assert_eq!(next(&mut victim_page).await.0, "pending");
    let (status, _) = call(
        &victim_phone.api,
        Method::POST,
        "/v1/auth/qr/scan",
        Some(json!({"code": again["code"]})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, confirmed) = call(
        &victim_phone.api,
        Method::POST,
        &format!("/v1/auth/qr/{}/confirm", id_of(&again)),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{confirmed}");
    assert_eq!(next(&mut victim_page).await.0, "scanned");
    let (event, tokens) = next(&mut victim_page).await;
    assert_eq!(event, "confirmed");
    assert_eq!(tokens["user_id"], json!(victim_phone.id));

    // The attacker's ticket ends (it scans and cancels it itself, which its
    // stream sees after anything announced before): it never saw a token.
    let (status, _) = call(
        &attacker_phone.api,
        Method::POST,
        "/v1/auth/qr/scan",
        Some(json!({"ticket_id": id_of(&planted)})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &attacker_phone.api,
        Method::POST,
        &format!("/v1/auth/qr/{}/cancel", id_of(&planted)),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 204);
    let mut heard = Vec::new();
    while let Some((event, data)) = within("the attacker's stream", attacker_listener.next()).await
    {
        assert!(
            data.get("access_token").is_none(),
            "the attacker received tokens in {event}: {data}"
        );
        heard.push(event);
    }
    assert_eq!(heard, ["scanned", "cancelled"]);
}

/// A QR code never points where a request's `Host` header says.
#[tokio::test]
async fn the_qr_url_ignores_the_host_header() {
    let server = TestServer::start().await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/qr", server.base))
        .header("host", "evil.example")
        .json(&json!({"platform": "web"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    let url = t["qr_url"].as_str().unwrap_or_default();
    assert!(
        url.starts_with(&format!("{}/m/qr?code=", server.base)),
        "the QR code points to {url}"
    );
    assert!(!url.contains("evil.example"));
    let configured =
        TestServer::start_with(&[("UNIMSG_AUTH__PUBLIC_URL", "https://chat.example.com/")]).await;
    let t = ticket(&configured, None).await;
    assert_eq!(
        t["qr_url"].as_str().unwrap_or_default(),
        format!(
            "https://chat.example.com/m/qr?code={}",
            t["code"].as_str().unwrap_or_default()
        )
    );
}
