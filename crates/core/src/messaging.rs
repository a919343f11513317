//! Messaging: direct sends (idempotent, sealed at rest), sync, acks, read
//! receipts, recalls, conversations and history.
//!
//! A send is answered only after the store committed it; live delivery
//! happens after the commit, so a client never sees an event that could
//! still be lost.

use time::OffsetDateTime;
use unimsg_proto::api::{
    ConversationList, ConversationSummary, HistoryPage, MessageKind, ReadResponse, Recipient,
    SendRequest, SendResponse, SyncResponse,
};
use unimsg_proto::event::{MessageRecalledData, ReceiptReadData};
use unimsg_proto::hooks::{
    HookEventType, MessageCreatedData, MessageDeliveredData, MessageReadData,
    MessageRecalledHookData, NotificationStatusData,
};
use unimsg_proto::{ConversationId, EventType, MessageId, Seq, UserId};
use unimsg_store::{
    AppendOutcome, Effects, EventBody, EventDraft, HookDraft, NewMessage, StoredMessage,
};

use crate::Core;
use crate::auth::AuthContext;

/// One sender's line of pipelined sends (a WebSocket's `send` frames):
/// each [`SendTurn`] it hands out is stored after the one before.
#[derive(Debug, Default)]
pub struct SendLine {
    last: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl SendLine {
    /// The turn of the next send of this line.
    pub fn next_turn(&mut self) -> SendTurn {
        let (done, after) = tokio::sync::oneshot::channel();
        SendTurn {
            before: self.last.replace(after),
            done: Some(done),
        }
    }
}

/// A send's place in its [`SendLine`]. Its store write waits until the
/// send before was handed to the store (or ended without a write: a
/// dropped turn hands on too).
#[derive(Debug)]
pub struct SendTurn {
    before: Option<tokio::sync::oneshot::Receiver<()>>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SendTurn {
    /// A send in no line (HTTP).
    pub fn alone() -> Self {
        SendTurn {
            before: None,
            done: None,
        }
    }

    async fn wait(&mut self) {
        if let Some(before) = self.before.take() {
            // An error means the send before ended without a write.
            let _ = before.await;
        }
    }

    fn pass(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}
use crate::error::{CoreError, Result};
use crate::hooks::before_send::Outgoing;
use crate::limits::Limit;
use crate::render;

const MAX_CLIENT_MSG_ID: usize = 128;

/// What a send goes on with after the before-send hook.
pub(crate) enum Checked {
    Send(Vec<u8>),
    /// A retry of a message stored before.
    AlreadySent(Box<StoredMessage>),
}

fn new_message_id() -> Result<MessageId> {
    MessageId::parse(uuid::Uuid::now_v7().simple().to_string())
        .map_err(|e| CoreError::Internal(e.to_string()))
}

/// The members of a conversation, if `user` is one of them.
fn members_for(conversation: &ConversationId, user: &UserId) -> Result<(UserId, UserId)> {
    match conversation.direct_members() {
        Some((a, b)) if &a == user || &b == user => Ok((a, b)),
        _ => Err(CoreError::NotFound("conversation not found".into())),
    }
}

fn peer_of(members: &(UserId, UserId), user: &UserId) -> UserId {
    if &members.0 == user {
        members.1.clone()
    } else {
        members.0.clone()
    }
}

/// The answer to a send that stored `message` at the sender's `seq`.
pub(crate) fn sent(message: StoredMessage, seq: Seq) -> SendResponse {
    SendResponse {
        message_id: message.message_id,
        conversation_id: message.conversation_id,
        seq,
        sent_at: message.created_at,
        duplicate: false,
    }
}

impl Core {
    /// The answer to a retried send: the original message, at its place in
    /// the sender's inbox.
    pub(crate) async fn resent(
        &self,
        sender: &UserId,
        original: StoredMessage,
    ) -> Result<SendResponse> {
        let seq = self.sender_seq_of(sender, &original).await?;
        Ok(SendResponse {
            duplicate: true,
            ..sent(original, seq)
        })
    }

    /// `POST /v1/messages`
    pub async fn send(&self, auth: &AuthContext, req: SendRequest) -> Result<SendResponse> {
        self.send_in_turn(auth, req, SendTurn::alone()).await
    }

    /// A send that is stored after the sends before it in its [`SendLine`]
    /// (a WebSocket's pipelined `send` frames): the checks run at once,
    /// the store write waits for the turn before it.
    pub async fn send_in_turn(
        &self,
        auth: &AuthContext,
        req: SendRequest,
        mut turn: SendTurn,
    ) -> Result<SendResponse> {
        let content = serde_json::to_vec(&req.content)
            .map_err(|e| CoreError::BadRequest(format!("content is not valid JSON: {e}")))?;
        if content.len() > self.config.messaging.max_content_bytes {
            return Err(CoreError::TooLarge(format!(
                "content is {} bytes; the limit is {}",
                content.len(),
                self.config.messaging.max_content_bytes
            )));
        }
        if let Some(id) = &req.client_msg_id
            && (id.is_empty() || id.len() > MAX_CLIENT_MSG_ID)
        {
            return Err(CoreError::BadRequest(format!(
                "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID} bytes"
            )));
        }
        let to = match req.to {
            Recipient::User(user) => user,
            Recipient::Group(group) => {
                return self
                    .send_to_group(auth, &group, req.kind, content, req.client_msg_id, turn)
                    .await;
            }
        };
        if to == auth.user_id {
            return Err(CoreError::BadRequest(
                "cannot send a direct message to yourself".into(),
            ));
        }
        // The write checks the recipient (exists, has not blocked the
        // sender, a friend if required) in its transaction: no read first,
        // unless the before-send hook is to be asked.
        if self.before_send_applies(req.kind) {
            self.may_message(&auth.user_id, &to).await?;
        }
        self.check_send_limits(&auth.user_id, 1).await?;
        let recipient = Recipient::User(to.clone());
        let content = match self
            .checked_content(
                auth,
                &recipient,
                req.kind,
                content,
                req.client_msg_id.as_deref(),
            )
            .await?
        {
            Checked::Send(content) => content,
            Checked::AlreadySent(original) => return self.resent(&auth.user_id, *original).await,
        };
        let message_id = new_message_id()?;
        let now = self.clock.now();
        let conversation_id = ConversationId::direct(&auth.user_id, &to);
        let hook = self.hook_draft(
            HookEventType::MessageCreated,
            &MessageCreatedData {
                message_id: message_id.clone(),
                conversation_id: conversation_id.clone(),
                sender: auth.user_id.clone(),
                recipient: Some(to.clone()),
                group_id: None,
                kind: req.kind,
                sent_at: now,
            },
            Some(message_id.clone()),
        );
        let aad = render::message_aad(&message_id, &auth.user_id, &conversation_id);
        let sealed = self
            .keyring
            .seal(&content, &aad)
            .map_err(|e| CoreError::Internal(format!("cannot seal content: {e}")))?;
        let hooked = hook.is_some();
        let message = NewMessage {
            message_id,
            conversation_id,
            sender: auth.user_id.clone(),
            recipient,
            kind: req.kind.as_str().to_owned(),
            content: sealed,
            client_msg_id: req.client_msg_id,
            created_at: now,
            hook,
            require_friendship: self.config.messaging.require_friendship,
        };
        let append = self
            .store
            .append_message(message, vec![auth.user_id.clone(), to]);
        match self.stored_in_turn(&mut turn, append).await? {
            AppendOutcome::Created { message, events } => {
                if hooked {
                    self.wake_dispatcher();
                }
                self.publish(&events).await;
                let seq = events
                    .iter()
                    .find(|e| e.user_id == auth.user_id)
                    .map_or(Seq::ZERO, |e| e.seq);
                metrics::counter!("unimsg_messages_sent_total").increment(1);
                Ok(sent(message, seq))
            }
            AppendOutcome::Duplicate(original) => self.resent(&auth.user_id, original).await,
            AppendOutcome::Refused(refusal) => Err(crate::friends::direct_refused(refusal)),
        }
    }

    /// Runs a store write in `turn`: after the write before it was handed
    /// to the store, and handing the turn on as soon as this one was. A
    /// store that applies writes in the order they are first polled
    /// ([`unimsg_store::Inbox::applies_in_poll_order`]) lets the next
    /// write in after one poll (unconstrained by the runtime's budget, so
    /// that poll queues it); any other store after the commit.
    pub(crate) async fn stored_in_turn<T>(
        &self,
        turn: &mut SendTurn,
        write: impl std::future::Future<Output = T>,
    ) -> T {
        use std::task::Poll;
        turn.wait().await;
        if !self.store.applies_in_poll_order() {
            let done = write.await;
            turn.pass();
            return done;
        }
        let mut write = std::pin::pin!(tokio::task::unconstrained(write));
        let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
        turn.pass();
        match first {
            Poll::Ready(done) => done,
            Poll::Pending => write.await,
        }
    }

    /// A user message's content after the before-send hook (when it
    /// applies to `kind`): a retry of a stored `client_msg_id` is answered
    /// with the original and does not ask the hook again.
    pub(crate) async fn checked_content(
        &self,
        auth: &AuthContext,
        to: &Recipient,
        kind: MessageKind,
        content: Vec<u8>,
        client_msg_id: Option<&str>,
    ) -> Result<Checked> {
        if !self.before_send_applies(kind) {
            return Ok(Checked::Send(content));
        }
        if let Some(cmid) = client_msg_id
            && let Some(original) = self.store.sent_message(&auth.user_id, cmid).await?
        {
            return Ok(Checked::AlreadySent(Box::new(original)));
        }
        let replaced = self
            .before_send(Outgoing {
                sender: &auth.user_id,
                to,
                kind,
                content: &content,
                client_msg_id,
            })
            .await?;
        Ok(Checked::Send(replaced.unwrap_or(content)))
    }

    /// The per-user send limits: one message, and `deliveries` inbox rows
    /// it writes for others (`limits.send_per_minute`,
    /// `limits.deliveries_per_minute`; 429 with `Retry-After`). Admin
    /// messages and admin group changes are not user sends and are not
    /// counted.
    pub(crate) async fn check_send_limits(&self, sender: &UserId, deliveries: u64) -> Result<()> {
        self.check_limit(Limit::Send, sender.as_str()).await?;
        self.limits
            .check_n(
                Limit::Deliveries,
                sender.as_str(),
                u32::try_from(deliveries).unwrap_or(u32::MAX),
            )
            .await
            .map_err(|r| CoreError::RateLimited(r.0))
    }

    /// The seq of a message in its sender's inbox (for idempotent replays).
    pub(crate) async fn sender_seq_of(
        &self,
        sender: &UserId,
        message: &StoredMessage,
    ) -> Result<Seq> {
        Ok(self
            .store
            .message_seq(sender, &message.message_id)
            .await?
            .unwrap_or(Seq::ZERO))
    }

    /// `GET /v1/sync?after=&limit=`
    pub async fn sync(
        &self,
        auth: &AuthContext,
        after: Seq,
        limit: Option<u32>,
    ) -> Result<SyncResponse> {
        let limit = limit
            .unwrap_or(self.config.messaging.max_page)
            .clamp(1, self.config.messaging.max_page);
        let mut stored = self
            .store
            .events_after(&auth.user_id, after, limit + 1)
            .await?;
        let has_more = stored.len() > limit as usize;
        stored.truncate(limit as usize);
        let events = stored
            .iter()
            .map(|e| render::event(&self.keyring, e))
            .collect::<Result<Vec<_>>>()?;
        let next_after = events.last().map_or(after, |e| e.seq);
        Ok(SyncResponse {
            events,
            next_after,
            has_more,
        })
    }

    /// `POST /v1/ack`
    pub async fn ack(&self, auth: &AuthContext, seq: Seq) -> Result<Seq> {
        let hooked = self.hook_wanted(HookEventType::MessageDelivered)
            || self.hook_wanted(HookEventType::NotificationDelivered);
        if !hooked {
            return Ok(self.store.ack(&auth.user_id, seq, Vec::new()).await?);
        }
        // The position the ack moves to is settled here, so that its
        // webhook events can be written with it; the store writes them
        // only if the position moved.
        let user = &auth.user_id;
        let before = self.store.acked(user).await?;
        let target = seq.min(self.store.last_seq(user).await?);
        if target <= before {
            return Ok(self.store.ack(user, target, Vec::new()).await?);
        }
        let hooks = self.delivered_hooks(user, before, target).await?;
        let acked = self.store.ack(user, target, hooks).await?;
        if acked > before {
            self.wake_dispatcher();
        }
        Ok(acked)
    }

    /// `message.delivered` for an ack that moves from `before` to `acked`,
    /// and `notification.delivered` for each notification it covers (up
    /// to the sync page size of them).
    async fn delivered_hooks(
        &self,
        user: &UserId,
        before: Seq,
        acked: Seq,
    ) -> Result<Vec<HookDraft>> {
        let data = MessageDeliveredData {
            user_id: user.clone(),
            seq: acked,
        };
        let mut hooks: Vec<HookDraft> = self
            .hook_draft(HookEventType::MessageDelivered, &data, None)
            .into_iter()
            .collect();
        if !self.hook_wanted(HookEventType::NotificationDelivered) {
            return Ok(hooks);
        }
        let span = u32::try_from(acked.0 - before.0).unwrap_or(u32::MAX);
        let limit = span.min(self.config.messaging.max_page);
        let events = self.store.events_after(user, before, limit).await?;
        hooks.extend(
            events
                .iter()
                .filter(|e| e.seq <= acked)
                .filter_map(|e| match &e.body {
                    EventBody::Notification(n) => self.hook_draft(
                        HookEventType::NotificationDelivered,
                        &NotificationStatusData {
                            message_id: n.message_id.clone(),
                            user_id: user.clone(),
                        },
                        None,
                    ),
                    _ => None,
                }),
        );
        Ok(hooks)
    }

    /// `message.read`, written with a read position if it moves.
    pub(crate) fn read_hooks(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        message: &MessageId,
    ) -> Vec<HookDraft> {
        let data = MessageReadData {
            user_id: user.clone(),
            conversation_id: conversation.clone(),
            message_id: message.clone(),
        };
        self.hook_draft(HookEventType::MessageRead, &data, None)
            .into_iter()
            .collect()
    }

    /// `POST /v1/conversations/{id}/read`: moves the caller's read position
    /// up to a message and sends `receipt.read` to both members' inboxes.
    pub async fn mark_read(
        &self,
        auth: &AuthContext,
        conversation: &ConversationId,
        message_id: &MessageId,
    ) -> Result<ReadResponse> {
        if let Some(owner) = conversation.system_owner() {
            if owner != auth.user_id {
                return Err(CoreError::NotFound("conversation not found".into()));
            }
            let data = NotificationStatusData {
                message_id: message_id.clone(),
                user_id: auth.user_id.clone(),
            };
            let hooks: Vec<_> = self
                .hook_draft(HookEventType::NotificationRead, &data, None)
                .into_iter()
                .collect();
            let hooked = !hooks.is_empty();
            let seq = self
                .store
                .mark_notifications_read(&auth.user_id, message_id, self.clock.now(), hooks)
                .await?;
            if hooked {
                self.wake_dispatcher();
            }
            return Ok(ReadResponse {
                conversation_id: conversation.clone(),
                read_upto: seq.0,
            });
        }
        if let Some(group) = conversation.group_id() {
            return self
                .mark_group_read(auth, conversation, &group, message_id)
                .await;
        }
        let members = members_for(conversation, &auth.user_id)?;
        let message = self
            .store
            .message(message_id)
            .await?
            .filter(|m| &m.conversation_id == conversation)
            .ok_or_else(|| CoreError::NotFound("message not found in this conversation".into()))?;
        let now = self.clock.now();
        let data = render::event_json(&ReceiptReadData {
            conversation_id: conversation.clone(),
            user_id: auth.user_id.clone(),
            message_id: message.message_id.clone(),
            read_upto: message.conv_seq,
        })?;
        let effects = Effects {
            events: [members.0.clone(), members.1.clone()]
                .into_iter()
                .map(|user_id| EventDraft {
                    user_id,
                    kind: EventType::ReceiptRead,
                    data: data.clone(),
                    at: now,
                })
                .collect(),
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

    /// `POST /v1/messages/{id}/recall`: only the sender, only inside the
    /// recall window. Both members get `message.recalled`; the content is
    /// gone from history and sync from then on.
    pub async fn recall(&self, auth: &AuthContext, message_id: &MessageId) -> Result<()> {
        let message = self
            .store
            .message(message_id)
            .await?
            .ok_or_else(|| CoreError::NotFound("message not found".into()))?;
        let recalled = MessageRecalledHookData {
            message_id: message.message_id.clone(),
            conversation_id: message.conversation_id.clone(),
            sender: message.sender.clone(),
        };
        let hooks: Vec<_> = self
            .hook_draft(HookEventType::MessageRecalled, &recalled, None)
            .into_iter()
            .collect();
        let hooked = !hooks.is_empty();
        if let Some(group) = message.conversation_id.group_id() {
            self.recall_group_message(auth, &group, message, hooks)
                .await?;
            if hooked {
                self.wake_dispatcher();
            }
            return Ok(());
        }
        let members = members_for(&message.conversation_id, &auth.user_id)?;
        if message.sender != auth.user_id {
            return Err(CoreError::Forbidden(
                "only the sender can recall a message".into(),
            ));
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
        let effects = Effects {
            events: [members.0, members.1]
                .into_iter()
                .map(|user_id| EventDraft {
                    user_id,
                    kind: EventType::MessageRecalled,
                    data: data.clone(),
                    at: now,
                })
                .collect(),
            hooks,
        };
        let events = self.store.recall(message_id, now, effects).await?;
        self.publish(&events).await;
        if hooked {
            self.wake_dispatcher();
        }
        Ok(())
    }

    /// `GET /v1/conversations`
    pub async fn conversations(&self, auth: &AuthContext) -> Result<ConversationList> {
        let states = self.store.conversations(&auth.user_id).await?;
        let mut conversations = Vec::with_capacity(states.len());
        let mut groups = None;
        for s in states {
            if let Some(group) = s.conversation_id.group_id() {
                conversations.extend(
                    self.group_summary(&auth.user_id, &group, s, &mut groups)
                        .await?,
                );
                continue;
            }
            let Some(members) = s.conversation_id.direct_members() else {
                continue;
            };
            let peer = peer_of(&members, &auth.user_id);
            let peer_read_upto = s
                .members_read
                .iter()
                .find(|(u, _)| u == &peer)
                .map_or(0, |(_, n)| *n);
            let last_message = s
                .last_message
                .as_ref()
                .map(|m| render::message(&self.keyring, m))
                .transpose()?;
            conversations.push(ConversationSummary {
                conversation_id: s.conversation_id,
                peer_display_name: self
                    .store
                    .user(&peer)
                    .await?
                    .map(|u| u.display_name)
                    .unwrap_or_default(),
                peer: Some(peer),
                group_id: None,
                group_name: None,
                last_message,
                unread: s.unread,
                read_upto: s.read_upto,
                peer_read_upto,
            });
        }
        Ok(ConversationList { conversations })
    }

    /// `GET /v1/conversations/{id}/messages?before=&limit=`, newest first.
    pub async fn history(
        &self,
        auth: &AuthContext,
        conversation: &ConversationId,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<HistoryPage> {
        if let Some(group) = conversation.group_id() {
            return self
                .group_history(auth, conversation, &group, before, limit)
                .await;
        }
        members_for(conversation, &auth.user_id)?;
        let limit = limit.unwrap_or(50).clamp(1, self.config.messaging.max_page);
        let stored = self.store.history(conversation, before, limit).await?;
        let messages = stored
            .iter()
            .map(|m| render::message(&self.keyring, m))
            .collect::<Result<Vec<_>>>()?;
        let next_before = match messages.last() {
            Some(m) if messages.len() == limit as usize && m.conv_seq > 1 => Some(m.conv_seq),
            _ => None,
        };
        Ok(HistoryPage {
            messages,
            next_before,
        })
    }

    /// The newest seq of the caller's inbox.
    pub async fn last_seq(&self, user: &UserId) -> Result<Seq> {
        Ok(self.store.last_seq(user).await?)
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}
