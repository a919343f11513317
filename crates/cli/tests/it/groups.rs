//! Groups against the real server: fan-out to every member live and by
//! sync with gap-free seqs, mutes, removal, roles, read counts, the member
//! limit, and the admin API. Users of large groups are imported and given
//! minted tokens through the admin API instead of registering one by one.
//!
//! `UNIMSG_IT_GROUP_MEMBERS` sets the size of the full-group test (default
//! 200); run it against a release build to measure a 2,000-member fan-out:
//! `UNIMSG_IT_GROUP_MEMBERS=2000 cargo test --release -p unimsg --test it
//! groups::a_full_group -- --nocapture`.

use std::time::Duration;

use tokio::time::Instant;

use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::Method;
use serde_json::{Value, json};
use unimsg_client::proto::api::{Recipient, SendRequest};
use unimsg_client::proto::{Event, EventType, GroupId, Seq, UserId};
use unimsg_client::{Authed, WsConnection};

use crate::harness::TestServer;
use crate::support::*;

/// Imports users `{prefix}0000`, `{prefix}0001`… and returns their ids.
async fn import(admin: &AdminApi, prefix: &str, count: usize) -> Vec<UserId> {
    let ids: Vec<String> = (0..count).map(|i| format!("{prefix}{i:04}")).collect();
    for chunk in ids.chunks(10_000) {
        let users: Vec<Value> = chunk
            .iter()
            .map(|id| json!({"user_id": id, "display_name": id.to_uppercase()}))
            .collect();
        let (status, v) = admin
            .call(
                Method::POST,
                "/v1/admin/users",
                Some(json!({ "users": users })),
            )
            .await;
        assert_eq!(
            (status.as_u16(), v["imported"].as_u64()),
            (200, Some(chunk.len() as u64)),
            "{v}"
        );
    }
    ids.iter()
        .map(|id| UserId::parse(id.as_str()).unwrap())
        .collect()
}

/// A minted access token for each user, as an API handle.
async fn mint_all(admin: &AdminApi, server: &TestServer, ids: &[UserId]) -> Vec<Authed> {
    let client = server.client();
    stream::iter(ids.iter().cloned())
        .map(|id| {
            let client = client.clone();
            async move {
                let (status, v) = admin
                    .call(
                        Method::POST,
                        &format!("/v1/admin/users/{id}/tokens"),
                        Some(json!({"platform": "web"})),
                    )
                    .await;
                assert_eq!(status, 200, "{v}");
                let token = v["access_token"].as_str().unwrap_or_default().to_owned();
                Ok::<_, String>(client.with_token(token))
            }
        })
        .buffered(32)
        .try_collect()
        .await
        .unwrap()
}

async fn say(api: &Authed, group: &str, text: &str, cmid: Option<&str>) -> (u16, Value) {
    let mut body = json!({"to": {"group": group}, "content": {"text": text}});
    if let Some(cmid) = cmid {
        body["client_msg_id"] = json!(cmid);
    }
    call(api, Method::POST, "/v1/messages", Some(body)).await
}

/// Creates a group as `owner` with `members`; returns its id.
async fn create(owner: &Authed, name: &str, members: &[&UserId], policy: &str) -> String {
    let (status, v) = call(
        owner,
        Method::POST,
        "/v1/groups",
        Some(json!({"name": name, "members": members, "join_policy": policy})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["role"], "owner", "{v}");
    v["group_id"].as_str().unwrap_or_default().to_owned()
}

/// The next event of a kind on a WebSocket, skipping others.
async fn next_of(ws: &mut WsConnection, kind: EventType) -> Event {
    loop {
        let e = ws_event(ws).await;
        if e.kind == kind {
            return e;
        }
    }
}

fn of_kind(events: &[Event], kind: EventType) -> Vec<&Event> {
    events.iter().filter(|e| e.kind == kind).collect()
}

#[tokio::test]
async fn a_group_of_50_gets_each_message_live_or_by_sync_with_its_own_seq() {
    let server = TestServer::start().await;
    let admin = AdminApi::root(&server);
    let ids = import(&admin, "m", 50).await;
    let apis = mint_all(&admin, &server, &ids).await;
    // Different inbox lengths before the group: every member's seq differs.
    for (i, to) in ids.iter().enumerate().skip(2).take(10) {
        for n in 0..i {
            apis[1]
                .send_text(to, &format!("warm-up {n}"), None)
                .await
                .unwrap();
        }
    }
    let members: Vec<&UserId> = ids.iter().skip(1).collect();
    let group = create(&apis[0], "Fifty", &members, "invite").await;

    // Half of the members are online; the rest catch up by sync.
    let mut live = Vec::new();
    for api in apis.iter().take(25) {
        live.push(api.connect_ws(None).await.unwrap());
    }
    let (status, sent) = say(&apis[0], &group, "hello fifty", Some("hello-1")).await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["conversation_id"], format!("g:{group}"));
    let message = sent["message_id"].as_str().unwrap_or_default().to_owned();
    // The same send again is the same message.
    let (_, again) = say(&apis[0], &group, "hello fifty", Some("hello-1")).await;
    assert_eq!(
        (again["message_id"].as_str(), again["duplicate"].as_bool()),
        (Some(message.as_str()), Some(true))
    );
    assert_eq!(again["seq"], sent["seq"]);

    let mut live_seqs = Vec::new();
    for ws in &mut live {
        let e = next_of(ws, EventType::MessageNew).await;
        assert_eq!(message_id(&e), message);
        assert_eq!(e.data["to"]["group"], group.as_str());
        assert_eq!(text(&e), "hello fifty");
        live_seqs.push(e.seq);
    }
    for (i, api) in apis.iter().enumerate() {
        let events = full_sync(api).await;
        assert_gap_free(&events);
        let news = of_kind(&events, EventType::MessageNew);
        let last = news
            .last()
            .unwrap_or_else(|| panic!("member {i} got nothing"));
        assert_eq!(message_id(last), message, "member {i}");
        // Its own position: right after the member's earlier events.
        assert_eq!(last.seq, Seq(events.len() as u64), "member {i}");
        if i < 25 {
            assert_eq!(live_seqs[i], last.seq, "member {i}: live and sync agree");
        }
        let changed = of_kind(&events, EventType::GroupChanged);
        assert_eq!(changed.len(), 1, "member {i}");
        assert_eq!(changed[0].data["action"], "created");
        assert_eq!(changed[0].data["group"]["member_count"], 50);
    }
    assert!(
        live_seqs.windows(2).any(|w| w[0] != w[1]),
        "the members' seqs should differ: {live_seqs:?}"
    );

    // A WebSocket `send` frame to the group works too.
    let req = SendRequest {
        to: Recipient::Group(GroupId::parse(group.as_str()).unwrap()),
        kind: unimsg_client::proto::api::MessageKind::Chat,
        content: json!({"text": "over the socket"}),
        client_msg_id: None,
    };
    let reply = live[7].send(req, None).await.unwrap();
    for ws in &mut live {
        let e = next_of(ws, EventType::MessageNew).await;
        assert_eq!(
            e.data["message_id"].as_str(),
            Some(reply.message_id.as_str())
        );
        assert_eq!(e.data["from"], ids[7].as_str());
    }

    // History and the conversation list of a member who was offline.
    let conv = format!("g:{group}");
    let history = apis[40]
        .history(&conv.parse().unwrap(), None, None)
        .await
        .unwrap();
    assert_eq!(history.messages.len(), 2);
    let list = apis[40].conversations().await.unwrap();
    let summary = list
        .conversations
        .iter()
        .find(|c| c.conversation_id.as_str() == conv)
        .unwrap_or_else(|| panic!("no group conversation in {list:?}"));
    assert_eq!(summary.group_name.as_deref(), Some("Fifty"));
    assert_eq!((summary.peer.as_ref(), summary.unread), (None, 2));
}

#[tokio::test]
async fn mutes_removal_and_roles_are_enforced() {
    let server = TestServer::start().await;
    let admin = AdminApi::root(&server);
    let ids = import(&admin, "r", 6).await;
    let apis = mint_all(&admin, &server, &ids).await;
    let (owner, a, b, c, d, outsider) =
        (&apis[0], &apis[1], &apis[2], &apis[3], &apis[4], &apis[5]);
    let group = create(
        owner,
        "Rules",
        &[&ids[1], &ids[2], &ids[3], &ids[4]],
        "invite",
    )
    .await;
    let g = format!("/v1/groups/{group}");

    // Outsiders neither send nor see an invitation-only group.
    assert_eq!(say(outsider, &group, "let me in", None).await.0, 403);
    assert_eq!(call(outsider, Method::GET, &g, None).await.0, 404);
    assert_eq!(
        call(outsider, Method::POST, &format!("{g}/join"), None)
            .await
            .0,
        403
    );
    assert_eq!(say(a, "g_no_such_group", "?", None).await.0, 404);

    // A muted member is refused until the mute is lifted.
    let until = "2999-01-01T00:00:00Z";
    let (status, v) = call(
        owner,
        Method::PUT,
        &format!("{g}/members/{}", ids[1]),
        Some(json!({"muted_until": until})),
    )
    .await;
    assert_eq!(
        (status, v["muted_until"].as_str()),
        (200, Some(until)),
        "{v}"
    );
    let (status, v) = say(a, &group, "am I muted?", None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    let (status, v) = call(
        owner,
        Method::PUT,
        &format!("{g}/members/{}", ids[1]),
        Some(json!({"muted_until": null})),
    )
    .await;
    assert_eq!((status, v.get("muted_until")), (200, None), "{v}");
    assert_eq!(say(a, &group, "free again", None).await.0, 200);

    // Roles: only the owner names admins; members remove nobody; admins
    // remove ordinary members but not the owner or other admins.
    assert_eq!(
        call(
            a,
            Method::PUT,
            &format!("{g}/members/{}", ids[2]),
            Some(json!({"role": "admin"}))
        )
        .await
        .0,
        403
    );
    let (status, v) = call(
        owner,
        Method::PUT,
        &format!("{g}/members/{}", ids[3]),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!((status, v["role"].as_str()), (200, Some("admin")), "{v}");
    assert_eq!(
        call(
            owner,
            Method::PUT,
            &format!("{g}/members/{}", ids[1]),
            Some(json!({"role": "owner"}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(b, Method::DELETE, &format!("{g}/members/{}", ids[0]), None)
            .await
            .0,
        403,
        "a member removed the owner"
    );
    assert_eq!(
        call(b, Method::DELETE, &format!("{g}/members/{}", ids[1]), None)
            .await
            .0,
        403
    );
    assert_eq!(
        call(c, Method::DELETE, &format!("{g}/members/{}", ids[0]), None)
            .await
            .0,
        403
    );
    assert_eq!(
        call(
            c,
            Method::PUT,
            &format!("{g}/members/{}", ids[1]),
            Some(json!({"role": "admin"}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(b, Method::PATCH, &g, Some(json!({"name": "Mine now"})))
            .await
            .0,
        403
    );
    assert_eq!(
        call(
            b,
            Method::POST,
            &format!("{g}/members"),
            Some(json!({"user_ids": [ids[5]]}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(
            owner,
            Method::DELETE,
            &format!("{g}/members/{}", ids[0]),
            None
        )
        .await
        .0,
        403,
        "the owner left"
    );

    // Muting the whole group silences ordinary members only.
    let (status, v) = call(
        c,
        Method::POST,
        &format!("{g}/mute"),
        Some(json!({"all_muted": true})),
    )
    .await;
    assert_eq!((status, v["all_muted"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(say(b, &group, "quiet?", None).await.0, 403);
    assert_eq!(say(c, &group, "admins speak", None).await.0, 200);
    assert_eq!(say(owner, &group, "owners speak", None).await.0, 200);
    assert_eq!(
        call(
            owner,
            Method::POST,
            &format!("{g}/mute"),
            Some(json!({"all_muted": false}))
        )
        .await
        .0,
        200
    );
    assert_eq!(say(b, &group, "back", None).await.0, 200);

    // The admin removes an ordinary member, who hears of it and then
    // receives nothing more from the group.
    let mut b_ws = b
        .connect_ws(Some(Seq(full_sync(b).await.len() as u64)))
        .await
        .unwrap();
    assert_eq!(
        call(c, Method::DELETE, &format!("{g}/members/{}", ids[2]), None)
            .await
            .0,
        204
    );
    let e = next_of(&mut b_ws, EventType::GroupChanged).await;
    assert_eq!(
        (e.data["action"].as_str(), e.data["user_ids"][0].as_str()),
        (Some("members_removed"), Some(ids[2].as_str()))
    );
    assert_eq!(e.data["actor"], ids[3].as_str());
    let before = full_sync(b).await;
    let (status, after_removal) = say(owner, &group, "b is gone", None).await;
    assert_eq!(status, 200);
    let mut a_events = full_sync(a).await;
    assert_eq!(
        message_id(a_events.pop().as_ref().expect("a got nothing")),
        after_removal["message_id"].as_str().unwrap_or_default()
    );
    assert_eq!(
        full_sync(b).await.len(),
        before.len(),
        "a removed member received a group message"
    );
    assert_eq!(say(b, &group, "still here?", None).await.0, 403);
    let conv = format!("/v1/conversations/g:{group}/messages");
    assert_eq!(call(b, Method::GET, &conv, None).await.0, 404);
    assert_eq!(call(a, Method::GET, &conv, None).await.0, 200);

    // Leaving.
    assert_eq!(
        call(d, Method::DELETE, &format!("{g}/members/{}", ids[4]), None)
            .await
            .0,
        204
    );
    let left = full_sync(d).await;
    let last = left.last().expect("d got nothing");
    assert_eq!(
        (last.kind, last.data["action"].as_str()),
        (EventType::GroupChanged, Some("member_left"))
    );

    // The owner renames; members hear of it.
    let (status, v) = call(
        owner,
        Method::PATCH,
        &g,
        Some(json!({"name": "Renamed", "notice": "Be kind"})),
    )
    .await;
    assert_eq!(
        (status, v["name"].as_str(), v["notice"].as_str()),
        (200, Some("Renamed"), Some("Be kind")),
        "{v}"
    );
    a_events = full_sync(a).await;
    let last = a_events.last().expect("a got nothing");
    assert_eq!(
        (
            last.data["action"].as_str(),
            last.data["group"]["name"].as_str()
        ),
        (Some("updated"), Some("Renamed"))
    );

    // Ownership moves; the old owner is an ordinary member and cannot dissolve.
    let (status, v) = call(
        owner,
        Method::POST,
        &format!("{g}/transfer"),
        Some(json!({"user_id": ids[3]})),
    )
    .await;
    assert_eq!(
        (status, v["owner"].as_str(), v["role"].as_str()),
        (200, Some(ids[3].as_str()), Some("member")),
        "{v}"
    );
    assert_eq!(call(owner, Method::DELETE, &g, None).await.0, 403);
    let (status, detail) = call(a, Method::GET, &g, None).await;
    assert_eq!(status, 200);
    let roles: Vec<(String, String)> = detail["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["user_id"].as_str().unwrap_or_default().to_owned(),
                m["role"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        vec![
            (ids[0].to_string(), "member".into()),
            (ids[1].to_string(), "member".into()),
            (ids[3].to_string(), "owner".into())
        ]
    );

    // Open groups take anyone; the new owner dissolves and everyone hears.
    assert_eq!(
        call(c, Method::PATCH, &g, Some(json!({"join_policy": "open"})))
            .await
            .0,
        200
    );
    let (status, v) = call(outsider, Method::POST, &format!("{g}/join"), None).await;
    assert_eq!(
        (status, v["role"].as_str(), v["member_count"].as_u64()),
        (200, Some("member"), Some(4)),
        "{v}"
    );
    let (status, mine) = call(outsider, Method::GET, "/v1/groups", None).await;
    assert_eq!(
        (status, mine["groups"][0]["group_id"].as_str()),
        (200, Some(group.as_str()))
    );
    assert_eq!(call(c, Method::DELETE, &g, None).await.0, 204);
    for api in [owner, a, c, outsider] {
        let events = full_sync(api).await;
        let last = events.last().expect("nothing");
        assert_eq!(last.data["action"], "dissolved");
    }
    assert_eq!(call(a, Method::GET, &g, None).await.0, 404);
    assert_eq!(say(c, &group, "anyone?", None).await.0, 404);
    let (_, mine) = call(a, Method::GET, "/v1/groups", None).await;
    assert_eq!(mine["groups"], json!([]));
}

#[tokio::test]
async fn the_sender_sees_how_many_members_read_a_message() {
    let server = TestServer::start().await;
    let admin = AdminApi::root(&server);
    let ids = import(&admin, "c", 7).await;
    let apis = mint_all(&admin, &server, &ids).await;
    let members: Vec<&UserId> = ids.iter().skip(1).take(5).collect();
    let group = create(&apis[0], "Readers", &members, "invite").await;
    let (_, sent) = say(&apis[0], &group, "please read", None).await;
    let message = sent["message_id"].as_str().unwrap_or_default().to_owned();
    let reads = format!("/v1/conversations/g:{group}/messages/{message}/reads");
    let (status, v) = call(&apis[0], Method::GET, &reads, None).await;
    assert_eq!(
        (status, v["read"].as_u64(), v["members"].as_u64()),
        (200, Some(0), Some(5)),
        "{v}"
    );

    let conv = format!("/v1/conversations/g:{group}/read");
    for api in &apis[1..4] {
        let (status, v) = call(
            api,
            Method::POST,
            &conv,
            Some(json!({"message_id": message})),
        )
        .await;
        assert_eq!((status, v["read_upto"].as_u64()), (200, Some(1)), "{v}");
    }
    // Reading twice counts once.
    assert_eq!(
        call(
            &apis[1],
            Method::POST,
            &conv,
            Some(json!({"message_id": message}))
        )
        .await
        .0,
        200
    );
    let (status, v) = call(&apis[0], Method::GET, &reads, None).await;
    assert_eq!(
        (status, v["read"].as_u64(), v["members"].as_u64()),
        (200, Some(3), Some(5)),
        "{v}"
    );

    // A reader's own inbox records the receipt (for their other devices);
    // the sender's inbox does not grow with each reader.
    let reader = full_sync(&apis[1]).await;
    assert_eq!(reader.last().map(|e| e.kind), Some(EventType::ReceiptRead));
    let sender = full_sync(&apis[0]).await;
    assert!(of_kind(&sender, EventType::ReceiptRead).is_empty());
    // Unread counts follow the positions.
    let list = apis[4].conversations().await.unwrap();
    assert_eq!(list.conversations.iter().map(|c| c.unread).sum::<u64>(), 1);
    let list = apis[2].conversations().await.unwrap();
    assert_eq!(list.conversations.iter().map(|c| c.unread).sum::<u64>(), 0);

    // Only the sender asks; non-members see nothing; a member who joins
    // later neither received the message nor counts for it.
    assert_eq!(call(&apis[1], Method::GET, &reads, None).await.0, 403);
    assert_eq!(call(&apis[6], Method::GET, &reads, None).await.0, 404);
    let (status, _) = call(
        &apis[0],
        Method::POST,
        &format!("/v1/groups/{group}/members"),
        Some(json!({"user_ids": [ids[6]]})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, v) = call(&apis[0], Method::GET, &reads, None).await;
    assert_eq!(
        (v["read"].as_u64(), v["members"].as_u64()),
        (Some(3), Some(5)),
        "{v}"
    );
    let late = format!("/v1/conversations/g:{group}/messages");
    let (status, v) = call(&apis[6], Method::GET, &late, None).await;
    assert_eq!(
        (status, v["messages"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );

    // The same works for a direct message.
    let (_, direct) = call(
        &apis[0],
        Method::POST,
        "/v1/messages",
        Some(json!({"to": {"user": ids[1]}, "content": {"text": "psst"}})),
    )
    .await;
    let d = format!(
        "/v1/conversations/{}",
        direct["conversation_id"].as_str().unwrap_or_default()
    );
    let dm = direct["message_id"].as_str().unwrap_or_default();
    let (_, v) = call(
        &apis[0],
        Method::GET,
        &format!("{d}/messages/{dm}/reads"),
        None,
    )
    .await;
    assert_eq!(
        (v["read"].as_u64(), v["members"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    call(
        &apis[1],
        Method::POST,
        &format!("{d}/read"),
        Some(json!({"message_id": dm})),
    )
    .await;
    let (_, v) = call(
        &apis[0],
        Method::GET,
        &format!("{d}/messages/{dm}/reads"),
        None,
    )
    .await;
    assert_eq!(v["read"].as_u64(), Some(1), "{v}");
}

/// The size of the full-group test: `UNIMSG_IT_GROUP_MEMBERS` or 200.
fn full_group_size() -> usize {
    std::env::var("UNIMSG_IT_GROUP_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

#[tokio::test]
async fn a_full_group_fans_out_completely_and_refuses_one_more() {
    let size = full_group_size();
    let max = size.to_string();
    let server = TestServer::start_with(&[
        ("UNIMSG_GROUPS__MAX_MEMBERS", max.as_str()),
        ("UNIMSG_LIMITS__ADMIN_PER_SECOND", "100000"),
        ("UNIMSG_LOG__LEVEL", "info"),
    ])
    .await;
    let admin = AdminApi::root(&server);
    let ids = import(&admin, "f", size + 1).await;
    let apis = mint_all(&admin, &server, &ids).await;

    // A business system creates the group at its limit.
    let (status, v) = admin
        .call(
            Method::POST,
            "/v1/admin/groups",
            Some(json!({"group_id": "team-full", "name": "Full", "owner": ids[0], "members": &ids[1..size]})),
        )
        .await;
    assert_eq!(
        (status.as_u16(), v["group"]["member_count"].as_u64()),
        (201, Some(size as u64)),
        "{v}"
    );
    assert_eq!(v["members"].as_array().map(Vec::len), Some(size));
    assert_eq!(
        admin
            .call(
                Method::POST,
                "/v1/admin/groups",
                Some(json!({"group_id": "team-full", "name": "Again", "owner": ids[0]}))
            )
            .await
            .0,
        409
    );
    // One more is refused, however it comes.
    let extra = &ids[size];
    let (status, v) = call(
        &apis[0],
        Method::POST,
        "/v1/groups/team-full/members",
        Some(json!({"user_ids": [extra]})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    assert_eq!(
        admin
            .call(
                Method::POST,
                "/v1/admin/groups/team-full/members",
                Some(json!({"user_ids": [extra]}))
            )
            .await
            .0,
        409
    );
    let too_many: Vec<&UserId> = ids.iter().skip(1).collect();
    assert_eq!(
        call(
            &apis[0],
            Method::POST,
            "/v1/groups",
            Some(json!({"name": "Too big", "members": too_many}))
        )
        .await
        .0,
        409
    );

    // Every member online; one message reaches all of them.
    let mut sockets = Vec::with_capacity(size);
    for api in &apis[..size] {
        sockets.push(api.connect_ws(None).await.unwrap());
    }
    let started = Instant::now();
    let (status, sent) = say(&apis[1], "team-full", "to everyone", None).await;
    let committed = started.elapsed();
    assert_eq!(status, 200, "{sent}");
    let message = sent["message_id"].as_str().unwrap_or_default().to_owned();
    let arrivals: Vec<(Seq, Duration)> = stream::iter(sockets.iter_mut())
        .map(|ws| async move {
            let e = next_of(ws, EventType::MessageNew).await;
            (e.seq, started.elapsed(), message_id(&e))
        })
        .buffer_unordered(size)
        .map(|(seq, at, id)| {
            assert_eq!(id, message);
            (seq, at)
        })
        .collect()
        .await;
    let last = arrivals.iter().map(|(_, at)| *at).max().unwrap_or_default();
    eprintln!(
        "group fan-out to {size} members: send answered (durable) after {committed:?}, \
         delivered live to all {} after {last:?}",
        arrivals.len()
    );
    assert_eq!(arrivals.len(), size);
    // By sync too: exactly one copy per member, gap-free.
    let checks: Vec<usize> = stream::iter(apis[..size].iter())
        .map(|api| {
            let message = &message;
            async move {
                let events = full_sync(api).await;
                assert_gap_free(&events);
                of_kind(&events, EventType::MessageNew)
                    .iter()
                    .filter(|e| message_id(e) == *message)
                    .count()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(checks.iter().all(|n| *n == 1), "{checks:?}");
    assert!(of_kind(&full_sync(&apis[size]).await, EventType::MessageNew).is_empty());

    // Notifications to the group reach each member's system conversation.
    let (status, v) = admin
        .call(
            Method::POST,
            "/v1/admin/messages",
            Some(json!({"to": {"group": "team-full"}, "content": {"title": "Hi all"}})),
        )
        .await;
    assert_eq!(
        (status.as_u16(), v["recipients"].as_u64()),
        (200, Some(size as u64)),
        "{v}"
    );
    let e = next_of(&mut sockets[size - 1], EventType::NotificationNew).await;
    assert_eq!(e.data["content"]["title"], "Hi all");
    assert_eq!(
        admin
            .call(
                Method::POST,
                "/v1/admin/messages",
                Some(json!({"to": {"group": "nope"}, "content": {}}))
            )
            .await
            .0,
        404
    );

    // The admin API manages members and dissolves.
    let (status, v) = admin
        .call(Method::GET, "/v1/admin/groups/team-full", None)
        .await;
    assert_eq!(
        (status.as_u16(), v["group"]["owner"].as_str()),
        (200, Some(ids[0].as_str())),
        "{v}"
    );
    assert_eq!(
        admin
            .call(
                Method::DELETE,
                &format!("/v1/admin/groups/team-full/members/{}", ids[0]),
                None
            )
            .await
            .0,
        403
    );
    assert_eq!(
        admin
            .call(
                Method::DELETE,
                &format!("/v1/admin/groups/team-full/members/{}", ids[2]),
                None
            )
            .await
            .0,
        204
    );
    let e = next_of(&mut sockets[2], EventType::GroupChanged).await;
    assert_eq!(
        (e.data["action"].as_str(), e.data["admin"].as_str()),
        (Some("members_removed"), Some("admin"))
    );
    let (status, v) = admin
        .call(
            Method::POST,
            "/v1/admin/groups/team-full/members",
            Some(json!({"user_ids": [extra]})),
        )
        .await;
    assert_eq!(
        (status.as_u16(), v["member_count"].as_u64()),
        (200, Some(size as u64)),
        "{v}"
    );
    assert_eq!(
        admin
            .call(Method::DELETE, "/v1/admin/groups/team-full", None)
            .await
            .0,
        204
    );
    for action in ["members_removed", "members_added"] {
        let e = next_of(&mut sockets[0], EventType::GroupChanged).await;
        assert_eq!(e.data["action"], action);
    }
    let e = next_of(&mut sockets[0], EventType::GroupChanged).await;
    assert_eq!(e.data["action"], "dissolved");
    assert_eq!(
        admin
            .call(Method::GET, "/v1/admin/groups/team-full", None)
            .await
            .0,
        404
    );
}
