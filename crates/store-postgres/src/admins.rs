//! The `Admins` trait on PostgreSQL: the admin API's accounts and their keys.

use async_trait::async_trait;
use time::OffsetDateTime;
use unimsg_store::sql::{ADMIN_COLUMNS, ADMIN_KEY_COLUMNS, ms, read_admin, read_admin_key};
use unimsg_store::{
    AddressSeen, Admin, AdminChange, AdminKeyRow, Admins, Result, StoreError, TokenHash,
};

use crate::{PgStore, read, unique};

#[async_trait]
impl Admins for PgStore {
    async fn admin(&self, id: &str) -> Result<Option<Admin>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {ADMIN_COLUMNS} FROM admins WHERE admin_id = $1"
                ))
                .await?;
            let row = client.query_opt(&stmt, &[&id]).await?;
            row.map(|row| read(&row, read_admin)).transpose()
        })
    }

    async fn admins(&self) -> Result<Vec<Admin>> {
        connected!(self, |client| {
            let rows = client
                .query(
                    &format!("SELECT {ADMIN_COLUMNS} FROM admins ORDER BY admin_id COLLATE \"C\""),
                    &[],
                )
                .await?;
            rows.iter().map(|row| read(row, read_admin)).collect()
        })
    }

    async fn create_admin(&self, admin: Admin) -> Result<()> {
        connected!(self, |client| {
            client
                .execute(
                    "INSERT INTO admins (admin_id, secret_hash, scopes, created_at, disabled, tokens_valid_after) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &admin.admin_id,
                        &admin.secret_hash.0,
                        &admin.scopes.join(","),
                        &ms(admin.created_at),
                        &admin.disabled,
                        &ms(admin.tokens_valid_after),
                    ],
                )
                .await
                .map_err(|e| unique(e, "admin"))?;
            Ok(())
        })
    }

    async fn note_admin_address(
        &self,
        admin_id: &str,
        ip: &str,
        at: OffsetDateTime,
    ) -> Result<AddressSeen> {
        connected!(self, |client| {
            // Both parts see the table as it was before the insert.
            let row = client
                .query_one(
                    "WITH ins AS (INSERT INTO admin_addresses (admin_id, ip, first_seen) \
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1) \
                     SELECT EXISTS(SELECT 1 FROM admin_addresses WHERE admin_id = $1), \
                     EXISTS(SELECT 1 FROM ins)",
                    &[&admin_id, &ip, &ms(at)],
                )
                .await?;
            Ok(AddressSeen::of(row.try_get(0)?, row.try_get(1)?))
        })
    }

    async fn update_admin(
        &self,
        id: &str,
        change: AdminChange,
        at: OffsetDateTime,
    ) -> Result<Admin> {
        let hash = change.secret_hash.map(|h| h.0);
        let scopes = change.scopes.map(|s| s.join(","));
        connected!(self, |client| {
            let row = client
                .query_opt(
                    &format!(
                        "UPDATE admins SET secret_hash = coalesce($2, secret_hash), \
                         scopes = coalesce($3, scopes), disabled = coalesce($4, disabled), \
                         tokens_valid_after = $5 WHERE admin_id = $1 RETURNING {ADMIN_COLUMNS}"
                    ),
                    &[&id, &hash, &scopes, &change.disabled, &ms(at)],
                )
                .await?
                .ok_or(StoreError::NotFound("admin"))?;
            read(&row, read_admin)
        })
    }

    async fn set_admin_signing_secret(&self, id: &str, sealed: Vec<u8>) -> Result<()> {
        connected!(self, |client| {
            let changed = client
                .execute(
                    "UPDATE admins SET signing_secret = $2 WHERE admin_id = $1",
                    &[&id, &sealed],
                )
                .await?;
            if changed == 0 {
                return Err(StoreError::NotFound("admin").into());
            }
            Ok(())
        })
    }

    async fn delete_admin(&self, id: &str) -> Result<bool> {
        transaction!(self, |tx| {
            tx.execute("DELETE FROM admin_keys WHERE admin_id = $1", &[&id])
                .await?;
            tx.execute("DELETE FROM admin_addresses WHERE admin_id = $1", &[&id])
                .await?;
            Ok(tx
                .execute("DELETE FROM admins WHERE admin_id = $1", &[&id])
                .await?
                > 0)
        })
    }

    async fn create_admin_key(&self, key: AdminKeyRow) -> Result<()> {
        connected!(self, |client| {
            let inserted = client
                .execute(
                    &format!(
                        "INSERT INTO admin_keys ({ADMIN_KEY_COLUMNS}) \
                         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
                         WHERE EXISTS (SELECT 1 FROM admins WHERE admin_id = $2)"
                    ),
                    &[
                        &key.key_id,
                        &key.admin_id,
                        &&key.key_hash.0[..],
                        &key.scopes.join(","),
                        &ms(key.created_at),
                        &ms(key.expires_at),
                        &key.last_used_at.map(ms),
                        &key.last_used_ip,
                        &key.revoked_at.map(ms),
                    ],
                )
                .await
                .map_err(|e| unique(e, "admin key"))?;
            if inserted == 0 {
                return Err(StoreError::NotFound("admin").into());
            }
            Ok(())
        })
    }

    async fn admin_keys(&self, admin_id: &str) -> Result<Vec<AdminKeyRow>> {
        connected!(self, |client| {
            let rows = client
                .query(
                    &format!(
                        "SELECT {ADMIN_KEY_COLUMNS} FROM admin_keys WHERE admin_id = $1 \
                         ORDER BY created_at DESC, key_id COLLATE \"C\" DESC"
                    ),
                    &[&admin_id],
                )
                .await?;
            rows.iter().map(|row| read(row, read_admin_key)).collect()
        })
    }

    async fn admin_key(&self, hash: &TokenHash) -> Result<Option<AdminKeyRow>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {ADMIN_KEY_COLUMNS} FROM admin_keys WHERE key_hash = $1"
                ))
                .await?;
            let row = client.query_opt(&stmt, &[&&hash.0[..]]).await?;
            row.map(|row| read(&row, read_admin_key)).transpose()
        })
    }

    async fn touch_admin_key(
        &self,
        key_id: &str,
        at: OffsetDateTime,
        ip: Option<String>,
    ) -> Result<()> {
        connected!(self, |client| {
            client
                .execute(
                    "UPDATE admin_keys SET last_used_at = $2, last_used_ip = $3 WHERE key_id = $1",
                    &[&key_id, &ms(at), &ip],
                )
                .await?;
            Ok(())
        })
    }

    async fn revoke_admin_key(
        &self,
        admin_id: &str,
        key_id: &str,
        at: OffsetDateTime,
    ) -> Result<bool> {
        connected!(self, |client| {
            Ok(client
                .execute(
                    "UPDATE admin_keys SET revoked_at = $3 \
                     WHERE admin_id = $1 AND key_id = $2 AND revoked_at IS NULL",
                    &[&admin_id, &key_id, &ms(at)],
                )
                .await?
                > 0)
        })
    }
}
