//! Schema migrations of the PostgreSQL store, applied at start in order and
//! tracked in `unimsg_schema`. Nodes starting together take an advisory
//! lock, so exactly one of them migrates.

use tokio_postgres::Client;

use crate::DbResult;

/// Key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x756e_696d_7367; // "unimsg"

/// Each entry moves the schema from version `i` to `i + 1`. Never edit a
/// released migration: append a new one. Times are Unix milliseconds
/// (`BIGINT`), as in the embedded store.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT,
    status        TEXT NOT NULL DEFAULT 'active',
    created_at    BIGINT NOT NULL,
    -- The newest raw inbox seq; bumped under the row lock, so seqs are
    -- gap-free however many nodes write.
    last_seq      BIGINT NOT NULL DEFAULT 0,
    -- The acknowledged position (a visible seq).
    acked_seq     BIGINT NOT NULL DEFAULT 0,
    -- Broadcasts that existed when the user was created.
    bbase         BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE sessions (
    session_id    TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(user_id),
    platform      TEXT NOT NULL,
    device_id     TEXT,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    revoke_reason TEXT,
    ip            TEXT,
    user_agent    TEXT
);
CREATE INDEX sessions_by_user ON sessions(user_id, created_at);

CREATE TABLE refresh_tokens (
    token_hash  BYTEA PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(session_id),
    expires_at  BIGINT NOT NULL,
    rotated_at  BIGINT
);
CREATE INDEX refresh_by_session ON refresh_tokens(session_id);

CREATE TABLE conversations (
    conversation_id TEXT PRIMARY KEY,
    last_conv_seq   BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE conversation_members (
    conversation_id TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    read_upto       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX members_by_user ON conversation_members(user_id);

CREATE TABLE messages (
    message_id      TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    conv_seq        BIGINT NOT NULL,
    sender_id       TEXT NOT NULL,
    recipient_id    TEXT NOT NULL,
    kind            TEXT NOT NULL,
    key_id          BIGINT NOT NULL,
    nonce           BYTEA NOT NULL,
    content         BYTEA NOT NULL,
    client_msg_id   TEXT,
    created_at      BIGINT NOT NULL,
    recalled_at     BIGINT,
    UNIQUE (conversation_id, conv_seq)
);
CREATE UNIQUE INDEX messages_idempotency ON messages(sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;

-- One row per event of a user's inbox. `bpos` is the number of broadcasts
-- committed before the row (see ARCHITECTURE.md, "Broadcast positions").
CREATE TABLE inbox (
    user_id    TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    message_id TEXT,
    data       TEXT,
    created_at BIGINT NOT NULL,
    bpos       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, seq)
);

CREATE TABLE data_keys (
    key_id     BIGINT PRIMARY KEY,
    wrapped    BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE admins (
    admin_id    TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE notifications (
    message_id TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    sender     TEXT NOT NULL,
    key_id     BIGINT NOT NULL,
    nonce      BYTEA NOT NULL,
    content    BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE notification_recipients (
    message_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    read_at    BIGINT,
    PRIMARY KEY (message_id, user_id)
);
CREATE INDEX notification_recipients_by_user ON notification_recipients(user_id, seq);

CREATE TABLE audit_log (
    id        BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    content   TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash      BYTEA NOT NULL
);

-- The broadcast clock: its one row holds the newest bseq. Inbox writers
-- read it FOR SHARE and a broadcast bumps it under FOR UPDATE, so a
-- broadcast commits strictly between the inbox rows before it and those
-- after it, whichever node writes them.
CREATE TABLE broadcast_clock (
    id   INT PRIMARY KEY CHECK (id = 1),
    head BIGINT NOT NULL
);
INSERT INTO broadcast_clock (id, head) VALUES (1, 0);

CREATE TABLE broadcasts (
    bseq       BIGINT PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    sender     TEXT NOT NULL,
    key_id     BIGINT NOT NULL,
    nonce      BYTEA NOT NULL,
    content    BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- Relationships: one row per direction. A pending request is the
-- requester's row with state 'requested'.
CREATE TABLE friend_requests (
    from_id    TEXT NOT NULL,
    to_id      TEXT NOT NULL,
    message    TEXT,
    state      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (from_id, to_id)
);
CREATE INDEX friend_requests_to ON friend_requests(to_id, state);

CREATE TABLE friends (
    user_id    TEXT NOT NULL,
    friend_id  TEXT NOT NULL,
    tags       TEXT NOT NULL DEFAULT '[]',
    remark     TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, friend_id)
);

CREATE TABLE blocks (
    user_id    TEXT NOT NULL,
    blocked_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, blocked_id)
);

-- Groups: roles and mutes in group_members; read positions in
-- conversation_members (conversation 'g:{group_id}'). `since` is the
-- conversation position when the member joined. `version` counts changes
-- (optimistic concurrency). A dissolved group keeps its row.
CREATE TABLE chat_groups (
    group_id     TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    notice       TEXT NOT NULL DEFAULT '',
    join_policy  TEXT NOT NULL,
    all_muted    BOOLEAN NOT NULL DEFAULT FALSE,
    version      BIGINT NOT NULL DEFAULT 1,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    dissolved_at BIGINT
);

CREATE TABLE group_members (
    group_id    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    role        TEXT NOT NULL,
    muted_until BIGINT,
    since       BIGINT NOT NULL DEFAULT 0,
    joined_at   BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_by_user ON group_members(user_id);
"#,
    // Friend-request text is sealed like message content
    // (`Sealed::to_bytes`); `message` stays for rows written before.
    r#"
ALTER TABLE friend_requests ADD COLUMN message_sealed BYTEA;
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
    enabled         BOOLEAN NOT NULL,
    include_content BOOLEAN NOT NULL,
    secret          BYTEA NOT NULL,
    previous_secret BYTEA,
    previous_until  BIGINT,
    failing_since   BIGINT,
    disabled_reason TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE hook_events (
    seq        BIGSERIAL PRIMARY KEY,
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
ALTER TABLE admins ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE admins ADD COLUMN tokens_valid_after BIGINT NOT NULL DEFAULT 0;
CREATE TABLE admin_keys (
    key_id       TEXT PRIMARY KEY,
    admin_id     TEXT NOT NULL,
    key_hash     BYTEA NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    last_used_ip TEXT,
    revoked_at   BIGINT
);
CREATE INDEX admin_keys_by_admin ON admin_keys(admin_id);
"#,
    // The secret an admin's signed requests are checked with, sealed like
    // message content.
    r#"
ALTER TABLE admins ADD COLUMN signing_secret BYTEA;
"#,
    // The addresses each admin account's credentials were used from, so
    // that a use from a new one raises an alert.
    r#"
CREATE TABLE admin_addresses (
    admin_id   TEXT NOT NULL,
    ip         TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    PRIMARY KEY (admin_id, ip)
);
"#,
    // Whether a notification was pushed at once to a live connection of
    // each recipient (the admin message status's "sent live").
    r#"
ALTER TABLE notification_recipients ADD COLUMN sent_live BOOLEAN NOT NULL DEFAULT false;
"#,
];

/// Brings the database to the newest schema version.
pub(crate) async fn migrate(client: &mut Client) -> DbResult<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS unimsg_schema (version INT NOT NULL)")
        .await?;
    let current: Option<i32> = tx
        .query_opt("SELECT max(version) FROM unimsg_schema", &[])
        .await?
        .and_then(|r| r.get(0));
    let current = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.batch_execute(sql).await?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO unimsg_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::debug!(version, "applied schema migration");
    }
    tx.commit().await?;
    // One line for the whole migration, not one per step.
    let to = MIGRATIONS.len();
    if current == 0 {
        tracing::info!(version = to, "created the database schema");
    } else if current < to {
        tracing::info!(from = current, to, "migrated the database schema");
    }
    Ok(())
}
