//! The error type of every client call.

use tokio_tungstenite::tungstenite;
use unimsg_proto::{ErrorBody, ErrorCode};

/// Result alias used throughout the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Anything that can go wrong talking to a unimsg server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-2xx status and a well-formed error body.
    #[error("server error {status} ({code:?}): {message}")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
    },

    /// The server answered with a non-2xx status whose body is not an error body.
    #[error("unexpected status {status}: {body}")]
    UnexpectedStatus { status: u16, body: String },

    /// The server rejected a WebSocket frame with an `error` reply.
    #[error("frame rejected ({code:?}): {message}")]
    Rejected { code: ErrorCode, message: String },

    /// The WebSocket was closed before the expected frame arrived.
    #[error("websocket closed (close code {code:?})")]
    Closed { code: Option<u16> },

    /// The base URL given to [`crate::Client::new`] cannot be used.
    #[error("invalid base url: {0}")]
    InvalidBaseUrl(String),

    /// The CA certificates given to [`crate::Client::with_root_certificates`]
    /// cannot be used.
    #[error("invalid CA certificate: {0}")]
    InvalidCertificate(String),

    /// The server sent something that does not follow the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),

    /// A connection or transfer failure of an HTTP request.
    #[error("http transport error: {0}")]
    Http(#[source] reqwest::Error),

    /// A connection or transfer failure of the WebSocket.
    #[error("websocket error: {0}")]
    WebSocket(#[source] tungstenite::Error),

    /// A body or frame could not be decoded into the expected type.
    #[error("cannot decode server data: {0}")]
    Decode(#[from] serde_json::Error),
}

impl ClientError {
    /// The HTTP status, for errors that came with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::UnexpectedStatus { status, .. } => {
                Some(*status)
            }
            ClientError::Http(e) => e.status().map(|s| s.as_u16()),
            _ => None,
        }
    }

    /// The protocol error code, from an HTTP error body or a WebSocket `error` reply.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } | ClientError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Builds the error for a non-2xx response from its status and raw body.
    pub(crate) fn from_response(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody { error }) => ClientError::Api {
                status,
                code: error.code,
                message: error.message,
            },
            Err(_) => {
                // Keep the message readable even if a proxy answered with a whole HTML page.
                const MAX_BODY: usize = 512;
                let mut body = String::from_utf8_lossy(body).into_owned();
                if body.len() > MAX_BODY {
                    let mut cut = MAX_BODY;
                    while !body.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    body.truncate(cut);
                    body.push('…');
                }
                ClientError::UnexpectedStatus { status, body }
            }
        }
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        // The URL may carry an access token as a query parameter; never echo it.
        ClientError::Http(e.without_url())
    }
}

impl From<tungstenite::Error> for ClientError {
    fn from(e: tungstenite::Error) -> Self {
        match e {
            // A refused upgrade carries the server's usual JSON error body.
            tungstenite::Error::Http(resp) => {
                let body = resp.body().as_deref().unwrap_or_default();
                ClientError::from_response(resp.status().as_u16(), body)
            }
            other => ClientError::WebSocket(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_becomes_api_error() {
        let err = ClientError::from_response(
            404,
            br#"{"error":{"code":"not_found","message":"no such message"}}"#,
        );
        assert!(matches!(
            &err,
            ClientError::Api { status: 404, code: ErrorCode::NotFound, message } if message == "no such message"
        ));
        assert_eq!(err.status(), Some(404));
        assert_eq!(err.code(), Some(ErrorCode::NotFound));
    }

    #[test]
    fn other_bodies_are_kept_and_truncated() {
        let err = ClientError::from_response(502, b"bad gateway");
        assert!(
            matches!(&err, ClientError::UnexpectedStatus { status: 502, body } if body == "bad gateway")
        );
        assert_eq!(err.code(), None);

        let long = "é".repeat(1000);
        match ClientError::from_response(500, long.as_bytes()) {
            ClientError::UnexpectedStatus { body, .. } => assert!(body.len() < 520),
            other => panic!("unexpected {other:?}"),
        }
    }
}
