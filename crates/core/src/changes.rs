//! The one path every relationship and group change takes.
//!
//! A change is written by the store together with the inbox events it
//! causes (one transaction), then [`Core::changed`] publishes those events
//! live and turns the change into its webhook event (`friend.added`,
//! `group.member_added`, …), so the friend and group code knows nothing of
//! webhooks.

use serde::Serialize;
use time::OffsetDateTime;
use unimsg_proto::event::{BlockChangedData, FriendChangedData, FriendRequestData, FriendState};
use unimsg_proto::groups::{GroupAction, GroupChanged};
use unimsg_proto::hooks::{HookEventType, RelationData};
use unimsg_proto::{EventData, EventType, UserId};
use unimsg_store::{EventDraft, StoredEvent};

use crate::Core;
use crate::error::{CoreError, Result};

/// A relationship or group change.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The inbox event type it produces (`friend.request`, `friend.changed`,
    /// `block.changed`, `group.changed`).
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Who acted.
    pub actor: UserId,
    /// The event's data, as the inbox event carries it.
    pub data: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl Change {
    /// A change by `actor` whose event carries `data` (its type follows).
    pub fn new<T: EventData>(actor: &UserId, data: &T, at: OffsetDateTime) -> Result<Self> {
        let data = serde_json::to_value(data)
            .map_err(|e| CoreError::Internal(format!("cannot encode a change: {e}")))?;
        Ok(Self {
            kind: T::TYPE,
            actor: actor.clone(),
            data,
            at,
        })
    }

    /// The inbox events this change puts in each of `users`' inboxes.
    pub fn drafts(&self, users: &[&UserId]) -> Vec<EventDraft> {
        let data = self.data.to_string();
        users
            .iter()
            .map(|u| EventDraft {
                user_id: (*u).clone(),
                kind: self.kind,
                data: data.clone(),
                at: self.at,
            })
            .collect()
    }
}

impl Core {
    /// Publishes the committed inbox events of a change and puts its
    /// webhook event in the outbox.
    pub(crate) async fn changed(&self, change: Change, events: &[StoredEvent]) {
        self.publish(events).await;
        metrics::counter!("unimsg_changes_total", "type" => change.kind.as_str()).increment(1);
        self.emit_change(&change).await;
    }

    /// The webhook event of a relationship or group change, if any.
    async fn emit_change(&self, change: &Change) {
        let data = change.data.clone();
        match change.kind {
            EventType::FriendRequest => {
                if let Ok(d) = serde_json::from_value::<FriendRequestData>(data) {
                    let relation = RelationData {
                        user_id: d.from,
                        other_id: d.to,
                    };
                    self.emit(HookEventType::FriendRequested, &relation).await;
                }
            }
            EventType::FriendChanged => {
                let Ok(d) = serde_json::from_value::<FriendChangedData>(data) else {
                    return;
                };
                // A change of one side's tags or remark is not a new friendship.
                if d.tags.is_some() || d.remark.is_some() {
                    return;
                }
                let kind = match d.state {
                    FriendState::Friends => HookEventType::FriendAdded,
                    FriendState::Removed => HookEventType::FriendRemoved,
                    FriendState::Declined => return,
                };
                let [a, b] = d.users;
                let (user_id, other_id) = if b == change.actor { (b, a) } else { (a, b) };
                self.emit(kind, &RelationData { user_id, other_id }).await;
            }
            EventType::BlockChanged => {
                if let Ok(d) = serde_json::from_value::<BlockChangedData>(data) {
                    let kind = if d.blocked {
                        HookEventType::BlockAdded
                    } else {
                        HookEventType::BlockRemoved
                    };
                    let relation = RelationData {
                        user_id: change.actor.clone(),
                        other_id: d.user_id,
                    };
                    self.emit(kind, &relation).await;
                }
            }
            EventType::GroupChanged => {
                if let Ok(d) = serde_json::from_value::<GroupChanged>(data) {
                    let kind = match d.action {
                        GroupAction::Created => HookEventType::GroupCreated,
                        GroupAction::MembersAdded | GroupAction::MemberJoined => {
                            HookEventType::GroupMemberAdded
                        }
                        GroupAction::MemberLeft | GroupAction::MembersRemoved => {
                            HookEventType::GroupMemberRemoved
                        }
                        GroupAction::Dissolved => HookEventType::GroupDissolved,
                        GroupAction::RoleChanged
                        | GroupAction::OwnerTransferred
                        | GroupAction::MemberMuted
                        | GroupAction::GroupMuted
                        | GroupAction::Updated => HookEventType::GroupUpdated,
                    };
                    self.emit(kind, &d).await;
                }
            }
            _ => {}
        }
    }
}
