//! The admin API: credentials and scopes, user import and minted tokens,
//! notifications and their status, forced logout, replay protection, the
//! IP allowlist and the audit log with `unimsg audit verify`.

use reqwest::Method;
use serde_json::{Value, json};
use unimsg_client::proto::{EventType, Seq};

use crate::harness::{ADMIN_PASSWORD, TestServer};
use crate::support::*;

async fn import(admin: &AdminApi, ids: &[&str]) {
    let users: Vec<Value> = ids
        .iter()
        .map(|id| json!({"user_id": id, "display_name": id.to_uppercase()}))
        .collect();
    let v = admin
        .ok(
            Method::POST,
            "/v1/admin/users",
            Some(json!({ "users": users })),
        )
        .await;
    assert_eq!(v["imported"], ids.len(), "{v}");
}

async fn mint(admin: &AdminApi, id: &str) -> unimsg_client::proto::api::TokenPair {
    let v = admin
        .ok(
            Method::POST,
            &format!("/v1/admin/users/{id}/tokens"),
            Some(json!({"platform": "web"})),
        )
        .await;
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn credentials_tokens_and_scopes_are_enforced() {
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    root.ok(
        Method::POST,
        "/v1/admin/users",
        Some(json!({"users": [{"user_id": "u1", "display_name": "U"}]})),
    )
    .await;

    let wrong = AdminApi::basic(&server, "admin", "not the password");
    assert_eq!(
        wrong.call(Method::GET, "/v1/admin/users/u1", None).await.0,
        401
    );
    let mut none = AdminApi::root(&server);
    none.auth = String::new();
    let (status, body) = none.call(Method::GET, "/v1/admin/users/u1", None).await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );

    // An admin token from the secret works as Bearer.
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{}/v1/admin/token", server.base))
        .json(&json!({"admin_id": "admin", "secret": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = token["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {token}"))
        .to_owned();
    let mut by_token = AdminApi::root(&server);
    by_token.auth = format!("Bearer {bearer}");
    let user = by_token.ok(Method::GET, "/v1/admin/users/u1", None).await;
    assert_eq!(user["display_name"], "U");
    let bad = http
        .post(format!("{}/v1/admin/token", server.base))
        .json(&json!({"admin_id": "admin", "secret": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);

    // A user's access token is not an admin token, and the reverse.
    let tokens = mint(&root, "u1").await;
    let mut as_user = AdminApi::root(&server);
    as_user.auth = format!("Bearer {}", tokens.access_token);
    assert_eq!(
        as_user
            .call(Method::GET, "/v1/admin/users/u1", None)
            .await
            .0,
        401
    );
    let me = server.client().with_token(bearer.clone()).me().await;
    assert_eq!(me.err().and_then(|e| e.status()), Some(401));
}

#[tokio::test]
async fn imported_users_get_minted_tokens_that_work_on_me_and_ws() {
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    let v = root
        .ok(
            Method::POST,
            "/v1/admin/users",
            Some(json!({"users": [
                {"user_id": "emp-1", "display_name": "One"},
                {"user_id": "emp-2", "display_name": "Two", "username": "two", "password": PASSWORD},
                {"user_id": "bad id!", "display_name": "Bad"},
                {"user_id": "emp-1", "display_name": "Again"},
                {"user_id": "emp-3", "display_name": "Three"},
                {"user_id": "emp-4", "display_name": "Four"},
                {"user_id": "emp-5", "display_name": "Five"},
                {"display_name": "No id"}
            ]})),
        )
        .await;
    assert_eq!(
        (v["imported"].as_u64(), v["failed"].as_u64()),
        (Some(5), Some(3)),
        "{v}"
    );
    assert_eq!(v["results"][2]["error"]["code"], "bad_request");
    assert_eq!(v["results"][3]["error"]["code"], "conflict");

    let client = server.client();
    for id in ["emp-1", "emp-2", "emp-3", "emp-4", "emp-5"] {
        let tokens = mint(&root, id).await;
        let api = client.with_token(tokens.access_token.clone());
        assert_eq!(api.me().await.unwrap().user_id.as_str(), id);
        let ws = api.connect_ws(None).await.unwrap();
        assert_eq!(ws.ready().user_id.as_str(), id);
    }
    // The imported password logs in too.
    login(&client, "two", "ios", None).await;
}

#[tokio::test]
async fn a_notification_reaches_its_recipients_live_or_by_sync_and_status_follows() {
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    import(&root, &["n1", "n2", "n3", "n4", "n5"]).await;
    let client = server.client();
    let mut apis = Vec::new();
    for id in ["n1", "n2", "n3", "n4", "n5"] {
        apis.push(client.with_token(mint(&root, id).await.access_token));
    }
    let mut online = apis[0].connect_ws(None).await.unwrap();
    let mut bystander = apis[3].connect_ws(None).await.unwrap();

    let sent = root
        .ok(
            Method::POST,
            "/v1/admin/messages",
            Some(json!({"to": {"users": ["n1", "n2", "n3"]}, "content": {"title": "Hi", "body": "Maintenance"}})),
        )
        .await;
    assert_eq!(sent["recipients"], 3);
    let message_id = sent["message_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{sent}"))
        .to_owned();

    let live = ws_event(&mut online).await;
    assert_eq!(live.kind, EventType::NotificationNew);
    assert_eq!(live.data["content"]["title"], "Hi");
    assert_eq!(live.data["from"], "system");
    for api in &apis[1..3] {
        let events = full_sync(api).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventType::NotificationNew);
        assert_eq!(events[0].data["message_id"], message_id.as_str());
    }
    for api in &apis[3..] {
        assert!(
            full_sync(api).await.is_empty(),
            "a non-recipient got the notification"
        );
    }

    let status_path = format!("/v1/admin/messages/{message_id}/status");
    let st = root.ok(Method::GET, &status_path, None).await;
    // n1 had a socket open when it was sent: pushed live, but not yet
    // delivered until its client acknowledges it. n2 and n3 synced later.
    assert_eq!(
        (
            st["recipients"].as_u64(),
            st["sent_live"].as_u64(),
            st["delivered"].as_u64(),
            st["read"].as_u64()
        ),
        (Some(3), Some(1), Some(0), Some(0)),
        "{st}"
    );
    online.ack(live.seq).await.unwrap();
    let st = root.ok(Method::GET, &status_path, None).await;
    assert_eq!(
        (st["delivered"].as_u64(), st["read"].as_u64()),
        (Some(1), Some(0)),
        "{st}"
    );
    let system = unimsg_client::proto::ConversationId::parse("s:n1").unwrap();
    let mid = unimsg_client::proto::MessageId::parse(message_id.clone()).unwrap();
    apis[0].read(&system, &mid).await.unwrap();
    let st = root.ok(Method::GET, &status_path, None).await;
    assert_eq!(
        (st["delivered"].as_u64(), st["read"].as_u64()),
        (Some(1), Some(1)),
        "{st}"
    );
    let n1 = st["users"]
        .as_array()
        .and_then(|u| u.iter().find(|x| x["user_id"] == "n1"))
        .cloned();
    assert_eq!(
        n1,
        Some(json!({"user_id": "n1", "sent_live": true, "delivered": true, "read": true}))
    );
    let n2 = st["users"]
        .as_array()
        .and_then(|u| u.iter().find(|x| x["user_id"] == "n2"))
        .cloned();
    assert_eq!(
        n2,
        Some(json!({"user_id": "n2", "sent_live": false, "delivered": false, "read": false}))
    );
    // Paging the per-user list.
    let page = root
        .ok(Method::GET, &format!("{status_path}?limit=2"), None)
        .await;
    assert_eq!(page["users"].as_array().map(Vec::len), Some(2));
    let rest = root
        .ok(
            Method::GET,
            &format!(
                "{status_path}?limit=2&after={}",
                page["next_after"].as_str().unwrap_or("")
            ),
            None,
        )
        .await;
    assert_eq!(rest["users"].as_array().map(Vec::len), Some(1));

    // The bystander's socket saw nothing: its next event is one sent to it now.
    root.ok(
        Method::POST,
        "/v1/admin/messages",
        Some(json!({"to": {"users": ["n4"]}, "content": {"n": 2}})),
    )
    .await;
    let next = ws_event(&mut bystander).await;
    assert_eq!(
        (next.seq, next.data["content"]["n"].as_u64()),
        (Seq(1), Some(2))
    );
}

#[tokio::test]
async fn force_logout_refuses_the_token_and_closes_the_socket() {
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    import(&root, &["kick"]).await;
    let tokens = mint(&root, "kick").await;
    let api = server.client().with_token(tokens.access_token.clone());
    let mut ws = api.connect_ws(None).await.unwrap();
    let v = root
        .ok(Method::POST, "/v1/admin/users/kick/logout", None)
        .await;
    assert_eq!(v["revoked"], 1);
    assert_eq!(api.me().await.err().and_then(|e| e.status()), Some(401));
    let revoked = ws_event(&mut ws).await;
    assert_eq!(
        (revoked.kind, revoked.data["reason"].as_str()),
        (EventType::SessionRevoked, Some("admin_logout"))
    );
    assert!(
        within("the socket to close", ws.next_event())
            .await
            .ok()
            .flatten()
            .is_none()
    );
    assert_eq!(ws.close_code(), Some(4001));

    // Disabling a user revokes too, and blocks new tokens.
    let tokens = mint(&root, "kick").await;
    let api = server.client().with_token(tokens.access_token);
    root.ok(
        Method::PATCH,
        "/v1/admin/users/kick",
        Some(json!({"status": "disabled"})),
    )
    .await;
    assert_eq!(api.me().await.err().and_then(|e| e.status()), Some(401));
    let (status, _) = root
        .call(
            Method::POST,
            "/v1/admin/users/kick/tokens",
            Some(json!({"platform": "web"})),
        )
        .await;
    assert_eq!(status, 403);
    root.ok(Method::DELETE, "/v1/admin/users/kick", None).await;
    assert_eq!(
        root.call(Method::GET, "/v1/admin/users/kick", None).await.0,
        404
    );
}

#[tokio::test]
async fn replayed_nonces_and_stale_timestamps_are_refused() {
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let fresh = [
        ("x-nonce", "n-1".to_owned()),
        ("x-timestamp", now.to_string()),
    ];
    assert_eq!(
        root.call_with(Method::GET, "/v1/admin/audit", None, &fresh)
            .await
            .0,
        200
    );
    let (status, body) = root
        .call_with(Method::GET, "/v1/admin/audit", None, &fresh)
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let old = [
        ("x-nonce", "n-2".to_owned()),
        ("x-timestamp", (now - 3600).to_string()),
    ];
    assert_eq!(
        root.call_with(Method::GET, "/v1/admin/audit", None, &old)
            .await
            .0,
        401
    );

    let strict = TestServer::start_with(&[("UNIMSG_ADMIN__REQUIRE_NONCE", "true")]).await;
    let root = AdminApi::root(&strict);
    assert_eq!(root.call(Method::GET, "/v1/admin/audit", None).await.0, 401);
    let ok = [
        ("x-nonce", "n-3".to_owned()),
        ("x-timestamp", now.to_string()),
    ];
    assert_eq!(
        root.call_with(Method::GET, "/v1/admin/audit", None, &ok)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn the_ip_allowlist_guards_admin_routes_only() {
    let server = TestServer::start_with(&[("UNIMSG_ADMIN__IP_ALLOWLIST", "10.0.0.0/8")]).await;
    let root = AdminApi::root(&server);
    let (status, body) = root.call(Method::GET, "/v1/admin/audit", None).await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    // X-Forwarded-For from an untrusted peer changes nothing.
    let spoof = [("x-forwarded-for", "10.1.2.3".to_owned())];
    assert_eq!(
        root.call_with(Method::GET, "/v1/admin/audit", None, &spoof)
            .await
            .0,
        403
    );
    let alice = user(&server.client(), "alice").await;
    alice.api.me().await.expect("user routes keep working");
}

#[tokio::test]
async fn missing_scopes_are_403() {
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    import(&root, &["s1"]).await;
    let created = root
        .call(
            Method::POST,
            "/v1/admin/admins",
            Some(json!({"admin_id": "reader", "secret": "reader-secret-1", "scopes": ["users:read"]})),
        )
        .await;
    assert_eq!(created.0, 201, "{}", created.1);
    let reader = AdminApi::basic(&server, "reader", "reader-secret-1");
    assert_eq!(
        reader.call(Method::GET, "/v1/admin/users/s1", None).await.0,
        200
    );
    for (method, path, body) in [
        (Method::POST, "/v1/admin/users", Some(json!({"users": []}))),
        (
            Method::POST,
            "/v1/admin/users/s1/tokens",
            Some(json!({"platform": "web"})),
        ),
        (
            Method::POST,
            "/v1/admin/messages",
            Some(json!({"to": {"users": ["s1"]}, "content": {}})),
        ),
        (Method::GET, "/v1/admin/audit", None),
        (
            Method::POST,
            "/v1/admin/admins",
            Some(json!({"admin_id": "x", "secret": "another-secret", "scopes": ["admin"]})),
        ),
    ] {
        let (status, body) = reader.call(method, path, body).await;
        assert_eq!(
            (status.as_u16(), body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_audit_log_records_operation_ids_and_verify_names_an_edited_entry() {
    let mut server = TestServer::start().await;
    let root = AdminApi::root(&server);
    for op in ["op-alpha", "op-beta", "op-gamma"] {
        let (status, _) = root
            .call_with(
                Method::POST,
                "/v1/admin/users",
                Some(json!({"users": [{"user_id": op, "display_name": op}]})),
                &[("x-operation-id", op.to_owned())],
            )
            .await;
        assert_eq!(status, 200);
    }
    let alice = user(&server.client(), "alice").await;
    alice.api.logout().await.unwrap();
    let page = root
        .ok(Method::GET, "/v1/admin/audit?limit=1000", None)
        .await;
    let entries = page["entries"].as_array().cloned().unwrap_or_default();
    for op in ["op-alpha", "op-beta", "op-gamma"] {
        assert!(
            entries.iter().any(|e| e["record"]["operation_id"] == op),
            "{op} is not in the audit log"
        );
    }
    for action in [
        "auth.login",
        "auth.logout",
        "session.revoked",
        "admin.request",
    ] {
        assert!(
            entries.iter().any(|e| e["record"]["action"] == action),
            "no {action} entry"
        );
    }
    let filtered = root
        .ok(Method::GET, "/v1/admin/audit?operation_id=op-beta", None)
        .await;
    assert_eq!(filtered["entries"].as_array().map(Vec::len), Some(1));
    let target = entries
        .iter()
        .find(|e| e["record"]["operation_id"] == "op-beta")
        .and_then(|e| e["id"].as_u64())
        .expect("no op-beta");

    server.terminate().await;
    let unimsg = env!("CARGO_BIN_EXE_unimsg");
    let verify = || {
        std::process::Command::new(unimsg)
            .args(["audit", "verify", "--data-dir"])
            .arg(server.data_dir())
            .output()
            .unwrap()
    };
    let intact = verify();
    assert!(
        intact.status.success(),
        "{}",
        String::from_utf8_lossy(&intact.stderr)
    );
    assert!(String::from_utf8_lossy(&intact.stdout).contains("intact"));

    // Edit one row by hand, as an intruder with database access would.
    let db = rusqlite::Connection::open(server.data_dir().join("unimsg.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE audit_log SET content = replace(content, 'op-beta', 'op-innocent') WHERE id = ?1",
            [target as i64],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let broken = verify();
    assert!(!broken.status.success());
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        stderr.contains(&format!("entry {target} was altered")),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_notification_to_thousands_of_imported_users_reaches_every_inbox() {
    const N: usize = 3000;
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    let ids: Vec<String> = (0..N).map(|i| format!("bulk-{i}")).collect();
    let users: Vec<Value> = ids
        .iter()
        .map(|id| json!({"user_id": id, "display_name": id}))
        .collect();
    let v = root
        .ok(
            Method::POST,
            "/v1/admin/users",
            Some(json!({ "users": users })),
        )
        .await;
    assert_eq!(v["imported"], N);
    let sent = root
        .ok(
            Method::POST,
            "/v1/admin/messages",
            Some(json!({"to": {"users": ids}, "content": {"title": "All hands"}})),
        )
        .await;
    assert_eq!(sent["recipients"], N);
    let message_id = sent["message_id"].as_str().unwrap_or_default().to_owned();

    // Every recipient is listed with its own inbox position.
    let mut listed = std::collections::BTreeSet::new();
    let mut after = String::new();
    loop {
        let path = format!("/v1/admin/messages/{message_id}/status?limit=1000&after={after}");
        let page = root
            .ok(Method::GET, path.trim_end_matches("&after="), None)
            .await;
        assert_eq!(page["recipients"], N);
        for u in page["users"].as_array().cloned().unwrap_or_default() {
            listed.insert(u["user_id"].as_str().unwrap_or_default().to_owned());
        }
        match page["next_after"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(listed.len(), N);
    // And a sample of them finds it by sync, as seq 1.
    for i in [0, N / 2, N - 1] {
        let tokens = mint(&root, &format!("bulk-{i}")).await;
        let events = full_sync(&server.client().with_token(tokens.access_token)).await;
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].seq, events[0].kind),
            (Seq(1), EventType::NotificationNew)
        );
        assert_eq!(events[0].data["message_id"], message_id.as_str());
    }
}

#[tokio::test]
async fn presence_lists_each_users_live_platforms() {
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    import(&root, &["on-1", "off-1"]).await;
    let web = mint(&root, "on-1").await;
    let ios = root
        .ok(
            Method::POST,
            "/v1/admin/users/on-1/tokens",
            Some(json!({"platform": "ios"})),
        )
        .await;
    let client = server.client();
    let _ws = client
        .with_token(web.access_token)
        .connect_ws(None)
        .await
        .unwrap();
    let ios_token = ios["access_token"].as_str().unwrap_or_default().to_owned();
    let _sse = client
        .with_token(ios_token)
        .connect_sse(None)
        .await
        .unwrap();
    let v = root
        .ok(Method::GET, "/v1/admin/presence?user_ids=on-1,off-1", None)
        .await;
    assert_eq!(
        v["users"],
        json!([
            {"user_id": "on-1", "online": true, "platforms": ["ios", "web"]},
            {"user_id": "off-1", "online": false, "platforms": []}
        ])
    );
    assert_eq!(
        root.call(Method::GET, "/v1/admin/presence?user_ids=", None)
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn a_broadcast_arrives_live_for_online_users_and_by_sync_for_the_rest() {
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let carol = user(&client, "carol").await;
    let mut alice_ws = alice.api.connect_ws(None).await.unwrap();
    let mut bob_sse = bob.api.connect_sse(None).await.unwrap();

    alice.api.send_text(&bob.id, "before", None).await.unwrap();
    let sent = root
        .ok(
            Method::POST,
            "/v1/admin/broadcasts",
            Some(json!({"content": {"title": "Release 2.0"}})),
        )
        .await;
    assert_eq!(sent["broadcast_seq"], 1);
    alice.api.send_text(&bob.id, "after", None).await.unwrap();

    // Live, in one order with the messages around it, on both transports.
    let live: Vec<_> = [
        ws_event(&mut alice_ws).await,
        ws_event(&mut alice_ws).await,
        ws_event(&mut alice_ws).await,
    ]
    .into();
    assert_eq!(
        live.iter().map(|e| (e.seq.0, e.kind)).collect::<Vec<_>>(),
        vec![
            (1, EventType::MessageNew),
            (2, EventType::BroadcastNew),
            (3, EventType::MessageNew)
        ]
    );
    assert_eq!(live[1].data["content"]["title"], "Release 2.0");
    let mut sse = Vec::new();
    for _ in 0..3 {
        sse.push(sse_event(&mut bob_sse).await.1);
    }
    assert_eq!(
        sse.iter().map(|e| e.kind).collect::<Vec<_>>(),
        live.iter().map(|e| e.kind).collect::<Vec<_>>()
    );
    assert_eq!(
        full_sync(&alice.api).await,
        live,
        "sync returns what was delivered live"
    );

    // Carol was offline: she finds it by sync, at its place.
    let carol_inbox = full_sync(&carol.api).await;
    assert_eq!(carol_inbox.len(), 1);
    assert_eq!(
        (carol_inbox[0].seq, carol_inbox[0].kind),
        (Seq(1), EventType::BroadcastNew)
    );
    // Someone who registers later does not get old announcements.
    let dave = user(&client, "dave").await;
    assert!(full_sync(&dave.api).await.is_empty());
    // Resuming in the middle works across broadcast positions.
    let mut resumed = alice.api.connect_ws(Some(Seq(1))).await.unwrap();
    assert_eq!(ws_event(&mut resumed).await.kind, EventType::BroadcastNew);
    assert_eq!(ws_event(&mut resumed).await.seq, Seq(3));
}

/// Broadcasts posted while messages are being sent: every connection
/// receives its own stream live, gap-free, without duplicates and exactly
/// as sync returns it, whichever of a broadcast and an earlier message
/// reaches the connection first.
#[tokio::test]
async fn broadcasts_racing_messages_keep_every_live_stream_in_order() {
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    let client = server.client();
    let mut users = Vec::new();
    for i in 0..4 {
        users.push(user(&client, &format!("racer{i}")).await);
    }
    let mut sockets = Vec::new();
    for u in &users {
        for _ in 0..2 {
            sockets.push((u, u.api.connect_ws(None).await.unwrap()));
        }
    }
    const MESSAGES: usize = 12;
    const BROADCASTS: usize = 6;
    let sends = futures_util::future::join_all(users.iter().enumerate().map(|(i, from)| {
        let to = &users[(i + 1) % users.len()];
        async move {
            for n in 0..MESSAGES {
                from.api
                    .send_text(&to.id, &format!("m{n}"), None)
                    .await
                    .unwrap();
            }
        }
    }));
    let casts = async {
        for n in 0..BROADCASTS {
            root.ok(
                Method::POST,
                "/v1/admin/broadcasts",
                Some(json!({"content": {"n": n}})),
            )
            .await;
        }
    };
    tokio::join!(sends, casts);

    // Each user sent MESSAGES and received MESSAGES (both in its inbox),
    // and sees every broadcast.
    let expected = 2 * MESSAGES + BROADCASTS;
    for (u, ws) in &mut sockets {
        let mut live = Vec::new();
        while live.len() < expected {
            live.push(ws_event(ws).await);
        }
        assert_gap_free(&live);
        assert_eq!(live.first().map(|e| e.seq), Some(Seq(1)));
        assert_eq!(
            live.iter()
                .filter(|e| e.kind == EventType::BroadcastNew)
                .count(),
            BROADCASTS
        );
        assert_eq!(full_sync(&u.api).await, live, "{}", u.username);
    }
}

#[tokio::test]
async fn an_exported_audit_head_shows_that_the_newest_entries_were_removed() {
    let mut server = TestServer::start().await;
    let root = AdminApi::root(&server);
    for i in 0..3 {
        root.ok(
            Method::GET,
            &format!("/v1/admin/audit?limit={}", i + 1),
            None,
        )
        .await;
    }
    let head = root.ok(Method::GET, "/v1/admin/audit/head", None).await;
    let exported = head["head"].as_str().unwrap().to_owned();
    let seq = head["seq"].as_u64().unwrap();
    assert!(seq >= 3, "{head}");
    assert!(exported.starts_with(&format!("{seq}:")), "{head}");
    server.terminate().await;
    let verify = |head: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_unimsg"));
        cmd.args(["audit", "verify", "--data-dir"])
            .arg(server.data_dir());
        if let Some(head) = head {
            cmd.args(["--head", head]);
        }
        cmd.output().unwrap()
    };
    let intact = verify(Some(&exported));
    assert!(
        intact.status.success(),
        "{}",
        String::from_utf8_lossy(&intact.stderr)
    );
    // An intruder removes the newest entries: the chain that is left is
    // whole, but the exported head is gone.
    let db = rusqlite::Connection::open(server.data_dir().join("unimsg.db")).unwrap();
    db.execute("DELETE FROM audit_log WHERE id >= ?1", [seq as i64 - 1])
        .unwrap();
    drop(db);
    assert!(
        verify(None).status.success(),
        "without the head it cannot tell"
    );
    let caught = verify(Some(&exported));
    assert!(!caught.status.success());
    let stderr = String::from_utf8_lossy(&caught.stderr);
    assert!(
        stderr.contains(&format!("entry {seq} of the exported head is gone")),
        "{stderr}"
    );
}

/// A token that was just accepted (so its session is in the node's cache
/// of active sessions) is refused on the very next request once an admin
/// disables its user, gives them a new password or deletes them.
#[tokio::test]
async fn a_token_in_use_is_refused_at_once_after_each_admin_change_that_ends_it() {
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    let client = server.client();
    let changes = [
        (
            "disabled",
            Method::PATCH,
            Some(json!({"status": "disabled"})),
        ),
        (
            "new password",
            Method::PATCH,
            Some(json!({"password": "a brand new password"})),
        ),
        ("deleted", Method::DELETE, None),
    ];
    for (i, (what, method, body)) in changes.into_iter().enumerate() {
        let u = user(&client, &format!("user{i}")).await;
        u.api.me().await.expect("the token works before");
        let (status, answer) = root
            .call(method, &format!("/v1/admin/users/{}", u.id), body)
            .await;
        assert!(status.is_success(), "{what}: {status} {answer}");
        assert_eq!(
            u.api.me().await.err().and_then(|e| e.status()),
            Some(401),
            "{what}: refused at once"
        );
    }
}

/// `GET /v1/admin/users?query=` finds users by a part of their id,
/// username or display name, pages by id, and refuses bad parameters in
/// words.
#[tokio::test]
async fn admins_search_users_by_id_username_or_display_name_page_by_page() {
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    import(&root, &["ann-1", "ann-2", "ann-3", "bert"]).await;
    let client = server.client();
    let zoe = user(&client, "zoe").await;

    let ids = |v: &Value| -> Vec<String> {
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = root
        .ok(Method::GET, "/v1/admin/users?query=ANN&limit=2", None)
        .await;
    assert_eq!(ids(&first), ["ann-1", "ann-2"]);
    assert_eq!(first["next_after"], "ann-2");
    let second = root
        .ok(
            Method::GET,
            "/v1/admin/users?query=ann&limit=2&after=ann-2",
            None,
        )
        .await;
    assert_eq!(ids(&second), ["ann-3"]);
    assert!(second["next_after"].is_null(), "the last page: {second}");

    let by_username = root.ok(Method::GET, "/v1/admin/users?query=zo", None).await;
    assert_eq!(ids(&by_username), [zoe.id.to_string()]);
    assert_eq!(by_username["users"][0]["username"], "zoe");
    let by_display = root
        .ok(Method::GET, "/v1/admin/users?query=BERT", None)
        .await;
    assert_eq!(ids(&by_display), ["bert"]);
    let everyone = root.ok(Method::GET, "/v1/admin/users", None).await;
    assert_eq!(ids(&everyone).len(), 5);

    for (path, words) in [
        ("/v1/admin/users?limit=0", "limit must be 1 to 200"),
        ("/v1/admin/users?limit=201", "limit must be 1 to 200"),
        ("/v1/admin/users?after=no%20spaces", "user id"),
        ("/v1/admin/users?colour=red", "colour"),
    ] {
        let (status, body) = root.call(Method::GET, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{path}: {message}");
    }
    let long = "x".repeat(101);
    let (status, _) = root
        .call(Method::GET, &format!("/v1/admin/users?query={long}"), None)
        .await;
    assert_eq!(status, 400);

    // Credentials are checked before anything is searched.
    let (status, _) = AdminApi::basic(&server, "nobody", "wrong secret")
        .call(Method::GET, "/v1/admin/users", None)
        .await;
    assert_eq!(status, 401);
}

/// The audit log can be read for a time window (`since`, `until`), and a
/// time that is not RFC 3339 is refused in words.
#[tokio::test]
async fn the_audit_log_is_filtered_by_time() {
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    user(&server.client(), "tim").await;
    let now = time::OffsetDateTime::now_utc();
    let rfc = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
            .replace('+', "%2B")
    };
    let hour = time::Duration::hours(1);
    let count = |v: &Value| v["entries"].as_array().map_or(0, Vec::len);
    let recent = root
        .ok(
            Method::GET,
            &format!(
                "/v1/admin/audit?action=auth.login&since={}",
                rfc(now - hour)
            ),
            None,
        )
        .await;
    assert_eq!(count(&recent), 1, "{recent}");
    let future = root
        .ok(
            Method::GET,
            &format!("/v1/admin/audit?since={}", rfc(now + hour)),
            None,
        )
        .await;
    assert_eq!(count(&future), 0, "{future}");
    let past = root
        .ok(
            Method::GET,
            &format!("/v1/admin/audit?until={}", rfc(now - hour)),
            None,
        )
        .await;
    assert_eq!(count(&past), 0, "{past}");
    let (status, body) = root
        .call(Method::GET, "/v1/admin/audit?since=yesterday", None)
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("since")),
        "{body}"
    );
}

/// `GET /v1/admin/users/{id}/sessions`: the user's sessions that are not
/// revoked, with platform and device; none after a forced logout.
#[tokio::test]
async fn an_admin_sees_a_user_s_sessions() {
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    let client = server.client();
    register(&client, "sam").await;
    let web = login(&client, "sam", "web", Some("laptop")).await;
    login(&client, "sam", "ios", Some("phone")).await;
    let path = format!("/v1/admin/users/{}/sessions", web.id);
    let v = root.ok(Method::GET, &path, None).await;
    let mut seen: Vec<(String, String)> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["platform"].as_str().unwrap().to_owned(),
                s["device_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("ios".to_owned(), "phone".to_owned()),
            ("web".to_owned(), "laptop".to_owned())
        ]
    );
    assert!(v["sessions"][0]["current"] == false, "{v}");
    root.ok(
        Method::POST,
        &format!("/v1/admin/users/{}/logout", web.id),
        None,
    )
    .await;
    let after = root.ok(Method::GET, &path, None).await;
    assert_eq!(
        after["sessions"].as_array().map(Vec::len),
        Some(0),
        "{after}"
    );
    let (status, _) = root
        .call(Method::GET, "/v1/admin/users/nobody/sessions", None)
        .await;
    assert_eq!(status, 404);
}

/// A single node lists itself, as `local`, with its live connections.
#[tokio::test]
async fn a_single_node_lists_itself_with_its_live_connections() {
    // Asked again until a report has the stream: no admin rate limit.
    let server = TestServer::start_with(&[("UNIMSG_LIMITS__ADMIN_PER_SECOND", "0")]).await;
    let root = AdminApi::root(&server);
    let alice = user(&server.client(), "alice").await;
    let mut sse = alice.api.connect_sse(None).await.unwrap();
    root.ok(
        Method::POST,
        "/v1/admin/messages",
        Some(json!({"to": {"users": [alice.id]}, "content": {"title": "Hi"}})),
    )
    .await;
    let (_, pushed) = sse_event(&mut sse).await;
    assert_eq!(pushed.kind, EventType::NotificationNew);
    let node = within("a report with the SSE stream and its delivery", async {
        loop {
            let list = root.ok(Method::GET, "/v1/admin/nodes", None).await;
            let nodes = list["nodes"].as_array().cloned().unwrap_or_default();
            assert_eq!(nodes.len(), 1, "{list}");
            if nodes[0]["connections"] == 1
                && nodes[0]["totals"]["unimsg_hub_deliveries_total"].as_u64() >= Some(1)
            {
                return nodes[0].clone();
            }
            // Reports come every 5 s; each look is an audited admin request.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(node["node_id"], "local");
    assert_eq!(
        node["live"],
        json!([{"transport": "sse", "platform": "web", "connections": 1}])
    );
    assert_eq!(node["store_ok"], true);
    assert_eq!(node["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        node["totals"]["unimsg_logins_total"].as_u64() >= Some(1),
        "alice's sign-in is counted: {node}"
    );
    let (status, _) = request(&server, Method::GET, "/v1/admin/nodes", &[], None).await;
    assert_eq!(status, 401);
}
