//! Relationships: friend requests live and by sync, the friend list,
//! removal, tags, blocks, friends-only messaging, and the admin batch API.

use reqwest::Method;
use serde_json::{Value, json};
use unimsg_client::proto::EventType;

use crate::harness::{ADMIN_PASSWORD, TestServer};
use crate::support::*;

#[tokio::test]
async fn a_request_and_accept_reach_both_sides_live_and_by_sync() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let mut alice_ws = alice.api.connect_ws(None).await.unwrap();
    let mut bob_ws = bob.api.connect_ws(None).await.unwrap();

    let (status, v) = call(
        &alice.api,
        Method::POST,
        "/v1/friends/requests",
        Some(json!({"to": bob.id, "message": "hi, it's Alice"})),
    )
    .await;
    assert_eq!((status, v["state"].as_str()), (200, Some("pending")));
    for ws in [&mut alice_ws, &mut bob_ws] {
        let e = ws_event(ws).await;
        assert_eq!(
            (e.kind, e.data["from"].as_str(), e.data["message"].as_str()),
            (
                EventType::FriendRequest,
                Some(alice.id.as_str()),
                Some("hi, it's Alice")
            )
        );
    }
    let (_, incoming) = call(&bob.api, Method::GET, "/v1/friends/requests", None).await;
    assert_eq!(incoming["requests"][0]["from"], alice.id.as_str());
    let (_, outgoing) = call(
        &alice.api,
        Method::GET,
        "/v1/friends/requests?direction=outgoing",
        None,
    )
    .await;
    assert_eq!(outgoing["requests"][0]["to"], bob.id.as_str());

    let (status, _) = call(
        &bob.api,
        Method::POST,
        &format!("/v1/friends/requests/{}/accept", alice.id),
        None,
    )
    .await;
    assert_eq!(status, 204);
    for ws in [&mut alice_ws, &mut bob_ws] {
        let e = ws_event(ws).await;
        assert_eq!(
            (e.kind, e.data["state"].as_str()),
            (EventType::FriendChanged, Some("friends"))
        );
    }
    for (me, other) in [(&alice, &bob), (&bob, &alice)] {
        let (_, list) = call(&me.api, Method::GET, "/v1/friends", None).await;
        assert_eq!(list["friends"].as_array().map(Vec::len), Some(1));
        assert_eq!(list["friends"][0]["user_id"], other.id.as_str());
        assert_eq!(list["friends"][0]["display_name"], other.username.as_str());
        let kinds: Vec<EventType> = full_sync(&me.api).await.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![EventType::FriendRequest, EventType::FriendChanged],
            "by sync too"
        );
    }

    // Tags and a remark are private to their side.
    let (status, tagged) = call(
        &alice.api,
        Method::PUT,
        &format!("/v1/friends/{}", bob.id),
        Some(json!({"tags": ["work"], "remark": "Bob (ops)"})),
    )
    .await;
    assert_eq!(
        (status, tagged["remark"].as_str()),
        (200, Some("Bob (ops)"))
    );
    let (_, bobs) = call(&bob.api, Method::GET, "/v1/friends", None).await;
    assert_eq!(bobs["friends"][0]["tags"], json!([]));

    // Deleting removes both sides.
    let (status, _) = call(
        &bob.api,
        Method::DELETE,
        &format!("/v1/friends/{}", alice.id),
        None,
    )
    .await;
    assert_eq!(status, 204);
    for me in [&alice, &bob] {
        let (_, list) = call(&me.api, Method::GET, "/v1/friends", None).await;
        assert_eq!(list["friends"], json!([]));
    }
    let (status, _) = call(
        &bob.api,
        Method::DELETE,
        &format!("/v1/friends/{}", alice.id),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_block_refuses_messages_and_requests_and_unblock_restores_them() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let mallory = user(&client, "mallory").await;
    mallory
        .api
        .send_text(&alice.id, "before", None)
        .await
        .unwrap();
    let (status, _) = call(
        &alice.api,
        Method::POST,
        &format!("/v1/blocks/{}", mallory.id),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let before = full_sync(&alice.api).await;
    assert_eq!(before.last().map(|e| e.kind), Some(EventType::BlockChanged));

    let err = mallory
        .api
        .send_text(&alice.id, "after", None)
        .await
        .expect_err("sent while blocked");
    assert_eq!(err.status(), Some(403));
    assert!(
        !format!("{err}").contains("block"),
        "the refusal does not say why: {err}"
    );
    let (status, _) = call(
        &mallory.api,
        Method::POST,
        "/v1/friends/requests",
        Some(json!({"to": alice.id})),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        full_sync(&alice.api).await,
        before,
        "the blocker's inbox is unchanged"
    );
    assert!(
        full_sync(&mallory.api)
            .await
            .iter()
            .all(|e| e.kind != EventType::BlockChanged),
        "the blocked user is not told"
    );
    // The blocker can still write.
    alice
        .api
        .send_text(&mallory.id, "I can", None)
        .await
        .unwrap();
    let (_, blocks) = call(&alice.api, Method::GET, "/v1/blocks", None).await;
    assert_eq!(blocks["blocks"][0]["user_id"], mallory.id.as_str());

    let (status, _) = call(
        &alice.api,
        Method::DELETE,
        &format!("/v1/blocks/{}", mallory.id),
        None,
    )
    .await;
    assert_eq!(status, 204);
    mallory
        .api
        .send_text(&alice.id, "again", None)
        .await
        .expect("unblocked");
}

#[tokio::test]
async fn with_require_friendship_strangers_cannot_message() {
    let server = TestServer::start_with(&[("UNIMSG_MESSAGING__REQUIRE_FRIENDSHIP", "true")]).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let err = alice
        .api
        .send_text(&bob.id, "hello stranger", None)
        .await
        .expect_err("sent");
    assert_eq!(err.status(), Some(403));
    call(
        &alice.api,
        Method::POST,
        "/v1/friends/requests",
        Some(json!({"to": bob.id})),
    )
    .await;
    // Bob asking back meets Alice's request: friends at once.
    let (_, v) = call(
        &bob.api,
        Method::POST,
        "/v1/friends/requests",
        Some(json!({"to": alice.id})),
    )
    .await;
    assert_eq!(v["state"], "friends");
    alice
        .api
        .send_text(&bob.id, "hello friend", None)
        .await
        .unwrap();
}

#[tokio::test]
async fn admin_batch_query_of_a_thousand_users_and_batch_update() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let admin = |m: Method, path: &str| {
        http.request(m, format!("{}{path}", server.base))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
    };
    let users: Vec<Value> = (0..1000)
        .map(|i| json!({"user_id": format!("r{i}"), "display_name": format!("R{i}")}))
        .collect();
    let r = admin(Method::POST, "/v1/admin/users")
        .json(&json!({"users": users}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ops = json!({"ops": [
        {"user_id": "r0", "other_id": "r1", "op": "friend"},
        {"user_id": "r0", "other_id": "r2", "op": "friend"},
        {"user_id": "r2", "other_id": "r0", "op": "block"},
        {"user_id": "r0", "other_id": "nobody", "op": "friend"},
        {"user_id": "r0", "other_id": "r3", "op": "hug"}
    ]});
    let v: Value = admin(Method::PUT, "/v1/admin/relationships")
        .json(&ops)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_default();
    let oks: Vec<bool> = v["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|x| x["ok"].as_bool().unwrap_or(false))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(oks, vec![true, true, true, false, false]);

    let ids: Vec<String> = (0..1000).map(|i| format!("r{i}")).collect();
    let v: Value = admin(
        Method::GET,
        &format!("/v1/admin/relationships?user_ids={}", ids.join(",")),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap_or_default();
    let users = v["users"].as_array().cloned().unwrap_or_default();
    assert_eq!(users.len(), 1000);
    assert_eq!(
        users[0],
        json!({"user_id": "r0", "friends": ["r1", "r2"], "blocks": []})
    );
    assert_eq!(
        users[2],
        json!({"user_id": "r2", "friends": ["r0"], "blocks": ["r0"]})
    );
    assert_eq!(
        users[999],
        json!({"user_id": "r999", "friends": [], "blocks": []})
    );
}
