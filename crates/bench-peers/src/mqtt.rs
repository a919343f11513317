//! MQTT 3.1.1 over WebSocket (mosquitto's `websockets` listener).
//!
//! The WebSocket asks for the `mqtt` subprotocol and carries MQTT packets
//! in binary frames; a frame may hold part of a packet or several, so
//! incoming bytes are buffered and cut into packets. The packets themselves
//! are encoded and decoded by rumqttc's codec (`rumqttc::mqttbytes::v4`),
//! without its event loop, so every peer goes through the same WebSocket
//! client.
//!
//! Mapping: a connection is CONNECT (client id, clean session or a
//! persistent one, keep-alive) answered by CONNACK, then SUBSCRIBE answered
//! by SUBACK. A QoS 1 PUBLISH is acknowledged by the broker with PUBACK
//! (the bench's "ack"), and a QoS 1 PUBLISH the broker delivers is
//! acknowledged by the receiver with PUBACK. An idle client sends PINGREQ
//! once per keep-alive period, as MQTT requires (the broker drops a client
//! silent for 1.5 keep-alive periods).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{self, QoS};

use crate::ws::{self, Message, Ws};

/// Largest packet accepted from the broker.
const MAX_PACKET: usize = 1 << 20;

/// Keep-alive announced in CONNECT, in seconds.
pub(crate) const KEEP_ALIVE_SECS: u16 = 60;

/// Longest wait for CONNACK and SUBACK.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// An MQTT session over a WebSocket.
#[derive(Debug)]
pub(crate) struct Conn {
    ws: Ws,
    buf: BytesMut,
    last_pkid: u16,
}

/// How to CONNECT.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Session<'a> {
    pub client_id: &'a str,
    /// `false`: a persistent session, whose QoS 1 messages the broker
    /// queues while the client is away.
    pub clean: bool,
}

impl Conn {
    /// Opens the WebSocket and the MQTT session.
    pub(crate) async fn connect(url: &str, session: Session<'_>) -> Result<Conn> {
        let ws = ws::connect(url, Some("mqtt")).await?;
        let mut conn = Conn {
            ws,
            buf: BytesMut::with_capacity(256),
            last_pkid: 0,
        };
        let mut connect = Connect::new(session.client_id);
        connect.keep_alive = KEEP_ALIVE_SECS;
        connect.clean_session = session.clean;
        conn.send(&Packet::Connect(connect)).await?;
        let ack = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.next_packet())
            .await
            .context("no CONNACK in time")??;
        match ack {
            Some(Packet::ConnAck(ConnAck {
                code: ConnectReturnCode::Success,
                ..
            })) => Ok(conn),
            Some(Packet::ConnAck(ack)) => bail!("CONNECT refused: {:?}", ack.code),
            Some(other) => bail!("expected CONNACK, got {other:?}"),
            None => bail!("closed by the broker before CONNACK"),
        }
    }

    /// Subscribes to `topic` and waits for the SUBACK.
    pub(crate) async fn subscribe(&mut self, topic: &str, qos: QoS) -> Result<()> {
        let pkid = self.next_pkid();
        let mut subscribe = Subscribe::new(topic, qos);
        subscribe.pkid = pkid;
        self.send(&Packet::Subscribe(subscribe)).await?;
        tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            loop {
                match self.next_packet().await? {
                    Some(Packet::SubAck(ack)) if ack.pkid == pkid => {
                        return match ack.return_codes.as_slice() {
                            [SubscribeReasonCode::Success(_)] => Ok(()),
                            codes => bail!("SUBSCRIBE {topic} refused: {codes:?}"),
                        };
                    }
                    Some(_) => {}
                    None => bail!("closed by the broker before SUBACK"),
                }
            }
        })
        .await
        .context("no SUBACK in time")?
    }

    /// Publishes `payload` to `topic`; returns the packet id (0 at QoS 0).
    pub(crate) async fn publish(&mut self, topic: &str, qos: QoS, payload: Vec<u8>) -> Result<u16> {
        let mut publish = Publish::new(topic, qos, payload);
        if qos != QoS::AtMostOnce {
            publish.pkid = self.next_pkid();
        }
        let pkid = publish.pkid;
        self.send(&Packet::Publish(publish)).await?;
        Ok(pkid)
    }

    /// Acknowledges a QoS 1 PUBLISH received from the broker.
    pub(crate) async fn puback(&mut self, pkid: u16) -> Result<()> {
        self.send(&Packet::PubAck(PubAck::new(pkid))).await
    }

    pub(crate) async fn ping(&mut self) -> Result<()> {
        self.send(&Packet::PingReq).await
    }

    pub(crate) async fn send(&mut self, packet: &Packet) -> Result<()> {
        let bytes = encode(packet)?;
        self.ws
            .send(Message::binary(bytes))
            .await
            .context("WebSocket write failed")
    }

    /// The next packet from the broker; `None` once it closed the
    /// connection. Cancel-safe: bytes read are kept in the buffer.
    pub(crate) async fn next_packet(&mut self) -> Result<Option<Packet>> {
        loop {
            if let Some(packet) = decode(&mut self.buf)? {
                return Ok(Some(packet));
            }
            match self.ws.next().await {
                Some(Ok(Message::Binary(bytes))) => self.buf.extend_from_slice(&bytes),
                Some(Ok(Message::Close(_))) | None => return Ok(None),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("WebSocket read failed"),
            }
        }
    }

    pub(crate) async fn close(mut self) {
        let _ = self.send(&Packet::Disconnect).await;
        let _ = self.ws.close(None).await;
    }

    /// A fresh packet id (0 is not a valid one).
    fn next_pkid(&mut self) -> u16 {
        self.last_pkid = pkid_after(self.last_pkid);
        self.last_pkid
    }
}

/// The packet id after `last`: ids run 1..=65535 and wrap.
fn pkid_after(last: u16) -> u16 {
    last.checked_add(1).unwrap_or(1)
}

/// One packet as bytes.
pub(crate) fn encode(packet: &Packet) -> Result<Vec<u8>> {
    let mut buf = BytesMut::with_capacity(packet.size() + 5);
    packet
        .write(&mut buf, MAX_PACKET)
        .map_err(|e| anyhow::anyhow!("cannot encode {packet:?}: {e}"))?;
    Ok(buf.to_vec())
}

/// Cuts the first whole packet off `buf`; `None` while it holds only part
/// of one.
pub(crate) fn decode(buf: &mut BytesMut) -> Result<Option<Packet>> {
    if buf.is_empty() {
        return Ok(None);
    }
    match Packet::read(buf, MAX_PACKET) {
        Ok(packet) => Ok(Some(packet)),
        Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => bail!("malformed MQTT packet from the broker: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_has_the_311_layout() -> Result<()> {
        let mut connect = Connect::new("ab");
        connect.keep_alive = 60;
        connect.clean_session = false;
        let bytes = encode(&Packet::Connect(connect))?;
        // Fixed header (CONNECT, remaining length 14), "MQTT", level 4,
        // flags (no clean session), keep-alive 60, client id "ab".
        assert_eq!(
            bytes,
            [
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 60, 0, 2, b'a', b'b'
            ]
        );
        Ok(())
    }

    #[test]
    fn publish_qos1_round_trips_through_split_frames() -> Result<()> {
        let mut publish = Publish::new("t/1", QoS::AtLeastOnce, b"hello".to_vec());
        publish.pkid = 7;
        let bytes = encode(&Packet::Publish(publish.clone()))?;
        assert_eq!(bytes[0], 0x32, "PUBLISH, QoS 1");
        // Two packets arriving across three frames.
        let mut wire = bytes.clone();
        wire.extend(encode(&Packet::PubAck(PubAck::new(9)))?);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in [
            &wire[..3],
            &wire[3..bytes.len() + 1],
            &wire[bytes.len() + 1..],
        ] {
            buf.extend_from_slice(chunk);
            while let Some(p) = decode(&mut buf)? {
                got.push(p);
            }
        }
        assert_eq!(
            got,
            [Packet::Publish(publish), Packet::PubAck(PubAck::new(9))]
        );
        assert!(buf.is_empty());
        Ok(())
    }

    #[test]
    fn garbage_is_an_error_and_pkids_skip_zero() -> Result<()> {
        let mut buf = BytesMut::from(&[0x00u8, 0x00][..]);
        assert!(decode(&mut buf).is_err());
        let bytes = encode(&Packet::PingReq)?;
        assert_eq!(bytes, [0xc0, 0]);
        assert_eq!(pkid_after(0), 1);
        assert_eq!(pkid_after(41), 42);
        assert_eq!(pkid_after(u16::MAX), 1);
        Ok(())
    }
}
