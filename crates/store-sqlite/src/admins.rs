//! The `Admins` trait on SQLite: the admin API's accounts and their keys.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use unimsg_store::sql::{ADMIN_COLUMNS, ADMIN_KEY_COLUMNS, ms, read_admin, read_admin_key};
use unimsg_store::{
    AddressSeen, Admin, AdminChange, AdminKeyRow, Admins, Result, StoreError, TokenHash,
};

use crate::{Cached, DbResult, SqliteStore, all, first, map_unique};

fn admin_by_id(conn: &Connection, id: &str) -> DbResult<Option<Admin>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ADMIN_COLUMNS} FROM admins WHERE admin_id = ?1"
    ))?;
    first(&mut stmt, [id], read_admin)
}

#[async_trait]
impl Admins for SqliteStore {
    async fn admin(&self, id: &str) -> Result<Option<Admin>> {
        let id = id.to_owned();
        self.read(move |conn| admin_by_id(conn, &id)).await
    }

    async fn admins(&self) -> Result<Vec<Admin>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ADMIN_COLUMNS} FROM admins ORDER BY admin_id"
            ))?;
            all(&mut stmt, [], read_admin)
        })
        .await
    }

    async fn create_admin(&self, admin: Admin) -> Result<()> {
        self.write(move |conn| {
            conn.execute_cached(
                "INSERT INTO admins (admin_id, secret_hash, scopes, created_at, disabled, tokens_valid_after) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    admin.admin_id,
                    admin.secret_hash.0,
                    admin.scopes.join(","),
                    ms(admin.created_at),
                    admin.disabled,
                    ms(admin.tokens_valid_after)
                ],
            )
            .map_err(|e| map_unique(e, "admin"))?;
            Ok(())
        })
        .await
    }

    async fn note_admin_address(
        &self,
        admin_id: &str,
        ip: &str,
        at: OffsetDateTime,
    ) -> Result<AddressSeen> {
        let (admin_id, ip) = (admin_id.to_owned(), ip.to_owned());
        self.write(move |conn| {
            let any: bool = conn.query_row_cached(
                "SELECT EXISTS(SELECT 1 FROM admin_addresses WHERE admin_id = ?1)",
                [&admin_id],
                |r| r.get(0),
            )?;
            let inserted = conn.execute_cached(
                "INSERT OR IGNORE INTO admin_addresses (admin_id, ip, first_seen) VALUES (?1, ?2, ?3)",
                params![admin_id, ip, ms(at)],
            )? > 0;
            Ok(AddressSeen::of(any, inserted))
        })
        .await
    }

    async fn update_admin(
        &self,
        id: &str,
        change: AdminChange,
        at: OffsetDateTime,
    ) -> Result<Admin> {
        let id = id.to_owned();
        self.write(move |conn| {
            let changed = conn.execute_cached(
                "UPDATE admins SET secret_hash = coalesce(?2, secret_hash), scopes = coalesce(?3, scopes), \
                 disabled = coalesce(?4, disabled), tokens_valid_after = ?5 WHERE admin_id = ?1",
                params![
                    id,
                    change.secret_hash.map(|h| h.0),
                    change.scopes.map(|s| s.join(",")),
                    change.disabled,
                    ms(at)
                ],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound("admin").into());
            }
            Ok(admin_by_id(conn, &id)?.ok_or(StoreError::NotFound("admin"))?)
        })
        .await
    }

    async fn set_admin_signing_secret(&self, id: &str, sealed: Vec<u8>) -> Result<()> {
        let id = id.to_owned();
        self.write(move |conn| {
            let changed = conn.execute_cached(
                "UPDATE admins SET signing_secret = ?2 WHERE admin_id = ?1",
                params![id, sealed],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound("admin").into());
            }
            Ok(())
        })
        .await
    }

    async fn delete_admin(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |conn| {
            conn.execute_cached("DELETE FROM admin_keys WHERE admin_id = ?1", [&id])?;
            conn.execute_cached("DELETE FROM admin_addresses WHERE admin_id = ?1", [&id])?;
            Ok(conn.execute_cached("DELETE FROM admins WHERE admin_id = ?1", [&id])? > 0)
        })
        .await
    }

    async fn create_admin_key(&self, key: AdminKeyRow) -> Result<()> {
        self.write(move |conn| {
            if admin_by_id(conn, &key.admin_id)?.is_none() {
                return Err(StoreError::NotFound("admin").into());
            }
            conn.execute_cached(
                &format!("INSERT INTO admin_keys ({ADMIN_KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    key.key_id,
                    key.admin_id,
                    &key.key_hash.0[..],
                    key.scopes.join(","),
                    ms(key.created_at),
                    ms(key.expires_at),
                    key.last_used_at.map(ms),
                    key.last_used_ip,
                    key.revoked_at.map(ms)
                ],
            )
            .map_err(|e| map_unique(e, "admin key"))?;
            Ok(())
        })
        .await
    }

    async fn admin_keys(&self, admin_id: &str) -> Result<Vec<AdminKeyRow>> {
        let id = admin_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ADMIN_KEY_COLUMNS} FROM admin_keys WHERE admin_id = ?1 \
                 ORDER BY created_at DESC, key_id DESC"
            ))?;
            all(&mut stmt, [&id], read_admin_key)
        })
        .await
    }

    async fn admin_key(&self, hash: &TokenHash) -> Result<Option<AdminKeyRow>> {
        let hash = hash.0;
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ADMIN_KEY_COLUMNS} FROM admin_keys WHERE key_hash = ?1"
            ))?;
            first(&mut stmt, [&hash[..]], read_admin_key)
        })
        .await
    }

    async fn touch_admin_key(
        &self,
        key_id: &str,
        at: OffsetDateTime,
        ip: Option<String>,
    ) -> Result<()> {
        let id = key_id.to_owned();
        self.write(move |conn| {
            conn.execute_cached(
                "UPDATE admin_keys SET last_used_at = ?2, last_used_ip = ?3 WHERE key_id = ?1",
                params![id, ms(at), ip],
            )?;
            Ok(())
        })
        .await
    }

    async fn revoke_admin_key(
        &self,
        admin_id: &str,
        key_id: &str,
        at: OffsetDateTime,
    ) -> Result<bool> {
        let (admin, key) = (admin_id.to_owned(), key_id.to_owned());
        self.write(move |conn| {
            let revoked: Option<String> = conn
                .query_row_cached(
                    "UPDATE admin_keys SET revoked_at = ?3 \
                     WHERE admin_id = ?1 AND key_id = ?2 AND revoked_at IS NULL RETURNING key_id",
                    params![admin, key, ms(at)],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(revoked.is_some())
        })
        .await
    }
}
