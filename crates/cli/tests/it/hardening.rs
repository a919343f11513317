//! Smaller points of the security audit that belong to no other suite: the
//! initial admin password follows the rule of every admin secret, and the
//! API reference page cannot be framed.

use std::process::Stdio;

use crate::harness::TestServer;
use crate::support::within;

/// `UNIMSG_ADMIN_PASSWORD` shorter than 12 bytes is refused at first start
/// (other admins need 12 bytes too): the server does not start with it.
#[tokio::test]
async fn a_short_initial_admin_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = within(
        "unimsg to refuse the password",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_unimsg"))
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("RUST_LOG")
            .env("UNIMSG_ADMIN_PASSWORD", "short")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("cannot run unimsg");
    assert!(
        !output.status.success(),
        "the server started with a 5-byte admin password"
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        said.contains("UNIMSG_ADMIN_PASSWORD") && said.contains("12"),
        "the refusal should name the variable and the rule: {said}"
    );
    assert!(!said.contains("listening on"), "{said}");
    // Twelve bytes are enough.
    let ok = TestServer::start_with(&[("UNIMSG_ADMIN_PASSWORD", "twelve-bytes")]).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/admin/token", ok.base))
        .json(&serde_json::json!({"admin_id": "admin", "secret": "twelve-bytes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// `/docs` carries a Content-Security-Policy that forbids framing, and
/// `X-Frame-Options`, like the console.
#[tokio::test]
async fn the_api_reference_cannot_be_framed() {
    let server = TestServer::start().await;
    for path in ["/docs/", "/docs/index.html", "/docs/swagger-initializer.js"] {
        let r = reqwest::get(format!("{}{path}", server.base))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp:?}");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("script-src 'self' 'unsafe-inline'"),
            "{path}: {csp:?}"
        );
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
    }
}
