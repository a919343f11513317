//! Webhooks and the before-send hook, against real HTTP receivers on
//! loopback: every catalogue event arrives signed (checked with the
//! Standard Webhooks crate), failures are retried with one `webhook-id`,
//! nothing is lost across `kill -9`, secret rotations sign twice, the SSRF
//! guard refuses private targets, and the before-send hook's answers
//! decide what is stored.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use unimsg_client::proto::ErrorCode;
use unimsg_client::proto::EventType;
use unimsg_client::proto::api::MessageKind;
use unimsg_client::proto::api::{Recipient, SendRequest};
use unimsg_client::{Authed, ClientError};

use crate::harness::{ADMIN_PASSWORD, TestServer};
use crate::receiver::{Received, Receiver, Reply};
use crate::support::*;

/// Hooks on loopback receivers, quick polls and one-second retries.
const HOOKS: &[(&str, &str)] = &[
    ("UNIMSG_HOOKS__ALLOW_PRIVATE_TARGETS", "true"),
    ("UNIMSG_HOOKS__POLL_INTERVAL_MS", "100"),
    ("UNIMSG_HOOKS__RETRY_SCHEDULE_SECS", "1,1,1,1,1,1,1,1"),
];

/// Registers an endpoint; its id and secret.
async fn endpoint(
    server: &TestServer,
    url: &str,
    events: Value,
    content: bool,
) -> (String, String) {
    let (status, v) = admin(
        server,
        Method::POST,
        "/v1/admin/webhooks",
        Some(json!({"url": url, "events": events, "include_content": content})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let secret = v["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{v}");
    (v["webhook_id"].as_str().unwrap().to_owned(), secret)
}

/// The newest delivery of `hook` in `status`, once the log shows one
/// (the log is written after the receiver answered).
async fn first_delivery(server: &TestServer, hook: &str, status: &str) -> Value {
    let path = format!("/v1/admin/webhooks/{hook}/deliveries?status={status}");
    within(&format!("a {status} delivery"), async {
        loop {
            let (_, page) = admin(server, Method::GET, &path, None).await;
            if let Some(first) = page["deliveries"].get(0) {
                return first.clone();
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

fn kinds(seen: &[Received]) -> BTreeSet<String> {
    seen.iter().map(Received::kind).collect()
}

fn of_kind<'a>(seen: &'a [Received], kind: &str) -> Vec<&'a Received> {
    seen.iter().filter(|r| r.kind() == kind).collect()
}

async fn post(api: &Authed, path: &str, body: Value) -> Value {
    let (status, v) = call(api, Method::POST, path, Some(body)).await;
    assert!((200..300).contains(&status), "{path}: {status} {v}");
    v
}

#[tokio::test]
async fn every_catalogue_event_arrives_signed() {
    let server = TestServer::start_with(HOOKS).await;
    let receiver = Receiver::ok().await;
    let (hook_id, secret) = endpoint(&server, &receiver.url, json!(["*"]), true).await;
    let client = server.client();

    // user.created, user.login
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let carol = user(&client, "carol").await;

    // user.online, user.offline
    let ws = alice.api.connect_ws(None).await.unwrap();
    receiver
        .until("user.online", |s| kinds(s).contains("user.online"))
        .await;
    drop(ws);

    // friend.requested, friend.added
    post(&alice.api, "/v1/friends/requests", json!({"to": bob.id})).await;
    post(
        &bob.api,
        &format!("/v1/friends/requests/{}/accept", alice.id),
        json!({}),
    )
    .await;

    // message.created (with content), message.delivered, message.read,
    // message.recalled
    let sent = alice
        .api
        .send_text(&bob.id, "hello bob", None)
        .await
        .unwrap();
    let synced = bob.api.sync(None, None).await.unwrap();
    bob.api.ack(synced.next_after).await.unwrap();
    bob.api
        .read(&sent.conversation_id, &sent.message_id)
        .await
        .unwrap();
    alice.api.recall(&sent.message_id).await.unwrap();

    // block.added, block.removed, friend.removed
    post(&alice.api, &format!("/v1/blocks/{}", bob.id), json!({})).await;
    let (s, _) = call(
        &alice.api,
        Method::DELETE,
        &format!("/v1/blocks/{}", bob.id),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = call(
        &alice.api,
        Method::DELETE,
        &format!("/v1/friends/{}", bob.id),
        None,
    )
    .await;
    assert_eq!(s, 204);

    // group.created, group.updated, group.member_added,
    // group.member_removed, group.dissolved
    let g = post(
        &alice.api,
        "/v1/groups",
        json!({"name": "team", "members": [bob.id], "join_policy": "invite"}),
    )
    .await;
    let group = format!("/v1/groups/{}", g["group_id"].as_str().unwrap());
    let (s, _) = call(
        &alice.api,
        Method::PATCH,
        &group,
        Some(json!({"name": "crew"})),
    )
    .await;
    assert_eq!(s, 200);
    post(
        &alice.api,
        &format!("{group}/members"),
        json!({"user_ids": [carol.id]}),
    )
    .await;
    let (s, _) = call(
        &alice.api,
        Method::DELETE,
        &format!("{group}/members/{}", carol.id),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = call(&alice.api, Method::DELETE, &group, None).await;
    assert_eq!(s, 204);

    // notification.delivered, notification.read
    let (s, n) = admin(
        &server,
        Method::POST,
        "/v1/admin/messages",
        Some(json!({"to": {"users": [bob.id]}, "content": {"title": "Hi"}})),
    )
    .await;
    assert_eq!(s, 200, "{n}");
    let synced = bob.api.sync(None, None).await.unwrap();
    bob.api.ack(synced.next_after).await.unwrap();
    post(
        &bob.api,
        &format!("/v1/conversations/s:{}/read", bob.id),
        json!({"message_id": n["message_id"]}),
    )
    .await;

    // security.alert: a refresh token used twice
    client.refresh(&bob.tokens.refresh_token).await.unwrap();
    assert!(client.refresh(&bob.tokens.refresh_token).await.is_err());

    // qr.confirmed
    let ticket: Value = reqwest::Client::new()
        .post(format!("{}/v1/auth/qr", server.base))
        .json(&json!({"platform": "web"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!(
            "{}/v1/admin/qr/{}/confirm",
            server.base,
            ticket["ticket_id"].as_str().unwrap()
        ))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .json(&json!({"user_id": bob.id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // user.updated, user.disabled (with session.revoked), user.deleted
    let carol_path = format!("/v1/admin/users/{}", carol.id);
    let (s, _) = admin(
        &server,
        Method::PATCH,
        &carol_path,
        Some(json!({"display_name": "Caz"})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = admin(
        &server,
        Method::PATCH,
        &carol_path,
        Some(json!({"status": "disabled"})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = admin(&server, Method::DELETE, &carol_path, None).await;
    assert_eq!(s, 204);

    // user.logout
    alice.api.logout().await.unwrap();

    // webhook.test
    let (s, t) = admin(
        &server,
        Method::POST,
        &format!("/v1/admin/webhooks/{hook_id}/test"),
        None,
    )
    .await;
    assert_eq!(s, 202, "{t}");

    let expected: BTreeSet<String> = [
        "user.created",
        "user.login",
        "user.online",
        "user.offline",
        "friend.requested",
        "friend.added",
        "message.created",
        "message.delivered",
        "message.read",
        "message.recalled",
        "block.added",
        "block.removed",
        "friend.removed",
        "group.created",
        "group.updated",
        "group.member_added",
        "group.member_removed",
        "group.dissolved",
        "notification.delivered",
        "notification.read",
        "qr.confirmed",
        "security.alert",
        "user.updated",
        "user.disabled",
        "session.revoked",
        "user.deleted",
        "user.logout",
        "webhook.test",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let seen = receiver
        .until("every catalogue event", |s| kinds(s).is_superset(&expected))
        .await;

    for r in &seen {
        assert!(r.verify(&secret), "a bad signature on {}", r.kind());
        assert!(r.header("webhook-id").starts_with("evt_"));
        let body = r.json();
        assert!(
            body["timestamp"].is_string() && body["data"].is_object(),
            "{body}"
        );
    }
    let created = of_kind(&seen, "message.created")[0].json();
    assert_eq!(created["data"]["message_id"], json!(sent.message_id));
    assert_eq!(created["data"]["sender"], json!(alice.id));
    assert_eq!(created["data"]["recipient"], json!(bob.id));
    assert_eq!(
        created["data"]["content"],
        json!({"text": "hello bob"}),
        "include_content"
    );
    let login = of_kind(&seen, "user.login")[0].json();
    assert_eq!(login["data"]["platform"], "web");
    assert!(login["data"]["session_id"].is_string());
    let alert = of_kind(&seen, "security.alert")
        .into_iter()
        .map(Received::json)
        .find(|a| a["data"]["alert"] == "refresh_token_reuse")
        .expect("the refresh-token reuse alert");
    assert_eq!(alert["data"]["user_id"], json!(bob.id));
    assert!(
        of_kind(&seen, "session.revoked")
            .iter()
            .any(|r| r.json()["data"]["reason"] == "user_disabled"),
        "disabling revokes with a reason"
    );
    assert_eq!(
        of_kind(&seen, "webhook.test")[0].header("webhook-id"),
        t["event_id"].as_str().unwrap()
    );
    let ids: HashSet<String> = seen.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(
        ids.len(),
        seen.len(),
        "each event once with a healthy receiver"
    );
}

#[tokio::test]
async fn an_endpoint_gets_only_its_types_and_content_only_when_asked() {
    let server = TestServer::start_with(HOOKS).await;
    let logins = Receiver::ok().await;
    let messages = Receiver::ok().await;
    endpoint(&server, &logins.url, json!(["user.login"]), false).await;
    endpoint(&server, &messages.url, json!(["message.created"]), false).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    alice
        .api
        .send_text(&bob.id, "secret words", None)
        .await
        .unwrap();
    let seen = messages.until("message.created", |s| !s.is_empty()).await;
    assert_eq!(seen[0].kind(), "message.created");
    assert!(
        seen[0].json()["data"].get("content").is_none(),
        "{}",
        seen[0].json()
    );
    let seen = logins.until("two logins", |s| s.len() >= 2).await;
    assert!(seen.iter().all(|r| r.kind() == "user.login"));

    // Unknown event types and private targets are refused with words.
    let (s, v) = admin(
        &server,
        Method::POST,
        "/v1/admin/webhooks",
        Some(json!({"url": logins.url, "events": ["user.exploded"]})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("user.exploded"),
        "{v}"
    );
}

#[tokio::test]
async fn a_failing_receiver_gets_the_event_on_the_fourth_attempt_with_one_id() {
    let server = TestServer::start_with(HOOKS).await;
    let receiver = Receiver::scripted(|n, _| Reply::status(if n < 3 { 500 } else { 200 })).await;
    let (hook, secret) = endpoint(&server, &receiver.url, json!(["user.created"]), false).await;
    register(&server.client(), "dora").await;
    let seen = receiver.until("four attempts", |s| s.len() >= 4).await;
    let ids: HashSet<String> = seen.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "every attempt carries the same webhook-id");
    assert!(
        seen.iter().all(|r| r.verify(&secret)),
        "retries are signed afresh"
    );

    // The log shows one succeeded delivery after four attempts, and no
    // fifth request comes: the schedule stops at the success.
    let d = &first_delivery(&server, &hook, "succeeded").await;
    assert_eq!(
        (d["attempts"].as_u64(), d["last_status"].as_u64()),
        (Some(4), Some(200)),
        "{d}"
    );
    assert_eq!(receiver.seen().len(), 4);

    // A retry by hand sends it again, with the same id.
    let event = d["event_id"].as_str().unwrap();
    let (s, _) = admin(
        &server,
        Method::POST,
        &format!("/v1/admin/webhooks/{hook}/deliveries/{event}/retry"),
        None,
    )
    .await;
    assert_eq!(s, 202);
    let seen = receiver.until("the manual retry", |s| s.len() >= 5).await;
    assert_eq!(seen[4].header("webhook-id"), event);

    // A replay since before the event queues it once more.
    let (s, v) = admin(
        &server,
        Method::POST,
        &format!("/v1/admin/webhooks/{hook}/replay"),
        Some(json!({"since": "2020-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!((s.as_u16(), v["queued"].as_u64()), (202, Some(1)), "{v}");
    receiver.until("the replay", |s| s.len() >= 6).await;
}

#[tokio::test]
async fn a_retry_after_answer_and_an_exhausted_schedule_end_as_failed() {
    let server = TestServer::start_with(&[
        ("UNIMSG_HOOKS__ALLOW_PRIVATE_TARGETS", "true"),
        ("UNIMSG_HOOKS__POLL_INTERVAL_MS", "100"),
        ("UNIMSG_HOOKS__RETRY_SCHEDULE_SECS", "0"),
    ])
    .await;
    let receiver = Receiver::scripted(|_, _| Reply {
        retry_after: Some(1),
        ..Reply::status(503)
    })
    .await;
    let (hook, _) = endpoint(&server, &receiver.url, json!(["user.created"]), false).await;
    register(&server.client(), "erin").await;
    let d = &first_delivery(&server, &hook, "failed").await;
    assert_eq!(
        (d["attempts"].as_u64(), d["last_status"].as_u64()),
        (Some(2), Some(503)),
        "{d}"
    );
    let seen = receiver.seen();
    assert_eq!(
        seen.len(),
        2,
        "one attempt and the one retry of the schedule"
    );
    let (_, w) = admin(
        &server,
        Method::GET,
        &format!("/v1/admin/webhooks/{hook}"),
        None,
    )
    .await;
    assert!(w["failing_since"].is_string(), "{w}");
}

#[tokio::test]
async fn kill_9_with_a_thousand_undelivered_events_loses_none() {
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    // Until the restart every attempt hangs past its deadline: the server
    // is killed with attempts in flight and the rest waiting.
    let receiver = Receiver::scripted(move |_, _| {
        if flag.load(Ordering::SeqCst) {
            Reply::status(204)
        } else {
            Reply {
                delay: Duration::from_secs(3),
                ..Reply::status(503)
            }
        }
    })
    .await;
    let schedule = vec!["1"; 30].join(",");
    let mut env = vec![
        ("UNIMSG_HOOKS__ALLOW_PRIVATE_TARGETS", "true"),
        ("UNIMSG_HOOKS__POLL_INTERVAL_MS", "100"),
        ("UNIMSG_HOOKS__TIMEOUT_MS", "1000"),
        ("UNIMSG_HOOKS__RETRY_SCHEDULE_SECS", schedule.as_str()),
    ];
    env.push(("UNIMSG_LIMITS__SEND_PER_MINUTE", "100000"));
    env.push(("UNIMSG_LIMITS__DELIVERIES_PER_MINUTE", "100000"));
    let mut server = TestServer::start_with(&env).await;
    endpoint(&server, &receiver.url, json!(["message.created"]), false).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = register(&client, "bob").await;
    let mut sent = HashSet::new();
    for i in 0..1000 {
        let r = alice
            .api
            .send_text(&bob, &format!("m{i}"), None)
            .await
            .unwrap();
        sent.insert(r.message_id.to_string());
    }
    server.kill9().await;
    let server = server.restart().await;
    healthy.store(true, Ordering::SeqCst);
    // Only answered requests count as delivered.
    let delivered = |seen: &[Received]| -> HashSet<String> {
        seen.iter()
            .filter(|r| r.answered_ok)
            .map(|r| {
                r.json()["data"]["message_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    // Claims cut off by the kill wait for their lease (16 × 1 s + 10 s).
    let seen = receiver
        .until_within(
            "1000 events after the restart",
            Duration::from_secs(120),
            |s| delivered(s).len() >= 1000,
        )
        .await;
    assert_eq!(
        delivered(&seen),
        sent,
        "every stored message's event arrived"
    );
    drop(server);
}

#[tokio::test]
async fn a_busy_endpoint_moved_to_a_new_url_uses_it_at_once() {
    // The old receiver answers slowly, so the endpoint still has a
    // backlog when its URL changes: what is left goes to the new one.
    let old = Receiver::scripted(|_, _| Reply {
        delay: Duration::from_millis(100),
        ..Reply::status(204)
    })
    .await;
    let new = Receiver::ok().await;
    let mut env = HOOKS.to_vec();
    env.push(("UNIMSG_LIMITS__SEND_PER_MINUTE", "100000"));
    env.push(("UNIMSG_LIMITS__DELIVERIES_PER_MINUTE", "100000"));
    let server = TestServer::start_with(&env).await;
    let (id, _) = endpoint(&server, &old.url, json!(["message.created"]), false).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = register(&client, "bob").await;
    let mut sent = HashSet::new();
    for i in 0..400 {
        let r = alice
            .api
            .send_text(&bob, &format!("m{i}"), None)
            .await
            .unwrap();
        sent.insert(r.message_id.to_string());
    }
    let (status, v) = admin(
        &server,
        Method::PATCH,
        &format!("/v1/admin/webhooks/{id}"),
        Some(json!({"url": new.url})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let message_ids = |seen: &[Received]| -> HashSet<String> {
        seen.iter()
            .map(|r| r.json()["data"]["message_id"].as_str().unwrap().to_owned())
            .collect()
    };
    // 400 events at 8 × 10 a second would keep the old URL busy for 5 s.
    new.until("the new URL's first request", |s| !s.is_empty())
        .await;
    assert!(
        message_ids(&old.seen()).len() < 400,
        "the old URL did not get everything"
    );
    let both = || {
        let mut all = message_ids(&old.seen());
        all.extend(message_ids(&new.seen()));
        all
    };
    within("every event at one URL or the other", async {
        while both() != sent {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_rotated_secret_signs_twice_during_the_overlap() {
    let server = TestServer::start_with(HOOKS).await;
    let receiver = Receiver::ok().await;
    let (hook, old) = endpoint(&server, &receiver.url, json!(["webhook.test"]), false).await;
    let (s, rotated) = admin(
        &server,
        Method::POST,
        &format!("/v1/admin/webhooks/{hook}/secret"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    admin(
        &server,
        Method::POST,
        &format!("/v1/admin/webhooks/{hook}/test"),
        None,
    )
    .await;
    let seen = receiver.until("the test event", |s| !s.is_empty()).await;
    let signature = seen[0].header("webhook-signature");
    assert_eq!(signature.split(' ').count(), 2, "{signature}");
    assert!(
        seen[0].verify(&old),
        "receivers still on the old secret verify"
    );
    assert!(seen[0].verify(&new), "receivers on the new secret verify");
    let stranger = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert!(!seen[0].verify(stranger), "a wrong secret does not verify");
    // And with Standard Webhooks' Python library, as a receiver would.
    assert!(seen[0].verify_in_python(&old) && seen[0].verify_in_python(&new));
    assert!(!seen[0].verify_in_python(stranger));

    // Without an overlap only the new secret signs.
    let server = TestServer::start_with(&[
        ("UNIMSG_HOOKS__ALLOW_PRIVATE_TARGETS", "true"),
        ("UNIMSG_HOOKS__SECRET_OVERLAP_SECS", "0"),
    ])
    .await;
    let receiver = Receiver::ok().await;
    let (hook, old) = endpoint(&server, &receiver.url, json!(["webhook.test"]), false).await;
    let (_, rotated) = admin(
        &server,
        Method::POST,
        &format!("/v1/admin/webhooks/{hook}/secret"),
        None,
    )
    .await;
    admin(
        &server,
        Method::POST,
        &format!("/v1/admin/webhooks/{hook}/test"),
        None,
    )
    .await;
    let seen = receiver.until("the test event", |s| !s.is_empty()).await;
    assert!(seen[0].verify(rotated["secret"].as_str().unwrap()));
    assert!(!seen[0].verify(&old));
}

#[tokio::test]
async fn the_ssrf_guard_refuses_private_targets_without_the_switch() {
    let server = TestServer::start().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/",
        "http://[::1]/",
        "http://10.0.0.8/",
        "ftp://example.com/",
        "not a url",
    ] {
        let (s, v) = admin(
            &server,
            Method::POST,
            "/v1/admin/webhooks",
            Some(json!({"url": url, "events": ["*"]})),
        )
        .await;
        assert_eq!(s, 400, "{url}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let (_, list) = admin(&server, Method::GET, "/v1/admin/webhooks", None).await;
    assert_eq!(list["webhooks"], json!([]), "nothing was registered");
}

/// A before-send receiver that decides by the message's `text`: `allow`,
/// `reject`, `modify` (to `***`), `slow` (past the timeout), `broken` (500).
async fn moderator() -> Receiver {
    Receiver::scripted(|_, r| {
        let text = r.json()["content"]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match text.as_str() {
            "reject" => Reply::json(json!({"action": "reject", "reason": "no shouting"})),
            "modify" => Reply::json(json!({"action": "modify", "content": {"text": "***"}})),
            "slow" => Reply {
                delay: Duration::from_secs(3),
                ..Reply::json(json!({"action": "allow"}))
            },
            "broken" => Reply::status(500),
            _ => Reply::json(json!({"action": "allow"})),
        }
    })
    .await
}

async fn before_send_server(hook: &Receiver, on_failure: &str) -> TestServer {
    TestServer::start_with(&[
        ("UNIMSG_HOOKS__ALLOW_PRIVATE_TARGETS", "true"),
        ("UNIMSG_HOOKS__BEFORE_SEND__URL", hook.url.as_str()),
        ("UNIMSG_HOOKS__BEFORE_SEND__TIMEOUT_MS", "300"),
        ("UNIMSG_HOOKS__BEFORE_SEND__ON_FAILURE", on_failure),
        (
            "UNIMSG_HOOKS__BEFORE_SEND__SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
    ])
    .await
}

fn text_to(to: Recipient, text: &str, cmid: Option<&str>) -> SendRequest {
    SendRequest {
        to,
        kind: MessageKind::Chat,
        content: json!({"text": text}),
        client_msg_id: cmid.map(str::to_owned),
    }
}

/// The texts of the messages `api` can see in its inbox, in order.
async fn inbox_texts(api: &Authed) -> Vec<String> {
    full_sync(api)
        .await
        .iter()
        .filter(|e| e.kind == EventType::MessageNew)
        .map(text)
        .collect()
}

#[tokio::test]
async fn before_send_allows_rejects_and_modifies_over_http_and_websocket() {
    let hook = moderator().await;
    let server = before_send_server(&hook, "allow").await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let g = post(
        &alice.api,
        "/v1/groups",
        json!({"name": "g", "members": [bob.id], "join_policy": "invite"}),
    )
    .await;
    let group = Recipient::Group(g["group_id"].as_str().unwrap().parse().unwrap());
    let direct = Recipient::User(bob.id.clone());

    // HTTP, direct and group.
    for to in [direct.clone(), group.clone()] {
        for (text, stored) in [
            ("allow", Some("allow")),
            ("modify", Some("***")),
            ("slow", Some("slow")),
            ("broken", Some("broken")),
            ("reject", None),
        ] {
            let result = alice.api.send(&text_to(to.clone(), text, None)).await;
            match stored {
                Some(_) => assert!(result.is_ok(), "{text}: {result:?}"),
                None => match result.expect_err("rejected") {
                    ClientError::Api {
                        status,
                        code,
                        message,
                    } => {
                        assert_eq!((status, code), (403, ErrorCode::Rejected));
                        assert_eq!(message, "no shouting");
                    }
                    other => panic!("{other}"),
                },
            }
        }
    }
    // WebSocket, direct and group.
    let mut ws = alice.api.connect_ws(None).await.unwrap();
    for to in [direct.clone(), group.clone()] {
        ws.send(text_to(to.clone(), "modify", None), Some("m"))
            .await
            .unwrap();
        let e = ws
            .send(text_to(to.clone(), "reject", None), Some("r"))
            .await
            .expect_err("rejected over WebSocket");
        assert!(
            matches!(&e, ClientError::Rejected { code: ErrorCode::Rejected, message } if message == "no shouting"),
            "{e}"
        );
    }
    drop(ws);

    // Bob sees only what was allowed, as the hook left it: per
    // conversation allow, ***, slow (fail-open), broken (fail-open), then
    // *** from the WebSocket.
    let texts = inbox_texts(&bob.api).await;
    let expected: Vec<String> = ["allow", "***", "slow", "broken"]
        .iter()
        .chain(["allow", "***", "slow", "broken"].iter())
        .chain(["***", "***"].iter())
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(texts, expected);

    // Every request to the hook is signed with the configured secret.
    let asked = hook.seen();
    assert!(
        asked
            .iter()
            .all(|r| r.verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
    );
    assert_eq!(asked[0].json()["sender"], json!(alice.id));
    assert_eq!(asked[0].json()["to"], json!({"user": bob.id}));

    // A retried client_msg_id that was stored is not checked again.
    let before = hook.seen().len();
    let first = alice
        .api
        .send(&text_to(direct.clone(), "allow", Some("c-1")))
        .await
        .unwrap();
    let again = alice
        .api
        .send(&text_to(direct, "allow", Some("c-1")))
        .await
        .unwrap();
    assert!(again.duplicate && again.message_id == first.message_id);
    assert_eq!(
        hook.seen().len(),
        before + 1,
        "the retry did not call the hook"
    );
}

#[tokio::test]
async fn before_send_fails_closed_when_told_to() {
    let hook = moderator().await;
    let server = before_send_server(&hook, "reject").await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let g = post(
        &alice.api,
        "/v1/groups",
        json!({"name": "g", "members": [bob.id], "join_policy": "invite"}),
    )
    .await;
    let group = Recipient::Group(g["group_id"].as_str().unwrap().parse().unwrap());
    let mut ws = alice.api.connect_ws(None).await.unwrap();
    for to in [Recipient::User(bob.id.clone()), group] {
        for text in ["slow", "broken"] {
            let (status, v) = call(
                &alice.api,
                Method::POST,
                "/v1/messages",
                Some(serde_json::to_value(text_to(to.clone(), text, None)).unwrap()),
            )
            .await;
            assert_eq!(
                (status, v["error"]["code"].as_str()),
                (403, Some("rejected")),
                "{text}: {v}"
            );
            assert!(
                ws.send(text_to(to.clone(), text, None), Some("x"))
                    .await
                    .is_err(),
                "{text} over WebSocket"
            );
        }
        assert!(alice.api.send(&text_to(to, "allow", None)).await.is_ok());
    }
    assert_eq!(inbox_texts(&bob.api).await, ["allow", "allow"]);
}
