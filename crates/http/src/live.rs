//! `unimsg_live_connections{transport, platform}`: the live WebSocket and
//! SSE connections of this node, counted while each is open.
//!
//! Platforms are names clients choose at login, so only the common ones
//! are labels of their own; any other counts as `other`, which keeps the
//! number of series bounded whatever clients send.

use std::sync::atomic::{AtomicU64, Ordering};

use unimsg_proto::Platform;
use unimsg_proto::admin::LiveCount;

/// Platforms with a series of their own.
const NAMED: &[&str] = &[
    "web", "ios", "android", "desktop", "macos", "windows", "linux", "ipad", "h5",
];

/// The transports, in the order of [`COUNTS`]' rows.
const TRANSPORTS: [&str; 2] = ["ws", "sse"];

/// The same counts as the gauge, readable here for the node's report
/// ([`live_counts`]): a row per transport, a column per named platform and
/// one for `other`.
static COUNTS: [[AtomicU64; NAMED.len() + 1]; 2] =
    [const { [const { AtomicU64::new(0) }; NAMED.len() + 1] }; 2];

/// One open connection in the gauge; leaving it when dropped.
pub(crate) struct Live {
    gauge: metrics::Gauge,
    count: &'static AtomicU64,
}

impl Live {
    pub(crate) fn open(transport: Transport, platform: &Platform) -> Self {
        let column = NAMED
            .iter()
            .position(|p| *p == platform.as_str())
            .unwrap_or(NAMED.len());
        let gauge = metrics::gauge!(
            "unimsg_live_connections",
            "transport" => TRANSPORTS[transport as usize],
            "platform" => NAMED.get(column).copied().unwrap_or("other")
        );
        gauge.increment(1.0);
        let count = &COUNTS[transport as usize][column];
        count.fetch_add(1, Ordering::Relaxed);
        Live { gauge, count }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A live connection's transport.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Transport {
    Ws = 0,
    Sse = 1,
}

/// This node's live connections by transport and platform, leaving out
/// the pairs with none.
pub fn live_counts() -> Vec<LiveCount> {
    let mut out = Vec::new();
    for (transport, row) in TRANSPORTS.iter().zip(&COUNTS) {
        for (column, count) in row.iter().enumerate() {
            let connections = count.load(Ordering::Relaxed);
            if connections > 0 {
                out.push(LiveCount {
                    transport: (*transport).to_owned(),
                    platform: NAMED.get(column).copied().unwrap_or("other").to_owned(),
                    connections,
                });
            }
        }
    }
    out
}
