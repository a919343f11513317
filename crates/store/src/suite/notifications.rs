//! Checks of the `Notifications` trait.

use super::*;

/// Notifications are stored once, with one event per known recipient;
/// their status counts deliveries and reads; deleting a recipient works.
pub async fn notifications(store: Arc<dyn Store>) {
    let store = &*store;
    let item = |id: &str| NewUser {
        hook: None,
        user_id: uid(id),
        username: id.into(),
        display_name: id.into(),
        password_hash: None,
        created_at: now(),
    };
    let results = store
        .import_users(vec![item("im1"), item("im3")])
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok));

    // Notifications: stored once, one event per known recipient.
    let n = NewNotification {
        message_id: MessageId::parse("n1").unwrap(),
        kind: "notification".into(),
        sender: "system".into(),
        content: Sealed {
            key_id: 1,
            nonce: vec![0; 12],
            ciphertext: b"x".to_vec(),
        },
        created_at: now(),
    };
    let seqs = store
        .append_notification(
            n.clone(),
            AudiencePart::First,
            vec![uid("im1"), uid("ghost")],
        )
        .await
        .unwrap();
    assert_eq!(seqs, vec![(uid("im1"), Seq(1))]);
    let more = store
        .append_notification(n.clone(), AudiencePart::Rest, vec![uid("im3")])
        .await
        .unwrap();
    assert_eq!(more, vec![(uid("im3"), Seq(1))]);
    let events = store.events_after(&uid("im3"), Seq(0), 10).await.unwrap();
    assert!(matches!(&events[0].body, EventBody::Notification(x) if x.message_id == n.message_id));
    let status = store
        .notification_status(&n.message_id, None, 10)
        .await
        .unwrap();
    assert_eq!(
        (
            status.recipients,
            status.sent_live,
            status.delivered,
            status.read
        ),
        (2, 0, 0, 0)
    );
    // Pushed live to im1 only; a user who did not receive it is skipped.
    store
        .mark_notification_sent_live(&n.message_id, vec![uid("im1"), uid("ghost")])
        .await
        .unwrap();
    store.ack(&uid("im1"), Seq(1), vec![]).await.unwrap();
    store
        .mark_notifications_read(&uid("im3"), &n.message_id, now(), vec![])
        .await
        .unwrap();
    let status = store
        .notification_status(&n.message_id, None, 1)
        .await
        .unwrap();
    // Read without an ack counts as delivered too: a client that shows a
    // notification has it, and "read, not delivered" would be nonsense.
    assert_eq!(
        (
            status.recipients,
            status.sent_live,
            status.delivered,
            status.read
        ),
        (2, 1, 2, 1)
    );
    let state = |user: &str, sent_live, delivered, read| RecipientState {
        user: uid(user),
        sent_live,
        delivered,
        read,
    };
    assert_eq!(status.page, vec![state("im1", true, true, false)]);
    let next = store
        .notification_status(&n.message_id, Some(uid("im1")), 10)
        .await
        .unwrap();
    assert_eq!(next.page, vec![state("im3", false, true, true)]);

    store.delete_user(&uid("im3"), vec![]).await.unwrap();
    assert!(store.user(&uid("im3")).await.unwrap().is_none());
    assert!(matches!(
        store.delete_user(&uid("im3"), vec![]).await,
        Err(StoreError::NotFound(_))
    ));
}
