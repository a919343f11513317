//! The scenario engine shared by unimsg's scenarios and the peer adapters
//! (`crates/bench-peers`): what differs between servers is the protocol,
//! what they share is how connections are held and read, how a run is
//! measured and how it is reported.
//!
//! - [`fleet`]: many connections of one protocol, each read by its own
//!   task; a protocol is a [`fleet::Receiver`] (the next payload, a
//!   keep-alive, a close), opened (connected and subscribed) by a closure
//!   of the scenario.
//! - [`idle`]: the server's memory and CPU around opening and holding idle
//!   connections, and their summary lines and JSON.
//! - [`rounds`]: broadcast rounds, one after another, each published by a
//!   [`rounds::Publish`] side (an admin broadcast, an HTTP publish, an
//!   MQTT PUBLISH) and counted until every connection has it or it stalls;
//!   then added up, with their summary lines and JSON.
//! - [`direct`]: watching senders and receivers until everything sent has
//!   arrived or the run stalls, and the throughput and latency figures.
//!
//! A scenario's report goes through [`Say`], the summary's one method, so
//! that both crates' contexts can take it.

pub mod direct;
pub mod fleet;
pub mod idle;
pub mod rounds;

use crate::stats::Summary;

/// Where a scenario writes its human summary, one line at a time (the
/// `say!` macro calls it).
pub trait Say {
    fn say(&self, line: std::fmt::Arguments<'_>);
}

impl Say for crate::Ctx {
    fn say(&self, line: std::fmt::Arguments<'_>) {
        crate::Ctx::say(self, line);
    }
}

/// The first two lines of every fan-out summary: how many connections
/// opened, how fast, and their connect latency.
pub fn say_opened(out: &impl Say, opened: u64, failed: u64, connect_secs: f64, connect: Summary) {
    say!(
        out,
        "opened         {opened} in {connect_secs:.3} s ({:.0}/s), {failed} failed",
        opened as f64 / connect_secs
    );
    say!(out, "connect        {}", connect.line());
}
