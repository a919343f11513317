//! The change engine: a change to an existing group is decided by a pure
//! function on a [`Snapshot`] (the group at one version and its members)
//! into a [`ChangePlan`], written with its `group.changed` events only if
//! the group is still at that version, and announced through
//! `Core::changed`; when the version moved it is decided again on a fresh
//! snapshot, up to [`ATTEMPTS`] times.

use std::collections::BTreeSet;

use time::OffsetDateTime;
use unimsg_proto::groups::{GroupAction, GroupChanged, GroupRole};
use unimsg_proto::{GroupId, UserId};
use unimsg_store::{GroupEdit, GroupRow, MemberRow, StoreError};

use super::{GroupActor, distinct, group_not_found, info, not_a_member};
use crate::Core;
use crate::error::{CoreError, Result};

/// Member ids listed in one `group.changed` event; the event goes to every
/// member, so it stays small however many members a change touches.
pub(super) const EVENT_USER_IDS: usize = 50;
/// Fresh decisions after a concurrent change before giving up (409).
const ATTEMPTS: usize = 8;

/// A group and its members, as one decision sees them.
pub(super) struct Snapshot {
    pub(super) group: GroupRow,
    pub(super) members: Vec<MemberRow>,
}

impl Snapshot {
    pub(super) fn member(&self, user: &UserId) -> Option<&MemberRow> {
        self.members.iter().find(|m| &m.user_id == user)
    }

    /// The actor's role; `Forbidden` for a user who is not a member. A
    /// business system has the owner's rights.
    pub(super) fn rank(&self, actor: GroupActor<'_>) -> Result<GroupRole> {
        match actor {
            GroupActor::Admin(_) => Ok(GroupRole::Owner),
            GroupActor::User(user) => self.member(user).map(|m| m.role).ok_or_else(not_a_member),
        }
    }
}

/// What a decision asks the store to do, and what its event says.
pub(super) struct ChangePlan {
    pub(super) action: GroupAction,
    pub(super) edits: Vec<GroupEdit>,
    /// The members the change is about.
    subjects: Vec<UserId>,
    pub(super) role: Option<GroupRole>,
    pub(super) muted_until: Option<OffsetDateTime>,
}

impl ChangePlan {
    pub(super) fn new(action: GroupAction, edits: Vec<GroupEdit>, subjects: Vec<UserId>) -> Self {
        Self {
            action,
            edits,
            subjects,
            role: None,
            muted_until: None,
        }
    }
}

/// The group as it will be after `edits`: the events are written in the
/// same transaction as the change, so they describe it in advance (the
/// version check guarantees the snapshot is what the edits apply to).
fn predict(snapshot: &Snapshot, edits: &[GroupEdit]) -> GroupRow {
    let mut group = snapshot.group.clone();
    let mut members: BTreeSet<&UserId> = snapshot.members.iter().map(|m| &m.user_id).collect();
    for edit in edits {
        match edit {
            GroupEdit::Profile {
                name,
                notice,
                join_policy,
            } => {
                if let Some(n) = name {
                    group.name = n.clone();
                }
                if let Some(n) = notice {
                    group.notice = n.clone();
                }
                if let Some(p) = join_policy {
                    group.join_policy = *p;
                }
            }
            GroupEdit::AllMuted(m) => group.all_muted = *m,
            GroupEdit::AddMembers(added) => members.extend(added.iter().map(|(u, _)| u)),
            GroupEdit::RemoveMembers(removed) => {
                for u in removed {
                    members.remove(u);
                }
            }
            GroupEdit::SetRole(user, GroupRole::Owner) => group.owner = Some(user.clone()),
            GroupEdit::SetRole(..) | GroupEdit::Mute(..) => {}
            GroupEdit::Dissolve => members.clear(),
        }
    }
    group.member_count = members.len() as u64;
    group.version += 1;
    group
}

impl Core {
    pub(super) async fn snapshot(&self, id: &GroupId) -> Result<Snapshot> {
        let group = self.store.group(id).await?.ok_or_else(group_not_found)?;
        let members = self.store.group_members(id).await?;
        Ok(Snapshot { group, members })
    }

    /// The maximum of members, for a message that says so.
    pub(super) fn room_for(&self, current: usize, added: usize) -> Result<()> {
        let max = self.config.groups.max_members;
        if current + added > max {
            return Err(CoreError::Conflict(format!(
                "the group would have {} members; the limit is {max}",
                current + added
            )));
        }
        Ok(())
    }

    /// Decides a change on a fresh snapshot, writes it if the group did not
    /// change meanwhile (deciding again otherwise), and announces it.
    /// `decide` returning no edits means there is nothing to do.
    pub(super) async fn change_group<F>(
        &self,
        id: &GroupId,
        actor: GroupActor<'_>,
        decide: F,
    ) -> Result<GroupRow>
    where
        F: Fn(&Snapshot, OffsetDateTime) -> Result<ChangePlan>,
    {
        for _ in 0..ATTEMPTS {
            let snapshot = self.snapshot(id).await?;
            let now = self.clock.now();
            let plan = decide(&snapshot, now)?;
            if plan.edits.is_empty() {
                return Ok(snapshot.group);
            }
            let after = predict(&snapshot, &plan.edits);
            // Everyone who was or becomes a member hears of it: removed
            // members learn of their own removal.
            let mut audience: Vec<UserId> =
                snapshot.members.iter().map(|m| m.user_id.clone()).collect();
            for edit in &plan.edits {
                if let GroupEdit::AddMembers(added) = edit {
                    audience.extend(added.iter().map(|(u, _)| u.clone()));
                }
            }
            let audience = distinct(audience, None);
            let (actor_user, admin) = match actor {
                GroupActor::User(u) => (Some(u.clone()), None),
                GroupActor::Admin(a) => (None, Some(a.to_owned())),
            };
            let data = GroupChanged {
                group_id: id.clone(),
                action: plan.action,
                actor: actor_user.clone(),
                admin,
                count: plan.subjects.len() as u64,
                user_ids: plan.subjects.iter().take(EVENT_USER_IDS).cloned().collect(),
                role: plan.role,
                muted_until: plan.muted_until,
                group: info(&after, None),
            };
            // `Change` names a user; for a business system that is the
            // owner the group belongs to (the data names the admin).
            let Some(change_actor) = actor_user
                .or_else(|| snapshot.group.owner.clone())
                .or_else(|| audience.first().cloned())
            else {
                return Err(CoreError::Internal("a group without members".into()));
            };
            let change = self.change(&change_actor, &data, now)?;
            let effects = change.effects(&audience.iter().collect::<Vec<_>>());
            match self
                .store
                .change_group(id, snapshot.group.version, plan.edits, now, effects)
                .await
            {
                Ok((row, events)) => {
                    self.changed(change, &events).await;
                    return Ok(row);
                }
                Err(StoreError::Stale) => continue,
                Err(StoreError::NotFound("user")) => {
                    return Err(CoreError::NotFound("user not found".into()));
                }
                Err(StoreError::NotFound(_)) => return Err(group_not_found()),
                Err(e) => return Err(e.into()),
            }
        }
        Err(CoreError::Conflict(
            "the group kept changing; try again".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use unimsg_proto::groups::JoinPolicy;

    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn snapshot(members: &[(&str, GroupRole)]) -> Snapshot {
        let now = OffsetDateTime::now_utc();
        Snapshot {
            group: GroupRow {
                group_id: GroupId::parse("g_t").unwrap(),
                name: "T".into(),
                notice: String::new(),
                join_policy: JoinPolicy::Invite,
                all_muted: false,
                owner: Some(uid(members[0].0)),
                member_count: members.len() as u64,
                version: 3,
                created_at: now,
            },
            members: members
                .iter()
                .map(|(u, role)| MemberRow {
                    user_id: uid(u),
                    display_name: String::new(),
                    role: *role,
                    muted_until: None,
                    joined_at: now,
                    since: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn predicted_group_follows_the_edits() {
        let s = snapshot(&[("o", GroupRole::Owner), ("a", GroupRole::Member)]);
        let after = predict(
            &s,
            &[
                GroupEdit::AddMembers(vec![
                    (uid("b"), GroupRole::Member),
                    (uid("a"), GroupRole::Member),
                ]),
                GroupEdit::RemoveMembers(vec![uid("o")]),
                GroupEdit::SetRole(uid("a"), GroupRole::Owner),
                GroupEdit::Profile {
                    name: Some("N".into()),
                    notice: None,
                    join_policy: Some(JoinPolicy::Open),
                },
            ],
        );
        assert_eq!(after.member_count, 2);
        assert_eq!(after.owner, Some(uid("a")));
        assert_eq!(
            (after.name.as_str(), after.join_policy),
            ("N", JoinPolicy::Open)
        );
        assert_eq!(after.version, 4);
        assert_eq!(predict(&s, &[GroupEdit::Dissolve]).member_count, 0);
    }

    #[test]
    fn ranks_order_member_admin_owner() {
        let s = snapshot(&[
            ("o", GroupRole::Owner),
            ("ad", GroupRole::Admin),
            ("m", GroupRole::Member),
        ]);
        let (o, ad, m, x) = (uid("o"), uid("ad"), uid("m"), uid("x"));
        assert_eq!(s.rank(GroupActor::User(&o)).ok(), Some(GroupRole::Owner));
        assert!(
            s.rank(GroupActor::User(&ad))
                .is_ok_and(|r| r > GroupRole::Member)
        );
        assert!(
            s.rank(GroupActor::User(&m))
                .is_ok_and(|r| r < GroupRole::Admin)
        );
        assert!(matches!(
            s.rank(GroupActor::User(&x)),
            Err(CoreError::Forbidden(_))
        ));
        assert_eq!(
            s.rank(GroupActor::Admin("ops")).ok(),
            Some(GroupRole::Owner)
        );
    }
}
