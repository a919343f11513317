//! The PostgreSQL backend against a real PostgreSQL server: the shared
//! backend suite (one test per check, each on a server of its own),
//! migrations applied once when several nodes start
//! together, and concurrent writers on separate pools (as separate nodes
//! are) keeping every inbox gap-free.

// Test code: a panic is how a failure is reported (clippy's
// `allow-unwrap-in-tests` does not reach this crate's helper functions).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use time::OffsetDateTime;
use unimsg_proto::{EventType, Seq, UserId};
use unimsg_store::{EventDraft, Inbox, NewUser, Store, Users};
use unimsg_store_postgres::{PgOptions, PgStore};
use unimsg_testkit::Postgres;

async fn connect(url: &str) -> PgStore {
    PgStore::connect(PgOptions::new(url))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

/// A fresh store on a PostgreSQL server of its own, which runs as long as
/// the returned guard.
async fn fresh() -> (Arc<dyn Store>, Postgres) {
    let pg = Postgres::start();
    let url = pg.create_database("suite");
    (Arc::new(connect(&url).await), pg)
}

unimsg_store::backend_suite!(fresh);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once_and_write_gap_free() {
    let pg = Postgres::start();
    let url = pg.create_database("nodes");
    // Three "nodes": three pools opened at the same moment.
    let (a, b, c) = tokio::join!(connect(&url), connect(&url), connect(&url));
    let nodes = [a, b, c];
    let user = UserId::parse("shared").unwrap();
    nodes[0]
        .create_user(NewUser {
            hook: None,
            user_id: user.clone(),
            username: "shared".into(),
            display_name: "Shared".into(),
            password_hash: None,
            created_at: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for k in 0..20 {
            let node = node.clone();
            let user = user.clone();
            tasks.push(tokio::spawn(async move {
                node.append_events(vec![EventDraft {
                    user_id: user,
                    kind: EventType::FriendRequest,
                    data: format!("{{\"node\":{n},\"k\":{k}}}"),
                    at: OffsetDateTime::now_utc(),
                }])
                .await
                .unwrap_or_else(|e| panic!("append: {e}"))
            }));
        }
    }
    let mut seqs = Vec::new();
    for t in tasks {
        let events = t.await.unwrap();
        seqs.extend(events.iter().map(|e| e.seq.0));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=60).collect::<Vec<u64>>(), "gap-free, no repeat");
    let stored = nodes[2].events_after(&user, Seq(0), 100).await.unwrap();
    let stored: Vec<u64> = stored.iter().map(|e| e.seq.0).collect();
    assert_eq!(stored, (1..=60).collect::<Vec<u64>>());
    assert_eq!(nodes[1].last_seq(&user).await.unwrap(), Seq(60));
    nodes[0].ping().await.unwrap();
}
