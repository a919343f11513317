//! The one path every relationship and group change takes.
//!
//! A change made with [`Core::change`] carries its webhook event
//! (`friend.added`, `group.member_added`, …); the store writes it together
//! with the inbox events it causes ([`Change::effects`], one transaction),
//! then [`Core::changed`] publishes those events live. The friend and
//! group code knows nothing of webhooks.

use serde::Serialize;
use time::OffsetDateTime;
use unimsg_proto::event::{BlockChangedData, FriendChangedData, FriendRequestData, FriendState};
use unimsg_proto::groups::{GroupAction, GroupChanged};
use unimsg_proto::hooks::{HookEventType, RelationData};
use unimsg_proto::{EventData, EventType, UserId};
use unimsg_store::{Effects, EventDraft, HookDraft, StoredEvent};

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
    /// Its webhook event, written in the change's transaction.
    #[serde(skip)]
    pub hook: Option<HookDraft>,
}

impl Change {
    /// A change by `actor` whose event carries `data` (its type follows),
    /// with no webhook event: [`Core::change`] adds it.
    pub fn new<T: EventData>(actor: &UserId, data: &T, at: OffsetDateTime) -> Result<Self> {
        let data = serde_json::to_value(data)
            .map_err(|e| CoreError::Internal(format!("cannot encode a change: {e}")))?;
        Ok(Self {
            kind: T::TYPE,
            actor: actor.clone(),
            data,
            at,
            hook: None,
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

    /// What the store writes with this change: the inbox events of
    /// `users` and the change's webhook event.
    pub fn effects(&self, users: &[&UserId]) -> Effects {
        Effects {
            events: self.drafts(users),
            hooks: self.hook.iter().cloned().collect(),
        }
    }
}

impl Core {
    /// A change with its webhook event (`friend.added`,
    /// `group.member_added`, …) when an endpoint wants it.
    pub(crate) fn change<T: EventData>(
        &self,
        actor: &UserId,
        data: &T,
        at: OffsetDateTime,
    ) -> Result<Change> {
        let mut change = Change::new(actor, data, at)?;
        change.hook = self.change_hook(&change);
        Ok(change)
    }

    /// Publishes the committed inbox events of a change and wakes the
    /// dispatcher if its webhook event was written with it.
    pub(crate) async fn changed(&self, change: Change, events: &[StoredEvent]) {
        self.publish(events).await;
        metrics::counter!("unimsg_changes_total", "type" => change.kind.as_str()).increment(1);
        if change.hook.is_some() {
            self.wake_dispatcher();
        }
    }

    /// The webhook event of a relationship or group change, if it has one
    /// and an endpoint wants it.
    fn change_hook(&self, change: &Change) -> Option<HookDraft> {
        let data = change.data.clone();
        match change.kind {
            EventType::FriendRequest => {
                let d = serde_json::from_value::<FriendRequestData>(data).ok()?;
                let relation = RelationData {
                    user_id: d.from,
                    other_id: d.to,
                };
                self.hook_draft(HookEventType::FriendRequested, &relation, None)
            }
            EventType::FriendChanged => {
                let d = serde_json::from_value::<FriendChangedData>(data).ok()?;
                // A change of one side's tags or remark is not a new friendship.
                if d.tags.is_some() || d.remark.is_some() {
                    return None;
                }
                let kind = match d.state {
                    FriendState::Friends => HookEventType::FriendAdded,
                    FriendState::Removed => HookEventType::FriendRemoved,
                    FriendState::Declined => return None,
                };
                let [a, b] = d.users;
                let (user_id, other_id) = if b == change.actor { (b, a) } else { (a, b) };
                self.hook_draft(kind, &RelationData { user_id, other_id }, None)
            }
            EventType::BlockChanged => {
                let d = serde_json::from_value::<BlockChangedData>(data).ok()?;
                let kind = if d.blocked {
                    HookEventType::BlockAdded
                } else {
                    HookEventType::BlockRemoved
                };
                let relation = RelationData {
                    user_id: change.actor.clone(),
                    other_id: d.user_id,
                };
                self.hook_draft(kind, &relation, None)
            }
            EventType::GroupChanged => {
                let d = serde_json::from_value::<GroupChanged>(data).ok()?;
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
                self.hook_draft(kind, &d, None)
            }
            _ => None,
        }
    }
}
