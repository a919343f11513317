//! The core's error type and its stable wire code.

use unimsg_proto::ErrorCode;
use unimsg_store::StoreError;

/// Everything a core operation can refuse or fail with. Messages are safe
/// to show to clients; internals are only logged.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("registration is closed on this server")]
    RegistrationClosed,
    /// The before-send hook refused a message, for this reason.
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("too many requests; retry later")]
    RateLimited(std::time::Duration),
    /// A cap on live connections was reached (429, no `Retry-After`: a
    /// slot frees when one of the caller's connections closes).
    #[error("{0}")]
    TooManyConnections(String),
    #[error("the store is unavailable")]
    Unavailable(String),
    /// An expected refusal under load (503 `busy`): nothing is broken, so
    /// it is not logged as an error.
    #[error("{0}")]
    Busy(&'static str),
    #[error("internal error")]
    Internal(String),
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

impl CoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CoreError::BadRequest(_) => ErrorCode::BadRequest,
            CoreError::Unauthorized(_) => ErrorCode::Unauthorized,
            CoreError::Forbidden(_) => ErrorCode::Forbidden,
            CoreError::RegistrationClosed => ErrorCode::RegistrationClosed,
            CoreError::Rejected(_) => ErrorCode::Rejected,
            CoreError::NotFound(_) => ErrorCode::NotFound,
            CoreError::Conflict(_) => ErrorCode::Conflict,
            CoreError::Gone(_) => ErrorCode::Gone,
            CoreError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            CoreError::RateLimited(_) | CoreError::TooManyConnections(_) => ErrorCode::RateLimited,
            CoreError::Unavailable(_) => ErrorCode::Unavailable,
            CoreError::Busy(_) => ErrorCode::Busy,
            CoreError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// A short name of the refusal, for metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            CoreError::BadRequest(_) => "bad_request",
            CoreError::Unauthorized(_) => "unauthorized",
            CoreError::Forbidden(_) => "forbidden",
            CoreError::RegistrationClosed => "registration_closed",
            CoreError::Rejected(_) => "rejected",
            CoreError::NotFound(_) => "not_found",
            CoreError::Conflict(_) => "conflict",
            CoreError::Gone(_) => "gone",
            CoreError::TooLarge(_) => "too_large",
            CoreError::RateLimited(_) | CoreError::TooManyConnections(_) => "rate_limited",
            CoreError::Unavailable(_) => "unavailable",
            CoreError::Busy(_) => "busy",
            CoreError::Internal(_) => "internal",
        }
    }

    /// For 429 and a busy 503: how long until a retry may pass.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            CoreError::RateLimited(d) => Some(*d),
            CoreError::Busy(_) => Some(std::time::Duration::from_secs(1)),
            _ => None,
        }
    }

    /// Detail for the server log; never sent to clients.
    pub fn internal_detail(&self) -> Option<&str> {
        match self {
            CoreError::Unavailable(d) | CoreError::Internal(d) => Some(d),
            _ => None,
        }
    }
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => CoreError::Conflict(format!("{what} already exists")),
            StoreError::Stale => CoreError::Conflict("it changed concurrently; try again".into()),
            StoreError::NotFound(what) => CoreError::NotFound(format!("{what} not found")),
            StoreError::Unavailable(d) => CoreError::Unavailable(d),
            StoreError::Internal(d) => CoreError::Internal(d),
        }
    }
}
