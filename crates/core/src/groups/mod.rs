//! Groups: creation, members, roles, mutes, profile, ownership transfer and
//! dissolution, for users (`/v1/groups…`) and business systems
//! (`/v1/admin/groups…`); group messages, their read counts and history.
//!
//! A change is decided on a snapshot of the group (its version and
//! members) and written, with the `group.changed` events it causes, only
//! if the group is still at that version; otherwise it is decided again on
//! a fresh snapshot. So permissions, the member limit and the audience of
//! the events always match the state the change applies to. Committed
//! changes go through [`Core::changed`], the one path of relationship and
//! group changes.
//!
//! A group message is stored once; the store appends one `message.new` to
//! each member's inbox (each with that member's own seq) in the same
//! transaction, resolving the members there, and the event is rendered
//! once for all of them. Read state is one position per member
//! (`conversation_members.read_upto`): a read count is a sum over
//! positions, never a row per message and member.

use std::collections::{BTreeSet, HashMap};

use time::OffsetDateTime;
use unimsg_proto::api::{
    ConversationSummary, HistoryPage, MessageKind, ReadCount, ReadResponse, Recipient, SendResponse,
};
use unimsg_proto::event::{MessageRecalledData, ReceiptReadData};
use unimsg_proto::groups::{
    AdminCreateGroupRequest, CreateGroupRequest, GroupAction, GroupChanged, GroupDetail, GroupInfo,
    GroupList, GroupMember, GroupRole, JoinPolicy, MemberUpdate, UpdateGroupRequest,
};
use unimsg_proto::{ConversationId, EventType, GroupId, MessageId, Seq, UserId};
use unimsg_store::{
    AppendOutcome, ConversationState, EventDraft, GROUP_CHANGED, GroupEdit, GroupRow, MemberRow,
    NewGroup, NewMessage, StoreError, StoredMessage,
};

use crate::Core;
use crate::auth::AuthContext;
use crate::changes::Change;
use crate::error::{CoreError, Result};
use crate::render;

const MAX_NAME_CHARS: usize = 100;
const MAX_NOTICE_CHARS: usize = 2000;
/// Member ids listed in one `group.changed` event; the event goes to every
/// member, so it stays small however many members a change touches.
const EVENT_USER_IDS: usize = 50;
/// Fresh decisions after a concurrent change before giving up (409).
const ATTEMPTS: usize = 8;

/// Who changes a group: a user, with the rights of their role, or a
/// business system through the admin API.
#[derive(Debug, Clone, Copy)]
pub enum GroupActor<'a> {
    User(&'a UserId),
    Admin(&'a str),
}

/// A group and its members, as one decision sees them.
struct Snapshot {
    group: GroupRow,
    members: Vec<MemberRow>,
}

impl Snapshot {
    fn member(&self, user: &UserId) -> Option<&MemberRow> {
        self.members.iter().find(|m| &m.user_id == user)
    }

    /// The actor's role; `Forbidden` for a user who is not a member. A
    /// business system has the owner's rights.
    fn rank(&self, actor: GroupActor<'_>) -> Result<GroupRole> {
        match actor {
            GroupActor::Admin(_) => Ok(GroupRole::Owner),
            GroupActor::User(user) => self.member(user).map(|m| m.role).ok_or_else(not_a_member),
        }
    }
}

/// What a decision asks the store to do, and what its event says.
struct ChangePlan {
    action: GroupAction,
    edits: Vec<GroupEdit>,
    /// The members the change is about.
    subjects: Vec<UserId>,
    role: Option<GroupRole>,
    muted_until: Option<OffsetDateTime>,
}

impl ChangePlan {
    fn new(action: GroupAction, edits: Vec<GroupEdit>, subjects: Vec<UserId>) -> Self {
        Self {
            action,
            edits,
            subjects,
            role: None,
            muted_until: None,
        }
    }
}

fn not_a_member() -> CoreError {
    CoreError::Forbidden("you are not a member of this group".into())
}

fn group_not_found() -> CoreError {
    CoreError::NotFound("group not found".into())
}

fn forbidden(why: &str) -> CoreError {
    CoreError::Forbidden(why.into())
}

fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(CoreError::BadRequest(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_owned())
}

fn check_notice(notice: &str) -> Result<String> {
    if notice.chars().count() > MAX_NOTICE_CHARS {
        return Err(CoreError::BadRequest(format!(
            "notice must be at most {MAX_NOTICE_CHARS} characters"
        )));
    }
    Ok(notice.to_owned())
}

fn new_group_id() -> Result<GroupId> {
    GroupId::parse(format!("g_{}", uuid::Uuid::now_v7().simple()))
        .map_err(|e| CoreError::Internal(e.to_string()))
}

/// The wire form of a group; `role` is the caller's.
fn info(group: &GroupRow, role: Option<GroupRole>) -> GroupInfo {
    GroupInfo {
        conversation_id: ConversationId::group(&group.group_id),
        group_id: group.group_id.clone(),
        name: group.name.clone(),
        notice: group.notice.clone(),
        join_policy: group.join_policy,
        all_muted: group.all_muted,
        owner: group.owner.clone(),
        member_count: group.member_count,
        created_at: group.created_at,
        role,
    }
}

fn member_info(m: MemberRow, now: OffsetDateTime) -> GroupMember {
    GroupMember {
        user_id: m.user_id,
        display_name: m.display_name,
        role: m.role,
        // An expired mute is no mute.
        muted_until: m.muted_until.filter(|t| *t > now),
        joined_at: m.joined_at,
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

/// Distinct users, in order, without `except`.
fn distinct(users: Vec<UserId>, except: Option<&UserId>) -> Vec<UserId> {
    let mut seen = BTreeSet::new();
    users
        .into_iter()
        .filter(|u| Some(u) != except && seen.insert(u.clone()))
        .collect()
}

impl Core {
    async fn snapshot(&self, id: &GroupId) -> Result<Snapshot> {
        let group = self.store.group(id).await?.ok_or_else(group_not_found)?;
        let members = self.store.group_members(id).await?;
        Ok(Snapshot { group, members })
    }

    /// The maximum of members, for a message that says so.
    fn room_for(&self, current: usize, added: usize) -> Result<()> {
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
    async fn change_group<F>(
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
            let change = Change::new(&change_actor, &data, now)?;
            let drafts = change.drafts(&audience.iter().collect::<Vec<_>>());
            match self
                .store
                .change_group(id, snapshot.group.version, plan.edits, now, drafts)
                .await
            {
                Ok((row, events)) => {
                    self.changed(change, &events).await;
                    return Ok(row);
                }
                Err(StoreError::Conflict(what)) if what == GROUP_CHANGED => continue,
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

    /// Creates a group owned by `owner`; `group.created_at` is now.
    async fn create(
        &self,
        group: NewGroup,
        owner: &UserId,
        members: Vec<UserId>,
        actor: GroupActor<'_>,
    ) -> Result<GroupRow> {
        let NewGroup {
            group_id,
            name,
            notice,
            join_policy,
            created_at: now,
        } = group;
        let name = check_name(&name)?;
        let notice = check_notice(&notice)?;
        let members = distinct(members, Some(owner));
        self.room_for(1, members.len())?;
        if let GroupActor::User(me) = actor {
            self.may_add_to_group(me, &members).await?;
        }
        let mut all = vec![(owner.clone(), GroupRole::Owner)];
        all.extend(members.iter().map(|u| (u.clone(), GroupRole::Member)));
        let count = all.len() as u64;
        let row = GroupRow {
            group_id: group_id.clone(),
            name: name.clone(),
            notice: notice.clone(),
            join_policy,
            all_muted: false,
            owner: Some(owner.clone()),
            member_count: count,
            version: 1,
            created_at: now,
        };
        let data = GroupChanged {
            group_id: group_id.clone(),
            action: GroupAction::Created,
            actor: match actor {
                GroupActor::User(u) => Some(u.clone()),
                GroupActor::Admin(_) => None,
            },
            admin: match actor {
                GroupActor::User(_) => None,
                GroupActor::Admin(a) => Some(a.to_owned()),
            },
            count,
            user_ids: all
                .iter()
                .take(EVENT_USER_IDS)
                .map(|(u, _)| u.clone())
                .collect(),
            role: None,
            muted_until: None,
            group: info(&row, None),
        };
        let change = Change::new(owner, &data, now)?;
        let drafts = change.drafts(&all.iter().map(|(u, _)| u).collect::<Vec<_>>());
        let new = NewGroup {
            group_id,
            name,
            notice,
            join_policy,
            created_at: now,
        };
        let (row, events) =
            self.store
                .create_group(new, all, drafts)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound(_) => CoreError::NotFound("user not found".into()),
                    StoreError::Conflict(_) => CoreError::Conflict("this group_id exists".into()),
                    e => e.into(),
                })?;
        self.changed(change, &events).await;
        metrics::counter!("unimsg_groups_created_total").increment(1);
        Ok(row)
    }

    /// `POST /v1/groups`: the caller becomes the owner.
    pub async fn create_group(
        &self,
        auth: &AuthContext,
        req: CreateGroupRequest,
    ) -> Result<GroupInfo> {
        let group = NewGroup {
            group_id: new_group_id()?,
            name: req.name,
            notice: req.notice,
            join_policy: req.join_policy,
            created_at: self.clock.now(),
        };
        let me = &auth.user_id;
        let row = self
            .create(group, me, req.members, GroupActor::User(me))
            .await?;
        Ok(info(&row, Some(GroupRole::Owner)))
    }

    /// `POST /v1/admin/groups`
    pub async fn admin_create_group(
        &self,
        admin_id: &str,
        req: AdminCreateGroupRequest,
    ) -> Result<GroupDetail> {
        let id = match req.group_id {
            Some(id) => id,
            None => new_group_id()?,
        };
        let group = NewGroup {
            group_id: id,
            name: req.name,
            notice: req.notice,
            join_policy: req.join_policy,
            created_at: self.clock.now(),
        };
        let row = self
            .create(group, &req.owner, req.members, GroupActor::Admin(admin_id))
            .await?;
        self.admin_group(&row.group_id).await
    }

    /// `GET /v1/groups`: the caller's groups with their role.
    pub async fn my_groups(&self, auth: &AuthContext) -> Result<GroupList> {
        let groups = self
            .store
            .user_groups(&auth.user_id)
            .await?
            .into_iter()
            .map(|(g, m)| info(&g, Some(m.role)))
            .collect();
        Ok(GroupList { groups })
    }

    /// `GET /v1/groups/{id}`: members see the group and its members; others
    /// see an open group without its members, and nothing of the rest.
    pub async fn group_detail(&self, auth: &AuthContext, id: &GroupId) -> Result<GroupDetail> {
        let group = self.store.group(id).await?.ok_or_else(group_not_found)?;
        let now = self.clock.now();
        match self.store.group_member(id, &auth.user_id).await? {
            Some(me) => {
                let members = self.store.group_members(id).await?;
                Ok(GroupDetail {
                    group: info(&group, Some(me.role)),
                    members: members.into_iter().map(|m| member_info(m, now)).collect(),
                })
            }
            None if group.join_policy == JoinPolicy::Open => Ok(GroupDetail {
                group: info(&group, None),
                members: Vec::new(),
            }),
            None => Err(group_not_found()),
        }
    }

    /// `GET /v1/admin/groups/{id}`
    pub async fn admin_group(&self, id: &GroupId) -> Result<GroupDetail> {
        let snapshot = self.snapshot(id).await?;
        let now = self.clock.now();
        Ok(GroupDetail {
            group: info(&snapshot.group, None),
            members: snapshot
                .members
                .into_iter()
                .map(|m| member_info(m, now))
                .collect(),
        })
    }

    /// `PATCH /v1/groups/{id}`: owner and admins.
    pub async fn update_group(
        &self,
        auth: &AuthContext,
        id: &GroupId,
        req: UpdateGroupRequest,
    ) -> Result<GroupInfo> {
        let name = req.name.as_deref().map(check_name).transpose()?;
        let notice = req.notice.as_deref().map(check_notice).transpose()?;
        let actor = GroupActor::User(&auth.user_id);
        let row = self
            .change_group(id, actor, |s, _| {
                if s.rank(actor)? < GroupRole::Admin {
                    return Err(forbidden("only the owner and admins edit the group"));
                }
                let edit = GroupEdit::Profile {
                    name: name.clone(),
                    notice: notice.clone(),
                    join_policy: req.join_policy,
                };
                let nothing = name.is_none() && notice.is_none() && req.join_policy.is_none();
                let edits = if nothing { Vec::new() } else { vec![edit] };
                Ok(ChangePlan::new(GroupAction::Updated, edits, Vec::new()))
            })
            .await?;
        self.my_view(auth, row).await
    }

    /// The group as the caller sees it after a change.
    async fn my_view(&self, auth: &AuthContext, row: GroupRow) -> Result<GroupInfo> {
        let role = self
            .store
            .group_member(&row.group_id, &auth.user_id)
            .await?
            .map(|m| m.role);
        Ok(info(&row, role))
    }

    /// `POST /v1/groups/{id}/members` (owner and admins; any member of an
    /// open group) and `POST /v1/admin/groups/{id}/members`. Members
    /// already in are skipped.
    pub async fn add_group_members(
        &self,
        actor: GroupActor<'_>,
        id: &GroupId,
        users: Vec<UserId>,
    ) -> Result<GroupInfo> {
        if users.is_empty() {
            return Err(CoreError::BadRequest("give 1 or more user_ids".into()));
        }
        let users = distinct(users, None);
        self.room_for(0, users.len())?;
        if let GroupActor::User(me) = actor {
            self.may_add_to_group(me, &users).await?;
        }
        let row = self
            .change_group(id, actor, |s, _| {
                let rank = s.rank(actor)?;
                if rank < GroupRole::Admin && s.group.join_policy != JoinPolicy::Open {
                    return Err(forbidden(
                        "only the owner and admins add members to this group",
                    ));
                }
                let new: Vec<UserId> = users
                    .iter()
                    .filter(|u| s.member(u).is_none())
                    .cloned()
                    .collect();
                self.room_for(s.members.len(), new.len())?;
                let edits = if new.is_empty() {
                    Vec::new()
                } else {
                    vec![GroupEdit::AddMembers(
                        new.iter().map(|u| (u.clone(), GroupRole::Member)).collect(),
                    )]
                };
                Ok(ChangePlan::new(GroupAction::MembersAdded, edits, new))
            })
            .await?;
        self.view_for(actor, row).await
    }

    async fn view_for(&self, actor: GroupActor<'_>, row: GroupRow) -> Result<GroupInfo> {
        match actor {
            GroupActor::User(user) => {
                let role = self
                    .store
                    .group_member(&row.group_id, user)
                    .await?
                    .map(|m| m.role);
                Ok(info(&row, role))
            }
            GroupActor::Admin(_) => Ok(info(&row, None)),
        }
    }

    /// `POST /v1/groups/{id}/join`: open groups only.
    pub async fn join_group(&self, auth: &AuthContext, id: &GroupId) -> Result<GroupInfo> {
        let me = &auth.user_id;
        let row = self
            .change_group(id, GroupActor::User(me), |s, _| {
                if s.member(me).is_some() {
                    return Ok(ChangePlan::new(
                        GroupAction::MemberJoined,
                        Vec::new(),
                        Vec::new(),
                    ));
                }
                if s.group.join_policy != JoinPolicy::Open {
                    return Err(forbidden("this group is joined by invitation only"));
                }
                self.room_for(s.members.len(), 1)?;
                Ok(ChangePlan::new(
                    GroupAction::MemberJoined,
                    vec![GroupEdit::AddMembers(vec![(me.clone(), GroupRole::Member)])],
                    vec![me.clone()],
                ))
            })
            .await?;
        self.my_view(auth, row).await
    }

    /// `DELETE /v1/groups/{id}/members/{user_id}` (leaving when it is the
    /// caller) and `DELETE /v1/admin/groups/{id}/members/{user_id}`. The
    /// owner cannot leave or be removed: ownership is transferred first.
    pub async fn remove_group_member(
        &self,
        actor: GroupActor<'_>,
        id: &GroupId,
        target: &UserId,
    ) -> Result<()> {
        self.change_group(id, actor, |s, _| {
            let leaving = matches!(actor, GroupActor::User(u) if u == target);
            let rank = s.rank(actor)?;
            let Some(member) = s.member(target) else {
                return Err(CoreError::NotFound("not a member of this group".into()));
            };
            if member.role == GroupRole::Owner {
                return Err(forbidden(
                    "the owner cannot leave or be removed; transfer ownership or dissolve the group",
                ));
            }
            if !leaving && rank <= member.role {
                return Err(forbidden(
                    "only the owner removes admins, and admins remove ordinary members",
                ));
            }
            let action = if leaving {
                GroupAction::MemberLeft
            } else {
                GroupAction::MembersRemoved
            };
            Ok(ChangePlan::new(
                action,
                vec![GroupEdit::RemoveMembers(vec![target.clone()])],
                vec![target.clone()],
            ))
        })
        .await?;
        Ok(())
    }

    /// `PUT /v1/groups/{id}/members/{user_id}`: roles (owner only) and
    /// mutes (by a higher role: the owner mutes admins and members, admins
    /// mute members).
    pub async fn update_group_member(
        &self,
        auth: &AuthContext,
        id: &GroupId,
        target: &UserId,
        req: MemberUpdate,
    ) -> Result<GroupMember> {
        if req.role == Some(GroupRole::Owner) {
            return Err(CoreError::BadRequest(
                "ownership moves with POST /v1/groups/{id}/transfer".into(),
            ));
        }
        if req.role.is_none() && req.muted_until.is_none() {
            return Err(CoreError::BadRequest(
                "give role, muted_until or both".into(),
            ));
        }
        let actor = GroupActor::User(&auth.user_id);
        self.change_group(id, actor, |s, now| {
            let rank = s.rank(actor)?;
            let Some(member) = s.member(target) else {
                return Err(CoreError::NotFound("not a member of this group".into()));
            };
            if member.role == GroupRole::Owner {
                return Err(forbidden("the owner's role and voice are not changed"));
            }
            let mut plan =
                ChangePlan::new(GroupAction::MemberMuted, Vec::new(), vec![target.clone()]);
            if let Some(role) = req.role {
                if rank != GroupRole::Owner {
                    return Err(forbidden("only the owner names and removes admins"));
                }
                if role != member.role {
                    plan.edits.push(GroupEdit::SetRole(target.clone(), role));
                    plan.action = GroupAction::RoleChanged;
                    plan.role = Some(role);
                }
            }
            if let Some(mute) = req.muted_until {
                if rank <= member.role {
                    return Err(forbidden(
                        "only the owner mutes admins, and admins mute ordinary members",
                    ));
                }
                // A time already past lifts the mute.
                let until = mute.until().filter(|t| *t > now);
                plan.edits.push(GroupEdit::Mute(target.clone(), until));
                plan.muted_until = until;
                if plan.role.is_none() {
                    plan.action = GroupAction::MemberMuted;
                }
            }
            Ok(plan)
        })
        .await?;
        let member = self
            .store
            .group_member(id, target)
            .await?
            .ok_or_else(|| CoreError::NotFound("not a member of this group".into()))?;
        Ok(member_info(member, self.clock.now()))
    }

    /// `POST /v1/groups/{id}/transfer`: the owner hands the group to a
    /// member and becomes an ordinary member.
    pub async fn transfer_group(
        &self,
        auth: &AuthContext,
        id: &GroupId,
        to: &UserId,
    ) -> Result<GroupInfo> {
        let me = &auth.user_id;
        let actor = GroupActor::User(me);
        let row = self
            .change_group(id, actor, |s, _| {
                if s.rank(actor)? != GroupRole::Owner {
                    return Err(forbidden("only the owner transfers the group"));
                }
                if to == me {
                    return Err(CoreError::BadRequest("you own the group already".into()));
                }
                if s.member(to).is_none() {
                    return Err(CoreError::NotFound("not a member of this group".into()));
                }
                let mut plan = ChangePlan::new(
                    GroupAction::OwnerTransferred,
                    vec![
                        GroupEdit::SetRole(to.clone(), GroupRole::Owner),
                        GroupEdit::SetRole(me.clone(), GroupRole::Member),
                    ],
                    vec![to.clone(), me.clone()],
                );
                plan.role = Some(GroupRole::Owner);
                Ok(plan)
            })
            .await?;
        self.my_view(auth, row).await
    }

    /// `POST /v1/groups/{id}/mute`: owner and admins mute or unmute every
    /// ordinary member.
    pub async fn mute_group(
        &self,
        auth: &AuthContext,
        id: &GroupId,
        all_muted: bool,
    ) -> Result<GroupInfo> {
        let actor = GroupActor::User(&auth.user_id);
        let row = self
            .change_group(id, actor, |s, _| {
                if s.rank(actor)? < GroupRole::Admin {
                    return Err(forbidden("only the owner and admins mute the group"));
                }
                let edits = if s.group.all_muted == all_muted {
                    Vec::new()
                } else {
                    vec![GroupEdit::AllMuted(all_muted)]
                };
                Ok(ChangePlan::new(GroupAction::GroupMuted, edits, Vec::new()))
            })
            .await?;
        self.my_view(auth, row).await
    }

    /// `DELETE /v1/groups/{id}` (owner) and `DELETE /v1/admin/groups/{id}`:
    /// every member gets `group.changed` (`dissolved`) and loses the
    /// conversation.
    pub async fn dissolve_group(&self, actor: GroupActor<'_>, id: &GroupId) -> Result<()> {
        self.change_group(id, actor, |s, _| {
            if s.rank(actor)? != GroupRole::Owner {
                return Err(forbidden("only the owner dissolves the group"));
            }
            Ok(ChangePlan::new(
                GroupAction::Dissolved,
                vec![GroupEdit::Dissolve],
                Vec::new(),
            ))
        })
        .await?;
        Ok(())
    }

    /// The members of a group, for a notification to all of them.
    pub(crate) async fn group_audience(&self, id: &GroupId) -> Result<Vec<UserId>> {
        let snapshot = self.snapshot(id).await?;
        Ok(snapshot.members.into_iter().map(|m| m.user_id).collect())
    }

    /// `POST /v1/messages` to `{group}`: one stored message, one
    /// `message.new` in every member's inbox, in one transaction.
    pub(crate) async fn send_to_group(
        &self,
        auth: &AuthContext,
        group: &GroupId,
        kind: MessageKind,
        content: &[u8],
        client_msg_id: Option<String>,
    ) -> Result<SendResponse> {
        let row = self.store.group(group).await?.ok_or_else(group_not_found)?;
        let me = self
            .store
            .group_member(group, &auth.user_id)
            .await?
            .ok_or_else(not_a_member)?;
        let now = self.clock.now();
        if me.muted_until.is_some_and(|t| t > now) {
            return Err(forbidden("you are muted in this group"));
        }
        if row.all_muted && me.role == GroupRole::Member {
            return Err(forbidden("the group is muted"));
        }
        // The fan-out counts against the sender: one inbox row per other member.
        self.check_send_limits(&auth.user_id, row.member_count.saturating_sub(1))
            .await?;
        let message_id = MessageId::parse(uuid::Uuid::now_v7().simple().to_string())
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let sealed = self
            .keyring
            .seal(content, message_id.as_str().as_bytes())
            .map_err(|e| CoreError::Internal(format!("cannot seal content: {e}")))?;
        let message = NewMessage {
            message_id,
            conversation_id: ConversationId::group(group),
            sender: auth.user_id.clone(),
            recipient: Recipient::Group(group.clone()),
            kind: kind.as_str().to_owned(),
            content: sealed,
            client_msg_id,
            created_at: now,
        };
        let outcome = self
            .store
            .append_group_message(message)
            .await
            .map_err(|e| match e {
                // Removed (or the group dissolved) since the check above.
                StoreError::NotFound(_) => not_a_member(),
                e => e.into(),
            })?;
        match outcome {
            AppendOutcome::Created { message, events } => {
                let started = tokio::time::Instant::now();
                let data = serde_json::to_value(render::message(&self.keyring, &message)?)
                    .map_err(|e| CoreError::Internal(format!("cannot render a message: {e}")))?;
                let seq = events
                    .iter()
                    .find(|e| e.user_id == auth.user_id)
                    .map_or(Seq::ZERO, |e| e.seq);
                let deliveries = render::shared_deliveries(
                    EventType::MessageNew,
                    message.created_at,
                    &data,
                    events.into_iter().map(|e| (e.user_id, e.seq)),
                )?;
                if let Err(error) = self.bus.publish(deliveries).await {
                    tracing::warn!(%error, "live delivery failed; clients will catch up by sync");
                }
                metrics::histogram!("unimsg_group_fanout_publish_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("unimsg_messages_sent_total").increment(1);
                metrics::counter!("unimsg_group_messages_total").increment(1);
                Ok(crate::messaging::sent(message, seq))
            }
            AppendOutcome::Duplicate(original) => self.resent(&auth.user_id, original).await,
        }
    }

    /// The caller's membership of a group conversation (`NotFound` for a
    /// non-member: the conversation is not theirs).
    async fn group_membership(&self, auth: &AuthContext, group: &GroupId) -> Result<MemberRow> {
        self.store
            .group_member(group, &auth.user_id)
            .await?
            .ok_or_else(|| CoreError::NotFound("conversation not found".into()))
    }

    /// `POST /v1/conversations/g:{id}/read`: moves the caller's read
    /// position. Only the caller's own inbox gets `receipt.read` (for
    /// their other devices): a group's senders read counts instead of
    /// receiving an event per reader.
    pub(crate) async fn mark_group_read(
        &self,
        auth: &AuthContext,
        conversation: &ConversationId,
        group: &GroupId,
        message_id: &MessageId,
    ) -> Result<ReadResponse> {
        self.group_membership(auth, group).await?;
        let message = self.message_in(conversation, message_id).await?;
        let now = self.clock.now();
        let data = render::event_json(&ReceiptReadData {
            conversation_id: conversation.clone(),
            user_id: auth.user_id.clone(),
            message_id: message.message_id.clone(),
            read_upto: message.conv_seq,
        })?;
        let drafts = vec![EventDraft {
            user_id: auth.user_id.clone(),
            kind: EventType::ReceiptRead,
            data,
            at: now,
        }];
        let (read_upto, events) = self
            .store
            .mark_read(&auth.user_id, conversation, message.conv_seq, drafts)
            .await?;
        self.publish(&events).await;
        Ok(ReadResponse {
            conversation_id: conversation.clone(),
            read_upto,
        })
    }

    async fn message_in(
        &self,
        conversation: &ConversationId,
        message_id: &MessageId,
    ) -> Result<StoredMessage> {
        self.store
            .message(message_id)
            .await?
            .filter(|m| &m.conversation_id == conversation)
            .ok_or_else(|| CoreError::NotFound("message not found in this conversation".into()))
    }

    /// `GET /v1/conversations/{id}/messages/{message_id}/reads`: for the
    /// sender, how many of the members who received the message have read
    /// it (direct and group conversations alike).
    pub async fn read_count(
        &self,
        auth: &AuthContext,
        conversation: &ConversationId,
        message_id: &MessageId,
    ) -> Result<ReadCount> {
        match (conversation.group_id(), conversation.direct_members()) {
            (Some(group), _) => {
                self.group_membership(auth, &group).await?;
            }
            (None, Some((a, b))) if a == auth.user_id || b == auth.user_id => {}
            _ => return Err(CoreError::NotFound("conversation not found".into())),
        }
        let message = self.message_in(conversation, message_id).await?;
        if message.sender != auth.user_id {
            return Err(forbidden("only the sender sees who read a message"));
        }
        let (read, members) = self
            .store
            .read_count(conversation, message.conv_seq, &auth.user_id)
            .await?;
        Ok(ReadCount {
            message_id: message.message_id,
            conversation_id: conversation.clone(),
            read,
            members,
        })
    }

    /// History of a group conversation: a member sees the messages sent
    /// since they joined.
    pub(crate) async fn group_history(
        &self,
        auth: &AuthContext,
        conversation: &ConversationId,
        group: &GroupId,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<HistoryPage> {
        let me = self.group_membership(auth, group).await?;
        let limit = limit.unwrap_or(50).clamp(1, self.config.messaging.max_page);
        let stored = self.store.history(conversation, before, limit).await?;
        let full = stored.len() == limit as usize;
        let messages = stored
            .iter()
            .filter(|m| m.conv_seq > me.since)
            .map(|m| render::message(&self.keyring, m))
            .collect::<Result<Vec<_>>>()?;
        let next_before = match messages.last() {
            Some(m) if full && messages.len() == limit as usize && m.conv_seq > me.since + 1 => {
                Some(m.conv_seq)
            }
            _ => None,
        };
        Ok(HistoryPage {
            messages,
            next_before,
        })
    }

    /// Recall of a group message: the sender, within the window; every
    /// member gets `message.recalled`.
    pub(crate) async fn recall_group_message(
        &self,
        auth: &AuthContext,
        group: &GroupId,
        message: StoredMessage,
    ) -> Result<()> {
        self.group_membership(auth, group).await?;
        if message.sender != auth.user_id {
            return Err(forbidden("only the sender can recall a message"));
        }
        let now = self.clock.now();
        let window = time::Duration::seconds(self.config.messaging.recall_window_secs as i64);
        if now - message.created_at >= window {
            return Err(CoreError::Gone("the recall window has passed".into()));
        }
        let data = render::event_json(&MessageRecalledData {
            message_id: message.message_id.clone(),
            conversation_id: message.conversation_id.clone(),
            by: auth.user_id.clone(),
        })?;
        let drafts = self
            .store
            .group_members(group)
            .await?
            .into_iter()
            .map(|m| EventDraft {
                user_id: m.user_id,
                kind: EventType::MessageRecalled,
                data: data.clone(),
                at: now,
            })
            .collect();
        let events = self.store.recall(&message.message_id, now, drafts).await?;
        self.publish(&events).await;
        Ok(())
    }

    /// One group conversation of the caller's list; `groups` caches the
    /// caller's groups across the list. `None` when the caller left.
    pub(crate) async fn group_summary(
        &self,
        me: &UserId,
        group: &GroupId,
        state: ConversationState,
        groups: &mut Option<HashMap<GroupId, (GroupRow, MemberRow)>>,
    ) -> Result<Option<ConversationSummary>> {
        if groups.is_none() {
            let mine = self.store.user_groups(me).await?;
            *groups = Some(
                mine.into_iter()
                    .map(|(g, m)| (g.group_id.clone(), (g, m)))
                    .collect(),
            );
        }
        let Some((row, member)) = groups.as_ref().and_then(|g| g.get(group)) else {
            return Ok(None);
        };
        let last_message = state
            .last_message
            .as_ref()
            .filter(|m| m.conv_seq > member.since)
            .map(|m| render::message(&self.keyring, m))
            .transpose()?;
        Ok(Some(ConversationSummary {
            conversation_id: state.conversation_id,
            peer: None,
            peer_display_name: String::new(),
            group_id: Some(group.clone()),
            group_name: Some(row.name.clone()),
            last_message,
            unread: state.unread,
            read_upto: state.read_upto,
            peer_read_upto: 0,
        }))
    }
}

#[cfg(test)]
mod tests {
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
