//! Stable error codes and the `{"error": {"code", "message"}}` body.

use serde::{Deserialize, Serialize};

/// Every error a client can receive. The code string is stable; the HTTP
/// status is fixed per code ([`ErrorCode::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed: bad JSON, wrong types, invalid values.
    BadRequest,
    /// No credentials, or credentials that are invalid, expired or revoked.
    Unauthorized,
    /// Authenticated, but not allowed to do this.
    Forbidden,
    /// Registration is switched off on this server.
    RegistrationClosed,
    /// The before-send hook refused the message; the message says why.
    Rejected,
    NotFound,
    /// The method is not allowed on this path.
    MethodNotAllowed,
    /// The request conflicts with the current state (e.g. the username is taken).
    Conflict,
    /// The action's window has passed (e.g. a recall after the recall window).
    Gone,
    /// The body, the content or a frame is over its limit.
    PayloadTooLarge,
    UnsupportedMediaType,
    /// The request's body did not arrive within `http.request_timeout_secs`.
    RequestTimeout,
    RateLimited,
    Internal,
    /// A dependency (the store) is unavailable; retry later.
    Unavailable,
    /// The server refuses new work of this kind for now (e.g. the replay
    /// store or the password workers are full); retry later.
    Busy,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::RegistrationClosed | ErrorCode::Rejected => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::Gone => 410,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable | ErrorCode::Busy => 503,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}
