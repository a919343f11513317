//! Cluster mode: real PostgreSQL and Redis servers (started by
//! `unimsg-testkit` in temporary directories on loopback) and two or three
//! `unimsg` nodes sharing them.

use std::collections::HashSet;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use unimsg_client::proto::{EventType, Seq};
use unimsg_client::text_message;
use unimsg_testkit::{Postgres, Redis};

use crate::harness::{ADMIN_PASSWORD, TestServer};
use crate::support::*;

/// The master key every node of a test cluster shares.
const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct TestCluster {
    pg: Postgres,
    redis: Redis,
    nodes: Vec<TestServer>,
    /// With TLS links: the CA file the nodes verify both servers with.
    tls: Option<(std::path::PathBuf, tempfile::TempDir)>,
}

impl TestCluster {
    async fn start(nodes: usize, extra: &[(&str, &str)]) -> Self {
        Self::started(Postgres::start(), Redis::start(), None, nodes, extra).await
    }

    /// A cluster whose nodes reach PostgreSQL and Redis over TLS only
    /// (`sslmode=verify-full`, `rediss://`), both certificates signed by
    /// a CA of the test's own.
    async fn start_tls(nodes: usize, extra: &[(&str, &str)]) -> Self {
        let ca = crate::tls::TestCa::new("cluster");
        let (cert, key) = ca.server_pem();
        let pg = Postgres::start_tls(&cert, &key);
        let redis = Redis::start_tls(&cert, &key, &String::from_utf8(ca.pem()).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Self::started(pg, redis, Some((ca_file, dir)), nodes, extra).await
    }

    async fn started(
        pg: Postgres,
        redis: Redis,
        tls: Option<(std::path::PathBuf, tempfile::TempDir)>,
        nodes: usize,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut cluster = TestCluster {
            pg,
            redis,
            nodes: Vec::new(),
            tls,
        };
        for i in 0..nodes {
            let node = cluster.node(&format!("node-{i}"), extra).await;
            cluster.nodes.push(node);
        }
        cluster
    }

    /// The environment of a node on the shared PostgreSQL and Redis.
    fn env(&self, id: &str) -> Vec<(String, String)> {
        let mut store = self.pg.url("postgres");
        let mut env = vec![("UNIMSG_BUS__URL".to_owned(), self.redis.url())];
        if let Some((ca, _)) = &self.tls {
            store.push_str(&format!(
                "?sslmode=verify-full&sslrootcert={}",
                ca.display()
            ));
            env.push(("UNIMSG_BUS__CA_CERT".into(), ca.display().to_string()));
        }
        env.extend([
            ("UNIMSG_STORE__URL".to_owned(), store),
            ("UNIMSG_BUS__NODE_ID".to_owned(), id.to_owned()),
            ("UNIMSG_MASTER_KEY".to_owned(), MASTER_KEY.to_owned()),
        ]);
        env
    }

    /// Starts one more node on the shared PostgreSQL and Redis.
    async fn node(&self, id: &str, extra: &[(&str, &str)]) -> TestServer {
        let owned = self.env(id);
        let mut env: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.extend_from_slice(extra);
        TestServer::start_with(&env).await
    }
}

#[tokio::test]
async fn a_message_sent_on_one_node_is_live_on_another_and_synced_on_a_third() {
    let c = TestCluster::start(3, &[]).await;
    let (a, b, third) = (
        c.nodes[0].client(),
        c.nodes[1].client(),
        c.nodes[2].client(),
    );
    let alice = user(&a, "alice").await;
    register(&a, "bob").await;
    let bob = login(&b, "bob", "web", None).await;
    let mut ws = bob.api.connect_ws(None).await.unwrap();

    let sent: Vec<String> = (0..20).map(|i| format!("hello {i}")).collect();
    for t in &sent {
        alice
            .api
            .send(&text_message(&bob.id, t, None))
            .await
            .expect("send");
    }
    let mut live = Vec::new();
    while live.len() < sent.len() {
        live.push(ws_event(&mut ws).await);
    }
    assert_eq!(message_texts(&live), sent, "live on node B, in order");
    assert_gap_free(&live);

    let on_third = third.with_token(bob.tokens.access_token.clone());
    let synced = full_sync(&on_third).await;
    assert_gap_free(&synced);
    assert_eq!(message_texts(&synced), sent, "sync on node C");

    // The operator sees node A's round trips to Redis and PostgreSQL.
    within("node A's bus round trips on /metrics", async {
        while counter(
            &c.nodes[0],
            r#"unimsg_bus_duration_seconds_count{call="publish"} "#,
        )
        .await
            == 0
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        counter(
            &c.nodes[0],
            r#"unimsg_store_duration_seconds_count{call="write"} "#
        )
        .await
            > 0
    );
}

#[tokio::test]
async fn nodes_reach_postgres_and_redis_over_verified_tls() {
    let c = TestCluster::start_tls(2, &[]).await;
    let alice = user(&c.nodes[0].client(), "alice").await;
    register(&c.nodes[0].client(), "bob").await;
    let bob = login(&c.nodes[1].client(), "bob", "ios", None).await;
    let mut ws = bob.api.connect_ws(None).await.unwrap();
    alice
        .api
        .send_text(&bob.id, "across nodes, over TLS", None)
        .await
        .unwrap();
    assert_eq!(text(&ws_event(&mut ws).await), "across nodes, over TLS");

    // A node that trusts another CA refuses both servers.
    let stranger = crate::tls::TestCa::new("stranger");
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.pem");
    std::fs::write(&wrong, stranger.pem()).unwrap();
    let mut env = c.env("node-x");
    for (k, v) in env.iter_mut() {
        if k == "UNIMSG_STORE__URL" {
            *v = c.pg.url("postgres")
                + &format!("?sslmode=verify-full&sslrootcert={}", wrong.display());
        }
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let log = TestServer::try_start_with(&env)
        .await
        .err()
        .expect("a node that trusts the wrong CA started");
    assert!(log.contains("cannot open the PostgreSQL store"), "{log}");
}

#[tokio::test]
async fn a_signing_key_rotated_on_one_node_is_used_by_every_node() {
    let c = TestCluster::start(2, &[]).await;
    register(&c.nodes[0].client(), "alice").await;
    let (status, info) = admin(
        &c.nodes[0],
        Method::POST,
        "/v1/admin/keys/signing/rotate",
        None,
    )
    .await;
    assert_eq!(status, 201, "{info}");
    let kid = |token: &str| {
        let header = token.split('.').next().unwrap();
        let header: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .unwrap(),
        )
        .unwrap();
        header["kid"].as_str().unwrap().to_owned()
    };
    // Node 0's token with the new kid works on node 1 at once.
    let on_0 = login(&c.nodes[0].client(), "alice", "web", None).await;
    assert_eq!(
        kid(&on_0.tokens.access_token),
        info["kid"].as_str().unwrap()
    );
    let (status, body) = c.nodes[1]
        .client()
        .raw(
            Method::GET,
            "/v1/sync",
            Some(&on_0.tokens.access_token),
            Vec::new(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    // Node 1 signs with it too.
    let on_1 = login(&c.nodes[1].client(), "alice", "ios", None).await;
    assert_eq!(
        kid(&on_1.tokens.access_token),
        info["kid"].as_str().unwrap()
    );
}

#[tokio::test]
async fn a_deleted_admin_is_refused_with_every_credential_on_every_node() {
    let c = TestCluster::start(2, &[]).await;
    let (status, body) = admin(
        &c.nodes[0],
        Method::POST,
        "/v1/admin/admins",
        Some(json!({"admin_id": "ops", "secret": "ops-first-secret-1", "scopes": ["users:read"]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let http = reqwest::Client::new();
    let basic = |node: &TestServer| {
        http.get(format!("{}/v1/admin/users/nobody", node.base))
            .basic_auth("ops", Some("ops-first-secret-1"))
    };
    let bearer = |node: &TestServer, token: &str| {
        http.get(format!("{}/v1/admin/users/nobody", node.base))
            .bearer_auth(token)
    };
    // Each credential works on node 1 (the secret is remembered there).
    let token: Value = http
        .post(format!("{}/v1/admin/token", c.nodes[0].base))
        .json(&json!({"admin_id": "ops", "secret": "ops-first-secret-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let key: Value = http
        .post(format!("{}/v1/admin/admins/ops/keys", c.nodes[0].base))
        .basic_auth("ops", Some("ops-first-secret-1"))
        .json(&json!({"expires_in": 3600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(basic(&c.nodes[1]).send().await.unwrap()), 404);
    assert_eq!(
        status(bearer(&c.nodes[1], &token).send().await.unwrap()),
        404
    );
    assert_eq!(status(bearer(&c.nodes[1], &key).send().await.unwrap()), 404);

    let (status_code, _) = admin(&c.nodes[0], Method::DELETE, "/v1/admin/admins/ops", None).await;
    assert_eq!(status_code, 204);
    // The next call on the other node refuses all three.
    assert_eq!(status(basic(&c.nodes[1]).send().await.unwrap()), 401);
    assert_eq!(
        status(bearer(&c.nodes[1], &token).send().await.unwrap()),
        401
    );
    assert_eq!(status(bearer(&c.nodes[1], &key).send().await.unwrap()), 401);
}

#[tokio::test]
async fn concurrent_sends_through_three_nodes_leave_a_gap_free_inbox() {
    let c = TestCluster::start(3, &[]).await;
    let bob_id = register(&c.nodes[0].client(), "bob").await;
    let mut senders = Vec::new();
    for (i, node) in c.nodes.iter().enumerate() {
        senders.push(user(&node.client(), &format!("sender{i}")).await);
    }
    let per_sender = 40;
    let mut tasks = Vec::new();
    for s in senders {
        let to = bob_id.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..per_sender {
                let text = format!("{} #{k}", s.username);
                let cmid = format!("{}-{k}", s.username);
                s.api
                    .send(&text_message(&to, &text, Some(&cmid)))
                    .await
                    .expect("send");
                // A retry of the same message through the same node must
                // not add a second copy.
                if k % 10 == 0 {
                    s.api
                        .send(&text_message(&to, &text, Some(&cmid)))
                        .await
                        .expect("retry");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let bob = login(&c.nodes[1].client(), "bob", "web", None).await;
    let inbox = full_sync(&bob.api).await;
    assert_gap_free(&inbox);
    let ids: HashSet<String> = inbox.iter().map(message_id).collect();
    assert_eq!(inbox.len(), 3 * per_sender, "every message once");
    assert_eq!(ids.len(), inbox.len(), "no duplicate");
    for i in 0..3 {
        let from_one: Vec<String> = message_texts(&inbox)
            .into_iter()
            .filter(|t| t.starts_with(&format!("sender{i} ")))
            .collect();
        let expected: Vec<String> = (0..per_sender).map(|k| format!("sender{i} #{k}")).collect();
        assert_eq!(from_one, expected, "each sender's messages in their order");
    }
}

#[tokio::test]
async fn logout_on_one_node_is_refused_on_another_and_closes_its_websocket() {
    let c = TestCluster::start(2, &[]).await;
    let (a, b) = (c.nodes[0].client(), c.nodes[1].client());
    register(&a, "bob").await;
    let bob = login(&a, "bob", "web", None).await;
    let on_b = b.with_token(bob.tokens.access_token.clone());
    on_b.me().await.expect("me on B");
    let mut ws = on_b.connect_ws(None).await.unwrap();

    bob.api.logout().await.expect("logout on A");
    let refused = on_b.me().await;
    assert!(
        matches!(&refused, Err(e) if e.status() == Some(401)),
        "the token is refused on B at once: {refused:?}"
    );
    let revoked = ws_event(&mut ws).await;
    assert_eq!(revoked.kind, EventType::SessionRevoked);
    assert_eq!(within("the close", ws.next_event()).await.unwrap(), None);
    assert_eq!(ws.close_code(), Some(4001));
}

async fn post_json(base: &str, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_qr_ticket_made_on_a_waited_on_b_and_confirmed_on_c_completes() {
    let c = TestCluster::start(3, &[]).await;
    let (base_a, base_b, base_c) = (&c.nodes[0].base, &c.nodes[1].base, &c.nodes[2].base);
    register(&c.nodes[0].client(), "bob").await;
    let phone = login(&c.nodes[2].client(), "bob", "ios", Some("phone")).await;

    let (status, ticket) = post_json(
        base_a,
        "/v1/auth/qr",
        None,
        json!({"platform": "web", "device_id": "desk"}),
    )
    .await;
    assert_eq!(status, 200, "{ticket}");
    let id = ticket["ticket_id"].as_str().unwrap_or_default().to_owned();
    let r = reqwest::Client::new()
        .get(format!("{base_b}/v1/auth/qr/{id}/events"))
        .header(
            "x-qr-secret",
            ticket["page_secret"].as_str().unwrap_or_default(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut page = Box::pin(r.bytes_stream().eventsource().filter_map(|e| async move {
        let e = e.ok()?;
        Some((
            e.event,
            serde_json::from_str::<Value>(&e.data).unwrap_or(Value::Null),
        ))
    }));
    let mut next = async || {
        within("a QR event", page.next())
            .await
            .expect("the stream ended")
    };
    assert_eq!(next().await.0, "pending");

    let (status, asking) = post_json(
        base_c,
        "/v1/auth/qr/scan",
        Some(&phone.tokens.access_token),
        json!({"code": ticket["code"]}),
    )
    .await;
    assert_eq!(status, 200, "{asking}");
    let (event, data) = next().await;
    assert_eq!(
        (event.as_str(), data["display_name"].as_str()),
        ("scanned", Some("bob"))
    );

    let (status, confirmed) = post_json(
        base_c,
        &format!("/v1/auth/qr/{id}/confirm"),
        Some(&phone.tokens.access_token),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{confirmed}");
    let (event, data) = next().await;
    assert_eq!(event, "confirmed");
    assert_eq!(data["session_id"], confirmed["session_id"]);
    let token = data["access_token"].as_str().unwrap_or_default().to_owned();
    let me = c.nodes[0]
        .client()
        .with_token(token)
        .me()
        .await
        .expect("the page's token on A");
    assert_eq!(me.user_id, phone.id);

    // Single use, whichever node is asked.
    let (status, _) = post_json(
        base_a,
        &format!("/v1/auth/qr/{id}/confirm"),
        Some(&phone.tokens.access_token),
        json!({}),
    )
    .await;
    assert_eq!(status, 409);
}

async fn admin_get(node: &TestServer, path: &str, headers: &[(&str, String)]) -> u16 {
    AdminApi::root(node)
        .call_with(Method::GET, path, None, headers)
        .await
        .0
        .as_u16()
}

#[tokio::test]
async fn a_replayed_nonce_and_a_rate_limit_hold_across_nodes() {
    let c = TestCluster::start(3, &[("UNIMSG_LIMITS__REGISTER_PER_MINUTE", "3")]).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let fresh = [
        ("x-nonce", "cluster-nonce-1".to_owned()),
        ("x-timestamp", now.to_string()),
    ];
    assert_eq!(admin_get(&c.nodes[0], "/v1/admin/audit", &fresh).await, 200);
    assert_eq!(
        admin_get(&c.nodes[1], "/v1/admin/audit", &fresh).await,
        409,
        "the nonce seen on A is refused on B"
    );

    let mut statuses = Vec::new();
    for (i, node) in [0, 1, 2, 0].into_iter().enumerate() {
        let (status, _) = post_json(
            &c.nodes[node].base,
            "/v1/auth/register",
            None,
            json!({"username": format!("user{i}"), "password": PASSWORD}),
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [201, 201, 201, 429],
        "three registrations a minute per IP, counted over all nodes"
    );
}

#[tokio::test]
async fn presence_is_seen_from_every_node() {
    let c = TestCluster::start(2, &[]).await;
    register(&c.nodes[0].client(), "bob").await;
    let bob = login(&c.nodes[1].client(), "bob", "ios", None).await;
    let url = format!("/v1/admin/presence?user_ids={}", bob.id);
    let presence = async |base: &str| -> Value {
        reqwest::Client::new()
            .get(format!("{base}{url}"))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    assert_eq!(
        presence(&c.nodes[0].base).await["users"][0]["online"],
        false
    );
    let ws = bob.api.connect_ws(None).await.unwrap();
    let seen = presence(&c.nodes[0].base).await;
    assert_eq!(seen["users"][0]["online"], true, "{seen}");
    assert_eq!(seen["users"][0]["platforms"], json!(["ios"]));
    drop(ws);
    // The close is noticed by node B asynchronously: wait for it, bounded.
    within("presence to clear", async {
        while presence(&c.nodes[0].base).await["users"][0]["online"] != false {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_notification_is_sent_live_to_a_socket_on_another_node() {
    let c = TestCluster::start(2, &[]).await;
    register(&c.nodes[0].client(), "bob").await;
    register(&c.nodes[0].client(), "carol").await;
    let bob = login(&c.nodes[1].client(), "bob", "ios", None).await;
    let carol = login(&c.nodes[1].client(), "carol", "ios", None).await;
    let mut ws = bob.api.connect_ws(None).await.unwrap();
    let (status, sent) = admin(
        &c.nodes[0],
        Method::POST,
        "/v1/admin/messages",
        Some(json!({"to": {"users": [bob.id, carol.id]}, "content": {"title": "Hi"}})),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    let event = ws_event(&mut ws).await;
    assert_eq!(event.data["content"]["title"], "Hi");
    let path = format!(
        "/v1/admin/messages/{}/status",
        sent["message_id"].as_str().unwrap_or_default()
    );
    let (_, st) = admin(&c.nodes[0], Method::GET, &path, None).await;
    // Bob's socket is on the other node; carol has none.
    assert_eq!(
        (st["recipients"].as_u64(), st["sent_live"].as_u64()),
        (Some(2), Some(1)),
        "{st}"
    );
    let live: Vec<(&str, bool)> = st["users"]
        .as_array()
        .map(|users| {
            users
                .iter()
                .map(|u| {
                    (
                        u["user_id"].as_str().unwrap_or_default(),
                        u["sent_live"] == true,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(live.contains(&(bob.id.as_str(), true)), "{st}");
    assert!(live.contains(&(carol.id.as_str(), false)), "{st}");
}

/// Every node reports itself; any node lists them all, each with its own
/// live connections.
#[tokio::test]
async fn every_node_is_listed_with_its_own_connections() {
    // Asked again until a report has the socket: no admin rate limit.
    let c = TestCluster::start(2, &[("UNIMSG_LIMITS__ADMIN_PER_SECOND", "0")]).await;
    register(&c.nodes[0].client(), "bob").await;
    let bob = login(&c.nodes[1].client(), "bob", "ios", None).await;
    let _ws = bob.api.connect_ws(None).await.unwrap();
    // Reports come every few seconds: wait for one that has the socket.
    let nodes = within("node B's report of its socket", async {
        loop {
            let (status, list) = admin(&c.nodes[0], Method::GET, "/v1/admin/nodes", None).await;
            assert_eq!(status, 200, "{list}");
            let nodes = list["nodes"].as_array().cloned().unwrap_or_default();
            if nodes.len() == 2 && nodes.iter().any(|n| n["connections"] == 1) {
                return nodes;
            }
            // Reports come every 5 s; each look is an audited admin request.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    let busy: Vec<&Value> = nodes.iter().filter(|n| n["connections"] == 1).collect();
    let idle: Vec<&Value> = nodes.iter().filter(|n| n["connections"] == 0).collect();
    assert_eq!((busy.len(), idle.len()), (1, 1), "{nodes:?}");
    assert_eq!(
        busy[0]["live"],
        json!([{"transport": "ws", "platform": "ios", "connections": 1}])
    );
    assert_eq!(busy[0]["online_users"], 1);
    assert_ne!(busy[0]["node_id"], idle[0]["node_id"]);
    for node in &nodes {
        assert_eq!(node["store_ok"], true, "{node}");
        assert!(node["totals"]["unimsg_logins_total"].is_u64(), "{node}");
    }
}

#[tokio::test]
async fn user_online_and_offline_mean_the_first_and_last_connection_on_any_node() {
    use crate::receiver::Receiver;

    let receiver = Receiver::ok().await;
    let c = TestCluster::start(2, &[("UNIMSG_HOOKS__ALLOW_PRIVATE_TARGETS", "true")]).await;
    let (status, hook) = admin(
        &c.nodes[0],
        Method::POST,
        "/v1/admin/webhooks",
        Some(json!({"url": receiver.url, "events": ["user.online", "user.offline"]})),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    // A change on a node refreshes at once which events that node
    // reports; this makes node 1 see the endpoint made on node 0 now
    // rather than at its next poll.
    let id = hook["webhook_id"].as_str().unwrap();
    let (status, _) = admin(
        &c.nodes[1],
        Method::PATCH,
        &format!("/v1/admin/webhooks/{id}"),
        Some(json!({"description": "presence"})),
    )
    .await;
    assert_eq!(status, 200);
    register(&c.nodes[0].client(), "bob").await;
    let on_ios = login(&c.nodes[1].client(), "bob", "ios", None).await;
    let on_web = login(&c.nodes[0].client(), "bob", "web", None).await;
    let presence = async || -> Value {
        let url = format!("/v1/admin/presence?user_ids={}", on_ios.id);
        let (_, v) = admin(&c.nodes[0], Method::GET, &url, None).await;
        v["users"][0]["platforms"].clone()
    };
    let presence_is = async |want: Value| {
        within("presence to change", async {
            while presence().await != want {
                tokio::task::yield_now().await;
            }
        })
        .await
    };
    let kinds = |seen: &[crate::receiver::Received]| -> Vec<String> {
        seen.iter().map(|r| r.kind()).collect()
    };

    // First connection anywhere: online.
    let ios = on_ios.api.connect_ws(None).await.unwrap();
    receiver.until("user.online", |s| s.len() == 1).await;
    // A second node, then the first node's connection closing: neither
    // changes the user's presence over the cluster.
    let web = on_web.api.connect_ws(None).await.unwrap();
    presence_is(json!(["ios", "web"])).await;
    drop(ios);
    presence_is(json!(["web"])).await;
    // The last connection anywhere closing: offline; then online again.
    drop(web);
    receiver.until("user.offline", |s| s.len() >= 2).await;
    let _again = on_ios.api.connect_ws(None).await.unwrap();
    let seen = receiver.until("user.online again", |s| s.len() >= 3).await;
    assert_eq!(
        kinds(&seen),
        ["user.online", "user.offline", "user.online"],
        "one event per change of the cluster-wide presence"
    );
    assert!(
        seen.iter()
            .all(|r| r.json()["data"]["user_id"] == json!(on_ios.id))
    );
}

/// Sends `texts` from `alice` to `to` one by one; all must be acknowledged.
async fn send_all(alice: &TestUser, to: &unimsg_client::proto::UserId, from: usize, to_n: usize) {
    for i in from..to_n {
        alice
            .api
            .send(&text_message(to, &format!("m{i}"), Some(&format!("m{i}"))))
            .await
            .unwrap_or_else(|e| panic!("send m{i}: {e}"));
    }
}

#[tokio::test]
async fn a_redis_restart_pauses_live_delivery_and_loses_nothing() {
    let mut c = TestCluster::start(2, &[]).await;
    let alice = user(&c.nodes[0].client(), "alice").await;
    register(&c.nodes[0].client(), "bob").await;
    let bob = login(&c.nodes[1].client(), "bob", "web", None).await;
    let mut ws = bob.api.connect_ws(None).await.unwrap();

    send_all(&alice, &bob.id, 0, 10).await;
    let mut live = Vec::new();
    while live.len() < 10 {
        live.push(ws_event(&mut ws).await);
    }
    c.redis.stop();
    // Sends still succeed: PostgreSQL holds them; only live delivery waits.
    send_all(&alice, &bob.id, 10, 20).await;
    c.redis.start_again();
    // Nothing more is sent: node B notices Redis is back and has its
    // connections catch up from the store.
    while live.len() < 20 {
        live.push(ws_event(&mut ws).await);
    }
    send_all(&alice, &bob.id, 20, 30).await;
    while live.len() < 30 {
        live.push(ws_event(&mut ws).await);
    }
    assert_gap_free(&live);
    let expected: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    assert_eq!(
        message_texts(&live),
        expected,
        "the WebSocket caught up, in order"
    );
    let synced = full_sync(&bob.api).await;
    assert_eq!(
        message_texts(&synced),
        expected,
        "nothing acknowledged is lost"
    );
}

#[tokio::test]
async fn while_postgres_is_down_sends_fail_with_503_and_nothing_acknowledged_is_lost() {
    let c = TestCluster::start(2, &[]).await;
    let alice = user(&c.nodes[0].client(), "alice").await;
    let bob_id = register(&c.nodes[0].client(), "bob").await;
    send_all(&alice, &bob_id, 0, 5).await;

    c.pg.stop();
    let failed = alice
        .api
        .send(&text_message(&bob_id, "while down", Some("down")))
        .await;
    assert!(
        matches!(&failed, Err(e) if e.status() == Some(503)),
        "503 while PostgreSQL is down: {failed:?}"
    );
    c.pg.start_again();
    // The pool reconnects on its own: the same request now goes through.
    within("sends to succeed again", async {
        loop {
            match alice
                .api
                .send(&text_message(&bob_id, "while down", Some("down")))
                .await
            {
                Ok(_) => break,
                Err(e) if e.status() == Some(503) => tokio::task::yield_now().await,
                Err(e) => panic!("unexpected failure after the restart: {e}"),
            }
        }
    })
    .await;
    send_all(&alice, &bob_id, 5, 10).await;

    let bob = login(&c.nodes[1].client(), "bob", "web", None).await;
    let synced = full_sync(&bob.api).await;
    assert_gap_free(&synced);
    let mut expected: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    expected.push("while down".into());
    expected.extend((5..10).map(|i| format!("m{i}")));
    assert_eq!(message_texts(&synced), expected);
}

#[tokio::test]
async fn clients_of_a_killed_node_resume_on_another_with_nothing_lost() {
    let mut c = TestCluster::start(3, &[]).await;
    let alice = user(&c.nodes[2].client(), "alice").await;
    register(&c.nodes[0].client(), "bob").await;
    let bob = login(&c.nodes[0].client(), "bob", "web", None).await;
    let mut ws = bob.api.connect_ws(None).await.unwrap();
    send_all(&alice, &bob.id, 0, 10).await;
    let mut got = Vec::new();
    while got.len() < 10 {
        got.push(ws_event(&mut ws).await);
    }
    let last = got.last().map_or(Seq(0), |e| e.seq);
    ws.ack(last).await.expect("ack");

    c.nodes[0].kill9().await;
    send_all(&alice, &bob.id, 10, 20).await;
    let on_b = c.nodes[1]
        .client()
        .with_token(bob.tokens.access_token.clone());
    let mut ws = on_b.connect_ws(Some(last)).await.expect("reconnect on B");
    send_all(&alice, &bob.id, 20, 25).await;
    while got.len() < 25 {
        got.push(ws_event(&mut ws).await);
    }
    assert_gap_free(&got);
    let expected: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    assert_eq!(message_texts(&got), expected);
}

/// The message ids of the `message.created` events a receiver answered
/// with 2xx, and how many such requests there were.
fn created_ids(seen: &[crate::receiver::Received]) -> (HashSet<String>, usize) {
    let ok: Vec<String> = seen
        .iter()
        .filter(|r| r.answered_ok && r.kind() == "message.created")
        .map(|r| {
            r.json()["data"]["message_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let n = ok.len();
    (ok.into_iter().collect(), n)
}

#[tokio::test]
async fn webhooks_from_two_nodes_go_out_once_and_survive_a_node_killed_mid_delivery() {
    use crate::receiver::{Receiver, Reply};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    // Each answer takes `delay_ms`: phase 2 makes it long enough that the
    // killed node has attempts in flight.
    let delay_ms = Arc::new(AtomicU64::new(10));
    let delay = delay_ms.clone();
    let receiver = Receiver::scripted(move |_, _| Reply {
        delay: Duration::from_millis(delay.load(Ordering::SeqCst)),
        ..Reply::status(204)
    })
    .await;
    let schedule = vec!["1"; 20].join(",");
    let extra = [
        ("UNIMSG_HOOKS__ALLOW_PRIVATE_TARGETS", "true"),
        ("UNIMSG_HOOKS__POLL_INTERVAL_MS", "100"),
        ("UNIMSG_HOOKS__TIMEOUT_MS", "2000"),
        ("UNIMSG_HOOKS__MAX_IN_FLIGHT", "4"),
        ("UNIMSG_HOOKS__RETRY_SCHEDULE_SECS", schedule.as_str()),
        ("UNIMSG_LIMITS__SEND_PER_MINUTE", "100000"),
        ("UNIMSG_LIMITS__DELIVERIES_PER_MINUTE", "100000"),
    ];
    let mut cluster = TestCluster::start(2, &extra).await;
    let (status, hook) = admin(
        &cluster.nodes[0],
        Method::POST,
        "/v1/admin/webhooks",
        Some(json!({"url": receiver.url, "events": ["message.created"]})),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let alice_0 = user(&cluster.nodes[0].client(), "alice").await;
    let bob = register(&cluster.nodes[0].client(), "bob").await;
    let alice_1 = login(&cluster.nodes[1].client(), "alice", "ios", None).await;

    // Phase 1: both nodes dispatch; every event goes out exactly once.
    for i in 0..100 {
        let from = if i % 2 == 0 { &alice_0 } else { &alice_1 };
        from.api
            .send_text(&bob, &format!("a{i}"), None)
            .await
            .unwrap();
    }
    let seen = receiver
        .until("100 events from two nodes", |s| {
            created_ids(s).0.len() >= 100
        })
        .await;
    let (ids, requests) = created_ids(&seen);
    assert_eq!(
        (ids.len(), requests),
        (100, 100),
        "no event was attempted by both nodes"
    );

    // Phase 2: slow answers; node 0 is killed with claims in flight.
    delay_ms.store(300, Ordering::SeqCst);
    for i in 0..100 {
        alice_0
            .api
            .send_text(&bob, &format!("b{i}"), None)
            .await
            .unwrap();
    }
    cluster.nodes[0].kill9().await;
    let seen = receiver
        .until_within("200 events after the kill", Duration::from_secs(90), |s| {
            created_ids(s).0.len() >= 200
        })
        .await;
    let (ids, requests) = created_ids(&seen);
    assert_eq!(ids.len(), 200, "every event was delivered");
    // Only attempts cut off by the kill go out again: at most the dead
    // node's claims (4 rounds × 4 × max_in_flight).
    assert!(
        requests - ids.len() <= 64,
        "{} repeats",
        requests - ids.len()
    );
}

#[tokio::test]
async fn the_audit_log_on_postgres_is_verified_offline_and_through_a_node() {
    let mut c = TestCluster::start(1, &[]).await;
    let root = AdminApi::root(&c.nodes[0]);
    for i in 0..3 {
        root.ok(
            Method::GET,
            &format!("/v1/admin/audit?limit={}", i + 1),
            None,
        )
        .await;
    }
    let verify = |args: &[&str], env: &[(String, String)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_unimsg"));
        cmd.args(["audit", "verify"]).args(args).env_clear();
        cmd.envs(env.iter().cloned());
        cmd.output().unwrap()
    };
    let offline_env = vec![
        ("UNIMSG_STORE__URL".to_owned(), c.pg.url("postgres")),
        ("UNIMSG_MASTER_KEY".to_owned(), MASTER_KEY.to_owned()),
    ];
    let remote_env = vec![(
        "UNIMSG_ADMIN_PASSWORD".to_owned(),
        ADMIN_PASSWORD.to_owned(),
    )];
    let base = c.nodes[0].base.clone();
    let offline = verify(&[], &offline_env);
    assert!(
        offline.status.success(),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );
    assert!(verify(&["--server", &base], &remote_env).status.success());

    // An intruder edits an entry in PostgreSQL.
    let out = std::process::Command::new("psql")
        .arg(c.pg.url("postgres"))
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg("UPDATE audit_log SET content = content || ' ' WHERE id = 2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for out in [
        verify(&[], &offline_env),
        verify(&["--server", &base], &remote_env),
    ] {
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("entry 2 was altered"), "{stderr}");
    }
    c.nodes[0].terminate().await;
}

/// A broadcast committed on A is placed in B's streams by B itself (one
/// store read for all of B's online users), not read by each of B's
/// connections, and B's live event is the one sync returns.
#[tokio::test]
async fn a_broadcast_committed_on_one_node_is_placed_on_the_others() {
    let c = TestCluster::start(2, &[]).await;
    let (a, b) = (c.nodes[0].client(), c.nodes[1].client());
    register(&a, "alice").await;
    register(&a, "bob").await;
    let alice = login(&b, "alice", "web", None).await;
    let bob = login(&a, "bob", "web", None).await;
    let mut alice_ws = alice.api.connect_ws(None).await.unwrap();
    let mut bob_ws = bob.api.connect_ws(None).await.unwrap();

    let root = AdminApi::root(&c.nodes[0]);
    let sent = root
        .ok(
            Method::POST,
            "/v1/admin/broadcasts",
            Some(json!({"content": {"title": "maintenance at noon"}})),
        )
        .await;
    let on_a = ws_event(&mut bob_ws).await;
    let on_b = ws_event(&mut alice_ws).await;
    for live in [&on_a, &on_b] {
        assert_eq!(live.kind, EventType::BroadcastNew);
        assert_eq!(live.data["message_id"], sent["message_id"]);
    }
    let synced = full_sync(&alice.api).await;
    let synced = synced.last().expect("the broadcast is in alice's stream");
    assert_eq!(
        (on_b.seq, on_b.ts, &on_b.data),
        (synced.seq, synced.ts, &synced.data),
        "the event placed on B is the stored one"
    );

    for (name, node) in [("A", &c.nodes[0]), ("B", &c.nodes[1])] {
        assert_eq!(
            counter(node, "unimsg_broadcasts_placed_total").await,
            1,
            "{name} placed it"
        );
        assert_eq!(
            counter(node, "unimsg_broadcast_stream_reads_total").await,
            0,
            "no connection on {name} read its stream for it"
        );
    }
}
