//! The backend-independent test suite: every [`Store`] implementation must
//! pass it. Only built with the `suite` feature, which the backends enable
//! for their tests.
//!
//! One module per storage trait; each check is a function that takes a
//! fresh, empty store. A backend's tests call [`backend_suite!`] with a
//! function that opens such a store, which makes every check its own
//! `#[test]`: a failing check does not hide the others.

mod admins;
mod audit;
mod broadcasts;
mod data_keys;
mod groups;
mod inbox;
mod notifications;
mod relationships;
mod sessions;
mod users;
mod webhooks;

pub use admins::*;
pub use audit::*;
pub use broadcasts::*;
pub use data_keys::*;
pub use groups::*;
pub use inbox::*;
pub use notifications::*;
pub use relationships::*;
pub use sessions::*;
pub use users::*;
pub use webhooks::*;

use std::sync::Arc;

use time::OffsetDateTime;
use unimsg_proto::api::Recipient;
use unimsg_proto::groups::{GroupRole, JoinPolicy};
use unimsg_proto::{
    ConversationId, EventType, GroupId, MessageId, Platform, Seq, SessionId, UserId,
};

use crate::{
    Admin, Answer, AppendOutcome, AudiencePart, AuditDraft, AuditQuery, BlockChange, DirectRefusal,
    Effects, EventBody, EventDraft, FriendshipChange, GroupEdit, NewGroup, NewMessage,
    NewNotification, NewRefreshToken, NewSession, NewUser, RecipientState, RefreshOutcome,
    RequestDirection, Revocation, Sealed, Store, StoreError, TokenHash, UserUpdate,
};

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn sid(s: &str) -> SessionId {
    SessionId::parse(s).unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

async fn user(store: &dyn Store, name: &str) -> UserId {
    let user = NewUser {
        hook: None,
        user_id: uid(name),
        username: format!("{name}-name"),
        display_name: name.to_uppercase(),
        password_hash: None,
        created_at: now(),
    };
    store
        .create_user(user)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
        .user_id
}

fn message(id: &str, from: &UserId, to: &UserId, cmid: Option<&str>) -> NewMessage {
    NewMessage {
        message_id: MessageId::parse(id).unwrap(),
        conversation_id: ConversationId::direct(from, to),
        sender: from.clone(),
        recipient: Recipient::User(to.clone()),
        kind: "chat".into(),
        content: Sealed {
            key_id: 1,
            nonce: vec![0; 12],
            ciphertext: id.as_bytes().to_vec(),
        },
        client_msg_id: cmid.map(str::to_owned),
        created_at: now(),
        hook: None,
        require_friendship: false,
    }
}

fn revocation(session: &str) -> Revocation {
    Revocation {
        hooks: Vec::new(),
        session_id: sid(session),
        reason: "test".into(),
        at: now(),
        event_data: format!(r#"{{"session_id":"{session}"}}"#),
    }
}

fn refresh(byte: u8) -> NewRefreshToken {
    NewRefreshToken {
        hash: TokenHash([byte; 32]),
        expires_at: now() + time::Duration::days(1),
    }
}

fn new_session(id: &str, user: &UserId) -> NewSession {
    NewSession {
        session_id: sid(id),
        user_id: user.clone(),
        platform: Platform::parse("web").unwrap(),
        device_id: None,
        created_at: now(),
        ip: None,
        user_agent: None,
    }
}

fn announcement(id: &str) -> NewNotification {
    NewNotification {
        message_id: MessageId::parse(id).unwrap(),
        kind: "notification".into(),
        sender: "system".into(),
        content: Sealed {
            key_id: 1,
            nonce: vec![0; 12],
            ciphertext: id.as_bytes().to_vec(),
        },
        created_at: now(),
    }
}

/// What a user's visible stream holds, as labels.
fn labels(events: &[crate::StoredEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.body {
            EventBody::Broadcast(b) => format!("B:{}", b.message_id),
            EventBody::Message(m) => format!("M:{}", m.message_id),
            EventBody::Notification(n) => format!("N:{}", n.message_id),
            EventBody::Data(_) => "D".into(),
        })
        .collect()
}

fn test_chain(prev: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
    // Not a cryptographic hash: the suite checks the store's bookkeeping only.
    let mut out = *prev;
    for (i, b) in bytes.iter().enumerate() {
        out[i % 32] = out[i % 32].wrapping_mul(31).wrapping_add(*b);
    }
    out
}

fn group_message(id: &str, from: &UserId, group: &GroupId, cmid: Option<&str>) -> NewMessage {
    NewMessage {
        conversation_id: ConversationId::group(group),
        recipient: Recipient::Group(group.clone()),
        ..message(id, from, from, cmid)
    }
}

fn changed(user: &UserId) -> EventDraft {
    EventDraft {
        user_id: user.clone(),
        kind: EventType::GroupChanged,
        data: "{}".into(),
        at: now(),
    }
}

/// Who received a fanned-out message, sorted.
fn receivers(outcome: &AppendOutcome) -> Vec<String> {
    let AppendOutcome::Created { events, .. } = outcome else {
        panic!("not created: {outcome:?}");
    };
    let mut users: Vec<String> = events.iter().map(|e| e.user_id.to_string()).collect();
    users.sort();
    users
}

/// Generates one `#[tokio::test]` per check of the suite, in a module
/// `suite`. `$fresh` is an async function returning a fresh, empty store
/// and whatever must live as long as the store (a temporary directory, a
/// database server), as `(Arc<dyn Store>, guard)`.
///
/// ```text
/// unimsg_store::backend_suite!(fresh);
/// ```
#[macro_export]
macro_rules! backend_suite {
    ($fresh:ident) => {
        $crate::backend_suite!(@checks $fresh;
            users, unknown_users, search_users, import_and_update,
            sessions, disabled_users_sessions,
            inbox, direct_refusals_are_checked_in_the_write, concurrent_appends_are_gap_free,
            reads_and_recalls,
            data_keys, admins, notifications, broadcasts_merge_into_every_inbox, audit_chain,
            relationships, groups,
            webhook_endpoints, outbox_fan_out_and_claims, outbox_retries_replays_and_pruning,
            changes_write_their_outbox_events,
        );
    };
    (@checks $fresh:ident; $($check:ident),+ $(,)?) => {
        mod suite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (store, guard) = super::$fresh().await;
                    $crate::suite::$check(store).await;
                    drop(guard);
                }
            )+
        }
    };
}
