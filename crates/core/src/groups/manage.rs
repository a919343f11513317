//! Group management, for users (`/v1/groups…`, with the rights of their
//! role) and for business systems (`/v1/admin/groups…`, with the owner's):
//! create, read, update, members, roles, mutes, ownership transfer, join
//! and dissolve. Creation writes a new group directly; every other change
//! is a decision handed to the change engine.

use unimsg_proto::groups::{
    AdminCreateGroupRequest, CreateGroupRequest, GroupAction, GroupChanged, GroupDetail, GroupInfo,
    GroupList, GroupMember, GroupRole, JoinPolicy, MemberUpdate, UpdateGroupRequest,
};
use unimsg_proto::{GroupId, UserId};
use unimsg_store::{GroupEdit, GroupRow, NewGroup, StoreError};

use super::engine::{ChangePlan, EVENT_USER_IDS};
use super::{GroupActor, distinct, forbidden, group_not_found, info, member_info};
use crate::Core;
use crate::auth::AuthContext;
use crate::error::{CoreError, Result};

const MAX_NAME_CHARS: usize = 100;
const MAX_NOTICE_CHARS: usize = 2000;

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

impl Core {
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
        let change = self.change(owner, &data, now)?;
        let effects = change.effects(&all.iter().map(|(u, _)| u).collect::<Vec<_>>());
        let new = NewGroup {
            group_id,
            name,
            notice,
            join_policy,
            created_at: now,
        };
        let (row, events) =
            self.store
                .create_group(new, all, effects)
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
}
