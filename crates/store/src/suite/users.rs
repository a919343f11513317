//! Checks of the `Users` trait.

use super::*;

pub async fn users(store: Arc<dyn Store>) {
    let store = &*store;
    let id = user(store, "u1").await;
    let again = NewUser {
        hook: None,
        user_id: uid("u1-other"),
        username: "u1-name".into(),
        display_name: "x".into(),
        password_hash: None,
        created_at: now(),
    };
    assert!(matches!(
        store.create_user(again).await,
        Err(StoreError::Conflict("username"))
    ));
    let same_id = NewUser {
        hook: None,
        user_id: id.clone(),
        username: "fresh".into(),
        display_name: "x".into(),
        password_hash: None,
        created_at: now(),
    };
    assert!(matches!(
        store.create_user(same_id).await,
        Err(StoreError::Conflict("user_id"))
    ));
    let found = store.user_by_username("u1-name").await.unwrap();
    assert_eq!(found.map(|u| u.user_id), Some(id.clone()));
    assert!(store.user(&uid("nobody")).await.unwrap().is_none());
    assert_eq!(store.last_seq(&id).await.unwrap(), Seq(0));
}

/// `unknown_users` names the ids that are no user, in order.
pub async fn unknown_users(store: Arc<dyn Store>) {
    let store = &*store;
    let known = user(store, "known1").await;
    let unknown = store
        .unknown_users(vec![
            known.clone(),
            uid("ghost-a"),
            known,
            uid("ghost-b"),
            uid("ghost-a"),
        ])
        .await
        .unwrap();
    assert_eq!(
        unknown,
        vec![uid("ghost-a"), uid("ghost-b"), uid("ghost-a")]
    );
    assert!(store.unknown_users(Vec::new()).await.unwrap().is_empty());
}

/// Import: one clash does not sink the batch; updates.
pub async fn import_and_update(store: Arc<dyn Store>) {
    let store = &*store;
    let item = |id: &str, name: &str| NewUser {
        hook: None,
        user_id: uid(id),
        username: name.into(),
        display_name: id.into(),
        password_hash: None,
        created_at: now(),
    };
    let results = store
        .import_users(vec![
            item("im1", "im1"),
            item("im2", "im1"),
            item("im3", "im3"),
        ])
        .await
        .unwrap();
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(matches!(results[1], Err(StoreError::Conflict("username"))));
    assert!(store.user(&uid("im2")).await.unwrap().is_none());

    let updated = store
        .update_user(
            &uid("im1"),
            UserUpdate {
                display_name: Some("New".into()),
                ..UserUpdate::default()
            },
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        (updated.display_name.as_str(), updated.username.as_str()),
        ("New", "im1")
    );
    assert!(matches!(
        store
            .update_user(&uid("ghost"), UserUpdate::default(), vec![])
            .await,
        Err(StoreError::NotFound(_))
    ));
}

/// `search_users` matches a part of the id, the username or the display
/// name (ASCII letters without case, other characters as they are), pages
/// by user id and leaves the rest alone.
pub async fn search_users(store: Arc<dyn Store>) {
    let store = &*store;
    for (id, username, display) in [
        ("b-2", "bob", "Bob Builder"),
        ("a-1", "alice", "Alice Liddell"),
        ("c-3", "carol", "卡罗尔 Carol"),
        ("d-4", "dave", "Dave"),
    ] {
        let user = NewUser {
            hook: None,
            user_id: uid(id),
            username: username.into(),
            display_name: display.into(),
            password_hash: None,
            created_at: now(),
        };
        store.create_user(user).await.unwrap();
    }
    let ids = |users: Vec<crate::User>| -> Vec<String> {
        users.iter().map(|u| u.user_id.to_string()).collect()
    };
    let all = store.search_users("", None, 10).await.unwrap();
    assert_eq!(ids(all), ["a-1", "b-2", "c-3", "d-4"], "everyone, by id");
    let page = store.search_users("", None, 2).await.unwrap();
    assert_eq!(ids(page), ["a-1", "b-2"]);
    let next = store.search_users("", Some(&uid("b-2")), 2).await.unwrap();
    assert_eq!(ids(next), ["c-3", "d-4"], "the page after the cursor");
    let by_name = store.search_users("LIDD", None, 10).await.unwrap();
    assert_eq!(ids(by_name), ["a-1"], "display name, without case");
    let by_username = store.search_users("aro", None, 10).await.unwrap();
    assert_eq!(ids(by_username), ["c-3"], "username");
    let by_id = store.search_users("-4", None, 10).await.unwrap();
    assert_eq!(ids(by_id), ["d-4"], "id");
    let chinese = store.search_users("卡罗", None, 10).await.unwrap();
    assert_eq!(ids(chinese), ["c-3"], "other characters as they are");
    let b = store.search_users("b", None, 10).await.unwrap();
    assert_eq!(ids(b), ["b-2"], "b is in bob's names only");
    assert!(store.search_users("zz", None, 10).await.unwrap().is_empty());
}
