//! `unimsg_live_connections{transport, platform}`: the live WebSocket and
//! SSE connections of this node, counted while each is open.
//!
//! Platforms are names clients choose at login, so only the common ones
//! are labels of their own; any other counts as `other`, which keeps the
//! number of series bounded whatever clients send.

use unimsg_proto::Platform;

/// Platforms with a series of their own.
const NAMED: &[&str] = &[
    "web", "ios", "android", "desktop", "macos", "windows", "linux", "ipad", "h5",
];

/// One open connection in the gauge; leaving it when dropped.
pub(crate) struct Live(metrics::Gauge);

impl Live {
    pub(crate) fn open(transport: &'static str, platform: &Platform) -> Self {
        let platform = NAMED
            .iter()
            .find(|p| **p == platform.as_str())
            .copied()
            .unwrap_or("other");
        let gauge = metrics::gauge!(
            "unimsg_live_connections",
            "transport" => transport,
            "platform" => platform
        );
        gauge.increment(1.0);
        Live(gauge)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
