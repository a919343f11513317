//! Checks of the `DataKeys` trait.

use super::*;

/// Wrapped keys are listed by id, as stored; an id is never stored twice.
pub async fn data_keys(store: Arc<dyn Store>) {
    let store = &*store;
    let key = |key_id: u32, byte: u8| crate::WrappedKey {
        key_id,
        wrapped: vec![byte; 40],
        created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000 + i64::from(key_id)).unwrap(),
    };
    assert!(store.data_keys().await.unwrap().is_empty());
    for k in [key(2, 0xb2), key(1, 0xa1)] {
        store.insert_data_key(k).await.unwrap();
    }
    assert!(matches!(
        store.insert_data_key(key(1, 0xff)).await,
        Err(StoreError::Conflict(_))
    ));
    let fields = |k: &crate::WrappedKey| (k.key_id, k.wrapped.clone(), k.created_at);
    let keys = store.data_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(fields).collect::<Vec<_>>(),
        [key(1, 0xa1), key(2, 0xb2)]
            .iter()
            .map(fields)
            .collect::<Vec<_>>()
    );
    // A rotation of the master key re-wraps a key in place.
    store.rewrap_data_key(2, vec![0xc3; 40]).await.unwrap();
    let keys = store.data_keys().await.unwrap();
    assert_eq!(keys[1].wrapped, vec![0xc3; 40]);
    assert_eq!(keys[1].created_at, key(2, 0).created_at, "its age stays");
    assert_eq!(keys[0].wrapped, vec![0xa1; 40], "the others stay");
    assert!(matches!(
        store.rewrap_data_key(9, vec![0; 40]).await,
        Err(StoreError::NotFound(_))
    ));
}
