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
