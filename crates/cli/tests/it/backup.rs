//! `unimsg backup` while the server runs and sends go on, and `unimsg
//! restore` into a new data directory: every message acknowledged before
//! the backup is read back; the master key is in the file only when asked.

use std::path::Path;
use std::process::Output;

use base64::Engine;

use crate::harness::TestServer;
use crate::support::*;

fn unimsg(args: &[&str], data_dir: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_unimsg"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("UNIMSG_MASTER_KEY")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The texts bob reads on `server`, in order.
async fn texts(server: &TestServer, password_user: &str) -> Vec<String> {
    let bob = login(&server.client(), password_user, "web", None).await;
    message_texts(&full_sync(&bob.api).await)
}

#[tokio::test]
async fn a_backup_taken_while_messages_are_sent_restores_every_acknowledged_message() {
    let server = TestServer::start_with(&[("UNIMSG_LIMITS__SEND_PER_MINUTE", "100000")]).await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    let bob = user(&client, "bob").await;
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        let text = format!("before {i}");
        alice.api.send_text(&bob.id, &text, None).await.unwrap();
        acknowledged.push(text);
    }
    // Sends go on while both backups are taken.
    let sender = {
        let api = alice.api.clone();
        let to = bob.id.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                api.send_text(&to, &format!("during {i}"), None)
                    .await
                    .unwrap();
            }
        })
    };
    let out = tempfile::tempdir().unwrap();
    let plain = out.path().join("plain.db");
    let keyed = out.path().join("keyed.db");
    let data_dir = server.data_dir().to_owned();
    let (plain_said, keyed_said) = {
        let (p, k, d) = (plain.clone(), keyed.clone(), data_dir.clone());
        tokio::task::spawn_blocking(move || {
            let plain = unimsg(&["backup", "--out", p.to_str().unwrap()], &d);
            let keyed = unimsg(
                &["backup", "--include-keys", "--out", k.to_str().unwrap()],
                &d,
            );
            (ok(&plain), ok(&keyed))
        })
        .await
        .unwrap()
    };
    assert!(
        plain_said.contains("without the master key"),
        "{plain_said}"
    );
    assert!(keyed_said.contains("with the master key"), "{keyed_said}");
    sender.await.unwrap();

    // Only the backup made with --include-keys carries the master key.
    let key_text = std::fs::read_to_string(data_dir.join("master.key")).unwrap();
    let key_text = key_text.trim();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key_text)
        .unwrap();
    let plain_bytes = std::fs::read(&plain).unwrap();
    assert!(!contains(&plain_bytes, key_text.as_bytes()));
    assert!(!contains(&plain_bytes, &raw));
    assert!(contains(
        &std::fs::read(&keyed).unwrap(),
        key_text.as_bytes()
    ));
    // A backup file is never overwritten.
    let again = unimsg(&["backup", "--out", plain.to_str().unwrap()], &data_dir);
    assert!(!again.status.success());

    // Restored without the key: the operator brings master.key.
    let plain_server = TestServer::start_prepared(&[], |dir| {
        let said = ok(&unimsg(&["restore", plain.to_str().unwrap()], dir));
        assert!(said.contains("no master key here yet"), "{said}");
        assert!(!dir.join("master.key").exists());
        std::fs::copy(data_dir.join("master.key"), dir.join("master.key")).unwrap();
    })
    .await;
    // Restored with the key from the file.
    let keyed_server = TestServer::start_prepared(&[], |dir| {
        let said = ok(&unimsg(&["restore", keyed.to_str().unwrap()], dir));
        assert!(said.contains("master key is in"), "{said}");
        assert!(said.contains("opens every restored key"), "{said}");
    })
    .await;
    for restored in [&plain_server, &keyed_server] {
        let read = texts(restored, "bob").await;
        assert_eq!(read[..acknowledged.len()], acknowledged[..]);
        // What was sent during the backup is there in order, up to the
        // moment the copy was taken.
        for (i, t) in read[acknowledged.len()..].iter().enumerate() {
            assert_eq!(*t, format!("during {i}"));
        }
    }
}

#[tokio::test]
async fn restore_refuses_to_overwrite_and_refuses_what_is_not_a_backup() {
    let mut server = TestServer::start().await;
    user(&server.client(), "alice").await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("b.db");
    ok(&unimsg(
        &["backup", "--out", file.to_str().unwrap()],
        server.data_dir(),
    ));
    server.terminate().await;
    // Over an existing database only with --force.
    let refused = unimsg(&["restore", file.to_str().unwrap()], server.data_dir());
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    let forced = ok(&unimsg(
        &["restore", "--force", file.to_str().unwrap()],
        server.data_dir(),
    ));
    assert!(forced.contains("opens every restored key"), "{forced}");

    // Garbage, and a SQLite file that is not ours, change nothing.
    let garbage = out.path().join("garbage.db");
    std::fs::write(&garbage, b"not a database at all, just bytes").unwrap();
    let other = out.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    for bad in [&garbage, &other] {
        let refused = unimsg(&["restore", bad.to_str().unwrap()], fresh.path());
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("not a unimsg backup"), "{stderr}");
        assert!(!fresh.path().join("unimsg.db").exists());
    }
}
