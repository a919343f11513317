//! The WebSocket client every peer adapter uses: tokio-tungstenite with
//! small buffers (the bench holds thousands of connections; the default
//! 128 KiB read buffer each would cost the bench, not the server, over a
//! GiB at 10k), an optional subprotocol (`mqtt`, `xmpp`) and a connect
//! timeout.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) use tokio_tungstenite::tungstenite::Message;

/// An open client WebSocket.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest wait for the TCP connect and the upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Read buffer of each connection.
const READ_BUFFER: usize = 4096;

/// Opens `url`, asking for `subprotocol` when given (tungstenite then
/// checks that the server picked it).
pub(crate) async fn connect(url: &str, subprotocol: Option<&str>) -> Result<Ws> {
    let mut request = url
        .into_client_request()
        .with_context(|| format!("bad WebSocket URL {url:?}"))?;
    if let Some(protocol) = subprotocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocol).context("bad subprotocol")?,
        );
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0);
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(e).with_context(|| format!("cannot open {url}")),
        Err(_) => bail!(
            "no WebSocket upgrade from {url} within {} s",
            CONNECT_TIMEOUT.as_secs()
        ),
    }
}
