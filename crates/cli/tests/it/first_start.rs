//! What a newcomer meets first: `--listen` written the ways people write
//! it, logs without terminal colours in a pipe, one access-log line per
//! request (without the secrets a request carries), and an unknown
//! `UNIMSG_*` variable named with the key it was probably meant to be.

use std::time::Duration;

use tokio::process::Command;
use unimsg_testkit::unimsg::{self, StartError};

use crate::harness::{ADMIN_PASSWORD, TestServer};
use crate::support::*;

const START: Duration = Duration::from_secs(60);

/// `unimsg serve --listen LISTEN` in a fresh data directory.
fn serve(listen: &str, dir: &tempfile::TempDir) -> Command {
    let mut cmd = serve_configured(dir);
    cmd.arg("--listen").arg(listen);
    cmd
}

/// `unimsg serve` in a fresh data directory, listening where its
/// environment says.
fn serve_configured(dir: &tempfile::TempDir) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unimsg"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("RUST_LOG")
        // Asked for, and still not shown to the person at the terminal.
        .env("RUST_BACKTRACE", "1")
        .env("UNIMSG_ADMIN_PASSWORD", ADMIN_PASSWORD);
    cmd
}

/// Starts `cmd`, which must listen on every interface and say so.
async fn listens_everywhere_with_a_warning(cmd: Command, what: &str) {
    let started = unimsg::start(cmd, START)
        .await
        .unwrap_or_else(|e| panic!("{what} is accepted: {e}"));
    assert!(
        started.addr.starts_with("0.0.0.0:"),
        "{what}: {}",
        started.addr
    );
    within(&format!("the warning of {what}"), async {
        while !started.logs.text().contains("listening on every interface") {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn listen_takes_a_host_name_and_a_bare_port_and_explains_what_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let named = unimsg::start(serve("localhost:0", &dir), START)
        .await
        .expect("localhost:0 is accepted");
    assert!(
        named.addr.starts_with("127.0.0.1:") || named.addr.starts_with("[::1]:"),
        "localhost resolves to loopback: {}",
        named.addr
    );
    drop(named);

    let dir = tempfile::tempdir().unwrap();
    listens_everywhere_with_a_warning(serve(":0", &dir), "--listen :0").await;
    // The same from the environment (or a file): the warning too.
    let dir = tempfile::tempdir().unwrap();
    let mut from_env = serve_configured(&dir);
    from_env.env("UNIMSG_LISTEN", ":0");
    listens_everywhere_with_a_warning(from_env, "UNIMSG_LISTEN=:0").await;

    for bad in ["8080", "localhost", "no such host.invalid:80", ":port"] {
        let dir = tempfile::tempdir().unwrap();
        match unimsg::start(serve(bad, &dir), START).await {
            Err(StartError::Exited(logs)) => {
                let text = logs.text();
                assert!(
                    text.contains("write HOST:PORT") && text.contains("localhost:8080"),
                    "{bad}: {text}"
                );
                assert_eq!(
                    text.matches("write HOST:PORT").count(),
                    1,
                    "{bad}: said once: {text}"
                );
                assert!(text.starts_with("error: --listen: "), "{bad}: {text}");
                assert!(!text.contains("acktrace"), "{bad}: no backtrace: {text}");
            }
            Err(other) => panic!("{bad}: {other}"),
            Ok(started) => panic!("{bad} was accepted: {}", started.addr),
        }
    }
}

#[tokio::test]
async fn logs_in_a_pipe_have_no_colours_and_one_line_per_request_without_secrets() {
    let server = TestServer::start().await;
    let secret = "not-a-real-token-but-secret";
    let r = reqwest::get(format!("{}/v1/ws?access_token={secret}", server.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "not an upgrade");
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let alice = user(&server.client(), "alice").await;
    alice.api.me().await.unwrap();
    let line = within("the access-log line", async {
        loop {
            if let Some(line) = server
                .logs()
                .lines()
                .find(|l| l.contains(&request_id) && l.contains("unimsg::http"))
            {
                return line.to_owned();
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    for field in ["method=GET", "route=/v1/ws", "status=400", "ms="] {
        assert!(line.contains(field), "{field} in {line}");
    }
    within("the line of /v1/me", async {
        while !server.logs().contains("route=/v1/me status=200") {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let logs = server.logs();
    assert!(!logs.contains(secret), "the query never reaches the log");
    assert!(!logs.contains('\u{1b}'), "no terminal colours in a pipe");

    // A client's own request id is kept when it is plain.
    let r = reqwest::Client::new()
        .get(format!("{}/healthz", server.base))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-42");
}

#[tokio::test]
async fn the_access_log_can_be_switched_off() {
    let mut server = TestServer::start_with(&[("UNIMSG_HTTP__LOG_REQUESTS", "false")]).await;
    let r = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(r.headers().contains_key("x-request-id"), "the id stays");
    server.terminate().await;
    assert!(!server.logs().contains("unimsg::http"), "{}", server.logs());
}

#[tokio::test]
async fn an_unknown_variable_is_named_with_the_key_it_was_probably_meant_to_be() {
    let server = TestServer::start_with(&[
        ("UNIMSG_HTTP__MAX_BODY_BYTE", "5"),
        ("UNIMSG_NOTHING_LIKE_ANY_KEY_AT_ALL", "1"),
    ])
    .await;
    within("the warnings", async {
        loop {
            let logs = server.logs();
            if logs.contains("UNIMSG_HTTP__MAX_BODY_BYTE:")
                && logs.contains("UNIMSG_NOTHING_LIKE_ANY_KEY_AT_ALL")
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let logs = server.logs();
    assert!(
        logs.contains("did you mean UNIMSG_HTTP__MAX_BODY_BYTES?"),
        "{logs}"
    );
    let far = logs
        .lines()
        .find(|l| l.contains("UNIMSG_NOTHING_LIKE_ANY_KEY_AT_ALL"))
        .unwrap();
    assert!(!far.contains("did you mean"), "no far-fetched guess: {far}");
}

/// `POST /v1/admin/token` takes Basic credentials like every admin call,
/// and its JSON form the field names of the rest (`admin_id`, `password`;
/// `secret` still works).
#[tokio::test]
async fn the_admin_token_takes_basic_credentials_or_admin_id_and_password() {
    let server = TestServer::start().await;
    let url = format!("{}/v1/admin/token", server.base);
    let http = reqwest::Client::new();
    let basic = http
        .post(&url)
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    let token: serde_json::Value = basic.json().await.unwrap();
    assert!(token["token"].as_str().is_some_and(|t| !t.is_empty()));
    for field in ["password", "secret"] {
        let r = http
            .post(&url)
            .json(&serde_json::json!({"admin_id": "admin", field: ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{field}");
    }
    let wrong = http
        .post(&url)
        .basic_auth("admin", Some("not the password"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let empty = http.post(&url).send().await.unwrap();
    assert_eq!(empty.status(), 400);
    let body: serde_json::Value = empty.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Basic") && m.contains("password")),
        "{body}"
    );
}

/// What a client sees of a body or query it got wrong names the field and
/// what is allowed, with no framework preamble and no Rust type names.
#[tokio::test]
async fn refusals_of_bad_bodies_and_queries_speak_without_rust_internals() {
    let server = TestServer::start().await;
    let alice = user(&server.client(), "alice").await;
    let token = &alice.tokens.access_token;
    let http = reqwest::Client::new();
    let cases: [(reqwest::Method, &str, &str, &str); 4] = [
        (
            reqwest::Method::POST,
            "/v1/messages",
            r#"{"to":{"usr":"x"},"content":{}}"#,
            "to",
        ),
        (
            reqwest::Method::POST,
            "/v1/messages",
            r#"{"to":5,"content":{}}"#,
            "to",
        ),
        (
            reqwest::Method::POST,
            "/v1/ack",
            r#"{"seq":"seven"}"#,
            "seq",
        ),
        (reqwest::Method::GET, "/v1/sync?after=x", "", "after"),
    ];
    for (method, path, body, field) in cases {
        let mut request = http
            .request(method, format!("{}{path}", server.base))
            .bearer_auth(token);
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 400, "{path} {body}");
        let answer: serde_json::Value = r.json().await.unwrap();
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{path} {body}: {message}");
        for internal in [
            "Failed to",
            "struct ",
            "enum ",
            "u64",
            "variant identifier",
            " at line ",
        ] {
            assert!(!message.contains(internal), "{path} {body}: {message}");
        }
    }
}

/// A configuration value of the wrong kind stops the start with the key
/// and the allowed values, not the config library's Rust words.
#[tokio::test]
async fn a_bad_configuration_value_is_named_with_what_is_allowed() {
    let logs = TestServer::try_start_with(&[("UNIMSG_AUTH__DEVICE_POLICY", "bogus")])
        .await
        .err()
        .expect("a bogus device policy was accepted");
    assert!(logs.contains("auth.device_policy"), "{logs}");
    assert!(
        logs.contains("one_per_platform") && logs.contains("single"),
        "the allowed values: {logs}"
    );
    assert!(!logs.contains("variant constructor"), "{logs}");
    assert!(!logs.contains("enum "), "{logs}");
}

/// A first start says each thing once: one line for the new database
/// schema (not one per migration step), and no line repeated.
#[tokio::test]
async fn a_first_start_says_each_thing_once() {
    let dir = tempfile::tempdir().unwrap();
    let started = unimsg::start(serve("127.0.0.1:0", &dir), START)
        .await
        .expect("a first start");
    within("the console line", async {
        while !started.logs.text().contains("admin console") {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let text = started.logs.text();
    // Without the timestamp each line starts with.
    let said: Vec<&str> = text
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).trim())
        .filter(|l| !l.is_empty())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for line in &said {
        assert!(seen.insert(*line), "said twice: {line}\n{text}");
    }
    let schema = said.iter().filter(|l| l.contains("schema")).count();
    assert_eq!(schema, 1, "one line about the schema:\n{text}");
    assert!(
        said.iter()
            .any(|l| l.contains("created the database schema")),
        "{text}"
    );
}
