//! Holding the connections of `idle`, `broadcast` and `sse`, in this
//! process or spread over child processes, from one or several source
//! addresses.
//!
//! One process can hold about as many sockets as its open-file limit
//! (~19.9k here), and one source address reaches one server address and
//! port through ~28k ephemeral ports. So the connections are split into
//! `--procs` contiguous shares, each held by a *holder*, and every
//! connection leaves from one of `--source-ips`, chosen round-robin by its
//! index over the whole run. With `--procs 1` the one holder is a task of
//! this process; with more, each holder is a child process of this
//! executable (the hidden subcommand `hold`), and the parent holds no
//! connection itself. Both kinds run the same [`holder::serve`]; only the
//! channel differs (in-process queues, or JSON lines over the child's
//! stdin and stdout).
//!
//! The protocol ([`protocol`]), one JSON object per line:
//!
//! 1. parent → holder: a [`protocol::Job`] (server URL, tokens with their
//!    number of connections, source addresses, transport, which events to
//!    count);
//! 2. the holder opens its connections and answers `{"reply":"ready",…}`
//!    ([`protocol::Opened`]: connections open, failures, connect-latency
//!    histogram);
//! 3. while events of the run arrive, it reports `{"reply":"progress",
//!    "round":k,"delivered":d,"last_us":t}` when round `k` has reached all
//!    its connections, and otherwise at most every
//!    [`holder::PROGRESS_EVERY`] for rounds that moved (so the parent can
//!    wait for each broadcast and detect a stall);
//! 4. `{"cmd":"report","posted_us":[…]}` asks for [`protocol::Counts`]:
//!    connections ended by the server so far, the holder's CPU time and,
//!    for each round `k` posted at `posted_us[k]`, its deliveries, last
//!    arrival and a receive-latency histogram (as `[µs, count]` buckets).
//!    Arrival times are wall-clock microseconds since the UNIX epoch:
//!    `Instant`s mean nothing in another process, and the processes share
//!    one clock;
//! 5. `{"cmd":"close"}` closes every connection; the holder answers
//!    `{"reply":"closed",…}` ([`protocol::Ended`]) and exits.
//!
//! A holder that fails answers `{"reply":"failed","error":…}` and exits
//! non-zero. A child whose stdin reaches its end before `close` (the
//! parent died) exits at once; the parent kills its children if it gives
//! up. The parent treats a failed or vanished holder, or one that answers
//! out of turn, as a failure of the whole run.
//!
//! The parts: [`protocol`] (the messages), [`holder`] (a holder's work,
//! the same in either kind), [`child`] (the `hold` subcommand around it),
//! [`parent`] (starting the holders and talking to them).

pub mod child;
pub mod holder;
pub mod parent;
pub mod protocol;

use std::net::IpAddr;

use unimsg_client::proto::EventType;

use crate::fanout::Transport;

pub use child::child_main;
pub use parent::Holders;
pub use protocol::{OpenedAll, ended_all, wall_us};

/// How the connections are spread (flattened into the scenarios' options).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SpreadArgs {
    /// Processes holding the connections. 1 holds them in this process;
    /// more start that many child processes of this executable, each with
    /// an equal share (one process holds at most ~19.9k sockets here).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub procs: u64,
    /// Local addresses the connections leave from, comma-separated (e.g.
    /// 127.0.0.1,127.0.0.2), one per connection in turn; each has its own
    /// ~28k ephemeral ports towards the server [default: the OS chooses].
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
}

impl SpreadArgs {
    /// The source addresses as JSON strings, for reports.
    pub fn source_ips_json(&self) -> Vec<String> {
        self.source_ips.iter().map(ToString::to_string).collect()
    }
}

/// What the holders are to open and count.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// The scenario, for progress lines.
    pub label: &'a str,
    pub url: String,
    pub transport: Transport,
    /// Connection attempts in flight at once, over all holders.
    pub connect_concurrency: u64,
    /// Events of this type with `content.run == run` are counted by round.
    pub kind: EventType,
    pub run: String,
    pub spread: &'a SpreadArgs,
    /// See [`crate::Ctx::ca_pem`].
    pub ca_pem: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Result;

    #[test]
    fn spread_options_parse() -> Result<()> {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            spread: SpreadArgs,
        }
        let cli =
            Cli::try_parse_from(["t", "--procs", "2", "--source-ips", "127.0.0.1,127.0.0.2"])?;
        assert_eq!(cli.spread.procs, 2);
        assert_eq!(
            cli.spread.source_ips_json(),
            vec!["127.0.0.1".to_owned(), "127.0.0.2".to_owned()]
        );
        let cli = Cli::try_parse_from(["t"])?;
        assert_eq!((cli.spread.procs, cli.spread.source_ips.len()), (1, 0));
        assert!(Cli::try_parse_from(["t", "--procs", "0"]).is_err());
        assert!(Cli::try_parse_from(["t", "--source-ips", "127.0.0.1,nope"]).is_err());
        Ok(())
    }
}
