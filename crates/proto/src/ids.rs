//! Identifier newtypes. Each one validates its shape when parsed, from JSON or
//! from a path segment, so invalid ids never reach the core.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct IdError {
    pub kind: &'static str,
    pub reason: &'static str,
}

/// Characters allowed in user ids, usernames and device ids: ASCII letters,
/// digits and `_ . -`. `:` is reserved as the separator of conversation ids.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn check_token(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError {
            kind,
            reason: "must not be empty",
        });
    }
    if s.len() > max {
        return Err(IdError {
            kind,
            reason: "too long",
        });
    }
    if !s.chars().all(is_token_char) {
        return Err(IdError {
            kind,
            reason: "only ASCII letters, digits, '_', '.' and '-' are allowed",
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$meta])*
        ///
        /// Shared, not copied, by its clones: a connection's ids are one
        /// allocation however many places hold them.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses and validates an identifier.
            pub fn parse(s: impl AsRef<str>) -> Result<Self, IdError> {
                let s = s.as_ref();
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(s)?;
                Ok(Self(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a ", $kind))
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::parse(s).map_err(E::custom)
                    }
                }
                d.deserialize_str(Visitor)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

string_id!(
    /// A user's stable id: chosen by a business system or generated.
    UserId,
    "user id",
    |s| check_token("user id", s, 64)
);

string_id!(
    /// A login session (one platform + device of one user).
    SessionId,
    "session id",
    |s| check_token("session id", s, 64)
);

string_id!(
    /// A message's id, assigned by the server.
    MessageId,
    "message id",
    |s| check_token("message id", s, 64)
);

string_id!(
    /// A group's id: server-generated (`g_` and a UUIDv7) or chosen by a
    /// business system through the admin API.
    GroupId,
    "group id",
    |s| check_token("group id", s, 64)
);

string_id!(
    /// A client platform such as `web`, `ios`, `android`, `desktop`,
    /// `mini_program` or `cli`: lower-case letters, digits and `_`.
    Platform,
    "platform",
    |s| {
        if s.is_empty() || s.len() > 32 {
            return Err(IdError { kind: "platform", reason: "must be 1 to 32 characters" });
        }
        if !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(IdError {
                kind: "platform",
                reason: "only lower-case ASCII letters, digits and '_' are allowed",
            });
        }
        Ok(())
    }
);

/// A conversation: `d:{a}:{b}` for direct chat between users `a < b`,
/// `g:{group}` for a group's chat, or `s:{user}` for a user's system
/// conversation (notifications from business systems).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ConversationId(String);

impl ConversationId {
    /// The direct conversation of two users; the order of arguments does not matter.
    pub fn direct(a: &UserId, b: &UserId) -> Self {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        Self(format!("d:{lo}:{hi}"))
    }

    /// The system conversation of a user.
    pub fn system(user: &UserId) -> Self {
        Self(format!("s:{user}"))
    }

    /// The conversation of a group.
    pub fn group(group: &GroupId) -> Self {
        Self(format!("g:{group}"))
    }

    /// The group of a group conversation.
    pub fn group_id(&self) -> Option<GroupId> {
        self.0
            .strip_prefix("g:")
            .and_then(|g| GroupId::parse(g).ok())
    }

    /// The owner of a system conversation.
    pub fn system_owner(&self) -> Option<UserId> {
        self.0
            .strip_prefix("s:")
            .and_then(|u| UserId::parse(u).ok())
    }

    pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        let err = |reason| IdError {
            kind: "conversation id",
            reason,
        };
        let mut parts = s.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("s"), Some(user), None, None) => {
                UserId::parse(user).map_err(|_| err("malformed user id"))?;
                Ok(Self(s))
            }
            (Some("g"), Some(group), None, None) => {
                GroupId::parse(group).map_err(|_| err("malformed group id"))?;
                Ok(Self(s))
            }
            (Some("d"), Some(a), Some(b), None) => {
                let a = UserId::parse(a).map_err(|_| err("malformed user id"))?;
                let b = UserId::parse(b).map_err(|_| err("malformed user id"))?;
                if a >= b {
                    return Err(err(
                        "direct conversation members must be ordered and distinct",
                    ));
                }
                Ok(Self(s))
            }
            _ => Err(err("unknown conversation kind")),
        }
    }

    /// The two members of a direct conversation.
    pub fn direct_members(&self) -> Option<(UserId, UserId)> {
        let mut parts = self.0.split(':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("d"), Some(a), Some(b)) => Some((UserId::parse(a).ok()?, UserId::parse(b).ok()?)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConversationId({:?})", self.0)
    }
}

impl<'de> Deserialize<'de> for ConversationId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(s).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for ConversationId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

/// A position in one user's inbox. Seqs start at 1 and have no gaps; 0 means
/// "before the first event".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn direct_conversation_is_order_independent() {
        let a = UserId::parse("alice").unwrap();
        let b = UserId::parse("bob").unwrap();
        assert_eq!(
            ConversationId::direct(&a, &b),
            ConversationId::direct(&b, &a)
        );
        assert_eq!(ConversationId::direct(&a, &b).as_str(), "d:alice:bob");
    }

    #[test]
    fn conversation_parse_rejects_bad_shapes() {
        for bad in [
            "", "d:", "d:a", "d:b:a", "d:a:a", "d:a:b:c", "x:a:b", "d:a b:c", "g:", "g:a:b",
            "g:a b",
        ] {
            assert!(ConversationId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(ConversationId::parse("d:a:b").is_ok());
        let group = GroupId::parse("g_1").unwrap();
        let conv = ConversationId::parse("g:g_1").unwrap();
        assert_eq!(conv, ConversationId::group(&group));
        assert_eq!(conv.group_id(), Some(group));
        assert_eq!(conv.direct_members(), None);
    }

    proptest! {
        #[test]
        fn user_id_parse_never_panics_and_round_trips(s in ".{0,80}") {
            if let Ok(id) = UserId::parse(s.clone()) {
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert!(!s.contains(':'));
            }
        }

        #[test]
        fn conversation_members_round_trip(a in "[a-z0-9_.-]{1,20}", b in "[a-z0-9_.-]{1,20}") {
            prop_assume!(a != b);
            let (ua, ub) = (UserId::parse(a).unwrap(), UserId::parse(b).unwrap());
            let c = ConversationId::direct(&ua, &ub);
            let parsed = ConversationId::parse(c.as_str()).unwrap();
            let (lo, hi) = parsed.direct_members().expect("no members");
            prop_assert!(lo < hi);
            prop_assert!((lo == ua && hi == ub) || (lo == ub && hi == ua));
        }
    }
}
