//! The admin commands of the `unimsg` binary (`user`, `token`, `notify`,
//! `broadcast`) against a running server: each test runs the real binary
//! with `--server` and credentials in the environment, and checks the
//! effects through the server.

use std::process::{Output, Stdio};

use tokio::io::AsyncWriteExt;
use unimsg_client::proto::admin::{AdminUser, NotifyResponse};
use unimsg_client::proto::api::TokenPair;
use unimsg_client::proto::{EventType, UserId};
use unimsg_client::{AdminClient, AdminCredentials, AuditFilter, ClientError};

use crate::harness::{ADMIN_PASSWORD, TestServer};
use crate::support::*;

/// One run of `unimsg`: arguments, environment and optional stdin.
struct Run {
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    stdin: Option<Vec<u8>>,
}

impl Run {
    /// `unimsg ARGS --server URL` as `admin` with the right password.
    fn new(server: &TestServer, args: &[&str]) -> Self {
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.extend(["--server".to_owned(), server.base.clone()]);
        Run {
            args,
            env: vec![("UNIMSG_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned())],
            stdin: None,
        }
    }

    /// `unimsg ARGS --server URL` for a server that may not be there.
    fn to(url: &str, args: &[&str]) -> Self {
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.extend(["--server".to_owned(), url.to_owned()]);
        Run {
            args,
            env: vec![
                ("UNIMSG_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
                ("RUST_BACKTRACE", "1".to_owned()),
            ],
            stdin: None,
        }
    }

    /// Replaces the environment given to the process.
    fn env(mut self, env: &[(&'static str, &str)]) -> Self {
        self.env = env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        self
    }

    fn stdin(mut self, input: &str) -> Self {
        self.stdin = Some(input.as_bytes().to_vec());
        self
    }

    async fn output(self) -> Output {
        let what = format!("unimsg {}", self.args.join(" "));
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_unimsg"));
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
        if let (Some(input), Some(mut pipe)) = (self.stdin, child.stdin.take()) {
            within("writing stdin", pipe.write_all(&input))
                .await
                .unwrap_or_else(|e| panic!("{what}: stdin: {e}"));
        }
        within(&what, child.wait_with_output())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Runs and requires success; returns stdout.
    async fn ok(self) -> String {
        let what = format!("unimsg {}", self.args.join(" "));
        let out = self.output().await;
        assert!(
            out.status.success(),
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and parses stdout as JSON.
    async fn json<T: serde::de::DeserializeOwned>(self) -> T {
        let stdout = self.ok().await;
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn root(server: &TestServer) -> AdminClient {
    server.client().admin(AdminCredentials::Basic {
        admin_id: "admin".into(),
        secret: ADMIN_PASSWORD.into(),
    })
}

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

async fn exists(admin: &AdminClient, id: &str) -> bool {
    match admin.user(&uid(id)).await {
        Ok(user) => user.user_id.as_str() == id,
        Err(e) if e.status() == Some(404) => false,
        Err(e) => panic!("GET user {id}: {e}"),
    }
}

fn jsonl_file(lines: &[&str]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, lines.join("\n").as_bytes()).unwrap();
    file
}

#[tokio::test]
async fn import_reports_each_bad_line_and_exits_non_zero() {
    let server = TestServer::start().await;
    let admin = root(&server);
    let file = jsonl_file(&[
        r#"{"user_id": "imp-1", "display_name": "One"}"#,
        r#"{"user_id": "bad id!", "display_name": "Bad"}"#,
        r#"{"user_id": "imp-3", "display_name": "Three", "username": "three", "password": "correct horse battery"}"#,
    ]);
    let path = file.path().to_string_lossy().into_owned();
    let out = Run::new(&server, &["user", "import", &path]).output().await;
    assert!(!out.status.success(), "a failed line must fail the command");
    assert_eq!(stdout(&out).trim(), "imported 2, failed 1");
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("line 2: bad_request:") && l.contains("user id")),
        "{err}"
    );
    assert!(!err.contains("line 1") && !err.contains("line 3"), "{err}");
    assert!(exists(&admin, "imp-1").await);
    assert!(exists(&admin, "imp-3").await);
    // The imported password works.
    login(&server.client(), "three", "web", None).await;

    // A clean file exits 0.
    let clean = jsonl_file(&[r#"{"user_id": "imp-4", "display_name": "Four"}"#, ""]);
    let path = clean.path().to_string_lossy().into_owned();
    let stdout = Run::new(&server, &["user", "import", &path]).ok().await;
    assert_eq!(stdout.trim(), "imported 1, failed 0");
    assert!(exists(&admin, "imp-4").await);
}

#[tokio::test]
async fn import_from_stdin_in_batches_keeps_line_numbers() {
    let server = TestServer::start().await;
    let admin = root(&server);
    let input = [
        r#"{"user_id": "b-1", "display_name": "1"}"#,
        r#"{"user_id": "b-2", "display_name": "2"}"#,
        "",
        r#"{"user_id": "b-4", "display_name": "#,
        r#"{"user_id": "b-5", "display_name": "5"}"#,
        r#"{"user_id": "b-1", "display_name": "again"}"#,
        r#"{"user_id": "b-7", "display_name": "7"}"#,
    ]
    .join("\n");
    let out = Run::new(&server, &["user", "import", "-", "--batch-size", "2"])
        .stdin(&input)
        .output()
        .await;
    assert!(!out.status.success());
    assert_eq!(stdout(&out).trim(), "imported 4, failed 2");
    let err = stderr(&out);
    assert!(
        err.lines().any(|l| l.starts_with("line 4: invalid JSON")),
        "{err}"
    );
    assert!(
        err.lines().any(|l| l.starts_with("line 6: conflict:")),
        "the duplicate in the third batch is reported at its own line: {err}"
    );
    for id in ["b-1", "b-2", "b-5", "b-7"] {
        assert!(exists(&admin, id).await, "{id}");
    }
    assert_eq!(admin.user(&uid("b-1")).await.unwrap().display_name, "1");
}

#[tokio::test]
async fn minted_tokens_work_until_the_user_is_disabled() {
    let server = TestServer::start().await;
    let admin = root(&server);
    admin
        .import_users(vec![
            serde_json::json!({"user_id": "mint-1", "display_name": "M"}),
        ])
        .await
        .unwrap();

    let tokens: TokenPair = Run::new(&server, &["token", "mint", "mint-1", "--platform", "web"])
        .json()
        .await;
    let api = server.client().with_token(tokens.access_token.clone());
    let me = api.me().await.unwrap();
    assert_eq!(me.user_id.as_str(), "mint-1");
    let shown: AdminUser = Run::new(&server, &["user", "show", "mint-1"]).json().await;
    assert_eq!(
        (shown.status.as_str(), shown.display_name.as_str()),
        ("active", "M")
    );

    let disabled: AdminUser = Run::new(&server, &["user", "disable", "mint-1"])
        .json()
        .await;
    assert_eq!(disabled.status, "disabled");
    assert_eq!(api.me().await.err().and_then(|e| e.status()), Some(401));
    let refused = Run::new(&server, &["token", "mint", "mint-1", "--platform", "ios"])
        .output()
        .await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("403"), "{}", stderr(&refused));

    let enabled: AdminUser = Run::new(&server, &["user", "enable", "mint-1"])
        .json()
        .await;
    assert_eq!(enabled.status, "active");
    let again: TokenPair = Run::new(
        &server,
        &[
            "token",
            "mint",
            "mint-1",
            "--platform",
            "ios",
            "--device-id",
            "d1",
            "--ttl-secs",
            "120",
        ],
    )
    .json()
    .await;
    assert!(again.expires_in <= 120, "{}", again.expires_in);
    let api = server.client().with_token(again.access_token);
    api.me().await.unwrap();

    let deleted = Run::new(&server, &["user", "delete", "mint-1"]).ok().await;
    assert_eq!(deleted.trim(), "deleted mint-1");
    assert!(!exists(&admin, "mint-1").await);
    let missing = Run::new(&server, &["user", "show", "mint-1"])
        .output()
        .await;
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("404"), "{}", stderr(&missing));
}

#[tokio::test]
async fn notify_and_broadcast_reach_the_users_sync() {
    let server = TestServer::start().await;
    let admin = root(&server);
    let mut apis = Vec::new();
    for id in ["nb-1", "nb-2", "nb-3"] {
        admin
            .import_users(vec![serde_json::json!({"user_id": id, "display_name": id})])
            .await
            .unwrap();
        let tokens = admin
            .mint_tokens(
                &uid(id),
                &unimsg_client::proto::admin::MintRequest {
                    platform: unimsg_client::proto::Platform::parse("web").unwrap(),
                    device_id: None,
                    ttl_secs: None,
                },
            )
            .await
            .unwrap();
        apis.push(server.client().with_token(tokens.access_token));
    }

    let sent: NotifyResponse = Run::new(
        &server,
        &[
            "notify",
            "--to",
            "nb-1,nb-2",
            "--content",
            r#"{"title": "Maintenance"}"#,
            "--from",
            "ops",
        ],
    )
    .json()
    .await;
    assert_eq!(sent.recipients, 2);
    for api in &apis[..2] {
        let events = full_sync(api).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].kind, EventType::NotificationNew);
        assert_eq!(events[0].data["message_id"], sent.message_id.as_str());
        assert_eq!(events[0].data["content"]["title"], "Maintenance");
        assert_eq!(events[0].data["from"], "ops");
    }
    assert!(full_sync(&apis[2]).await.is_empty());
    let status = admin
        .message_status(&sent.message_id, None, None)
        .await
        .unwrap();
    assert_eq!(status.recipients, 2);

    let announced: serde_json::Value = Run::new(
        &server,
        &["broadcast", "--content", r#"{"title": "Release 2.0"}"#],
    )
    .json()
    .await;
    assert_eq!(announced["broadcast_seq"], 1, "{announced}");
    for api in &apis {
        let events = full_sync(api).await;
        let last = events.last().expect("no events");
        assert_eq!(last.kind, EventType::BroadcastNew);
        assert_eq!(last.data["content"]["title"], "Release 2.0");
        assert_gap_free(&events);
    }
}

#[tokio::test]
async fn bad_credentials_fail_with_a_message_and_tokens_work_from_the_environment() {
    let server = TestServer::start().await;
    let admin = root(&server);

    let wrong = Run::new(&server, &["user", "show", "nobody"])
        .env(&[("UNIMSG_ADMIN_PASSWORD", "not the password")])
        .output()
        .await;
    assert!(!wrong.status.success());
    let err = stderr(&wrong);
    assert!(err.contains("401"), "{err}");
    assert!(
        !err.contains("not the password"),
        "the secret leaked: {err}"
    );
    assert!(stdout(&wrong).is_empty());

    let none = Run::new(&server, &["user", "show", "nobody"])
        .env(&[])
        .output()
        .await;
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("UNIMSG_ADMIN_PASSWORD"),
        "{}",
        stderr(&none)
    );

    // An admin token in UNIMSG_ADMIN_TOKEN, the server from UNIMSG_SERVER.
    let token = server
        .client()
        .admin_token("admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    let file = jsonl_file(&[r#"{"user_id": "tok-1", "display_name": "T"}"#]);
    let path = file.path().to_string_lossy().into_owned();
    let out = Run {
        args: vec!["user".into(), "import".into(), path],
        env: vec![
            ("UNIMSG_ADMIN_TOKEN", token.token.clone()),
            ("UNIMSG_SERVER", server.base.clone()),
        ],
        stdin: None,
    }
    .ok()
    .await;
    assert_eq!(out.trim(), "imported 1, failed 0");
    assert!(exists(&admin, "tok-1").await);

    // Another admin account by --admin-id; its missing scope is a 403.
    admin
        .create_admin(&unimsg_client::proto::admin::NewAdminRequest {
            admin_id: "reader".into(),
            secret: "reader-secret-1".into(),
            scopes: vec![unimsg_client::proto::admin::Scope::UsersRead],
        })
        .await
        .unwrap();
    let shown: AdminUser = Run::new(&server, &["user", "show", "tok-1", "--admin-id", "reader"])
        .env(&[("UNIMSG_ADMIN_PASSWORD", "reader-secret-1")])
        .json()
        .await;
    assert_eq!(shown.display_name, "T");
    let forbidden = Run::new(
        &server,
        &["user", "disable", "tok-1", "--admin-id", "reader"],
    )
    .env(&[("UNIMSG_ADMIN_PASSWORD", "reader-secret-1")])
    .output()
    .await;
    assert!(!forbidden.status.success());
    assert!(stderr(&forbidden).contains("403"), "{}", stderr(&forbidden));
}

#[tokio::test]
async fn operation_ids_reach_the_audit_log_and_nonces_satisfy_strict_servers() {
    let server = TestServer::start_with(&[("UNIMSG_ADMIN__REQUIRE_NONCE", "true")]).await;
    let admin = root(&server).with_replay_protection(true);

    let refused = Run::new(&server, &["broadcast", "--content", "{}"])
        .output()
        .await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));

    let file = jsonl_file(&[r#"{"user_id": "op-1", "display_name": "Op"}"#]);
    let path = file.path().to_string_lossy().into_owned();
    Run::new(
        &server,
        &[
            "user",
            "import",
            &path,
            "--nonce",
            "--operation-id",
            "ticket-77",
        ],
    )
    .ok()
    .await;
    Run::new(&server, &["user", "show", "op-1", "--nonce"])
        .ok()
        .await;
    let page = admin
        .audit(&AuditFilter {
            operation_id: Some("ticket-77".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 1, "{page:?}");
    let record = &page.entries[0].record;
    assert_eq!(
        (
            record["method"].as_str(),
            record["path"].as_str(),
            record["outcome"].as_str()
        ),
        (Some("POST"), Some("/v1/admin/users"), Some("200"))
    );

    // The client's nonces are fresh on every request; without them the
    // strict server refuses the client too.
    for _ in 0..3 {
        admin.user(&uid("op-1")).await.unwrap();
    }
    let plain = admin.with_replay_protection(false).user(&uid("op-1")).await;
    assert!(
        matches!(plain, Err(ClientError::Api { status: 401, .. })),
        "{plain:?}"
    );
}

#[tokio::test]
async fn every_admin_command_has_help() {
    for args in [
        &["user", "--help"][..],
        &["user", "import", "--help"],
        &["user", "show", "--help"],
        &["user", "disable", "--help"],
        &["user", "enable", "--help"],
        &["user", "delete", "--help"],
        &["token", "mint", "--help"],
        &["notify", "--help"],
        &["broadcast", "--help"],
        &["audit", "verify", "--help"],
    ] {
        let out = within(
            "unimsg --help",
            tokio::process::Command::new(env!("CARGO_BIN_EXE_unimsg"))
                .args(args)
                .output(),
        )
        .await
        .unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: unimsg"), "{args:?}: {text}");
        if args[0] != "audit" {
            assert!(
                text.contains("--server") && text.contains("UNIMSG_ADMIN_PASSWORD"),
                "{args:?}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn webhook_commands_add_list_inspect_retry_and_remove() {
    let server = TestServer::start_with(&[
        ("UNIMSG_HOOKS__ALLOW_PRIVATE_TARGETS", "true"),
        ("UNIMSG_HOOKS__POLL_INTERVAL_MS", "100"),
        ("UNIMSG_HOOKS__RETRY_SCHEDULE_SECS", "0"),
    ])
    .await;
    let receiver =
        crate::receiver::Receiver::scripted(|_, _| crate::receiver::Reply::status(500)).await;
    let added: serde_json::Value = Run::new(
        &server,
        &[
            "webhook",
            "add",
            &receiver.url,
            "--events",
            "user.created,user.login",
        ],
    )
    .json()
    .await;
    let id = added["webhook_id"].as_str().unwrap().to_owned();
    assert!(
        added["secret"].as_str().unwrap().starts_with("whsec_"),
        "{added}"
    );
    assert_eq!(
        added["events"],
        serde_json::json!(["user.created", "user.login"])
    );

    let list: serde_json::Value = Run::new(&server, &["webhook", "list"]).json().await;
    assert_eq!(list["webhooks"][0]["webhook_id"], id.as_str());
    assert!(
        list["webhooks"][0].get("secret").is_none(),
        "secrets are never listed"
    );

    register(&server.client(), "frank").await;
    // Two failed attempts (schedule: one retry), then it is listed as failed.
    receiver.until("two attempts", |s| s.len() >= 2).await;
    let failed = within("the failed delivery", async {
        loop {
            let page: serde_json::Value =
                Run::new(&server, &["webhook", "deliveries", &id, "--failed"])
                    .json()
                    .await;
            if page["deliveries"].as_array().is_some_and(|d| !d.is_empty()) {
                return page;
            }
        }
    })
    .await;
    let event = failed["deliveries"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let retried: serde_json::Value = Run::new(&server, &["webhook", "retry", &id, &event])
        .json()
        .await;
    assert_eq!(retried["queued"], 1);
    receiver.until("the retry", |s| s.len() >= 3).await;

    let rotated: serde_json::Value = Run::new(&server, &["webhook", "rotate-secret", &id])
        .json()
        .await;
    assert_ne!(rotated["secret"], added["secret"]);
    let out = Run::new(&server, &["webhook", "rm", &id]).ok().await;
    assert!(out.contains(&id), "{out}");
    let out = Run::new(&server, &["webhook", "show", &id]).output().await;
    assert!(!out.status.success(), "a removed endpoint is gone");
}

#[tokio::test]
async fn admin_commands_manage_accounts_keys_and_a_lost_password() {
    let mut server = TestServer::start().await;
    let with_new = |secret: &str| {
        vec![
            ("UNIMSG_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
            ("UNIMSG_NEW_ADMIN_PASSWORD", secret.to_owned()),
        ]
    };
    let mut create = Run::new(
        &server,
        &["admin", "create", "ops", "--scopes", "users:read"],
    );
    create.env = with_new("ops-first-secret-1");
    assert!(create.ok().await.contains("created ops"));
    let list: serde_json::Value = Run::new(&server, &["admin", "list"]).json().await;
    assert_eq!(list["admins"][1]["admin_id"], "ops");
    let key: serde_json::Value = Run::new(
        &server,
        &["admin", "key", "create", "ops", "--expires-in", "3600"],
    )
    .json()
    .await;
    let secret = key["key"].as_str().unwrap().to_owned();
    // The key works as a credential of the CLI itself.
    let shown = Run::new(&server, &["user", "show", "nobody"])
        .env(&[("UNIMSG_ADMIN_TOKEN", &secret)])
        .output()
        .await;
    assert!(
        String::from_utf8_lossy(&shown.stderr).contains("user not found"),
        "admitted, then 404: {}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let revoked = Run::new(
        &server,
        &[
            "admin",
            "key",
            "revoke",
            "ops",
            key["key_id"].as_str().unwrap(),
        ],
    )
    .ok()
    .await;
    assert!(revoked.contains("revoked"));
    let refused = Run::new(&server, &["user", "show", "nobody"])
        .env(&[("UNIMSG_ADMIN_TOKEN", &secret)])
        .output()
        .await;
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let mut passwd = Run::new(&server, &["admin", "passwd", "ops"]);
    passwd.env = with_new("ops-second-secret-2");
    assert!(passwd.ok().await.contains("is changed"));
    let disabled: serde_json::Value = Run::new(&server, &["admin", "disable", "ops"]).json().await;
    assert_eq!(disabled["disabled"], true);

    // The operator lost the first password: reset it offline.
    assert!(server.terminate().await.success());
    let reset = tokio::process::Command::new(env!("CARGO_BIN_EXE_unimsg"))
        .args(["admin", "reset-password", "--data-dir"])
        .arg(server.data_dir())
        .env_clear()
        .env("UNIMSG_NEW_ADMIN_PASSWORD", "a-new-root-secret-3")
        .output()
        .await
        .unwrap();
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    let server = server.restart_with(&[]).await.unwrap();
    assert!(
        server.logs().contains("UNIMSG_ADMIN_PASSWORD differs"),
        "the old variable is said to be ignored"
    );
    let old = Run::new(&server, &["admin", "list"]).output().await;
    assert!(!old.status.success(), "the lost password still works");
    let new = Run::new(&server, &["admin", "list"])
        .env(&[("UNIMSG_ADMIN_PASSWORD", "a-new-root-secret-3")])
        .output()
        .await;
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
}

/// A server that is not there is one line naming `--server`; a missing
/// local file is not blamed on the admin API; no backtrace either way.
#[tokio::test]
async fn an_unreachable_server_and_a_missing_file_are_one_line_each() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let refused = Run::to(&url, &["user", "show", "someone"]).output().await;
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with(&format!("error: cannot reach the server at {url}"))
            && err.contains("--server"),
        "{err}"
    );

    let missing = Run::to(&url, &["user", "import", "/nonexistent/users.jsonl"])
        .output()
        .await;
    assert!(!missing.status.success());
    let err = stderr(&missing);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("cannot open /nonexistent/users.jsonl"),
        "{err}"
    );
    assert!(!err.contains("admin API"), "not the server's fault: {err}");
}

/// Every admin command that fails says so once: one `error:` line, no
/// line repeated, no backtrace, whether the server is unreachable, the
/// secret is wrong or what was named does not exist.
#[tokio::test]
async fn every_admin_command_fails_in_one_line() {
    const COMMANDS: &[&[&str]] = &[
        &["webhook", "list"],
        &["webhook", "show", "wh_nothing"],
        &["webhook", "deliveries", "wh_nothing"],
        &["webhook", "rm", "wh_nothing"],
        &["webhook", "rotate-secret", "wh_nothing"],
        &["user", "show", "nobody"],
        &["user", "disable", "nobody"],
        &["user", "enable", "nobody"],
        &["user", "delete", "nobody"],
        &["token", "mint", "nobody", "--platform", "web"],
        &["notify", "--to", "nobody", "--content", r#"{"title": "x"}"#],
        &["admin", "list"],
        &["audit", "verify"],
    ];
    let server = TestServer::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let mut checked = 0;
    for args in COMMANDS {
        let wrong_secret = Run::new(&server, args).env(&[
            ("UNIMSG_ADMIN_PASSWORD", "not the admin's secret"),
            ("RUST_BACKTRACE", "1"),
        ]);
        let runs = [
            ("unreachable", Run::to(&nowhere, args)),
            ("wrong secret", wrong_secret),
            ("as root", Run::new(&server, args)),
        ];
        for (case, run) in runs {
            let out = run.output().await;
            if out.status.success() {
                // `webhook list` and the like succeed as root: nothing to check.
                continue;
            }
            let err = stderr(&out);
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(lines.len(), 1, "{args:?} ({case}): one line, got:\n{err}");
            assert!(lines[0].starts_with("error: "), "{args:?} ({case}): {err}");
            assert!(
                !err.contains("backtrace") && !err.contains("panicked"),
                "{args:?} ({case}): {err}"
            );
            let words: Vec<&str> = lines[0].split(": ").collect();
            let unique: std::collections::BTreeSet<&&str> = words.iter().collect();
            assert_eq!(
                unique.len(),
                words.len(),
                "{args:?} ({case}): a cause repeated on the line: {err}"
            );
            checked += 1;
        }
    }
    // Each command fails at least when unreachable and with a wrong secret.
    assert!(checked >= 2 * COMMANDS.len(), "{checked} failures checked");
}
