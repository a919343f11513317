//! The one error response: `{"error": {"code", "message"}}` with the
//! status fixed by the code. 5xx details go to the log, never to clients.

use std::any::Any;
use std::sync::OnceLock;

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use unimsg_core::CoreError;
use unimsg_core::throttle::LogThrottle;
use unimsg_proto::{ErrorBody, ErrorCode};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For 429: sent as `Retry-After`, in whole seconds rounded up.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code, self.message.clone())
    }
}

/// 5xx details are logged at most once per 10 s per detail (with the count
/// held back), so a failing dependency under a flood of requests writes a
/// few lines, not one per request. Expected refusals (4xx, 503 `busy`)
/// carry no detail and are not logged here at all.
fn failure_log() -> &'static LogThrottle {
    static THROTTLE: OnceLock<LogThrottle> = OnceLock::new();
    THROTTLE.get_or_init(|| LogThrottle::new(std::time::Duration::from_secs(10)))
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        if let Some(detail) = e.internal_detail() {
            let key: String = detail.chars().take(120).collect();
            if let Some(held_back) = failure_log().allow(&key) {
                tracing::error!(error = %detail, code = ?e.code(), held_back, "request failed");
            }
        }
        let mut api = ApiError::new(e.code(), e.to_string());
        api.retry_after = e.retry_after();
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body())).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// A handler panicked: a bug. The client gets a plain 500, the log the detail.
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = %detail, "handler panicked");
    ApiError::new(ErrorCode::Internal, "internal error").into_response()
}

/// A deserializer's complaint in words for a client: without the
/// framework's preamble, the position, or Rust type names (`struct
/// NotifyRequest`, `u32`, `variant identifier`). The field path and the
/// allowed values stay.
pub fn plain_words(message: &str) -> String {
    let mut text = message;
    for preamble in [
        "Failed to deserialize the JSON body into the target type: ",
        "Failed to parse the request body as JSON: ",
        "Failed to deserialize query string: ",
    ] {
        if let Some(rest) = text.strip_prefix(preamble) {
            text = rest;
        }
    }
    let mut out = match text.rfind(" at line ") {
        Some(at) if text[at..].contains(" column ") => text[..at].to_owned(),
        _ => text.to_owned(),
    };
    for (rust, words) in [
        ("variant identifier", "one of the allowed values"),
        ("field identifier", "a known field"),
        ("a sequence", "a list"),
        ("a map", "an object"),
        ("a boolean", "true or false"),
        ("usize", "a whole number"),
        ("u64", "a whole number"),
        ("u32", "a whole number"),
        ("u16", "a whole number"),
        ("u8", "a whole number"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("f64", "a number"),
    ] {
        out = out.replace(&format!("expected {rust}"), &format!("expected {words}"));
    }
    for kind in ["struct ", "enum ", "tuple struct "] {
        while let Some(at) = out.find(&format!("expected {kind}")) {
            let name_start = at + "expected ".len() + kind.len();
            let name_end = out[name_start..]
                .find(|c: char| !c.is_alphanumeric() && c != '_')
                .map_or(out.len(), |n| name_start + n);
            let words = if kind == "enum " {
                "one of the allowed values"
            } else {
                "an object"
            };
            out.replace_range(at..name_end, &format!("expected {words}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializer_messages_lose_their_rust_words() {
        for (raw, plain) in [
            (
                "Failed to deserialize the JSON body into the target type: to: unknown variant `usr`, expected `user` or `group` at line 1 column 12",
                "to: unknown variant `usr`, expected `user` or `group`",
            ),
            (
                "Failed to deserialize the JSON body into the target type: invalid type: integer `5`, expected struct NotifyRequest at line 1 column 1",
                "invalid type: integer `5`, expected an object",
            ),
            (
                "Failed to deserialize query string: limit: invalid digit found in string",
                "limit: invalid digit found in string",
            ),
            (
                "seq: invalid type: string \"x\", expected u64 at line 1 column 9",
                "seq: invalid type: string \"x\", expected a whole number",
            ),
            (
                "kind: invalid type: map, expected enum DevicePolicy",
                "kind: invalid type: map, expected one of the allowed values",
            ),
        ] {
            assert_eq!(plain_words(raw), plain);
        }
    }
}
