//! Users, sessions with their refresh tokens, data keys and admin accounts
//! on PostgreSQL.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use unimsg_proto::{EventType, Platform, SessionId, UserId};
use unimsg_store::{
    Admin, Admins, DataKeys, EventBody, NewRefreshToken, NewSession, NewUser, PasswordHash,
    RefreshOutcome, Result, Revocation, Session, Sessions, StoreError, StoredEvent, TokenHash,
    User, UserStatus, UserUpdate, Users, WrappedKey,
};

use crate::admin::column;
use crate::{
    InboxRow, PgStore, append_inbox, broadcast_clock, corrupt, from_ms, ms, pg, unique, user_id,
};

const USER_COLUMNS: &str = "user_id, username, display_name, password_hash, status, created_at";

/// Reads the [`USER_COLUMNS`].
fn read_user(row: &Row) -> Result<User> {
    let status: String = column(row, 4)?;
    let hash: Option<String> = column(row, 3)?;
    Ok(User {
        user_id: user_id(column(row, 0)?)?,
        username: column(row, 1)?,
        display_name: column(row, 2)?,
        password_hash: hash.map(PasswordHash),
        status: if status == "disabled" {
            UserStatus::Disabled
        } else {
            UserStatus::Active
        },
        created_at: from_ms(column(row, 5)?)?,
    })
}

/// Inserts one user who sees the broadcasts after `head`. A taken id is
/// `Conflict("user_id")`, a taken username `Conflict("username")`; neither
/// aborts the transaction, so an import goes on with the next item.
async fn insert_user(tx: &Transaction<'_>, head: i64, user: &NewUser) -> Result<User> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO users (user_id, username, display_name, password_hash, created_at, bbase) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(pg)?;
    let inserted = tx
        .execute(
            &insert,
            &[
                &user.user_id.as_str(),
                &user.username,
                &user.display_name,
                &user.password_hash.as_ref().map(|h| h.0.as_str()),
                &ms(user.created_at),
                &head,
            ],
        )
        .await
        .map_err(pg)?;
    if inserted == 0 {
        // Which rule clashed; the id is checked first, as in the embedded
        // store.
        let taken = tx
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM users WHERE user_id = $1)")
            .await
            .map_err(pg)?;
        let taken: bool = column(
            &tx.query_one(&taken, &[&user.user_id.as_str()])
                .await
                .map_err(pg)?,
            0,
        )?;
        return Err(StoreError::Conflict(if taken {
            "user_id"
        } else {
            "username"
        }));
    }
    Ok(User {
        user_id: user.user_id.clone(),
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        password_hash: user.password_hash.clone(),
        status: UserStatus::Active,
        created_at: user.created_at,
    })
}

/// One user by a unique column (`user_id` or `username`).
async fn user_where(store: &PgStore, column_name: &str, value: &str) -> Result<Option<User>> {
    let client = store.client().await?;
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE {column_name} = $1"
        ))
        .await
        .map_err(pg)?;
    client
        .query_opt(&stmt, &[&value])
        .await
        .map_err(pg)?
        .map(|row| read_user(&row))
        .transpose()
}

#[async_trait]
impl Users for PgStore {
    async fn create_user(&self, user: NewUser) -> Result<User> {
        transaction!(self, |tx| {
            // The clock FOR SHARE: no broadcast commits until this user
            // does, so every broadcast after `bbase` is one they see.
            let head = broadcast_clock(tx).await?;
            insert_user(tx, head, &user).await
        })
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>> {
        user_where(self, "user_id", id.as_str()).await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        user_where(self, "username", username).await
    }

    async fn unknown_users(&self, ids: Vec<UserId>) -> Result<Vec<UserId>> {
        let client = self.client().await?;
        let names: Vec<&str> = ids.iter().map(UserId::as_str).collect();
        let stmt = client
            .prepare_cached(
                "SELECT u.id FROM unnest($1::text[]) WITH ORDINALITY AS u(id, n) \
                 WHERE NOT EXISTS (SELECT 1 FROM users WHERE user_id = u.id) ORDER BY u.n",
            )
            .await
            .map_err(pg)?;
        let rows = client.query(&stmt, &[&names]).await.map_err(pg)?;
        rows.iter().map(|r| user_id(column(r, 0)?)).collect()
    }

    async fn import_users(&self, users: Vec<NewUser>) -> Result<Vec<Result<User>>> {
        transaction!(self, |tx| {
            let head = broadcast_clock(tx).await?;
            let mut out = Vec::with_capacity(users.len());
            for user in &users {
                // A clash fails the item alone (it wrote nothing); any other
                // error has aborted the transaction and fails the batch.
                match insert_user(tx, head, user).await {
                    Err(StoreError::Conflict(what)) => out.push(Err(StoreError::Conflict(what))),
                    other => out.push(Ok(other?)),
                }
            }
            Ok(out)
        })
    }

    async fn update_user(&self, id: &UserId, update: UserUpdate) -> Result<User> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "UPDATE users SET display_name = COALESCE($2, display_name), \
                 password_hash = COALESCE($3, password_hash), status = COALESCE($4, status) \
                 WHERE user_id = $1 RETURNING {USER_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = client
            .query_opt(
                &stmt,
                &[
                    &id.as_str(),
                    &update.display_name,
                    &update.password_hash.as_ref().map(|h| h.0.as_str()),
                    &update.status.map(UserStatus::as_str),
                ],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound("user"))?;
        read_user(&row)
    }

    async fn delete_user(&self, id: &UserId) -> Result<()> {
        transaction!(self, |tx| {
            let id = id.as_str();
            // Lock order: group rows (sorted) before the user row.
            tx.execute(
                "SELECT 1 FROM chat_groups WHERE group_id IN \
                 (SELECT group_id FROM group_members WHERE user_id = $1) \
                 ORDER BY group_id FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(pg)?;
            // Held to the end: no inbox row can be appended for them meanwhile.
            let exists = tx
                .query_opt("SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE", &[&id])
                .await
                .map_err(pg)?;
            if exists.is_none() {
                return Err(StoreError::NotFound("user"));
            }
            tx.execute(
                "DELETE FROM refresh_tokens WHERE session_id IN \
                 (SELECT session_id FROM sessions WHERE user_id = $1)",
                &[&id],
            )
            .await
            .map_err(pg)?;
            // The groups they were in change: decisions taken on an older
            // member list must be taken again.
            tx.execute(
                "UPDATE chat_groups SET version = version + 1 \
                 WHERE group_id IN (SELECT group_id FROM group_members WHERE user_id = $1)",
                &[&id],
            )
            .await
            .map_err(pg)?;
            for table in [
                "sessions",
                "inbox",
                "conversation_members",
                "notification_recipients",
                "group_members",
                "users",
            ] {
                tx.execute(&format!("DELETE FROM {table} WHERE user_id = $1"), &[&id])
                    .await
                    .map_err(pg)?;
            }
            Ok(())
        })
    }
}

/// A session's columns and its user's status (a primary-key lookup in
/// the same statement: a request still costs one round trip).
const SESSION_COLUMNS: &str = "session_id, user_id, platform, device_id, created_at, revoked_at, \
     (SELECT u.status FROM users u WHERE u.user_id = sessions.user_id)";

/// Reads the [`SESSION_COLUMNS`].
fn read_session(row: &Row) -> Result<Session> {
    let sid: String = column(row, 0)?;
    let platform: String = column(row, 2)?;
    let revoked: Option<i64> = column(row, 5)?;
    let status: Option<String> = column(row, 6)?;
    Ok(Session {
        user_status: match status.as_deref() {
            Some("active") => UserStatus::Active,
            _ => UserStatus::Disabled,
        },
        session_id: SessionId::parse(sid).map_err(|_| corrupt("session id"))?,
        user_id: user_id(column(row, 1)?)?,
        platform: Platform::parse(platform).map_err(|_| corrupt("platform"))?,
        device_id: column(row, 3)?,
        created_at: from_ms(column(row, 4)?)?,
        revoked_at: revoked.map(from_ms).transpose()?,
    })
}

async fn session_by_id<C: GenericClient>(client: &C, id: &str) -> Result<Option<Session>> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = $1"
        ))
        .await
        .map_err(pg)?;
    client
        .query_opt(&stmt, &[&id])
        .await
        .map_err(pg)?
        .map(|row| read_session(&row))
        .transpose()
}

/// Revokes the sessions that are still active and appends one
/// `session.revoked` event for each, in input order. A session listed
/// twice is revoked by its first entry.
async fn revoke(tx: &Transaction<'_>, revocations: &[Revocation]) -> Result<Vec<StoredEvent>> {
    if revocations.is_empty() {
        return Ok(Vec::new());
    }
    // Lock order: the clock before anything else (append_inbox takes it
    // again, a no-op then).
    broadcast_clock(tx).await?;
    let mut seen = HashSet::with_capacity(revocations.len());
    let firsts: Vec<&Revocation> = revocations
        .iter()
        .filter(|r| seen.insert(r.session_id.as_str()))
        .collect();
    let ids: Vec<&str> = firsts.iter().map(|r| r.session_id.as_str()).collect();
    let ats: Vec<i64> = firsts.iter().map(|r| ms(r.at)).collect();
    let reasons: Vec<&str> = firsts.iter().map(|r| r.reason.as_str()).collect();
    let stmt = tx
        .prepare_cached(
            "UPDATE sessions s SET revoked_at = t.at, revoke_reason = t.reason \
             FROM unnest($1::text[], $2::int8[], $3::text[]) AS t(id, at, reason) \
             WHERE s.session_id = t.id AND s.revoked_at IS NULL \
             RETURNING s.session_id, s.user_id",
        )
        .await
        .map_err(pg)?;
    let mut owners: HashMap<String, UserId> = HashMap::new();
    for row in tx.query(&stmt, &[&ids, &ats, &reasons]).await.map_err(pg)? {
        owners.insert(column(&row, 0)?, user_id(column(&row, 1)?)?);
    }
    let revoked: Vec<(&Revocation, &UserId)> = firsts
        .iter()
        .filter_map(|r| owners.get(r.session_id.as_str()).map(|owner| (*r, owner)))
        .collect();
    let rows: Vec<InboxRow<'_>> = revoked
        .iter()
        .map(|(r, owner)| InboxRow {
            user: owner,
            kind: EventType::SessionRevoked,
            message_id: None,
            data: Some(r.event_data.as_str()),
            at: r.at,
        })
        .collect();
    let seqs = append_inbox(tx, &rows, false).await?;
    revoked
        .into_iter()
        .zip(seqs)
        .map(|((r, owner), seq)| {
            Ok(StoredEvent {
                user_id: owner.clone(),
                seq: seq.ok_or(StoreError::NotFound("user"))?,
                kind: EventType::SessionRevoked,
                at: r.at,
                body: EventBody::Data(r.event_data.clone()),
            })
        })
        .collect()
}

/// Inserts a refresh token of `session`; a token hash that exists is
/// `Conflict("refresh token")`.
async fn insert_refresh(
    tx: &Transaction<'_>,
    token: &NewRefreshToken,
    session: &str,
) -> Result<()> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
        )
        .await
        .map_err(pg)?;
    tx.execute(
        &stmt,
        &[&&token.hash.0[..], &session, &ms(token.expires_at)],
    )
    .await
    .map_err(|e| unique(e, "refresh token"))?;
    Ok(())
}

#[async_trait]
impl Sessions for PgStore {
    async fn open_session(
        &self,
        session: NewSession,
        refresh: NewRefreshToken,
        kick: Vec<Revocation>,
    ) -> Result<Vec<StoredEvent>> {
        transaction!(self, |tx| {
            // Revocations first: they lock the user row FOR UPDATE before
            // the new session's foreign key takes it FOR KEY SHARE, so two
            // sign-ins of one user never both hold the weaker lock and wait
            // to upgrade it.
            let events = revoke(tx, &kick).await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO sessions (session_id, user_id, platform, device_id, created_at, ip, user_agent) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .await
                .map_err(pg)?;
            tx.execute(
                &stmt,
                &[
                    &session.session_id.as_str(),
                    &session.user_id.as_str(),
                    &session.platform.as_str(),
                    &session.device_id,
                    &ms(session.created_at),
                    &session.ip,
                    &session.user_agent,
                ],
            )
            .await
            .map_err(|e| {
                // The embedded store reports any constraint (an unknown user
                // too) as this conflict.
                if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
                    StoreError::Conflict("session_id")
                } else {
                    unique(e, "session_id")
                }
            })?;
            insert_refresh(tx, &refresh, session.session_id.as_str()).await?;
            Ok(events)
        })
    }

    async fn session(&self, id: &SessionId) -> Result<Option<Session>> {
        let client = self.client().await?;
        session_by_id(&client, id.as_str()).await
    }

    async fn is_new_place(
        &self,
        user: &UserId,
        device_id: Option<&str>,
        ip: Option<&str>,
    ) -> Result<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM sessions WHERE user_id = $1), \
                 EXISTS(SELECT 1 FROM sessions WHERE user_id = $1 AND \
                 (($2::text IS NOT NULL AND device_id = $2::text) OR ($3::text IS NOT NULL AND ip = $3::text)))",
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_one(&stmt, &[&user.as_str(), &device_id, &ip])
            .await
            .map_err(pg)?;
        let (any, known): (bool, bool) = (column(&row, 0)?, column(&row, 1)?);
        Ok(any && !known)
    }

    async fn active_sessions(&self, user: &UserId) -> Result<Vec<Session>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND revoked_at IS NULL \
                 ORDER BY created_at, session_id"
            ))
            .await
            .map_err(pg)?;
        client
            .query(&stmt, &[&user.as_str()])
            .await
            .map_err(pg)?
            .iter()
            .map(read_session)
            .collect()
    }

    async fn revoke_sessions(&self, revocations: Vec<Revocation>) -> Result<Vec<StoredEvent>> {
        transaction!(self, |tx| revoke(tx, &revocations).await)
    }

    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        next: NewRefreshToken,
        now: OffsetDateTime,
    ) -> Result<RefreshOutcome> {
        transaction!(self, |tx| {
            // FOR UPDATE: of two nodes exchanging the same token at once,
            // the second waits, then sees it rotated (reuse).
            let find = tx
                .prepare_cached(
                    "SELECT session_id, expires_at, rotated_at FROM refresh_tokens \
                     WHERE token_hash = $1 FOR UPDATE",
                )
                .await
                .map_err(pg)?;
            let Some(row) = tx
                .query_opt(&find, &[&&presented.0[..]])
                .await
                .map_err(pg)?
            else {
                return Ok(RefreshOutcome::Invalid);
            };
            let sid: String = column(&row, 0)?;
            let expires_at: i64 = column(&row, 1)?;
            let rotated_at: Option<i64> = column(&row, 2)?;
            let Some(session) = session_by_id(tx, &sid).await? else {
                return Ok(RefreshOutcome::Invalid);
            };
            if !session.is_active() {
                return Ok(RefreshOutcome::Invalid);
            }
            if rotated_at.is_some() {
                return Ok(RefreshOutcome::Reused(session));
            }
            if expires_at <= ms(now) {
                return Ok(RefreshOutcome::Invalid);
            }
            let retire = tx
                .prepare_cached("UPDATE refresh_tokens SET rotated_at = $2 WHERE token_hash = $1")
                .await
                .map_err(pg)?;
            tx.execute(&retire, &[&&presented.0[..], &ms(now)])
                .await
                .map_err(pg)?;
            insert_refresh(tx, &next, &sid).await?;
            Ok(RefreshOutcome::Rotated(session))
        })
    }
}

#[async_trait]
impl DataKeys for PgStore {
    async fn data_keys(&self) -> Result<Vec<WrappedKey>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT key_id, wrapped, created_at FROM data_keys ORDER BY key_id")
            .await
            .map_err(pg)?;
        client
            .query(&stmt, &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|row| {
                let id: i64 = column(row, 0)?;
                Ok(WrappedKey {
                    key_id: u32::try_from(id).map_err(|_| corrupt("key id"))?,
                    wrapped: column(row, 1)?,
                    created_at: from_ms(column(row, 2)?)?,
                })
            })
            .collect()
    }

    async fn insert_data_key(&self, key: WrappedKey) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO data_keys (key_id, wrapped, created_at) VALUES ($1, $2, $3)",
                &[&i64::from(key.key_id), &key.wrapped, &ms(key.created_at)],
            )
            .await
            .map_err(|e| unique(e, "data key"))?;
        Ok(())
    }
}

#[async_trait]
impl Admins for PgStore {
    async fn admin(&self, id: &str) -> Result<Option<Admin>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT admin_id, secret_hash, scopes, created_at FROM admins WHERE admin_id = $1",
                &[&id],
            )
            .await
            .map_err(pg)?;
        row.map(|row| {
            let scopes: String = column(&row, 2)?;
            Ok(Admin {
                admin_id: column(&row, 0)?,
                secret_hash: PasswordHash(column(&row, 1)?),
                scopes: scopes
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                created_at: from_ms(column(&row, 3)?)?,
            })
        })
        .transpose()
    }

    async fn create_admin(&self, admin: Admin) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO admins (admin_id, secret_hash, scopes, created_at) VALUES ($1, $2, $3, $4)",
                &[
                    &admin.admin_id,
                    &admin.secret_hash.0,
                    &admin.scopes.join(","),
                    &ms(admin.created_at),
                ],
            )
            .await
            .map_err(|e| unique(e, "admin"))?;
        Ok(())
    }
}
