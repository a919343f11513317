//! A real HTTP receiver of webhooks on `127.0.0.1:0`: it records every
//! request (headers and body, in arrival order) and answers as a script
//! tells it, so tests can play failing, slow and healthy endpoints.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Notify;

/// One request as received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Answered (or to be answered, after the reply's delay) with a 2xx
    /// status.
    pub answered_ok: bool,
}

impl Received {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub(crate) fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub(crate) fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }

    /// Checks the signature with Standard Webhooks' Python library, as a
    /// receiver in another language would (`scripts/test` installs it).
    pub(crate) fn verify_in_python(&self, secret: &str) -> bool {
        let headers: serde_json::Map<String, Value> =
            ["webhook-id", "webhook-timestamp", "webhook-signature"]
                .iter()
                .map(|h| ((*h).to_owned(), Value::String(self.header(h))))
                .collect();
        let script = "import sys, json\n\
            from standardwebhooks.webhooks import Webhook\n\
            secret, headers = sys.argv[1], json.loads(sys.argv[2])\n\
            Webhook(secret).verify(sys.stdin.buffer.read(), headers)\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script, secret, &Value::Object(headers).to_string()])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(&self.body).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("ModuleNotFoundError"),
            "standardwebhooks is missing: python3 -m pip install standardwebhooks"
        );
        out.status.success()
    }

    /// Checks the Standard Webhooks signature with the Standard Webhooks
    /// crate (not unimsg's own code).
    pub(crate) fn verify(&self, secret: &str) -> bool {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&self.body, &self.headers)
            .is_ok()
    }
}

/// What the receiver answers to the `n`-th request (from 0).
pub(crate) type Script = dyn Fn(usize, &Received) -> Reply + Send + Sync;

pub(crate) struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
    pub retry_after: Option<u64>,
}

impl Reply {
    pub(crate) fn status(status: u16) -> Self {
        Self {
            status,
            body: String::new(),
            delay: Duration::ZERO,
            retry_after: None,
        }
    }

    pub(crate) fn json(body: Value) -> Self {
        Self {
            body: body.to_string(),
            ..Self::status(200)
        }
    }
}

struct Shared {
    seen: Mutex<Vec<Received>>,
    script: Box<Script>,
    arrived: Notify,
}

pub(crate) struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut received = Received {
        headers,
        body,
        answered_ok: false,
    };
    let reply = {
        let mut seen = shared.seen.lock();
        let reply = (shared.script)(seen.len(), &received);
        received.answered_ok = (200..300).contains(&reply.status);
        seen.push(received);
        reply
    };
    shared.arrived.notify_waiters();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        [("content-type", "application/json")],
        reply.body,
    )
        .into_response();
    if let Some(secs) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    response
}

impl Receiver {
    /// A receiver that answers 204 to everything.
    pub(crate) async fn ok() -> Self {
        Self::scripted(|_, _| Reply::status(204)).await
    }

    pub(crate) async fn scripted(
        script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let shared = Arc::new(Shared {
            seen: Mutex::new(Vec::new()),
            script: Box::new(script),
            arrived: Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(axum::routing::post(handle))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://{addr}/hook"),
            shared,
            task,
        }
    }

    /// Everything received so far.
    pub(crate) fn seen(&self) -> Vec<Received> {
        self.shared.seen.lock().clone()
    }

    /// Waits until `done` holds for what was received (bounded by
    /// [`crate::support::WAIT`]), and returns it.
    pub(crate) async fn until(
        &self,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        self.until_within(what, crate::support::WAIT, done).await
    }

    /// [`Self::until`] with another bound.
    pub(crate) async fn until_within(
        &self,
        what: &str,
        bound: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let wait = async {
            loop {
                let arrived = self.shared.arrived.notified();
                tokio::pin!(arrived);
                arrived.as_mut().enable();
                let seen = self.seen();
                if done(&seen) {
                    return seen;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(bound, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }
}
