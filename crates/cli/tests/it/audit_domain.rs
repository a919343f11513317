//! The outside audit's domain findings (issue 12, items 6, 9, 11, 12 and
//! the first point of 15), each played against the real server: a
//! disabled account opening sessions, blocks and consent bypassed through
//! groups, group fan-out without a send limit, a world-readable database,
//! friend-request text at rest in plaintext, and an admin message to an
//! unknown user answered 200.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use unimsg_client::Authed;
use unimsg_client::proto::{EventType, UserId};
use unimsg_testkit::unimsg;

use crate::harness::{ADMIN_PASSWORD, START_TIMEOUT, TestServer};
use crate::support::*;

/// A user request; the status, the `Retry-After` header and the body.
async fn user_request(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Option<String>, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", server.base))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        retry,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

async fn set_status(server: &TestServer, user: &UserId, status: &str) {
    let (code, v) = admin(
        server,
        Method::PATCH,
        &format!("/v1/admin/users/{user}"),
        Some(json!({ "status": status })),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{v}");
}

async fn new_qr_ticket(server: &TestServer) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/qr", server.base))
        .json(&json!({"platform": "web"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["ticket_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no ticket_id: {v}"))
        .to_owned()
}

fn error_message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Item 6: no session opens for a disabled account, by any way in, and
/// its tokens stop working.
#[tokio::test]
async fn a_disabled_account_opens_no_session_by_any_way_in() {
    let server = TestServer::start().await;
    let client = server.client();
    let carol = user(&client, "carol").await;
    let phone = login(&client, "carol", "ios", None).await;
    set_status(&server, &carol.id, "disabled").await;

    // Existing tokens stop at once, access and refresh alike.
    assert_eq!(
        carol.api.me().await.err().and_then(|e| e.status()),
        Some(401)
    );
    assert!(client.refresh(&carol.tokens.refresh_token).await.is_err());

    // The attack: a business system (or a stolen admin credential)
    // confirms a QR ticket for the disabled account.
    let ticket = new_qr_ticket(&server).await;
    let (status, v) = admin(
        &server,
        Method::POST,
        &format!("/v1/admin/qr/{ticket}/confirm"),
        Some(json!({ "user_id": carol.id })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        error_message(&v).contains("disabled"),
        "the admin API is told why: {v}"
    );
    // The phone of the disabled account cannot confirm either.
    let ticket = new_qr_ticket(&server).await;
    let (status, _, _) = user_request(
        &server,
        &phone.tokens.access_token,
        Method::POST,
        &format!("/v1/auth/qr/{ticket}/confirm"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Password login and minted tokens are refused.
    let login_req = unimsg_client::proto::api::LoginRequest {
        username: "carol".into(),
        password: PASSWORD.into(),
        platform: unimsg_client::proto::Platform::parse("web").unwrap(),
        device_id: None,
    };
    assert_eq!(
        client
            .login(&login_req)
            .await
            .err()
            .and_then(|e| e.status()),
        Some(403)
    );
    let (status, v) = admin(
        &server,
        Method::POST,
        &format!("/v1/admin/users/{}/tokens", carol.id),
        Some(json!({"platform": "web"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");

    // Enabled again, the account logs in and holds only that new session:
    // nothing above opened one.
    set_status(&server, &carol.id, "active").await;
    let again = login(&client, "carol", "web", None).await;
    let sessions = again.api.sessions().await.unwrap();
    assert_eq!(
        sessions
            .sessions
            .iter()
            .map(|s| s.session_id.clone())
            .collect::<Vec<_>>(),
        vec![again.tokens.session_id.clone()]
    );
}

/// Item 6: a session row that survived its user's disabling (a race
/// between a login and the disabling, played here by editing the
/// database while the server is down) is refused on the next request,
/// and its refresh token does not rotate.
#[tokio::test]
async fn a_session_that_survived_the_disabling_is_refused() {
    let mut server = TestServer::start().await;
    let client = server.client();
    let dave = user(&client, "dave").await;
    assert!(dave.api.me().await.is_ok());
    server.terminate().await;
    {
        let db = rusqlite::Connection::open(server.data_dir().join("unimsg.db")).unwrap();
        let changed = db
            .execute(
                "UPDATE users SET status = 'disabled' WHERE user_id = ?1",
                [dave.id.as_str()],
            )
            .unwrap();
        assert_eq!(changed, 1);
        let active: i64 = db
            .query_row(
                "SELECT count(*) FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL",
                [dave.id.as_str()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(active, 1, "the session row survives");
    }
    let server = server.restart().await;
    let client = server.client();
    let api = client.with_token(dave.tokens.access_token.clone());
    assert_eq!(api.me().await.err().and_then(|e| e.status()), Some(401));
    assert_eq!(
        client
            .refresh(&dave.tokens.refresh_token)
            .await
            .err()
            .and_then(|e| e.status()),
        Some(401)
    );
    // The WebSocket refuses it too.
    assert!(api.connect_ws(None).await.is_err());
}

async fn block(api: &Authed, other: &UserId) {
    let (status, _) = api
        .raw(
            Method::POST,
            &format!("/v1/blocks/{other}"),
            Vec::new(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
}

/// Item 9: whoever blocked you (or whom you blocked) cannot be put into a
/// group by you, so your group messages do not reach them; the refusal
/// does not say why.
#[tokio::test]
async fn a_blocked_user_cannot_put_the_blocker_into_a_group() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let mallory = user(&client, "mallory").await;
    let bob = user(&client, "bob").await;
    block(&alice.api, &mallory.id).await;
    let before = full_sync(&alice.api).await;

    // Creating a group with the blocker in it.
    let (status, _, v) = user_request(
        &server,
        &mallory.tokens.access_token,
        Method::POST,
        "/v1/groups",
        Some(json!({"name": "trap", "members": [alice.id, bob.id], "join_policy": "invite"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        !error_message(&v).contains("block"),
        "the refusal does not say why: {v}"
    );
    // Adding the blocker to a group of one's own.
    let (status, _, v) = user_request(
        &server,
        &mallory.tokens.access_token,
        Method::POST,
        "/v1/groups",
        Some(json!({"name": "trap", "members": [bob.id], "join_policy": "invite"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let group = v["group_id"].as_str().unwrap_or_default().to_owned();
    let (status, _, v) = user_request(
        &server,
        &mallory.tokens.access_token,
        Method::POST,
        &format!("/v1/groups/{group}/members"),
        Some(json!({"user_ids": [alice.id]})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(!error_message(&v).contains("block"), "{v}");
    let (status, _, v) = user_request(
        &server,
        &mallory.tokens.access_token,
        Method::POST,
        "/v1/messages",
        Some(json!({"to": {"group": group}, "content": {"text": "gotcha"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        full_sync(&alice.api).await,
        before,
        "nothing of the group reached the blocker"
    );
    // Bob, not blocked, got the message.
    assert!(
        full_sync(&bob.api)
            .await
            .iter()
            .any(|e| e.kind == EventType::MessageNew && text(e) == "gotcha")
    );

    // The blocker cannot put the blocked user into a group either.
    let (status, _, v) = user_request(
        &server,
        &alice.tokens.access_token,
        Method::POST,
        "/v1/groups",
        Some(json!({"name": "mine", "members": [mallory.id], "join_policy": "invite"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
}

/// Item 9: with `groups.add_requires_friendship`, users put only their
/// friends into groups; the admin API is not bound by it.
#[tokio::test]
async fn with_add_requires_friendship_only_friends_are_added() {
    let server =
        TestServer::start_with(&[("UNIMSG_GROUPS__ADD_REQUIRES_FRIENDSHIP", "true")]).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let stranger = user(&client, "stranger").await;
    let create = |members: Vec<&UserId>| {
        user_request(
            &server,
            &stranger.tokens.access_token,
            Method::POST,
            "/v1/groups",
            Some(json!({"name": "spam", "members": members, "join_policy": "invite"})),
        )
    };
    let (status, _, v) = create(vec![&alice.id]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, _, v) = create(vec![]).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let group = v["group_id"].as_str().unwrap_or_default().to_owned();
    let (status, _, v) = user_request(
        &server,
        &stranger.tokens.access_token,
        Method::POST,
        &format!("/v1/groups/{group}/members"),
        Some(json!({"user_ids": [alice.id]})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        full_sync(&alice.api)
            .await
            .iter()
            .all(|e| e.kind != EventType::GroupChanged),
        "the stranger's group never reached alice"
    );

    // Friends can be added.
    for (from, to) in [(&alice, &bob.id), (&bob, &alice.id)] {
        let (status, _, v) = user_request(
            &server,
            &from.tokens.access_token,
            Method::POST,
            "/v1/friends/requests",
            Some(json!({ "to": to })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let (status, _, v) = user_request(
        &server,
        &alice.tokens.access_token,
        Method::POST,
        "/v1/groups",
        Some(json!({"name": "friends", "members": [bob.id], "join_policy": "invite"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // A business system still creates groups of whomever it chooses.
    let (status, v) = admin(
        &server,
        Method::POST,
        "/v1/admin/groups",
        Some(json!({"name": "ops", "owner": stranger.id, "members": [alice.id]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
}

/// Item 9: a user's sends are limited per minute, and a group message
/// counts one delivery per other member: the flood of the audit (50
/// sends to a group of 2,000) stops at the limit with 429 and
/// `Retry-After`. Admin messages to the same group are not limited, and
/// the limit is per user.
#[tokio::test]
async fn sends_and_group_fan_out_are_limited_per_user() {
    // Rates low enough that nothing is refilled while the test runs (one
    // send per 20 s, one delivery per 2 s).
    let server = TestServer::start_with(&[
        ("UNIMSG_LIMITS__SEND_PER_MINUTE", "3"),
        ("UNIMSG_LIMITS__DELIVERIES_PER_MINUTE", "30"),
        ("UNIMSG_LIMITS__ADMIN_PER_SECOND", "100000"),
    ])
    .await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    for n in 0..3 {
        alice
            .api
            .send_text(&bob.id, &format!("hello {n}"), None)
            .await
            .unwrap_or_else(|e| panic!("send {n}: {e}"));
    }
    let (status, retry, v) = user_request(
        &server,
        &alice.tokens.access_token,
        Method::POST,
        "/v1/messages",
        Some(json!({"to": {"user": bob.id}, "content": {"text": "one too many"}})),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(
        retry
            .as_deref()
            .and_then(|r| r.parse::<u64>().ok())
            .is_some_and(|s| s >= 1),
        "Retry-After: {retry:?}"
    );
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    // Bob is not limited by Alice's sends.
    bob.api.send_text(&alice.id, "hi", None).await.unwrap();

    // A group of 25: each message writes 24 rows for others.
    let mut members = Vec::new();
    for n in 0..24 {
        members.push(register(&client, &format!("member{n}")).await);
    }
    let carol = user(&client, "carol").await;
    let (status, v) = admin(
        &server,
        Method::POST,
        "/v1/admin/groups",
        Some(json!({"name": "big", "owner": carol.id, "members": members})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let group = v["group"]["group_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let say = |token: String, text: &'static str| {
        let server = &server;
        let group = group.clone();
        async move {
            user_request(
                server,
                &token,
                Method::POST,
                "/v1/messages",
                Some(json!({"to": {"group": group}, "content": {"text": text}})),
            )
            .await
        }
    };
    let (status, _, v) = say(carol.tokens.access_token.clone(), "first").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // One send of three is used, but 24 + 24 deliveries exceed 30.
    let (status, retry, v) = say(carol.tokens.access_token.clone(), "second").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(retry.is_some());
    let member0 = login(&client, "member0", "web", None).await;
    let texts: Vec<String> = full_sync(&member0.api)
        .await
        .iter()
        .filter(|e| e.kind == EventType::MessageNew)
        .map(text)
        .collect();
    assert_eq!(
        texts,
        vec!["first"],
        "the refused message was not delivered"
    );
    // Another member's send is counted on their own.
    let (status, _, v) = say(member0.tokens.access_token.clone(), "mine").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // An admin message to the group is no user send.
    let (status, v) = admin(
        &server,
        Method::POST,
        "/v1/admin/messages",
        Some(json!({"to": {"group": group}, "content": {"title": "ops"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["recipients"], 25, "{v}");
}

/// Starts the binary under umask 022 (the usual default) on a data
/// directory that does not exist yet; returns the process once it
/// listens.
async fn serve_fresh(data_dir: &std::path::Path) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg("umask 022 && exec \"$0\" serve --listen 127.0.0.1:0 --data-dir \"$1\"")
        .arg(env!("CARGO_BIN_EXE_unimsg"))
        .arg(data_dir)
        .env_remove("RUST_LOG")
        .env("UNIMSG_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("UNIMSG_LOG__LEVEL", "info");
    unimsg::start(cmd, START_TIMEOUT)
        .await
        .expect("the server on a fresh data directory")
        .child
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Item 11: a fresh data directory is 0700 and the database files 0600,
/// whatever the umask lets through; wider ones are warned about at start.
#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("fresh").join("data");
    let mut child = serve_fresh(&dir).await;
    assert_eq!(mode(&dir), 0o700, "the data directory");
    for file in ["unimsg.db", "unimsg.db-wal", "unimsg.db-shm"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    child.kill().await.unwrap();

    // Opened wider by someone else: the server warns at start.
    let mut server = TestServer::start().await;
    server.terminate().await;
    let set = |path: std::path::PathBuf, mode: u32| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    };
    set(server.data_dir().to_path_buf(), 0o755);
    set(server.data_dir().join("unimsg.db"), 0o644);
    let server = server.restart().await;
    let logs = server.logs();
    assert!(
        logs.contains("the data directory is accessible to other users"),
        "{logs}"
    );
    assert!(
        logs.contains("the database file is accessible to other users"),
        "{logs}"
    );
}

/// Item 12: a friend request's words are sealed at rest (neither the row
/// nor the inbox event holds them in plaintext, in the database file or
/// its WAL), and the recipient still reads them, before and after a
/// restart.
#[tokio::test]
async fn friend_request_text_is_sealed_at_rest() {
    const WORDS: &str = "meet me at the old quarry, 7f3a9c";
    let mut server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let (status, _, v) = user_request(
        &server,
        &alice.tokens.access_token,
        Method::POST,
        "/v1/friends/requests",
        Some(json!({"to": bob.id, "message": WORDS})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let sees_it = |api: Authed| async move {
        let (status, v) = api
            .raw(
                Method::GET,
                "/v1/friends/requests?direction=incoming",
                Vec::new(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["requests"][0]["message"], WORDS, "{v}");
        let events = full_sync(&api).await;
        let request = events
            .iter()
            .find(|e| e.kind == EventType::FriendRequest)
            .expect("no friend.request event");
        assert_eq!(request.data["message"], WORDS, "{:?}", request.data);
        assert!(request.data.get("message_sealed").is_none());
    };
    sees_it(bob.api.clone()).await;

    // kill -9: whatever was committed is in the database file or its WAL.
    server.kill9().await;
    let mut bytes = Vec::new();
    for file in ["unimsg.db", "unimsg.db-wal"] {
        if let Ok(b) = std::fs::read(server.data_dir().join(file)) {
            bytes.extend_from_slice(&b);
        }
    }
    // Usernames are stored in plaintext, so the scan does see text.
    assert!(bytes.windows(5).any(|w| w == b"alice"), "nothing to scan");
    assert!(
        !bytes.windows(WORDS.len()).any(|w| w == WORDS.as_bytes()),
        "the database holds the request's words in plaintext"
    );
    let server = server.restart().await;
    sees_it(server.client().with_token(bob.tokens.access_token.clone())).await;
}

/// Item 15: an admin message naming an unknown user is refused with 404
/// naming every unknown id, and nobody receives it.
#[tokio::test]
async fn an_admin_message_to_an_unknown_user_is_404_and_sends_nothing() {
    let server = TestServer::start().await;
    let (status, v) = admin(
        &server,
        Method::POST,
        "/v1/admin/users",
        Some(json!({"users": [{"user_id": "known-1", "display_name": "Known"}]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = admin(
        &server,
        Method::POST,
        "/v1/admin/messages",
        Some(json!({
            "to": {"users": ["known-1", "ghost-1", "ghost-2", "ghost-1"]},
            "content": {"title": "Hi"},
        })),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let message = error_message(&v);
    assert!(
        message.contains("ghost-1") && message.contains("ghost-2") && !message.contains("known-1"),
        "{v}"
    );
    assert_eq!(
        message.matches("ghost-1").count(),
        1,
        "each id once: {message}"
    );
    let (status, v) = admin(
        &server,
        Method::POST,
        "/v1/admin/users/known-1/tokens",
        Some(json!({"platform": "web"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let known = server
        .client()
        .with_token(v["access_token"].as_str().unwrap_or_default().to_owned());
    assert!(
        full_sync(&known)
            .await
            .iter()
            .all(|e| e.kind != EventType::NotificationNew),
        "nothing was sent"
    );
    // Many unknown ids: the message stays bounded.
    let many: Vec<String> = (0..500).map(|n| format!("nobody-{n}")).collect();
    let (status, v) = admin(
        &server,
        Method::POST,
        "/v1/admin/messages",
        Some(json!({"to": {"users": many}, "content": {"title": "Hi"}})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let message = error_message(&v);
    assert!(
        message.len() < 1000 && message.contains("480 more"),
        "{message}"
    );
}
