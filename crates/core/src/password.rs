//! Password hashing (argon2id) on a small, fixed pool of dedicated threads.
//!
//! Each hash costs ~19 MiB of memory and tens of milliseconds of CPU by
//! design. Running them on tokio's blocking pool would let a burst of
//! logins start hundreds of threads and hold gigabytes; here at most one
//! hash per worker runs at a time, the queue in front of them is bounded,
//! and a full queue answers "busy" (503) instead of growing.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::oneshot;
use unimsg_store::PasswordHash;

use crate::error::{CoreError, Result};

enum Job {
    Hash {
        password: String,
        reply: oneshot::Sender<Result<PasswordHash>>,
    },
    Verify {
        password: String,
        hash: Option<PasswordHash>,
        reply: oneshot::Sender<bool>,
    },
}

/// Handle to the hashing workers. Cheap to clone.
#[derive(Clone)]
pub struct PasswordWorkers {
    jobs: SyncSender<Job>,
}

impl std::fmt::Debug for PasswordWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordWorkers")
    }
}

impl PasswordWorkers {
    /// Starts `workers` threads with room for `queue` waiting jobs. The
    /// threads end when the last handle is dropped.
    pub fn start(workers: usize, queue: usize) -> Self {
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("unimsg-argon2-{i}"))
                .spawn(move || work(&rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password worker");
            }
        }
        Self { jobs: tx }
    }

    /// One worker per core, and a queue of 64 per worker.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::start(cores, cores * 64)
    }

    fn submit(&self, job: Job) -> Result<()> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => {
                CoreError::Unavailable("too many password checks in progress".into())
            }
            TrySendError::Disconnected(_) => {
                CoreError::Internal("the password workers stopped".into())
            }
        })
    }

    pub async fn hash(&self, password: String) -> Result<PasswordHash> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Hash { password, reply })?;
        rx.await
            .map_err(|_| CoreError::Internal("a password worker failed".into()))?
    }

    /// Whether `password` matches `hash`. Without a hash (unknown user, or
    /// no password set) a dummy hash is checked, so the answer takes as long
    /// as for a wrong password, and is `false`.
    pub async fn verify(&self, password: String, hash: Option<PasswordHash>) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Verify {
            password,
            hash,
            reply,
        })?;
        rx.await
            .map_err(|_| CoreError::Internal("a password worker failed".into()))
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        // Hold the lock only to take a job, never while hashing.
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        match job {
            Ok(Job::Hash { password, reply }) => {
                let result = Argon2::default()
                    .hash_password(password.as_bytes())
                    .map(|h| PasswordHash(h.to_string()))
                    .map_err(|e| CoreError::Internal(format!("password hashing failed: {e}")));
                let _ = reply.send(result);
            }
            Ok(Job::Verify {
                password,
                hash,
                reply,
            }) => {
                let stored = hash.as_ref().map_or(dummy_hash(), |h| h.0.as_str());
                let ok = Argon2::default()
                    .verify_password(password.as_bytes(), stored)
                    .is_ok();
                let _ = reply.send(ok && hash.is_some());
            }
            Err(_) => return,
        }
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password(b"unimsg-dummy-password")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_a_missing_hash_never_matches() {
        let workers = PasswordWorkers::start(1, 4);
        let hash = workers
            .hash("s3cret-pass".into())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(hash.0.starts_with("$argon2id$"));
        assert!(
            workers
                .verify("s3cret-pass".into(), Some(hash.clone()))
                .await
                .unwrap_or(false)
        );
        assert!(
            !workers
                .verify("wrong".into(), Some(hash))
                .await
                .unwrap_or(true)
        );
        assert!(
            !workers
                .verify("unimsg-dummy-password".into(), None)
                .await
                .unwrap_or(true)
        );
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_not_grown() {
        // One worker and one queue slot: at most two jobs can be accepted
        // while the first hash (tens of milliseconds) runs.
        let workers = PasswordWorkers::start(1, 1);
        let mut accepted = Vec::new();
        let mut refused = 0;
        for i in 0..8 {
            let (reply, rx) = oneshot::channel();
            match workers.submit(Job::Hash {
                password: format!("password-{i}"),
                reply,
            }) {
                Ok(()) => accepted.push(rx),
                Err(CoreError::Unavailable(_)) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            accepted.len() <= 2 && refused >= 6,
            "accepted {}",
            accepted.len()
        );
        for rx in accepted {
            assert!(rx.await.is_ok_and(|r| r.is_ok()));
        }
    }
}
