//! Checks of the `Groups` trait.

use super::*;

pub async fn groups(store: Arc<dyn Store>) {
    let store = &*store;
    let owner = user(store, "g-owner").await;
    let a = user(store, "g-a").await;
    let b = user(store, "g-b").await;
    let gid = GroupId::parse("g_suite").unwrap();
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
            Effects::events(vec![changed(&owner), changed(&a)]),
        )
        .await
        .unwrap();
    assert_eq!(
        (row.member_count, row.owner.as_ref(), events.len()),
        (2, Some(&owner), 2)
    );
    assert!(matches!(
        store
            .create_group(
                new_group(&gid),
                vec![(b.clone(), GroupRole::Owner)],
                Effects::default()
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    // An unknown member undoes the whole creation.
    let other = GroupId::parse("g_other").unwrap();
    assert!(matches!(
        store
            .create_group(
                new_group(&other),
                vec![(uid("g-nobody"), GroupRole::Owner)],
                Effects::default()
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store.group(&other).await.unwrap().is_none());
    // The group's conversation is listed before its first message.
    let listed = store.conversations(&a).await.unwrap();
    assert!(
        listed
            .iter()
            .any(|c| c.conversation_id == conv && c.last_message.is_none())
    );

    // One message, one event per member, the sender included; idempotent.
    let first = store
        .append_group_message(group_message("gm1", &owner, &gid, Some("c1")))
        .await
        .unwrap();
    assert_eq!(receivers(&first), vec!["g-a", "g-owner"]);
    let AppendOutcome::Created { message: m1, .. } = &first else {
        panic!("not created");
    };
    assert_eq!(m1.recipient, Recipient::Group(gid.clone()));
    let again = store
        .append_group_message(group_message("gm1-retry", &owner, &gid, Some("c1")))
        .await
        .unwrap();
    assert!(matches!(again, AppendOutcome::Duplicate(ref m) if m.message_id == m1.message_id));
    let stored = store
        .message(&m1.message_id)
        .await
        .unwrap()
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
            Effects::events(vec![changed(&owner), changed(&a), changed(&b)]),
        )
        .await
        .unwrap();
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
                Effects::default()
            )
            .await,
        Err(StoreError::Stale)
    ));
    let b_member = store
        .group_member(&gid, &b)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("b is a member"));
    assert_eq!((b_member.since, b_member.display_name.as_str()), (1, "G-B"));

    // Read counts come from read positions; b joined after message 1.
    assert_eq!(store.read_count(&conv, 1, &owner).await.unwrap(), (0, 1));
    let second = store
        .append_group_message(group_message("gm2", &owner, &gid, None))
        .await
        .unwrap();
    assert_eq!(receivers(&second), vec!["g-a", "g-b", "g-owner"]);
    store
        .mark_read(&a, &conv, 2, Effects::default())
        .await
        .unwrap();
    assert_eq!(store.read_count(&conv, 2, &owner).await.unwrap(), (1, 2));
    assert_eq!(store.read_count(&conv, 1, &owner).await.unwrap(), (1, 1));

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
            Effects::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.name.as_str(),
            row.notice.as_str(),
            row.join_policy,
            row.all_muted
        ),
        ("Renamed", "Be nice", JoinPolicy::Open, true)
    );
    let members = store.group_members(&gid).await.unwrap();
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
                Effects::default()
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    let mine = store.user_groups(&b).await.unwrap();
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
            Effects::events(vec![changed(&a)]),
        )
        .await
        .unwrap();
    assert_eq!(row.member_count, 2);
    let third = store
        .append_group_message(group_message("gm3", &owner, &gid, None))
        .await
        .unwrap();
    assert_eq!(receivers(&third), vec!["g-b", "g-owner"]);
    let listed = store.conversations(&a).await.unwrap();
    assert!(listed.iter().all(|c| c.conversation_id != conv));

    // Dissolving ends the group; the id stays taken.
    store
        .change_group(
            &gid,
            row.version,
            vec![GroupEdit::Dissolve],
            now(),
            Effects::events(vec![changed(&owner), changed(&b)]),
        )
        .await
        .unwrap();
    assert!(store.group(&gid).await.unwrap().is_none());
    assert!(store.group_members(&gid).await.unwrap().is_empty());
    assert!(store.user_groups(&b).await.unwrap().is_empty());
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
                Effects::default()
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
}
