//! Checks of the `Admins` trait: accounts, their changes and their keys.

use super::*;
use crate::{AdminChange, AdminKeyRow};

fn key(id: &str, admin: &str, byte: u8) -> AdminKeyRow {
    AdminKeyRow {
        key_id: id.into(),
        admin_id: admin.into(),
        key_hash: TokenHash([byte; 32]),
        scopes: vec!["users:read".into()],
        created_at: now(),
        expires_at: now() + time::Duration::days(1),
        last_used_at: None,
        last_used_ip: None,
        revoked_at: None,
    }
}

pub async fn admins(store: Arc<dyn Store>) {
    let store = &*store;
    let created = now();
    let admin = Admin {
        admin_id: "ops".into(),
        secret_hash: crate::PasswordHash("h".into()),
        scopes: vec!["users:read".into(), "audit:read".into()],
        created_at: created,
        disabled: false,
        tokens_valid_after: created,
        signing_secret: None,
    };
    store.create_admin(admin.clone()).await.unwrap();
    assert!(matches!(
        store.create_admin(admin.clone()).await,
        Err(StoreError::Conflict(_))
    ));
    let found = store
        .admin("ops")
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no admin"));
    assert_eq!(found.scopes, vec!["users:read", "audit:read"]);
    assert!(!found.disabled);
    store
        .create_admin(Admin {
            admin_id: "alpha".into(),
            ..admin
        })
        .await
        .unwrap();
    let ids: Vec<String> = store
        .admins()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.admin_id)
        .collect();
    assert_eq!(ids, ["alpha", "ops"]);

    // A change moves tokens_valid_after and leaves the rest.
    let later = created + time::Duration::seconds(5);
    let changed = store
        .update_admin(
            "ops",
            AdminChange {
                secret_hash: Some(crate::PasswordHash("h2".into())),
                disabled: Some(true),
                ..AdminChange::default()
            },
            later,
        )
        .await
        .unwrap();
    assert_eq!(changed.secret_hash.0, "h2");
    assert!(changed.disabled);
    assert_eq!(changed.scopes, vec!["users:read", "audit:read"]);
    assert_eq!(
        crate::sql::ms(changed.tokens_valid_after),
        crate::sql::ms(later)
    );
    assert!(matches!(
        store
            .update_admin("nobody", AdminChange::default(), later)
            .await,
        Err(StoreError::NotFound(_))
    ));

    // The request signing secret is kept as given.
    assert!(changed.signing_secret.is_none());
    store
        .set_admin_signing_secret("ops", vec![7; 40])
        .await
        .unwrap();
    let with_secret = store.admin("ops").await.unwrap().unwrap();
    assert_eq!(with_secret.signing_secret, Some(vec![7; 40]));
    assert!(matches!(
        store.set_admin_signing_secret("nobody", vec![7; 40]).await,
        Err(StoreError::NotFound(_))
    ));

    // Keys: stored by hash, listed newest first, touched, revoked once.
    store.create_admin_key(key("k1", "ops", 1)).await.unwrap();
    let mut k2 = key("k2", "ops", 2);
    k2.created_at = later;
    store.create_admin_key(k2).await.unwrap();
    assert!(matches!(
        store.create_admin_key(key("k3", "nobody", 3)).await,
        Err(StoreError::NotFound(_))
    ));
    let listed: Vec<String> = store
        .admin_keys("ops")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(listed, ["k2", "k1"]);
    let by_hash = store.admin_key(&TokenHash([1; 32])).await.unwrap().unwrap();
    assert_eq!(by_hash.key_id, "k1");
    assert!(
        store
            .admin_key(&TokenHash([9; 32]))
            .await
            .unwrap()
            .is_none()
    );
    store
        .touch_admin_key("k1", later, Some("10.0.0.1".into()))
        .await
        .unwrap();
    let touched = store.admin_key(&TokenHash([1; 32])).await.unwrap().unwrap();
    assert_eq!(touched.last_used_ip.as_deref(), Some("10.0.0.1"));
    assert!(touched.last_used_at.is_some());
    assert!(store.revoke_admin_key("ops", "k1", later).await.unwrap());
    assert!(!store.revoke_admin_key("ops", "k1", later).await.unwrap());
    assert!(!store.revoke_admin_key("alpha", "k2", later).await.unwrap());

    // Deleting an account deletes its keys.
    // Addresses: the first, a known one, a new one; another account's
    // are its own; a deleted account's are gone.
    use crate::AddressSeen;
    let seen = |admin: &'static str, ip: &'static str| async move {
        store.note_admin_address(admin, ip, now()).await.unwrap()
    };
    assert_eq!(seen("ops", "192.0.2.1").await, AddressSeen::First);
    assert_eq!(seen("ops", "192.0.2.1").await, AddressSeen::Known);
    assert_eq!(seen("ops", "192.0.2.2").await, AddressSeen::New);
    assert_eq!(seen("ops", "192.0.2.2").await, AddressSeen::Known);
    assert_eq!(seen("alpha", "192.0.2.2").await, AddressSeen::First);
    assert!(store.delete_admin("ops").await.unwrap());
    assert!(!store.delete_admin("ops").await.unwrap());
    assert_eq!(seen("ops", "192.0.2.2").await, AddressSeen::First);
    assert!(store.admin("ops").await.unwrap().is_none());
    assert!(
        store
            .admin_key(&TokenHash([2; 32]))
            .await
            .unwrap()
            .is_none()
    );
}
