//! `login`: password logins and QR-code logins per second.
//!
//! C users are registered (each logged in once on `cli`: that session is
//! the "phone" of the QR phase). Then two phases of `--duration-secs` each,
//! with C workers, one user per worker, each looping until the phase ends:
//! - `password`: `POST /v1/auth/login` on the `web` platform. Every login
//!   verifies an argon2 hash on the server, which is what limits the rate;
//!   under the default `one_per_platform` device policy each login also
//!   revokes the user's previous `web` session.
//! - `qr`: the whole QR flow as a browser page and a phone do it:
//!   `POST /v1/auth/qr` (ticket), the page's `GET /v1/auth/qr/{id}/events`
//!   stream with its page secret (`pending`), the phone's `POST /v1/auth/qr/scan` and
//!   `POST /v1/auth/qr/{id}/confirm`, until the page's stream says
//!   `confirmed` with an access token. No password is hashed.
//!
//! Reported per phase: successful logins per second, latency percentiles,
//! failures by reason and, with `--server-pid`, server CPU per login. The
//! server must run with the login and QR rate limits off
//! (`UNIMSG_LIMITS__LOGIN_PER_MINUTE=0`, `UNIMSG_LIMITS__QR_PER_MINUTE=0`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use eventsource_stream::Eventsource;
use futures_util::future::join_all;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use unimsg_client::proto::Platform;
use unimsg_client::proto::api::LoginRequest;
use unimsg_client::{Authed, Client, Method};

use crate::Ctx;
use crate::fanout;
use crate::stats::{Latency, round3};
use crate::users::{self, User};

/// Users registered at once.
const REGISTER_CONCURRENCY: usize = 4;

/// The longest one login attempt may take before it counts as failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Events read from a QR waiting page before giving up on `confirmed`.
const MAX_QR_EVENTS: usize = 16;

#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// Length of each phase (password, then QR), in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,
    /// Logins in flight at once, one user per worker.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
}

/// What one phase's workers saw.
#[derive(Debug)]
struct Phase {
    ok: u64,
    failures: BTreeMap<String, u64>,
    latency: Latency,
    secs: f64,
    server: Option<Value>,
}

impl Phase {
    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    fn rate(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }

    fn to_json(&self) -> Value {
        json!({
            "ok": self.ok,
            "failed": self.failed(),
            "failures": self.failures,
            "secs": round3(self.secs),
            "logins_per_sec": round3(self.rate()),
            "latency_ms": self.latency.summary().to_json(),
            "server": self.server,
        })
    }
}

/// One worker's tally.
#[derive(Debug)]
struct Tally {
    ok: u64,
    failures: BTreeMap<String, u64>,
    latency: Latency,
}

impl Tally {
    fn new() -> Result<Tally> {
        Ok(Tally {
            ok: 0,
            failures: BTreeMap::new(),
            latency: Latency::new()?,
        })
    }

    fn record(&mut self, took: Duration, outcome: Result<()>) {
        match outcome {
            Ok(()) => {
                self.ok += 1;
                self.latency.record(took);
            }
            Err(e) => *self.failures.entry(format!("{e:#}")).or_default() += 1,
        }
    }
}

pub async fn run(ctx: &Ctx, args: LoginArgs) -> Result<Value> {
    let run = users::run_id();
    let c = usize::try_from(args.concurrency)?;
    eprintln!("login: registering {c} users (run {run})");
    // Registered rather than imported: the password phase needs passwords.
    let users = users::create(&ctx.client, &run, "l", c, REGISTER_CONCURRENCY).await?;
    let duration = Duration::from_secs(args.duration_secs);
    let web = Platform::parse("web")?;

    eprintln!("login: password logins for {} s", duration.as_secs());
    let password = phase(ctx, duration, &users, |user, deadline| {
        password_worker(
            ctx.client.clone(),
            user.username.clone(),
            web.clone(),
            deadline,
        )
    })
    .await?;

    eprintln!("login: QR logins for {} s", duration.as_secs());
    let http = reqwest::Client::builder()
        .build()
        .context("cannot build an HTTP client")?;
    let qr = phase(ctx, duration, &users, |user, deadline| {
        qr_worker(
            ctx.client.clone(),
            http.clone(),
            user.authed.clone(),
            deadline,
        )
    })
    .await?;

    say!(
        ctx,
        "== login: {c} workers, {} s per phase",
        args.duration_secs
    );
    for (name, p) in [("password", &password), ("qr", &qr)] {
        say!(
            ctx,
            "{name:<14} {} ok, {} failed in {:.3} s  =>  {:.1} logins/s",
            p.ok,
            p.failed(),
            p.secs,
            p.rate()
        );
        say!(ctx, "  latency      {}", p.latency.summary().line());
        if let Some(s) = &p.server {
            say!(
                ctx,
                "  server       cpu {} s ({} cores busy), {} us/login, rss {} -> {} KiB",
                s["cpu_secs"],
                s["cpu_cores_busy"],
                s["cpu_us_per_login"],
                s["rss_kib_before"],
                s["rss_kib_after"]
            );
        }
        for (reason, count) in &p.failures {
            say!(ctx, "  FAILED {count} x {reason}");
        }
    }

    Ok(json!({
        "scenario": "login",
        "run": run,
        "config": {
            "duration_secs": args.duration_secs,
            "concurrency": args.concurrency,
        },
        "password": password.to_json(),
        "qr": qr.to_json(),
    }))
}

/// Runs one worker per user until `duration` has passed and sums them up.
async fn phase<'a, F, Fut>(
    ctx: &Ctx,
    duration: Duration,
    users: &'a [User],
    worker: F,
) -> Result<Phase>
where
    F: Fn(&'a User, Instant) -> Fut,
    Fut: Future<Output = Result<Tally>>,
{
    let before = ctx.server.as_ref().and_then(|p| p.try_sample());
    let started = Instant::now();
    let deadline = started + duration;
    let tallies = join_all(users.iter().map(|u| worker(u, deadline))).await;
    let secs = started.elapsed().as_secs_f64();
    let after = ctx.server.as_ref().and_then(|p| p.try_sample());
    let mut phase = Phase {
        ok: 0,
        failures: BTreeMap::new(),
        latency: Latency::new()?,
        secs,
        server: None,
    };
    for tally in tallies {
        let tally = tally?;
        phase.ok += tally.ok;
        phase.latency.merge(&tally.latency)?;
        for (reason, count) in tally.failures {
            *phase.failures.entry(reason).or_default() += count;
        }
    }
    phase.server = fanout::server_usage(
        ctx.server.as_ref(),
        before,
        after,
        secs,
        Some(("login", phase.ok)),
    );
    Ok(phase)
}

async fn password_worker(
    client: Client,
    username: String,
    platform: Platform,
    deadline: Instant,
) -> Result<Tally> {
    let mut tally = Tally::new()?;
    while Instant::now() < deadline {
        let req = LoginRequest {
            username: username.clone(),
            password: users::PASSWORD.to_owned(),
            platform: platform.clone(),
            device_id: None,
        };
        let t0 = Instant::now();
        let outcome = match tokio::time::timeout(ATTEMPT_TIMEOUT, client.login(&req)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(anyhow::anyhow!("login timed out")),
        };
        tally.record(t0.elapsed(), outcome);
    }
    Ok(tally)
}

async fn qr_worker(
    client: Client,
    http: reqwest::Client,
    phone: Authed,
    deadline: Instant,
) -> Result<Tally> {
    let mut tally = Tally::new()?;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let outcome =
            match tokio::time::timeout(ATTEMPT_TIMEOUT, qr_login(&client, &http, &phone)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(anyhow::anyhow!("QR login timed out")),
            };
        tally.record(t0.elapsed(), outcome);
    }
    Ok(tally)
}

/// One QR login: ticket, waiting page, scan and confirm by the phone,
/// tokens on the page.
async fn qr_login(client: &Client, http: &reqwest::Client, phone: &Authed) -> Result<()> {
    let body = serde_json::to_vec(&json!({ "platform": "web" }))?;
    let (status, ticket) = client
        .raw(
            Method::POST,
            "/v1/auth/qr",
            None,
            body,
            Some("application/json"),
        )
        .await?;
    if status != 200 {
        bail!("POST /v1/auth/qr answered {status}: {ticket}");
    }
    let id = ticket["ticket_id"]
        .as_str()
        .context("the ticket has no ticket_id")?;
    let url = format!(
        "{}/v1/auth/qr/{id}/events",
        client.base_url().as_str().trim_end_matches('/')
    );
    let secret = ticket["page_secret"]
        .as_str()
        .context("the ticket has no page_secret")?;
    let resp = http.get(url).header("x-qr-secret", secret).send().await?;
    if resp.status() != 200 {
        bail!("the QR waiting page's stream answered {}", resp.status());
    }
    let mut page = Box::pin(resp.bytes_stream().eventsource());
    let (first, _) = next_page_event(&mut page).await?;
    if first != "pending" {
        bail!("the QR waiting page started with {first:?}, not pending");
    }
    let scan = serde_json::to_vec(&json!({ "ticket_id": id }))?;
    let (status, asking) = phone
        .raw(
            Method::POST,
            "/v1/auth/qr/scan",
            scan,
            Some("application/json"),
        )
        .await?;
    if status != 200 {
        bail!("POST /v1/auth/qr/scan answered {status}: {asking}");
    }
    let (status, confirmed) = phone
        .raw(
            Method::POST,
            &format!("/v1/auth/qr/{id}/confirm"),
            b"{}".to_vec(),
            Some("application/json"),
        )
        .await?;
    if status != 200 {
        bail!("POST /v1/auth/qr/{{id}}/confirm answered {status}: {confirmed}");
    }
    for _ in 0..MAX_QR_EVENTS {
        let (event, data) = next_page_event(&mut page).await?;
        match event.as_str() {
            "scanned" | "pending" => {}
            "confirmed" if data["access_token"].as_str().is_some_and(|t| !t.is_empty()) => {
                return Ok(());
            }
            other => bail!("the QR waiting page got {other:?}: {data}"),
        }
    }
    bail!("no confirmed event after {MAX_QR_EVENTS} events")
}

/// The next named event of a QR waiting page, with its JSON data.
async fn next_page_event<S, E>(page: &mut S) -> Result<(String, Value)>
where
    S: Stream<Item = Result<eventsource_stream::Event, E>> + Unpin,
    E: std::fmt::Display,
{
    let e = page
        .next()
        .await
        .context("the QR waiting page's stream ended")?
        .map_err(|e| anyhow::anyhow!("the QR waiting page's stream failed: {e}"))?;
    Ok((
        e.event,
        serde_json::from_str(&e.data).unwrap_or(Value::Null),
    ))
}
