//! `unimsg-bench-peers`: the `idle`, `broadcast` and `direct` scenarios of
//! `unimsg-bench` run against other messaging servers on the same machine,
//! so `scripts/bench-peers` can put unimsg's numbers next to theirs. The
//! protocols are here (one module each: `nchan`, `soketi`, `mqtt`,
//! `xmpp`; `fleet` makes their connections a `Receiver` of the scenario
//! engine); holding, measuring and reporting are `unimsg_bench::engine`'s.
//!
//! Every scenario takes the flags of its unimsg counterpart (where they
//! apply) and prints the same JSON keys as its last stdout line, plus
//! `"peer"`. What each scenario means for each peer:
//!
//! | scenario | nchan (nginx) | soketi (Pusher) | mosquitto (MQTT) | ejabberd (XMPP) |
//! |---|---|---|---|---|
//! | connection | WebSocket `GET /sub/CHANNEL` | WebSocket `/app/KEY`, `pusher:subscribe` to a public channel | MQTT 3.1.1 over WebSocket (`mqtt` subprotocol), CONNECT + SUBSCRIBE | RFC 7395 WebSocket (`xmpp` subprotocol), SASL PLAIN, bind, initial presence |
//! | `idle` | one channel per `--conns-per-user` connections | same | one topic per `--conns-per-user` connections | one user per `--conns-per-user` connections (at most 10: `max_user_sessions`) |
//! | `broadcast` | `POST /pub/CHANNEL`, N subscribers | `POST /apps/ID/events` (signed), N subscribers | one QoS 1 PUBLISH (answered by PUBACK), N QoS 0 subscribers | — |
//! | `direct` | — (no one-to-one delivery) | — | sender i → receiver i over QoS 1 with persistent sessions | `<message>` from user s_i to user r_i |
//!
//! Every message carries `{"run", "round" | "i", "t"}` as JSON, `t` in
//! nanoseconds since an `Instant` of this process, so latencies need no
//! clock synchronisation. Each scenario checks completeness (every
//! connection got every broadcast once; every direct message arrived
//! exactly once); when anything is missing it still prints its JSON line,
//! then fails.
//!
//! `--server-pid` is the process that holds the connections: nginx's worker
//! (not the master), soketi's node process, mosquitto, ejabberd's
//! `beam.smp`.
//!
//! ```text
//! unimsg-bench-peers --peer nchan --server-pid 1234 idle --connections 1000 --conns-per-user 10
//! unimsg-bench-peers --peer mosquitto broadcast --connections 1000 --broadcasts 5
//! unimsg-bench-peers --peer ejabberd direct --messages 20000 --senders 4 --window 64
//! ```
//!
//! This crate is outside the workspace's `default-members` (a root
//! `cargo build` or `cargo test` skips it; `scripts/bench-peers` builds
//! it): its protocol dependencies (`rumqttc`, `quick-xml`, `md-5`,
//! `async-nats`) serve the comparison only.

mod broadcast;
mod direct;
mod fleet;
mod idle;
mod mqtt;
mod nats;
mod nchan;
mod redis_streams;
mod soketi;
mod ws;
mod xmpp;

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;
use unimsg_bench::procfs::Probe;

/// Time allowed for one HTTP request to a peer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(
    name = "unimsg-bench-peers",
    version,
    about = "The idle, broadcast and direct scenarios against other messaging servers"
)]
pub struct PeerArgs {
    /// The peer's server process id, to report its CPU time and RSS (from
    /// /proc).
    #[arg(long, global = true, env = "UNIMSG_BENCH_SERVER_PID")]
    pub server_pid: Option<u32>,
    /// Worker threads of the bench's own runtime [default: one per core].
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
    /// Which peer server to drive.
    #[arg(long, value_enum)]
    pub peer: Peer,
    /// The peer's address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The peer's port [default: nchan 8090, soketi 6001, mosquitto 8083
    /// (MQTT over WebSocket), ejabberd 5280 (HTTP: /ws and /api),
    /// redis-streams 6390, nats 4223].
    #[arg(long)]
    pub port: Option<u16>,
    #[command(subcommand)]
    pub scenario: PeerScenario,
}

#[derive(Debug, Subcommand)]
pub enum PeerScenario {
    /// Many idle connections: server memory and CPU per connection.
    Idle(idle::IdleArgs),
    /// One message fanned out to many connections, K rounds.
    Broadcast(broadcast::BroadcastArgs),
    /// One-to-one messages: throughput and send→receive latency.
    Direct(direct::DirectArgs),
}

impl PeerScenario {
    fn name(&self) -> &'static str {
        match self {
            PeerScenario::Idle(_) => "idle",
            PeerScenario::Broadcast(_) => "broadcast",
            PeerScenario::Direct(_) => "direct",
        }
    }
}

/// The peer servers the bench speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// nginx + nchan: WebSocket subscribers, HTTP publisher.
    Nchan,
    /// soketi: the Pusher protocol.
    Soketi,
    /// mosquitto: MQTT 3.1.1 over WebSocket.
    Mosquitto,
    /// ejabberd: XMPP over WebSocket (RFC 7395).
    Ejabberd,
    /// Redis Streams with `appendfsync always`: the durable one-to-one
    /// peer (`direct` only).
    RedisStreams,
    /// NATS JetStream with `sync_interval: always`: the second durable
    /// one-to-one peer (`direct` only).
    Nats,
}

impl Peer {
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::Nchan => "nchan",
            Peer::Soketi => "soketi",
            Peer::Mosquitto => "mosquitto",
            Peer::Ejabberd => "ejabberd",
            Peer::RedisStreams => "redis-streams",
            Peer::Nats => "nats",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Peer::Nchan => 8090,
            Peer::Soketi => 6001,
            Peer::Mosquitto => 8083,
            Peer::Ejabberd => 5280,
            Peer::RedisStreams => 6390,
            Peer::Nats => 4223,
        }
    }
}

/// What every peer scenario works with.
#[derive(Debug)]
pub struct PeerCtx {
    pub peer: Peer,
    pub host: String,
    pub port: u16,
    pub http: reqwest::Client,
    /// The peer's server process, when `--server-pid` was given.
    pub server: Option<Probe>,
    /// The bench process itself.
    pub bench: Probe,
}

impl PeerCtx {
    /// Writes one line of the human summary on stdout (use `say!`).
    pub fn say(&self, line: std::fmt::Arguments<'_>) {
        // A closed stdout is no reason to abort a measurement.
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }

    /// `ws://HOST:PORT{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}:{}{path}", self.host, self.port)
    }

    /// `http://HOST:PORT{path}`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }
}

impl unimsg_bench::engine::Say for PeerCtx {
    fn say(&self, line: std::fmt::Arguments<'_>) {
        PeerCtx::say(self, line);
    }
}

/// A scenario's JSON report and what was incomplete about the run.
#[derive(Debug)]
pub struct Outcome {
    pub report: Value,
    /// Empty when everything expected happened.
    pub problems: Vec<String>,
}

fn main() -> Result<()> {
    let args = PeerArgs::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(usize::try_from(threads)?);
    }
    let runtime = runtime.build().context("cannot start the async runtime")?;
    let report = runtime.block_on(run(args))?;
    println!("{report}");
    Ok(())
}

/// Runs one peer scenario. An incomplete run prints its JSON line anyway,
/// then fails.
pub async fn run(args: PeerArgs) -> Result<Value> {
    let peer = args.peer;
    let port = args.port.unwrap_or_else(|| peer.default_port());
    let server = args.server_pid.map(Probe::new).transpose()?;
    let http = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .context("cannot build the HTTP client")?;
    let ctx = PeerCtx {
        peer,
        host: args.host,
        port,
        http,
        server,
        bench: Probe::this_process(),
    };
    tokio::net::TcpStream::connect((ctx.host.as_str(), ctx.port))
        .await
        .with_context(|| format!("{} does not listen on {}:{port}", peer.as_str(), ctx.host))?;
    let scenario = args.scenario.name();
    let outcome = match args.scenario {
        PeerScenario::Idle(a) => idle::run(&ctx, a).await?,
        PeerScenario::Broadcast(a) => broadcast::run(&ctx, a).await?,
        PeerScenario::Direct(a) => direct::run(&ctx, a).await?,
    };
    if outcome.problems.is_empty() {
        return Ok(outcome.report);
    }
    println!("{}", outcome.report);
    bail!(
        "{} {scenario} is incomplete: {}",
        peer.as_str(),
        outcome.problems.join("; ")
    )
}

/// A random 8-hex-digit id for this run (channel, topic and user names).
pub fn run_id() -> String {
    unimsg_bench::users::run_id()
}

/// The content every broadcast or direct message carries: the run, a
/// number (`round` of a broadcast, `i` of a direct message), the send time
/// `t` and `pad` as `text`.
pub fn content(run: &str, key: &str, number: u64, t: u64, pad: &str) -> String {
    serde_json::json!({ "run": run, key: number, "t": t, "text": pad }).to_string()
}

/// `(number, t)` from a [`content`] string of this `run`, else `None`.
pub fn parse_content(payload: &str, run: &str, key: &str) -> Option<(u64, u64)> {
    let v: Value = serde_json::from_str(payload).ok()?;
    if v["run"].as_str() != Some(run) {
        return None;
    }
    Some((v[key].as_u64()?, v["t"].as_u64()?))
}

/// A channel or topic name every peer accepts (nchan's `\w+`):
/// `prefix_run[_n]`.
pub fn channel(prefix: &str, run: &str, n: Option<u64>) -> String {
    match n {
        Some(n) => format!("{prefix}_{run}_{n}"),
        None => format!("{prefix}_{run}"),
    }
}

/// Nanoseconds since `base`.
pub fn nanos_since(base: tokio::time::Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() -> Result<()> {
        PeerArgs::command().debug_assert();
        let cli = PeerArgs::try_parse_from([
            "unimsg-bench-peers",
            "--peer",
            "nchan",
            "idle",
            "--connections",
            "5",
            "--server-pid",
            "7",
        ])?;
        assert_eq!((cli.peer, cli.server_pid), (Peer::Nchan, Some(7)));
        assert!(matches!(cli.scenario, PeerScenario::Idle(ref i) if i.connections == 5));
        Ok(())
    }

    #[test]
    fn content_round_trips_and_filters_runs() {
        let c = content("abc", "round", 3, 42, "xx");
        assert_eq!(parse_content(&c, "abc", "round"), Some((3, 42)));
        assert_eq!(parse_content(&c, "other", "round"), None);
        assert_eq!(parse_content(&c, "abc", "i"), None);
        assert_eq!(parse_content("not json", "abc", "round"), None);
    }

    #[test]
    fn channels_are_word_characters() {
        for c in [
            channel("idle", "0a1b2c3d", Some(7)),
            channel("b", "ff", None),
        ] {
            assert!(
                c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'),
                "{c}"
            );
        }
        assert_eq!(channel("idle", "r", Some(7)), "idle_r_7");
    }
}
