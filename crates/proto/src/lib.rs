//! Wire types of the unimsg v1 protocol, shared by the server and its clients.
//!
//! Nothing here does I/O. Identifiers are newtypes that can only be built from
//! valid input ("parse, don't validate"), so that every layer above can rely on
//! their shape.

pub mod admin;
pub mod api;
pub mod error;
pub mod event;
pub mod friends;
pub mod groups;
pub mod ids;
#[cfg(feature = "openapi")]
mod openapi;
pub mod ws;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use event::{Event, EventData, EventType};
pub use ids::{ConversationId, GroupId, IdError, MessageId, Platform, Seq, SessionId, UserId};
