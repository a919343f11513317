//! The admin gate under attack (issue 12, items 4, 5, 7 and 15d): filling
//! the replay store without credentials, a failed token attempt burning
//! the nonce of the real one, `X-Forwarded-For` forms that used to be
//! skipped, and floods of refused requests that used to write one audit
//! row and one log line each.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use unimsg_client::proto::EventType;

use crate::harness::{ADMIN_PASSWORD, TestServer};
use crate::support::*;

/// `X-Nonce: nonce` with the current `X-Timestamp`.
fn nonce(nonce: &str) -> [(&'static str, String); 2] {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    [
        ("x-nonce", nonce.to_owned()),
        ("x-timestamp", now.to_string()),
    ]
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

async fn create_admin(server: &TestServer, id: &str, scopes: &[&str]) {
    let (status, body) = request(
        server,
        Method::POST,
        "/v1/admin/admins",
        &[root_auth()],
        Some(json!({"admin_id": id, "secret": format!("{id}-secret-123"), "scopes": scopes})),
    )
    .await;
    assert_eq!(status, 201, "create admin {id}: {body}");
}

async fn broadcast(server: &TestServer, n: &str, title: &str) -> (StatusCode, Value) {
    let [a, b] = nonce(n);
    request(
        server,
        Method::POST,
        "/v1/admin/broadcasts",
        &[root_auth(), a, b],
        Some(json!({"content": {"title": title}})),
    )
    .await
}

/// Item 4: unauthenticated requests with fresh nonces no longer push the
/// nonce of a real broadcast out of the store; a full store (or a full
/// share of one credential) refuses new nonces with 503 `busy` instead of
/// forgetting old ones, and one credential's share does not take another's.
#[tokio::test]
async fn filling_the_nonce_store_without_credentials_cannot_replay_a_broadcast() {
    let server = TestServer::start_with(&[
        ("UNIMSG_ADMIN__NONCE_CAPACITY", "12"),
        ("UNIMSG_ADMIN__NONCE_PER_CREDENTIAL", "6"),
        ("UNIMSG_LIMITS__TOKEN_PER_MINUTE", "0"),
    ])
    .await;
    let alice = user(&server.client(), "alice").await;
    create_admin(&server, "ops", &["messages:send"]).await;
    create_admin(&server, "third", &["messages:send"]).await;

    let (status, body) = broadcast(&server, "the-broadcast", "once").await;
    assert_eq!(status, 200, "{body}");

    // The flood of the audit: 1,300 nonces were enough to evict it with
    // the default capacity; 200 are 16 times this store's capacity.
    // From another address: its failed secrets back off (401, then 429),
    // which must not lock the real admins out of 127.0.0.1.
    let flooder = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    for i in 0..200 {
        let [a, b] = nonce(&format!("flood-{i}"));
        let status = flooder
            .post(format!("{}/v1/admin/token", server.base))
            .header(a.0, a.1)
            .header(b.0, b.1)
            .json(&json!({"admin_id": "admin", "secret": format!("wrong guess {i}")}))
            .send()
            .await
            .unwrap()
            .status();
        assert!(
            matches!(status.as_u16(), 401 | 429),
            "flood request {i}: {status}"
        );
    }
    let (status, body) = broadcast(&server, "the-broadcast", "once").await;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (409, "conflict"),
        "the replayed broadcast is refused: {body}"
    );
    let broadcasts = full_sync(&alice.api)
        .await
        .into_iter()
        .filter(|e| e.kind == EventType::BroadcastNew)
        .count();
    assert_eq!(broadcasts, 1, "the broadcast happened exactly once");

    // `admin` fills its share (6: the broadcast's nonce and 5 more) …
    for i in 0..5 {
        let [a, b] = nonce(&format!("admin-{i}"));
        let (status, body) = request(
            &server,
            Method::GET,
            "/v1/admin/audit",
            &[root_auth(), a, b],
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let [a, b] = nonce("admin-over");
    let (status, body) = request(
        &server,
        Method::GET,
        "/v1/admin/audit",
        &[root_auth(), a, b],
        None,
    )
    .await;
    assert_eq!((status.as_u16(), code(&body)), (503, "busy"), "{body}");
    // … which leaves `ops` its own share of the store.
    let ops = basic_auth("ops", "ops-secret-123");
    for i in 0..6 {
        let [a, b] = nonce(&format!("ops-{i}"));
        let (status, body) = request(
            &server,
            Method::POST,
            "/v1/admin/broadcasts",
            &[ops.clone(), a, b],
            Some(json!({"content": {"title": format!("ops {i}")}})),
        )
        .await;
        assert_eq!(status, 200, "ops request {i}: {body}");
    }
    // Now the store holds its capacity (12): a new nonce of anyone is
    // refused, nothing is evicted, and the old nonce is still refused.
    let [a, b] = nonce("third-0");
    let (status, body) = request(
        &server,
        Method::POST,
        "/v1/admin/broadcasts",
        &[basic_auth("third", "third-secret-123"), a, b],
        Some(json!({"content": {"title": "third"}})),
    )
    .await;
    assert_eq!((status.as_u16(), code(&body)), (503, "busy"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("replay store is full")),
        "{body}"
    );
    let (status, _) = broadcast(&server, "the-broadcast", "once").await;
    assert_eq!(status, 409, "still refused when the store is full");
    let broadcasts = full_sync(&alice.api)
        .await
        .into_iter()
        .filter(|e| e.kind == EventType::BroadcastNew)
        .count();
    assert_eq!(broadcasts, 7, "the broadcast and ops' six, nothing twice");
    assert!(
        server.logs().contains("the replay store is full"),
        "a full store is reported in the log"
    );
}

/// Item 15d: a failed `POST /v1/admin/token` no longer consumes its nonce.
#[tokio::test]
async fn a_failed_token_attempt_does_not_consume_its_nonce() {
    let server = TestServer::start_with(&[("UNIMSG_ADMIN__REQUIRE_NONCE", "true")]).await;
    let headers = nonce("token-nonce");
    let (status, _) = request(
        &server,
        Method::POST,
        "/v1/admin/token",
        &headers,
        Some(json!({"admin_id": "admin", "secret": "not the secret"})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = request(
        &server,
        Method::POST,
        "/v1/admin/token",
        &headers,
        Some(json!({"admin_id": "admin", "secret": ADMIN_PASSWORD})),
    )
    .await;
    assert_eq!(status, 200, "the real request with the same nonce: {body}");
    assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()));
    let (status, body) = request(
        &server,
        Method::POST,
        "/v1/admin/token",
        &headers,
        Some(json!({"admin_id": "admin", "secret": ADMIN_PASSWORD})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (409, "conflict"),
        "a verified request's nonce is recorded: {body}"
    );
    let (status, _) = request(
        &server,
        Method::POST,
        "/v1/admin/token",
        &[],
        Some(json!({"admin_id": "admin", "secret": ADMIN_PASSWORD})),
    )
    .await;
    assert_eq!(
        status, 401,
        "require_nonce still applies to the token route"
    );
}

/// Item 5: behind a trusted proxy, an entry the proxy appended in a form
/// that does not parse (or with a port, or bracketed IPv6) no longer lets
/// the client-written entry to its left pass the allowlist.
#[tokio::test]
async fn forwarded_entries_that_were_skipped_no_longer_pass_the_allowlist() {
    let server = TestServer::start_with(&[
        ("UNIMSG_ADMIN__TRUSTED_PROXIES", "127.0.0.1/32"),
        ("UNIMSG_ADMIN__IP_ALLOWLIST", "10.0.0.0/8"),
    ])
    .await;
    let audit = |xff: &str| {
        let headers = [root_auth(), ("x-forwarded-for", xff.to_owned())];
        let server = &server;
        async move {
            request(
                server,
                Method::GET,
                "/v1/admin/audit?limit=1",
                &headers,
                None,
            )
            .await
            .0
        }
    };
    // The proxy vouches for 10.0.0.5 (bare, or with a port): allowed.
    for xff in ["10.0.0.5", "10.0.0.5:4711", "203.0.113.9, 10.0.0.5"] {
        assert_eq!(audit(xff).await, 200, "{xff}");
    }
    for xff in [
        "10.0.0.5, unknown",
        "10.0.0.5, _hidden",
        "10.0.0.5, 203.0.113.9:4711",
        "10.0.0.5, [2001:db8::9]",
        "10.0.0.5, [2001:db8::9]:443",
        "10.0.0.5, 2001:db8::9",
        "10.0.0.5, ",
    ] {
        assert_eq!(audit(xff).await, 403, "{xff} must not pass as 10.0.0.5");
    }
    let (status, _) = request(
        &server,
        Method::GET,
        "/v1/admin/audit?limit=1",
        &[root_auth()],
        None,
    )
    .await;
    assert_eq!(status, 403, "no entry: the peer (127.0.0.1) is the client");
}

async fn login_from(server: &TestServer, xff: &str, username: &str) -> u16 {
    request(
        server,
        Method::POST,
        "/v1/auth/login",
        &[("x-forwarded-for", xff.to_owned())],
        Some(json!({"username": username, "password": PASSWORD, "platform": "web"})),
    )
    .await
    .0
    .as_u16()
}

/// Item 5: user routes honour `admin.trusted_proxies` with the same rule:
/// each forwarded client has its own login bucket, a client cannot leave
/// its bucket by writing entries of its own, and unknown clients are
/// limited together, not let through.
#[tokio::test]
async fn login_limits_are_per_forwarded_client() {
    let server = TestServer::start_with(&[
        ("UNIMSG_ADMIN__TRUSTED_PROXIES", "127.0.0.1/32"),
        ("UNIMSG_LIMITS__LOGIN_PER_MINUTE", "3"),
    ])
    .await;
    register(&server.client(), "carol").await;
    for i in 0..3 {
        assert_eq!(
            login_from(&server, "203.0.113.1", "carol").await,
            200,
            "login {i}"
        );
    }
    assert_eq!(login_from(&server, "203.0.113.1", "carol").await, 429);
    for xff in [
        "198.51.100.77, 203.0.113.1",
        "garbage, 203.0.113.1",
        "203.0.113.1:5555",
    ] {
        assert_eq!(
            login_from(&server, xff, "carol").await,
            429,
            "{xff}: still 203.0.113.1's bucket"
        );
    }
    assert_eq!(
        login_from(&server, "203.0.113.2", "carol").await,
        200,
        "another client behind the same proxy has its own bucket"
    );
    for i in 0..3 {
        assert_eq!(
            login_from(&server, "203.0.113.3, unknown", "carol").await,
            200,
            "unknown {i}"
        );
    }
    assert_eq!(
        login_from(&server, "203.0.113.4, unknown", "carol").await,
        429,
        "unknown clients share one bucket: limited, never skipped"
    );
}

/// Item 7: a flood of refused admin requests without a valid credential
/// writes one audit row at once and one `admin.refused` row with the count
/// (at the end of the interval, here at shutdown), logs no ERROR line and
/// only a bounded amount; refusals with a valid credential and served
/// requests stay audited one row each.
#[tokio::test]
async fn a_flood_of_refused_admin_requests_writes_a_few_rows_and_no_error_lines() {
    const NO_CREDENTIAL: usize = 250;
    const BAD_BEARER: usize = 50;
    const WRONG_SECRET: usize = 200;
    const FLOOD: usize = NO_CREDENTIAL + BAD_BEARER + WRONG_SECRET;
    let mut server =
        TestServer::start_with(&[("UNIMSG_ADMIN__REFUSAL_AUDIT_INTERVAL_SECS", "3600")]).await;
    create_admin(&server, "reader", &["users:read"]).await;
    let logs_before = server.logs().len();

    // The flood comes from 127.0.0.2, so that the back-off of its failed
    // secrets does not stand in the way of `reader`'s first check below.
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let url = format!("{}/v1/admin/audit", server.base);
    for _ in 0..NO_CREDENTIAL {
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    for _ in 0..BAD_BEARER {
        let r = http
            .get(&url)
            .bearer_auth("not.a.token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // Wrong Basic secrets all at once: each costs a password check, and
    // more than the password workers queue are refused as busy.
    let guesses = (0..WRONG_SECRET).map(|i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(&url)
                .basic_auth("admin", Some(format!("guess {i}")))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let statuses = within("the wrong secrets", futures_util::future::join_all(guesses)).await;
    for status in statuses {
        let status = status.unwrap();
        assert!(matches!(status, 401 | 429 | 503), "{status}");
    }
    let flood_logs = server
        .logs()
        .get(logs_before..)
        .unwrap_or_default()
        .to_owned();

    // With a valid credential: a refusal (scope) and a served request, one row each.
    let reader = basic_auth("reader", "reader-secret-123");
    for _ in 0..3 {
        let (status, _) = request(
            &server,
            Method::GET,
            "/v1/admin/audit",
            std::slice::from_ref(&reader),
            None,
        )
        .await;
        assert_eq!(status, 403);
    }
    let (status, page) = request(
        &server,
        Method::GET,
        "/v1/admin/audit?action=admin.request&limit=1000",
        &[root_auth()],
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let entries = page["entries"].as_array().cloned().unwrap_or_default();
    let anonymous = entries
        .iter()
        .filter(|e| e["record"]["actor"] == "-")
        .count();
    assert!(
        anonymous <= 2,
        "{anonymous} audit rows for {FLOOD} refused requests without credentials"
    );
    let scope_refusals = entries
        .iter()
        .filter(|e| e["record"]["actor"] == "reader" && e["record"]["outcome"] == "403")
        .count();
    assert_eq!(
        scope_refusals, 3,
        "refusals of a valid credential stay individual"
    );

    assert!(
        !flood_logs.lines().any(|l| l.contains("ERROR")),
        "ERROR lines for expected refusals:\n{}",
        flood_logs.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    // Besides the access log's one line per request (its own switch,
    // `http.log_requests`), the refusals add little.
    let other: usize = flood_logs
        .lines()
        .filter(|l| !l.contains("unimsg::http"))
        .map(str::len)
        .sum();
    assert!(
        other < 16 * 1024,
        "{other} bytes of log besides the access log for {FLOOD} refused requests"
    );

    // At shutdown the counted refusals are written: with the first one,
    // they account for every refused request of the flood.
    server.terminate().await;
    let db = rusqlite::Connection::open(server.data_dir().join("unimsg.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT content FROM audit_log ORDER BY id")
        .unwrap();
    let records: Vec<Value> = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .filter_map(|r| r.ok())
        .filter_map(|c| serde_json::from_str(&c).ok())
        .collect();
    let first = records
        .iter()
        .filter(|r| r["action"] == "admin.request" && r["actor"] == "-")
        .count();
    let summaries: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "admin.refused")
        .collect();
    assert!(summaries.len() <= 2, "{summaries:?}");
    let counted: u64 = summaries.iter().filter_map(|r| r["count"].as_u64()).sum();
    assert_eq!(
        first as u64 + counted,
        FLOOD as u64,
        "every refusal is accounted for: {summaries:?}"
    );
    assert!(
        summaries.iter().all(|r| r["ip"] == "127.0.0.2"),
        "{summaries:?}"
    );
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_unimsg"))
        .args(["audit", "verify", "--data-dir"])
        .arg(server.data_dir())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
