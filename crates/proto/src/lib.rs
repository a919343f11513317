//! Wire types of the unimsg v1 protocol, shared by the server and its clients.
//!
//! Nothing here does I/O. Identifiers are newtypes that can only be built from
//! valid input ("parse, don't validate"), so that every layer above can rely on
//! their shape.

/// Declares a fieldless enum whose wire form is a fixed name per variant,
/// spelled once: the serde rename, `as_str`, `parse` and `ALL` all come
/// from the one table.
macro_rules! wire_names {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $wire)] $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$($wire),+].len()] = [$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }

            /// The variant of a wire name.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($wire => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

pub mod admin;
pub mod api;
pub mod error;
pub mod event;
pub mod friends;
pub mod groups;
pub mod hooks;
pub mod ids;
#[cfg(feature = "openapi")]
mod openapi;
pub mod ws;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use event::{Event, EventData, EventType};
pub use ids::{ConversationId, GroupId, IdError, MessageId, Platform, Seq, SessionId, UserId};
