//! Groups: creation, members, roles, mutes, profile, ownership transfer and
//! dissolution, for users (`/v1/groups…`) and business systems
//! (`/v1/admin/groups…`); group messages, their read counts and history.
//!
//! A change is decided on a snapshot of the group (its version and
//! members) and written, with the `group.changed` events it causes, only
//! if the group is still at that version; otherwise it is decided again on
//! a fresh snapshot. So permissions, the member limit and the audience of
//! the events always match the state the change applies to. Committed
//! changes go through [`Core::changed`](crate::Core::changed), the one path
//! of relationship and group changes.
//!
//! A group message is stored once; the store appends one `message.new` to
//! each member's inbox (each with that member's own seq) in the same
//! transaction, resolving the members there, and the event is rendered
//! once for all of them. Read state is one position per member
//! (`conversation_members.read_upto`): a read count is a sum over
//! positions, never a row per message and member.
//!
//! This module holds what the others share: [`GroupActor`], the errors
//! every part gives and the wire forms of a group and a member.
//! - `engine`: the change engine — snapshot, pure decision to a
//!   `ChangePlan`, versioned write with its events, `Core::changed`, and
//!   a fresh decision when the version moved.
//! - `manage`: group management for users and the admin API — create,
//!   read, update, members, roles, mutes, transfer, join, dissolve.
//! - `messaging`: group messages — sends (mutes, membership), read
//!   positions and counts, history from the member's join, recall, and
//!   the group entries of the conversation list.

mod engine;
mod manage;
mod messaging;

use std::collections::BTreeSet;

use time::OffsetDateTime;
use unimsg_proto::groups::{GroupInfo, GroupMember, GroupRole};
use unimsg_proto::{ConversationId, UserId};
use unimsg_store::{GroupRow, MemberRow};

use crate::error::CoreError;

/// Who changes a group: a user, with the rights of their role, or a
/// business system through the admin API.
#[derive(Debug, Clone, Copy)]
pub enum GroupActor<'a> {
    User(&'a UserId),
    Admin(&'a str),
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

/// Distinct users, in order, without `except`.
fn distinct(users: Vec<UserId>, except: Option<&UserId>) -> Vec<UserId> {
    let mut seen = BTreeSet::new();
    users
        .into_iter()
        .filter(|u| Some(u) != except && seen.insert(u.clone()))
        .collect()
}
