//! Bad input of every kind gets the documented 4xx with a JSON error body,
//! changes nothing and leaves the server serving.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use unimsg_client::proto::{EventType, Seq};

use crate::harness::TestServer;
use crate::support::*;

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    token: Option<String>,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &[u8],
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.to_owned(),
        token: token.map(str::to_owned),
        body: body.to_vec(),
        content_type: Some("application/json"),
        status,
        code,
    }
}

/// A token with `alg: none` and the claims of a real token, unsigned.
fn alg_none(real: &str) -> String {
    let claims = real.split('.').nth(1).unwrap_or_default();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{claims}.")
}

/// A real token whose signature was made by someone else's key: same
/// header and claims, other bytes.
fn forged(real: &str) -> String {
    let mut parts: Vec<String> = real.split('.').map(str::to_owned).collect();
    parts[2] = URL_SAFE_NO_PAD.encode([7u8; 64]);
    parts.join(".")
}

#[tokio::test]
async fn a_table_of_bad_requests_gets_4xx_json_and_changes_nothing() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let carol = user(&client, "carol").await;
    alice.api.send_text(&bob.id, "before", None).await.unwrap();
    let before_bob = full_sync(&bob.api).await;
    let before_alice = full_sync(&alice.api).await;

    let tok = alice.tokens.access_token.as_str();
    let to_bob = |content: &str| format!(r#"{{"to":{{"user":"{}"}},"content":{content}}}"#, bob.id);
    let big = format!(r#""{}""#, "x".repeat(2 * 1024 * 1024));
    let over_content = format!(r#""{}""#, "y".repeat(70 * 1024));
    let ab = format!(
        "/v1/conversations/{}/messages",
        unimsg_client::proto::ConversationId::direct(&alice.id, &bob.id)
    );
    let ab_read = ab.replace("/messages", "/read");
    let none = alg_none(tok);
    let forged = forged(tok);
    let mut cases = vec![
        case(
            "malformed JSON",
            Method::POST,
            "/v1/messages",
            Some(tok),
            b"{\"to\":",
            400,
            "bad_request",
        ),
        case(
            "wrong types",
            Method::POST,
            "/v1/messages",
            Some(tok),
            br#"{"to":{"user":5},"content":1}"#,
            400,
            "bad_request",
        ),
        case(
            "missing field",
            Method::POST,
            "/v1/messages",
            Some(tok),
            br#"{"content":{}}"#,
            400,
            "bad_request",
        ),
        case(
            "unknown field",
            Method::POST,
            "/v1/messages",
            Some(tok),
            to_bob(r#"{}, "bogus": 1"#).as_bytes(),
            400,
            "bad_request",
        ),
        case(
            "unknown kind",
            Method::POST,
            "/v1/messages",
            Some(tok),
            format!(
                r#"{{"to":{{"user":"{}"}},"kind":"spam","content":{{}}}}"#,
                bob.id
            )
            .as_bytes(),
            400,
            "bad_request",
        ),
        case(
            "invalid user id",
            Method::POST,
            "/v1/messages",
            Some(tok),
            br#"{"to":{"user":"a:b"},"content":{}}"#,
            400,
            "bad_request",
        ),
        case(
            "invalid UTF-8",
            Method::POST,
            "/v1/messages",
            Some(tok),
            b"{\"to\":{\"user\":\"\xff\xfe\"},\"content\":{}}",
            400,
            "bad_request",
        ),
        case(
            "missing token",
            Method::POST,
            "/v1/messages",
            None,
            to_bob("{}").as_bytes(),
            401,
            "unauthorized",
        ),
        case(
            "alg none token",
            Method::POST,
            "/v1/messages",
            Some(&none),
            to_bob("{}").as_bytes(),
            401,
            "unauthorized",
        ),
        case(
            "forged signature",
            Method::POST,
            "/v1/messages",
            Some(&forged),
            to_bob("{}").as_bytes(),
            401,
            "unauthorized",
        ),
        case(
            "garbage token",
            Method::POST,
            "/v1/messages",
            Some("garbage"),
            to_bob("{}").as_bytes(),
            401,
            "unauthorized",
        ),
        case(
            "2 MiB content",
            Method::POST,
            "/v1/messages",
            Some(tok),
            to_bob(&big).as_bytes(),
            413,
            "payload_too_large",
        ),
        case(
            "content over 64 KiB",
            Method::POST,
            "/v1/messages",
            Some(tok),
            to_bob(&over_content).as_bytes(),
            413,
            "payload_too_large",
        ),
        case(
            "unknown recipient",
            Method::POST,
            "/v1/messages",
            Some(tok),
            br#"{"to":{"user":"nobody"},"content":{}}"#,
            404,
            "not_found",
        ),
        case(
            "message to oneself",
            Method::POST,
            "/v1/messages",
            Some(tok),
            format!(r#"{{"to":{{"user":"{}"}},"content":{{}}}}"#, alice.id).as_bytes(),
            400,
            "bad_request",
        ),
        case(
            "another pair's history",
            Method::GET,
            &ab,
            Some(&carol.tokens.access_token),
            b"",
            404,
            "not_found",
        ),
        case(
            "another pair's read",
            Method::POST,
            &ab_read,
            Some(&carol.tokens.access_token),
            br#"{"message_id":"x"}"#,
            404,
            "not_found",
        ),
        case(
            "negative ack",
            Method::POST,
            "/v1/ack",
            Some(tok),
            br#"{"seq":-1}"#,
            400,
            "bad_request",
        ),
        case(
            "sync with text seq",
            Method::GET,
            "/v1/sync?after=abc",
            Some(tok),
            b"",
            400,
            "bad_request",
        ),
        case(
            "malformed conversation id",
            Method::GET,
            "/v1/conversations/zz/messages",
            Some(tok),
            b"",
            404,
            "not_found",
        ),
        case(
            "unknown route",
            Method::GET,
            "/v1/nothing",
            Some(tok),
            b"",
            404,
            "not_found",
        ),
        case(
            "wrong method",
            Method::DELETE,
            "/v1/messages",
            Some(tok),
            b"",
            405,
            "method_not_allowed",
        ),
        case(
            "short password",
            Method::POST,
            "/v1/auth/register",
            None,
            br#"{"username":"zed","password":"x"}"#,
            400,
            "bad_request",
        ),
        case(
            "bad platform",
            Method::POST,
            "/v1/auth/login",
            None,
            br#"{"username":"alice","password":"correct horse battery","platform":"Web Browser"}"#,
            400,
            "bad_request",
        ),
        case(
            "bad refresh token type",
            Method::POST,
            "/v1/auth/refresh",
            None,
            br#"{"refresh_token":7}"#,
            400,
            "bad_request",
        ),
    ];
    let mut wrong_type = case(
        "wrong content type",
        Method::POST,
        "/v1/messages",
        Some(tok),
        to_bob("{}").as_bytes(),
        415,
        "unsupported_media_type",
    );
    wrong_type.content_type = Some("text/plain");
    cases.push(wrong_type);
    let mut bad_last_event = case(
        "SSE with a non-numeric after",
        Method::GET,
        "/v1/events?after=x",
        Some(tok),
        b"",
        400,
        "bad_request",
    );
    bad_last_event.content_type = None;
    cases.push(bad_last_event);

    for c in cases {
        // A fresh connection per case: after refusing an oversized body the
        // server closes the connection, as HTTP/1.1 lets it.
        let (status, body) = server
            .client()
            .raw(
                c.method.clone(),
                &c.path,
                c.token.as_deref(),
                c.body.clone(),
                c.content_type,
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(status, c.status, "{}: {body}", c.name);
        assert_eq!(body["error"]["code"], c.code, "{}: {body}", c.name);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}: {body}",
            c.name
        );
    }

    assert_eq!(full_sync(&bob.api).await, before_bob, "bob's inbox changed");
    assert_eq!(
        full_sync(&alice.api).await,
        before_alice,
        "alice's inbox changed"
    );
    client.health().await.expect("the server is down");
    client.ready().await.expect("the server is not ready");
}

#[tokio::test]
async fn bad_websocket_frames_get_error_frames_and_oversized_ones_close_only_that_socket() {
    let server = TestServer::start_with(&[("UNIMSG_DELIVERY__WS_MAX_MESSAGE_BYTES", "4096")]).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let mut ws = alice.api.connect_ws(None).await.unwrap();
    for junk in [
        "not json",
        "{}",
        r#"{"type":"send"}"#,
        r#"{"type":"ack","seq":"x"}"#,
        "[1,2,3]",
    ] {
        ws.send_raw_text(junk.to_owned()).await.unwrap();
        match within("an error reply", ws.next_reply()).await.unwrap() {
            Some(unimsg_client::proto::ws::ReplyFrame::Error { error, .. }) => {
                assert_eq!(
                    error.code,
                    unimsg_client::proto::ErrorCode::BadRequest,
                    "{junk}"
                );
            }
            other => panic!("{junk}: expected an error reply, got {other:?}"),
        }
    }
    // A later auth frame with a bad token is refused; the socket stays.
    ws.send_raw_text(r#"{"type":"auth","token":"t"}"#.to_owned())
        .await
        .unwrap();
    match within("an error reply", ws.next_reply()).await.unwrap() {
        Some(unimsg_client::proto::ws::ReplyFrame::Error { error, .. }) => {
            assert_eq!(error.code, unimsg_client::proto::ErrorCode::Unauthorized);
        }
        other => panic!("a bad re-auth token: expected an error reply, got {other:?}"),
    }
    // The connection still works after bad frames.
    let sent = ws
        .send(
            unimsg_client::text_message(&bob.id, "still alive", None),
            None,
        )
        .await
        .unwrap();
    assert_eq!(sent.seq, Seq(1));

    // A frame over the limit ends that connection, not the server.
    ws.send_raw_text("z".repeat(64 * 1024)).await.ok();
    while let Ok(Some(e)) = within("the oversized frame to close the socket", ws.next_event()).await
    {
        assert_eq!(e.kind, EventType::MessageNew);
    }
    let inbox = full_sync(&bob.api).await;
    assert_eq!(inbox.len(), 1);
    client.health().await.expect("the server is down");

    // A first frame that is not an auth frame is refused.
    let err = client.connect_ws_first_frame("garbage", None).await.err();
    assert!(err.is_some(), "a garbage first-frame token was accepted");
}
