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
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unimsg"));
    cmd.arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .env("UNIMSG_ADMIN_PASSWORD", ADMIN_PASSWORD);
    cmd
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
    let everywhere = unimsg::start(serve(":0", &dir), START)
        .await
        .expect(":0 is accepted");
    assert!(
        everywhere.addr.starts_with("0.0.0.0:"),
        "{}",
        everywhere.addr
    );
    within("the warning", async {
        while !everywhere
            .logs
            .text()
            .contains("listening on every interface")
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    drop(everywhere);

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
