//! The Redis implementations against a real Redis server: the core's
//! shared suite of nonces, rate limits and QR tickets, and a ticket
//! changed on one node heard by a listener on another.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use unimsg_core::hub::Hub;
use unimsg_core::limits::{LimitsConfig, RateLimits};
use unimsg_core::qr::{QrEvent, QrTickets, TicketState};
use unimsg_core::replay::{NonceBounds, NonceStore};
use unimsg_core::suite;
use unimsg_redis::{Cluster, RedisLimits, RedisNonces, RedisOptions, RedisTickets};
use unimsg_testkit::Redis;

async fn node(redis: &Redis, node_id: &str) -> Arc<Cluster> {
    let options = RedisOptions {
        url: redis.url(),
        ca_cert: None,
        prefix: "suite:".into(),
        node_id: node_id.into(),
        presence_ttl: Duration::from_secs(30),
        timeout: Duration::from_secs(2),
    };
    Cluster::connect(options, Hub::new(64))
        .await
        .unwrap_or_else(|e| panic!("connect {node_id}: {e}"))
}

/// One Redis server and a node on it, for one test of the suite.
struct OnRedis {
    cluster: Arc<Cluster>,
    _server: Redis,
}

impl suite::Backend for OnRedis {
    fn nonces(&self, bounds: NonceBounds) -> Arc<dyn NonceStore> {
        Arc::new(RedisNonces::new(self.cluster.clone(), bounds))
    }

    fn limits(&self, config: LimitsConfig) -> Arc<dyn RateLimits> {
        Arc::new(RedisLimits::new(self.cluster.clone(), config))
    }

    fn tickets(&self) -> Arc<dyn QrTickets> {
        Arc::new(RedisTickets::new(self.cluster.clone()))
    }
}

async fn on_redis() -> OnRedis {
    let server = Redis::start();
    OnRedis {
        cluster: node(&server, "a").await,
        _server: server,
    }
}

// The core's suite of nonces, rate limits and QR tickets, one test per check.
unimsg_core::ephemeral_state_suite!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    on_redis
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_changed_on_one_node_is_heard_on_another() {
    let redis = Redis::start();
    let (a, b) = tokio::join!(node(&redis, "a"), node(&redis, "b"));
    let (on_a, on_b) = (RedisTickets::new(a), RedisTickets::new(b));

    let ticket = suite::tickets::pending_ticket(OffsetDateTime::now_utc());
    let id = ticket.ticket_id.clone();
    on_a.insert(ticket).await.expect("insert on a");
    let mut rx = on_b
        .subscribe(&id)
        .await
        .expect("subscribe on b")
        .expect("b does not see the ticket a inserted");

    on_a.update(&id, &mut |t| {
        t.state = TicketState::Cancelled;
        Ok(Some(QrEvent::Cancelled))
    })
    .await
    .expect("update on a");

    let event = suite::tickets::next_event(&mut rx, "b's listener").await;
    assert!(matches!(event, QrEvent::Cancelled), "b heard {event:?}");
    let seen = on_b
        .get(&id)
        .await
        .expect("get on b")
        .expect("b does not see the ticket");
    assert_eq!(seen.state, TicketState::Cancelled);
}
