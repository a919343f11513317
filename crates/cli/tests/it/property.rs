//! Property: random interleavings of sends (fresh and retried), acks,
//! reconnects and restarts (graceful and `kill -9`) keep every inbox
//! gap-free and duplicate-free, keep every acknowledged message, and every
//! live stream resumes exactly where it left off. Sends go over HTTP one
//! at a time, and over the sender's WebSocket pipelined.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use unimsg_client::proto::api::{MessageKind, Recipient, SendRequest};
use unimsg_client::proto::{Event, Seq};
use unimsg_client::{Client, WsConnection};

use crate::harness::TestServer;
use crate::support::*;

#[derive(Debug, Clone)]
enum Op {
    /// User `from` (0 or 1) sends to the other.
    Send {
        from: usize,
    },
    /// User `from` sends `count` messages as pipelined WebSocket frames.
    Pipelined {
        from: usize,
        count: usize,
    },
    /// User `from` retries an earlier send with the same client_msg_id.
    Retry {
        from: usize,
        pick: usize,
    },
    Ack {
        user: usize,
    },
    /// Drops the user's WebSocket and reconnects after the last seq it saw.
    Reconnect {
        user: usize,
    },
    Kill9,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize).prop_map(|from| Op::Send { from }),
        3 => (0..2usize, 1..12usize).prop_map(|(from, count)| Op::Pipelined { from, count }),
        2 => (0..2usize, 0..50usize).prop_map(|(from, pick)| Op::Retry { from, pick }),
        2 => (0..2usize).prop_map(|user| Op::Ack { user }),
        2 => (0..2usize).prop_map(|user| Op::Reconnect { user }),
        1 => Just(Op::Kill9),
        1 => Just(Op::Restart),
    ]
}

struct Peer {
    name: &'static str,
    id: unimsg_client::proto::UserId,
    api: unimsg_client::Authed,
    ws: Option<WsConnection>,
    /// Seqs received live, across reconnects.
    live: Vec<Seq>,
}

impl Peer {
    fn last_live(&self) -> Seq {
        self.live.last().copied().unwrap_or(Seq(0))
    }

    async fn connect(&mut self) {
        let ws = self
            .api
            .connect_ws(Some(self.last_live()))
            .await
            .expect("ws");
        self.ws = Some(ws);
    }

    /// Reads live events until the stream has reached `target`.
    async fn drain_to(&mut self, target: Seq) {
        while self.last_live() < target {
            let ws = self.ws.as_mut().expect("no socket");
            let e: Event = ws_event(ws).await;
            self.live.push(e.seq);
        }
    }
}

async fn relogin(client: &Client, peer: &mut Peer) {
    let fresh = login(client, peer.name, "web", None).await;
    peer.api = fresh.api;
    peer.connect().await;
}

async fn run(ops: Vec<Op>) {
    let mut server = TestServer::start().await;
    let mut client = server.client();
    let a = user(&client, "peer-a").await;
    let b = user(&client, "peer-b").await;
    let mut peers = [
        Peer {
            name: "peer-a",
            id: a.id,
            api: a.api,
            ws: None,
            live: Vec::new(),
        },
        Peer {
            name: "peer-b",
            id: b.id,
            api: b.api,
            ws: None,
            live: Vec::new(),
        },
    ];
    for p in &mut peers {
        p.connect().await;
    }
    // client_msg_ids each user used, and every acknowledged message id.
    let mut sent: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut by_cmid: HashMap<String, String> = HashMap::new();
    let mut counter = 0;

    for op in ops {
        match op {
            Op::Send { from } => {
                counter += 1;
                let cmid = format!("{}-{counter}", peers[from].name);
                let to = peers[1 - from].id.clone();
                let r = peers[from]
                    .api
                    .send_text(&to, &cmid, Some(&cmid))
                    .await
                    .unwrap();
                assert!(!r.duplicate);
                acknowledged.insert(r.message_id.to_string());
                by_cmid.insert(cmid.clone(), r.message_id.to_string());
                sent[from].push(cmid);
            }
            Op::Pipelined { from, count } => {
                let to = peers[1 - from].id.clone();
                let mut cmids = Vec::with_capacity(count);
                let reqs = (0..count)
                    .map(|_| {
                        counter += 1;
                        let cmid = format!("{}-{counter}", peers[from].name);
                        cmids.push(cmid.clone());
                        SendRequest {
                            to: Recipient::User(to.clone()),
                            kind: MessageKind::Chat,
                            content: serde_json::json!({ "text": cmid }),
                            client_msg_id: Some(cmid),
                        }
                    })
                    .collect();
                let ws = peers[from].ws.as_mut().expect("no socket");
                let results = ws.send_many(reqs).await.unwrap();
                for (cmid, r) in cmids.into_iter().zip(results) {
                    let r = r.unwrap();
                    assert!(!r.duplicate);
                    acknowledged.insert(r.message_id.to_string());
                    by_cmid.insert(cmid.clone(), r.message_id.to_string());
                    sent[from].push(cmid);
                }
            }
            Op::Retry { from, pick } => {
                let Some(cmid) = sent[from].get(pick % sent[from].len().max(1)).cloned() else {
                    continue;
                };
                let to = peers[1 - from].id.clone();
                let r = peers[from]
                    .api
                    .send_text(&to, "retry", Some(&cmid))
                    .await
                    .unwrap();
                assert!(r.duplicate);
                assert_eq!(Some(&r.message_id.to_string()), by_cmid.get(&cmid));
            }
            Op::Ack { user } => {
                let last = peers[user].api.sync(None, Some(1)).await.unwrap();
                let upto = Seq(last.next_after.0);
                peers[user].api.ack(upto).await.unwrap();
            }
            Op::Reconnect { user } => {
                if let Some(mut ws) = peers[user].ws.take() {
                    let _ = ws.close().await;
                }
                peers[user].connect().await;
            }
            Op::Kill9 | Op::Restart => {
                if matches!(op, Op::Kill9) {
                    server.kill9().await;
                } else {
                    let status = server.terminate().await;
                    assert!(status.success());
                }
                for p in &mut peers {
                    p.ws = None;
                }
                server = server.restart().await;
                client = server.client();
                for p in &mut peers {
                    relogin(&client, p).await;
                }
            }
        }
    }

    for p in &mut peers {
        let inbox = full_sync(&p.api).await;
        assert_gap_free(&inbox);
        let ids: Vec<String> = inbox
            .iter()
            .filter(|e| e.kind == unimsg_client::proto::EventType::MessageNew)
            .map(message_id)
            .collect();
        let unique: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{}: a message appears twice",
            p.name
        );
        assert_eq!(
            unique, acknowledged,
            "{}: the inbox differs from what was acknowledged",
            p.name
        );
        let newest = inbox.last().map_or(Seq(0), |e| e.seq);
        p.drain_to(newest).await;
        let expected: Vec<Seq> = (1..=newest.0).map(Seq).collect();
        assert_eq!(
            p.live, expected,
            "{}: live delivery skipped or repeated a seq",
            p.name
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, max_shrink_iters: 8, ..ProptestConfig::default() })]

    #[test]
    fn inboxes_stay_gap_free_and_duplicate_free(ops in prop::collection::vec(op(), 5..30)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(ops));
    }
}
