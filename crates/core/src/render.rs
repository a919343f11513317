//! Turns stored rows into wire values: opens sealed content and renders
//! inbox events.

use bytes::Bytes;
use unimsg_proto::api::{Message, MessageKind, Recipient};
use unimsg_proto::{Event, EventType, SessionId};
use unimsg_store::{EventBody, StoredEvent, StoredMessage, StoredNotification};

use crate::error::{CoreError, Result};
use crate::hub::Delivery;
use crate::keys::Keyring;

pub(crate) fn message(keyring: &Keyring, m: &StoredMessage) -> Result<Message> {
    let content = if m.recalled_at.is_some() {
        serde_json::Value::Null
    } else {
        let plain = keyring
            .open(&m.content, m.message_id.as_str().as_bytes())
            .map_err(|e| {
                CoreError::Internal(format!("cannot open message {}: {e}", m.message_id))
            })?;
        serde_json::from_slice(&plain).map_err(|e| {
            CoreError::Internal(format!("message {} content is not JSON: {e}", m.message_id))
        })?
    };
    Ok(Message {
        message_id: m.message_id.clone(),
        conversation_id: m.conversation_id.clone(),
        conv_seq: m.conv_seq,
        from: m.sender.clone(),
        to: Recipient {
            user: m.recipient.clone(),
        },
        kind: MessageKind::parse(&m.kind).unwrap_or(MessageKind::Chat),
        content,
        client_msg_id: m.client_msg_id.clone(),
        sent_at: m.created_at,
        recalled: m.recalled_at.is_some(),
    })
}

/// The data of a `notification.new` event. The same for every recipient,
/// so a fan-out renders it once.
pub(crate) fn notification(keyring: &Keyring, n: &StoredNotification) -> Result<serde_json::Value> {
    let plain = keyring
        .open(&n.content, n.message_id.as_str().as_bytes())
        .map_err(|e| {
            CoreError::Internal(format!("cannot open notification {}: {e}", n.message_id))
        })?;
    let content: serde_json::Value = serde_json::from_slice(&plain).map_err(|e| {
        CoreError::Internal(format!(
            "notification {} content is not JSON: {e}",
            n.message_id
        ))
    })?;
    Ok(serde_json::json!({
        "message_id": n.message_id,
        "kind": n.kind,
        "from": n.sender,
        "content": content,
        "sent_at": n.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    }))
}

pub(crate) fn event(keyring: &Keyring, e: &StoredEvent) -> Result<Event> {
    let data = match &e.body {
        EventBody::Notification(n) | EventBody::Broadcast(n) => notification(keyring, n)?,
        EventBody::Message(m) => serde_json::to_value(message(keyring, m)?)
            .map_err(|err| CoreError::Internal(format!("cannot render a message: {err}")))?,
        EventBody::Data(text) => serde_json::from_str(text).map_err(|err| {
            CoreError::Internal(format!("event {} has corrupt data: {err}", e.seq))
        })?,
    };
    Ok(Event {
        seq: e.seq,
        kind: e.kind,
        ts: e.at,
        data,
    })
}

pub(crate) fn delivery(keyring: &Keyring, e: &StoredEvent) -> Result<Delivery> {
    let rendered = event(keyring, e)?;
    let revokes = if e.kind == EventType::SessionRevoked {
        rendered
            .data
            .get("session_id")
            .and_then(|v| v.as_str())
            .and_then(|s| SessionId::parse(s).ok())
    } else {
        None
    };
    let json = serde_json::to_vec(&rendered)
        .map_err(|err| CoreError::Internal(format!("cannot encode: {err}")))?;
    Ok(Delivery {
        user: e.user_id.clone(),
        seq: e.seq,
        kind: e.kind,
        json: Bytes::from(json),
        revokes,
    })
}
