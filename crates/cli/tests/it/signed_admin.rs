//! Signed admin requests (`admin.require_signature`): a request whose
//! body, path or timestamp was changed is refused, and so is the same
//! request re-sent with a fresh nonce but its old signature.

use reqwest::Method;
use serde_json::Value;
use unimsg_client::AdminCredentials;
use unimsg_core::admins::{canonical_request, sign_request};

use crate::harness::{ADMIN_PASSWORD, TestServer};

struct Signed<'a> {
    method: Method,
    path: &'a str,
    body: &'a str,
    timestamp: String,
    nonce: String,
}

fn now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

fn fresh_nonce() -> String {
    let bytes = unimsg_core::keys::random_bytes::<12>().unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Signed<'_> {
    fn signature(&self, secret: &str) -> String {
        let canonical = canonical_request(
            self.method.as_str(),
            self.path,
            &self.timestamp,
            &self.nonce,
            self.body.as_bytes(),
        );
        sign_request(secret, &canonical)
    }
}

/// Sends `sent` with the headers it says and `signature`.
async fn send(server: &TestServer, sent: &Signed<'_>, signature: &str) -> u16 {
    reqwest::Client::new()
        .request(sent.method.clone(), format!("{}{}", server.base, sent.path))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .header("x-timestamp", &sent.timestamp)
        .header("x-nonce", &sent.nonce)
        .header("x-signature", signature)
        .header("content-type", "application/json")
        .body(sent.body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_tampered_or_re_signed_admin_request_is_refused() {
    let server = TestServer::start_with(&[("UNIMSG_ADMIN__REQUIRE_SIGNATURE", "true")]).await;
    let http = reqwest::Client::new();
    // The first signing secret is made unsigned; nothing else is.
    let made: Value = http
        .post(format!(
            "{}/v1/admin/admins/admin/signing-secret",
            server.base
        ))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = made["signing_secret"].as_str().unwrap().to_owned();
    let unsigned = http
        .get(format!("{}/v1/admin/users/nobody", server.base))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let again = http
        .post(format!(
            "{}/v1/admin/admins/admin/signing-secret",
            server.base
        ))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401, "replacing a secret is signed");

    // Signed as the README says: admitted (an unknown user is 404 past the gate).
    let body = r#"{"display_name":"X"}"#;
    let good = Signed {
        method: Method::PATCH,
        path: "/v1/admin/users/nobody?x=1",
        body,
        timestamp: now(),
        nonce: fresh_nonce(),
    };
    let signature = good.signature(&secret);
    assert_eq!(send(&server, &good, &signature).await, 404);
    // The very same request again: its nonce was used.
    assert_eq!(send(&server, &good, &signature).await, 409);

    let base = Signed {
        method: Method::PATCH,
        path: "/v1/admin/users/nobody?x=1",
        body,
        timestamp: now(),
        nonce: fresh_nonce(),
    };
    let signed_for_base = base.signature(&secret);
    let tampered_body = Signed {
        body: r#"{"display_name":"Y"}"#,
        nonce: fresh_nonce(),
        timestamp: base.timestamp.clone(),
        method: Method::PATCH,
        path: base.path,
    };
    // The body changed after signing.
    assert_eq!(send(&server, &tampered_body, &signed_for_base).await, 401);
    // The path changed.
    let other_path = Signed {
        path: "/v1/admin/users/somebody?x=1",
        nonce: fresh_nonce(),
        timestamp: base.timestamp.clone(),
        method: Method::PATCH,
        body,
    };
    assert_eq!(send(&server, &other_path, &signed_for_base).await, 401);
    // The timestamp changed.
    let other_time = Signed {
        timestamp: (base.timestamp.parse::<u64>().unwrap() - 1).to_string(),
        nonce: fresh_nonce(),
        method: Method::PATCH,
        path: base.path,
        body,
    };
    assert_eq!(send(&server, &other_time, &signed_for_base).await, 401);
    // Re-sent with a fresh nonce but the old signature.
    let fresh = Signed {
        nonce: fresh_nonce(),
        timestamp: base.timestamp.clone(),
        method: Method::PATCH,
        path: base.path,
        body,
    };
    assert_eq!(send(&server, &fresh, &signed_for_base).await, 401);
    // The original, signed, still passes once.
    assert_eq!(send(&server, &base, &signed_for_base).await, 404);

    // The SDK signs when given the secret.
    let admin = server
        .client()
        .admin(AdminCredentials::Basic {
            admin_id: "admin".into(),
            secret: ADMIN_PASSWORD.into(),
        })
        .with_signing_secret(secret);
    let listed = admin.list_admins().await.expect("a signed call of the SDK");
    assert_eq!(listed.admins[0].admin_id, "admin");
}
