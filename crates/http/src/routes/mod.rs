//! Route handlers, one module per area; each handler's doc names its path.

pub mod auth;
pub mod friends;
pub mod groups;
pub mod health;
pub mod messages;
