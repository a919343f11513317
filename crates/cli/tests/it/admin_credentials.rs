//! The admin credential lifecycle: a changed secret and its old tokens are
//! refused at once, a deleted admin's secret, keys and tokens on every
//! node, API keys are shown once and revoked, weak secrets are refused.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::TestServer;
use crate::support::*;

/// A credential of the admin API.
enum Cred<'a> {
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

async fn call(
    server: &TestServer,
    cred: &Cred<'_>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", server.base));
    request = match cred {
        Cred::Basic(id, secret) => request.basic_auth(id, Some(secret)),
        Cred::Bearer(token) => request.bearer_auth(token),
    };
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Admitted by the gate: an unknown user is 404 past it.
async fn admitted(server: &TestServer, cred: &Cred<'_>) -> u16 {
    call(server, cred, Method::GET, "/v1/admin/users/nobody", None)
        .await
        .0
}

async fn create_ops(server: &TestServer, scopes: Value) {
    let (status, body) = admin(
        server,
        Method::POST,
        "/v1/admin/admins",
        Some(json!({"admin_id": "ops", "secret": "ops-first-secret-1", "scopes": scopes})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

async fn token_of(server: &TestServer, id: &str, secret: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/admin/token", server.base))
        .json(&json!({"admin_id": id, "secret": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_changed_secret_and_the_tokens_before_it_are_refused_at_once() {
    let server = TestServer::start().await;
    create_ops(&server, json!(["users:read"])).await;
    let old = Cred::Basic("ops", "ops-first-secret-1");
    assert_eq!(admitted(&server, &old).await, 404);
    let token = token_of(&server, "ops", "ops-first-secret-1").await;
    assert_eq!(admitted(&server, &Cred::Bearer(&token)).await, 404);
    // An admin changes its own secret with any scope...
    let (status, body) = call(
        &server,
        &old,
        Method::PATCH,
        "/v1/admin/admins/ops",
        Some(json!({"secret": "ops-second-secret-2"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // ...but nothing else about itself.
    let new = Cred::Basic("ops", "ops-second-secret-2");
    let (status, _) = call(
        &server,
        &new,
        Method::PATCH,
        "/v1/admin/admins/ops",
        Some(json!({"scopes": ["admin"]})),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        admitted(&server, &old).await,
        401,
        "the old secret, remembered a moment ago"
    );
    assert_eq!(
        admitted(&server, &Cred::Bearer(&token)).await,
        401,
        "a token from before"
    );
    assert_eq!(admitted(&server, &new).await, 404);
    // Disabled: every credential is refused.
    let (status, body) = admin(
        &server,
        Method::PATCH,
        "/v1/admin/admins/ops",
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disabled"], true);
    assert_eq!(admitted(&server, &new).await, 401);
    let (_, list) = admin(&server, Method::GET, "/v1/admin/admins", None).await;
    let ids: Vec<&str> = list["admins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["admin_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["admin", "ops"]);
    assert!(!list.to_string().contains("secret"), "{list}");
    // The last account with the admin scope stays.
    let (status, _) = admin(&server, Method::DELETE, "/v1/admin/admins/admin", None).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn api_keys_are_shown_once_listed_with_their_use_and_revoked() {
    let server = TestServer::start().await;
    create_ops(&server, json!(["users:read"])).await;
    let ops = Cred::Basic("ops", "ops-first-secret-1");
    let (status, _) = call(
        &server,
        &ops,
        Method::POST,
        "/v1/admin/admins/ops/keys",
        Some(json!({"expires_in": 3600, "scopes": ["users:write"]})),
    )
    .await;
    assert_eq!(status, 403, "a scope its admin lacks");
    let (status, created) = call(
        &server,
        &ops,
        Method::POST,
        "/v1/admin/admins/ops/keys",
        Some(json!({"expires_in": 3600})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("{key_id}_")));
    assert_eq!(admitted(&server, &Cred::Bearer(&key)).await, 404);
    let (status, _) = call(
        &server,
        &Cred::Bearer(&key),
        Method::GET,
        "/v1/admin/admins",
        None,
    )
    .await;
    assert_eq!(status, 403, "its scopes are its admin's at most");
    let (_, listed) = call(
        &server,
        &ops,
        Method::GET,
        "/v1/admin/admins/ops/keys",
        None,
    )
    .await;
    let first = &listed["keys"][0];
    assert_eq!(first["key_id"], key_id.as_str());
    assert_eq!(first["last_used_ip"], "127.0.0.1");
    assert!(
        !listed.to_string().contains(&key),
        "the key itself is never listed"
    );
    let (status, _) = call(
        &server,
        &ops,
        Method::DELETE,
        &format!("/v1/admin/admins/ops/keys/{key_id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(admitted(&server, &Cred::Bearer(&key)).await, 401);
    let forged = format!("{key_id}_AAAA");
    assert_eq!(admitted(&server, &Cred::Bearer(&forged)).await, 401);

    // A key past its expiry is refused on its next call (its expiry moved
    // into the past in the database, instead of waiting a minute).
    let (_, second) = call(
        &server,
        &ops,
        Method::POST,
        "/v1/admin/admins/ops/keys",
        Some(json!({"expires_in": 60})),
    )
    .await;
    let second_key = second["key"].as_str().unwrap().to_owned();
    assert_eq!(admitted(&server, &Cred::Bearer(&second_key)).await, 404);
    let db = rusqlite::Connection::open(server.data_dir().join("unimsg.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    let moved = db
        .execute(
            "UPDATE admin_keys SET expires_at = 1 WHERE key_id = ?1",
            [second["key_id"].as_str().unwrap()],
        )
        .unwrap();
    assert_eq!(moved, 1);
    drop(db);
    assert_eq!(admitted(&server, &Cred::Bearer(&second_key)).await, 401);
}

#[tokio::test]
async fn weak_admin_secrets_are_refused() {
    let server = TestServer::start_with(&[("UNIMSG_ADMIN__MIN_SECRET_LENGTH", "16")]).await;
    for secret in [
        "aaaaaaaaaaaaaaaaaaaa",
        "passwordpassword",
        "short-but-15-ch",
        "ops",
    ] {
        let (status, body) = admin(
            &server,
            Method::POST,
            "/v1/admin/admins",
            Some(json!({"admin_id": "ops", "secret": secret, "scopes": ["users:read"]})),
        )
        .await;
        assert_eq!(status, 400, "{secret}: {body}");
    }
}

#[tokio::test]
async fn refused_logins_admin_calls_and_limits_are_counted_in_metrics() {
    let server = TestServer::start_with(&[("UNIMSG_LIMITS__LOGIN_PER_MINUTE", "3")]).await;
    let client = server.client();
    crate::support::register(&client, "alice").await;
    let login = |password: &str| {
        let body = json!({"username": "alice", "password": password, "platform": "web"});
        let url = format!("{}/v1/auth/login", server.base);
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(login("wrong password 1").await, 401);
    assert_eq!(login("wrong password 2").await, 401);
    assert_eq!(login("wrong password 3").await, 401);
    assert_eq!(login("wrong password 4").await, 429);
    assert_eq!(
        counter(
            &server,
            r#"unimsg_login_failures_total{reason="bad_credentials"}"#
        )
        .await,
        3
    );
    assert_eq!(
        counter(
            &server,
            r#"unimsg_login_failures_total{reason="rate_limited"}"#
        )
        .await,
        1
    );
    assert_eq!(
        counter(&server, r#"unimsg_rate_limited_total{limit="login"}"#).await,
        1
    );
    let wrong = Cred::Basic("admin", "not-the-admin-secret");
    assert_eq!(admitted(&server, &wrong).await, 401);
    assert_eq!(
        counter(
            &server,
            r#"unimsg_admin_refusals_total{status="401",cause="credential"}"#
        )
        .await,
        1
    );
}
