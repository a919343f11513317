//! Schema migrations of the embedded store, applied at start in order and
//! tracked with `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry moves the schema from version `i` to `i + 1`. Never edit a
/// released migration: append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT,
    status        TEXT NOT NULL DEFAULT 'active',
    created_at    INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL DEFAULT 0,
    acked_seq     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE sessions (
    session_id    TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(user_id),
    platform      TEXT NOT NULL,
    device_id     TEXT,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoke_reason TEXT,
    ip            TEXT,
    user_agent    TEXT
);
CREATE INDEX sessions_by_user ON sessions(user_id, created_at);

CREATE TABLE refresh_tokens (
    token_hash  BLOB PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(session_id),
    expires_at  INTEGER NOT NULL,
    rotated_at  INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_by_session ON refresh_tokens(session_id);

CREATE TABLE conversations (
    conversation_id TEXT PRIMARY KEY,
    last_conv_seq   INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE conversation_members (
    conversation_id TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    read_upto       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON conversation_members(user_id);

CREATE TABLE messages (
    message_id      TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    conv_seq        INTEGER NOT NULL,
    sender_id       TEXT NOT NULL,
    recipient_id    TEXT NOT NULL,
    kind            TEXT NOT NULL,
    key_id          INTEGER NOT NULL,
    nonce           BLOB NOT NULL,
    content         BLOB NOT NULL,
    client_msg_id   TEXT,
    created_at      INTEGER NOT NULL,
    recalled_at     INTEGER,
    UNIQUE (conversation_id, conv_seq)
);
CREATE UNIQUE INDEX messages_idempotency ON messages(sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;

CREATE TABLE inbox (
    user_id    TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    message_id TEXT,
    data       TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;

CREATE TABLE data_keys (
    key_id     INTEGER PRIMARY KEY,
    wrapped    BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE admins (
    admin_id    TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE notifications (
    message_id TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    sender     TEXT NOT NULL,
    key_id     INTEGER NOT NULL,
    nonce      BLOB NOT NULL,
    content    BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE notification_recipients (
    message_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    read_at    INTEGER,
    PRIMARY KEY (message_id, user_id)
) WITHOUT ROWID;
CREATE INDEX notification_recipients_by_user ON notification_recipients(user_id, seq);

CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    content   TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);
"#,
    r#"
-- Broadcasts are stored once. A user's visible stream merges them with the
-- inbox: an inbox row records how many broadcasts existed when it was
-- committed (bpos); a user sees the broadcasts after the count at their
-- creation (bbase). See ARCHITECTURE.md, "Broadcast positions".
CREATE TABLE broadcasts (
    bseq       INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    sender     TEXT NOT NULL,
    key_id     INTEGER NOT NULL,
    nonce      BLOB NOT NULL,
    content    BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
ALTER TABLE inbox ADD COLUMN bpos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN bbase INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- Relationships: one row per direction. A friendship is two rows with
-- state 'friend'; a pending request is the requester's row 'requested'.
CREATE TABLE friend_requests (
    from_id    TEXT NOT NULL,
    to_id      TEXT NOT NULL,
    message    TEXT,
    state      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (from_id, to_id)
) WITHOUT ROWID;
CREATE INDEX friend_requests_to ON friend_requests(to_id, state);

CREATE TABLE friends (
    user_id    TEXT NOT NULL,
    friend_id  TEXT NOT NULL,
    tags       TEXT NOT NULL DEFAULT '[]',
    remark     TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, friend_id)
) WITHOUT ROWID;

CREATE TABLE blocks (
    user_id    TEXT NOT NULL,
    blocked_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, blocked_id)
) WITHOUT ROWID;
"#,
    r#"
-- Groups. Roles and mutes live in group_members; read positions live in
-- conversation_members (conversation 'g:{group_id}'), as for direct chats:
-- no per-message per-member rows. `since` is the conversation position
-- when the member joined: they receive and see only later messages.
-- `version` counts the group's changes (optimistic concurrency). A
-- dissolved group keeps its row so that its id is never reused.
CREATE TABLE chat_groups (
    group_id     TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    notice       TEXT NOT NULL DEFAULT '',
    join_policy  TEXT NOT NULL,
    all_muted    INTEGER NOT NULL DEFAULT 0,
    version      INTEGER NOT NULL DEFAULT 1,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    dissolved_at INTEGER
) WITHOUT ROWID;

CREATE TABLE group_members (
    group_id    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    role        TEXT NOT NULL,
    muted_until INTEGER,
    since       INTEGER NOT NULL DEFAULT 0,
    joined_at   INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX group_members_by_user ON group_members(user_id);
"#,
    // Friend-request text is sealed like message content
    // (`Sealed::to_bytes`); `message` stays for rows written before.
    r#"
ALTER TABLE friend_requests ADD COLUMN message_sealed BLOB;
"#,
    // Webhooks. `events` is the filter between commas (`,a,b,`; `,*,`
    // for all). Secrets are sealed like message content; during a
    // rotation's overlap the previous one signs too. `hook_events` is the
    // outbox (an event is written only if an endpoint subscribes to it);
    // each pending delivery is due at `next_at`, which a claim moves to
    // the end of its lease.
    r#"
CREATE TABLE webhooks (
    webhook_id      TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    events          TEXT NOT NULL,
    description     TEXT NOT NULL,
    enabled         INTEGER NOT NULL,
    include_content INTEGER NOT NULL,
    secret          BLOB NOT NULL,
    previous_secret BLOB,
    previous_until  BIGINT,
    failing_since   BIGINT,
    disabled_reason TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE hook_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,
    message_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX hook_events_by_time ON hook_events(created_at);

CREATE TABLE hook_deliveries (
    webhook_id  TEXT NOT NULL,
    event_seq   BIGINT NOT NULL,
    state       TEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    next_at     BIGINT NOT NULL,
    last_status BIGINT,
    last_error  TEXT,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (webhook_id, event_seq)
);
CREATE INDEX hook_deliveries_due ON hook_deliveries(webhook_id, event_seq) WHERE state = 'pending';
CREATE INDEX hook_deliveries_by_event ON hook_deliveries(event_seq);
"#,
    // Admin accounts can be disabled, and their tokens revoked by any
    // change (`tokens_valid_after`); machines get API keys of their own,
    // stored as the key's SHA-256.
    r#"
ALTER TABLE admins ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE admins ADD COLUMN tokens_valid_after INTEGER NOT NULL DEFAULT 0;
CREATE TABLE admin_keys (
    key_id       TEXT PRIMARY KEY,
    admin_id     TEXT NOT NULL,
    key_hash     BLOB NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    last_used_ip TEXT,
    revoked_at   INTEGER
);
CREATE INDEX admin_keys_by_admin ON admin_keys(admin_id);
"#,
    // The secret an admin's signed requests are checked with, sealed like
    // message content.
    r#"
ALTER TABLE admins ADD COLUMN signing_secret BLOB;
"#,
    // The addresses each admin account's credentials were used from, so
    // that a use from a new one raises an alert.
    r#"
CREATE TABLE admin_addresses (
    admin_id   TEXT NOT NULL,
    ip         TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    PRIMARY KEY (admin_id, ip)
);
"#,
    // Whether a notification was pushed at once to a live connection of
    // each recipient (the admin message status's "sent live").
    r#"
ALTER TABLE notification_recipients ADD COLUMN sent_live INTEGER NOT NULL DEFAULT 0;
"#,
    // An inbox's newest seq is read from the inbox itself (its primary
    // key makes it one seek), so an append no longer rewrites the user's
    // row: a group message to 200 members wrote 200 user rows besides
    // their inbox rows.
    r#"
ALTER TABLE users DROP COLUMN last_seq;
"#,
];

/// The newest schema version (`PRAGMA user_version` after migrating).
pub(crate) const VERSION: usize = MIGRATIONS.len();

/// Brings the database to the newest schema version.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
        tracing::debug!(version = i + 1, "applied schema migration");
    }
    // One line for the whole migration, not one per step.
    let to = MIGRATIONS.len();
    if current == 0 {
        tracing::info!(version = to, "created the database schema");
    } else if current < to {
        tracing::info!(from = current, to, "migrated the database schema");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SqliteOptions, SqliteStore};
    use time::OffsetDateTime;
    use unimsg_proto::{EventType, Seq, UserId};
    use unimsg_store::{EventDraft, Inbox};

    /// A database written before `users.last_seq` was dropped keeps its
    /// inbox positions: the newest seq is read from the inbox rows, and
    /// the next append takes the one after it.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn dropping_the_seq_counter_keeps_every_inbox_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let user = UserId::parse("u_old").unwrap();
        {
            let mut conn = Connection::open(&path).unwrap();
            let before = MIGRATIONS.len() - 1;
            for sql in &MIGRATIONS[..before] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(&format!("PRAGMA user_version = {before}"))
                .unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute(
                "INSERT INTO users (user_id, username, display_name, created_at, last_seq) \
                 VALUES (?1, 'old', 'Old', 0, 3)",
                [user.as_str()],
            )
            .unwrap();
            for seq in 1..=3 {
                tx.execute(
                    "INSERT INTO inbox (user_id, seq, kind, data, created_at) \
                     VALUES (?1, ?2, 'friend.request', '{}', 0)",
                    rusqlite::params![user.as_str(), seq],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
        assert_eq!(store.last_seq(&user).await.unwrap(), Seq(3));
        let appended = store
            .append_events(vec![EventDraft {
                user_id: user.clone(),
                kind: EventType::FriendRequest,
                data: "{}".into(),
                at: OffsetDateTime::now_utc(),
            }])
            .await
            .unwrap();
        assert_eq!(appended[0].seq, Seq(4));
        assert_eq!(store.last_seq(&user).await.unwrap(), Seq(4));
    }
}
