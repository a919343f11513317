//! Client library for the unimsg v1 API: HTTP calls, the WebSocket connection,
//! the SSE event stream and the admin API ([`AdminClient`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use unimsg_client::Client;
//! use unimsg_client::proto::{Platform, UserId, api::LoginRequest};
//!
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let tokens = client
//!     .login(&LoginRequest {
//!         username: "alice".into(),
//!         password: "correct horse".into(),
//!         platform: Platform::parse("cli")?,
//!         device_id: None,
//!     })
//!     .await?;
//! let alice = client.with_token(tokens.access_token);
//! let mut ws = alice.connect_ws(None).await?;
//! alice.send_text(&UserId::parse("bob")?, "hi", None).await?;
//! while let Some(event) = ws.next_event().await? {
//!     println!("{} {}", event.seq, event.kind.as_str());
//! }
//! # Ok(())
//! # }
//! ```

mod admin;
mod client;
mod error;
mod sse;
mod ws;

pub use admin::{AdminClient, AdminCredentials, AuditFilter, MAX_IMPORT_BATCH};
pub use client::{Authed, Client, text_message};
pub use error::{ClientError, Result};
pub use sse::{SseConnection, SseEvent};
pub use ws::{WsConnection, WsReady};

/// The HTTP method type taken by [`Client::raw`].
pub use reqwest::Method;
/// The wire types, re-exported so users need not depend on `unimsg-proto` directly.
pub use unimsg_proto as proto;
