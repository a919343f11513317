//! Starting `unimsg serve` on `127.0.0.1:0` and finding its address: the
//! one routine behind every test that runs the real binary (the
//! integration harness, the cluster tests, the tests that start it by
//! hand with other flags).
//!
//! The caller builds the command (binary, flags, environment); [`start`]
//! spawns it, keeps draining its stderr for the whole life of the process
//! (so the server never blocks on a full pipe) into [`Logs`], and returns
//! once the server logged `listening on http://ADDR`.

use std::fmt;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// What the server logs (target `unimsg::lifecycle`, at every level) once
/// it accepts plain HTTP connections, followed by its address.
pub const LISTENING: &str = "listening on http://";

/// The same, when it serves HTTPS.
pub const LISTENING_TLS: &str = "listening on https://";

/// `ADDR` from a line containing `listening on http://ADDR` or
/// `listening on https://ADDR`: the address ends at the first character
/// that cannot be part of it, such as a space or a colour escape.
pub fn listening_addr(line: &str) -> Option<&str> {
    listening(line).map(|(_, addr)| addr)
}

/// The scheme (`http` or `https`) and the address of a listening line.
pub fn listening(line: &str) -> Option<(&'static str, &str)> {
    let (scheme, rest) = if let Some(at) = line.find(LISTENING) {
        ("http", &line[at + LISTENING.len()..])
    } else {
        let at = line.find(LISTENING_TLS)?;
        ("https", &line[at + LISTENING_TLS.len()..])
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    let addr = &rest[..end];
    (!addr.is_empty()).then_some((scheme, addr))
}

/// Everything a server process wrote to stderr so far, one line each; it
/// keeps growing while the process runs.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<String>>);

impl Logs {
    /// A copy of the text logged so far.
    pub fn text(&self) -> String {
        // A panic while appending leaves a complete string behind: the
        // text is still worth showing.
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn push(&self, line: &str) {
        let mut text = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        text.push_str(line);
        text.push('\n');
    }
}

impl fmt::Debug for Logs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// A server that reported its address.
#[derive(Debug)]
pub struct Started {
    /// The process (killed when dropped).
    pub child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Its stderr, still being collected.
    pub logs: Logs,
}

/// Why [`start`] returned no server.
pub enum StartError {
    /// The command could not be run at all.
    Spawn(std::io::Error),
    /// The process ended before it logged its address.
    Exited(Logs),
    /// No address within the given time.
    Timeout(Duration, Logs),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "cannot start unimsg: {e}"),
            Self::Exited(logs) => write!(f, "unimsg exited before listening:\n{}", logs.text()),
            Self::Timeout(wait, logs) => write!(
                f,
                "unimsg did not report its address within {wait:?}:\n{}",
                logs.text()
            ),
        }
    }
}

/// The same as `Display`, so that `.expect(…)` in a test shows the
/// server's log as lines rather than one escaped string.
impl fmt::Debug for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for StartError {}

/// Spawns `cmd` (stdin and stdout null, stderr piped, killed on drop) and
/// waits up to `wait` for its `listening on http://ADDR` line. Needs a
/// tokio runtime: the stderr reader is a task of its own.
pub async fn start(mut cmd: Command, wait: Duration) -> Result<Started, StartError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(StartError::Spawn)?;
    let logs = Logs::default();
    let (addr_tx, addr_rx) = oneshot::channel::<(&'static str, String)>();
    if let Some(stderr) = child.stderr.take() {
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut stderr = BufReader::new(stderr);
            let mut addr_tx = Some(addr_tx);
            let mut line = Vec::new();
            // Bytes, not `lines()`: a line that is not UTF-8 must not stop
            // the draining.
            while stderr
                .read_until(b'\n', &mut line)
                .await
                .is_ok_and(|n| n > 0)
            {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                // Logged first, so the listening line is in the logs once
                // the address is known.
                sink.push(text);
                if let Some((scheme, addr)) = listening(text)
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send((scheme, addr.to_owned()));
                }
                line.clear();
            }
        });
    }
    match tokio::time::timeout(wait, addr_rx).await {
        Ok(Ok((scheme, addr))) => Ok(Started {
            child,
            addr,
            scheme,
            logs,
        }),
        Ok(Err(_)) => Err(StartError::Exited(logs)),
        Err(_) => Err(StartError::Timeout(wait, logs)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_the_log_line() {
        assert_eq!(
            listening_addr(
                "2024-01-01T00:00:00Z  INFO unimsg: listening on http://127.0.0.1:40123"
            ),
            Some("127.0.0.1:40123")
        );
        assert_eq!(
            listening_addr("\u{1b}[32m INFO\u{1b}[0m listening on http://127.0.0.1:5\u{1b}[0m x"),
            Some("127.0.0.1:5")
        );
        assert_eq!(
            listening_addr("listening on http://[::1]:8080 ok"),
            Some("[::1]:8080")
        );
        assert_eq!(listening_addr("listening on http:// "), None);
        assert_eq!(listening_addr("nothing here"), None);
        assert_eq!(
            listening("listening on https://127.0.0.1:8443"),
            Some(("https", "127.0.0.1:8443"))
        );
    }
}
