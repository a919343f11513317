//! WebSocket frames. Every frame is one JSON text message.
//!
//! Client → server frames carry `type` and an optional `id` that the server
//! echoes in its reply. Server → client frames are either inbox events
//! (recognisable by their `seq`) or replies.

use serde::{Deserialize, Serialize};

use crate::api::{MessageKind, Recipient, SendRequest, SendResponse};
use crate::error::ErrorDetail;
use crate::ids::{ConversationId, MessageId, Seq};

#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// First frame when the token was not given as `access_token`. Sent
    /// later on an open socket, a fresh access token of the same session
    /// moves the socket's deadline to that token's expiry (`auth.ok`).
    Auth {
        token: String,
        /// Replay the inbox after this seq before live events.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<Seq>,
    },
    Send {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        to: Recipient,
        #[serde(default = "chat")]
        kind: MessageKind,
        content: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
    },
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        seq: Seq,
    },
    Read {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation_id: ConversationId,
        message_id: MessageId,
    },
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

impl std::fmt::Debug for ClientFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientFrame::Auth { after, .. } => f
                .debug_struct("Auth")
                .field("token", &"[redacted]")
                .field("after", after)
                .finish(),
            ClientFrame::Send {
                id,
                to,
                kind,
                client_msg_id,
                ..
            } => f
                .debug_struct("Send")
                .field("id", id)
                .field("to", to)
                .field("kind", kind)
                .field("client_msg_id", client_msg_id)
                .finish(),
            ClientFrame::Ack { id, seq } => f
                .debug_struct("Ack")
                .field("id", id)
                .field("seq", seq)
                .finish(),
            ClientFrame::Read {
                id,
                conversation_id,
                message_id,
            } => f
                .debug_struct("Read")
                .field("id", id)
                .field("conversation_id", conversation_id)
                .field("message_id", message_id)
                .finish(),
            ClientFrame::Ping { id } => f.debug_struct("Ping").field("id", id).finish(),
        }
    }
}

fn chat() -> MessageKind {
    MessageKind::Chat
}

impl ClientFrame {
    /// The send request inside a `send` frame.
    pub fn into_send(self) -> Option<(Option<String>, SendRequest)> {
        match self {
            ClientFrame::Send {
                id,
                to,
                kind,
                content,
                client_msg_id,
            } => Some((
                id,
                SendRequest {
                    to,
                    kind,
                    content,
                    client_msg_id,
                },
            )),
            _ => None,
        }
    }
}

/// Replies of the server to client frames (inbox events are sent as
/// [`crate::Event`] and are not part of this enum).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReplyFrame {
    /// Authentication succeeded; `last_seq` is the newest seq of the inbox.
    Ready {
        user_id: crate::ids::UserId,
        session_id: crate::ids::SessionId,
        last_seq: Seq,
    },
    /// A stored send. Pipelined sends are answered as each completes,
    /// not necessarily in frame order: match by `id` or `client_msg_id`.
    #[serde(rename = "send.ok")]
    SendOk {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The send's `client_msg_id`, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
        #[serde(flatten)]
        result: SendResponse,
    },
    #[serde(rename = "ack.ok")]
    AckOk {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        acked: Seq,
    },
    #[serde(rename = "read.ok")]
    ReadOk {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation_id: ConversationId,
        read_upto: u64,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The refused send's `client_msg_id`, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
        error: ErrorDetail,
    },
    /// The socket's access token expires at `expires_at` (unix seconds),
    /// when the socket closes with 4001, unless an `auth` frame with a
    /// fresh token of the same session arrives first.
    #[serde(rename = "token.expiring")]
    TokenExpiring { expires_at: i64 },
    /// An `auth` frame on an open socket was accepted: it now closes at
    /// the new token's expiry, `expires_at` (unix seconds).
    #[serde(rename = "auth.ok")]
    AuthOk { expires_at: i64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_and_reject_unknown_fields() {
        let send: ClientFrame = serde_json::from_str(
            r#"{"type":"send","id":"1","to":{"user":"bob"},"content":{"text":"hi"},"client_msg_id":"c1"}"#,
        )
        .unwrap();
        let (id, req) = send.into_send().expect("not a send");
        assert_eq!(id.as_deref(), Some("1"));
        assert_eq!(req.to.as_str(), "bob");
        assert_eq!(req.kind, MessageKind::Chat);

        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"ping","bogus":1}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"ack","seq":-1}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"ping"}"#).is_ok());
    }

    #[test]
    fn replies_are_tagged() {
        let v = serde_json::to_value(ReplyFrame::Pong { id: None }).unwrap_or_default();
        assert_eq!(v["type"], "pong");
    }
}

#[cfg(test)]
mod fuzzish {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary client bytes never panic the frame parser.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = serde_json::from_str::<ClientFrame>(&text);
        }

        /// Near-miss frames (valid JSON objects with random fields) never panic either.
        #[test]
        fn random_objects_never_panic(kind in "(auth|send|ack|read|ping|x)", key in "[a-z_]{1,8}", n in any::<i64>()) {
            let text = format!(r#"{{"type":"{kind}","{key}":{n}}}"#);
            let _ = serde_json::from_str::<ClientFrame>(&text);
        }
    }
}
