//! Bodies of the group routes (`/v1/groups…`, `/v1/admin/groups…`) and the
//! data of the `group.changed` inbox event.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{ConversationId, GroupId, UserId};

wire_names! {
    /// Who may join a group.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum JoinPolicy {
        /// Anyone who knows the id joins with `POST /v1/groups/{id}/join`.
        Open = "open",
        /// Only members added by the owner or an admin.
        #[default]
        Invite = "invite",
    }
}

wire_names! {
    /// A member's role. The owner (one per group) transfers ownership, names
    /// admins and dissolves; admins manage ordinary members; members chat.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum GroupRole {
        Member = "member",
        Admin = "admin",
        Owner = "owner",
    }
}

/// A group as its members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupInfo {
    pub group_id: GroupId,
    /// The group's chat: `g:{group_id}`.
    pub conversation_id: ConversationId,
    pub name: String,
    pub notice: String,
    pub join_policy: JoinPolicy,
    /// Whether ordinary members are muted (the owner and admins never are).
    pub all_muted: bool,
    /// The owner (absent only if the owner's account was deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<UserId>,
    pub member_count: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The caller's role; absent when the caller is not a member, and in
    /// events and admin answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<GroupRole>,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupMember {
    pub user_id: UserId,
    pub display_name: String,
    pub role: GroupRole,
    /// Until when the member may not send; absent when not muted.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub muted_until: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
}

/// `GET /v1/groups/{id}`: the group and its members (members are listed
/// to members only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupDetail {
    pub group: GroupInfo,
    pub members: Vec<GroupMember>,
}

/// `GET /v1/groups`: the caller's groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupList {
    pub groups: Vec<GroupInfo>,
}

/// `POST /v1/groups`: the caller becomes the owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    /// 1 to 100 characters.
    pub name: String,
    /// Up to 2,000 characters.
    #[serde(default)]
    pub notice: String,
    /// `invite` by default.
    #[serde(default)]
    pub join_policy: JoinPolicy,
    /// The first members besides the creator.
    #[serde(default)]
    pub members: Vec<UserId>,
}

/// `PATCH /v1/groups/{id}`: what is given changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateGroupRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_policy: Option<JoinPolicy>,
}

/// `POST /v1/groups/{id}/members`, `POST /v1/admin/groups/{id}/members`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddMembersRequest {
    /// 1 to `groups.max_members` users; members already in are skipped.
    pub user_ids: Vec<UserId>,
}

/// `PUT /v1/groups/{id}/members/{user_id}`: a role change, a mute, or both.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MemberUpdate {
    /// `admin` or `member` (owner only; ownership moves with `transfer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<GroupRole>,
    /// Mutes the member until this time; `null` lifts the mute; absent
    /// leaves it as it is.
    #[serde(default, with = "patch_mute", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub muted_until: Option<Mute>,
}

/// The mute a [`MemberUpdate`] sets: until a time (`muted_until` is a
/// time), or lifted (`muted_until` is `null`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mute {
    Until(OffsetDateTime),
    Lift,
}

impl Mute {
    /// Until when the member is muted; `None` when the mute is lifted.
    pub fn until(self) -> Option<OffsetDateTime> {
        match self {
            Mute::Until(t) => Some(t),
            Mute::Lift => None,
        }
    }
}

/// `muted_until` of a patch: absent (unchanged, `None`), `null` (lifted)
/// or a time.
mod patch_mute {
    use serde::{Deserializer, Serializer};

    use super::Mute;

    pub(super) fn serialize<S: Serializer>(value: &Option<Mute>, s: S) -> Result<S::Ok, S::Error> {
        let until = value.and_then(Mute::until);
        time::serde::rfc3339::option::serialize(&until, s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mute>, D::Error> {
        let until = time::serde::rfc3339::option::deserialize(d)?;
        Ok(Some(until.map_or(Mute::Lift, Mute::Until)))
    }
}

/// `POST /v1/groups/{id}/transfer`: the owner hands the group to a member
/// and becomes an ordinary member.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub user_id: UserId,
}

/// `POST /v1/groups/{id}/mute`: mutes or unmutes every ordinary member.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GroupMuteRequest {
    pub all_muted: bool,
}

/// `POST /v1/admin/groups`: a group created by a business system.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdminCreateGroupRequest {
    /// The business system's own id for the group; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    pub name: String,
    #[serde(default)]
    pub notice: String,
    #[serde(default)]
    pub join_policy: JoinPolicy,
    pub owner: UserId,
    /// Members besides the owner.
    #[serde(default)]
    pub members: Vec<UserId>,
}

/// What a `group.changed` event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum GroupAction {
    Created,
    MembersAdded,
    MemberJoined,
    MemberLeft,
    MembersRemoved,
    RoleChanged,
    OwnerTransferred,
    MemberMuted,
    GroupMuted,
    Updated,
    Dissolved,
}

/// The data of a `group.changed` inbox event. It goes to every member
/// after the change and to the members it removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupChanged {
    pub group_id: GroupId,
    pub action: GroupAction,
    /// The user who acted; absent when a business system acted through
    /// the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<UserId>,
    /// The admin account, when a business system acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// The members the change is about, at most 50 (`count` is the total:
    /// fetch the group when it is larger).
    #[serde(default)]
    pub user_ids: Vec<UserId>,
    #[serde(default)]
    pub count: u64,
    /// For `role_changed` and `owner_transferred`: the new role of the
    /// first of `user_ids`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<GroupRole>,
    /// For `member_muted`: until when (absent when the mute was lifted).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub muted_until: Option<OffsetDateTime>,
    /// The group after the change.
    pub group: GroupInfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_update_tells_absent_from_null() {
        let absent: MemberUpdate = serde_json::from_str(r#"{"role":"admin"}"#).unwrap();
        assert_eq!(absent.muted_until, None);
        assert_eq!(absent.role, Some(GroupRole::Admin));
        let cleared: MemberUpdate = serde_json::from_str(r#"{"muted_until":null}"#).unwrap();
        assert_eq!(cleared.muted_until, Some(Mute::Lift));
        let set: MemberUpdate =
            serde_json::from_str(r#"{"muted_until":"2030-01-01T00:00:00Z"}"#).unwrap();
        assert!(matches!(set.muted_until, Some(Mute::Until(_))));
        assert!(serde_json::from_str::<MemberUpdate>(r#"{"mute":1}"#).is_err());
    }

    #[test]
    fn recipient_is_exactly_one_of_user_and_group() {
        use crate::api::Recipient;
        let user: Recipient = serde_json::from_str(r#"{"user":"alice"}"#).unwrap();
        assert!(matches!(user, Recipient::User(_)));
        let group: Recipient = serde_json::from_str(r#"{"group":"g_1"}"#).unwrap();
        assert!(matches!(group, Recipient::Group(_)));
        for bad in [
            r#"{}"#,
            r#"{"user":"a","group":"g"}"#,
            r#"{"group":"g","user":"a"}"#,
            r#"{"channel":"c"}"#,
            r#"{"user":"a b"}"#,
            r#""alice""#,
        ] {
            assert!(
                serde_json::from_str::<Recipient>(bad).is_err(),
                "{bad} was accepted"
            );
        }
        assert_eq!(
            serde_json::to_string(&user).unwrap_or_default(),
            r#"{"user":"alice"}"#
        );
    }
}
