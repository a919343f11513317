//! OpenAPI schemas of the identifier newtypes (feature `openapi`).
//!
//! The ids serialize as plain strings (and [`Seq`] as an integer); their
//! schemas say so and carry the shape that parsing enforces, so the
//! document describes exactly what the server accepts.

use std::borrow::Cow;

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::ids::{ConversationId, GroupId, MessageId, Platform, Seq, SessionId, UserId};

/// A user, session or message id: 1 to 64 ASCII letters, digits, `_ . -`.
const TOKEN_PATTERN: &str = "^[A-Za-z0-9_.-]{1,64}$";

fn string_schema(pattern: &str, description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([example])
        .into()
}

macro_rules! string_schema {
    ($name:ident, $pattern:expr, $description:literal, $example:literal) => {
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                string_schema($pattern, $description, $example)
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

string_schema!(
    UserId,
    TOKEN_PATTERN,
    "A user's stable id, chosen by a business system or generated: ASCII letters, digits, '_', '.' and '-'.",
    "alice"
);
string_schema!(
    SessionId,
    TOKEN_PATTERN,
    "A login session (one platform and device of one user).",
    "0199a3b2-7c1e-7d6a-9f1e-3b7c2d4e5f60"
);
string_schema!(
    MessageId,
    TOKEN_PATTERN,
    "A message's id, assigned by the server (a UUIDv7).",
    "0199a3b2-7c1e-7d6a-9f1e-3b7c2d4e5f61"
);
string_schema!(
    GroupId,
    TOKEN_PATTERN,
    "A group's id: 'g_' and a UUIDv7 when the server creates it, or chosen by a business system (ASCII letters, digits, '_', '.' and '-').",
    "g_0199a3b27c1e7d6a9f1e3b7c2d4e5f62"
);
string_schema!(
    Platform,
    "^[a-z0-9_]{1,32}$",
    "A client platform such as web, ios, android, desktop, mini_program or cli: 1 to 32 lower-case ASCII letters, digits and '_'.",
    "web"
);
string_schema!(
    ConversationId,
    "^(d:[A-Za-z0-9_.-]{1,64}:[A-Za-z0-9_.-]{1,64}|[gs]:[A-Za-z0-9_.-]{1,64})$",
    "A conversation: 'd:{a}:{b}' for the direct chat of users a < b, 'g:{group}' for a group's chat, or 's:{user}' for a user's system conversation (notifications).",
    "d:alice:bob"
);

impl PartialSchema for Seq {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0))
            .description(Some(
                "A position in one user's inbox. Seqs start at 1 and have no gaps; 0 means before the first event.",
            ))
            .examples([42])
            .into()
    }
}

impl ToSchema for Seq {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Seq")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patterns accept what parsing accepts (spot checks; the
    /// patterns are written for JSON Schema's ECMA-262 dialect).
    #[test]
    fn examples_parse() {
        assert!(UserId::parse("alice").is_ok());
        assert!(Platform::parse("web").is_ok());
        assert!(ConversationId::parse("d:alice:bob").is_ok());
        assert!(ConversationId::parse("g:g_0199a3b27c1e7d6a9f1e3b7c2d4e5f62").is_ok());
        assert!(GroupId::parse("g_0199a3b27c1e7d6a9f1e3b7c2d4e5f62").is_ok());
        let json = serde_json::to_value(UserId::schema()).unwrap_or_default();
        assert_eq!(json["type"], "string");
        assert_eq!(
            serde_json::to_value(Seq::schema()).unwrap_or_default()["type"],
            "integer"
        );
    }
}
