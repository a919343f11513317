//! soketi: the Pusher Channels protocol (version 7) over WebSocket, and the
//! Pusher HTTP API to trigger events.
//!
//! A subscriber opens `/app/APP_KEY?protocol=7&…`, waits for
//! `pusher:connection_established`, sends
//! `{"event":"pusher:subscribe","data":{"channel":C}}` and counts as open
//! once `pusher_internal:subscription_succeeded` for C arrives. Public
//! channels need no auth. A triggered event arrives as
//! `{"event":NAME,"channel":C,"data":STRING}`, where `data` is the string
//! given to the API (here the bench's JSON content). soketi closes a
//! connection after 120 s without a client message, so idle clients send
//! `pusher:ping` every `activity_timeout` (30 s, what soketi announces), as
//! pusher-js does when nothing arrives; a server `pusher:ping` is answered
//! with `pusher:pong`.
//!
//! Triggering is `POST /apps/APP_ID/events` with the body
//! `{"name","channels":[C],"data"}`, authenticated by the query
//! `auth_key, auth_timestamp, auth_version=1.0, body_md5` (hex MD5 of the
//! body) and `auth_signature`: hex HMAC-SHA256, keyed by the app secret, of
//! `"POST\n" + path + "\n" + those four parameters sorted by name and
//! joined as `k=v&…`. HMAC comes from aws-lc-rs (the workspace's one crypto
//! provider); aws-lc-rs has no MD5, so the body hash uses the `md-5` crate
//! (bench only). The app id, key and secret are those of
//! `scripts/peers/soketi/soketi.json`'s default app.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use aws_lc_rs::hmac;
use futures_util::{SinkExt, StreamExt};
use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::PeerCtx;
use crate::ws::{self, Message, Ws};

pub(crate) const APP_ID: &str = "app-id";
pub(crate) const APP_KEY: &str = "app-key";
pub(crate) const APP_SECRET: &str = "app-secret";

/// The event name of the bench's messages.
pub(crate) const EVENT: &str = "bench";

/// How often an idle client pings (soketi's `activity_timeout`).
pub(crate) const PING_EVERY: Duration = Duration::from_secs(30);

/// Longest wait for the connection and subscription handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// One Pusher protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub event: String,
    pub channel: Option<String>,
    /// `data` as a string (an object is serialised back to JSON).
    pub data: Option<String>,
}

/// Parses a text frame from the server.
pub(crate) fn parse_frame(text: &str) -> Result<Frame> {
    let v: Value = serde_json::from_str(text).context("a Pusher frame is not JSON")?;
    let Some(event) = v["event"].as_str() else {
        bail!("a Pusher frame without an event: {text}");
    };
    let data = match &v["data"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    Ok(Frame {
        event: event.to_owned(),
        channel: v["channel"].as_str().map(str::to_owned),
        data,
    })
}

/// The client's keep-alive frame.
pub(crate) fn ping_frame() -> String {
    json!({"event": "pusher:ping", "data": {}}).to_string()
}

/// The answer to a server `pusher:ping`.
pub(crate) fn pong_frame() -> String {
    json!({"event": "pusher:pong", "data": {}}).to_string()
}

/// A WebSocket subscribed to the public `channel`.
pub(crate) async fn subscribe(ctx: &PeerCtx, channel: &str) -> Result<Ws> {
    let url = ctx.ws_url(&format!(
        "/app/{APP_KEY}?protocol=7&client=unimsg-bench&version=0.1&flash=false"
    ));
    let mut ws = ws::connect(&url, None).await?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut ws, channel))
        .await
        .with_context(|| {
            format!(
                "no Pusher subscription within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            )
        })??;
    Ok(ws)
}

async fn handshake(ws: &mut Ws, channel: &str) -> Result<()> {
    let established = next_frame(ws).await?;
    if established.event != "pusher:connection_established" {
        bail!("expected pusher:connection_established, got {established:?}");
    }
    let subscribe = json!({"event": "pusher:subscribe", "data": {"auth": "", "channel": channel}});
    ws.send(Message::text(subscribe.to_string())).await?;
    loop {
        let frame = next_frame(ws).await?;
        match frame.event.as_str() {
            "pusher_internal:subscription_succeeded"
                if frame.channel.as_deref() == Some(channel) =>
            {
                return Ok(());
            }
            "pusher:error" | "pusher:subscription_error" => {
                bail!("subscription refused: {:?}", frame.data)
            }
            "pusher:ping" => ws.send(Message::text(pong_frame())).await?,
            _ => {}
        }
    }
}

/// The next Pusher frame, skipping WebSocket control frames.
async fn next_frame(ws: &mut Ws) -> Result<Frame> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return parse_frame(&text),
            Some(Ok(Message::Close(close))) => bail!("closed by soketi: {close:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("WebSocket read failed"),
            None => bail!("closed by soketi"),
        }
    }
}

/// Triggers event [`EVENT`] on `channel` with `data` through the HTTP API.
pub(crate) async fn trigger(ctx: &PeerCtx, channel: &str, data: String) -> Result<()> {
    let path = format!("/apps/{APP_ID}/events");
    let body = json!({"name": EVENT, "channels": [channel], "data": data}).to_string();
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let query = signed_query(
        "POST",
        &path,
        body.as_bytes(),
        APP_KEY,
        APP_SECRET,
        timestamp,
    );
    let url = ctx.http_url(&format!("{path}?{query}"));
    let response = ctx
        .http
        .post(&url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {path}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!("POST {path}: {status}: {text}");
    }
    Ok(())
}

/// The authentication query of a Pusher HTTP API request, signature last.
pub(crate) fn signed_query(
    method: &str,
    path: &str,
    body: &[u8],
    key: &str,
    secret: &str,
    timestamp: u64,
) -> String {
    let body_md5 = hex(&Md5::digest(body));
    // Already sorted by parameter name, as the signature requires.
    let params =
        format!("auth_key={key}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}");
    let to_sign = format!("{method}\n{path}\n{params}");
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let signature = hex(hmac::sign(&key, to_sign.as_bytes()).as_ref());
    format!("{params}&auth_signature={signature}")
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values computed independently with Python's `hashlib.md5`
    /// and `hmac.new(b"app-secret", …, hashlib.sha256)`.
    #[test]
    fn signature_matches_an_independent_computation() {
        let body = br#"{"name":"bench","channels":["b_0a1b2c3d"],"data":"{\"round\":1}"}"#;
        let query = signed_query(
            "POST",
            "/apps/app-id/events",
            body,
            "app-key",
            "app-secret",
            1_700_000_000,
        );
        assert_eq!(
            query,
            "auth_key=app-key&auth_timestamp=1700000000&auth_version=1.0\
             &body_md5=16afc9be4f6dd53626b5c7af5ef3968f\
             &auth_signature=92227854ff63ecdc867b60637ebbe31e65b7e664845932c4cd37184eb36cd92c"
        );
    }

    #[test]
    fn frames_parse_with_string_or_object_data() -> Result<()> {
        let f = parse_frame(r#"{"event":"bench","channel":"c","data":"{\"run\":\"x\"}"}"#)?;
        assert_eq!(f.event, "bench");
        assert_eq!(f.channel.as_deref(), Some("c"));
        assert_eq!(f.data.as_deref(), Some(r#"{"run":"x"}"#));
        let f = parse_frame(r#"{"event":"pusher:pong","data":{}}"#)?;
        assert_eq!((f.channel, f.data.as_deref()), (None, Some("{}")));
        assert!(parse_frame(r#"{"data":1}"#).is_err());
        assert!(parse_frame("nope").is_err());
        Ok(())
    }
}
