//! Checks of the `Webhooks` trait: endpoints, the outbox's fan-out,
//! claims under leases, results, retries, replays and pruning.

use time::Duration;
use unimsg_proto::hooks::{DeliveryState, EventFilter, HookEventType};

use super::*;
use crate::{AttemptOutcome, AttemptResult, HookDraft, WebhookChange, WebhookRow};

fn endpoint(id: &str, events: EventFilter) -> WebhookRow {
    WebhookRow {
        webhook_id: id.into(),
        url: format!("http://receiver.test/{id}"),
        events,
        description: String::new(),
        enabled: true,
        include_content: false,
        secret: Sealed {
            key_id: 1,
            nonce: vec![1; 12],
            ciphertext: id.as_bytes().to_vec(),
        },
        previous_secret: None,
        failing_since: None,
        disabled_reason: None,
        created_at: now(),
        updated_at: now(),
    }
}

fn draft(id: &str, kind: HookEventType) -> HookDraft {
    HookDraft {
        event_id: id.into(),
        kind,
        data: format!(r#"{{"id":"{id}"}}"#),
        message_id: None,
        at: now(),
    }
}

fn ids(claimed: &[crate::ClaimedDelivery]) -> Vec<&str> {
    claimed.iter().map(|c| c.event.event_id.as_str()).collect()
}

pub async fn webhook_endpoints(store: Arc<dyn Store>) {
    let only = EventFilter::Only(vec![
        HookEventType::UserLogin,
        HookEventType::GroupMemberAdded,
    ]);
    store
        .create_webhook(endpoint("w1", only.clone()))
        .await
        .unwrap();
    assert!(matches!(
        store.create_webhook(endpoint("w1", EventFilter::All)).await,
        Err(StoreError::Conflict(_))
    ));
    let got = store.webhook("w1").await.unwrap().unwrap();
    assert_eq!(got.events, only);
    assert!(got.enabled);
    assert_eq!(got.secret.ciphertext, b"w1");

    let later = now() + Duration::seconds(5);
    let changed = store
        .update_webhook(
            "w1",
            WebhookChange {
                events: Some(EventFilter::All),
                enabled: Some(false),
                ..WebhookChange::default()
            },
            later,
        )
        .await
        .unwrap();
    assert_eq!(changed.events, EventFilter::All);
    assert!(!changed.enabled);
    assert_eq!(
        changed.url, "http://receiver.test/w1",
        "unchanged fields stay"
    );

    let secret = Sealed {
        key_id: 2,
        nonce: vec![2; 12],
        ciphertext: b"new".to_vec(),
    };
    let until = later + Duration::hours(24);
    let rotated = store
        .rotate_webhook_secret("w1", secret, until, later)
        .await
        .unwrap();
    assert_eq!(rotated.secret.ciphertext, b"new");
    let (previous, previous_until) = rotated.previous_secret.unwrap();
    assert_eq!(previous.ciphertext, b"w1");
    assert_eq!(crate::sql::ms(previous_until), crate::sql::ms(until));

    assert!(matches!(
        store
            .update_webhook("nope", WebhookChange::default(), later)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store.delete_webhook("w1").await.unwrap());
    assert!(!store.delete_webhook("w1").await.unwrap());
    assert!(store.webhooks().await.unwrap().is_empty());
}

pub async fn outbox_fan_out_and_claims(store: Arc<dyn Store>) {
    // Nothing subscribes yet: the event is not written at all.
    store
        .enqueue_hook_events(vec![draft("evt_0", HookEventType::UserLogin)])
        .await
        .unwrap();
    store
        .create_webhook(endpoint("all", EventFilter::All))
        .await
        .unwrap();
    store
        .create_webhook(endpoint(
            "logins",
            EventFilter::Only(vec![HookEventType::UserLogin]),
        ))
        .await
        .unwrap();
    store
        .enqueue_hook_events(vec![
            draft("evt_1", HookEventType::UserLogin),
            draft("evt_2", HookEventType::UserCreated),
            draft("evt_3", HookEventType::UserLogin),
        ])
        .await
        .unwrap();
    let mut pending = store.pending_deliveries().await.unwrap();
    pending.sort();
    assert_eq!(pending, vec![("all".into(), 3), ("logins".into(), 2)]);

    // A claim takes due rows in order and hides them for its lease.
    let t = now();
    let lease = t + Duration::seconds(30);
    let first = store.claim_deliveries("all", t, lease, 2).await.unwrap();
    assert_eq!(ids(&first), ["evt_1", "evt_2"]);
    assert!(first.iter().all(|c| c.attempt == 1));
    let second = store.claim_deliveries("all", t, lease, 10).await.unwrap();
    assert_eq!(
        ids(&second),
        ["evt_3"],
        "claimed rows are not handed out twice"
    );
    assert!(
        store
            .claim_deliveries("all", t, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // After the lease they are due again (a node died mid-attempt).
    let again = store
        .claim_deliveries("all", lease, lease + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(ids(&again), ["evt_1", "evt_2", "evt_3"]);
    assert!(again.iter().all(|c| c.attempt == 2));

    let failing = store
        .finish_deliveries(
            "all",
            vec![AttemptResult {
                event_seq: again[0].event.seq,
                attempt: again[0].attempt,
                outcome: AttemptOutcome::RetryAt(lease + Duration::seconds(5)),
                status: Some(500),
                error: None,
            }],
            lease,
        )
        .await
        .unwrap();
    assert!(failing.is_some(), "a failure marks the endpoint failing");
    let healthy = store
        .finish_deliveries(
            "all",
            vec![
                AttemptResult {
                    event_seq: again[1].event.seq,
                    attempt: again[1].attempt,
                    outcome: AttemptOutcome::Succeeded,
                    status: Some(204),
                    error: None,
                },
                AttemptResult {
                    event_seq: again[2].event.seq,
                    attempt: again[2].attempt,
                    outcome: AttemptOutcome::Failed,
                    status: None,
                    error: Some("timed out".into()),
                },
            ],
            lease,
        )
        .await
        .unwrap();
    assert!(healthy.is_none(), "a success clears it");

    let listed = store.deliveries("all", None, None, 10).await.unwrap();
    let states: Vec<_> = listed
        .iter()
        .map(|d| (d.event.event_id.as_str(), d.state))
        .collect();
    assert_eq!(
        states,
        [
            ("evt_3", DeliveryState::Failed),
            ("evt_2", DeliveryState::Succeeded),
            ("evt_1", DeliveryState::Pending),
        ]
    );
    assert_eq!(listed[2].last_status, Some(500));
    assert_eq!(listed[0].last_error.as_deref(), Some("timed out"));
    let failed = store
        .deliveries("all", Some(DeliveryState::Failed), None, 10)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    let older = store
        .deliveries("all", None, Some(listed[0].event.seq), 1)
        .await
        .unwrap();
    assert_eq!(
        older[0].event.event_id, "evt_2",
        "paging goes to older events"
    );

    // A disabled endpoint gets no new events; its pending ones stay.
    store.disable_webhook("logins", "failing", t).await.unwrap();
    store
        .enqueue_hook_events(vec![draft("evt_4", HookEventType::UserLogin)])
        .await
        .unwrap();
    let logins = store.deliveries("logins", None, None, 10).await.unwrap();
    assert_eq!(logins.len(), 2);
    assert_eq!(
        store
            .webhook("logins")
            .await
            .unwrap()
            .unwrap()
            .disabled_reason
            .as_deref(),
        Some("failing")
    );
}

pub async fn outbox_retries_replays_and_pruning(store: Arc<dyn Store>) {
    store
        .create_webhook(endpoint(
            "w",
            EventFilter::Only(vec![HookEventType::UserLogin]),
        ))
        .await
        .unwrap();
    store
        .enqueue_hook_events(vec![draft("evt_a", HookEventType::UserLogin)])
        .await
        .unwrap();
    store
        .enqueue_hook_event_for("w", draft("evt_test", HookEventType::WebhookTest))
        .await
        .unwrap();
    let t = now();
    let claimed = store
        .claim_deliveries("w", t, t + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(
        ids(&claimed),
        ["evt_a", "evt_test"],
        "a test event reaches its endpoint"
    );
    let results = claimed
        .iter()
        .map(|c| AttemptResult {
            event_seq: c.event.seq,
            attempt: c.attempt,
            outcome: AttemptOutcome::Failed,
            status: Some(410),
            error: None,
        })
        .collect();
    store.finish_deliveries("w", results, t).await.unwrap();

    assert!(store.retry_delivery("w", "evt_a", t).await.unwrap());
    assert!(!store.retry_delivery("w", "evt_unknown", t).await.unwrap());
    let retried = store
        .claim_deliveries("w", t, t + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(ids(&retried), ["evt_a"]);
    assert_eq!(retried[0].attempt, 1, "a retry starts a new series");

    let queued = store
        .replay_deliveries("w", t - Duration::minutes(1), t)
        .await
        .unwrap();
    assert_eq!(queued, 2, "both events are queued again");
    assert!(matches!(
        store.replay_deliveries("nope", t, t).await,
        Err(StoreError::NotFound(_))
    ));
    // The attempt claimed before the replay ends late: its result is not
    // recorded over the replay.
    store
        .finish_deliveries(
            "w",
            vec![AttemptResult {
                event_seq: retried[0].event.seq,
                attempt: retried[0].attempt,
                outcome: AttemptOutcome::RetryAt(t + Duration::hours(1)),
                status: Some(500),
                error: None,
            }],
            t,
        )
        .await
        .unwrap();

    // Pruning drops ended deliveries and the events left without any.
    let claimed = store
        .claim_deliveries("w", t, t + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(
        ids(&claimed),
        ["evt_a", "evt_test"],
        "both are due after the replay"
    );
    let results = claimed
        .iter()
        .map(|c| AttemptResult {
            event_seq: c.event.seq,
            attempt: c.attempt,
            outcome: AttemptOutcome::Succeeded,
            status: Some(200),
            error: None,
        })
        .collect();
    store.finish_deliveries("w", results, t).await.unwrap();
    let gone = store
        .prune_hook_events(t + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(gone, 2);
    assert!(
        store
            .deliveries("w", None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The events of the endpoint `all`'s deliveries, in outbox order.
async fn outbox(store: &dyn Store) -> Vec<String> {
    let mut rows = store.deliveries("all", None, None, 100).await.unwrap();
    rows.reverse();
    rows.into_iter().map(|r| r.event.event_id).collect()
}

fn hooks(id: &str, kind: HookEventType) -> Vec<HookDraft> {
    vec![draft(id, kind)]
}

/// Every write that takes webhook events writes them in its transaction
/// when the change takes effect, and not when it fails or changes nothing.
pub async fn changes_write_their_outbox_events(store: Arc<dyn Store>) {
    let store = &*store;
    store
        .create_webhook(endpoint("all", EventFilter::All))
        .await
        .unwrap();
    let new_user = |name: &str, hook: &str| NewUser {
        user_id: uid(name),
        username: format!("{name}-name"),
        display_name: name.into(),
        password_hash: None,
        created_at: now(),
        hook: Some(draft(hook, HookEventType::UserCreated)),
    };
    let a = store
        .create_user(new_user("oa", "evt_created"))
        .await
        .unwrap()
        .user_id;
    assert!(matches!(
        store.create_user(new_user("oa", "evt_taken")).await,
        Err(StoreError::Conflict(_))
    ));
    let imported = store
        .import_users(vec![
            new_user("ob", "evt_imported"),
            new_user("oa", "evt_clash"),
        ])
        .await
        .unwrap();
    assert!(imported[0].is_ok() && imported[1].is_err());
    let b = uid("ob");
    assert_eq!(outbox(store).await, ["evt_created", "evt_imported"]);

    // Relationships: only a change that took effect.
    let block = |id: &str| Effects {
        events: Vec::new(),
        hooks: hooks(id, HookEventType::BlockAdded),
    };
    let (changed, _) = store
        .set_block(&a, &b, BlockChange::Block, now(), block("evt_block"))
        .await
        .unwrap();
    assert!(changed);
    let (changed, _) = store
        .set_block(&a, &b, BlockChange::Block, now(), block("evt_block_again"))
        .await
        .unwrap();
    assert!(!changed);
    assert!(matches!(
        store
            .set_block(
                &a,
                &uid("o-nobody"),
                BlockChange::Block,
                now(),
                block("evt_nobody")
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    let friends = |id: &str| Effects {
        events: Vec::new(),
        hooks: hooks(id, HookEventType::FriendAdded),
    };
    let (made, _) = store
        .set_friendship(
            &a,
            &b,
            FriendshipChange::Befriend,
            now(),
            friends("evt_friends"),
        )
        .await
        .unwrap();
    assert!(made);
    let (made, _) = store
        .set_friendship(
            &a,
            &b,
            FriendshipChange::Befriend,
            now(),
            friends("evt_twice"),
        )
        .await
        .unwrap();
    assert!(!made);

    // Sessions: the login with its session, a revocation once.
    store
        .open_session(
            new_session("o-s1", &a),
            refresh(61),
            Vec::new(),
            hooks("evt_login", HookEventType::UserLogin),
        )
        .await
        .unwrap();
    let revoke = |id: &str| Revocation {
        hooks: hooks(id, HookEventType::SessionRevoked),
        ..revocation("o-s1")
    };
    assert_eq!(
        store
            .revoke_sessions(vec![revoke("evt_revoked")])
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .revoke_sessions(vec![revoke("evt_revoked_again")])
            .await
            .unwrap()
            .is_empty()
    );

    // The inbox: an ack or a read that moves, a recall once.
    store
        .append_message(message("om1", &a, &b, None), vec![a.clone(), b.clone()])
        .await
        .unwrap();
    let delivered = |id: &str| hooks(id, HookEventType::MessageDelivered);
    assert_eq!(
        store.ack(&b, Seq(1), delivered("evt_acked")).await.unwrap(),
        Seq(1)
    );
    assert_eq!(
        store
            .ack(&b, Seq(1), delivered("evt_acked_again"))
            .await
            .unwrap(),
        Seq(1)
    );
    let conv = ConversationId::direct(&a, &b);
    let read = |id: &str| Effects {
        events: Vec::new(),
        hooks: hooks(id, HookEventType::MessageRead),
    };
    store
        .mark_read(&b, &conv, 1, read("evt_read"))
        .await
        .unwrap();
    store
        .mark_read(&b, &conv, 1, read("evt_read_again"))
        .await
        .unwrap();
    let recalled = |id: &str| Effects {
        events: Vec::new(),
        hooks: hooks(id, HookEventType::MessageRecalled),
    };
    let om1 = MessageId::parse("om1").unwrap();
    store
        .recall(&om1, now(), recalled("evt_recalled"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .recall(&om1, now(), recalled("evt_recalled_again"))
            .await,
        Err(StoreError::Conflict(_))
    ));

    // Users: updated and deleted with their events; an unknown one not.
    let update = UserUpdate {
        display_name: Some("OA".into()),
        password_hash: None,
        status: None,
    };
    store
        .update_user(
            &a,
            update.clone(),
            hooks("evt_updated", HookEventType::UserUpdated),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .update_user(
                &uid("o-nobody"),
                update,
                hooks("evt_ghost", HookEventType::UserUpdated)
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    store
        .delete_user(&b, hooks("evt_deleted", HookEventType::UserDeleted))
        .await
        .unwrap();

    assert_eq!(
        outbox(store).await,
        [
            "evt_created",
            "evt_imported",
            "evt_block",
            "evt_friends",
            "evt_login",
            "evt_revoked",
            "evt_acked",
            "evt_read",
            "evt_recalled",
            "evt_updated",
            "evt_deleted",
        ]
    );
}
