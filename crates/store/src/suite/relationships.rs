//! Checks of the `Relationships` trait.

use super::*;

pub async fn relationships(store: Arc<dyn Store>) {
    let store = &*store;
    let (a, b, c) = (
        user(store, "ra1").await,
        user(store, "rb1").await,
        user(store, "rc1").await,
    );
    let sealed_hi = Sealed {
        key_id: 7,
        nonce: vec![3; 12],
        ciphertext: b"sealed hi".to_vec(),
    };
    let req = |from: &UserId, to: &UserId| crate::FriendRequestRow {
        from: from.clone(),
        to: to.clone(),
        message: Some(crate::StoredText::Sealed(sealed_hi.clone())),
        created_at: now(),
    };
    let draft = |u: &UserId| {
        vec![EventDraft {
            user_id: u.clone(),
            kind: EventType::FriendRequest,
            data: "{}".into(),
            at: now(),
        }]
    };
    let (outcome, events) = store
        .request_friend(req(&a, &b), Effects::events(draft(&b)), Effects::default())
        .await
        .unwrap();
    assert_eq!((outcome, events.len()), (crate::RequestOutcome::Pending, 1));
    let (again, _) = store
        .request_friend(req(&a, &b), Effects::events(draft(&b)), Effects::default())
        .await
        .unwrap();
    assert_eq!(again, crate::RequestOutcome::Unchanged);
    let incoming = store
        .friend_requests(&b, RequestDirection::Incoming)
        .await
        .unwrap();
    assert_eq!(
        incoming.iter().map(|r| r.from.clone()).collect::<Vec<_>>(),
        vec![a.clone()]
    );
    assert_eq!(
        incoming[0].message,
        Some(crate::StoredText::Sealed(sealed_hi.clone())),
        "the sealed text reads back as it was written"
    );
    // A plaintext text (as rows from before sealing hold) still reads.
    let legacy = crate::FriendRequestRow {
        message: Some(crate::StoredText::Plain("old words".into())),
        ..req(&c, &b)
    };
    store
        .request_friend(legacy, Effects::default(), Effects::default())
        .await
        .unwrap();
    let from_c = store
        .friend_requests(&c, RequestDirection::Outgoing)
        .await
        .unwrap();
    assert_eq!(
        from_c[0].message,
        Some(crate::StoredText::Plain("old words".into()))
    );
    // Asked again with sealed text, the row holds only the sealed text.
    store
        .answer_friend_request(&c, &b, Answer::Decline, now(), Effects::default())
        .await
        .unwrap();
    store
        .request_friend(req(&c, &b), Effects::default(), Effects::default())
        .await
        .unwrap();
    let from_c = store
        .friend_requests(&c, RequestDirection::Outgoing)
        .await
        .unwrap();
    assert_eq!(
        from_c[0].message,
        Some(crate::StoredText::Sealed(sealed_hi.clone()))
    );
    store
        .answer_friend_request(&c, &b, Answer::Decline, now(), Effects::default())
        .await
        .unwrap();
    // b asking a back meets the pending request: friends.
    let (met, _) = store
        .request_friend(req(&b, &a), Effects::default(), Effects::events(draft(&a)))
        .await
        .unwrap();
    assert_eq!(met, crate::RequestOutcome::Friends);
    assert!(
        store.are_friends(&a, &b).await.unwrap_or_default()
            && store.are_friends(&b, &a).await.unwrap_or_default()
    );
    assert!(
        store
            .friend_requests(&b, RequestDirection::Incoming)
            .await
            .unwrap()
            .is_empty()
    );
    let tagged = store
        .update_friend(
            &a,
            &b,
            vec!["work".into(), "close".into()],
            "Bob from work".into(),
        )
        .await
        .unwrap();
    assert_eq!(tagged.tags, vec!["work", "close"]);
    let listed = store.friends(&a).await.unwrap();
    assert_eq!(
        (listed[0].friend.clone(), listed[0].remark.as_str()),
        (b.clone(), "Bob from work")
    );
    assert!(
        store.friends(&b).await.unwrap()[0].tags.is_empty(),
        "tags are per side"
    );
    assert!(matches!(
        store.update_friend(&a, &c, vec![], String::new()).await,
        Err(StoreError::NotFound(_))
    ));

    // Declining, then removing.
    store
        .request_friend(req(&c, &a), Effects::default(), Effects::default())
        .await
        .unwrap();
    store
        .answer_friend_request(&c, &a, Answer::Decline, now(), Effects::default())
        .await
        .unwrap();
    assert!(!store.are_friends(&a, &c).await.unwrap_or(true));
    assert!(matches!(
        store
            .answer_friend_request(&c, &a, Answer::Accept, now(), Effects::default())
            .await,
        Err(StoreError::NotFound(_))
    ));
    let (removed, _) = store
        .remove_friend(&b, &a, Effects::default())
        .await
        .unwrap();
    assert!(removed && !store.are_friends(&a, &b).await.unwrap_or(true));

    // Blocks are one-directional and idempotent.
    let (changed, _) = store
        .set_block(&a, &c, BlockChange::Block, now(), Effects::default())
        .await
        .unwrap();
    assert!(changed);
    let (changed, _) = store
        .set_block(&a, &c, BlockChange::Block, now(), Effects::default())
        .await
        .unwrap();
    assert!(!changed);
    assert!(store.is_blocked(&a, &c).await.unwrap_or_default());
    assert!(!store.is_blocked(&c, &a).await.unwrap_or(true));
    assert_eq!(store.blocks(&a).await.unwrap_or_default().len(), 1);
    store
        .set_block(&a, &c, BlockChange::Unblock, now(), Effects::default())
        .await
        .unwrap();
    assert!(!store.is_blocked(&a, &c).await.unwrap_or(true));
    assert!(
        store
            .set_friendship(
                &b,
                &c,
                FriendshipChange::Befriend,
                now(),
                Effects::default()
            )
            .await
            .unwrap_or_default()
            .0
    );
    assert!(store.are_friends(&c, &b).await.unwrap_or_default());
}
