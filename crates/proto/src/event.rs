//! The inbox event: identical on WebSocket, SSE and `GET /v1/sync`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::groups::GroupChanged;
use crate::ids::{ConversationId, MessageId, Seq, SessionId, UserId};

wire_names! {
    /// What an inbox event means. The wire form is the dotted name.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum EventType {
        MessageNew = "message.new",
        MessageRecalled = "message.recalled",
        ReceiptRead = "receipt.read",
        SessionRevoked = "session.revoked",
        NotificationNew = "notification.new",
        BroadcastNew = "broadcast.new",
        FriendRequest = "friend.request",
        FriendChanged = "friend.changed",
        BlockChanged = "block.changed",
        GroupChanged = "group.changed",
    }
}

/// One inbox event: `{"seq": 42, "type": "message.new", "ts": "RFC 3339", "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub seq: Seq,
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    pub data: serde_json::Value,
}

/// The data of an event whose type follows from it: the type is named
/// once, here, instead of beside every place that builds the data.
pub trait EventData: Serialize {
    const TYPE: EventType;
}

wire_names! {
    /// Why a session was revoked: the `reason` of `session.revoked`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum RevokeReason {
        /// The device policy let a new sign-in replace this session.
        ReplacedByNewLogin = "replaced_by_new_login",
        /// A rotated refresh token was used again.
        RefreshTokenReuse = "refresh_token_reuse",
        Logout = "logout",
        /// Ended by the user from another session.
        EndedByUser = "ended_by_user",
        UserDisabled = "user_disabled",
        PasswordChanged = "password_changed",
        UserDeleted = "user_deleted",
        /// Forced logout through the admin API.
        AdminLogout = "admin_logout",
    }
}

/// `session.revoked`: the session's connections close after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionRevokedData {
    pub session_id: SessionId,
    /// Why: a [`RevokeReason`] (kept as text, so that a reason this
    /// version does not know still reads and still closes the session).
    pub reason: String,
}

impl EventData for SessionRevokedData {
    const TYPE: EventType = EventType::SessionRevoked;
}

/// `friend.request`: `from` asked `to` to be friends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FriendRequestData {
    pub from: UserId,
    pub to: UserId,
    /// The words of the request (`null` without any).
    pub message: Option<String>,
}

impl EventData for FriendRequestData {
    const TYPE: EventType = EventType::FriendRequest;
}

/// What became of a friendship.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FriendState {
    Friends,
    Removed,
    Declined,
}

/// `friend.changed`: the friendship of the two `users` changed. `tags`
/// and `remark` only when one side changed its own (only that side hears).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FriendChangedData {
    pub users: [UserId; 2],
    pub state: FriendState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
}

impl FriendChangedData {
    /// The change of state, without tags or remark.
    pub fn new(users: [UserId; 2], state: FriendState) -> Self {
        Self {
            users,
            state,
            tags: None,
            remark: None,
        }
    }
}

impl EventData for FriendChangedData {
    const TYPE: EventType = EventType::FriendChanged;
}

/// `block.changed`: the receiver blocked `user_id`, or stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockChangedData {
    pub user_id: UserId,
    pub blocked: bool,
}

impl EventData for BlockChangedData {
    const TYPE: EventType = EventType::BlockChanged;
}

/// `receipt.read`: `user_id` read the conversation up to `message_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReceiptReadData {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub message_id: MessageId,
    /// The `conv_seq` of that message.
    pub read_upto: u64,
}

impl EventData for ReceiptReadData {
    const TYPE: EventType = EventType::ReceiptRead;
}

/// `message.recalled`: the message's content is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageRecalledData {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub by: UserId,
}

impl EventData for MessageRecalledData {
    const TYPE: EventType = EventType::MessageRecalled;
}

/// The data of `notification.new` and of `broadcast.new`. The fields are
/// in the order a JSON object of them serializes (by name), so the data a
/// fan-out encodes once is byte for byte the data sync renders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotificationData {
    pub content: serde_json::Value,
    pub from: String,
    pub kind: String,
    pub message_id: MessageId,
    /// RFC 3339.
    pub sent_at: String,
}

impl EventData for GroupChanged {
    const TYPE: EventType = EventType::GroupChanged;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serde form, `as_str` and `parse` agree for every type.
    #[test]
    fn event_type_names_agree() {
        for kind in EventType::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
            let back: EventType = serde_json::from_str(&json).unwrap();
            assert_eq!(back, kind);
        }
        assert_eq!(EventType::parse("message"), None);
    }

    /// The other tables of wire names agree with serde too.
    #[test]
    fn other_wire_names_agree() {
        fn check<T>(all: &[T])
        where
            T: Copy + PartialEq + std::fmt::Debug + Serialize,
        {
            for v in all {
                let json = serde_json::to_string(v).unwrap();
                assert!(json.starts_with('"'), "{json}");
            }
        }
        check(&crate::admin::Scope::ALL);
        check(&crate::api::MessageKind::ALL);
        check(&crate::groups::GroupRole::ALL);
        check(&crate::groups::JoinPolicy::ALL);
        check(&RevokeReason::ALL);
        for s in crate::admin::Scope::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(crate::admin::Scope::parse(s.as_str()), Some(s));
        }
        for r in crate::groups::GroupRole::ALL {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(crate::groups::GroupRole::parse(r.as_str()), Some(r));
        }
        assert_eq!(
            crate::groups::JoinPolicy::default(),
            crate::groups::JoinPolicy::Invite
        );
        assert!(crate::groups::GroupRole::Owner > crate::groups::GroupRole::Admin);
    }
}
