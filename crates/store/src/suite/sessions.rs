//! Checks of the `Sessions` trait.

use super::*;

pub async fn sessions(store: Arc<dyn Store>) {
    let store = &*store;
    let u = user(store, "s1").await;
    let events = store
        .open_session(new_session("sa", &u), refresh(1), vec![], vec![])
        .await
        .unwrap();
    assert!(events.is_empty());
    // Opening a second session that kicks the first revokes it and tells the user.
    let events = store
        .open_session(
            new_session("sb", &u),
            refresh(2),
            vec![revocation("sa")],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventType::SessionRevoked);
    assert_eq!(events[0].seq, Seq(1));
    let active = store.active_sessions(&u).await.unwrap();
    assert_eq!(
        active
            .iter()
            .map(|s| s.session_id.as_str())
            .collect::<Vec<_>>(),
        vec!["sb"]
    );
    // Revoking an already revoked session appends nothing.
    let again = store.revoke_sessions(vec![revocation("sa")]).await.unwrap();
    assert!(again.is_empty());

    // Rotation: the current token rotates once; presenting it again is reuse.
    let out = store
        .rotate_refresh(&TokenHash([2; 32]), refresh(3), now())
        .await
        .unwrap();
    assert!(matches!(out, RefreshOutcome::Rotated(ref s) if s.session_id.as_str() == "sb"));
    let out = store
        .rotate_refresh(&TokenHash([2; 32]), refresh(4), now())
        .await
        .unwrap();
    assert!(matches!(out, RefreshOutcome::Reused(ref s) if s.session_id.as_str() == "sb"));
    let out = store
        .rotate_refresh(&TokenHash([9; 32]), refresh(5), now())
        .await
        .unwrap();
    assert!(matches!(out, RefreshOutcome::Invalid));
    // The token of a revoked session is invalid.
    let out = store
        .rotate_refresh(&TokenHash([1; 32]), refresh(6), now())
        .await
        .unwrap();
    assert!(matches!(out, RefreshOutcome::Invalid));
}

/// A session read says whether its user is disabled, in the same read; a
/// disabled user's refresh token does not rotate, and their sessions are
/// still listed (so that they can be revoked).
pub async fn disabled_users_sessions(store: Arc<dyn Store>) {
    let store = &*store;
    let u = user(store, "dis1").await;
    store
        .open_session(new_session("dis-s1", &u), refresh(201), vec![], vec![])
        .await
        .unwrap();
    let session = store
        .session(&sid("dis-s1"))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no session"));
    assert!(session.is_active());
    assert_eq!(session.user_status, crate::UserStatus::Active);
    let disable = |status| UserUpdate {
        status: Some(status),
        ..UserUpdate::default()
    };
    store
        .update_user(&u, disable(crate::UserStatus::Disabled), vec![])
        .await
        .unwrap();
    let session = store
        .session(&sid("dis-s1"))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no session"));
    assert_eq!(session.user_status, crate::UserStatus::Disabled);
    assert!(session.revoked_at.is_none() && !session.is_active());
    let listed = store.active_sessions(&u).await.unwrap();
    assert_eq!(listed.len(), 1, "still listed, so that it can be revoked");
    let rotated = store
        .rotate_refresh(&TokenHash([201; 32]), refresh(202), now())
        .await
        .unwrap();
    assert!(matches!(rotated, RefreshOutcome::Invalid), "{rotated:?}");
    store
        .update_user(&u, disable(crate::UserStatus::Active), vec![])
        .await
        .unwrap();
    let rotated = store
        .rotate_refresh(&TokenHash([201; 32]), refresh(203), now())
        .await
        .unwrap();
    assert!(matches!(rotated, RefreshOutcome::Rotated(_)), "{rotated:?}");
}
