//! The `Users` trait on SQLite: users and their credentials, one import
//! item per savepoint.

use async_trait::async_trait;
use rusqlite::{Connection, params};
use unimsg_proto::UserId;
use unimsg_store::sql::{USER_COLUMNS, ms, read_user};
use unimsg_store::{HookDraft, NewUser, Result, StoreError, User, UserStatus, UserUpdate, Users};

use crate::{Cached, DbResult, SqliteStore, all, first, map_unique};

fn insert_user(conn: &Connection, user: NewUser) -> DbResult<User> {
    let taken: bool = conn.query_row_cached(
        "SELECT EXISTS(SELECT 1 FROM users WHERE user_id = ?1)",
        [user.user_id.as_str()],
        |r| r.get(0),
    )?;
    if taken {
        return Err(StoreError::Conflict("user_id").into());
    }
    conn.execute_cached(
        "INSERT INTO users (user_id, username, display_name, password_hash, created_at, bbase) \
         VALUES (?1, ?2, ?3, ?4, ?5, (SELECT coalesce(max(bseq), 0) FROM broadcasts))",
        params![
            user.user_id.as_str(),
            user.username,
            user.display_name,
            user.password_hash.as_ref().map(|h| h.0.as_str()),
            ms(user.created_at)
        ],
    )
    .map_err(|e| map_unique(e, "username"))?;
    if let Some(hook) = &user.hook {
        crate::webhooks::enqueue(conn, hook)?;
    }
    Ok(User {
        user_id: user.user_id,
        username: user.username,
        display_name: user.display_name,
        password_hash: user.password_hash,
        status: UserStatus::Active,
        created_at: user.created_at,
    })
}

#[async_trait]
impl Users for SqliteStore {
    async fn create_user(&self, user: NewUser) -> Result<User> {
        self.write(move |conn| insert_user(conn, user)).await
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>> {
        let id = id.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1"
            ))?;
            first(&mut stmt, [id.as_str()], read_user)
        })
        .await
    }

    async fn import_users(&self, users: Vec<NewUser>) -> Result<Vec<Result<User>>> {
        self.write(move |conn| {
            let mut out = Vec::with_capacity(users.len());
            for user in users {
                // Each item in its own savepoint: a clash undoes only that item.
                conn.execute_batch("SAVEPOINT item")?;
                let result = insert_user(conn, user);
                let end = if result.is_ok() {
                    "RELEASE item"
                } else {
                    "ROLLBACK TO item; RELEASE item"
                };
                conn.execute_batch(end)?;
                out.push(result.map_err(StoreError::from));
            }
            Ok(out)
        })
        .await
    }

    async fn update_user(
        &self,
        id: &UserId,
        update: UserUpdate,
        hooks: Vec<HookDraft>,
    ) -> Result<User> {
        let id = id.clone();
        self.write(move |conn| {
            let changed = conn
                .execute_cached(
                    "UPDATE users SET display_name = COALESCE(?2, display_name), \
                     password_hash = COALESCE(?3, password_hash), status = COALESCE(?4, status) WHERE user_id = ?1",
                    params![
                        id.as_str(),
                        update.display_name,
                        update.password_hash.as_ref().map(|h| h.0.as_str()),
                        update.status.map(UserStatus::as_str)
                    ],
                )?;
            if changed == 0 {
                return Err(StoreError::NotFound("user").into());
            }
            crate::webhooks::enqueue_all(conn, &hooks)?;
            let mut stmt = conn
                .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1"))?;
            Ok(first(&mut stmt, [id.as_str()], read_user)?.ok_or(StoreError::NotFound("user"))?)
        })
        .await
    }

    async fn delete_user(&self, id: &UserId, hooks: Vec<HookDraft>) -> Result<()> {
        let id = id.clone();
        self.write(move |conn| {
            let exists: bool = conn
                .query_row_cached("SELECT EXISTS(SELECT 1 FROM users WHERE user_id = ?1)", [id.as_str()], |r| r.get(0))?;
            if !exists {
                return Err(StoreError::NotFound("user").into());
            }
            conn.execute_cached(
                "DELETE FROM refresh_tokens WHERE session_id IN (SELECT session_id FROM sessions WHERE user_id = ?1)",
                [id.as_str()],
            )?;
            // The groups they were in change: decisions taken on an older
            // member list must be taken again.
            conn.execute_cached(
                "UPDATE chat_groups SET version = version + 1 \
                 WHERE group_id IN (SELECT group_id FROM group_members WHERE user_id = ?1)",
                [id.as_str()],
            )?;
            for table in ["sessions", "inbox", "conversation_members", "notification_recipients", "group_members", "users"] {
                conn.execute_cached(&format!("DELETE FROM {table} WHERE user_id = ?1"), [id.as_str()])?;
            }
            crate::webhooks::enqueue_all(conn, &hooks)?;
            Ok(())
        })
        .await
    }

    async fn unknown_users(&self, ids: Vec<UserId>) -> Result<Vec<UserId>> {
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM users WHERE user_id = ?1)")?;
            let mut unknown = Vec::new();
            for id in ids {
                let known: bool = stmt.query_row([id.as_str()], |r| r.get(0))?;
                if !known {
                    unknown.push(id);
                }
            }
            Ok(unknown)
        })
        .await
    }

    async fn search_users(
        &self,
        query: &str,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<User>> {
        let query = query.to_ascii_lowercase();
        let after = after.map_or_else(String::new, |a| a.as_str().to_owned());
        self.read(move |conn| {
            // SQLite's lower() folds ASCII only, as the query was folded.
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE user_id > ?2 AND (?1 = '' \
                 OR instr(lower(user_id), ?1) > 0 OR instr(lower(username), ?1) > 0 \
                 OR instr(lower(display_name), ?1) > 0) ORDER BY user_id LIMIT ?3"
            ))?;
            all(&mut stmt, rusqlite::params![query, after, limit], read_user)
        })
        .await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let username = username.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE username = ?1"
            ))?;
            first(&mut stmt, [username], read_user)
        })
        .await
    }
}
