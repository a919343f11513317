//! Checks of the `Admins` trait.

use super::*;

pub async fn admins(store: Arc<dyn Store>) {
    let store = &*store;
    let admin = Admin {
        admin_id: "ops".into(),
        secret_hash: crate::PasswordHash("h".into()),
        scopes: vec!["users:read".into(), "audit:read".into()],
        created_at: now(),
    };
    store.create_admin(admin.clone()).await.unwrap();
    assert!(matches!(
        store.create_admin(admin).await,
        Err(StoreError::Conflict(_))
    ));
    let found = store
        .admin("ops")
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no admin"));
    assert_eq!(found.scopes, vec!["users:read", "audit:read"]);
}
