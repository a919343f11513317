//! Integration tests of the embedded store: the shared backend suite (one
//! test per check, each on a fresh database file), and durability across
//! reopening.

// Test code: a panic is how a failure is reported (clippy's
// `allow-unwrap-in-tests` does not reach this crate's helper functions).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use unimsg_store::{Store, Users};
use unimsg_store_sqlite::{SqliteOptions, SqliteStore};

/// A fresh store in its own temporary directory, which lives as long as
/// the returned guard.
async fn fresh() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteOptions::new(dir.path().join("db.sqlite"))).unwrap();
    (Arc::new(store), dir)
}

unimsg_store::backend_suite!(fresh);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_writes_survive_reopen_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
        let user = unimsg_store::NewUser {
            hook: None,
            user_id: "keep".parse().unwrap(),
            username: "keep".into(),
            display_name: "Keep".into(),
            password_hash: None,
            created_at: time::OffsetDateTime::now_utc(),
        };
        store.create_user(user).await.unwrap();
    }
    let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
    let found = store.user_by_username("keep").await.unwrap();
    assert!(found.is_some());
    store.ping().await.unwrap();
}
