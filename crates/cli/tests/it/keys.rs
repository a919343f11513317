//! Key management: the token signing key rotates (tokens carry `kid`, the
//! old key verifies its tokens on, `/.well-known/jwks.json` publishes both
//! and a JOSE library verifies with it), and a signing key kept in a file
//! by an older version moves into the store.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use reqwest::Method;
use serde_json::Value;

use crate::harness::TestServer;
use crate::support::*;

async fn jwks(server: &TestServer) -> JwkSet {
    reqwest::get(format!("{}/.well-known/jwks.json", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .unwrap()
        .kid
        .expect("a kid")
}

/// Verifies `token` as a business system would: with the published key
/// its `kid` names, and nothing from unimsg's code.
fn verify_with(set: &JwkSet, token: &str) -> Value {
    let jwk = set.find(&kid(token)).expect("the token's key is published");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

async fn rotate(server: &TestServer) -> Value {
    let (status, info) = admin(server, Method::POST, "/v1/admin/keys/signing/rotate", None).await;
    assert_eq!(status, 201, "{info}");
    info
}

#[tokio::test]
async fn a_rotated_signing_key_signs_while_the_old_one_still_verifies() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let before = &alice.tokens.access_token;
    let set = jwks(&server).await;
    assert_eq!(set.keys.len(), 1);
    assert_eq!(verify_with(&set, before)["sub"], alice.id.to_string());

    let info = rotate(&server).await;
    let new_kid = info["kid"].as_str().unwrap();
    assert_ne!(new_kid, kid(before));
    let set = jwks(&server).await;
    assert_eq!(set.keys.len(), 2, "both keys are published");
    let again = login(&client, "alice", "ios", None).await;
    assert_eq!(
        kid(&again.tokens.access_token),
        new_kid,
        "the new key signs"
    );
    verify_with(&set, &again.tokens.access_token);
    // The token of the old key still works, here and for a JOSE library.
    alice.api.sync(None, Some(1)).await.expect("the old token");
    verify_with(&set, before);
    // A made-up kid is refused.
    let forged = before.replacen(
        before.split('.').next().unwrap(),
        "eyJhbGciOiJFZERTQSIsImtpZCI6Im5vcGUifQ",
        1,
    );
    let (status, _) = client
        .raw(Method::GET, "/v1/sync", Some(&forged), Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_signing_key_survives_a_restart() {
    let server = TestServer::start().await;
    let alice = user(&server.client(), "alice").await;
    rotate(&server).await;
    let newer = login(&server.client(), "alice", "ios", None).await;
    let server = server.restart().await;
    let client = server.client();
    for token in [&alice.tokens.access_token, &newer.tokens.access_token] {
        let (status, body) = client
            .raw(Method::GET, "/v1/sync", Some(token), Vec::new(), None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test]
async fn a_signing_key_file_of_an_older_version_moves_into_the_store() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let pkcs8 = pair.serialize_der();
    let server = TestServer::start_prepared(&[], |dir| {
        std::fs::write(dir.join("signing.key"), &pkcs8).unwrap();
    })
    .await;
    assert!(
        !server.data_dir().join("signing.key").exists(),
        "the file is gone once the key is in the store"
    );
    let alice = user(&server.client(), "alice").await;
    // The token is signed by the imported key.
    let key = DecodingKey::from_ed_der(pair.public_key_raw());
    let mut validation = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_required_spec_claims(&["exp"]);
    jsonwebtoken::decode::<Value>(&alice.tokens.access_token, &key, &validation)
        .expect("signed with the key of signing.key");
}

const KEY_ONE: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const KEY_TWO: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

/// Every text `bob` has, by sync (each one opened with the data keys).
async fn texts_of(server: &TestServer, bob: &crate::support::TestUser) -> Vec<String> {
    let api = server.client().with_token(bob.tokens.access_token.clone());
    message_texts(&full_sync(&api).await)
}

#[tokio::test]
async fn an_online_master_rotation_under_load_loses_nothing_and_retires_the_old_key() {
    let server = TestServer::start_with(&[("UNIMSG_LIMITS__SEND_PER_MINUTE", "100000")]).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let old_key = std::fs::read_to_string(server.data_dir().join("master.key")).unwrap();
    let sender = alice.api.clone();
    let to = bob.id.clone();
    let load = tokio::spawn(async move {
        for i in 0..200 {
            sender.send_text(&to, &format!("m{i}"), None).await.unwrap();
        }
    });
    let (status, rotated) = admin(
        &server,
        Method::POST,
        "/v1/admin/keys/master/rotate",
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    assert!(rotated["rewrapped"].as_u64().unwrap() >= 2, "{rotated}");
    assert_eq!(rotated["key_source"], "master.key");
    load.await.unwrap();
    let new_key = std::fs::read_to_string(server.data_dir().join("master.key")).unwrap();
    assert_ne!(new_key, old_key);
    assert!(!server.data_dir().join("master.key.new").exists());
    let expected: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    assert_eq!(
        texts_of(&server, &bob).await,
        expected,
        "readable while rotating"
    );

    // Asked again, it re-wraps under yet another key; nothing is lost.
    let dir = server.data_dir().to_owned();
    let server = server.restart().await;
    assert_eq!(
        texts_of(&server, &bob).await,
        expected,
        "readable with the new key alone"
    );
    // The old key opens nothing any more.
    std::fs::write(dir.join("master.key"), &old_key).unwrap();
    let log = server
        .restart_with(&[])
        .await
        .err()
        .expect("started with the old master key");
    assert!(log.contains("does not open data key"), "{log}");
}

#[tokio::test]
async fn an_offline_master_rotation_takes_a_key_from_the_environment_and_resumes() {
    let mut server = TestServer::start_with(&[("UNIMSG_MASTER_KEY", KEY_ONE)]).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    for i in 0..5 {
        alice
            .api
            .send_text(&bob.id, &format!("o{i}"), None)
            .await
            .unwrap();
    }
    assert!(server.terminate().await.success());
    let rotate = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_unimsg"))
            .args(["keys", "rotate-master", "--data-dir"])
            .arg(server.data_dir())
            .env_clear()
            .env("UNIMSG_MASTER_KEY", KEY_ONE)
            .env("UNIMSG_NEW_MASTER_KEY", KEY_TWO)
            .output()
    };
    let first = within("keys rotate-master", rotate()).await.unwrap();
    let said = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        first.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // The data key, the audit key and the signing key.
    assert!(said.contains("re-wrapped 3 keys"), "{said}");
    assert!(said.contains("set UNIMSG_MASTER_KEY"), "{said}");
    // Run again (as after an interruption): what is done is skipped.
    let again = within("keys rotate-master again", rotate()).await.unwrap();
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("re-wrapped 0 keys"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let server = server
        .restart_with(&[("UNIMSG_MASTER_KEY", KEY_TWO)])
        .await
        .expect("the new key opens everything");
    let expected: Vec<String> = (0..5).map(|i| format!("o{i}")).collect();
    assert_eq!(texts_of(&server, &bob).await, expected);
    let log = server
        .restart_with(&[("UNIMSG_MASTER_KEY", KEY_ONE)])
        .await
        .err()
        .expect("started with the old master key");
    assert!(log.contains("does not open data key"), "{log}");
}

#[tokio::test]
async fn a_master_key_from_a_command_never_touches_the_disk() {
    let command = format!("printf %s {KEY_ONE}");
    let env = [("UNIMSG_KEYS__MASTER_KEY_COMMAND", command.as_str())];
    let server = TestServer::start_with(&env).await;
    assert!(!server.data_dir().join("master.key").exists());
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    alice.api.send_text(&bob.id, "sealed", None).await.unwrap();
    // The same key from the environment opens what the command's sealed.
    let server = server
        .restart_with(&[("UNIMSG_MASTER_KEY", KEY_ONE)])
        .await
        .expect("the command's key");
    assert_eq!(texts_of(&server, &bob).await, ["sealed"]);
    let log = server
        .restart_with(&[
            ("UNIMSG_MASTER_KEY", ""),
            ("UNIMSG_KEYS__MASTER_KEY_COMMAND", "exit 3"),
        ])
        .await
        .err()
        .expect("a failing command");
    assert!(log.contains("keys.master_key_command failed"), "{log}");
}

#[tokio::test]
async fn content_is_bound_to_its_sender_and_conversation() {
    use unimsg_client::proto::ConversationId;
    let mut server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let carol = user(&client, "carol").await;
    let sent = alice
        .api
        .send_text(&bob.id, "from alice", None)
        .await
        .unwrap();
    carol
        .api
        .send_text(&bob.id, "from carol", None)
        .await
        .unwrap();
    assert!(server.terminate().await.success());
    // Someone who can write the database says carol sent alice's message.
    let db = rusqlite::Connection::open(server.data_dir().join("unimsg.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE messages SET sender_id = ?1 WHERE message_id = ?2",
            [carol.id.as_str(), sent.message_id.as_str()],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let server = server.restart_with(&[]).await.unwrap();
    let bob_api = server.client().with_token(bob.tokens.access_token.clone());
    let tampered = bob_api
        .history(&ConversationId::direct(&alice.id, &bob.id), None, None)
        .await;
    assert!(
        matches!(&tampered, Err(e) if e.status() == Some(500)),
        "re-attributed content was shown: {tampered:?}"
    );
    let untouched = bob_api
        .history(&ConversationId::direct(&carol.id, &bob.id), None, None)
        .await
        .unwrap();
    assert_eq!(untouched.messages[0].content["text"], "from carol");
}

/// The data key ids of `bob`'s inbox messages, oldest first.
fn message_key_ids(server: &TestServer) -> Vec<i64> {
    let db = rusqlite::Connection::open(server.data_dir().join("unimsg.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT key_id FROM messages ORDER BY created_at, message_id")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Sends until a message is sealed with another key than the first.
async fn send_until_a_new_key_seals(
    alice: &crate::support::TestUser,
    bob: &unimsg_client::proto::UserId,
    server: &TestServer,
) -> usize {
    within("a message sealed with a new data key", async {
        let mut sent = 0;
        loop {
            alice
                .api
                .send_text(bob, &format!("k{sent}"), None)
                .await
                .unwrap();
            sent += 1;
            if message_key_ids(server).iter().any(|&id| id != 1) {
                return sent;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

#[tokio::test]
async fn a_data_key_is_replaced_after_its_seals_and_every_row_keeps_its_key() {
    let env = [
        ("UNIMSG_KEYS__DATA_KEY_MAX_SEALS", "3"),
        ("UNIMSG_KEYS__REFRESH_INTERVAL_SECS", "1"),
        ("UNIMSG_LIMITS__SEND_PER_MINUTE", "0"),
    ];
    let server = TestServer::start_with(&env).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let sent = send_until_a_new_key_seals(&alice, &bob.id, &server).await;
    let ids = message_key_ids(&server);
    assert!(ids[..3].iter().all(|&id| id == 1), "{ids:?}");
    assert!(ids.iter().all(|&id| id == 1 || id == 2), "{ids:?}");
    let expected: Vec<String> = (0..sent).map(|i| format!("k{i}")).collect();
    let server = server.restart().await;
    assert_eq!(
        texts_of(&server, &bob).await,
        expected,
        "both keys open their rows"
    );
}

#[tokio::test]
async fn a_data_key_rotation_on_demand_seals_after_its_activation() {
    let env = [
        ("UNIMSG_KEYS__REFRESH_INTERVAL_SECS", "1"),
        ("UNIMSG_LIMITS__SEND_PER_MINUTE", "0"),
    ];
    let server = TestServer::start_with(&env).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let (status, rotated) = admin(&server, Method::POST, "/v1/admin/keys/data/rotate", None).await;
    assert_eq!(status, 201, "{rotated}");
    assert_eq!(rotated["key_id"], 2);
    let sent = send_until_a_new_key_seals(&alice, &bob.id, &server).await;
    assert!(sent > 1, "the new key waited for its activation");
    let expected: Vec<String> = (0..sent).map(|i| format!("k{i}")).collect();
    assert_eq!(texts_of(&server, &bob).await, expected);
}
