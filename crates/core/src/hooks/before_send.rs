//! The before-send hook: before a user's message (direct or group, over
//! HTTP or WebSocket) is stored, `hooks.before_send.url` is asked, with a
//! request signed like a webhook, and its answer decides: store it as it
//! is, refuse it (403 `rejected`), or store other content. A timeout, an
//! error status or an unreadable answer counts as
//! `hooks.before_send.on_failure`. Only the sender waits: each check has
//! its own deadline, and the transport's pooled connections are shared.

use std::time::Duration;

use tokio::time::Instant;

use unimsg_proto::UserId;
use unimsg_proto::api::{MessageKind, Recipient};
use unimsg_proto::hooks::{BeforeSendAnswer, BeforeSendRequest};

use super::HookRequest;
use super::sign::{self, HookSecret};
use crate::Core;
use crate::config::OnFailure;
use crate::error::{CoreError, Result};

/// One message to check.
pub(crate) struct Outgoing<'a> {
    pub(crate) sender: &'a UserId,
    pub(crate) to: &'a Recipient,
    pub(crate) kind: MessageKind,
    pub(crate) content: &'a [u8],
    pub(crate) client_msg_id: Option<&'a str>,
}

impl Core {
    /// Whether messages of `kind` go through the hook.
    pub(crate) fn before_send_applies(&self, kind: MessageKind) -> bool {
        let config = &self.config.hooks.before_send;
        !config.url.is_empty() && config.kinds.contains(&kind)
    }

    /// Asks the hook about `message`: `None` to store it as it is, or the
    /// content to store instead. A refusal is `CoreError::Rejected`.
    pub(crate) async fn before_send(&self, message: Outgoing<'_>) -> Result<Option<Vec<u8>>> {
        let config = &self.config.hooks.before_send;
        let url = &config.url;
        if url.is_empty() {
            return Ok(None);
        }
        let started = Instant::now();
        let answer = self.ask_before_send(url, &message).await;
        metrics::histogram!("unimsg_before_send_seconds").record(started.elapsed().as_secs_f64());
        let answer = match answer {
            Ok(answer) => answer,
            Err(why) => {
                metrics::counter!("unimsg_before_send_decisions_total", "decision" => "failure")
                    .increment(1);
                tracing::warn!(%why, on_failure = ?config.on_failure, "the before-send hook failed");
                return match config.on_failure {
                    OnFailure::Allow => Ok(None),
                    OnFailure::Reject => Err(CoreError::Rejected(
                        "the message could not be checked; try again later".into(),
                    )),
                };
            }
        };
        match answer {
            BeforeSendAnswer::Allow => {
                metrics::counter!("unimsg_before_send_decisions_total", "decision" => "allow")
                    .increment(1);
                Ok(None)
            }
            BeforeSendAnswer::Reject { reason } => {
                metrics::counter!("unimsg_before_send_decisions_total", "decision" => "reject")
                    .increment(1);
                let reason = if reason.trim().is_empty() {
                    "the message was rejected".to_owned()
                } else {
                    reason.chars().take(500).collect()
                };
                Err(CoreError::Rejected(reason))
            }
            BeforeSendAnswer::Modify { content } => {
                metrics::counter!("unimsg_before_send_decisions_total", "decision" => "modify")
                    .increment(1);
                let bytes = serde_json::to_vec(&content)
                    .map_err(|e| CoreError::Internal(format!("cannot encode content: {e}")))?;
                if bytes.len() > self.config.messaging.max_content_bytes {
                    return Err(CoreError::TooLarge(
                        "the content given by the before-send hook is over the size limit".into(),
                    ));
                }
                Ok(Some(bytes))
            }
        }
    }

    /// The hook's answer, or why there is none (for the log).
    async fn ask_before_send(
        &self,
        url: &str,
        m: &Outgoing<'_>,
    ) -> Result<BeforeSendAnswer, String> {
        let transport = self
            .transport
            .as_ref()
            .ok_or_else(|| "no HTTP transport is configured".to_owned())?;
        let content: serde_json::Value =
            serde_json::from_slice(m.content).map_err(|e| e.to_string())?;
        let request = BeforeSendRequest {
            sender: m.sender.clone(),
            to: serde_json::to_value(m.to).map_err(|e| e.to_string())?,
            kind: m.kind,
            content,
            client_msg_id: m.client_msg_id.map(str::to_owned),
        };
        let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        let id = format!("bs_{}", uuid::Uuid::now_v7().simple());
        let secrets: Vec<HookSecret> = self.before_send_secret.iter().cloned().collect();
        let mut headers = if secrets.is_empty() {
            Vec::new()
        } else {
            sign::headers(&secrets, &id, self.clock.now().unix_timestamp(), &body)
        };
        headers.push(("content-type", "application/json".into()));
        let timeout = Duration::from_millis(self.config.hooks.before_send.timeout_ms.max(1));
        let response = transport
            .post(HookRequest {
                url: url.to_owned(),
                headers,
                body,
                timeout,
            })
            .await
            .map_err(|e| e.to_string())?;
        if !(200..300).contains(&response.status) {
            return Err(format!("it answered HTTP {}", response.status));
        }
        serde_json::from_slice(&response.body)
            .map_err(|e| format!("its answer is not an allow, reject or modify action: {e}"))
    }
}
