//! Turns stored rows into wire values: opens sealed content and renders
//! inbox events.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use unimsg_proto::api::{Message, MessageKind};
use unimsg_proto::event::{NotificationData, SessionRevokedData};
use unimsg_proto::{ConversationId, Event, EventType, MessageId, Seq, UserId};
use unimsg_store::{EventBody, Sealed, StoredEvent, StoredMessage, StoredNotification, StoredText};

use crate::error::{CoreError, Result};
use crate::hub::Delivery;
use crate::keys::Keyring;

/// The associated data a message's content is sealed with: its id, its
/// sender and its conversation, so that content moved to another row, or
/// a row re-attributed to another sender or conversation, does not open.
pub(crate) fn message_aad(
    id: &MessageId,
    sender: &UserId,
    conversation: &ConversationId,
) -> Vec<u8> {
    // NUL cannot appear in an id.
    format!("unimsg-message-v2\0{id}\0{sender}\0{conversation}").into_bytes()
}

/// A stored message's content. Messages stored before the content was
/// bound to sender and conversation are bound to their id alone.
pub(crate) fn open_message(
    keyring: &Keyring,
    m: &StoredMessage,
) -> std::result::Result<Vec<u8>, crate::keys::KeyError> {
    let aad = message_aad(&m.message_id, &m.sender, &m.conversation_id);
    keyring
        .open(&m.content, &aad)
        .or_else(|_| keyring.open(&m.content, m.message_id.as_str().as_bytes()))
}

/// A message's content as JSON text: `null` once recalled, else the
/// opened content.
fn content_json(keyring: &Keyring, m: &StoredMessage) -> Result<std::borrow::Cow<'static, [u8]>> {
    if m.recalled_at.is_some() {
        return Ok(std::borrow::Cow::Borrowed(b"null"));
    }
    open_message(keyring, m)
        .map(std::borrow::Cow::Owned)
        .map_err(|e| CoreError::Internal(format!("cannot open message {}: {e}", m.message_id)))
}

/// [`content_json`] parsed as `T` (a value, or a checked raw value).
fn parse_content<'a, T: Deserialize<'a>>(m: &StoredMessage, json: &'a [u8]) -> Result<T> {
    serde_json::from_slice(json).map_err(|e| {
        CoreError::Internal(format!("message {} content is not JSON: {e}", m.message_id))
    })
}

pub(crate) fn message(keyring: &Keyring, m: &StoredMessage) -> Result<Message> {
    let content = parse_content(m, &content_json(keyring, m)?)?;
    Ok(Message {
        message_id: m.message_id.clone(),
        conversation_id: m.conversation_id.clone(),
        conv_seq: m.conv_seq,
        from: m.sender.clone(),
        to: m.recipient.clone(),
        kind: MessageKind::parse(&m.kind).unwrap_or(MessageKind::Chat),
        content,
        client_msg_id: m.client_msg_id.clone(),
        sent_at: m.created_at,
        recalled: m.recalled_at.is_some(),
    })
}

/// An event's data as the inbox row stores it.
pub(crate) fn event_json(data: &impl Serialize) -> Result<String> {
    serde_json::to_string(data)
        .map_err(|e| CoreError::Internal(format!("cannot encode an event's data: {e}")))
}

/// The data of a `notification.new` event. The same for every recipient,
/// so a fan-out renders it once.
pub(crate) fn notification(keyring: &Keyring, n: &StoredNotification) -> Result<NotificationData> {
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
    Ok(NotificationData {
        message_id: n.message_id.clone(),
        kind: n.kind.clone(),
        from: n.sender.clone(),
        content,
        sent_at: n
            .created_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    })
}

/// Associated data of a friend request's sealed text: it opens only as
/// the text of the request from `from` to `to`.
pub(crate) fn friend_request_aad(from: &str, to: &str) -> Vec<u8> {
    format!("friend-request:{from}:{to}").into_bytes()
}

/// The words of a friend request as a row holds them. A text that does not
/// open (a lost data key) reads as none, with a warning, rather than
/// making the whole list or inbox unreadable.
pub(crate) fn request_text(
    keyring: &Keyring,
    text: Option<&StoredText>,
    from: &str,
    to: &str,
) -> Option<String> {
    match text? {
        StoredText::Plain(plain) => Some(plain.clone()),
        StoredText::Sealed(sealed) => open_request_text(keyring, sealed, from, to),
    }
}

fn open_request_text(keyring: &Keyring, sealed: &Sealed, from: &str, to: &str) -> Option<String> {
    match keyring.open(sealed, &friend_request_aad(from, to)) {
        Ok(plain) => String::from_utf8(plain).ok(),
        Err(error) => {
            tracing::warn!(%error, from, to, "cannot open a friend request's text");
            None
        }
    }
}

/// A `friend.request` event's data carries the text sealed
/// (`message_sealed`, base64 of `Sealed::to_bytes`); the client sees it
/// as `message`. Events written before sealing carry `message` already.
fn open_friend_request(keyring: &Keyring, data: &mut serde_json::Value) {
    let Some(obj) = data.as_object_mut() else {
        return;
    };
    let Some(sealed) = obj.remove("message_sealed") else {
        return;
    };
    let from = obj.get("from").and_then(|v| v.as_str()).unwrap_or_default();
    let to = obj.get("to").and_then(|v| v.as_str()).unwrap_or_default();
    let text = sealed
        .as_str()
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|bytes| Sealed::from_bytes(&bytes))
        .and_then(|s| open_request_text(keyring, &s, from, to));
    obj.insert("message".into(), text.into());
}

pub(crate) fn event(keyring: &Keyring, e: &StoredEvent) -> Result<Event> {
    let mut data = match &e.body {
        EventBody::Notification(n) | EventBody::Broadcast(n) => {
            serde_json::to_value(notification(keyring, n)?).map_err(|err| {
                CoreError::Internal(format!("cannot render a notification: {err}"))
            })?
        }
        EventBody::Message(m) => serde_json::to_value(message(keyring, m)?)
            .map_err(|err| CoreError::Internal(format!("cannot render a message: {err}")))?,
        EventBody::Data(text) => serde_json::from_str(text).map_err(|err| {
            CoreError::Internal(format!("event {} has corrupt data: {err}", e.seq))
        })?,
    };
    if e.kind == EventType::FriendRequest {
        open_friend_request(keyring, &mut data);
    }
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
        SessionRevokedData::deserialize(&rendered.data)
            .ok()
            .map(|d| d.session_id)
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

/// The live deliveries of stored events, each the same JSON as
/// [`delivery`] renders (a message's fields in the struct's order rather
/// than sorted), except that consecutive copies of one message (a direct
/// message's sender and recipient) share one rendering of it: its content
/// is opened and encoded once, and only the envelope with each user's seq
/// is written per copy. An event that cannot be rendered is an `Err` in
/// its place, so the result has one entry per event.
pub(crate) fn deliveries(keyring: &Keyring, events: &[StoredEvent]) -> Vec<Result<Delivery>> {
    let mut shared: Option<(&MessageId, Box<RawValue>)> = None;
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let EventBody::Message(m) = &e.body else {
            out.push(delivery(keyring, e));
            continue;
        };
        if shared.as_ref().is_none_or(|(id, _)| *id != &m.message_id) {
            match encoded_message(keyring, m) {
                Ok(data) => shared = Some((&m.message_id, data)),
                Err(error) => {
                    shared = None;
                    out.push(Err(error));
                    continue;
                }
            }
        }
        let Some((_, data)) = &shared else {
            out.push(Err(CoreError::Internal(
                "no rendering of the message".into(),
            )));
            continue;
        };
        let event = EncodedEvent {
            seq: e.seq,
            kind: e.kind,
            ts: e.at,
            data,
        };
        out.push(
            serde_json::to_vec(&event)
                .map(|json| Delivery {
                    user: e.user_id.clone(),
                    seq: e.seq,
                    kind: e.kind,
                    json: Bytes::from(json),
                    revokes: None,
                })
                .map_err(|err| CoreError::Internal(format!("cannot encode: {err}"))),
        );
    }
    out
}

/// A stored message rendered as [`message`] renders it, without parsing
/// its content into a `serde_json::Value` and writing it out again: the
/// opened content is checked to be JSON and passed through. Stored
/// content is what `serde_json` wrote from a parsed value (the send
/// paths and the before-send hook's replacement both encode one), which
/// parsing and writing again reproduces byte for byte.
fn encoded_message(keyring: &Keyring, m: &StoredMessage) -> Result<Box<RawValue>> {
    let json = content_json(keyring, m)?;
    let content: &RawValue = parse_content(m, &json)?;
    let encoded = EncodedMessage {
        message_id: &m.message_id,
        conversation_id: &m.conversation_id,
        conv_seq: m.conv_seq,
        from: &m.sender,
        to: &m.recipient,
        kind: MessageKind::parse(&m.kind).unwrap_or(MessageKind::Chat),
        content,
        client_msg_id: m.client_msg_id.as_deref(),
        sent_at: m.created_at,
        recalled: m.recalled_at.is_some(),
    };
    serde_json::value::to_raw_value(&encoded)
        .map_err(|err| CoreError::Internal(format!("cannot encode: {err}")))
}

/// A [`Message`] whose content is already encoded: the same fields, in the
/// same order and with the same forms, so it serializes as the `Message`
/// would.
#[derive(Serialize)]
struct EncodedMessage<'a> {
    message_id: &'a MessageId,
    conversation_id: &'a ConversationId,
    conv_seq: u64,
    from: &'a UserId,
    to: &'a unimsg_proto::api::Recipient,
    kind: MessageKind,
    content: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_msg_id: Option<&'a str>,
    #[serde(with = "time::serde::rfc3339")]
    sent_at: time::OffsetDateTime,
    recalled: bool,
}

/// An [`Event`] whose data is already encoded: the same fields, in the
/// same order and with the same forms, so it serializes byte for byte as
/// the `Event` would.
#[derive(Serialize)]
struct EncodedEvent<'a> {
    seq: Seq,
    #[serde(rename = "type")]
    kind: EventType,
    #[serde(with = "time::serde::rfc3339")]
    ts: time::OffsetDateTime,
    data: &'a RawValue,
}

/// Deliveries of one event that many users receive with the same data
/// (a group message, a broadcast): the data is rendered and encoded once,
/// and only the envelope with each user's own seq is written per user.
pub(crate) fn shared_deliveries(
    kind: EventType,
    ts: time::OffsetDateTime,
    data: &impl Serialize,
    targets: impl IntoIterator<Item = (UserId, Seq)>,
) -> Result<Vec<std::sync::Arc<Delivery>>> {
    let encode = |e: serde_json::Error| CoreError::Internal(format!("cannot encode: {e}"));
    let data = serde_json::value::to_raw_value(data).map_err(encode)?;
    targets
        .into_iter()
        .map(|(user, seq)| {
            let event = EncodedEvent {
                seq,
                kind,
                ts,
                data: &data,
            };
            let json = serde_json::to_vec(&event).map_err(encode)?;
            Ok(std::sync::Arc::new(Delivery {
                user,
                seq,
                kind,
                json: Bytes::from(json),
                revokes: None,
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared delivery is byte for byte what rendering the event alone gives.
    #[test]
    fn shared_deliveries_match_single_rendering() {
        let ts = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let data = serde_json::json!({"message_id": "m1", "content": {"text": "hé \"x\""}});
        let user = UserId::parse("u1").unwrap();
        let shared = shared_deliveries(EventType::MessageNew, ts, &data, [(user, Seq(7))]).unwrap();
        let single = serde_json::to_vec(&Event {
            seq: Seq(7),
            kind: EventType::MessageNew,
            ts,
            data,
        })
        .unwrap();
        assert_eq!(shared[0].json.as_ref(), single.as_slice());
    }

    /// Typed data encoded once is what sync renders from the stored row.
    #[test]
    fn shared_notifications_match_single_rendering() {
        let ts = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let data = NotificationData {
            content: serde_json::json!({"title": "t", "body": "b"}),
            from: "security".into(),
            kind: "notification".into(),
            message_id: unimsg_proto::MessageId::parse("m1").unwrap(),
            sent_at: "2023-11-14T22:13:20Z".into(),
        };
        let user = UserId::parse("u1").unwrap();
        let shared =
            shared_deliveries(EventType::NotificationNew, ts, &data, [(user, Seq(3))]).unwrap();
        let single = serde_json::to_vec(&Event {
            seq: Seq(3),
            kind: EventType::NotificationNew,
            ts,
            data: serde_json::to_value(&data).unwrap(),
        })
        .unwrap();
        assert_eq!(shared[0].json.as_ref(), single.as_slice());
    }

    /// The sender's and the recipient's copies of one message, rendered
    /// once and shared, are each what rendering the event alone gives.
    #[test]
    fn copies_of_one_message_share_a_rendering_equal_to_their_own() {
        let keyring = Keyring::for_tests();
        let (a, b) = (UserId::parse("ua").unwrap(), UserId::parse("ub").unwrap());
        let id = MessageId::parse("m1").unwrap();
        let conversation = ConversationId::direct(&a, &b);
        let aad = message_aad(&id, &a, &conversation);
        // Stored content is what serde_json writes (the send path encodes
        // a parsed value): the shared rendering passes it through.
        let content = keyring
            .seal(r#"{"text":"hé \"x\"","a":[1,2.5,null]}"#.as_bytes(), &aad)
            .unwrap();
        let stored = StoredMessage {
            message_id: id,
            conversation_id: conversation,
            conv_seq: 1,
            sender: a.clone(),
            recipient: unimsg_proto::api::Recipient::User(b.clone()),
            kind: "chat".into(),
            content,
            client_msg_id: Some("c1".into()),
            created_at: time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            recalled_at: None,
        };
        let copy = |user: &UserId, seq: u64| StoredEvent {
            user_id: user.clone(),
            seq: Seq(seq),
            kind: EventType::MessageNew,
            at: stored.created_at,
            body: EventBody::Message(Box::new(stored.clone())),
        };
        let events = [copy(&a, 4), copy(&b, 9)];
        let shared = deliveries(&keyring, &events);
        assert_eq!(shared.len(), 2);
        for (event, rendered) in events.iter().zip(shared) {
            let rendered = rendered.unwrap();
            let alone = delivery(&keyring, event).unwrap();
            assert_eq!(
                (rendered.user.clone(), rendered.seq),
                (event.user_id.clone(), event.seq)
            );
            let parsed: serde_json::Value = serde_json::from_slice(&rendered.json).unwrap();
            let expected: serde_json::Value = serde_json::from_slice(&alone.json).unwrap();
            assert_eq!(parsed, expected);
            // The stored content itself, not a rewrite of it.
            let text = std::str::from_utf8(&rendered.json).unwrap();
            assert!(
                text.contains(r#""content":{"text":"hé \"x\"","a":[1,2.5,null]}"#),
                "{text}"
            );
        }
    }
}
