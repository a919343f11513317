//! The `Admins` trait on SQLite: the admin API's accounts.

use async_trait::async_trait;
use rusqlite::params;
use unimsg_store::sql::{ADMIN_COLUMNS, ms, read_admin};
use unimsg_store::{Admin, Admins, Result};

use crate::{SqliteStore, first, map_unique};

#[async_trait]
impl Admins for SqliteStore {
    async fn admin(&self, id: &str) -> Result<Option<Admin>> {
        let id = id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {ADMIN_COLUMNS} FROM admins WHERE admin_id = ?1"
            ))?;
            first(&mut stmt, [&id], read_admin)
        })
        .await
    }

    async fn create_admin(&self, admin: Admin) -> Result<()> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO admins (admin_id, secret_hash, scopes, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![admin.admin_id, admin.secret_hash.0, admin.scopes.join(","), ms(admin.created_at)],
            )
            .map_err(|e| map_unique(e, "admin"))?;
            Ok(())
        })
        .await
    }
}
