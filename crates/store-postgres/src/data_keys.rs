//! The `DataKeys` trait on PostgreSQL: data-encryption keys, stored
//! wrapped.

use async_trait::async_trait;
use unimsg_store::sql::{DATA_KEY_COLUMNS, ms, read_data_key};
use unimsg_store::{DataKeys, Result, StoreError, WrappedKey};

use crate::{PgStore, read, unique};

#[async_trait]
impl DataKeys for PgStore {
    async fn data_keys(&self) -> Result<Vec<WrappedKey>> {
        connected!(self, |client| {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {DATA_KEY_COLUMNS} FROM data_keys ORDER BY key_id"
                ))
                .await?;
            client
                .query(&stmt, &[])
                .await?
                .iter()
                .map(|row| read(row, read_data_key))
                .collect()
        })
    }

    async fn insert_data_key(&self, key: WrappedKey) -> Result<()> {
        connected!(self, |client| {
            client
                .execute(
                    "INSERT INTO data_keys (key_id, wrapped, created_at) VALUES ($1, $2, $3)",
                    &[&i64::from(key.key_id), &key.wrapped, &ms(key.created_at)],
                )
                .await
                .map_err(|e| unique(e, "data key"))?;
            Ok(())
        })
    }

    async fn rewrap_data_key(&self, key_id: u32, wrapped: Vec<u8>) -> Result<()> {
        connected!(self, |client| {
            let changed = client
                .execute(
                    "UPDATE data_keys SET wrapped = $2 WHERE key_id = $1",
                    &[&i64::from(key_id), &wrapped],
                )
                .await?;
            if changed == 0 {
                return Err(StoreError::NotFound("data key").into());
            }
            Ok(())
        })
    }
}
