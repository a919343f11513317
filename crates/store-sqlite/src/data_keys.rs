//! The `DataKeys` trait on SQLite: data-encryption keys, stored wrapped.

use async_trait::async_trait;
use rusqlite::params;
use unimsg_store::sql::{DATA_KEY_COLUMNS, ms, read_data_key};
use unimsg_store::{DataKeys, Result, StoreError, WrappedKey};

use crate::{Cached, SqliteStore, all, map_unique};

#[async_trait]
impl DataKeys for SqliteStore {
    async fn data_keys(&self) -> Result<Vec<WrappedKey>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {DATA_KEY_COLUMNS} FROM data_keys ORDER BY key_id"
            ))?;
            all(&mut stmt, [], read_data_key)
        })
        .await
    }

    async fn insert_data_key(&self, key: WrappedKey) -> Result<()> {
        self.write(move |conn| {
            conn.execute_cached(
                "INSERT INTO data_keys (key_id, wrapped, created_at) VALUES (?1, ?2, ?3)",
                params![i64::from(key.key_id), key.wrapped, ms(key.created_at)],
            )
            .map_err(|e| map_unique(e, "data key"))?;
            Ok(())
        })
        .await
    }

    async fn rewrap_data_key(&self, key_id: u32, wrapped: Vec<u8>) -> Result<()> {
        self.write(move |conn| {
            let changed = conn.execute_cached(
                "UPDATE data_keys SET wrapped = ?2 WHERE key_id = ?1",
                params![i64::from(key_id), wrapped],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound("data key").into());
            }
            Ok(())
        })
        .await
    }
}
