//! The main flow: direct messages live on WebSocket and SSE, idempotent
//! sends, gap-free sync, resumption, read receipts, recall, history.

use unimsg_client::proto::api::MessageKind;
use unimsg_client::proto::{ConversationId, EventType, MessageId, Seq};
use unimsg_client::text_message;

use crate::harness::TestServer;
use crate::support::*;

#[tokio::test]
async fn fifty_messages_arrive_live_on_both_transports_in_order_and_sync_matches() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let mut ws = bob.api.connect_ws(None).await.expect("ws");
    let mut sse = bob.api.connect_sse(None).await.expect("sse");

    let mut sent = Vec::new();
    for i in 0..50 {
        let r = alice
            .api
            .send_text(&bob.id, &format!("message {i}"), Some(&format!("cm-{i}")))
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
        assert!(!r.duplicate);
        assert_eq!(r.seq, Seq(i + 1), "the sender's own inbox seq");
        sent.push(r.message_id.to_string());
    }

    let mut ws_events = Vec::new();
    let mut sse_events = Vec::new();
    for i in 0..50 {
        let e = ws_event(&mut ws).await;
        assert_eq!(e.kind, EventType::MessageNew);
        assert_eq!(e.seq, Seq(i + 1));
        assert_eq!(text(&e), format!("message {i}"));
        assert_eq!(message_id(&e), sent[i as usize]);
        ws_events.push(e);
        let (id, e) = sse_event(&mut sse).await;
        assert_eq!(id, Some((i + 1).to_string()), "the SSE id is the seq");
        sse_events.push(e);
    }
    assert_eq!(
        ws_events, sse_events,
        "both transports carry identical events"
    );

    // A retried client_msg_id returns the original and creates nothing.
    let retry = alice
        .api
        .send_text(&bob.id, "again", Some("cm-7"))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message_id.to_string(), sent[7]);
    assert_eq!(retry.seq, Seq(8));

    let synced = full_sync(&bob.api).await;
    assert_eq!(synced.len(), 50, "the retry added nothing");
    assert_gap_free(&synced);
    assert_eq!(
        synced, ws_events,
        "sync returns exactly what was delivered live"
    );
    let alice_inbox = full_sync(&alice.api).await;
    assert_eq!(alice_inbox.len(), 50);
    assert_gap_free(&alice_inbox);

    // The next live event is the next seq: nothing was queued by the retry.
    alice
        .api
        .send_text(&bob.id, "after retry", None)
        .await
        .unwrap();
    assert_eq!(ws_event(&mut ws).await.seq, Seq(51));
    assert_eq!(sse_event(&mut sse).await.1.seq, Seq(51));
}

#[tokio::test]
async fn sse_last_event_id_and_ws_after_resume_exactly_after_the_given_seq() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    for i in 0..30 {
        alice
            .api
            .send_text(&bob.id, &format!("m{i}"), None)
            .await
            .unwrap();
    }
    let mut sse = bob.api.connect_sse(Some(Seq(12))).await.unwrap();
    let mut ws = bob.api.connect_ws(Some(Seq(25))).await.unwrap();
    let mut first_frame = client
        .connect_ws_first_frame(&bob.tokens.access_token, Some(Seq(28)))
        .await
        .unwrap();
    assert_eq!(ws.ready().last_seq, Seq(30));
    alice.api.send_text(&bob.id, "live", None).await.unwrap();

    for expected in 13..=31 {
        let (id, e) = sse_event(&mut sse).await;
        assert_eq!((id, e.seq), (Some(expected.to_string()), Seq(expected)));
    }
    for expected in 26..=31 {
        assert_eq!(ws_event(&mut ws).await.seq, Seq(expected));
    }
    for expected in 29..=31 {
        assert_eq!(ws_event(&mut first_frame).await.seq, Seq(expected));
    }
}

#[tokio::test]
async fn websocket_send_ack_read_and_ping_frames() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let mut alice_ws = alice.api.connect_ws(None).await.unwrap();
    let mut bob_ws = bob.api.connect_ws(None).await.unwrap();

    let sent = alice_ws
        .send(text_message(&bob.id, "over ws", Some("w1")), Some("req-1"))
        .await
        .unwrap();
    assert_eq!(sent.seq, Seq(1));
    let own = ws_event(&mut alice_ws).await;
    assert_eq!(
        message_id(&own),
        sent.message_id.to_string(),
        "the sender's devices see their own message"
    );
    let got = ws_event(&mut bob_ws).await;
    assert_eq!(text(&got), "over ws");

    assert_eq!(bob_ws.ack(got.seq).await.unwrap(), Seq(1));
    let conv = ConversationId::direct(&alice.id, &bob.id);
    let read = bob_ws.read(&conv, &sent.message_id).await.unwrap();
    assert_eq!(read.read_upto, 1);
    let receipt = ws_event(&mut alice_ws).await;
    assert_eq!(receipt.kind, EventType::ReceiptRead);
    assert_eq!(receipt.data["user_id"], bob.id.as_str());
    assert_eq!(receipt.data["read_upto"], 1);
    bob_ws.ping().await.unwrap();

    let convs = alice.api.conversations().await.unwrap();
    assert_eq!(convs.conversations.len(), 1);
    assert_eq!(convs.conversations[0].peer_read_upto, 1);
}

#[tokio::test]
async fn read_receipts_unread_counts_history_paging_and_recall() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let r = alice
            .api
            .send_text(&bob.id, &format!("h{i}"), None)
            .await
            .unwrap();
        ids.push(r.message_id);
    }
    let conv = ConversationId::direct(&alice.id, &bob.id);
    let list = bob.api.conversations().await.unwrap();
    assert_eq!(list.conversations[0].unread, 7);
    assert_eq!(list.conversations[0].peer, Some(alice.id));
    assert_eq!(list.conversations[0].peer_display_name, "alice");

    let mut alice_ws = alice.api.connect_ws(None).await.unwrap();
    bob.api.read(&conv, &ids[4]).await.unwrap();
    let receipt = ws_event(&mut alice_ws).await;
    assert_eq!(
        (receipt.kind, receipt.data["read_upto"].as_u64()),
        (EventType::ReceiptRead, Some(5))
    );
    let list = bob.api.conversations().await.unwrap();
    assert_eq!(list.conversations[0].unread, 2);

    // History pages newest first with a cursor.
    let page = bob.api.history(&conv, None, Some(3)).await.unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.conv_seq).collect::<Vec<_>>(),
        vec![7, 6, 5]
    );
    let page = bob
        .api
        .history(&conv, page.next_before, Some(3))
        .await
        .unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.conv_seq).collect::<Vec<_>>(),
        vec![4, 3, 2]
    );
    let page = bob
        .api
        .history(&conv, page.next_before, Some(3))
        .await
        .unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.conv_seq).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(page.next_before, None);
    assert_eq!(page.messages[0].content["text"], "h0");
    assert_eq!(page.messages[0].kind, MessageKind::Chat);

    // Recall: only the sender; both sides get message.recalled; content is gone.
    let mut bob_ws = bob.api.connect_ws(None).await.unwrap();
    let err = bob
        .api
        .recall(&ids[6])
        .await
        .expect_err("the recipient recalled");
    assert_eq!(err.status(), Some(403));
    alice.api.recall(&ids[6]).await.unwrap();
    let recalled = ws_event(&mut bob_ws).await;
    assert_eq!(recalled.kind, EventType::MessageRecalled);
    assert_eq!(recalled.data["message_id"], ids[6].as_str());
    let again = alice.api.recall(&ids[6]).await.expect_err("recalled twice");
    assert_eq!(again.status(), Some(409));
    let page = bob.api.history(&conv, None, Some(1)).await.unwrap();
    assert!(page.messages[0].recalled);
    assert!(page.messages[0].content.is_null());
    let synced = full_sync(&bob.api).await;
    let original = synced
        .iter()
        .find(|e| e.data["message_id"] == ids[6].as_str())
        .expect("gone");
    assert!(
        original.data["content"].is_null(),
        "sync no longer reveals recalled content"
    );
}

#[tokio::test]
async fn recall_after_the_window_is_refused() {
    let server = TestServer::start_with(&[("UNIMSG_MESSAGING__RECALL_WINDOW_SECS", "0")]).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let sent = alice
        .api
        .send_text(&bob.id, "too late", None)
        .await
        .unwrap();
    let err = alice
        .api
        .recall(&sent.message_id)
        .await
        .expect_err("recalled outside the window");
    assert_eq!(err.status(), Some(410));
    let unknown = MessageId::parse("nope").unwrap();
    assert_eq!(
        alice
            .api
            .recall(&unknown)
            .await
            .err()
            .and_then(|e| e.status()),
        Some(404)
    );
}
