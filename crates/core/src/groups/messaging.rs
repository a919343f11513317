//! Group messaging: sends (membership, personal and group mutes, send
//! limits counting the fan-out), read positions and read counts, history
//! from the member's join, recall, the group entries of the conversation
//! list and the audience of a notification to a group.

use std::collections::HashMap;

use unimsg_proto::api::{
    ConversationSummary, HistoryPage, MessageKind, ReadCount, ReadResponse, Recipient, SendResponse,
};
use unimsg_proto::event::{MessageRecalledData, ReceiptReadData};
use unimsg_proto::groups::GroupRole;
use unimsg_proto::hooks::{HookEventType, MessageCreatedData};
use unimsg_proto::{ConversationId, EventType, GroupId, MessageId, Seq, UserId};
use unimsg_store::{
    AppendOutcome, ConversationState, Effects, EventDraft, GroupRow, HookDraft, MemberRow,
    NewMessage, StoreError, StoredMessage,
};

use super::{forbidden, group_not_found, not_a_member};
use crate::Core;
use crate::auth::AuthContext;
use crate::error::{CoreError, Result};
use crate::messaging::Checked;
use crate::render;

impl Core {
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
        content: Vec<u8>,
        client_msg_id: Option<String>,
        mut turn: crate::messaging::SendTurn,
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
        let recipient = Recipient::Group(group.clone());
        let content = match self
            .checked_content(auth, &recipient, kind, content, client_msg_id.as_deref())
            .await?
        {
            Checked::Send(content) => content,
            Checked::AlreadySent(original) => return self.resent(&auth.user_id, *original).await,
        };
        let message_id = MessageId::parse(uuid::Uuid::now_v7().simple().to_string())
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let hook = self.hook_draft(
            HookEventType::MessageCreated,
            &MessageCreatedData {
                message_id: message_id.clone(),
                conversation_id: ConversationId::group(group),
                sender: auth.user_id.clone(),
                recipient: None,
                group_id: Some(group.clone()),
                kind,
                sent_at: now,
            },
            Some(message_id.clone()),
        );
        let hooked = hook.is_some();
        let conversation_id = ConversationId::group(group);
        let aad = render::message_aad(&message_id, &auth.user_id, &conversation_id);
        let sealed = self
            .keyring
            .seal(&content, &aad)
            .map_err(|e| CoreError::Internal(format!("cannot seal content: {e}")))?;
        let message = NewMessage {
            message_id,
            conversation_id,
            sender: auth.user_id.clone(),
            recipient,
            kind: kind.as_str().to_owned(),
            content: sealed,
            client_msg_id,
            created_at: now,
            hook,
            require_friendship: false,
        };
        let outcome = self
            .stored_in_turn(&mut turn, self.store.append_group_message(message))
            .await
            .map_err(|e| match e {
                // Removed (or the group dissolved) since the check above.
                StoreError::NotFound(_) => not_a_member(),
                e => e.into(),
            })?;
        match outcome {
            AppendOutcome::Created { message, events } => {
                if hooked {
                    self.wake_dispatcher();
                }
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
            AppendOutcome::Refused(_) => Err(CoreError::Internal(
                "a group message was refused as a direct one".into(),
            )),
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
        let effects = Effects {
            events: vec![EventDraft {
                user_id: auth.user_id.clone(),
                kind: EventType::ReceiptRead,
                data,
                at: now,
            }],
            hooks: self.read_hooks(&auth.user_id, conversation, message_id),
        };
        let hooked = !effects.hooks.is_empty();
        let (read_upto, events) = self
            .store
            .mark_read(&auth.user_id, conversation, message.conv_seq, effects)
            .await?;
        self.publish(&events).await;
        // Effects are written only when the position moved.
        if hooked && !events.is_empty() {
            self.wake_dispatcher();
        }
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
        hooks: Vec<HookDraft>,
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
        let events = self
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
        let effects = Effects { events, hooks };
        let events = self.store.recall(&message.message_id, now, effects).await?;
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
