//! Relationships: friend requests, friends with tags and remarks, blocks,
//! the checks direct messages need, and the admin batch API.
//!
//! Every change goes through [`Core::changed`]: inbox events to both sides
//! (`friend.request`, `friend.changed`) or to the blocker only
//! (`block.changed`: a blocked user is not told), and the change stream.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use unimsg_proto::admin::ImportResult;
use unimsg_proto::event::{BlockChangedData, FriendChangedData, FriendRequestData, FriendState};
use unimsg_proto::friends::{
    BlockList, Blocked, Friend, FriendList, FriendRequest, FriendRequestList, FriendRequestOutcome,
    RelationshipOp, RelationshipsResponse, RelationshipsUpdateResponse, UserRelationships,
};
use unimsg_proto::{ErrorDetail, EventData, EventType, UserId};
use unimsg_store::{
    Answer, BlockChange, DirectRefusal, Effects, FriendRequestRow, FriendRow, FriendshipChange,
    RecipientFacts, RequestOutcome, StoredText,
};

use crate::Core;
use crate::auth::AuthContext;
use crate::changes::Change;
use crate::error::{CoreError, Result};
use crate::render;

/// A `friend.request` event's data as the inbox stores it: the words
/// sealed (`message_sealed`, base64 of `Sealed::to_bytes`), opened into
/// `message` when rendered (`render::event`).
#[derive(Serialize)]
struct SealedFriendRequest<'a> {
    from: &'a UserId,
    to: &'a UserId,
    message_sealed: String,
}

impl EventData for SealedFriendRequest<'_> {
    const TYPE: EventType = EventType::FriendRequest;
}

/// The refusal a blocked user gets: it does not say they were blocked.
fn refused() -> CoreError {
    CoreError::Forbidden("this user does not accept this from you".into())
}

/// What the sender of a refused direct message is told.
pub(crate) fn direct_refused(refusal: DirectRefusal) -> CoreError {
    match refusal {
        DirectRefusal::NoRecipient => CoreError::NotFound("recipient not found".into()),
        DirectRefusal::Blocked => refused(),
        DirectRefusal::NotFriends => {
            CoreError::Forbidden("direct messages need a friendship on this server".into())
        }
    }
}

impl Core {
    async fn other_user(&self, me: &UserId, other: &UserId) -> Result<()> {
        if me == other {
            return Err(CoreError::BadRequest("that is yourself".into()));
        }
        if self.store.user(other).await?.is_none() {
            return Err(CoreError::NotFound("user not found".into()));
        }
        Ok(())
    }

    /// Whether `from` may send a direct message to `to`: `to` exists, has
    /// not blocked `from`, and is a friend when
    /// `messaging.require_friendship` is on. The write checks the same in
    /// its transaction; this read is for a send that asks the
    /// before-send hook first, so the hook hears only of sends that can be
    /// stored.
    pub(crate) async fn may_message(&self, from: &UserId, to: &UserId) -> Result<()> {
        let exists = self.store.user(to).await?.is_some();
        let blocked = exists && self.store.is_blocked(to, from).await?;
        let required = self.config.messaging.require_friendship;
        let friends = exists && required && self.store.are_friends(from, to).await?;
        let facts = RecipientFacts {
            exists,
            blocked,
            friends,
        };
        match DirectRefusal::of(facts, required) {
            Some(refusal) => Err(direct_refused(refusal)),
            None => Ok(()),
        }
    }

    /// Whether `me` may put `users` into a group (creating it, or adding
    /// them): nobody who blocked `me` or whom `me` blocked (the same
    /// refusal as a direct message's, which does not say why), and only
    /// friends when `groups.add_requires_friendship` is on. The admin API
    /// is not bound by this. Users who do not exist are left to the store.
    pub(crate) async fn may_add_to_group(&self, me: &UserId, users: &[UserId]) -> Result<()> {
        for user in users.iter().filter(|u| *u != me) {
            if self.store.is_blocked(user, me).await? || self.store.is_blocked(me, user).await? {
                return Err(refused());
            }
        }
        if self.config.groups.add_requires_friendship {
            for user in users.iter().filter(|u| *u != me) {
                if !self.store.are_friends(me, user).await? {
                    return Err(CoreError::Forbidden(
                        "on this server only friends can be added to a group".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `POST /v1/friends/requests`
    pub async fn request_friend(
        &self,
        auth: &AuthContext,
        to: &UserId,
        message: Option<String>,
    ) -> Result<FriendRequestOutcome> {
        self.other_user(&auth.user_id, to).await?;
        if message.as_ref().is_some_and(|m| m.chars().count() > 200) {
            return Err(CoreError::BadRequest(
                "message must be at most 200 characters".into(),
            ));
        }
        if self.store.is_blocked(to, &auth.user_id).await? {
            return Err(refused());
        }
        let now = self.clock.now();
        let me = &auth.user_id;
        // The words are sealed like message content, in the row and in the
        // inbox event (`render` opens them); listeners of the change
        // stream, in memory, get them as written.
        let sealed = message
            .as_ref()
            .map(|m| {
                self.keyring.seal(
                    m.as_bytes(),
                    &render::friend_request_aad(me.as_str(), to.as_str()),
                )
            })
            .transpose()
            .map_err(|e| CoreError::Internal(format!("cannot seal a friend request: {e}")))?;
        let asked = match &sealed {
            Some(s) => {
                let data = SealedFriendRequest {
                    from: me,
                    to,
                    message_sealed: STANDARD.encode(s.to_bytes()),
                };
                Change::new(me, &data, now)?
            }
            None => {
                let data = FriendRequestData {
                    from: me.clone(),
                    to: to.clone(),
                    message: None,
                };
                Change::new(me, &data, now)?
            }
        };
        let announced = FriendRequestData {
            from: me.clone(),
            to: to.clone(),
            message,
        };
        // `asked` is what the inboxes store (the message sealed);
        // `announced` is what is published and reported.
        let announced = self.change(me, &announced, now)?;
        let became = FriendChangedData::new([me.clone(), to.clone()], FriendState::Friends);
        let became = self.change(me, &became, now)?;
        let row = FriendRequestRow {
            from: me.clone(),
            to: to.clone(),
            message: sealed.map(StoredText::Sealed),
            created_at: now,
        };
        let (outcome, events) = self
            .store
            .request_friend(
                row,
                Effects {
                    events: asked.drafts(&[me, to]),
                    hooks: announced.hook.iter().cloned().collect(),
                },
                became.effects(&[me, to]),
            )
            .await?;
        let state = match outcome {
            RequestOutcome::Pending => {
                self.changed(announced, &events).await;
                "pending"
            }
            RequestOutcome::Friends => {
                self.changed(became, &events).await;
                "friends"
            }
            RequestOutcome::Unchanged => {
                if self.store.are_friends(me, to).await? {
                    "friends"
                } else {
                    "pending"
                }
            }
        };
        Ok(FriendRequestOutcome {
            state: state.into(),
        })
    }

    /// `POST /v1/friends/requests/{from}/accept`
    pub async fn accept_friend_request(&self, auth: &AuthContext, from: &UserId) -> Result<()> {
        self.answer_friend_request(auth, from, FriendState::Friends)
            .await
    }

    /// `POST /v1/friends/requests/{from}/decline`
    pub async fn decline_friend_request(&self, auth: &AuthContext, from: &UserId) -> Result<()> {
        self.answer_friend_request(auth, from, FriendState::Declined)
            .await
    }

    /// `answer` is what the friendship becomes: `Friends` or `Declined`.
    async fn answer_friend_request(
        &self,
        auth: &AuthContext,
        from: &UserId,
        answer: FriendState,
    ) -> Result<()> {
        let me = &auth.user_id;
        let decision = if answer == FriendState::Friends {
            Answer::Accept
        } else {
            Answer::Decline
        };
        let data = FriendChangedData::new([from.clone(), me.clone()], answer);
        let change = self.change(me, &data, self.clock.now())?;
        let events = self
            .store
            .answer_friend_request(from, me, decision, change.at, change.effects(&[from, me]))
            .await?;
        self.changed(change, &events).await;
        Ok(())
    }

    /// `GET /v1/friends/requests?direction=`
    pub async fn friend_requests(
        &self,
        auth: &AuthContext,
        direction: RequestDirection,
    ) -> Result<FriendRequestList> {
        let rows = self.store.friend_requests(&auth.user_id, direction).await?;
        Ok(FriendRequestList {
            requests: rows
                .into_iter()
                .map(|r| FriendRequest {
                    message: render::request_text(
                        &self.keyring,
                        r.message.as_ref(),
                        r.from.as_str(),
                        r.to.as_str(),
                    ),
                    from: r.from,
                    to: r.to,
                    created_at: r.created_at,
                })
                .collect(),
        })
    }

    async fn friend_view(&self, row: FriendRow) -> Result<Friend> {
        let display_name = self
            .store
            .user(&row.friend)
            .await?
            .map(|u| u.display_name)
            .unwrap_or_default();
        Ok(Friend {
            user_id: row.friend,
            display_name,
            tags: row.tags,
            remark: row.remark,
            since: row.since,
        })
    }

    /// `GET /v1/friends`
    pub async fn friends(&self, auth: &AuthContext) -> Result<FriendList> {
        let mut friends = Vec::new();
        for row in self.store.friends(&auth.user_id).await? {
            friends.push(self.friend_view(row).await?);
        }
        Ok(FriendList { friends })
    }

    /// `DELETE /v1/friends/{user_id}`: both sides lose the friendship.
    pub async fn remove_friend(&self, auth: &AuthContext, friend: &UserId) -> Result<()> {
        let me = &auth.user_id;
        let data = FriendChangedData::new([me.clone(), friend.clone()], FriendState::Removed);
        let change = self.change(me, &data, self.clock.now())?;
        let (removed, events) = self
            .store
            .remove_friend(me, friend, change.effects(&[me, friend]))
            .await?;
        if !removed {
            return Err(CoreError::NotFound("not a friend".into()));
        }
        self.changed(change, &events).await;
        Ok(())
    }

    /// `PUT /v1/friends/{user_id}`: this side's tags and remark. Only this
    /// user's devices hear of it: tags are private.
    pub async fn update_friend(
        &self,
        auth: &AuthContext,
        friend: &UserId,
        tags: Vec<String>,
        remark: String,
    ) -> Result<Friend> {
        let tags_ok = tags.len() <= 20
            && tags
                .iter()
                .all(|t| !t.trim().is_empty() && t.chars().count() <= 32 && !t.contains('\u{1f}'));
        if !tags_ok {
            return Err(CoreError::BadRequest(
                "at most 20 tags of 1 to 32 characters".into(),
            ));
        }
        if remark.chars().count() > 100 {
            return Err(CoreError::BadRequest(
                "remark must be at most 100 characters".into(),
            ));
        }
        let row = self
            .store
            .update_friend(&auth.user_id, friend, tags, remark)
            .await?;
        let me = &auth.user_id;
        let data = FriendChangedData {
            tags: Some(row.tags.clone()),
            remark: Some(row.remark.clone()),
            ..FriendChangedData::new([me.clone(), friend.clone()], FriendState::Friends)
        };
        let change = Change::new(me, &data, self.clock.now())?;
        let events = self.store.append_events(change.drafts(&[me])).await?;
        self.changed(change, &events).await;
        self.friend_view(row).await
    }

    /// `POST /v1/blocks/{user_id}`
    pub async fn block(&self, auth: &AuthContext, other: &UserId) -> Result<()> {
        self.set_block(auth, other, BlockChange::Block).await
    }

    /// `DELETE /v1/blocks/{user_id}`
    pub async fn unblock(&self, auth: &AuthContext, other: &UserId) -> Result<()> {
        self.set_block(auth, other, BlockChange::Unblock).await
    }

    async fn set_block(&self, auth: &AuthContext, other: &UserId, what: BlockChange) -> Result<()> {
        self.other_user(&auth.user_id, other).await?;
        let me = &auth.user_id;
        let data = BlockChangedData {
            user_id: other.clone(),
            blocked: what == BlockChange::Block,
        };
        let change = self.change(me, &data, self.clock.now())?;
        let (changed, events) = self
            .store
            .set_block(me, other, what, change.at, change.effects(&[me]))
            .await?;
        if changed {
            self.changed(change, &events).await;
        }
        Ok(())
    }

    /// `GET /v1/blocks`
    pub async fn blocks(&self, auth: &AuthContext) -> Result<BlockList> {
        let rows = self.store.blocks(&auth.user_id).await?;
        Ok(BlockList {
            blocks: rows
                .into_iter()
                .map(|(user_id, since)| Blocked { user_id, since })
                .collect(),
        })
    }

    /// `GET /v1/admin/relationships?user_ids=`: many users in one call.
    pub async fn relationships(&self, users: Vec<UserId>) -> Result<RelationshipsResponse> {
        let mut out = Vec::with_capacity(users.len());
        for user_id in users {
            let friends = self
                .store
                .friends(&user_id)
                .await?
                .into_iter()
                .map(|r| r.friend)
                .collect();
            let blocks = self
                .store
                .blocks(&user_id)
                .await?
                .into_iter()
                .map(|(u, _)| u)
                .collect();
            out.push(UserRelationships {
                user_id,
                friends,
                blocks,
            });
        }
        Ok(RelationshipsResponse { users: out })
    }

    /// `PUT /v1/admin/relationships`: each op stands alone; the users
    /// concerned get the same events as when they act themselves.
    pub async fn update_relationships(
        &self,
        ops: Vec<RelationshipOp>,
    ) -> Result<RelationshipsUpdateResponse> {
        let mut results = Vec::with_capacity(ops.len());
        for (index, op) in ops.into_iter().enumerate() {
            let outcome = self.apply_relationship(&op).await;
            results.push(ImportResult {
                index,
                user_id: Some(op.user_id.to_string()),
                ok: outcome.is_ok(),
                error: outcome.err().map(|e| ErrorDetail {
                    code: e.code(),
                    message: e.to_string(),
                }),
            });
        }
        Ok(RelationshipsUpdateResponse { results })
    }

    async fn apply_relationship(&self, op: &RelationshipOp) -> Result<()> {
        let (a, b) = (&op.user_id, &op.other_id);
        if a == b {
            return Err(CoreError::BadRequest(
                "user_id and other_id are the same".into(),
            ));
        }
        let now = self.clock.now();
        let Some(relation) = Relation::parse(&op.op) else {
            return Err(CoreError::BadRequest(
                "op must be friend, unfriend, block or unblock".into(),
            ));
        };
        match relation {
            Relation::Friend | Relation::Unfriend => {
                let (what, state) = if relation == Relation::Friend {
                    (FriendshipChange::Befriend, FriendState::Friends)
                } else {
                    (FriendshipChange::Unfriend, FriendState::Removed)
                };
                let data = FriendChangedData::new([a.clone(), b.clone()], state);
                let change = self.change(a, &data, now)?;
                let (changed, events) = self
                    .store
                    .set_friendship(a, b, what, now, change.effects(&[a, b]))
                    .await?;
                if changed {
                    self.changed(change, &events).await;
                }
                Ok(())
            }
            Relation::Block | Relation::Unblock => {
                let what = if relation == Relation::Block {
                    BlockChange::Block
                } else {
                    BlockChange::Unblock
                };
                let data = BlockChangedData {
                    user_id: b.clone(),
                    blocked: what == BlockChange::Block,
                };
                let change = self.change(a, &data, now)?;
                let (changed, events) = self
                    .store
                    .set_block(a, b, what, now, change.effects(&[a]))
                    .await?;
                if changed {
                    self.changed(change, &events).await;
                }
                Ok(())
            }
        }
    }
}

pub use unimsg_store::RequestDirection;

/// The op of one admin relationship update (`RelationshipOp::op`). Parsed
/// per item, so an unknown op fails that item alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    Friend,
    Unfriend,
    Block,
    Unblock,
}

impl Relation {
    fn parse(op: &str) -> Option<Self> {
        Some(match op {
            "friend" => Relation::Friend,
            "unfriend" => Relation::Unfriend,
            "block" => Relation::Block,
            "unblock" => Relation::Unblock,
            _ => return None,
        })
    }
}
