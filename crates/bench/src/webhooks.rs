//! `webhooks`: webhook delivery throughput. The bench runs a receiver on
//! loopback (answering 204), registers it for `message.created`, sends
//! `--messages` direct messages and measures how fast their events arrive.
//! The server must allow loopback targets (`hooks.allow_private_targets`).
//!
//! `allow-hook` runs a before-send receiver that allows everything, for
//! measuring `direct` with `hooks.before_send.url` set against unset.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;
use unimsg_client::proto::hooks::CreateWebhook;

use crate::{Ctx, users};

#[derive(Debug, Clone, clap::Args)]
pub struct WebhooksArgs {
    /// Messages to send; each is one `message.created` delivery.
    #[arg(long, default_value_t = 5000)]
    pub messages: usize,
    /// Sends in flight.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Seconds without a new delivery before the run counts as stalled.
    #[arg(long, default_value_t = 30)]
    pub stall_secs: u64,
    /// Measure the dispatcher alone: the endpoint points at a closed port
    /// while the messages are sent, then at the receiver, and the whole
    /// backlog is replayed at once.
    #[arg(long)]
    pub backlog: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AllowHookArgs {
    /// Address to answer on, e.g. 127.0.0.1:9900.
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub listen: std::net::SocketAddr,
}

struct Counter {
    received: AtomicU64,
    arrived: Notify,
}

/// Runs a receiver on `127.0.0.1:0` that counts requests; its URL.
async fn receiver(counter: Arc<Counter>) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .fallback(axum::routing::post(
            |axum::extract::State(c): axum::extract::State<Arc<Counter>>| async move {
                c.received.fetch_add(1, Ordering::Relaxed);
                c.arrived.notify_waiters();
                axum::http::StatusCode::NO_CONTENT
            },
        ))
        .with_state(counter);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/bench-hook"))
}

pub async fn run(ctx: &Ctx, args: WebhooksArgs) -> Result<Value> {
    let admin = ctx
        .admin
        .as_ref()
        .ok_or_else(|| anyhow!("webhooks needs --admin-password (it registers an endpoint)"))?;
    let counter = Arc::new(Counter {
        received: AtomicU64::new(0),
        arrived: Notify::new(),
    });
    let url = receiver(counter.clone()).await?;
    // A closed port refuses at once: the backlog waits for its retry.
    let first_url = if args.backlog {
        "http://127.0.0.1:9/closed".to_owned()
    } else {
        url.clone()
    };
    let hook = admin
        .create_webhook(&CreateWebhook {
            url: first_url,
            events: vec!["message.created".into()],
            description: "unimsg-bench".into(),
            enabled: true,
            include_content: false,
        })
        .await
        .context("cannot register the bench receiver (does the server set hooks.allow_private_targets = true?)")?;
    let id = hook.webhook.webhook_id.clone();
    let outcome = measure(ctx, &args, &counter, &id, &url).await;
    if let Err(e) = admin.delete_webhook(&id).await {
        eprintln!("webhooks: cannot remove the bench endpoint {id}: {e}");
    }
    outcome
}

async fn measure(
    ctx: &Ctx,
    args: &WebhooksArgs,
    counter: &Counter,
    id: &str,
    url: &str,
) -> Result<Value> {
    let run = users::run_id();
    let people = users::provision(ctx, &run, "w", 2, 2).await?;
    let (sender, receiver) = (&people[0], &people[1]);
    let target = args.messages as u64;
    let before = ctx.server.as_ref().map(|p| p.sample()).transpose()?;
    // What a backlog replays: this run's events only.
    let since = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let started = Instant::now();
    let send_errors = stream::iter(0..args.messages)
        .map(|i| {
            let api = sender.authed.clone();
            let to = receiver.user_id.clone();
            async move { api.send_text(&to, &format!("w{i}"), None).await.is_err() }
        })
        .buffer_unordered(args.window.max(1))
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let sent_in = started.elapsed();
    let (started, before) = if args.backlog {
        let admin = ctx.admin.as_ref().ok_or_else(|| anyhow!("no admin"))?;
        admin
            .update_webhook(
                id,
                &unimsg_client::proto::hooks::PatchWebhook {
                    url: Some(url.to_owned()),
                    ..Default::default()
                },
            )
            .await?;
        let before = ctx.server.as_ref().map(|p| p.sample()).transpose()?;
        let replay_started = Instant::now();
        let queued = admin.replay_webhook(id, since).await?;
        eprintln!("webhooks: replaying {} queued events", queued.queued);
        (replay_started, before)
    } else {
        (started, before)
    };
    let stall = Duration::from_secs(args.stall_secs.max(1));
    let mut stalled = false;
    loop {
        let arrived = counter.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        if counter.received.load(Ordering::Relaxed) >= target {
            break;
        }
        if tokio::time::timeout(stall, arrived).await.is_err() {
            stalled = true;
            break;
        }
    }
    let delivered_in = started.elapsed();
    let after = ctx.server.as_ref().map(|p| p.sample()).transpose()?;
    let delivered = counter.received.load(Ordering::Relaxed).min(target);
    if send_errors > 0 {
        bail!("{send_errors} sends failed");
    }
    let per_sec = |n: u64, d: Duration| crate::stats::round3(n as f64 / d.as_secs_f64().max(1e-9));
    let server_cpu = match (before, after) {
        (Some(b), Some(a)) => json!(crate::stats::round3(a.cpu_secs - b.cpu_secs)),
        _ => Value::Null,
    };
    let report = json!({
        "scenario": "webhooks",
        "config": {"messages": args.messages, "window": args.window, "backlog": args.backlog},
        "delivered": delivered,
        "stalled": stalled,
        "send_per_sec": per_sec(target, sent_in),
        "deliveries_per_sec": per_sec(delivered, delivered_in),
        "delivered_secs": crate::stats::round3(delivered_in.as_secs_f64()),
        "server_cpu_secs": server_cpu,
    });
    ctx.say(format_args!(
        "webhooks: {delivered}/{target} delivered in {:.2} s: {} deliveries/s (sends {} /s)",
        delivered_in.as_secs_f64(),
        report["deliveries_per_sec"],
        report["send_per_sec"]
    ));
    Ok(report)
}

/// Answers every before-send request with `{"action":"allow"}` until killed.
pub async fn allow_hook(args: AllowHookArgs) -> Result<Value> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("allow-hook: answering on http://{}/", args.listen);
    let app = axum::Router::new().fallback(axum::routing::post(|| async {
        axum::Json(json!({"action": "allow"}))
    }));
    axum::serve(listener, app).await?;
    Ok(json!({"scenario": "allow-hook"}))
}
