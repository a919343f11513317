//! The inbox event: identical on WebSocket, SSE and `GET /v1/sync`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::Seq;

/// What an inbox event means. The wire form is the dotted name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventType {
    #[serde(rename = "message.new")]
    MessageNew,
    #[serde(rename = "message.recalled")]
    MessageRecalled,
    #[serde(rename = "receipt.read")]
    ReceiptRead,
    #[serde(rename = "session.revoked")]
    SessionRevoked,
    #[serde(rename = "notification.new")]
    NotificationNew,
    #[serde(rename = "broadcast.new")]
    BroadcastNew,
    #[serde(rename = "friend.request")]
    FriendRequest,
    #[serde(rename = "friend.changed")]
    FriendChanged,
    #[serde(rename = "block.changed")]
    BlockChanged,
    #[serde(rename = "group.changed")]
    GroupChanged,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MessageNew => "message.new",
            EventType::MessageRecalled => "message.recalled",
            EventType::ReceiptRead => "receipt.read",
            EventType::SessionRevoked => "session.revoked",
            EventType::NotificationNew => "notification.new",
            EventType::BroadcastNew => "broadcast.new",
            EventType::FriendRequest => "friend.request",
            EventType::FriendChanged => "friend.changed",
            EventType::BlockChanged => "block.changed",
            EventType::GroupChanged => "group.changed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "message.new" => EventType::MessageNew,
            "message.recalled" => EventType::MessageRecalled,
            "receipt.read" => EventType::ReceiptRead,
            "session.revoked" => EventType::SessionRevoked,
            "notification.new" => EventType::NotificationNew,
            "broadcast.new" => EventType::BroadcastNew,
            "friend.request" => EventType::FriendRequest,
            "friend.changed" => EventType::FriendChanged,
            "block.changed" => EventType::BlockChanged,
            "group.changed" => EventType::GroupChanged,
            _ => return None,
        })
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
