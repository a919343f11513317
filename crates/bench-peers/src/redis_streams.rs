//! Redis Streams as a durable one-to-one peer: each receiver has a stream,
//! a sender `XADD`s every message to its receiver's stream, and the
//! receiver reads with `XREAD BLOCK`. With the shared config
//! (`scripts/peers/redis-streams/redis.conf`: `appendonly yes`,
//! `appendfsync always`) Redis answers an `XADD` only after the AOF write
//! was fsynced, so the reply is an acknowledgement of durable storage, as
//! unimsg's `send.ok` is.

use std::collections::VecDeque;

use anyhow::{Context, Result};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Value};

/// The field of a stream entry that holds the message.
const FIELD: &str = "m";

/// Entries one `XREAD` returns at most.
const READ_COUNT: usize = 512;

/// How long one `XREAD` blocks before it is asked again (ms).
const BLOCK_MS: usize = 1_000;

/// A connection to the peer (one per sender and per receiver, so a
/// blocking read never holds up a sender's writes).
pub(crate) async fn connect(host: &str, port: u16) -> Result<MultiplexedConnection> {
    let client =
        redis::Client::open(format!("redis://{host}:{port}/")).context("bad Redis address")?;
    // Longer than a blocking read (the client's default is 500 ms).
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_millis(BLOCK_MS as u64 * 10)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("cannot connect to Redis")
}

/// Receiver i's stream.
pub(crate) fn stream(run: &str, i: usize) -> String {
    format!("unimsg-bench:{run}:direct:{i}")
}

/// Appends one message; resolves with its entry id once Redis answered
/// (after the fsync, with `appendfsync always`).
pub(crate) async fn add(conn: &mut MultiplexedConnection, key: &str, payload: &str) -> Result<()> {
    let _: String = conn
        .xadd(key, "*", &[(FIELD, payload)])
        .await
        .context("XADD failed")?;
    Ok(())
}

/// A receiver reading its stream from the start, in order.
#[derive(Debug)]
pub(crate) struct Reader {
    conn: MultiplexedConnection,
    key: String,
    /// The id of the last entry read (`0` before the first).
    last: String,
    ready: VecDeque<String>,
}

impl Reader {
    pub(crate) fn new(conn: MultiplexedConnection, key: String) -> Self {
        Reader {
            conn,
            key,
            last: "0".to_owned(),
            ready: VecDeque::new(),
        }
    }

    /// The next message of the stream, waiting for it.
    pub(crate) async fn next(&mut self) -> Result<String> {
        loop {
            if let Some(payload) = self.ready.pop_front() {
                return Ok(payload);
            }
            let options = StreamReadOptions::default()
                .count(READ_COUNT)
                .block(BLOCK_MS);
            let reply: Option<StreamReadReply> = self
                .conn
                .xread_options(&[&self.key], &[&self.last], &options)
                .await
                .context("XREAD failed")?;
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                for entry in key.ids {
                    if let Some(Value::BulkString(bytes)) = entry.map.get(FIELD) {
                        self.ready
                            .push_back(String::from_utf8_lossy(bytes).into_owned());
                    }
                    self.last = entry.id;
                }
            }
        }
    }
}
