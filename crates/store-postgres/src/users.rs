//! The `Users` trait on PostgreSQL: users and their credentials.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use unimsg_proto::UserId;
use unimsg_store::sql::{USER_COLUMNS, ms, read_user, user_id};
use unimsg_store::{HookDraft, NewUser, Result, StoreError, User, UserStatus, UserUpdate, Users};

use crate::{DbResult, Error, PgStore, broadcast_clock, column, read};

/// Inserts one user who sees the broadcasts after `head`. A taken id is
/// `Conflict("user_id")`, a taken username `Conflict("username")`; neither
/// aborts the transaction, so an import goes on with the next item.
async fn insert_user(tx: &Transaction<'_>, head: i64, user: &NewUser) -> DbResult<User> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO users (user_id, username, display_name, password_hash, created_at, bbase) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .await?;
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
        .await?;
    if inserted == 0 {
        // Which rule clashed; the id is checked first, as in the embedded
        // store.
        let taken = tx
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM users WHERE user_id = $1)")
            .await?;
        let taken: bool = column(&tx.query_one(&taken, &[&user.user_id.as_str()]).await?, 0)?;
        return Err(StoreError::Conflict(if taken { "user_id" } else { "username" }).into());
    }
    if let Some(hook) = &user.hook {
        crate::webhooks::enqueue(tx, hook).await?;
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
/// ASCII letters and their lower case, for `translate` (PostgreSQL's
/// `lower` folds more than SQLite's).
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";

async fn user_where(store: &PgStore, column_name: &str, value: &str) -> DbResult<Option<User>> {
    crate::timed(async {
        let client = store.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE {column_name} = $1"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&value])
            .await?
            .map(|row| read(&row, read_user))
            .transpose()
    })
    .await
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
        Ok(user_where(self, "user_id", id.as_str()).await?)
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        Ok(user_where(self, "username", username).await?)
    }

    async fn search_users(
        &self,
        query: &str,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<User>> {
        let query = query.to_ascii_lowercase();
        let after = after.map_or("", UserId::as_str);
        connected!(self, |client| {
            // Folded as the query was: ASCII letters only, so that both
            // backends match the same users. Ordered byte-wise (`"C"`).
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE user_id COLLATE \"C\" > $2 \
                     AND ($1 = '' OR strpos(translate(user_id, $4, $5), $1) > 0 \
                     OR strpos(translate(username, $4, $5), $1) > 0 \
                     OR strpos(translate(display_name, $4, $5), $1) > 0) \
                     ORDER BY user_id COLLATE \"C\" LIMIT $3"
                ))
                .await?;
            let rows = client
                .query(&stmt, &[&query, &after, &i64::from(limit), &UPPER, &LOWER])
                .await?;
            rows.iter().map(|row| read(row, read_user)).collect()
        })
    }

    async fn unknown_users(&self, ids: Vec<UserId>) -> Result<Vec<UserId>> {
        connected!(self, |client| {
            let names: Vec<&str> = ids.iter().map(UserId::as_str).collect();
            let stmt = client
                .prepare_cached(
                    "SELECT u.id FROM unnest($1::text[]) WITH ORDINALITY AS u(id, n) \
                     WHERE NOT EXISTS (SELECT 1 FROM users WHERE user_id = u.id) ORDER BY u.n",
                )
                .await?;
            let rows = client.query(&stmt, &[&names]).await?;
            rows.iter().map(|r| Ok(user_id(column(r, 0)?)?)).collect()
        })
    }

    async fn import_users(&self, users: Vec<NewUser>) -> Result<Vec<Result<User>>> {
        transaction!(self, |tx| {
            let head = broadcast_clock(tx).await?;
            let mut out = Vec::with_capacity(users.len());
            for user in &users {
                // A clash fails the item alone (it wrote nothing); any other
                // error has aborted the transaction and fails the batch.
                match insert_user(tx, head, user).await {
                    Err(Error::Store(StoreError::Conflict(what))) => {
                        out.push(Err(StoreError::Conflict(what)))
                    }
                    other => out.push(Ok(other?)),
                }
            }
            Ok(out)
        })
    }

    async fn update_user(
        &self,
        id: &UserId,
        update: UserUpdate,
        hooks: Vec<HookDraft>,
    ) -> Result<User> {
        transaction!(self, |tx| {
            let stmt = tx
                .prepare_cached(&format!(
                    "UPDATE users SET display_name = COALESCE($2, display_name), \
                     password_hash = COALESCE($3, password_hash), status = COALESCE($4, status) \
                     WHERE user_id = $1 RETURNING {USER_COLUMNS}"
                ))
                .await?;
            let row = tx
                .query_opt(
                    &stmt,
                    &[
                        &id.as_str(),
                        &update.display_name,
                        &update.password_hash.as_ref().map(|h| h.0.as_str()),
                        &update.status.map(UserStatus::as_str),
                    ],
                )
                .await?
                .ok_or(StoreError::NotFound("user"))?;
            crate::webhooks::enqueue_all(tx, &hooks).await?;
            read(&row, read_user)
        })
    }

    async fn delete_user(&self, id: &UserId, hooks: Vec<HookDraft>) -> Result<()> {
        transaction!(self, |tx| {
            let id = id.as_str();
            // Lock order: group rows (sorted) before the user row.
            tx.execute(
                "SELECT 1 FROM chat_groups WHERE group_id IN \
                 (SELECT group_id FROM group_members WHERE user_id = $1) \
                 ORDER BY group_id FOR UPDATE",
                &[&id],
            )
            .await?;
            // Held to the end: no inbox row can be appended for them meanwhile.
            let exists = tx
                .query_opt("SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE", &[&id])
                .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound("user").into());
            }
            tx.execute(
                "DELETE FROM refresh_tokens WHERE session_id IN \
                 (SELECT session_id FROM sessions WHERE user_id = $1)",
                &[&id],
            )
            .await?;
            // The groups they were in change: decisions taken on an older
            // member list must be taken again.
            tx.execute(
                "UPDATE chat_groups SET version = version + 1 \
                 WHERE group_id IN (SELECT group_id FROM group_members WHERE user_id = $1)",
                &[&id],
            )
            .await?;
            for table in [
                "sessions",
                "inbox",
                "conversation_members",
                "notification_recipients",
                "group_members",
                "users",
            ] {
                tx.execute(&format!("DELETE FROM {table} WHERE user_id = $1"), &[&id])
                    .await?;
            }
            crate::webhooks::enqueue_all(tx, &hooks).await?;
            Ok(())
        })
    }
}
