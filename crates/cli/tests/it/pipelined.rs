//! Pipelined WebSocket sends (`delivery.ws_send_window`): many `send`
//! frames in flight on one socket are answered by id and stored in the
//! order they were sent, to direct chats and to groups.

use reqwest::Method;
use serde_json::json;
use unimsg_client::proto::api::{MessageKind, Recipient, SendRequest};
use unimsg_client::proto::ws::{ClientFrame, ReplyFrame};

use crate::harness::TestServer;
use crate::support::*;

fn numbered(to: &Recipient, i: usize) -> SendRequest {
    SendRequest {
        to: to.clone(),
        kind: MessageKind::Chat,
        content: json!({"text": format!("m{i}")}),
        client_msg_id: Some(format!("cm-{i}")),
    }
}

/// Message `i` as a `send` frame with frame id `id`.
fn numbered_frame(to: &Recipient, i: usize, id: String) -> ClientFrame {
    let req = numbered(to, i);
    ClientFrame::Send {
        id: Some(id),
        to: req.to,
        kind: req.kind,
        content: req.content,
        client_msg_id: req.client_msg_id,
    }
}

/// A server with a window of 64 sends per socket and room for many sends.
async fn pipelining_server() -> TestServer {
    TestServer::start_with(&[
        ("UNIMSG_LIMITS__SEND_PER_MINUTE", "100000"),
        ("UNIMSG_DELIVERY__WS_SEND_WINDOW", "64"),
    ])
    .await
}

#[tokio::test]
async fn pipelined_sends_keep_their_order_in_every_inbox() {
    const N: usize = 300;
    let server = pipelining_server().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let carol = user(&client, "carol").await;
    let mut ws = alice.api.connect_ws(None).await.unwrap();

    // Direct: N sends in flight at once (in batches the socket buffers
    // hold), answered by id, in order in the receiver's inbox.
    let to_bob = Recipient::User(bob.id.clone());
    let mut sent = Vec::new();
    for batch in (0..N).collect::<Vec<_>>().chunks(100) {
        let reqs = batch.iter().map(|i| numbered(&to_bob, *i)).collect();
        for result in ws.send_many(reqs).await.unwrap() {
            sent.push(result.unwrap());
        }
    }
    let expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    let inbox = full_sync(&bob.api).await;
    assert_gap_free(&inbox);
    assert_eq!(message_texts(&inbox), expected);
    // The sender's own copies have rising seqs in the same order.
    assert!(sent.windows(2).all(|w| w[0].seq < w[1].seq));

    // Group: the same order for every member.
    let (status, group) = call(
        &alice.api,
        Method::POST,
        "/v1/groups",
        Some(json!({"name": "g", "members": [bob.id, carol.id]})),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group_id = group["group_id"].as_str().unwrap().to_owned();
    let to_group = Recipient::Group(unimsg_client::proto::GroupId::parse(&group_id).unwrap());
    let reqs = (0..100).map(|i| numbered(&to_group, 1000 + i)).collect();
    for result in ws.send_many(reqs).await.unwrap() {
        result.unwrap();
    }
    let group_expected: Vec<String> = (0..100).map(|i| format!("m{}", 1000 + i)).collect();
    for member in [&bob, &carol] {
        let all = message_texts(&full_sync(&member.api).await);
        let of_group: Vec<String> = all.into_iter().filter(|t| t.len() == 5).collect();
        assert_eq!(of_group, group_expected, "{}", member.username);
    }
}

#[tokio::test]
async fn pipelined_answers_carry_the_frame_id_and_client_msg_id_and_a_refusal_keeps_its_place() {
    let server = TestServer::start_with(&[("UNIMSG_LIMITS__SEND_PER_MINUTE", "100000")]).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let mut ws = alice.api.connect_ws(None).await.unwrap();
    let to_bob = Recipient::User(bob.id.clone());
    let nobody = Recipient::User(unimsg_client::proto::UserId::parse("nobody-here").unwrap());
    // Frames written back to back; the middle one is refused.
    for (i, to) in [(0, &to_bob), (1, &nobody), (2, &to_bob)] {
        ws.send_frame(&numbered_frame(to, i, format!("f{i}")))
            .await
            .unwrap();
    }
    let mut answered = Vec::new();
    while answered.len() < 3 {
        match ws.next_reply().await.unwrap() {
            Some(ReplyFrame::SendOk {
                id, client_msg_id, ..
            }) => answered.push((id.unwrap(), client_msg_id.unwrap(), true)),
            Some(ReplyFrame::Error {
                id, client_msg_id, ..
            }) => answered.push((id.unwrap(), client_msg_id.unwrap(), false)),
            Some(_) => {}
            None => panic!("closed"),
        }
    }
    answered.sort();
    assert_eq!(
        answered,
        [
            ("f0".to_owned(), "cm-0".to_owned(), true),
            ("f1".to_owned(), "cm-1".to_owned(), false),
            ("f2".to_owned(), "cm-2".to_owned(), true),
        ]
    );
    assert_eq!(message_texts(&full_sync(&bob.api).await), ["m0", "m2"]);
}

/// A frame that reads the store, sent behind a window of pipelined sends
/// that queue for the store's readers too: the socket answers all of them.
/// (Before, the in-flight sends were not polled while the socket handled
/// the frame; a reader handed to a queued send was held by a future
/// nobody polled, and the frame's own read waited behind it for ever.)
#[tokio::test]
async fn a_frame_that_reads_the_store_behind_a_full_window_of_sends_is_answered() {
    const N: usize = 60;
    let server = pipelining_server().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let mut ws = alice.api.connect_ws(None).await.unwrap();
    let to_bob = Recipient::User(bob.id.clone());
    for round in 0..3 {
        for i in 0..N {
            let k = round * N + i;
            ws.send_frame(&numbered_frame(&to_bob, k, format!("s{k}")))
                .await
                .unwrap();
        }
        // Re-authentication reads the session from the store.
        ws.send_frame(&ClientFrame::Auth {
            token: alice.tokens.access_token.clone(),
            after: None,
        })
        .await
        .unwrap();
        let (mut sent, mut authed) = (0, false);
        within("the sends and the auth frame to be answered", async {
            while sent < N || !authed {
                match ws.next_reply().await.unwrap() {
                    Some(ReplyFrame::SendOk { .. }) => sent += 1,
                    Some(ReplyFrame::AuthOk { .. }) => authed = true,
                    Some(ReplyFrame::Error { error, .. }) => panic!("refused: {}", error.message),
                    Some(_) => {}
                    None => panic!("closed"),
                }
            }
        })
        .await;
    }
    let inbox = full_sync(&bob.api).await;
    assert_eq!(inbox.len(), 3 * N);
}
