//! Helpers shared by the integration tests: users, bounded waits, event
//! checks, and raw HTTP calls (the admin API with any credentials and
//! headers, user requests the SDK has no method for).

use std::future::Future;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use unimsg_client::proto::api::{LoginRequest, RegisterRequest, TokenPair};
use unimsg_client::proto::{Event, EventType, Platform, Seq, UserId};
use unimsg_client::{Authed, Client, SseConnection, WsConnection};

use crate::harness::{ADMIN_PASSWORD, TestServer};

/// A bound on how long a test waits for something the server must do.
/// Reaching it fails the test; it never paces the test.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub(crate) const PASSWORD: &str = "correct horse battery";

pub(crate) struct TestUser {
    pub id: UserId,
    pub username: String,
    pub tokens: TokenPair,
    pub api: Authed,
}

pub(crate) async fn register(client: &Client, username: &str) -> UserId {
    let req = RegisterRequest {
        username: username.into(),
        password: PASSWORD.into(),
        display_name: None,
    };
    client
        .register(&req)
        .await
        .unwrap_or_else(|e| panic!("register {username}: {e}"))
        .user_id
}

pub(crate) async fn login(
    client: &Client,
    username: &str,
    platform: &str,
    device: Option<&str>,
) -> TestUser {
    let req = LoginRequest {
        username: username.into(),
        password: PASSWORD.into(),
        platform: Platform::parse(platform).unwrap(),
        device_id: device.map(str::to_owned),
    };
    let tokens = client
        .login(&req)
        .await
        .unwrap_or_else(|e| panic!("login {username}: {e}"));
    TestUser {
        id: tokens.user_id.clone(),
        username: username.into(),
        api: client.with_token(tokens.access_token.clone()),
        tokens,
    }
}

/// Registers and logs in on the `web` platform.
pub(crate) async fn user(client: &Client, username: &str) -> TestUser {
    register(client, username).await;
    login(client, username, "web", None).await
}

pub(crate) async fn ws_event(ws: &mut WsConnection) -> Event {
    within("a WebSocket event", ws.next_event())
        .await
        .expect("websocket")
        .unwrap_or_else(|| panic!("websocket closed (code {:?})", ws.close_code()))
}

pub(crate) async fn sse_event(sse: &mut SseConnection) -> (Option<String>, Event) {
    let e = within("an SSE event", sse.next_event())
        .await
        .expect("sse")
        .expect("sse stream ended");
    (e.id, e.event)
}

/// The full inbox of a user, by paging `GET /v1/sync`.
pub(crate) async fn full_sync(api: &Authed) -> Vec<Event> {
    let mut out = Vec::new();
    let mut after = Seq(0);
    loop {
        let page = api.sync(Some(after), Some(200)).await.expect("sync");
        out.extend(page.events);
        after = page.next_after;
        if !page.has_more {
            return out;
        }
    }
}

/// Asserts seqs run 1, 2, 3… with no gap and no repeat.
pub(crate) fn assert_gap_free(events: &[Event]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq,
            Seq(i as u64 + 1),
            "seq {} at position {i}: gap or duplicate",
            e.seq
        );
    }
}

pub(crate) fn message_id(e: &Event) -> String {
    assert_eq!(e.kind, EventType::MessageNew, "not a message: {e:?}");
    e.data["message_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no message_id in {e:?}"))
        .to_owned()
}

/// The texts of the `message.new` events, in order.
pub(crate) fn message_texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind == EventType::MessageNew)
        .map(text)
        .collect()
}

/// The text of the server's `/metrics`.
pub(crate) async fn metrics_text(server: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of a counter line of `/metrics` that starts with
/// `line_start` (0 when absent).
pub(crate) async fn counter(server: &TestServer, line_start: &str) -> u64 {
    metrics_text(server)
        .await
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

pub(crate) fn text(e: &Event) -> String {
    e.data["content"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The `authorization` header of HTTP Basic credentials.
pub(crate) fn basic_auth(id: &str, secret: &str) -> (&'static str, String) {
    (
        "authorization",
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
    )
}

/// The root admin's Basic credentials (`admin` with [`ADMIN_PASSWORD`]).
pub(crate) fn root_auth() -> (&'static str, String) {
    basic_auth("admin", ADMIN_PASSWORD)
}

/// Sends `req` with `headers` and an optional JSON body; the status and
/// the JSON body (`null` when there is none or it is not JSON).
async fn answer(
    mut req: reqwest::RequestBuilder,
    headers: &[(&str, String)],
    body: Option<Value>,
    path: &str,
) -> (StatusCode, Value) {
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// One request to the server with exactly the headers given (credentials
/// included, if any): what the SDK cannot send, such as forwarded
/// addresses or replay headers on their own.
pub(crate) async fn request(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = reqwest::Client::new().request(method, format!("{}{path}", server.base));
    answer(req, headers, body, path).await
}

/// A minimal admin client over reqwest: Basic or Bearer credentials in
/// `auth`, sent as the `authorization` header of every call.
pub(crate) struct AdminApi {
    base: String,
    http: reqwest::Client,
    pub auth: String,
}

impl AdminApi {
    pub(crate) fn basic(server: &TestServer, id: &str, secret: &str) -> Self {
        Self {
            base: server.base.clone(),
            http: reqwest::Client::new(),
            auth: basic_auth(id, secret).1,
        }
    }

    /// The root admin (`admin` with [`ADMIN_PASSWORD`]).
    pub(crate) fn root(server: &TestServer) -> Self {
        Self::basic(server, "admin", ADMIN_PASSWORD)
    }

    /// A call with the credentials and nothing else.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, path, body, &[]).await
    }

    /// A call with the credentials and extra headers.
    pub(crate) async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> (StatusCode, Value) {
        let req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", &self.auth);
        answer(req, headers, body, path).await
    }

    /// A call that must succeed; its JSON body.
    pub(crate) async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await;
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }
}

/// A root admin call.
pub(crate) async fn admin(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    AdminApi::root(server).call(method, path, body).await
}

/// A user request with an optional JSON body through the SDK's raw call:
/// the status and the JSON body.
pub(crate) async fn call(
    api: &Authed,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let bytes = body
        .map(|b| serde_json::to_vec(&b).unwrap_or_default())
        .unwrap_or_default();
    api.raw(method, path, bytes, Some("application/json"))
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}
