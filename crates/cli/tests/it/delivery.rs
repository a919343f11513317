//! Transport limits: idle timeouts with heartbeats, slow consumers bounded
//! and counted, and the zero-configuration start.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use unimsg_testkit::unimsg;

use crate::harness::{START_TIMEOUT, TestServer};
use crate::support::*;

/// Opens a WebSocket by hand and never answers anything, so the server's
/// pings go unanswered and nothing is read until asked.
async fn raw_ws(base: &str, token: &str) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /v1/ws?access_token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.expect("handshake");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// Reads everything until the server closes the connection.
async fn read_to_end(tcp: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    within(
        "the server to close the connection",
        tcp.read_to_end(&mut all),
    )
    .await
    .ok();
    all
}

fn contains_close(bytes: &[u8], code: u16, reason: &str) -> bool {
    let mut needle = vec![0x88, (2 + reason.len()) as u8];
    needle.extend_from_slice(&code.to_be_bytes());
    needle.extend_from_slice(reason.as_bytes());
    bytes.windows(needle.len()).any(|w| w == needle.as_slice())
}

#[tokio::test]
async fn a_silent_websocket_is_pinged_then_closed_for_idleness() {
    let server = TestServer::start_with(&[
        ("UNIMSG_DELIVERY__HEARTBEAT_SECS", "1"),
        ("UNIMSG_DELIVERY__IDLE_TIMEOUT_SECS", "2"),
    ])
    .await;
    let alice = user(&server.client(), "alice").await;
    let mut tcp = raw_ws(&server.base, &alice.tokens.access_token).await;
    let bytes = read_to_end(&mut tcp).await;
    assert!(
        bytes.windows(2).any(|w| w == [0x89, 0x00]),
        "no ping was sent before closing"
    );
    assert!(
        contains_close(&bytes, 4000, "idle timeout"),
        "no idle-timeout close frame"
    );
}

#[tokio::test]
async fn an_answering_client_is_not_idle() {
    let server = TestServer::start_with(&[
        ("UNIMSG_DELIVERY__HEARTBEAT_SECS", "1"),
        ("UNIMSG_DELIVERY__IDLE_TIMEOUT_SECS", "2"),
    ])
    .await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let mut ws = bob.api.connect_ws(None).await.unwrap();
    // Reading answers the server's pings. Listening for longer than two
    // idle timeouts, the socket must neither close nor deliver anything.
    let quiet = tokio::time::timeout(Duration::from_secs(5), ws.next_event()).await;
    assert!(
        quiet.is_err(),
        "the socket ended or delivered: {:?}",
        quiet.map(|r| r.map(|e| e.map(|e| e.seq)))
    );
    alice
        .api
        .send_text(&bob.id, "still there", None)
        .await
        .unwrap();
    assert_eq!(text(&ws_event(&mut ws).await), "still there");
    assert!(!ws.is_closed(), "closed with code {:?}", ws.close_code());
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_counted() {
    let server = TestServer::start_with(&[
        ("UNIMSG_DELIVERY__OUTBOUND_QUEUE", "4"),
        ("UNIMSG_STORE__SYNC", "normal"),
    ])
    .await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let mut stalled = raw_ws(&server.base, &bob.tokens.access_token).await;
    let mut reader = bob.api.connect_ws(None).await.unwrap();
    let chunk = "x".repeat(60 * 1024);
    let mut counted = false;
    // Enough to fill the kernel's socket buffers many times over; stops as
    // soon as the server reports the disconnect.
    for i in 0..3000u64 {
        alice.api.send_text(&bob.id, &chunk, None).await.unwrap();
        // The reading connection keeps up and is never dropped.
        assert_eq!(ws_event(&mut reader).await.seq.0, i + 1);
        if i % 16 == 15 {
            let text = metrics_text(&server).await;
            if text.contains("unimsg_hub_slow_consumer_disconnects 1") {
                counted = true;
                break;
            }
        }
    }
    assert!(counted, "the stalled client was never disconnected");
    let bytes = read_to_end(&mut stalled).await;
    assert!(!bytes.is_empty());
    assert!(!reader.is_closed());
    client.health().await.unwrap();
}

#[tokio::test]
async fn serve_starts_with_no_configuration_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_unimsg"));
    cmd.arg("serve")
        .current_dir(dir.path())
        // Only the port is chosen: 8080 may be taken on a shared machine.
        .env("UNIMSG_LISTEN", "127.0.0.1:0")
        .env_remove("UNIMSG_DATA_DIR")
        .env_remove("UNIMSG_CONFIG");
    let started = unimsg::start(cmd, START_TIMEOUT)
        .await
        .expect("the server without configuration");
    let (mut child, addr) = (started.child, started.addr);
    let health = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(health.status(), 200);
    for file in ["data/unimsg.db", "data/master.key"] {
        assert!(dir.path().join(file).exists(), "{file} was not created");
    }
    // The token signing keys live in the database, wrapped by the master key.
    assert!(!dir.path().join("data/signing.key").exists());
    child.kill().await.ok();
}

#[tokio::test]
async fn sse_sends_heartbeats_and_refuses_a_malformed_last_event_id() {
    let server = TestServer::start_with(&[("UNIMSG_DELIVERY__HEARTBEAT_SECS", "1")]).await;
    let alice = user(&server.client(), "alice").await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/events", server.base);

    let bad = http
        .get(&url)
        .bearer_auth(&alice.tokens.access_token)
        .header("Last-Event-ID", "seven")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");

    let mut stream = http
        .get(&url)
        .bearer_auth(&alice.tokens.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let content_type = stream
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    // With no events, the first bytes on the stream are a heartbeat comment.
    let chunk = within("a heartbeat", stream.chunk())
        .await
        .unwrap()
        .expect("the stream ended");
    assert!(
        chunk.starts_with(b":"),
        "{:?}",
        String::from_utf8_lossy(&chunk)
    );
}

/// A connection that starts at its inbox's end reads the store once, for
/// that end: its replay has nothing to read and does not ask. (It read
/// an empty page of the inbox on every connect, a second store read and
/// a trip to the blocking pool.)
#[tokio::test]
async fn a_connection_at_the_inbox_end_reads_the_store_once() {
    const READS: &str = r#"unimsg_store_duration_seconds_count{call="read"} "#;
    const CONNECTS: u64 = 5;
    let server = TestServer::start().await;
    let alice = user(&server.client(), "alice").await;
    // Fills the session and token caches.
    let mut warm = alice.api.connect_ws(None).await.unwrap();
    warm.ping().await.unwrap();
    // What one scrape of /metrics reads itself, if anything.
    let first = counter(&server, READS).await;
    let per_scrape = counter(&server, READS).await - first;
    let before = counter(&server, READS).await;
    let mut open = Vec::new();
    for _ in 0..CONNECTS {
        let mut ws = alice.api.connect_ws(None).await.unwrap();
        // Answered in the connection's loop, after its replay.
        ws.ping().await.unwrap();
        open.push(ws);
    }
    let reads = counter(&server, READS).await - before - per_scrape;
    assert_eq!(
        reads, CONNECTS,
        "{CONNECTS} connections at the inbox's end made {reads} store reads"
    );
}
