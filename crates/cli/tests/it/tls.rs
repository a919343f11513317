//! TLS on the listener, with certificates the tests make (rcgen): HTTPS,
//! WSS and SSE on one port, a certificate reload that keeps open
//! connections, a broken reload that keeps the old pair, the redirect
//! listener, `admin.require_tls` and `auth.allow_query_token`.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use reqwest::Method;
use serde_json::Value;
use unimsg_client::{Client, ClientError};

use crate::harness::{ADMIN_PASSWORD, TestServer};
use crate::support::*;

/// A CA of its own, and a server certificate for 127.0.0.1 it signed.
pub(crate) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("unimsg test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    pub(crate) fn pem(&self) -> Vec<u8> {
        self.issuer.pem().into_bytes()
    }

    /// A certificate for `127.0.0.1` and `localhost` and its key (PEM).
    pub(crate) fn server_pem(&self) -> (String, String) {
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&leaf_key, &self.issuer).unwrap();
        (leaf.pem(), leaf_key.serialize_pem())
    }

    /// Writes [`Self::server_pem`] to `cert` and `key`.
    fn server_pair(&self, cert: &Path, key: &Path) {
        let (cert_pem, key_pem) = self.server_pem();
        // Written next to the files and renamed over them, as a
        // certificate manager does: never half a file.
        for (path, text) in [(cert, cert_pem), (key, key_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }
}

/// A TLS server whose pair a fresh CA signed; the CA, the files and the
/// directory they live in.
async fn tls_server(
    env: &[(&str, &str)],
) -> (TestServer, TestCa, PathBuf, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let ca = TestCa::new("one");
    ca.server_pair(&cert, &key);
    let server = TestServer::start_with_args(
        env,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    (server, ca, cert, key, dir)
}

fn trusting(server: &TestServer, ca: &TestCa) -> Client {
    Client::with_root_certificates(&server.base, &ca.pem()).unwrap()
}

/// Whether a fresh connection trusting only `ca` gets an answer.
async fn reachable(server: &TestServer, ca: &TestCa) -> bool {
    trusting(server, ca)
        .raw(Method::GET, "/healthz", None, Vec::new(), None)
        .await
        .is_ok()
}

#[tokio::test]
async fn https_wss_and_sse_share_one_tls_listener() {
    let (server, ca, _cert, _key, _dir) = tls_server(&[]).await;
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    assert!(server.logs().contains("listening on https://"));
    let client = trusting(&server, &ca);
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let mut ws = bob.api.connect_ws(None).await.expect("wss");
    let mut sse = bob.api.connect_sse(None).await.expect("sse over https");
    alice
        .api
        .send_text(&bob.id, "over tls", None)
        .await
        .unwrap();
    assert_eq!(text(&ws_event(&mut ws).await), "over tls");
    assert_eq!(text(&sse_event(&mut sse).await.1), "over tls");

    // Neither plain HTTP on that port nor a client without the CA gets in.
    let plain = server.base.replacen("https://", "http://", 1);
    let answer = Client::new(&plain)
        .unwrap()
        .raw(Method::GET, "/healthz", None, Vec::new(), None)
        .await;
    assert!(answer.is_err(), "plain HTTP was answered: {answer:?}");
    let stranger = Client::new(&server.base).unwrap();
    assert!(matches!(
        stranger
            .raw(Method::GET, "/healthz", None, Vec::new(), None)
            .await,
        Err(ClientError::Http(_))
    ));
    assert!(!reachable(&server, &TestCa::new("other")).await);
}

#[tokio::test]
async fn a_reloaded_certificate_is_used_for_new_connections_and_keeps_open_ones() {
    let (server, old_ca, cert, key, _dir) = tls_server(&[]).await;
    let client = trusting(&server, &old_ca);
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let mut ws = bob.api.connect_ws(None).await.expect("wss");

    let new_ca = TestCa::new("two");
    new_ca.server_pair(&cert, &key);
    server.hangup().await;
    within("the new certificate", async {
        while !reachable(&server, &new_ca).await {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        !reachable(&server, &old_ca).await,
        "a client that trusts only the old CA is refused after the reload"
    );
    // The WebSocket opened under the old certificate still works.
    let alice_new = trusting(&server, &new_ca).with_token(alice.tokens.access_token.clone());
    alice_new
        .send_text(&bob.id, "after the reload", None)
        .await
        .unwrap();
    assert_eq!(text(&ws_event(&mut ws).await), "after the reload");
}

#[tokio::test]
async fn a_broken_new_pair_keeps_the_old_one() {
    let (server, ca, _cert, key, _dir) = tls_server(&[]).await;
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    server.hangup().await;
    within("the refused reload in the log", async {
        while !server.logs().contains("TLS certificate not reloaded") {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(reachable(&server, &ca).await, "the old pair still serves");
}

/// The address the redirect listener reported.
fn redirect_addr(logs: &str) -> Option<String> {
    let line = logs.lines().find(|l| l.contains("redirecting http://"))?;
    let rest = &line[line.find("redirecting http://")? + "redirecting http://".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

#[tokio::test]
async fn the_plain_listener_of_redirect_from_only_redirects() {
    let (server, _ca, _cert, _key, _dir) =
        tls_server(&[("UNIMSG_TLS__REDIRECT_FROM", "127.0.0.1:0")]).await;
    let from = redirect_addr(&server.logs()).expect("the redirect listener's address");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = http
        .get(format!("http://{from}/v1/sync?after=3"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 308);
    let port = server.base.rsplit(':').next().unwrap();
    let host = from.split(':').next().unwrap();
    assert_eq!(
        answer.headers()["location"],
        format!("https://{host}:{port}/v1/sync?after=3").as_str()
    );
}

/// The status of an admin call (an unknown user: 404 once admitted).
async fn admin_status(server: &TestServer, ca: Option<&TestCa>, headers: &[(&str, &str)]) -> u16 {
    let mut http = reqwest::Client::builder();
    if let Some(ca) = ca {
        http = http.tls_certs_only([reqwest::Certificate::from_pem(&ca.pem()).unwrap()]);
    }
    let mut request = http
        .build()
        .unwrap()
        .get(format!("{}/v1/admin/users/nobody", server.base))
        .basic_auth("admin", Some(ADMIN_PASSWORD));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn require_tls_refuses_admin_calls_that_did_not_arrive_over_tls() {
    let env = [("UNIMSG_ADMIN__REQUIRE_TLS", "true")];
    let plain = TestServer::start_with(&env).await;
    assert_eq!(admin_status(&plain, None, &[]).await, 403);
    // A client's own X-Forwarded-Proto counts only from a trusted proxy.
    assert_eq!(
        admin_status(&plain, None, &[("x-forwarded-proto", "https")]).await,
        403
    );
    let (tls, ca, _cert, _key, _dir) = tls_server(&env).await;
    // Past the TLS check, the unknown user is 404.
    assert_eq!(admin_status(&tls, Some(&ca), &[]).await, 404);

    let proxied = TestServer::start_with(&[
        ("UNIMSG_ADMIN__REQUIRE_TLS", "true"),
        ("UNIMSG_ADMIN__TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    assert_eq!(
        admin_status(&proxied, None, &[("x-forwarded-proto", "https")]).await,
        404,
        "a trusted proxy that terminated TLS"
    );
    assert_eq!(
        admin_status(&proxied, None, &[("x-forwarded-proto", "http")]).await,
        403
    );
}

#[tokio::test]
async fn tokens_in_urls_can_be_switched_off() {
    let server = TestServer::start_with(&[("UNIMSG_AUTH__ALLOW_QUERY_TOKEN", "false")]).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let token = &alice.tokens.access_token;
    let events = format!("{}/v1/events", server.base);
    let http = reqwest::Client::new();
    let by_query = http
        .get(format!("{events}?access_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 401);
    let body: Value = by_query.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allow_query_token"),
        "{body}"
    );
    let by_header = http.get(&events).bearer_auth(token).send().await.unwrap();
    assert_eq!(by_header.status(), 200);
    // A WebSocket: not with the token in its URL; with the header or a
    // first frame.
    let ws = server.base.replacen("http://", "ws://", 1);
    let refused =
        tokio_tungstenite::connect_async(format!("{ws}/v1/ws?access_token={token}")).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401),
        "{refused:?}"
    );
    alice.api.connect_ws(None).await.expect("header auth");
    alice
        .api
        .connect_ws_first_frame(None)
        .await
        .expect("first-frame auth");
}

#[tokio::test]
async fn a_changed_certificate_file_is_picked_up_without_a_signal() {
    let (server, old_ca, cert, key, _dir) = tls_server(&[]).await;
    assert!(reachable(&server, &old_ca).await);
    let times = [&cert, &key].map(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    let new_ca = TestCa::new("renewed");
    new_ca.server_pair(&cert, &key);
    // The old times put back, as a copy that keeps times leaves them (and
    // as a filesystem with one-second times may): the bytes changed.
    for (path, time) in [&cert, &key].into_iter().zip(times) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(time).unwrap();
    }
    let renewed = tokio::time::timeout(WAIT, async {
        while !reachable(&server, &new_ca).await {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        renewed.is_ok(),
        "the renewed certificate was not picked up; the server said:\n{}",
        server.logs()
    );
}

#[tokio::test]
async fn the_cli_speaks_https_with_its_own_ca() {
    let (server, ca, _cert, _key, dir) = tls_server(&[]).await;
    let client = trusting(&server, &ca);
    let carol = register(&client, "carol").await.to_string();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["user", "show", &carol, "--server", &server.base];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_unimsg"))
                .args(&args)
                .env_clear()
                .env("UNIMSG_ADMIN_PASSWORD", ADMIN_PASSWORD)
                .output()
                .await
                .unwrap()
        }
    };
    let shown = within(
        "unimsg user show --ca-cert",
        run(&["--ca-cert", ca_file.to_str().unwrap()]),
    )
    .await;
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let user: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(user["username"], "carol");
    let refused = within("unimsg user show without the CA", run(&[])).await;
    assert!(
        !refused.status.success(),
        "a certificate from an unknown CA was accepted"
    );
}
