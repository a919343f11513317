//! Operators see attacks: each security alert fires from the attack that
//! causes it, is counted in `/metrics`, audited and sent to a webhook; the
//! keyed audit chain catches a log rewritten with the public formula.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{ADMIN_PASSWORD, TestServer};
use crate::receiver::{Received, Receiver};
use crate::support::*;

async fn alerts(server: &TestServer, kind: &str) -> u64 {
    counter(
        server,
        &format!(r#"unimsg_security_alerts_total{{alert="{kind}"}}"#),
    )
    .await
}

/// Waits until the server's log (read from its stderr as it comes) has
/// a line with `what`.
async fn logged(server: &TestServer, what: &str) {
    within(&format!("a log line with {what}"), async {
        while !server.logs().contains(what) {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// The alert kinds of the `security.alert` events received.
fn alert_kinds(seen: &[Received]) -> Vec<String> {
    seen.iter()
        .filter(|r| r.kind() == "security.alert")
        .filter_map(|r| r.json()["data"]["alert"].as_str().map(str::to_owned))
        .collect()
}

async fn login_status(server: &TestServer, username: &str, password: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/v1/auth/login", server.base))
        .json(&json!({"username": username, "password": password, "platform": "web"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The alerted audit entries of `kind`.
async fn audited(server: &TestServer, kind: &str) -> usize {
    let page = AdminApi::root(server)
        .ok(
            Method::GET,
            "/v1/admin/audit?action=security.alert&limit=1000",
            None,
        )
        .await;
    page["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["record"]["outcome"] == kind)
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn every_operator_alert_fires_from_its_attack_and_shows_in_metrics() {
    let server = TestServer::start_with(&[
        ("UNIMSG_HOOKS__ALLOW_PRIVATE_TARGETS", "true"),
        ("UNIMSG_HOOKS__POLL_INTERVAL_MS", "100"),
        ("UNIMSG_AUTH__STUFFING_ACCOUNTS", "3"),
        ("UNIMSG_LIMITS__LOGIN_PER_MINUTE", "0"),
        ("UNIMSG_LIMITS__LOGIN_FAILURES_BEFORE_BACKOFF", "3"),
    ])
    .await;
    let receiver = Receiver::ok().await;
    let (status, v) = admin(
        &server,
        Method::POST,
        "/v1/admin/webhooks",
        Some(json!({"url": receiver.url, "events": ["security.alert"]})),
    )
    .await;
    assert_eq!(status, 201, "{v}");

    // Credential stuffing: one address tries three accounts.
    for account in ["victim-1", "victim-2"] {
        assert_eq!(login_status(&server, account, "guess-one").await, 401);
    }
    assert_eq!(alerts(&server, "credential_stuffing").await, 0);
    assert_eq!(login_status(&server, "victim-3", "guess-one").await, 401);
    assert_eq!(alerts(&server, "credential_stuffing").await, 1);

    // A back-off lockout: one account guessed until it is slowed down.
    let mut locked = false;
    for i in 0..10 {
        if login_status(&server, "victim-1", &format!("guess-{i}")).await == 429 {
            locked = true;
            break;
        }
    }
    assert!(locked, "the account was never locked");
    assert_eq!(alerts(&server, "login_backoff").await, 1);

    // A refresh token used twice.
    let alice = user(&server.client(), "alice").await;
    let client = server.client();
    client.refresh(&alice.tokens.refresh_token).await.unwrap();
    assert!(client.refresh(&alice.tokens.refresh_token).await.is_err());
    assert_eq!(alerts(&server, "refresh_token_reuse").await, 1);

    // An admin credential from an address the account never used (the
    // loopback network has many; the server listens on 127.0.0.1).
    let (auth_header, auth_value) = root_auth();
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let users_page = |http: reqwest::Client| {
        let url = format!("{}/v1/admin/audit/head", server.base);
        let value = auth_value.clone();
        async move {
            http.get(url)
                .header(auth_header, value)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(users_page(from([127, 0, 0, 1])).await, 200);
    assert_eq!(alerts(&server, "admin_new_ip").await, 0, "a known address");
    assert_eq!(users_page(from([127, 0, 0, 2])).await, 200);
    assert_eq!(alerts(&server, "admin_new_ip").await, 1);
    assert_eq!(users_page(from([127, 0, 0, 2])).await, 200);
    assert_eq!(alerts(&server, "admin_new_ip").await, 1, "known now");

    // Each went to the webhook and into the audit log too.
    let expected = [
        "credential_stuffing",
        "login_backoff",
        "refresh_token_reuse",
        "admin_new_ip",
    ];
    let seen = receiver
        .until("every alert", |seen| {
            let kinds = alert_kinds(seen);
            expected.iter().all(|k| kinds.iter().any(|s| s == k))
        })
        .await;
    assert_eq!(
        alert_kinds(&seen)
            .iter()
            .filter(|k| *k == "credential_stuffing")
            .count(),
        1,
        "one stuffing alert per window"
    );
    for kind in expected {
        assert_eq!(audited(&server, kind).await, 1, "{kind} audit entries");
    }
    logged(&server, "security alert").await;
}

/// What an intruder with write access to the database can do with the
/// public formula: edit entry `id` and chain every later entry again
/// with plain SHA-256 (Python's `hashlib`, not our code).
fn rewrite_with_sha256(db: &std::path::Path, id: u64) {
    let script = r#"
import hashlib, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
target = int(sys.argv[2])
db.execute("UPDATE audit_log SET content = replace(content, '\"admin\"', '\"intruder\"') WHERE id = ?", (target,))
prev = db.execute("SELECT hash FROM audit_log WHERE id = ?", (target - 1,)).fetchone()
prev = bytes(prev[0]) if prev else bytes(32)
for (i, at, content) in db.execute("SELECT id, at, content FROM audit_log WHERE id >= ? ORDER BY id", (target,)).fetchall():
    h = hashlib.sha256(prev + f"{i}\n{at}\n{content}".encode()).digest()
    db.execute("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE id = ?", (prev, h, i))
    prev = h
db.commit()
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(db)
        .arg(id.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn verify(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_unimsg"));
    cmd.args(["audit", "verify"]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[tokio::test]
async fn a_log_rewritten_without_the_audit_key_is_caught_offline_online_and_by_the_periodic_check()
{
    let heads = tempfile::tempdir().unwrap();
    let head_file = heads.path().join("audit.head");
    let head_path = head_file.to_str().unwrap().to_owned();
    let server = TestServer::start_with(&[
        ("UNIMSG_ADMIN__AUDIT_VERIFY_INTERVAL_SECS", "1"),
        ("UNIMSG_ADMIN__AUDIT_HEAD_FILE", &head_path),
    ])
    .await;
    let root = AdminApi::root(&server);
    for i in 0..4 {
        root.ok(
            Method::GET,
            &format!("/v1/admin/audit?limit={}", i + 1),
            None,
        )
        .await;
    }
    let page = root
        .ok(Method::GET, "/v1/admin/audit?limit=1000", None)
        .await;
    let target = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["record"]["actor"] == "admin")
        .and_then(|e| e["id"].as_u64())
        .expect("an admin entry");
    let data_dir = server.data_dir().to_str().unwrap().to_owned();
    let base = server.base.clone();
    let password = [("UNIMSG_ADMIN_PASSWORD", ADMIN_PASSWORD)];
    let remote = ["--server", base.as_str()];
    let ok = verify(&remote, &password);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("intact"));
    assert!(verify(&["--data-dir", &data_dir], &[]).status.success());
    // The periodic check exports the head it verified.
    let exported = within("the exported head", async {
        loop {
            // A head past the entries read above (the first checks may
            // export an earlier one).
            if let Ok(text) = std::fs::read_to_string(&head_file)
                && let Some((seq, _)) = text.trim().split_once(':')
                && seq.parse::<u64>().is_ok_and(|seq| seq > target)
            {
                return text.trim().to_owned();
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let checked = verify(&["--data-dir", &data_dir, "--head", &exported], &[]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    rewrite_with_sha256(&server.data_dir().join("unimsg.db"), target);
    // The server's periodic check notices by itself (nothing else
    // verified on the server yet).
    within("the periodic audit check", async {
        while alerts(&server, "audit_chain_broken").await == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    logged(&server, "audit_chain_broken").await;

    // Offline, with the master key of the data directory.
    let offline = verify(&["--data-dir", &data_dir], &[]);
    assert!(!offline.status.success());
    let stderr = String::from_utf8_lossy(&offline.stderr);
    assert!(
        stderr.contains(&format!("entry {target} was altered")),
        "{stderr}"
    );
    // Against the running server.
    let online = verify(&remote, &password);
    assert!(!online.status.success());
    let stderr = String::from_utf8_lossy(&online.stderr);
    assert!(
        stderr.contains(&format!("entry {target} was altered")),
        "{stderr}"
    );
    let (status, v) = admin(&server, Method::GET, "/v1/admin/audit/verify", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["intact"], false, "{v}");
    assert!(
        v["broken"]
            .as_str()
            .is_some_and(|b| b.contains(&format!("entry {target} was altered"))),
        "{v}"
    );
}

#[tokio::test]
async fn admin_refusals_are_counted_by_cause_and_qr_refusals_by_step() {
    let server = TestServer::start().await;
    let root = AdminApi::root(&server);
    root.ok(
        Method::POST,
        "/v1/admin/admins",
        Some(json!({"admin_id": "reader", "secret": "reader-secret-42", "scopes": ["users:read"]})),
    )
    .await;
    let reader = AdminApi::basic(&server, "reader", "reader-secret-42");
    let (status, _) = reader.call(Method::GET, "/v1/admin/audit", None).await;
    assert_eq!(status, 403);
    let (status, _) = request(&server, Method::GET, "/v1/admin/users/x", &[], None).await;
    assert_eq!(status, 401);
    let (status, _) = root
        .call_with(
            Method::GET,
            "/v1/admin/users/x",
            None,
            &[
                ("x-timestamp", "1".to_owned()),
                ("x-nonce", "n-1".to_owned()),
            ],
        )
        .await;
    assert_eq!(status, 401, "a timestamp outside the window");
    for (status, cause) in [("403", "scope"), ("401", "credential"), ("401", "replay")] {
        assert_eq!(
            counter(
                &server,
                &format!(r#"unimsg_admin_refusals_total{{status="{status}",cause="{cause}"}}"#)
            )
            .await,
            1,
            "{status} {cause}"
        );
    }

    // QR: a scan of an unknown ticket, an event stream without the
    // page's secret.
    let alice = user(&server.client(), "alice").await;
    let (status, _) = call(
        &alice.api,
        Method::POST,
        "/v1/auth/qr/scan",
        Some(json!({"code": "ZZZZZZ"})),
    )
    .await;
    assert_eq!(status, 404);
    let ticket: Value = reqwest::Client::new()
        .post(format!("{}/v1/auth/qr", server.base))
        .json(&json!({"platform": "web"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = ticket["ticket_id"].as_str().unwrap();
    let (status, _) = request(
        &server,
        Method::GET,
        &format!("/v1/auth/qr/{id}/events"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 404);
    for step in ["scan", "events"] {
        assert_eq!(
            counter(
                &server,
                &format!(r#"unimsg_qr_refusals_total{{step="{step}",reason="not_found"}}"#)
            )
            .await,
            1,
            "{step}"
        );
    }
}
