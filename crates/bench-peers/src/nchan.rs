//! nginx + nchan: pub/sub over HTTP.
//!
//! A subscriber is a WebSocket on `GET /sub/CHANNEL`; every message
//! published to the channel arrives as one text frame whose payload is the
//! published body, unchanged. Publishing is `POST /pub/CHANNEL` with the
//! body; nchan answers 201 (new message, no subscriber yet) or 202 (queued
//! and sent to the subscribers) once the message is stored in its
//! in-memory buffer and handed to the subscribers' connections. Channel
//! ids must match `\w+` (the config's `location` regex). nchan sends no
//! keep-alive of its own on WebSockets by default, and a new subscriber
//! gets only messages published after it subscribed unless told otherwise,
//! so each run uses channels named after its run id.

use anyhow::{Context, Result, bail};

use crate::PeerCtx;
use crate::ws::{self, Ws};

/// A WebSocket subscribed to `channel`.
pub(crate) async fn subscribe(ctx: &PeerCtx, channel: &str) -> Result<Ws> {
    ws::connect(&ctx.ws_url(&format!("/sub/{channel}")), None).await
}

/// Publishes `body` to `channel`.
pub(crate) async fn publish(ctx: &PeerCtx, channel: &str, body: String) -> Result<()> {
    let url = ctx.http_url(&format!("/pub/{channel}"));
    let response = ctx
        .http
        .post(&url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!("POST {url}: {status}: {text}");
    }
    Ok(())
}
