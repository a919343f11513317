//! The accept loop: caps on open connections (in all and per IP), a
//! header read timeout, and graceful shutdown.
//!
//! `axum::serve` sets no timer, so a client that never finishes its
//! headers holds its connection (and a file descriptor) forever; enough of
//! them starve the process of descriptors. Here every connection is served
//! by hyper-util's builder with a timer and `header_read_timeout`, and is
//! admitted only under the caps. The admission ([`Permit`]) lives inside
//! the connection's socket wrapper ([`Counted`]), so a connection that
//! upgrades to a WebSocket keeps counting until the socket is dropped; an
//! SSE stream is an ordinary response and counts while it runs.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt;
use unimsg_http::{ArrivedOverTls, HttpConfig};

use crate::tls::Tls;

/// Descriptors kept for everything but client connections: the listener,
/// the runtime, the SQLite files of the writer and the reader pool, the
/// PostgreSQL pool and Redis in a cluster, logs, key files.
const FD_RESERVE: u64 = 256;

/// Used when the open-file limit cannot be read, or is unlimited.
const FALLBACK_MAX_CONNECTIONS: usize = 10_000;

/// At most one log line per this interval about refused connections.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The soft open-file limit of this process (`/proc/self/limits`, Linux).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `http.max_connections`, or when it is 0 the open-file limit less
/// [`FD_RESERVE`] (at least half of the limit, for small limits): past
/// it `accept` would fail with EMFILE and the server could no longer open
/// its own files, so it is better to close the extra connections itself.
pub(crate) fn max_connections(config: &HttpConfig) -> (usize, Option<u64>) {
    let limit = open_file_limit();
    if config.max_connections > 0 {
        return (config.max_connections, limit);
    }
    (derived_max_connections(limit), limit)
}

fn derived_max_connections(limit: Option<u64>) -> usize {
    match limit {
        Some(l) => usize::try_from(l.saturating_sub(FD_RESERVE).max(l / 2))
            .unwrap_or(FALLBACK_MAX_CONNECTIONS)
            .max(1),
        None => FALLBACK_MAX_CONNECTIONS,
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Total,
    PerIp,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerIp => "max_connections_per_ip",
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The open connections, counted in all and per IP address.
pub(crate) struct Caps {
    max_total: usize,
    /// 0: no cap per IP.
    max_per_ip: usize,
    /// Peers not capped per IP (trusted proxies: their clients share the
    /// proxy's address).
    exempt: Vec<IpNet>,
    counts: Mutex<Counts>,
}

impl Caps {
    pub(crate) fn new(max_total: usize, max_per_ip: usize, exempt: Vec<IpNet>) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_ip,
            exempt,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let ip = ip.to_canonical();
        let per_ip = self.max_per_ip > 0 && !self.exempt.iter().any(|n| n.contains(&ip));
        let mut counts = self.counts.lock().map_err(|_| Refusal::Total)?;
        if counts.total >= self.max_total {
            return Err(Refusal::Total);
        }
        if per_ip {
            let held = counts.per_ip.entry(ip).or_insert(0);
            if *held >= self.max_per_ip {
                return Err(Refusal::PerIp);
            }
            *held += 1;
        }
        counts.total += 1;
        metrics::gauge!("unimsg_http_connections").increment(1.0);
        Ok(Permit {
            caps: self.clone(),
            ip: per_ip.then_some(ip),
        })
    }
}

/// One admitted connection; dropping it frees its place.
struct Permit {
    caps: Arc<Caps>,
    /// Set when the connection counts against its IP's cap.
    ip: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.caps.counts.lock() {
            counts.total = counts.total.saturating_sub(1);
            if let Some(ip) = self.ip
                && let Some(held) = counts.per_ip.get_mut(&ip)
            {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    counts.per_ip.remove(&ip);
                }
            }
        }
        metrics::gauge!("unimsg_http_connections").decrement(1.0);
    }
}

/// A client socket with its admission: the permit is released when the
/// socket is dropped, whether by hyper or, after an upgrade, by the
/// WebSocket task that took it over.
struct Counted {
    tcp: TcpStream,
    _permit: Permit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Counts refused connections and logs them at most once per
/// [`REFUSAL_LOG_EVERY`], so a flood cannot flood the log.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn refused(&mut self, why: Refusal, peer: IpAddr, caps: &Caps) {
        metrics::counter!("unimsg_http_connections_refused_total", "cap" => why.label())
            .increment(1);
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            cap = why.label(),
            %peer,
            refused = self.unlogged,
            max_connections = caps.max_total,
            max_connections_per_ip = caps.max_per_ip,
            "connection refused: over the connection cap (count since the last such line)"
        );
        self.last = Some(now);
        self.unlogged = 0;
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops
/// accepting, runs `on_shutdown` (which closes the live WebSocket and SSE
/// connections), lets in-flight requests finish and waits for every
/// connection to end. With `tls`, every connection is a TLS one: its
/// handshake must end within `http.header_read_timeout_secs`, like a
/// request's headers, and its requests carry [`ArrivedOverTls`].
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    http: &HttpConfig,
    caps: Arc<Caps>,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_shutdown: impl FnOnce(),
) {
    let idle = Duration::from_secs(http.header_read_timeout_secs.max(1));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle);
    // Dropped to tell every connection to finish; each holds a receiver.
    let (signal_tx, signal_rx) = watch::channel(());
    // Closed once every connection task has dropped its clone.
    let (close_tx, close_rx) = watch::channel(());
    let mut refusals = RefusalLog::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            () = shutdown.as_mut() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(error) => {
                    // EMFILE and the like: wait for descriptors to free
                    // instead of spinning on the error.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let permit = match caps.admit(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                // Closed at once: the caller learns nothing but that it
                // was refused, and the descriptor is free again.
                drop(tcp);
                refusals.refused(why, peer.ip(), &caps);
                continue;
            }
        };
        // Small writes (events, acks, QR status) must leave at once:
        // without TCP_NODELAY they wait for the client's delayed ACK.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let socket = Counted {
            tcp,
            _permit: permit,
        };
        let conn = Connection {
            app: app.clone(),
            peer,
            builder: builder.clone(),
            signal: signal_rx.clone(),
            idle,
        };
        let close = close_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => conn.run(socket, false).await,
                Some(tls) => match tokio::time::timeout(idle, tls.acceptor.accept(socket)).await {
                    Ok(Ok(stream)) => conn.run(stream, true).await,
                    Ok(Err(error)) => {
                        metrics::counter!("unimsg_tls_handshake_failures_total").increment(1);
                        tracing::debug!(%error, %peer, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!("unimsg_tls_handshake_failures_total").increment(1);
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                },
            }
            drop(close);
        });
    }
    drop(listener);
    on_shutdown();
    drop(signal_tx);
    drop(close_rx);
    close_tx.closed().await;
}

/// What one accepted connection is served with.
struct Connection {
    app: Router,
    peer: SocketAddr,
    builder: Builder<TokioExecutor>,
    signal: watch::Receiver<()>,
    idle: Duration,
}

impl Connection {
    /// Serves the connection's requests until it ends or is told to.
    async fn run<IO>(self, io: IO, over_tls: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            app,
            peer,
            builder,
            mut signal,
            idle,
        } = self;
        // Told when a request starts and when its response is ready.
        let activity = Arc::new(Notify::new());
        let (started, answered) = (activity.clone(), activity.clone());
        let service = app
            .map_request(move |req: Request<Incoming>| {
                started.notify_one();
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                if over_tls {
                    req.extensions_mut().insert(ArrivedOverTls);
                }
                req
            })
            .map_response(move |response| {
                answered.notify_one();
                response
            });
        let service = TowerToHyperService::new(service);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        // hyper's header timeout covers a connection's first request,
        // not the wait for the next one on a kept-alive connection:
        // a connection on which no request started and no response
        // was ready for that long is told to finish. hyper then closes
        // it at once if it is idle, or after the response it is
        // writing (an SSE stream runs on to its end).
        let mut quiet = std::pin::pin!(tokio::time::sleep(idle));
        let mut draining = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::trace!(%error, "connection ended with an error");
                    }
                    break;
                }
                _ = signal.changed(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = activity.notified(), if !draining => {
                    quiet.as_mut().reset(Instant::now() + idle);
                }
                () = quiet.as_mut(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Answers every request on a plain listener with a permanent redirect
/// to the same path on `https://{host}:{port}` (`tls.redirect_from`),
/// the host being the request's own without its port. Nothing else is
/// served there.
pub(crate) fn redirect_app(https_port: u16) -> Router {
    use axum::http::{StatusCode, Uri, header};
    use axum::response::IntoResponse;
    Router::new().fallback(move |headers: axum::http::HeaderMap, uri: Uri| async move {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<axum::http::uri::Authority>().ok());
        let Some(host) = host else {
            return (
                StatusCode::BAD_REQUEST,
                "this address only redirects to HTTPS; send a Host header",
            )
                .into_response();
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let target = if https_port == 443 {
            format!("https://{}{path}", host.host())
        } else {
            format!("https://{}:{https_port}{path}", host.host())
        };
        (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, target)]).into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_cap_leaves_descriptors_for_the_server() {
        assert_eq!(derived_max_connections(Some(1024)), 768);
        assert_eq!(derived_max_connections(Some(20_000)), 19_744);
        assert_eq!(
            derived_max_connections(Some(256)),
            128,
            "half of a small limit"
        );
        assert_eq!(derived_max_connections(Some(1)), 1);
        // "unlimited" does not parse as a number.
        assert_eq!(derived_max_connections(None), FALLBACK_MAX_CONNECTIONS);
    }

    #[test]
    fn caps_count_in_all_and_per_ip_and_exempt_trusted_proxies() {
        let proxy: IpNet = "10.9.9.9/32".parse().unwrap();
        let caps = Caps::new(4, 2, vec![proxy]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let p: IpAddr = "10.9.9.9".parse().unwrap();
        let first = caps.admit(a).unwrap_or_else(|e| panic!("{e:?}"));
        let _second = caps.admit(a).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(caps.admit(a).err(), Some(Refusal::PerIp));
        let _p1 = caps.admit(p).unwrap_or_else(|e| panic!("{e:?}"));
        let _p2 = caps.admit(p).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(caps.admit(p).err(), Some(Refusal::Total));
        drop(first);
        assert!(caps.admit(a).is_ok(), "a dropped permit frees its place");
        assert!(caps.counts.lock().map(|c| c.total).unwrap_or(0) <= 4);
    }
}
