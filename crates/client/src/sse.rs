//! The Server-Sent Events stream (`GET /v1/events`).

use std::fmt;

use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use reqwest::RequestBuilder;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use unimsg_proto::Event;

use crate::error::{ClientError, Result};

type Messages =
    BoxStream<'static, Result<eventsource_stream::Event, EventStreamError<reqwest::Error>>>;

/// One inbox event received over SSE.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The SSE `id:` field (the event's seq), if the server sent one.
    pub id: Option<String>,
    pub event: Event,
}

/// An open `text/event-stream` response.
pub struct SseConnection {
    messages: Messages,
    ended: bool,
}

impl fmt::Debug for SseConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseConnection")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl SseConnection {
    /// Sends `req` and checks that the answer is an event stream.
    pub(crate) async fn open(req: RequestBuilder) -> Result<Self> {
        let resp = req.header(ACCEPT, "text/event-stream").send().await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await?;
            return Err(ClientError::from_response(status.as_u16(), &body));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !is_event_stream(content_type) {
            return Err(ClientError::Protocol(format!(
                "expected text/event-stream, got content type {content_type:?}"
            )));
        }
        Ok(SseConnection {
            messages: resp.bytes_stream().eventsource().boxed(),
            ended: false,
        })
    }

    /// The next inbox event; `None` once the server has ended the stream.
    /// Keep-alive comments are skipped.
    pub async fn next_event(&mut self) -> Result<Option<SseEvent>> {
        while !self.ended {
            let Some(message) = self.messages.next().await else {
                self.ended = true;
                break;
            };
            let message = message.map_err(stream_error)?;
            // Messages without data carry nothing for us (the parser already
            // drops comment lines, this covers bare `retry:`/`id:` blocks).
            if message.data.is_empty() {
                continue;
            }
            let event = serde_json::from_str(&message.data)?;
            let id = Some(message.id).filter(|id| !id.is_empty());
            return Ok(Some(SseEvent { id, event }));
        }
        Ok(None)
    }

    /// True once the server has ended the stream.
    pub fn is_ended(&self) -> bool {
        self.ended
    }
}

fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
}

fn stream_error(e: EventStreamError<reqwest::Error>) -> ClientError {
    match e {
        EventStreamError::Transport(e) => e.into(),
        EventStreamError::Utf8(e) => {
            ClientError::Protocol(format!("event stream is not UTF-8: {e}"))
        }
        EventStreamError::Parser(e) => {
            ClientError::Protocol(format!("malformed event stream: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_content_types() {
        assert!(is_event_stream("text/event-stream"));
        assert!(is_event_stream("text/event-stream; charset=utf-8"));
        assert!(is_event_stream("Text/Event-Stream"));
        assert!(!is_event_stream("application/json"));
        assert!(!is_event_stream(""));
    }
}
