//! Password hashing (argon2id) on a small, fixed pool of dedicated threads.
//!
//! Each hash costs ~19 MiB of memory and tens of milliseconds of CPU by
//! design. Running them on tokio's blocking pool would let a burst of
//! logins start hundreds of threads and hold gigabytes; here at most one
//! hash per worker runs at a time, the queue in front of them is bounded,
//! and a full queue answers "busy" (503) instead of growing. Each worker
//! allocates its argon2 memory once and reuses it for every hash, so
//! logins do not churn the allocator (glibc keeps such freed buffers
//! resident, which grew the server by hundreds of MiB per login burst).
//!
//! Hashes are stored in the PHC string format
//! (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) built by the `argon2` and
//! `phc` types; verification reads the parameters back from the string.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, Version};
use parking_lot::Mutex;
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
        Self::start_named("unimsg-argon2", workers, queue)
    }

    /// Like [`PasswordWorkers::start`], with threads named `{name}-{i}`.
    pub fn start_named(name: &str, workers: usize, queue: usize) -> Self {
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
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

    /// The admin credentials' own pool: one worker and a short queue.
    /// Failed admin authentications cost no more than one core and can
    /// never take the workers user logins hash on; a flood beyond the
    /// queue is refused as busy (remembered secrets need no worker).
    pub fn for_admin_checks() -> Self {
        Self::start_named("unimsg-argon2-admin", 1, 16)
    }

    fn submit(&self, job: Job) -> Result<()> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => {
                metrics::counter!("unimsg_password_busy_total").increment(1);
                CoreError::Busy("too many password checks in progress; try again in a moment")
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
    let mut memory = vec![Block::default(); Params::DEFAULT.block_count()];
    loop {
        // Hold the lock only to take a job, never while hashing.
        let job = rx.lock().recv();
        match job {
            Ok(Job::Hash { password, reply }) => {
                let _ = reply.send(hash_with(&mut memory, password.as_bytes()));
            }
            Ok(Job::Verify {
                password,
                hash,
                reply,
            }) => {
                let stored = hash.as_ref().map_or(dummy_hash(), |h| h.0.as_str());
                let ok = verify_with(&mut memory, password.as_bytes(), stored);
                let _ = reply.send(ok && hash.is_some());
            }
            Err(_) => return,
        }
    }
}

fn failed(e: impl std::fmt::Display) -> CoreError {
    CoreError::Internal(format!("password hashing failed: {e}"))
}

/// A new argon2id hash with the default parameters and a random salt.
fn hash_with(memory: &mut [Block], password: &[u8]) -> Result<PasswordHash> {
    let params = Params::DEFAULT;
    let salt = crate::keys::random_bytes::<16>().map_err(failed)?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(
            password,
            &salt,
            &mut out,
            &mut memory[..params.block_count()],
        )
        .map_err(failed)?;
    let phc = argon2::PasswordHash {
        algorithm: ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(failed)?,
        salt: Some(Salt::new(&salt).map_err(failed)?),
        hash: Some(Output::new(&out).map_err(failed)?),
    };
    Ok(PasswordHash(phc.to_string()))
}

/// Whether `password` matches the PHC string `stored`. Hashes whose memory
/// cost exceeds the worker's buffer get a buffer of their own.
fn verify_with(memory: &mut [Block], password: &[u8], stored: &str) -> bool {
    let Ok(parsed) = argon2::PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::new(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params.clone());
    let blocks = params.block_count();
    let computed = if blocks <= memory.len() {
        argon.hash_password_into_with_memory(
            password,
            salt.as_ref(),
            &mut out,
            &mut memory[..blocks],
        )
    } else {
        argon.hash_password_into(password, salt.as_ref(), &mut out)
    };
    // `Output` compares in constant time.
    computed.is_ok() && Output::new(&out).is_ok_and(|o| &o == expected)
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut memory = vec![Block::default(); Params::DEFAULT.block_count()];
        hash_with(&mut memory, b"unimsg-dummy-password")
            .map(|h| h.0)
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_a_missing_hash_never_matches() {
        let workers = PasswordWorkers::start(1, 4);
        let hash = workers.hash("s3cret-pass".into()).await.unwrap();
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
                Err(CoreError::Busy(_)) => refused += 1,
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
