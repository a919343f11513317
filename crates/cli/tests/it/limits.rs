//! Rate limits: per IP on registration, login and token endpoints, per
//! credential on the admin API, and back-off after failed logins. Each
//! refusal is 429 with a `Retry-After`.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{ADMIN_PASSWORD, TestServer};
use crate::support::*;

async fn post(base: &str, path: &str, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("no Retry-After header")
}

#[tokio::test]
async fn registration_and_token_endpoints_are_limited_per_ip() {
    let server = TestServer::start_with(&[
        ("UNIMSG_LIMITS__REGISTER_PER_MINUTE", "3"),
        ("UNIMSG_LIMITS__TOKEN_PER_MINUTE", "2"),
    ])
    .await;
    for name in ["lim-a", "lim-b", "lim-c"] {
        let r = post(
            &server.base,
            "/v1/auth/register",
            json!({"username": name, "password": PASSWORD}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = post(
        &server.base,
        "/v1/auth/register",
        json!({"username": "lim-d", "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!((1..=60).contains(&retry_after(&r)));
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    assert_eq!(body["error"]["code"], "rate_limited");

    let alice = login(&server.client(), "lim-a", "web", None).await;
    let first = server
        .client()
        .refresh(&alice.tokens.refresh_token)
        .await
        .unwrap();
    let second = server.client().refresh(&first.refresh_token).await.unwrap();
    let third = server.client().refresh(&second.refresh_token).await;
    assert_eq!(third.err().and_then(|e| e.status()), Some(429));
    let admin = post(
        &server.base,
        "/v1/admin/token",
        json!({"admin_id": "admin", "secret": ADMIN_PASSWORD}),
    )
    .await;
    assert_eq!(
        admin.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the admin token endpoint shares the per-IP limit"
    );
}

#[tokio::test]
async fn failed_logins_back_off_per_account() {
    let server =
        TestServer::start_with(&[("UNIMSG_LIMITS__LOGIN_FAILURES_BEFORE_BACKOFF", "3")]).await;
    register(&server.client(), "victim").await;
    for _ in 0..3 {
        let r = post(
            &server.base,
            "/v1/auth/login",
            json!({"username": "victim", "password": "wrong password", "platform": "web"}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Locked now, even with the right password.
    let r = post(
        &server.base,
        "/v1/auth/login",
        json!({"username": "victim", "password": PASSWORD, "platform": "web"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&r) >= 1);
}

#[tokio::test]
async fn admin_calls_are_limited_per_credential() {
    let server = TestServer::start_with(&[("UNIMSG_LIMITS__ADMIN_PER_SECOND", "2")]).await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = http
            .get(format!("{}/v1/admin/audit", server.base))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..2], &[200, 200]);
    assert!(statuses[2..].contains(&429), "{statuses:?}");
}
