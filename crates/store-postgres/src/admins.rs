//! The `Admins` trait on PostgreSQL: the admin API's accounts.

use async_trait::async_trait;
use unimsg_store::sql::{ADMIN_COLUMNS, ms, read_admin};
use unimsg_store::{Admin, Admins, Result};

use crate::{PgStore, read, unique};

#[async_trait]
impl Admins for PgStore {
    async fn admin(&self, id: &str) -> Result<Option<Admin>> {
        connected!(self, |client| {
            let row = client
                .query_opt(
                    &format!("SELECT {ADMIN_COLUMNS} FROM admins WHERE admin_id = $1"),
                    &[&id],
                )
                .await?;
            row.map(|row| read(&row, read_admin)).transpose()
        })
    }

    async fn create_admin(&self, admin: Admin) -> Result<()> {
        connected!(self, |client| {
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
        })
    }
}
