//! How long the store takes, as the operator sees it on `/metrics`:
//! `unimsg_store_duration_seconds{call}`, observed by both backends the
//! same way (from the call to its result, waiting for a connection or the
//! writer included).

use std::sync::OnceLock;
use std::time::Duration;

/// What kind of store call was timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// A read (a pooled reader, a read-only snapshot).
    Read,
    /// A write, committed (the embedded store's batch and fsync, or a
    /// PostgreSQL transaction with its retries).
    Write,
    /// PostgreSQL only: one statement (or reads that need no common
    /// snapshot) on a pooled connection, outside an explicit transaction.
    Statement,
}

/// The series name.
pub const STORE_DURATION: &str = "unimsg_store_duration_seconds";

/// Records one call. The two handles are registered once, at the first
/// call, with the recorder installed then (the server installs its
/// recorder before it opens the store).
pub fn observe(call: Call, took: Duration) {
    static HANDLES: OnceLock<[metrics::Histogram; 3]> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| {
        [
            metrics::histogram!(STORE_DURATION, "call" => "read"),
            metrics::histogram!(STORE_DURATION, "call" => "write"),
            metrics::histogram!(STORE_DURATION, "call" => "statement"),
        ]
    });
    let handle = match call {
        Call::Read => &handles[0],
        Call::Write => &handles[1],
        Call::Statement => &handles[2],
    };
    handle.record(took.as_secs_f64());
}
