//! Checks of the `Inbox` trait.

use super::*;

pub async fn inbox(store: Arc<dyn Store>) {
    let store = &*store;
    let (a, b) = (user(store, "ia").await, user(store, "ib").await);
    let out = store
        .append_message(
            message("m1", &a, &b, Some("c1")),
            vec![a.clone(), b.clone()],
        )
        .await
        .unwrap();
    let AppendOutcome::Created {
        message: m1,
        events,
    } = out
    else {
        panic!("first send was a duplicate")
    };
    assert_eq!(m1.conv_seq, 1);
    assert_eq!(
        events
            .iter()
            .map(|e| (e.user_id.clone(), e.seq))
            .collect::<Vec<_>>(),
        vec![(a.clone(), Seq(1)), (b.clone(), Seq(1))]
    );
    // Same (sender, client_msg_id): the original comes back and nothing is written.
    let out = store
        .append_message(
            message("m2", &a, &b, Some("c1")),
            vec![a.clone(), b.clone()],
        )
        .await
        .unwrap();
    assert!(matches!(out, AppendOutcome::Duplicate(ref m) if m.message_id.as_str() == "m1"));
    let m1_id = MessageId::parse("m1").unwrap();
    assert_eq!(store.message_seq(&a, &m1_id).await.unwrap(), Some(Seq(1)));
    assert_eq!(store.last_seq(&b).await.unwrap(), Seq(1));
    // The same client_msg_id from another sender is a different message.
    let out = store
        .append_message(
            message("m3", &b, &a, Some("c1")),
            vec![a.clone(), b.clone()],
        )
        .await
        .unwrap();
    assert!(matches!(out, AppendOutcome::Created { .. }));

    let events = store.events_after(&b, Seq(0), 100).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        vec![1, 2]
    );
    match &events[0].body {
        EventBody::Message(m) => assert_eq!(m.content.ciphertext, b"m1"),
        other => panic!("expected a message, got {other:?}"),
    }
    let tail = store.events_after(&b, Seq(1), 100).await.unwrap();
    assert_eq!(tail.len(), 1);
    let limited = store.events_after(&b, Seq(0), 1).await.unwrap();
    assert_eq!(limited.len(), 1);

    // Acks clamp to the last seq and never move backwards.
    assert_eq!(store.ack(&b, Seq(99), vec![]).await.unwrap(), Seq(2));
    assert_eq!(store.ack(&b, Seq(1), vec![]).await.unwrap(), Seq(2));
    assert_eq!(store.acked(&b).await.unwrap(), Seq(2));

    // Data events get the next seq.
    let drafts = vec![EventDraft {
        user_id: b.clone(),
        kind: EventType::ReceiptRead,
        data: "{}".into(),
        at: now(),
    }];
    let appended = store.append_events(drafts).await.unwrap();
    assert_eq!(appended[0].seq, Seq(3));
    // An event for an unknown user fails and leaves nothing behind.
    let bad = vec![
        EventDraft {
            user_id: b.clone(),
            kind: EventType::ReceiptRead,
            data: "{}".into(),
            at: now(),
        },
        EventDraft {
            user_id: uid("ghost"),
            kind: EventType::ReceiptRead,
            data: "{}".into(),
            at: now(),
        },
    ];
    assert!(matches!(
        store.append_events(bad).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.last_seq(&b).await.unwrap(), Seq(3));
}

pub async fn concurrent_appends_are_gap_free(store: Arc<dyn Store>) {
    let (a, b) = (user(&*store, "ca").await, user(&*store, "cb").await);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (store, a, b) = (store.clone(), a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let m = message(&format!("cc{i}"), from, to, Some(&format!("k{}", i % 150)));
            store.append_message(m, vec![a.clone(), b.clone()]).await
        }));
    }
    let mut created = 0;
    for t in tasks {
        if let AppendOutcome::Created { .. } = t.await.unwrap().unwrap() {
            created += 1;
        }
    }
    // 150 distinct (sender, key) pairs: ids k0..k149 per parity, 100 sends each side.
    for u in [&a, &b] {
        let events = store.events_after(u, Seq(0), 10_000).await.unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq.0).collect();
        assert_eq!(
            seqs,
            (1..=created as u64).collect::<Vec<_>>(),
            "inbox of {u} has gaps"
        );
        let mut ids: Vec<String> = events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Message(m) => Some(m.message_id.to_string()),
                EventBody::Data(_) | EventBody::Notification(_) | EventBody::Broadcast(_) => None,
            })
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), created, "duplicate messages in the inbox of {u}");
    }
}

pub async fn reads_and_recalls(store: Arc<dyn Store>) {
    let store = &*store;
    let (a, b) = (user(store, "ra").await, user(store, "rb").await);
    for i in 0..5 {
        store
            .append_message(
                message(&format!("rm{i}"), &a, &b, None),
                vec![a.clone(), b.clone()],
            )
            .await
            .unwrap();
    }
    let conv = ConversationId::direct(&a, &b);
    let convs = store.conversations(&b).await.unwrap();
    assert_eq!(convs.len(), 1);
    assert_eq!(convs[0].unread, 5);
    assert_eq!(convs[0].last_message.as_ref().map(|m| m.conv_seq), Some(5));

    let receipt = vec![EventDraft {
        user_id: a.clone(),
        kind: EventType::ReceiptRead,
        data: "{}".into(),
        at: now(),
    }];
    let (pos, events) = store
        .mark_read(&b, &conv, 3, Effects::events(receipt.clone()))
        .await
        .unwrap();
    assert_eq!((pos, events.len()), (3, 1));
    // Reading backwards changes nothing and appends nothing.
    let (pos, events) = store
        .mark_read(&b, &conv, 2, Effects::events(receipt.clone()))
        .await
        .unwrap();
    assert_eq!((pos, events.len()), (3, 0));
    let convs = store.conversations(&b).await.unwrap();
    assert_eq!(convs[0].unread, 2);
    let stranger = user(store, "rc").await;
    assert!(matches!(
        store
            .mark_read(&stranger, &conv, 1, Effects::default())
            .await,
        Err(StoreError::NotFound("conversation"))
    ));

    let page = store.history(&conv, None, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|m| m.conv_seq).collect::<Vec<_>>(),
        vec![5, 4]
    );
    let page = store.history(&conv, Some(4), 10).await.unwrap();
    assert_eq!(
        page.iter().map(|m| m.conv_seq).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );

    let id = MessageId::parse("rm4").unwrap();
    store.recall(&id, now(), Effects::default()).await.unwrap();
    assert!(matches!(
        store.recall(&id, now(), Effects::default()).await,
        Err(StoreError::Conflict(_))
    ));
    let recalled = store.message(&id).await.unwrap();
    assert!(recalled.and_then(|m| m.recalled_at).is_some());
}

/// A direct message to a user who does not exist, who blocked the sender,
/// or (when friendship is required) who is not a friend is refused by the
/// write itself, and nothing is written.
pub async fn direct_refusals_are_checked_in_the_write(store: Arc<dyn Store>) {
    let store = &*store;
    let (a, b) = (user(store, "ra").await, user(store, "rb").await);
    let refused = |out: AppendOutcome| match out {
        AppendOutcome::Refused(r) => Some(r),
        _ => None,
    };
    let nobody = uid("nobody");
    let out = store
        .append_message(message("r1", &a, &nobody, None), vec![a.clone(), nobody])
        .await
        .unwrap();
    assert_eq!(refused(out), Some(DirectRefusal::NoRecipient));

    let strict = |id: &str| NewMessage {
        require_friendship: true,
        ..message(id, &a, &b, None)
    };
    let out = store
        .append_message(strict("r2"), vec![a.clone(), b.clone()])
        .await
        .unwrap();
    assert_eq!(refused(out), Some(DirectRefusal::NotFriends));

    // A block by the recipient refuses; one by the sender does not stop
    // the sender's own message.
    store
        .set_block(&a, &b, BlockChange::Block, now(), Effects::default())
        .await
        .unwrap();
    let out = store
        .append_message(message("r3", &a, &b, None), vec![a.clone(), b.clone()])
        .await
        .unwrap();
    assert!(matches!(out, AppendOutcome::Created { .. }));
    let out = store
        .append_message(
            message("r5", &a, &b, Some("c5")),
            vec![a.clone(), b.clone()],
        )
        .await
        .unwrap();
    assert!(matches!(out, AppendOutcome::Created { .. }));
    store
        .set_block(&b, &a, BlockChange::Block, now(), Effects::default())
        .await
        .unwrap();
    // The refusal comes before the duplicate check: a retry of a message
    // sent before the block is refused too.
    let out = store
        .append_message(
            message("r6", &a, &b, Some("c5")),
            vec![a.clone(), b.clone()],
        )
        .await
        .unwrap();
    assert_eq!(refused(out), Some(DirectRefusal::Blocked));
    let out = store
        .append_message(
            message("r4", &a, &b, Some("c4")),
            vec![a.clone(), b.clone()],
        )
        .await
        .unwrap();
    assert_eq!(refused(out), Some(DirectRefusal::Blocked));
    for id in ["r1", "r2", "r4", "r6"] {
        let id = MessageId::parse(id).unwrap();
        assert_eq!(
            store.message_seq(&a, &id).await.unwrap(),
            None,
            "{id:?} was written"
        );
    }
    // Only r3 and r5 reached either inbox.
    assert_eq!(store.last_seq(&a).await.unwrap(), Seq(2));
    assert_eq!(store.last_seq(&b).await.unwrap(), Seq(2));
}
