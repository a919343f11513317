//! Route handlers, one module per area; each handler's doc names its path.

pub(crate) mod auth;
pub(crate) mod friends;
pub(crate) mod groups;
pub(crate) mod health;
pub(crate) mod messages;
