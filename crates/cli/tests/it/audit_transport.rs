//! The transport attacks of the outside audit (issue 12, items 3, 10 and
//! the WebSocket part of 15), each played against the real server: slow
//! and half-open connections, connection floods from one address and in
//! all, oversize and trickled bodies, many sockets on one session, live
//! connections that outlive their token, and WebSocket protocol violations.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::TestServer;
use crate::support::*;

fn addr(server: &TestServer) -> SocketAddr {
    server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("server address")
}

/// A TCP connection to the server from the loopback address `from`.
async fn connect_from(server: &TestServer, from: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(from), 0))
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket.connect(addr(server)).await.expect("connect")
}

async fn connect(server: &TestServer) -> TcpStream {
    connect_from(server, Ipv4Addr::LOCALHOST).await
}

/// Starts a request whose headers never end: the slowloris opening.
async fn half_open(server: &TestServer, from: Ipv4Addr) -> TcpStream {
    let mut tcp = connect_from(server, from).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: unimsg\r\nX-Slow: 1\r\n")
        .await
        .expect("write");
    tcp
}

/// Waits (bounded) until the server closes `tcp`; returns what it sent.
/// A reset counts as closed too.
async fn closed_by_server(tcp: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    within(what, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    all
}

/// One HTTP/1.1 response read off a raw socket: status and JSON body.
async fn read_response(tcp: &mut TcpStream, what: &str) -> (u16, Value) {
    within(what, async {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tcp.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                other => panic!(
                    "{what}: connection ended in the response head ({other:?}): {}",
                    String::from_utf8_lossy(&head)
                ),
            }
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no status in {head}"));
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("{what}: no content-length in {head}"));
        let mut body = vec![0u8; length];
        tcp.read_exact(&mut body)
            .await
            .unwrap_or_else(|e| panic!("{what}: body: {e}"));
        let body = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {head}"));
        (status, body)
    })
    .await
}

async fn healthz_over(tcp: &mut TcpStream) -> u16 {
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: unimsg\r\n\r\n")
        .await
        .expect("write");
    read_response(tcp, "the /healthz answer").await.0
}

/// `/healthz` on a fresh connection, retried (bounded) while connections
/// that were just closed still hold their places: the server frees a
/// place when it notices the close, a moment after the client's EOF.
async fn healthz_eventually(server: &TestServer) {
    let url = format!("{}/healthz", server.base);
    for _ in 0..200 {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        if let Ok(resp) = client.get(&url).send().await
            && resp.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/healthz never answered once the connections were gone");
}

#[tokio::test]
async fn half_open_and_idle_connections_are_closed_after_the_header_timeout() {
    let server = TestServer::start_with(&[("UNIMSG_HTTP__HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let mut sse = bob.api.connect_sse(None).await.unwrap();
    let mut ws = bob.api.connect_ws(None).await.unwrap();
    let mut slow = half_open(&server, Ipv4Addr::LOCALHOST).await;
    let mut silent = connect(&server).await;
    closed_by_server(&mut slow, "the server to close a half-open request").await;
    closed_by_server(&mut silent, "the server to close a silent connection").await;
    // A keep-alive connection that goes quiet after a request is closed too.
    let mut kept = connect(&server).await;
    assert_eq!(healthz_over(&mut kept).await, 200);
    closed_by_server(&mut kept, "the server to close an idle keep-alive").await;
    // Streams opened before all that outlived the timeout and still deliver.
    alice
        .api
        .send_text(&bob.id, "still streaming", None)
        .await
        .unwrap();
    assert_eq!(text(&sse_event(&mut sse).await.1), "still streaming");
    assert_eq!(text(&ws_event(&mut ws).await), "still streaming");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_and_healthz_answers_once_they_go() {
    let server = TestServer::start_with(&[
        ("UNIMSG_HTTP__MAX_CONNECTIONS", "4"),
        ("UNIMSG_HTTP__HEADER_READ_TIMEOUT_SECS", "600"),
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(half_open(&server, Ipv4Addr::LOCALHOST).await);
    }
    // Accepted in order: the four above hold every place.
    for i in 0..3 {
        let mut extra = connect(&server).await;
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: unimsg\r\n\r\n")
            .await;
        let sent = closed_by_server(&mut extra, "an extra connection to be closed").await;
        assert!(
            sent.is_empty(),
            "extra connection {i} was answered: {}",
            String::from_utf8_lossy(&sent)
        );
    }
    drop(held);
    healthz_eventually(&server).await;
    let metrics = metrics_text(&server).await;
    // The three above, and any attempt of `healthz_eventually` that came
    // before a place was free.
    let refused: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("unimsg_http_connections_refused_total{cap=\"max_connections\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no refusal counter in {metrics}"));
    assert!(refused >= 3, "{refused} refusals counted");
    assert!(
        server.logs().contains("over the connection cap"),
        "no log line about refused connections"
    );
}

#[tokio::test]
async fn one_address_is_capped_while_others_and_trusted_proxies_still_connect() {
    let server = TestServer::start_with(&[
        ("UNIMSG_HTTP__MAX_CONNECTIONS_PER_IP", "3"),
        ("UNIMSG_HTTP__HEADER_READ_TIMEOUT_SECS", "600"),
        ("UNIMSG_ADMIN__TRUSTED_PROXIES", "127.0.0.3/32"),
    ])
    .await;
    let one = Ipv4Addr::new(127, 0, 0, 1);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(half_open(&server, one).await);
    }
    let mut fourth = connect_from(&server, one).await;
    let _ = fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: unimsg\r\n\r\n")
        .await;
    let sent = closed_by_server(&mut fourth, "the fourth connection from one address").await;
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    // Another address is not affected.
    let mut other = connect_from(&server, Ipv4Addr::new(127, 0, 0, 2)).await;
    assert_eq!(healthz_over(&mut other).await, 200);
    // A trusted proxy speaks for many clients: no cap per IP.
    let proxy = Ipv4Addr::new(127, 0, 0, 3);
    let mut from_proxy = Vec::new();
    for _ in 0..4 {
        from_proxy.push(half_open(&server, proxy).await);
    }
    let mut fifth = connect_from(&server, proxy).await;
    assert_eq!(healthz_over(&mut fifth).await, 200);
    drop(held);
    drop(from_proxy);
}

#[tokio::test]
async fn a_declared_length_over_the_limit_gets_413_before_any_body() {
    let server = TestServer::start().await;
    let alice = user(&server.client(), "alice").await;
    let host = addr(&server);
    let token = &alice.tokens.access_token;
    for (path, auth) in [
        ("/v1/messages", format!("Authorization: Bearer {token}\r\n")),
        ("/v1/auth/login", String::new()),
        ("/no/such/route", String::new()),
    ] {
        let mut tcp = connect(&server).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: 99999999999\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.expect("write");
        let (status, body) = read_response(&mut tcp, "the 413 answer").await;
        assert_eq!(status, 413, "{path}: {body}");
        assert_eq!(body["error"]["code"], "payload_too_large", "{path}: {body}");
    }
}

#[tokio::test]
async fn a_trickled_body_gets_408() {
    let server = TestServer::start_with(&[("UNIMSG_HTTP__REQUEST_TIMEOUT_SECS", "2")]).await;
    let mut tcp = connect(&server).await;
    let head = format!(
        "POST /v1/auth/login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{",
        addr(&server)
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let (mut read, mut write) = tcp.into_split();
    // The attacker: one byte every 200 ms, never the whole body (bounded).
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if write.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    within("the 408 answer", async {
        while !String::from_utf8_lossy(&response).contains("}}") {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    trickle.abort();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"request_timeout""#), "{text}");
}

/// Opens a WebSocket by hand; returns the socket after the 101, or the
/// refusal's status and JSON body.
async fn raw_upgrade(server: &TestServer, token: &str) -> Result<TcpStream, (u16, Value)> {
    let mut tcp = connect(server).await;
    // No token at all: the socket authenticates with its first frame.
    let query = if token.is_empty() {
        String::new()
    } else {
        format!("?access_token={token}")
    };
    let request = format!(
        "GET /v1/ws{query} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        addr(server)
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    within("the upgrade answer", async {
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).await.expect("handshake");
            head.push(byte[0]);
        }
    })
    .await;
    if head.starts_with(b"HTTP/1.1 101") {
        return Ok(tcp);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: usize = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    within("the refusal's body", tcp.read_exact(&mut body))
        .await
        .unwrap();
    Err((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

#[tokio::test]
async fn one_session_cannot_hold_more_than_its_cap_of_live_connections() {
    let server =
        TestServer::start_with(&[("UNIMSG_DELIVERY__MAX_CONNECTIONS_PER_SESSION", "2")]).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let token = alice.tokens.access_token.clone();
    let first = alice.api.connect_ws(None).await.unwrap();
    let _sse = alice.api.connect_sse(None).await.unwrap();
    // WebSocket and SSE count together: a third of either is refused.
    match raw_upgrade(&server, &token).await {
        Ok(_) => panic!("a third live connection of one session was accepted"),
        Err((status, body)) => {
            assert_eq!(status, 429, "{body}");
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("live connections"), "{message}");
        }
    }
    let sse = reqwest::Client::new()
        .get(format!("{}/v1/events", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status().as_u16(), 429);
    // The same check holds for a socket that authenticates in its first frame.
    let err = client.connect_ws_first_frame(&token, None).await.err();
    assert!(err.is_some(), "a first-frame socket passed the cap");
    // Another session of the same user has its own count.
    let other = login(&client, "alice", "ios", None).await;
    let _ws = other
        .api
        .connect_ws(None)
        .await
        .expect("another session was refused");
    // Closing one frees its place.
    drop(first);
    let mut reopened = None;
    for _ in 0..200 {
        if let Ok(ws) = alice.api.connect_ws(None).await {
            reopened = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reopened.is_some(),
        "the place of a closed socket was never freed"
    );
}

/// Imports `id` and mints it a token that expires in `ttl_secs`.
async fn short_token(server: &TestServer, id: &str, ttl_secs: u64) -> String {
    let admin = AdminApi::root(server);
    admin
        .ok(
            Method::POST,
            "/v1/admin/users",
            Some(json!({"users": [{"user_id": id, "display_name": id}]})),
        )
        .await;
    let minted = admin
        .ok(
            Method::POST,
            &format!("/v1/admin/users/{id}/tokens"),
            Some(json!({"platform": "web", "ttl_secs": ttl_secs})),
        )
        .await;
    minted["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {minted}"))
        .to_owned()
}

/// The bytes of an unmasked close frame from the server.
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut frame = vec![0x88, (2 + reason.len()) as u8];
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason.as_bytes());
    frame
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_websocket_closes_with_4001_when_its_token_expires() {
    let server = TestServer::start().await;
    let token = short_token(&server, "brief", 2).await;
    let mut tcp = raw_upgrade(&server, &token)
        .await
        .unwrap_or_else(|(s, b)| panic!("upgrade refused: {s} {b}"));
    let bytes = closed_by_server(&mut tcp, "the socket to close at the token's expiry").await;
    let close = close_frame(4001, "access token expired");
    assert!(
        bytes.ends_with(&close),
        "not closed with 4001 as the last frame: {bytes:?}"
    );
}

/// Imports `id` and mints it a token pair (access token valid `ttl_secs`).
async fn short_tokens(server: &TestServer, id: &str, ttl_secs: u64) -> (String, String) {
    let minted = AdminApi::root(server)
        .ok(
            Method::POST,
            &format!("/v1/admin/users/{id}/tokens"),
            Some(json!({"platform": "web", "device_id": "d1", "ttl_secs": ttl_secs})),
        )
        .await;
    let field = |k: &str| {
        minted[k]
            .as_str()
            .unwrap_or_else(|| panic!("no {k} in {minted}"))
            .to_owned()
    };
    (field("access_token"), field("refresh_token"))
}

#[tokio::test]
async fn a_fresh_token_of_the_same_session_keeps_a_websocket_open_past_the_old_expiry() {
    let server = TestServer::start().await;
    let client = server.client();
    let sender = user(&client, "sender").await;
    // A witness whose token was minted later, so it expires no earlier.
    let _ = short_token(&server, "keeper", 2).await;
    let (access, refresh) = short_tokens(&server, "keeper", 2).await;
    let witness = short_token(&server, "witness", 2).await;
    let mut ws = client.connect_ws(&access, None).await.unwrap();
    match within("token.expiring", ws.next_reply()).await.unwrap() {
        Some(unimsg_client::proto::ws::ReplyFrame::TokenExpiring { expires_at }) => {
            assert!(expires_at > 0);
        }
        other => panic!("expected token.expiring, got {other:?}"),
    }
    // A token of another session does not move the deadline.
    ws.send_raw_text(json!({"type": "auth", "token": witness}).to_string())
        .await
        .unwrap();
    match within("the refusal", ws.next_reply()).await.unwrap() {
        Some(unimsg_client::proto::ws::ReplyFrame::Error { error, .. }) => {
            assert_eq!(error.code, unimsg_client::proto::ErrorCode::Unauthorized);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let fresh = client.refresh(&refresh).await.expect("refresh");
    ws.send_raw_text(json!({"type": "auth", "token": fresh.access_token}).to_string())
        .await
        .unwrap();
    match within("auth.ok", ws.next_reply()).await.unwrap() {
        Some(unimsg_client::proto::ws::ReplyFrame::AuthOk { expires_at }) => {
            assert!(expires_at > 0);
        }
        other => panic!("expected auth.ok, got {other:?}"),
    }
    // Once the witness (expiring no earlier than the old token) is closed,
    // the old deadline has passed: the re-authenticated socket still delivers.
    let mut tcp = raw_upgrade(&server, &witness)
        .await
        .unwrap_or_else(|(s, b)| panic!("upgrade refused: {s} {b}"));
    let bytes = closed_by_server(&mut tcp, "the witness to expire").await;
    assert!(bytes.ends_with(&close_frame(4001, "access token expired")));
    let keeper = unimsg_client::proto::UserId::parse("keeper").unwrap();
    sender
        .api
        .send_text(&keeper, "after the old expiry", None)
        .await
        .unwrap();
    assert_eq!(text(&ws_event(&mut ws).await), "after the old expiry");
    assert!(!ws.is_closed(), "closed with {:?}", ws.close_code());
}

#[tokio::test]
async fn an_sse_stream_ends_when_its_token_expires() {
    let server = TestServer::start().await;
    let token = short_token(&server, "brief", 2).await;
    let mut sse = server.client().connect_sse(&token, None).await.unwrap();
    let end = within("the stream to end at the token's expiry", sse.next_event())
        .await
        .expect("sse");
    assert!(end.is_none(), "an event instead of the end: {end:?}");
    assert!(sse.is_ended());
}

/// A masked client frame with the given first byte and payload.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![first];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn websocket_protocol_violations_get_their_close_codes() {
    let server = TestServer::start_with(&[("UNIMSG_DELIVERY__WS_MAX_MESSAGE_BYTES", "4096")]).await;
    let alice = user(&server.client(), "alice").await;
    let cases: [(&str, Vec<u8>, u16, &str); 4] = [
        (
            "reserved bit set",
            client_frame(0x80 | 0x40 | 0x1, br#"{"type":"ping"}"#),
            1002,
            "protocol error",
        ),
        (
            "unknown opcode",
            client_frame(0x80 | 0x3, b"x"),
            1002,
            "protocol error",
        ),
        (
            "text that is not UTF-8",
            client_frame(0x80 | 0x1, &[0xff, 0xfe, 0xfd]),
            1007,
            "text frame is not valid UTF-8",
        ),
        (
            "a message over the limit",
            client_frame(0x80 | 0x1, &vec![b'z'; 8000]),
            1009,
            "message too big",
        ),
    ];
    for (name, frame, code, reason) in cases {
        let mut tcp = raw_upgrade(&server, &alice.tokens.access_token)
            .await
            .unwrap_or_else(|(s, b)| panic!("{name}: upgrade refused: {s} {b}"));
        // A client may be cut off before it has written all of it.
        let _ = tcp.write_all(&frame).await;
        let bytes = closed_by_server(&mut tcp, "the close after a violation").await;
        assert!(
            contains(&bytes, &close_frame(code, reason)),
            "{name}: no {code} close frame in {bytes:?}"
        );
    }
    // The same before authenticating: a socket waiting for its auth frame.
    let mut tcp = raw_upgrade(&server, "")
        .await
        .unwrap_or_else(|(s, b)| panic!("upgrade without a token refused: {s} {b}"));
    let _ = tcp
        .write_all(&client_frame(0x80 | 0x1, &[0xc3, 0x28]))
        .await;
    let bytes = closed_by_server(&mut tcp, "the close after a violation").await;
    assert!(
        contains(&bytes, &close_frame(1007, "text frame is not valid UTF-8")),
        "first frame: no 1007 close frame in {bytes:?}"
    );
    server.client().health().await.unwrap();
}
