//! The audit's login attacks (issue 12, items 2 and 8) played against the
//! real server: a flood of wrong admin Basic credentials must not stop user
//! logins from another address, and nobody can lock someone else's account
//! (or an address) with failures from their own address.
//!
//! Several source addresses come from binding clients to 127.0.0.x: Linux
//! routes all of 127.0.0.0/8 to the loopback interface.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::harness::{ADMIN_PASSWORD, TestServer};
use crate::support::*;

/// The server's default `limits.login_failures_before_backoff`.
const DEFAULT_BACKOFF_AFTER: usize = 5;

/// How many password checks the admin pool holds at once: one running
/// and 16 queued (`PasswordWorkers::for_admin_checks`).
const ADMIN_POOL_CAPACITY: usize = 17;

/// An HTTP client whose connections leave from `ip`.
fn from(ip: &str) -> reqwest::Client {
    let local: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
    reqwest::Client::builder()
        .local_address(local)
        .build()
        .unwrap_or_else(|e| panic!("client from {ip}: {e}"))
}

/// What the server answered, with the parts of an error body.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    code: String,
    message: String,
    retry_after: Option<u64>,
}

async fn answer(sent: Result<reqwest::Response, reqwest::Error>, what: &str) -> Answer {
    let resp = sent.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        code: body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        message: body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        retry_after,
    }
}

async fn login(http: &reqwest::Client, base: &str, username: &str, password: &str) -> Answer {
    let sent = http
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"username": username, "password": password, "platform": "web"}))
        .send()
        .await;
    answer(sent, "login").await
}

/// An admin request with HTTP Basic credentials.
async fn basic(http: &reqwest::Client, base: &str, id: &str, secret: &str) -> Answer {
    let (name, value) = basic_auth(id, secret);
    let sent = http
        .get(format!("{base}/v1/admin/audit?limit=1"))
        .header(name, value)
        .send()
        .await;
    answer(sent, "admin request").await
}

/// `POST /v1/admin/token` with the credentials in the body.
async fn admin_token(http: &reqwest::Client, base: &str, id: &str, secret: &str) -> Answer {
    let sent = http
        .post(format!("{base}/v1/admin/token"))
        .json(&json!({"admin_id": id, "secret": secret}))
        .send()
        .await;
    answer(sent, "admin token").await
}

fn statuses(answers: &[Answer]) -> Vec<u16> {
    answers.iter().map(|a| a.status).collect()
}

/// Item 2: a business system at 127.0.0.1 starts with a burst of requests
/// (one verification serves them all); then 160 connections from
/// 127.0.0.1 send wrong Basic credentials
/// (for the real admin id and for made-up ones) while a user logs in from
/// 127.0.0.2. Every login succeeds; the flood is soon refused with 429
/// before any hashing, a full admin pool says "busy" (never "the store is
/// unavailable"), and the real admin's remembered secret keeps working
/// from the flooded address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_basic_credentials_does_not_stop_user_logins() {
    const TASKS: usize = 160;
    /// A cap that keeps the flood bounded; it stops when the logins are done.
    const PER_TASK: usize = 500;
    const LOGINS: usize = 10;
    let server = TestServer::start().await;
    let base = server.base.clone();
    let users = from("127.0.0.2");
    let flood = from("127.0.0.1");
    let registered =
        unimsg_client::Client::with_local_address(&base, "127.0.0.2".parse().ok()).expect("client");
    register(&registered, "flood-alice").await;
    // The business system starts with a burst larger than the admin pool
    // holds: its secret is verified once (the others wait for that check)
    // and remembered.
    let burst = futures_util::future::join_all(
        (0..2 * ADMIN_POOL_CAPACITY).map(|_| basic(&flood, &base, "admin", ADMIN_PASSWORD)),
    )
    .await;
    assert!(
        burst.iter().all(|a| a.status == 200),
        "the business system's first burst: {:?}",
        statuses(&burst)
    );

    let done = Arc::new(AtomicBool::new(false));
    let (started_tx, mut started) = tokio::sync::mpsc::channel::<()>(TASKS);
    let mut tasks = Vec::with_capacity(TASKS);
    for t in 0..TASKS {
        let (http, base, done, started_tx) = (
            flood.clone(),
            base.clone(),
            done.clone(),
            started_tx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..PER_TASK {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                // Half guess the real admin's secret, half made-up ids.
                let id = if t % 2 == 0 {
                    "admin".to_owned()
                } else {
                    format!("ghost-{t}-{i}")
                };
                answers.push(basic(&http, &base, &id, &format!("wrong-{t}-{i}")).await);
                let _ = started_tx.try_send(());
            }
            // Whether this task ran out of requests before the logins ended.
            (answers, !done.load(Ordering::Relaxed))
        }));
    }
    drop(started_tx);
    within("the flood's first answer", started.recv()).await;

    let mut logins = Vec::with_capacity(LOGINS);
    for _ in 0..LOGINS {
        logins.push(login(&users, &base, "flood-alice", PASSWORD).await);
    }
    // While the flood goes on, the remembered secret passes without
    // hashing although its admin id and address are backing off.
    let remembered = basic(&flood, &base, "admin", ADMIN_PASSWORD).await;
    done.store(true, Ordering::Relaxed);

    let mut flood_answers = Vec::new();
    let mut exhausted = 0;
    for task in tasks {
        let (answers, ran_out) = within("a flood task", task).await.expect("flood task");
        flood_answers.extend(answers);
        exhausted += usize::from(ran_out);
    }
    assert_eq!(
        exhausted, 0,
        "the flood ended before the logins did, so they did not overlap"
    );
    assert!(
        logins.iter().all(|a| a.status == 200),
        "user logins during the flood: {:?}",
        logins
    );
    assert_eq!(remembered.status, 200, "remembered secret: {remembered:?}");

    let count = |s: u16| flood_answers.iter().filter(|a| a.status == s).count();
    let (hashed, limited, busy) = (count(401), count(429), count(503));
    eprintln!(
        "flood: {} requests, {hashed} refused after hashing (401), {limited} backed off (429), \
         {busy} busy (503)",
        flood_answers.len()
    );
    assert_eq!(
        hashed + limited + busy,
        flood_answers.len(),
        "only 401, 429 and 503: {:?}",
        flood_answers
            .iter()
            .filter(|a| ![401, 429, 503].contains(&a.status))
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(limited > 0, "the flood was never backed off");
    assert!(
        flood_answers
            .iter()
            .filter(|a| a.status == 429)
            .all(|a| a.code == "rate_limited" && a.retry_after.is_some_and(|s| s >= 1)),
        "every 429 is rate_limited with a Retry-After"
    );
    for a in flood_answers.iter().filter(|a| a.status == 503) {
        assert_eq!(a.code, "busy", "{a:?}");
        assert!(a.message.contains("password checks"), "{a:?}");
        assert!(a.retry_after.is_some_and(|s| s >= 1), "{a:?}");
    }
    // Hashing stops once the address backs off: only attempts checked
    // before the first failures were counted can reach the pool (at most
    // the threshold, plus what the pool held when the lock began and the
    // slots that freed up while it did).
    let most = DEFAULT_BACKOFF_AFTER + 2 * ADMIN_POOL_CAPACITY;
    assert!(
        hashed <= most,
        "{hashed} wrong secrets were hashed, expected at most {most}"
    );
}

/// Item 8: wrong passwords from the attacker's address back off that
/// address only; the victim's right password from another address works,
/// in both directions. Failures for unknown names from one address lock
/// no other user there.
#[tokio::test]
async fn failures_from_one_address_lock_neither_the_victim_elsewhere_nor_others_there() {
    let server =
        TestServer::start_with(&[("UNIMSG_LIMITS__LOGIN_FAILURES_BEFORE_BACKOFF", "3")]).await;
    let base = &server.base;
    let client = server.client();
    for name in ["victim-a", "victim-b", "bystander"] {
        register(&client, name).await;
    }
    let (one, two) = (from("127.0.0.1"), from("127.0.0.2"));

    for (attacker, victim, name) in [(&two, &one, "victim-a"), (&one, &two, "victim-b")] {
        let mut attempts = Vec::new();
        for _ in 0..8 {
            attempts.push(login(attacker, base, name, "wrong password").await);
        }
        let seen = statuses(&attempts);
        assert_eq!(&seen[..3], &[401, 401, 401], "{name}: {seen:?}");
        assert!(
            seen.contains(&429),
            "{name}: the attacker's own address backs off: {seen:?}"
        );
        let own = login(victim, base, name, PASSWORD).await;
        assert_eq!(own.status, 200, "{name} from the other address: {own:?}");
    }

    let shared = from("127.0.0.4");
    let mut unknown = Vec::new();
    for n in 0..8 {
        unknown.push(login(&shared, base, &format!("nobody-{n}"), "wrong password").await);
    }
    assert!(
        unknown.iter().all(|a| a.status == 401),
        "one failure per unknown name locks nothing: {:?}",
        statuses(&unknown)
    );
    let bystander = login(&shared, base, "bystander", PASSWORD).await;
    assert_eq!(
        bystander.status, 200,
        "another user on that address: {bystander:?}"
    );
}

/// Item 8: a guesser spread over many addresses. Below the account's
/// ceiling an address gets several guesses; past it every new address is
/// backed off after its first guess, while the owner's right password from
/// an address without failures still works.
#[tokio::test]
async fn a_distributed_guesser_is_slowed_past_the_account_ceiling() {
    let server = TestServer::start_with(&[
        ("UNIMSG_LIMITS__LOGIN_FAILURES_BEFORE_BACKOFF", "3"),
        ("UNIMSG_LIMITS__ACCOUNT_FAILURES_BEFORE_SLOWDOWN", "4"),
    ])
    .await;
    let base = &server.base;
    register(&server.client(), "target").await;
    let guessers: Vec<reqwest::Client> = (3..=10).map(|n| from(&format!("127.0.0.{n}"))).collect();

    // Three addresses, one guess each, then a second from the first:
    // below both thresholds, so all four are checked (401).
    let mut early = Vec::new();
    for g in guessers.iter().take(3).chain(guessers.first()) {
        early.push(login(g, base, "target", "guess").await);
    }
    assert_eq!(statuses(&early), [401, 401, 401, 401]);

    // The account has 4 failures now: each new address gets one guess,
    // and its next one is backed off.
    for (n, g) in guessers.iter().enumerate().skip(3) {
        let first = login(g, base, "target", "guess").await;
        let second = login(g, base, "target", "guess").await;
        assert_eq!(
            (first.status, second.status),
            (401, 429),
            "address {n}: {first:?} then {second:?}"
        );
        assert!(second.retry_after.is_some_and(|s| s >= 1), "{second:?}");
    }
    let owner = login(&from("127.0.0.1"), base, "target", PASSWORD).await;
    assert_eq!(
        owner.status, 200,
        "the right password from a clean address: {owner:?}"
    );
}

/// Items 2 and 8 for admin credentials: wrong secrets for the real admin
/// id from one address back off that address (Basic and the token
/// endpoint alike) but not the admin's first, unremembered login from
/// another; made-up admin ids from one address stop being hashed after a
/// few, without locking user logins from it.
#[tokio::test]
async fn wrong_admin_secrets_back_off_their_address_not_the_admin() {
    let server = TestServer::start().await;
    let base = &server.base;
    register(&server.client(), "admin-neighbour").await;

    let attacker = from("127.0.0.2");
    let mut guesses = Vec::new();
    for i in 0..8 {
        guesses.push(basic(&attacker, base, "admin", &format!("wrong-{i}")).await);
    }
    let seen = statuses(&guesses);
    assert_eq!(
        &seen[..DEFAULT_BACKOFF_AFTER],
        &[401; DEFAULT_BACKOFF_AFTER],
        "{seen:?}"
    );
    assert!(seen.contains(&429), "Basic guesses back off: {seen:?}");

    let by_body = from("127.0.0.3");
    let mut tokens = Vec::new();
    for i in 0..8 {
        tokens.push(admin_token(&by_body, base, "admin", &format!("wrong-{i}")).await);
    }
    let seen = statuses(&tokens);
    assert!(
        seen.contains(&429) && seen.iter().all(|s| [401, 429].contains(s)),
        "token guesses back off: {seen:?}"
    );

    // The admin's first request (nothing remembered yet) from its own
    // address is checked and passes.
    let business = from("127.0.0.1");
    let real = basic(&business, base, "admin", ADMIN_PASSWORD).await;
    assert_eq!(real.status, 200, "{real:?}");
    let token = admin_token(&from("127.0.0.6"), base, "admin", ADMIN_PASSWORD).await;
    assert_eq!(token.status, 200, "{token:?}");

    let sprayer = from("127.0.0.5");
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(basic(&sprayer, base, &format!("ghost-{i}"), "wrong").await);
    }
    let seen = statuses(&ids);
    assert_eq!(
        &seen[..DEFAULT_BACKOFF_AFTER],
        &[401; DEFAULT_BACKOFF_AFTER],
        "{seen:?}"
    );
    assert!(
        seen.contains(&429),
        "made-up admin ids from one address back off: {seen:?}"
    );
    let user = login(&sprayer, base, "admin-neighbour", PASSWORD).await;
    assert_eq!(user.status, 200, "a user login from that address: {user:?}");
}
