//! Helpers shared by the integration tests: users, bounded waits, event checks.

use std::future::Future;
use std::time::Duration;

use unimsg_client::proto::api::{LoginRequest, RegisterRequest, TokenPair};
use unimsg_client::proto::{Event, EventType, Platform, Seq, UserId};
use unimsg_client::{Authed, Client, SseConnection, WsConnection};

/// A bound on how long a test waits for something the server must do.
/// Reaching it fails the test; it never paces the test.
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub const PASSWORD: &str = "correct horse battery";

pub struct TestUser {
    pub id: UserId,
    pub username: String,
    pub tokens: TokenPair,
    pub api: Authed,
}

pub async fn register(client: &Client, username: &str) -> UserId {
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

pub async fn login(
    client: &Client,
    username: &str,
    platform: &str,
    device: Option<&str>,
) -> TestUser {
    let req = LoginRequest {
        username: username.into(),
        password: PASSWORD.into(),
        platform: Platform::parse(platform).unwrap_or_else(|e| panic!("{e}")),
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
pub async fn user(client: &Client, username: &str) -> TestUser {
    register(client, username).await;
    login(client, username, "web", None).await
}

pub async fn ws_event(ws: &mut WsConnection) -> Event {
    within("a WebSocket event", ws.next_event())
        .await
        .unwrap_or_else(|e| panic!("websocket: {e}"))
        .unwrap_or_else(|| panic!("websocket closed (code {:?})", ws.close_code()))
}

pub async fn sse_event(sse: &mut SseConnection) -> (Option<String>, Event) {
    let e = within("an SSE event", sse.next_event())
        .await
        .unwrap_or_else(|e| panic!("sse: {e}"))
        .unwrap_or_else(|| panic!("sse stream ended"));
    (e.id, e.event)
}

/// The full inbox of a user, by paging `GET /v1/sync`.
pub async fn full_sync(api: &Authed) -> Vec<Event> {
    let mut out = Vec::new();
    let mut after = Seq(0);
    loop {
        let page = api
            .sync(Some(after), Some(200))
            .await
            .unwrap_or_else(|e| panic!("sync: {e}"));
        out.extend(page.events);
        after = page.next_after;
        if !page.has_more {
            return out;
        }
    }
}

/// Asserts seqs run 1, 2, 3… with no gap and no repeat.
pub fn assert_gap_free(events: &[Event]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq,
            Seq(i as u64 + 1),
            "seq {} at position {i}: gap or duplicate",
            e.seq
        );
    }
}

pub fn message_id(e: &Event) -> String {
    assert_eq!(e.kind, EventType::MessageNew, "not a message: {e:?}");
    e.data["message_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no message_id in {e:?}"))
        .to_owned()
}

pub fn text(e: &Event) -> String {
    e.data["content"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
