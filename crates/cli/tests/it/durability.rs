//! Durability: acknowledged sends survive `kill -9`; `SIGTERM` shuts down
//! cleanly; message text never reaches the disk in the clear; secrets never
//! reach the log.

use std::collections::HashSet;

use unimsg_client::proto::Seq;

use crate::harness::TestServer;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sends_survive_kill_9_exactly_once_in_order() {
    let mut server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let carol = user(&client, "carol").await;

    // Concurrent senders, so acknowledged sends share group commits.
    let mut tasks = Vec::new();
    for (sender, to, tag) in [
        (&alice, &bob, "a"),
        (&carol, &bob, "c"),
        (&bob, &alice, "b"),
    ] {
        let (api, to, tag) = (sender.api.clone(), to.id.clone(), tag.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40 {
                let r = api
                    .send_text(&to, &format!("{tag}{i}"), Some(&format!("{tag}-{i}")))
                    .await;
                acked.push(r.expect("send").message_id.to_string());
            }
            acked
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    server.kill9().await;
    let server = server.restart().await;
    let client = server.client();

    let bob = login(&client, "bob", "web", None).await;
    let alice = login(&client, "alice", "web", None).await;
    let bob_inbox = full_sync(&bob.api).await;
    let alice_inbox = full_sync(&alice.api).await;
    // bob: 40 from alice + 40 from carol + his own 40; alice: 40 + 40.
    let messages = |events: &[unimsg_client::proto::Event]| {
        events
            .iter()
            .filter(|e| e.kind == unimsg_client::proto::EventType::MessageNew)
            .cloned()
            .collect::<Vec<_>>()
    };
    let bob_messages = messages(&bob_inbox);
    assert_eq!(bob_messages.len(), 120);
    assert_eq!(messages(&alice_inbox).len(), 80);
    assert_gap_free(&bob_inbox);
    assert_gap_free(&alice_inbox);
    let in_inbox: Vec<String> = bob_messages.iter().map(message_id).collect();
    let unique: HashSet<&String> = in_inbox.iter().collect();
    assert_eq!(unique.len(), in_inbox.len(), "no message twice");
    for id in &acknowledged {
        assert!(unique.contains(id), "acknowledged message {id} lost");
    }
    // Per sender, order is the order of acknowledgement.
    for tag in ["a", "c", "b"] {
        let texts: Vec<String> = bob_messages
            .iter()
            .map(text)
            .filter(|t| t.starts_with(tag))
            .collect();
        let expected: Vec<String> = (0..40).map(|i| format!("{tag}{i}")).collect();
        assert_eq!(texts, expected);
    }
    // Retrying after the crash is still idempotent.
    let newest = bob_inbox.last().map_or(Seq(0), |e| e.seq);
    let retry = alice
        .api
        .send_text(&bob.id, "again", Some("a-3"))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        bob.api.sync(Some(newest), None).await.unwrap().events.len(),
        0
    );
}

#[tokio::test]
async fn sigterm_closes_connections_and_exits_cleanly() {
    let mut server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let mut ws = alice.api.connect_ws(None).await.unwrap();
    let status = server.terminate().await;
    assert!(status.success(), "exit status {status}");
    assert!(
        within("the socket to close", ws.next_event())
            .await
            .ok()
            .flatten()
            .is_none()
    );
    assert_eq!(ws.close_code(), Some(1001));
    assert!(server.logs().contains("stopped"));
}

#[tokio::test]
async fn the_data_directory_holds_no_plaintext_and_the_log_no_secrets() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let marker = "TOP-SECRET-PLAINTEXT-7f3a9c";
    for i in 0..20 {
        alice
            .api
            .send_text(&bob.id, &format!("{marker} number {i}"), None)
            .await
            .unwrap();
    }
    let inbox = full_sync(&bob.api).await;
    assert!(
        text(&inbox[0]).contains(marker),
        "the server returns the text to its recipient"
    );

    let mut scanned = 0;
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        let found = bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
        assert!(!found, "{} contains message plaintext", path.display());
    }
    assert!(scanned > 0);

    let logs = server.logs();
    assert!(logs.contains("listening on http://"));
    for secret in [
        PASSWORD,
        &alice.tokens.access_token,
        &alice.tokens.refresh_token,
        &bob.tokens.refresh_token,
    ] {
        assert!(!logs.contains(secret), "a secret reached the log");
    }
}

#[tokio::test]
async fn the_master_key_can_come_from_the_environment_and_a_wrong_one_is_refused() {
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // base64 of 0..32
    let server = TestServer::start_with(&[("UNIMSG_MASTER_KEY", key)]).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    alice
        .api
        .send_text(&bob.id, "sealed under the env key", None)
        .await
        .unwrap();
    assert!(
        !server.data_dir().join("master.key").exists(),
        "the env key must not be written to disk"
    );
    let dir = server.data_dir().to_owned();
    let mut server = server.restart().await;
    let bob = login(&server.client(), "bob", "web", None).await;
    assert_eq!(
        text(&full_sync(&bob.api).await[0]),
        "sealed under the env key"
    );
    // Stop the process but keep `server`, which owns the data directory.
    server.kill9().await;

    // The same data directory with another master key: the server refuses to start.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_unimsg"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env(
            "UNIMSG_MASTER_KEY",
            "HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4=",
        )
        .output();
    let output = within("the server to refuse the key", output)
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("master key does not open data key"),
        "{stderr}"
    );
}
