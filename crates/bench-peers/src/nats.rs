//! NATS JetStream as a durable one-to-one peer: one file-backed stream per
//! run holds every receiver's subject, a sender publishes each message to
//! its receiver's subject and awaits JetStream's publish ack, and the
//! receiver reads its subject through an ordered consumer. With the shared
//! config (`scripts/peers/nats/nats.conf`: `sync_interval: always`, NATS
//! 2.10 and later) the server fsyncs the stored message before it sends
//! the ack, so the ack is an acknowledgement of durable storage, as
//! unimsg's `send.ok` is.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::context::{ContextBuilder, PublishAckFuture};
use async_nats::jetstream::stream::{Config, StorageType};
use futures_util::StreamExt;

/// How long a publish ack or a JetStream API request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The run's stream.
fn stream_name(run: &str) -> String {
    format!("UNIMSG_BENCH_{run}")
}

/// Receiver i's subject.
pub(crate) fn subject(run: &str, i: usize) -> String {
    format!("unimsg-bench.{run}.direct.{i}")
}

/// A JetStream context on its own connection (one per sender and per
/// receiver, so a receiver's reads never queue behind a sender's
/// publishes), allowing `window` publish acks in flight.
pub(crate) async fn connect(host: &str, port: u16, window: usize) -> Result<Context> {
    let client = async_nats::connect(format!("{host}:{port}"))
        .await
        .context("cannot connect to NATS")?;
    Ok(ContextBuilder::new()
        .timeout(TIMEOUT)
        .max_ack_inflight(window.max(1))
        .build(client))
}

/// Creates the run's stream, on file storage, for every receiver's
/// subject.
pub(crate) async fn create_stream(js: &Context, run: &str) -> Result<()> {
    js.create_stream(Config {
        name: stream_name(run),
        subjects: vec![format!("unimsg-bench.{run}.direct.*")],
        storage: StorageType::File,
        ..Default::default()
    })
    .await
    .context("cannot create the JetStream stream (is JetStream enabled?)")?;
    Ok(())
}

/// Publishes one message; resolves once it is handed to the connection,
/// with the future of its ack (sent after the fsync, with `sync_interval:
/// always`).
pub(crate) async fn publish(
    js: &Context,
    subject: &str,
    payload: String,
) -> Result<PublishAckFuture> {
    js.publish(subject.to_owned(), payload.into())
        .await
        .context("publish failed")
}

/// Waits for a publish's ack.
pub(crate) async fn acked(ack: PublishAckFuture) -> Result<()> {
    ack.await.context("no publish ack")?;
    Ok(())
}

/// A receiver reading its subject of the run's stream from the start, in
/// order.
pub(crate) struct Reader {
    messages: Ordered,
    subject: String,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// An ordered consumer of receiver i's subject: ephemeral, without
    /// acks, delivering the stream's messages in sequence (it recreates
    /// itself from the last sequence seen when it detects a gap).
    pub(crate) async fn open(js: &Context, run: &str, i: usize) -> Result<Self> {
        let subject = subject(run, i);
        let stream = js
            .get_stream(stream_name(run))
            .await
            .context("cannot find the run's stream")?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: subject.clone(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .context("cannot create the ordered consumer")?;
        let messages = consumer
            .messages()
            .await
            .context("cannot start the ordered consumer")?;
        Ok(Reader { messages, subject })
    }

    /// The next message of the subject, waiting for it. A message on
    /// another receiver's subject is an error.
    pub(crate) async fn next(&mut self) -> Result<Option<String>> {
        let Some(message) = self.messages.next().await else {
            return Ok(None);
        };
        let message = message.context("ordered consumer failed")?;
        if message.subject.as_str() != self.subject {
            bail!(
                "a message for {} reached the consumer of {}",
                message.subject,
                self.subject
            );
        }
        Ok(Some(String::from_utf8_lossy(&message.payload).into_owned()))
    }
}
