//! Identity: refresh rotation and reuse detection, immediate revocation on
//! logout, the device policy, and session listing.

use unimsg_client::proto::{EventType, SessionId};

use crate::harness::TestServer;
use crate::support::*;

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_session() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let first = alice.tokens.refresh_token.clone();
    let rotated = client.refresh(&first).await.expect("refresh");
    assert_ne!(rotated.refresh_token, first);
    assert_ne!(rotated.access_token, alice.tokens.access_token);
    assert_eq!(rotated.session_id, alice.tokens.session_id);
    let fresh = client.with_token(rotated.access_token.clone());
    fresh.me().await.expect("the rotated access token works");

    // Replaying the rotated token: theft. The session dies with everything in it.
    let err = client.refresh(&first).await.expect_err("reuse accepted");
    assert_eq!(err.status(), Some(401));
    assert_eq!(fresh.me().await.err().and_then(|e| e.status()), Some(401));
    assert_eq!(
        alice.api.me().await.err().and_then(|e| e.status()),
        Some(401)
    );
    let err = client
        .refresh(&rotated.refresh_token)
        .await
        .expect_err("revoked refresh");
    assert_eq!(err.status(), Some(401));

    // The user's inbox records the revocation.
    let again = login(&client, "alice", "web", None).await;
    let inbox = full_sync(&again.api).await;
    assert!(inbox.iter().any(|e| e.kind == EventType::SessionRevoked
        && e.data["session_id"] == alice.tokens.session_id.as_str()
        && e.data["reason"] == "refresh_token_reuse"));
    assert_eq!(
        client
            .refresh("garbage")
            .await
            .err()
            .and_then(|e| e.status()),
        Some(401)
    );
}

#[tokio::test]
async fn logout_refuses_the_token_at_once_and_closes_live_connections() {
    let server = TestServer::start().await;
    let client = server.client();
    let bob = user(&client, "bob").await;
    let mut ws = bob.api.connect_ws(None).await.unwrap();
    let mut sse = bob.api.connect_sse(None).await.unwrap();
    bob.api.logout().await.expect("logout");
    assert_eq!(bob.api.me().await.err().and_then(|e| e.status()), Some(401));

    let revoked = ws_event(&mut ws).await;
    assert_eq!(revoked.kind, EventType::SessionRevoked);
    assert_eq!(revoked.data["session_id"], bob.tokens.session_id.as_str());
    assert_eq!(revoked.data["reason"], "logout");
    assert!(
        within("the socket to close", ws.next_event())
            .await
            .ok()
            .flatten()
            .is_none()
    );
    assert_eq!(ws.close_code(), Some(4001));

    let (_, e) = sse_event(&mut sse).await;
    assert_eq!(e.kind, EventType::SessionRevoked);
    assert!(
        within("the SSE stream to end", sse.next_event())
            .await
            .ok()
            .flatten()
            .is_none()
    );

    // A revoked token cannot open new connections either.
    let err = bob
        .api
        .connect_ws(None)
        .await
        .expect_err("revoked token connected");
    assert_eq!(err.status(), Some(401));
    let err = bob
        .api
        .connect_sse(None)
        .await
        .expect_err("revoked token streamed");
    assert_eq!(err.status(), Some(401));
}

#[tokio::test]
async fn a_second_login_on_the_same_platform_kicks_the_first_by_default() {
    let server = TestServer::start().await;
    let client = server.client();
    register(&client, "carol").await;
    let web1 = login(&client, "carol", "web", Some("laptop")).await;
    let phone = login(&client, "carol", "ios", Some("phone")).await;
    let mut ws = web1.api.connect_ws(None).await.unwrap();
    let web2 = login(&client, "carol", "web", Some("desktop")).await;

    let revoked = ws_event(&mut ws).await;
    assert_eq!(revoked.kind, EventType::SessionRevoked);
    assert_eq!(revoked.data["session_id"], web1.tokens.session_id.as_str());
    assert_eq!(revoked.data["reason"], "replaced_by_new_login");
    assert!(
        within("the kicked socket to close", ws.next_event())
            .await
            .ok()
            .flatten()
            .is_none()
    );
    assert_eq!(ws.close_code(), Some(4001));
    assert_eq!(
        web1.api.me().await.err().and_then(|e| e.status()),
        Some(401)
    );
    web2.api.me().await.expect("the new session works");
    phone.api.me().await.expect("another platform is untouched");

    let sessions = web2.api.sessions().await.unwrap().sessions;
    let mut ids: Vec<&SessionId> = sessions.iter().map(|s| &s.session_id).collect();
    ids.sort();
    let mut expected = vec![&phone.tokens.session_id, &web2.tokens.session_id];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(
        sessions
            .iter()
            .any(|s| s.current && s.session_id == web2.tokens.session_id)
    );

    // Ending one of one's own sessions.
    web2.api
        .revoke_session(&phone.tokens.session_id)
        .await
        .unwrap();
    assert_eq!(
        phone.api.me().await.err().and_then(|e| e.status()),
        Some(401)
    );
}

#[tokio::test]
async fn single_and_multi_policies() {
    let server = TestServer::start_with(&[("UNIMSG_AUTH__DEVICE_POLICY", "single")]).await;
    let client = server.client();
    register(&client, "dave").await;
    let web = login(&client, "dave", "web", None).await;
    let ios = login(&client, "dave", "ios", None).await;
    assert_eq!(
        web.api.me().await.err().and_then(|e| e.status()),
        Some(401),
        "single: any login kicks"
    );
    ios.api.me().await.unwrap();

    let server = TestServer::start_with(&[("UNIMSG_AUTH__DEVICE_POLICY", "multi")]).await;
    let client = server.client();
    register(&client, "erin").await;
    let a = login(&client, "erin", "web", Some("a")).await;
    let b = login(&client, "erin", "web", Some("b")).await;
    a.api.me().await.expect("multi keeps other devices");
    let a2 = login(&client, "erin", "web", Some("a")).await;
    assert_eq!(
        a.api.me().await.err().and_then(|e| e.status()),
        Some(401),
        "same device is replaced"
    );
    b.api.me().await.unwrap();
    a2.api.me().await.unwrap();
}

#[tokio::test]
async fn registration_can_be_closed_and_usernames_are_unique() {
    let server = TestServer::start().await;
    let client = server.client();
    register(&client, "frank").await;
    let req = unimsg_client::proto::api::RegisterRequest {
        username: "frank".into(),
        password: PASSWORD.into(),
        display_name: None,
    };
    assert_eq!(
        client.register(&req).await.err().and_then(|e| e.status()),
        Some(409)
    );
    let wrong = unimsg_client::proto::api::LoginRequest {
        username: "frank".into(),
        password: "wrong password".into(),
        platform: "web".parse().unwrap(),
        device_id: None,
    };
    assert_eq!(
        client.login(&wrong).await.err().and_then(|e| e.status()),
        Some(401)
    );

    let closed = TestServer::start_with(&[("UNIMSG_AUTH__REGISTRATION_OPEN", "false")]).await;
    let err = closed
        .client()
        .register(&req)
        .await
        .expect_err("registered while closed");
    assert_eq!(err.status(), Some(403));
}

#[tokio::test]
async fn a_sign_in_from_a_new_device_and_address_is_notified_and_audited() {
    let server = TestServer::start().await;
    let client = server.client();
    register(&client, "gina").await;
    let first = login(&client, "gina", "web", Some("laptop")).await;
    // Same address again, other device: not new.
    login(&client, "gina", "ios", Some("phone")).await;
    assert!(full_sync(&first.api).await.is_empty());

    // Another loopback address and an unknown device.
    login_elsewhere(&server, "gina", "en").await;
    let events = full_sync(&first.api).await;
    let warning = events
        .iter()
        .find(|e| e.kind == EventType::NotificationNew)
        .unwrap_or_else(|| panic!("no notification in {events:?}"));
    assert_eq!(warning.data["from"], "security");
    assert_eq!(warning.data["content"]["ip"], "127.0.0.2");
    assert_eq!(warning.data["content"]["device_id"], "kiosk");
}

/// Signs `username` in from 127.0.0.2 on a device never used, asking for
/// `language`.
async fn login_elsewhere(server: &TestServer, username: &str, language: &str) {
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let response = elsewhere
        .post(format!("{}/v1/auth/login", server.base))
        .header("accept-language", language)
        .json(&serde_json::json!({
            "username": username, "password": PASSWORD, "platform": "desktop", "device_id": "kiosk"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_new_sign_in_notice_speaks_the_login_s_language_and_can_be_turned_off() {
    let server = TestServer::start().await;
    let client = server.client();
    register(&client, "hana").await;
    let first = login(&client, "hana", "web", Some("laptop")).await;
    login_elsewhere(&server, "hana", "zh-CN,zh;q=0.9,en;q=0.5").await;
    let events = full_sync(&first.api).await;
    let notice = events
        .iter()
        .find(|e| e.kind == EventType::NotificationNew)
        .unwrap_or_else(|| panic!("no notification in {events:?}"));
    assert_eq!(notice.data["content"]["title"], "新的登录");

    let quiet = TestServer::start_with(&[("UNIMSG_AUTH__NEW_DEVICE_NOTICE", "false")]).await;
    let client = quiet.client();
    register(&client, "ivan").await;
    let first = login(&client, "ivan", "web", Some("laptop")).await;
    login_elsewhere(&quiet, "ivan", "en").await;
    // The login answers after its notice was stored: none is coming.
    let events = full_sync(&first.api).await;
    assert!(
        !events.iter().any(|e| e.kind == EventType::NotificationNew),
        "no notice: {events:?}"
    );
}

#[tokio::test]
async fn a_user_is_found_by_username_or_id_with_public_fields_only_and_lookups_are_limited() {
    let server = TestServer::start_with(&[("UNIMSG_LIMITS__LOOKUP_PER_MINUTE", "4")]).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let http = reqwest::Client::new();
    let get = |query: String| {
        let request = http
            .get(format!("{}/v1/users?{query}", server.base))
            .bearer_auth(&alice.tokens.access_token);
        async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (status, found) = get("username=bob".into()).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["user_id"], bob.id.as_str());
    let mut keys: Vec<&String> = found.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["display_name", "user_id", "username"],
        "public fields only"
    );
    let (status, by_id) = get(format!("user_id={}", bob.id)).await;
    assert_eq!(
        (status, &by_id["username"]),
        (200, &serde_json::json!("bob"))
    );
    let (status, _) = get("username=nobody".into()).await;
    assert_eq!(status, 404);
    let (status, _) = get(format!("username=bob&user_id={}", bob.id)).await;
    assert_eq!(status, 400, "one or the other");
    // Four lookups a minute (the refused query above was none): the
    // fifth is refused.
    let (status, _) = get("username=alice".into()).await;
    assert_eq!(status, 200);
    let (status, _) = get("username=bob".into()).await;
    assert_eq!(status, 429);
    let anonymous = http
        .get(format!("{}/v1/users?username=bob", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}
