//! The backend-independent test suite: every [`Store`] implementation must
//! pass it. Backends call [`run_all`] from their own tests with a fresh,
//! empty store.

use std::sync::Arc;

use time::OffsetDateTime;
use unimsg_proto::api::Recipient;
use unimsg_proto::groups::{GroupRole, JoinPolicy};
use unimsg_proto::{
    ConversationId, EventType, GroupId, MessageId, Platform, Seq, SessionId, UserId,
};

use crate::{
    Admin, AppendOutcome, AuditDraft, AuditQuery, EventBody, EventDraft, GROUP_CHANGED, GroupEdit,
    NewGroup, NewMessage, NewNotification, NewRefreshToken, NewSession, NewUser, RefreshOutcome,
    Revocation, Sealed, Store, StoreError, TokenHash, UserUpdate,
};

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn sid(s: &str) -> SessionId {
    SessionId::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

async fn user(store: &dyn Store, name: &str) -> UserId {
    let user = NewUser {
        user_id: uid(name),
        username: format!("{name}-name"),
        display_name: name.to_uppercase(),
        password_hash: None,
        created_at: now(),
    };
    store
        .create_user(user)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
        .user_id
}

fn message(id: &str, from: &UserId, to: &UserId, cmid: Option<&str>) -> NewMessage {
    NewMessage {
        message_id: MessageId::parse(id).unwrap_or_else(|e| panic!("{e}")),
        conversation_id: ConversationId::direct(from, to),
        sender: from.clone(),
        recipient: Recipient::User(to.clone()),
        kind: "chat".into(),
        content: Sealed {
            key_id: 1,
            nonce: vec![0; 12],
            ciphertext: id.as_bytes().to_vec(),
        },
        client_msg_id: cmid.map(str::to_owned),
        created_at: now(),
    }
}

fn revocation(session: &str) -> Revocation {
    Revocation {
        session_id: sid(session),
        reason: "test".into(),
        at: now(),
        event_data: format!(r#"{{"session_id":"{session}"}}"#),
    }
}

fn refresh(byte: u8) -> NewRefreshToken {
    NewRefreshToken {
        hash: TokenHash([byte; 32]),
        expires_at: now() + time::Duration::days(1),
    }
}

fn new_session(id: &str, user: &UserId) -> NewSession {
    NewSession {
        session_id: sid(id),
        user_id: user.clone(),
        platform: Platform::parse("web").unwrap_or_else(|e| panic!("{e}")),
        device_id: None,
        created_at: now(),
        ip: None,
        user_agent: None,
    }
}

/// A session read says whether its user is disabled, in the same read; a
/// disabled user's refresh token does not rotate, and their sessions are
/// still listed (so that they can be revoked).
async fn disabled_users_sessions(store: &dyn Store) {
    let u = user(store, "dis1").await;
    store
        .open_session(new_session("dis-s1", &u), refresh(201), vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let session = store
        .session(&sid("dis-s1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no session"));
    assert!(session.is_active());
    assert_eq!(session.user_status, crate::UserStatus::Active);
    let disable = |status| UserUpdate {
        status: Some(status),
        ..UserUpdate::default()
    };
    store
        .update_user(&u, disable(crate::UserStatus::Disabled))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let session = store
        .session(&sid("dis-s1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no session"));
    assert_eq!(session.user_status, crate::UserStatus::Disabled);
    assert!(session.revoked_at.is_none() && !session.is_active());
    let listed = store
        .active_sessions(&u)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.len(), 1, "still listed, so that it can be revoked");
    let rotated = store
        .rotate_refresh(&TokenHash([201; 32]), refresh(202), now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(rotated, RefreshOutcome::Invalid), "{rotated:?}");
    store
        .update_user(&u, disable(crate::UserStatus::Active))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rotated = store
        .rotate_refresh(&TokenHash([201; 32]), refresh(203), now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(rotated, RefreshOutcome::Rotated(_)), "{rotated:?}");
}

/// `unknown_users` names the ids that are no user, in order.
async fn unknown_users(store: &dyn Store) {
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
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        unknown,
        vec![uid("ghost-a"), uid("ghost-b"), uid("ghost-a")]
    );
    assert!(
        store
            .unknown_users(Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
}

/// Runs every check of the suite against `store`, which must be empty.
pub async fn run_all(store: Arc<dyn Store>) {
    users(&*store).await;
    sessions(&*store).await;
    disabled_users_sessions(&*store).await;
    unknown_users(&*store).await;
    inbox(&*store).await;
    concurrent_appends_are_gap_free(store.clone()).await;
    reads_and_recalls(&*store).await;
    admin_side(&*store).await;
    broadcasts_merge_into_every_inbox(&*store).await;
    groups(&*store).await;
    relationships(&*store).await;
}

async fn relationships(store: &dyn Store) {
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
        .request_friend(req(&a, &b), draft(&b), vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((outcome, events.len()), (crate::RequestOutcome::Pending, 1));
    let (again, _) = store
        .request_friend(req(&a, &b), draft(&b), vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, crate::RequestOutcome::Unchanged);
    let incoming = store
        .friend_requests(&b, true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
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
        .request_friend(legacy, vec![], vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let from_c = store
        .friend_requests(&c, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        from_c[0].message,
        Some(crate::StoredText::Plain("old words".into()))
    );
    // Asked again with sealed text, the row holds only the sealed text.
    store
        .answer_friend_request(&c, &b, false, now(), vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .request_friend(req(&c, &b), vec![], vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let from_c = store
        .friend_requests(&c, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        from_c[0].message,
        Some(crate::StoredText::Sealed(sealed_hi.clone()))
    );
    store
        .answer_friend_request(&c, &b, false, now(), vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // b asking a back meets the pending request: friends.
    let (met, _) = store
        .request_friend(req(&b, &a), vec![], draft(&a))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(met, crate::RequestOutcome::Friends);
    assert!(
        store.are_friends(&a, &b).await.unwrap_or_default()
            && store.are_friends(&b, &a).await.unwrap_or_default()
    );
    assert!(
        store
            .friend_requests(&b, true)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
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
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tagged.tags, vec!["work", "close"]);
    let listed = store.friends(&a).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (listed[0].friend.clone(), listed[0].remark.as_str()),
        (b.clone(), "Bob from work")
    );
    assert!(
        store.friends(&b).await.unwrap_or_else(|e| panic!("{e}"))[0]
            .tags
            .is_empty(),
        "tags are per side"
    );
    assert!(matches!(
        store.update_friend(&a, &c, vec![], String::new()).await,
        Err(StoreError::NotFound(_))
    ));

    // Declining, then removing.
    store
        .request_friend(req(&c, &a), vec![], vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .answer_friend_request(&c, &a, false, now(), vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!store.are_friends(&a, &c).await.unwrap_or(true));
    assert!(matches!(
        store
            .answer_friend_request(&c, &a, true, now(), vec![])
            .await,
        Err(StoreError::NotFound(_))
    ));
    let (removed, _) = store
        .remove_friend(&b, &a, vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(removed && !store.are_friends(&a, &b).await.unwrap_or(true));

    // Blocks are one-directional and idempotent.
    let (changed, _) = store
        .set_block(&a, &c, true, now(), vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(changed);
    let (changed, _) = store
        .set_block(&a, &c, true, now(), vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!changed);
    assert!(store.is_blocked(&a, &c).await.unwrap_or_default());
    assert!(!store.is_blocked(&c, &a).await.unwrap_or(true));
    assert_eq!(store.blocks(&a).await.unwrap_or_default().len(), 1);
    store
        .set_block(&a, &c, false, now(), vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!store.is_blocked(&a, &c).await.unwrap_or(true));
    assert!(
        store
            .set_friendship(&b, &c, true, now())
            .await
            .unwrap_or_default()
    );
    assert!(store.are_friends(&c, &b).await.unwrap_or_default());
}

fn announcement(id: &str) -> NewNotification {
    NewNotification {
        message_id: MessageId::parse(id).unwrap_or_else(|e| panic!("{e}")),
        kind: "notification".into(),
        sender: "system".into(),
        content: Sealed {
            key_id: 1,
            nonce: vec![0; 12],
            ciphertext: id.as_bytes().to_vec(),
        },
        created_at: now(),
    }
}

/// What a user's visible stream holds, as labels.
fn labels(events: &[crate::StoredEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.body {
            EventBody::Broadcast(b) => format!("B:{}", b.message_id),
            EventBody::Message(m) => format!("M:{}", m.message_id),
            EventBody::Notification(n) => format!("N:{}", n.message_id),
            EventBody::Data(_) => "D".into(),
        })
        .collect()
}

async fn broadcasts_merge_into_every_inbox(store: &dyn Store) {
    let (a, b) = (user(store, "ba").await, user(store, "bb").await);
    let send = |id: &str| message(id, &a, &b, None);
    store
        .append_message(send("bm1"), vec![a.clone(), b.clone()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store
            .append_broadcast(announcement("bc1"))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        1
    );
    // A user created now does not see bc1.
    let late = user(store, "bl").await;
    store
        .append_message(send("bm2"), vec![a.clone(), b.clone()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .append_broadcast(announcement("bc2"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .append_broadcast(announcement("bc3"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let out = store
        .append_message(send("bm3"), vec![a.clone(), b.clone()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The seq a writer returns is the visible one.
    let AppendOutcome::Created { events, .. } = out else {
        panic!("duplicate")
    };
    assert_eq!(events[0].seq, Seq(6));

    let full = store
        .events_after(&a, Seq(0), 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        labels(&full),
        vec!["M:bm1", "B:bc1", "M:bm2", "B:bc2", "B:bc3", "M:bm3"]
    );
    assert_eq!(
        full.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        store.last_seq(&a).await.unwrap_or_else(|e| panic!("{e}")),
        Seq(6)
    );
    // Resuming from any position gives exactly the rest, in pages too.
    for p in 0..=6u64 {
        let rest = store
            .events_after(&a, Seq(p), 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(labels(&rest), labels(&full[p as usize..]), "after {p}");
        assert_eq!(
            rest.first().map(|e| e.seq),
            full.get(p as usize).map(|e| e.seq)
        );
        let page = store
            .events_after(&a, Seq(p), 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            labels(&page),
            labels(&full[p as usize..(p as usize + 2).min(6)])
        );
    }
    let late_stream = store
        .events_after(&late, Seq(0), 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(labels(&late_stream), vec!["B:bc2", "B:bc3"]);
    assert_eq!(
        store
            .last_seq(&late)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Seq(2)
    );
    let m3 = MessageId::parse("bm3").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store
            .message_seq(&b, &m3)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Some(Seq(6))
    );
    // Acks count broadcasts as positions too.
    assert_eq!(
        store
            .ack(&late, Seq(50))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Seq(2)
    );
    // A broadcast after everything is the next position for everyone.
    store
        .append_broadcast(announcement("bc4"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.last_seq(&a).await.unwrap_or_else(|e| panic!("{e}")),
        Seq(7)
    );
    let tail = store
        .events_after(&late, Seq(2), 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (labels(&tail), tail[0].seq),
        (vec!["B:bc4".to_owned()], Seq(3))
    );
    // Placing a broadcast for many users at once agrees with each stream,
    // also after later inbox rows; users who do not see it, or do not
    // exist, are left out.
    store
        .append_message(send("bm4"), vec![a.clone(), b.clone()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ghost = UserId::parse("nobody-here").unwrap_or_else(|e| panic!("{e}"));
    for (bseq, label) in [(1, "B:bc1"), (2, "B:bc2"), (3, "B:bc3"), (4, "B:bc4")] {
        let mut placed = store
            .broadcast_positions(bseq, vec![a.clone(), late.clone(), ghost.clone()])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        placed.sort();
        let mut expected = Vec::new();
        for u in [&a, &late] {
            let stream = store
                .events_after(u, Seq(0), 100)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if let Some(e) = stream
                .iter()
                .find(|e| labels(std::slice::from_ref(e))[0] == label)
            {
                expected.push(((*u).clone(), e.seq));
            }
        }
        expected.sort();
        assert_eq!(placed, expected, "broadcast {bseq}");
    }
    assert_eq!(
        store
            .broadcast_positions(1, vec![a.clone()])
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        vec![(a.clone(), Seq(2))]
    );
}

fn test_chain(prev: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
    // Not a cryptographic hash: the suite checks the store's bookkeeping only.
    let mut out = *prev;
    for (i, b) in bytes.iter().enumerate() {
        out[i % 32] = out[i % 32].wrapping_mul(31).wrapping_add(*b);
    }
    out
}

async fn admin_side(store: &dyn Store) {
    // Import: one clash does not sink the batch.
    let item = |id: &str, name: &str| NewUser {
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
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(matches!(results[1], Err(StoreError::Conflict("username"))));
    assert!(
        store
            .user(&uid("im2"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );

    let updated = store
        .update_user(
            &uid("im1"),
            UserUpdate {
                display_name: Some("New".into()),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (updated.display_name.as_str(), updated.username.as_str()),
        ("New", "im1")
    );
    assert!(matches!(
        store
            .update_user(&uid("ghost"), UserUpdate::default())
            .await,
        Err(StoreError::NotFound(_))
    ));

    // Notifications: stored once, one event per known recipient.
    let n = NewNotification {
        message_id: MessageId::parse("n1").unwrap_or_else(|e| panic!("{e}")),
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
        .append_notification(n.clone(), true, vec![uid("im1"), uid("ghost")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seqs, vec![(uid("im1"), Seq(1))]);
    let more = store
        .append_notification(n.clone(), false, vec![uid("im3")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(more, vec![(uid("im3"), Seq(1))]);
    let events = store
        .events_after(&uid("im3"), Seq(0), 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(&events[0].body, EventBody::Notification(x) if x.message_id == n.message_id));
    let status = store
        .notification_status(&n.message_id, None, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (status.recipients, status.delivered, status.read),
        (2, 0, 0)
    );
    store
        .ack(&uid("im1"), Seq(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .mark_notifications_read(&uid("im3"), &n.message_id, now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = store
        .notification_status(&n.message_id, None, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (status.recipients, status.delivered, status.read),
        (2, 1, 1)
    );
    assert_eq!(status.page, vec![(uid("im1"), true, false)]);
    let next = store
        .notification_status(&n.message_id, Some(uid("im1")), 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next.page, vec![(uid("im3"), false, true)]);

    store
        .delete_user(&uid("im3"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        store
            .user(&uid("im3"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );
    assert!(matches!(
        store.delete_user(&uid("im3")).await,
        Err(StoreError::NotFound(_))
    ));

    // Admins.
    let admin = Admin {
        admin_id: "ops".into(),
        secret_hash: crate::PasswordHash("h".into()),
        scopes: vec!["users:read".into(), "audit:read".into()],
        created_at: now(),
    };
    store
        .create_admin(admin.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        store.create_admin(admin).await,
        Err(StoreError::Conflict(_))
    ));
    let found = store
        .admin("ops")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no admin"));
    assert_eq!(found.scopes, vec!["users:read", "audit:read"]);

    // Audit: numbered from 1, each chained to the one before.
    let mut rows = Vec::new();
    for action in ["a", "b", "c"] {
        let draft = AuditDraft {
            at: now(),
            content: format!(r#"{{"action":"{action}","actor":"ops"}}"#),
        };
        rows.push(
            store
                .append_audit(draft, test_chain)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(rows[0].prev_hash, [0; 32]);
    for pair in rows.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert_eq!(
            pair[1].hash,
            test_chain(
                &pair[0].hash,
                &crate::audit_bytes(pair[1].id, pair[1].at_ms, &pair[1].content)
            )
        );
    }
    let all = store
        .audit_entries(AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all, rows);
    let only_b = store
        .audit_entries(AuditQuery {
            limit: 10,
            action: Some("b".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(only_b.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2]);
}

async fn users(store: &dyn Store) {
    let id = user(store, "u1").await;
    let again = NewUser {
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
    let found = store
        .user_by_username("u1-name")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.map(|u| u.user_id), Some(id.clone()));
    assert!(
        store
            .user(&uid("nobody"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );
    assert_eq!(
        store.last_seq(&id).await.unwrap_or_else(|e| panic!("{e}")),
        Seq(0)
    );
}

async fn sessions(store: &dyn Store) {
    let u = user(store, "s1").await;
    let events = store
        .open_session(new_session("sa", &u), refresh(1), vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(events.is_empty());
    // Opening a second session that kicks the first revokes it and tells the user.
    let events = store
        .open_session(new_session("sb", &u), refresh(2), vec![revocation("sa")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventType::SessionRevoked);
    assert_eq!(events[0].seq, Seq(1));
    let active = store
        .active_sessions(&u)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        active
            .iter()
            .map(|s| s.session_id.as_str())
            .collect::<Vec<_>>(),
        vec!["sb"]
    );
    // Revoking an already revoked session appends nothing.
    let again = store
        .revoke_sessions(vec![revocation("sa")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(again.is_empty());

    // Rotation: the current token rotates once; presenting it again is reuse.
    let out = store
        .rotate_refresh(&TokenHash([2; 32]), refresh(3), now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(out, RefreshOutcome::Rotated(ref s) if s.session_id.as_str() == "sb"));
    let out = store
        .rotate_refresh(&TokenHash([2; 32]), refresh(4), now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(out, RefreshOutcome::Reused(ref s) if s.session_id.as_str() == "sb"));
    let out = store
        .rotate_refresh(&TokenHash([9; 32]), refresh(5), now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(out, RefreshOutcome::Invalid));
    // The token of a revoked session is invalid.
    let out = store
        .rotate_refresh(&TokenHash([1; 32]), refresh(6), now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(out, RefreshOutcome::Invalid));
}

async fn inbox(store: &dyn Store) {
    let (a, b) = (user(store, "ia").await, user(store, "ib").await);
    let out = store
        .append_message(
            message("m1", &a, &b, Some("c1")),
            vec![a.clone(), b.clone()],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
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
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(out, AppendOutcome::Duplicate(ref m) if m.message_id.as_str() == "m1"));
    let m1_id = MessageId::parse("m1").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store
            .message_seq(&a, &m1_id)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Some(Seq(1))
    );
    assert_eq!(
        store.last_seq(&b).await.unwrap_or_else(|e| panic!("{e}")),
        Seq(1)
    );
    // The same client_msg_id from another sender is a different message.
    let out = store
        .append_message(
            message("m3", &b, &a, Some("c1")),
            vec![a.clone(), b.clone()],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(out, AppendOutcome::Created { .. }));

    let events = store
        .events_after(&b, Seq(0), 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        events.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        vec![1, 2]
    );
    match &events[0].body {
        EventBody::Message(m) => assert_eq!(m.content.ciphertext, b"m1"),
        other => panic!("expected a message, got {other:?}"),
    }
    let tail = store
        .events_after(&b, Seq(1), 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tail.len(), 1);
    let limited = store
        .events_after(&b, Seq(0), 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(limited.len(), 1);

    // Acks clamp to the last seq and never move backwards.
    assert_eq!(
        store
            .ack(&b, Seq(99))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Seq(2)
    );
    assert_eq!(
        store
            .ack(&b, Seq(1))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Seq(2)
    );
    assert_eq!(
        store.acked(&b).await.unwrap_or_else(|e| panic!("{e}")),
        Seq(2)
    );

    // Data events get the next seq.
    let drafts = vec![EventDraft {
        user_id: b.clone(),
        kind: EventType::ReceiptRead,
        data: "{}".into(),
        at: now(),
    }];
    let appended = store
        .append_events(drafts)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
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
    assert_eq!(
        store.last_seq(&b).await.unwrap_or_else(|e| panic!("{e}")),
        Seq(3)
    );
}

async fn concurrent_appends_are_gap_free(store: Arc<dyn Store>) {
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
        if let AppendOutcome::Created { .. } = t
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"))
        {
            created += 1;
        }
    }
    // 150 distinct (sender, key) pairs: ids k0..k149 per parity, 100 sends each side.
    for u in [&a, &b] {
        let events = store
            .events_after(u, Seq(0), 10_000)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
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

async fn reads_and_recalls(store: &dyn Store) {
    let (a, b) = (user(store, "ra").await, user(store, "rb").await);
    for i in 0..5 {
        store
            .append_message(
                message(&format!("rm{i}"), &a, &b, None),
                vec![a.clone(), b.clone()],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let conv = ConversationId::direct(&a, &b);
    let convs = store
        .conversations(&b)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
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
        .mark_read(&b, &conv, 3, receipt.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((pos, events.len()), (3, 1));
    // Reading backwards changes nothing and appends nothing.
    let (pos, events) = store
        .mark_read(&b, &conv, 2, receipt.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((pos, events.len()), (3, 0));
    let convs = store
        .conversations(&b)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(convs[0].unread, 2);
    let stranger = user(store, "rc").await;
    assert!(matches!(
        store.mark_read(&stranger, &conv, 1, vec![]).await,
        Err(StoreError::NotFound("conversation"))
    ));

    let page = store
        .history(&conv, None, 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        page.iter().map(|m| m.conv_seq).collect::<Vec<_>>(),
        vec![5, 4]
    );
    let page = store
        .history(&conv, Some(4), 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        page.iter().map(|m| m.conv_seq).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );

    let id = MessageId::parse("rm4").unwrap_or_else(|e| panic!("{e}"));
    store
        .recall(&id, now(), vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        store.recall(&id, now(), vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    let recalled = store.message(&id).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(recalled.and_then(|m| m.recalled_at).is_some());
}

fn group_message(id: &str, from: &UserId, group: &GroupId, cmid: Option<&str>) -> NewMessage {
    NewMessage {
        conversation_id: ConversationId::group(group),
        recipient: Recipient::Group(group.clone()),
        ..message(id, from, from, cmid)
    }
}

fn changed(user: &UserId) -> EventDraft {
    EventDraft {
        user_id: user.clone(),
        kind: EventType::GroupChanged,
        data: "{}".into(),
        at: now(),
    }
}

/// Who received a fanned-out message, sorted.
fn receivers(outcome: &AppendOutcome) -> Vec<String> {
    let AppendOutcome::Created { events, .. } = outcome else {
        panic!("not created: {outcome:?}");
    };
    let mut users: Vec<String> = events.iter().map(|e| e.user_id.to_string()).collect();
    users.sort();
    users
}

async fn groups(store: &dyn Store) {
    let owner = user(store, "g-owner").await;
    let a = user(store, "g-a").await;
    let b = user(store, "g-b").await;
    let gid = GroupId::parse("g_suite").unwrap_or_else(|e| panic!("{e}"));
    let conv = ConversationId::group(&gid);
    let new_group = |id: &GroupId| NewGroup {
        group_id: id.clone(),
        name: "Suite".into(),
        notice: String::new(),
        join_policy: JoinPolicy::Invite,
        created_at: now(),
    };

    let (row, events) = store
        .create_group(
            new_group(&gid),
            vec![
                (owner.clone(), GroupRole::Owner),
                (a.clone(), GroupRole::Member),
            ],
            vec![changed(&owner), changed(&a)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (row.member_count, row.owner.as_ref(), events.len()),
        (2, Some(&owner), 2)
    );
    assert!(matches!(
        store
            .create_group(new_group(&gid), vec![(b.clone(), GroupRole::Owner)], vec![])
            .await,
        Err(StoreError::Conflict(_))
    ));
    // An unknown member undoes the whole creation.
    let other = GroupId::parse("g_other").unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        store
            .create_group(
                new_group(&other),
                vec![(uid("g-nobody"), GroupRole::Owner)],
                vec![]
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        store
            .group(&other)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );
    // The group's conversation is listed before its first message.
    let listed = store
        .conversations(&a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        listed
            .iter()
            .any(|c| c.conversation_id == conv && c.last_message.is_none())
    );

    // One message, one event per member, the sender included; idempotent.
    let first = store
        .append_group_message(group_message("gm1", &owner, &gid, Some("c1")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(receivers(&first), vec!["g-a", "g-owner"]);
    let AppendOutcome::Created { message: m1, .. } = &first else {
        panic!("not created");
    };
    assert_eq!(m1.recipient, Recipient::Group(gid.clone()));
    let again = store
        .append_group_message(group_message("gm1-retry", &owner, &gid, Some("c1")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(again, AppendOutcome::Duplicate(ref m) if m.message_id == m1.message_id));
    let stored = store
        .message(&m1.message_id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("stored"));
    assert_eq!(stored.recipient, Recipient::Group(gid.clone()));
    // A non-member cannot send.
    assert!(matches!(
        store
            .append_group_message(group_message("gm-b", &b, &gid, None))
            .await,
        Err(StoreError::NotFound(_))
    ));

    // Changes apply only on the version they were decided on.
    let version = row.version;
    let (row, events) = store
        .change_group(
            &gid,
            version,
            vec![GroupEdit::AddMembers(vec![(b.clone(), GroupRole::Member)])],
            now(),
            vec![changed(&owner), changed(&a), changed(&b)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (row.member_count, row.version, events.len()),
        (3, version + 1, 3)
    );
    assert!(matches!(
        store
            .change_group(
                &gid,
                version,
                vec![GroupEdit::AllMuted(true)],
                now(),
                vec![]
            )
            .await,
        Err(StoreError::Conflict(GROUP_CHANGED))
    ));
    let b_member = store
        .group_member(&gid, &b)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("b is a member"));
    assert_eq!((b_member.since, b_member.display_name.as_str()), (1, "G-B"));

    // Read counts come from read positions; b joined after message 1.
    assert_eq!(
        store
            .read_count(&conv, 1, &owner)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        (0, 1)
    );
    let second = store
        .append_group_message(group_message("gm2", &owner, &gid, None))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(receivers(&second), vec!["g-a", "g-b", "g-owner"]);
    store
        .mark_read(&a, &conv, 2, vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store
            .read_count(&conv, 2, &owner)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        (1, 2)
    );
    assert_eq!(
        store
            .read_count(&conv, 1, &owner)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        (1, 1)
    );

    // Roles, mutes, profile.
    let until = now() + time::Duration::hours(1);
    let (row, _) = store
        .change_group(
            &gid,
            row.version,
            vec![
                GroupEdit::SetRole(a.clone(), GroupRole::Admin),
                GroupEdit::Mute(b.clone(), Some(until)),
                GroupEdit::AllMuted(true),
                GroupEdit::Profile {
                    name: Some("Renamed".into()),
                    notice: Some("Be nice".into()),
                    join_policy: Some(JoinPolicy::Open),
                },
            ],
            now(),
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            row.name.as_str(),
            row.notice.as_str(),
            row.join_policy,
            row.all_muted
        ),
        ("Renamed", "Be nice", JoinPolicy::Open, true)
    );
    let members = store
        .group_members(&gid)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let role_of = |u: &UserId| members.iter().find(|m| &m.user_id == u).map(|m| m.role);
    assert_eq!(role_of(&a), Some(GroupRole::Admin));
    assert!(
        members
            .iter()
            .any(|m| m.user_id == b && m.muted_until.is_some())
    );
    assert!(matches!(
        store
            .change_group(
                &gid,
                row.version,
                vec![GroupEdit::Mute(uid("g-nobody"), None)],
                now(),
                vec![]
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    let mine = store
        .user_groups(&b)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (&mine[0].0.group_id, mine[0].1.role),
        (&gid, GroupRole::Member)
    );

    // A removed member receives nothing more and loses the conversation.
    let (row, _) = store
        .change_group(
            &gid,
            row.version,
            vec![GroupEdit::RemoveMembers(vec![a.clone()])],
            now(),
            vec![changed(&a)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(row.member_count, 2);
    let third = store
        .append_group_message(group_message("gm3", &owner, &gid, None))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(receivers(&third), vec!["g-b", "g-owner"]);
    let listed = store
        .conversations(&a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(listed.iter().all(|c| c.conversation_id != conv));

    // Dissolving ends the group; the id stays taken.
    store
        .change_group(
            &gid,
            row.version,
            vec![GroupEdit::Dissolve],
            now(),
            vec![changed(&owner), changed(&b)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        store
            .group(&gid)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );
    assert!(
        store
            .group_members(&gid)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
    assert!(
        store
            .user_groups(&b)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
    assert!(matches!(
        store
            .append_group_message(group_message("gm4", &owner, &gid, None))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .create_group(
                new_group(&gid),
                vec![(owner.clone(), GroupRole::Owner)],
                vec![]
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
}
