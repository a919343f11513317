//! The embedded backend: one SQLite file in WAL mode.
//!
//! Writes go through one writer thread that drains its queue into a single
//! transaction (group commit): concurrent sends share one `COMMIT` and one
//! fsync. A failing job is rolled back alone while the others in the batch
//! commit: each job runs in a savepoint of its own, or, for the hot paths'
//! repeatable jobs, the batch runs without savepoints and again with them
//! if one fails ([`run_batch`]). Callers hear back only
//! after the `COMMIT` has returned, so an acknowledged write is durable.
//! Reads run on a small pool of read-only connections on blocking threads.
//! WAL checkpoints run on a checkpointer thread of their own, not inside
//! the commit that crossed the threshold ([`start_checkpointer`]).

//!
//! One file per storage trait, named as in the PostgreSQL backend:
//! `users.rs`, `sessions.rs`, `inbox.rs`, `data_keys.rs`, `admins.rs`,
//! `notifications.rs`, `broadcasts.rs`, `audit.rs`, `relationships.rs`,
//! `groups.rs`; `schema.rs` holds the migrations.

mod admins;
mod audit;
pub mod backup;
mod broadcasts;
mod data_keys;
mod groups;
mod inbox;
mod memo;
mod notifications;
mod relationships;
mod schema;
mod sessions;
mod users;
mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags, Params, Statement};
use tokio::sync::{Semaphore, mpsc, oneshot};
use unimsg_store::sql::{SqlRow, bad_column};
use unimsg_store::{Result, Store, StoreError, timing};

/// How hard SQLite syncs on commit. `Full` survives power loss; `Normal`
/// survives a process crash (`kill -9`) but not a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    #[default]
    Full,
    Normal,
}

/// Options of the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub durability: Durability,
    /// Most jobs committed in one transaction.
    pub max_batch: usize,
    /// Read connections kept open.
    pub readers: usize,
    /// WAL frames after a commit that start a checkpoint (on the
    /// checkpointer thread, not in the writer's commit path).
    pub checkpoint_frames: u32,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Full,
            max_batch: 512,
            readers: 4,
            checkpoint_frames: CHECKPOINT_FRAMES,
        }
    }
}

/// A job the writer runs inside a batch transaction.
trait Job: Send {
    /// Runs the job's statements; false when it failed, so that its
    /// writes must not be kept.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Whether [`Job::run`] may be called again after the transaction it
    /// ran in was rolled back (see [`run_batch`]).
    fn repeatable(&self) -> bool;
    /// Hands the caller its outcome: the job's own result once `commit`
    /// (the transaction's) succeeded, else the transaction's error.
    fn finish(self: Box<Self>, commit: Result<()>);
}

/// What a queued job reports to the caller waiting in [`SqliteStore::write`].
struct Outcome<T> {
    result: Option<Result<T>>,
    done: oneshot::Sender<Result<T>>,
}

impl<T> Outcome<T> {
    fn record(&mut self, result: DbResult<T>) -> bool {
        let result = result.map_err(StoreError::from);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self, commit: Result<()>) {
        let result = self
            .result
            .unwrap_or_else(|| Err(StoreError::Unavailable("no transaction".into())));
        let _ = self.done.send(commit.and(result));
    }
}

/// A job whose closure runs once: the writer runs it in a savepoint.
struct Once<F, T> {
    f: Option<F>,
    outcome: Outcome<T>,
}

impl<F, T> Job for Once<F, T>
where
    F: FnOnce(&Connection) -> DbResult<T> + Send,
    T: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = match self.f.take() {
            Some(f) => f(conn),
            None => Err(StoreError::Internal("a write job ran twice".into()).into()),
        };
        self.outcome.record(result)
    }

    fn repeatable(&self) -> bool {
        false
    }

    fn finish(self: Box<Self>, commit: Result<()>) {
        self.outcome.finish(commit);
    }
}

/// A job whose closure may run again from the start after a rollback: the
/// writer runs a batch of these without savepoints.
struct Repeatable<F, T> {
    f: F,
    outcome: Outcome<T>,
}

impl<F, T> Job for Repeatable<F, T>
where
    F: Fn(&Connection) -> DbResult<T> + Send,
    T: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = (self.f)(conn);
        self.outcome.record(result)
    }

    fn repeatable(&self) -> bool {
        true
    }

    fn finish(self: Box<Self>, commit: Result<()>) {
        self.outcome.finish(commit);
    }
}

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Box<dyn Job>>,
    readers: Arc<ReaderPool>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.readers.path)
            .finish()
    }
}

/// A driver error: anything SQLite reports is internal here (the file is
/// local; there is no connection to lose).
pub(crate) fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Internal(e.to_string())
}

/// What the code running on a connection fails with: a driver error or a
/// decision of the store. `?` takes both, so that code reads without a
/// `map_err` per statement; [`SqliteStore::write`] and
/// [`SqliteStore::read`] hand the caller a [`StoreError`] ([`db`] for a
/// driver error).
#[derive(Debug)]
pub(crate) enum Error {
    Sqlite(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::Sqlite(e) => db(e),
            Error::Store(e) => e,
        }
    }
}

/// The result of the code that runs on a connection.
pub(crate) type DbResult<T> = std::result::Result<T, Error>;

/// Maps a constraint violation to `Conflict(what)`, anything else as [`db`].
pub(crate) fn map_unique(e: rusqlite::Error, what: &'static str) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(what)
        }
        other => db(other),
    }
}

/// A rusqlite row read through the shared readers of [`unimsg_store::sql`].
pub(crate) struct Cols<'a, 'r>(pub &'a rusqlite::Row<'r>);

impl Cols<'_, '_> {
    fn get<T: rusqlite::types::FromSql>(&self, i: usize) -> Result<T> {
        self.0.get(i).map_err(|e| bad_column(i, e))
    }
}

impl SqlRow for Cols<'_, '_> {
    fn text(&self, i: usize) -> Result<String> {
        self.get(i)
    }
    fn text_opt(&self, i: usize) -> Result<Option<String>> {
        self.get(i)
    }
    fn int(&self, i: usize) -> Result<i64> {
        self.get(i)
    }
    fn int_opt(&self, i: usize) -> Result<Option<i64>> {
        self.get(i)
    }
    fn bytes(&self, i: usize) -> Result<Vec<u8>> {
        self.get(i)
    }
    fn bytes_opt(&self, i: usize) -> Result<Option<Vec<u8>>> {
        self.get(i)
    }
    fn flag(&self, i: usize) -> Result<bool> {
        self.get(i)
    }
}

/// The first row of `stmt` run with `params`, read by `read`.
pub(crate) fn first<T>(
    stmt: &mut Statement<'_>,
    params: impl Params,
    read: impl FnOnce(&dyn SqlRow) -> Result<T>,
) -> DbResult<Option<T>> {
    let mut rows = stmt.query(params)?;
    match rows.next()? {
        Some(row) => Ok(Some(read(&Cols(row))?)),
        None => Ok(None),
    }
}

/// Every row of `stmt` run with `params`, each read by `read`.
pub(crate) fn all<T>(
    stmt: &mut Statement<'_>,
    params: impl Params,
    read: impl Fn(&dyn SqlRow) -> Result<T>,
) -> DbResult<Vec<T>> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(read(&Cols(row))?);
    }
    Ok(out)
}

impl SqliteStore {
    /// Opens (creating if needed) the database, applies migrations and starts
    /// the writer thread. The thread ends when the last clone is dropped.
    pub fn open(options: SqliteOptions) -> Result<Self> {
        create_private(&options.path)?;
        let mut conn = open_connection(&options.path, false, options.durability)?;
        schema::migrate(&mut conn).map_err(db)?;
        warn_if_readable_by_others(&options.path);
        let checkpointer = open_connection(&options.path, false, options.durability)?;
        let Checkpoints { wake, copied } = start_checkpointer(checkpointer)?;
        let threshold = options.checkpoint_frames.max(1);
        // Replaces SQLite's auto-checkpoint (itself a WAL hook), which
        // copies the WAL into the database inside the commit that
        // crossed 1,000 frames: every send queued behind that commit
        // waited for the copy and its syncs.
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames: i32| {
            if u32::try_from(frames).is_ok_and(|f| f >= threshold) {
                // Full: a checkpoint is already asked for.
                let _ = wake.try_send(());
            }
            Ok(())
        }))
        .map_err(db)?;
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>(options.max_batch.max(1) * 4);
        let max_batch = options.max_batch.max(1);
        std::thread::Builder::new()
            .name("unimsg-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, max_batch, &copied))
            .map_err(|e| StoreError::Internal(format!("cannot start the writer thread: {e}")))?;
        let readers = ReaderPool {
            path: options.path.clone(),
            durability: options.durability,
            idle: Mutex::new(Vec::new()),
            keep: options.readers.max(1),
            permits: Arc::new(Semaphore::new(options.readers.max(1))),
        };
        Ok(Self {
            jobs: tx,
            readers: Arc::new(readers),
        })
    }

    /// Runs `f` inside the next group-commit transaction and returns its
    /// result once the transaction is durable. `f` runs in a savepoint of
    /// its own, so that its failure undoes only its writes.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    {
        self.submit(|outcome| {
            Box::new(Once {
                f: Some(f),
                outcome,
            })
        })
        .await
    }

    /// [`SqliteStore::write`] for the hot paths (sends, acks): `f` may run
    /// more than once, each time from the start on a transaction rolled
    /// back to before it, so it must not consume what it writes. It must
    /// also keep the writer's memo of heads true ([`memo`]): its inbox
    /// appends go through `inbox::insert_event`, and it creates, deletes
    /// or rebases no user and writes no broadcast. A batch
    /// made only of such jobs runs without savepoints, which copy every
    /// page a job touches; if one of them fails, the writer rolls the
    /// batch back and runs it again with savepoints ([`run_batch`]).
    pub(crate) async fn write_repeatable<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> DbResult<T> + Send + 'static,
    {
        self.submit(|outcome| Box::new(Repeatable { f, outcome }))
            .await
    }

    async fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(Outcome<T>) -> Box<dyn Job>,
    ) -> Result<T> {
        let started = tokio::time::Instant::now();
        let (done, done_rx) = oneshot::channel::<Result<T>>();
        self.jobs
            .send(job(Outcome { result: None, done }))
            .await
            .map_err(|_| StoreError::Unavailable("the store is shut down".into()))?;
        let result = done_rx
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped before committing".into()))?;
        timing::observe(timing::Call::Write, started.elapsed());
        result
    }

    /// Runs a read on a pooled connection on a blocking thread. At most
    /// `readers` reads run at once; the rest wait here, without a thread,
    /// so a burst of requests cannot start a burst of threads.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    {
        let started = tokio::time::Instant::now();
        let permit = self
            .readers
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the store is shut down".into()))?;
        let pool = self.readers.clone();
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = pool.take()?;
            let result = f(&conn).map_err(StoreError::from);
            pool.give_back(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?;
        timing::observe(timing::Call::Read, started.elapsed());
        result
    }
}

impl SqliteStore {
    /// A read of a few rows by key (a session, a user's inbox end), asked
    /// for on every request and connection: run on the calling thread
    /// with an idle pooled reader, since handing it to a blocking thread
    /// and back costs more than the read. Falls back to [`Self::read`]
    /// when no reader is idle, so this never opens a connection or waits.
    pub(crate) async fn read_point<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    {
        let Ok(permit) = self.readers.permits.clone().try_acquire_owned() else {
            return self.read(f).await;
        };
        let pooled = self
            .readers
            .idle
            .lock()
            .map_err(|_| StoreError::Internal("reader pool poisoned".into()))?
            .pop();
        let Some(conn) = pooled else {
            drop(permit);
            return self.read(f).await;
        };
        let started = tokio::time::Instant::now();
        let result = f(&conn).map_err(StoreError::from);
        timing::observe(timing::Call::Read, started.elapsed());
        self.readers.give_back(conn);
        drop(permit);
        result
    }
}

struct ReaderPool {
    path: PathBuf,
    durability: Durability,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
    permits: Arc<Semaphore>,
}

impl ReaderPool {
    fn take(&self) -> Result<Connection> {
        let pooled = self
            .idle
            .lock()
            .map_err(|_| StoreError::Internal("reader pool poisoned".into()))?
            .pop();
        match pooled {
            Some(conn) => Ok(conn),
            None => open_connection(&self.path, true, self.durability),
        }
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.keep
        {
            idle.push(conn);
        }
    }
}

/// Creates the database file readable and writable by its owner only
/// (0600), before SQLite opens it: SQLite gives the `-wal` and `-shm`
/// files the database file's mode, so the database holds password and
/// refresh-token hashes that no other local user can read. An existing
/// file is left as it is.
fn create_private(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// Warns about database files that other local users may read or write
/// (a file made by an older version, or copied in). They are not changed:
/// the operator may have chosen so.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut files = vec![path.to_path_buf()];
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            files.push(PathBuf::from(name));
        }
        for file in files {
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %file.display(),
                    mode = format!("{mode:04o}"),
                    "the database file is accessible to other users; chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn open_connection(path: &Path, read_only: bool, durability: Durability) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    let pragmas = if read_only {
        "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;".to_string()
    } else {
        format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000; \
             PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY;"
        )
    };
    conn.execute_batch(&pragmas).map_err(db)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The query planner's stability guarantee: a cached statement keeps
    // its plan whatever is bound to it. Without it SQLite marks statements
    // whose plan could depend on a bound value (a `LIMIT ?`, a comparison
    // with a partial index's condition, STAT4) to be parsed and planned
    // again when a new value is bound, which was a fifth of the connect
    // path's CPU.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(db)?;
    Ok(conn)
}

/// Statements each connection keeps prepared: more than the store has
/// (about 150 distinct texts), so none is parsed twice.
const STATEMENT_CACHE: usize = 256;

/// `execute` and `query_row` through the connection's statement cache:
/// rusqlite's own parse the SQL text on every call. Every statement of
/// the store goes through these or `prepare_cached`; only the schema
/// migrations and the backup (run once) parse theirs afresh.
pub(crate) trait Cached {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;

    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// WAL frames that start a checkpoint: SQLite's own auto-checkpoint
/// threshold.
const CHECKPOINT_FRAMES: u32 = 1000;

/// What the writer holds of the checkpointer.
struct Checkpoints {
    /// Asks for a checkpoint (at most one waits).
    wake: std::sync::mpsc::SyncSender<()>,
    /// Set by the checkpointer after a pass, cleared by the writer once
    /// it has finished that pass; the checkpointer skips its wakes while
    /// it is set, so that the two never run at once.
    copied: Arc<AtomicBool>,
}

/// Starts the checkpointer thread on its own connection. Each wake runs
/// one passive checkpoint, which copies the WAL's committed frames into
/// the database (and, at `synchronous = FULL`, syncs it) while the
/// writer goes on committing. SQLite starts the WAL over from its
/// beginning only when a write begins on a WAL that is copied to its
/// end, which under a steady stream of commits a checkpoint on another
/// connection never leaves: so after each pass the writer copies the
/// few frames committed during it (see [`writer_loop`]). A checkpoint
/// decides nothing about durability: a commit is durable once in the
/// WAL. The thread ends when the writer's connection, whose WAL hook
/// holds the sender, is closed.
fn start_checkpointer(conn: Connection) -> Result<Checkpoints> {
    let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
    let copied = Arc::new(AtomicBool::new(false));
    let pass_done = copied.clone();
    std::thread::Builder::new()
        .name("unimsg-sqlite-checkpointer".into())
        .spawn(move || {
            while woken.recv().is_ok() {
                // The writer has not finished the last pass yet: its
                // catch-up copies the rest and starts the WAL over. A pass
                // now would overlap it (one of the two gets SQLITE_BUSY),
                // and under steady writes the WAL then grew to several
                // times the threshold (7,000 frames seen at 17,000 msg/s).
                if pass_done.load(Ordering::Acquire) {
                    continue;
                }
                if let Some((frames, copied_frames)) = checkpoint(&conn) {
                    tracing::debug!(frames, copied = copied_frames, "WAL checkpoint");
                    pass_done.store(true, Ordering::Release);
                }
            }
        })
        .map_err(|e| StoreError::Internal(format!("cannot start the checkpointer thread: {e}")))?;
    Ok(Checkpoints { wake, copied })
}

/// Runs a PASSIVE checkpoint and returns its progress (WAL frames, frames
/// copied). The writer and the checkpointer take turns, so `SQLITE_BUSY`
/// means a checkpoint of another process (an operator's `sqlite3`, say)
/// is running: that one copies the WAL, which is no failure.
fn checkpoint(conn: &Connection) -> Option<(i32, i32)> {
    match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
        Ok(progress) => Some(progress),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            None
        }
        Err(error) => {
            tracing::warn!(%error, "WAL checkpoint failed");
            None
        }
    }
}

/// The writer thread: waits for one job, drains what else is queued (up to
/// `max_batch`) and commits them together. After a batch whose waiters
/// have heard back, if the checkpointer has copied the WAL since, it
/// copies what was committed during that pass, so that the next write
/// starts the WAL over.
fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    max_batch: usize,
    checkpointed: &AtomicBool,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    memo::install();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, &mut batch);
        if checkpointed.load(Ordering::Acquire) {
            checkpoint(&conn);
            // Only now may the checkpointer run again (it skips its wakes
            // while the flag is set), so the two passes never overlap.
            checkpointed.store(false, Ordering::Release);
        }
    }
    tracing::debug!("sqlite writer stopped");
}

/// Runs one of the writer's fixed statements (`BEGIN`, `SAVEPOINT`, …)
/// from the statement cache: parsed once, not on every job.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Commits `batch` in one transaction and tells every job's caller.
///
/// A job's failure must undo its writes alone. A savepoint per job does
/// that, but it copies every page the job touches before its first change
/// (a fifth of a send's CPU, measured). So a batch of repeatable jobs
/// first runs without savepoints; if a job fails, the whole transaction is
/// rolled back and the batch runs again, job by job in savepoints, in the
/// same order: every job then sees what it would have seen the first
/// time.
///
/// The writer's memo of heads ([`memo`]) stays only across what committed
/// and was written by repeatable jobs: it is forgotten after a rollback of
/// any extent, a failed commit, and every other kind of job.
fn run_batch(conn: &Connection, batch: &mut Vec<Box<dyn Job>>) {
    let plain = batch.len() > 1 && batch.iter().all(|job| job.repeatable());
    let commit = match plain.then(|| run_plain(conn, batch)).flatten() {
        Some(commit) => commit,
        None => run_in_savepoints(conn, batch),
    };
    if commit.is_err() {
        memo::forget();
    }
    for job in batch.drain(..) {
        job.finish(commit.clone());
    }
}

/// Runs the batch in one transaction without savepoints. `None` when a job
/// failed: the transaction was rolled back, and nothing of it is kept.
fn run_plain(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Option<Result<()>> {
    if let Err(e) = begin(conn) {
        return Some(Err(e));
    }
    if batch.iter_mut().all(|job| job.run(conn)) {
        return Some(commit(conn));
    }
    memo::forget();
    if let Err(e) = control(conn, "ROLLBACK") {
        tracing::error!(error = %e, "rollback failed");
    }
    None
}

/// Runs the batch in one transaction, each job in a savepoint of its own
/// (a batch of one needs none: its failure rolls the whole transaction
/// back).
fn run_in_savepoints(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<()> {
    begin(conn)?;
    if let [job] = batch {
        let ran = job.run(conn);
        if !ran || !job.repeatable() {
            memo::forget();
        }
        return if ran {
            commit(conn)
        } else {
            finish_with(conn, "ROLLBACK")
        };
    }
    for job in batch.iter_mut() {
        if let Err(e) = control(conn, "SAVEPOINT job") {
            tracing::error!(error = %e, "savepoint failed");
        }
        let ran = job.run(conn);
        if !ran || !job.repeatable() {
            memo::forget();
        }
        if !ran {
            let _ = control(conn, "ROLLBACK TO job");
        }
        let _ = control(conn, "RELEASE job");
    }
    commit(conn)
}

fn begin(conn: &Connection) -> Result<()> {
    control(conn, "BEGIN IMMEDIATE").map_err(|e| {
        let _ = control(conn, "ROLLBACK");
        StoreError::Unavailable(format!("cannot begin a transaction: {e}"))
    })
}

fn commit(conn: &Connection) -> Result<()> {
    finish_with(conn, "COMMIT")
}

/// Ends the transaction with `sql` (`COMMIT` or `ROLLBACK`).
fn finish_with(conn: &Connection, sql: &str) -> Result<()> {
    control(conn, sql).map_err(|e| {
        tracing::error!(error = %e, "group commit failed");
        let _ = control(conn, "ROLLBACK");
        StoreError::Unavailable(format!("commit failed: {e}"))
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.read(|conn| Ok(conn.query_row_cached("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a fresh directory (`db.sqlite`) with a `filler` table,
    /// checkpointing every `threshold` WAL frames.
    #[allow(clippy::unwrap_used)]
    async fn filler_store(threshold: u32) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let mut options = SqliteOptions::new(dir.path().join("db.sqlite"));
        options.checkpoint_frames = threshold;
        let store = SqliteStore::open(options).unwrap();
        store
            .write(|conn| Ok(conn.execute_cached("CREATE TABLE filler (b BLOB NOT NULL)", [])?))
            .await
            .unwrap();
        (dir, store)
    }

    /// The frames the WAL file of `db` holds room for: a frame is a 4 KiB
    /// page and its 24-byte header, and the file keeps its largest size.
    #[allow(clippy::unwrap_used)]
    fn wal_frames(db: &Path) -> u64 {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(&wal).unwrap().len() / (4096 + 24)
    }

    /// The WAL is checkpointed by the checkpointer thread, not by the
    /// commit that crosses the threshold: with the auto-checkpoint gone
    /// and no checkpointer, 1,000 commits of a 4 KiB row would leave
    /// about 2,400 frames in the WAL file (the row's pages and the table's
    /// leaf), and one checkpoint per pass that never finished would leave
    /// the WAL growing too. Every row is still there after a reopen.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn the_checkpointer_keeps_the_wal_short() {
        let (dir, store) = filler_store(20).await;
        let path = dir.path().join("db.sqlite");
        const WRITES: usize = 1000;
        for _ in 0..WRITES {
            store
                .write(|conn| {
                    Ok(conn.execute_cached("INSERT INTO filler (b) VALUES (zeroblob(4096))", [])?)
                })
                .await
                .unwrap();
        }
        // The file keeps its largest size; how far it got past the
        // threshold of 20 depends on how soon the checkpointer ran, hence
        // the margin.
        let frames = wal_frames(&path);
        assert!(
            frames < WRITES as u64,
            "the WAL file grew to {frames} frames over {WRITES} commits"
        );
        drop(store);
        let conn = open_connection(&path, true, Durability::Full).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM filler", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, WRITES as i64);
    }

    /// Under steady concurrent writes (group commits back to back) the
    /// checkpointer's passes and the writer's catch-ups take turns: the
    /// WAL file stays near the threshold. When they could overlap, one of
    /// the two failed with `SQLITE_BUSY` every few commits and the WAL
    /// grew to several times the threshold.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::unwrap_used)]
    async fn checkpoints_keep_the_wal_short_under_concurrent_writes() {
        let (dir, store) = filler_store(50).await;
        const TASKS: usize = 8;
        const WRITES: usize = 400;
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..WRITES {
                    store
                        .write_repeatable(|conn| {
                            Ok(conn.execute_cached(
                                "INSERT INTO filler (b) VALUES (zeroblob(3000))",
                                [],
                            )?)
                        })
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let frames = wal_frames(&dir.path().join("db.sqlite"));
        // 3,200 rows of 3 KB are about 2,400 pages; the threshold is 50.
        assert!(
            frames < 400,
            "the WAL file grew to {frames} frames with a threshold of 50"
        );
    }

    /// A job of the batch tests: inserts `name` into `t`, then fails if
    /// `fails`, and counts its runs.
    fn inserting(
        name: &'static str,
        fails: bool,
        runs: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> (Box<dyn Job>, oneshot::Receiver<Result<()>>) {
        let (done, rx) = oneshot::channel();
        let runs = Arc::clone(runs);
        let f = move |conn: &Connection| -> DbResult<()> {
            runs.fetch_add(1, Ordering::SeqCst);
            conn.execute_cached("INSERT INTO t (name) VALUES (?1)", [name])?;
            if fails {
                return Err(StoreError::NotFound("the test's row").into());
            }
            Ok(())
        };
        let job: Box<dyn Job> = Box::new(Repeatable {
            f,
            outcome: Outcome { result: None, done },
        });
        (job, rx)
    }

    #[allow(clippy::unwrap_used)]
    fn names(conn: &Connection) -> Vec<String> {
        conn.prepare("SELECT name FROM t ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// A batch of repeatable jobs runs once, without savepoints, when all
    /// succeed; when one fails, after writing, the batch is rolled back
    /// and run again in savepoints: the failed job's row is gone, the
    /// others' are kept, and each caller hears its own outcome.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_failed_job_in_a_batch_without_savepoints_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("db.sqlite"), false, Durability::Full).unwrap();
        conn.execute_batch("CREATE TABLE t (name TEXT NOT NULL)")
            .unwrap();
        let runs: Vec<_> = (0..3)
            .map(|_| Arc::new(std::sync::atomic::AtomicUsize::new(0)))
            .collect();

        let mut batch = Vec::new();
        let mut outcomes = Vec::new();
        for (name, runs) in ["a", "b", "c"].into_iter().zip(&runs) {
            let (job, rx) = inserting(name, false, runs);
            batch.push(job);
            outcomes.push(rx);
        }
        run_batch(&conn, &mut batch);
        for rx in outcomes {
            rx.await.unwrap().unwrap();
        }
        assert_eq!(names(&conn), ["a", "b", "c"]);
        assert!(runs.iter().all(|r| r.load(Ordering::SeqCst) == 1));

        conn.execute_batch("DELETE FROM t").unwrap();
        let mut batch = Vec::new();
        let mut outcomes = Vec::new();
        for ((name, fails), runs) in [("d", false), ("e", true), ("f", false)]
            .into_iter()
            .zip(&runs)
        {
            let (job, rx) = inserting(name, fails, runs);
            batch.push(job);
            outcomes.push(rx);
        }
        run_batch(&conn, &mut batch);
        let results: Vec<_> = outcomes_of(outcomes).await;
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(
            matches!(results[1], Err(StoreError::NotFound("the test's row"))),
            "{results:?}"
        );
        assert_eq!(names(&conn), ["d", "f"]);
        // The plain pass stopped at the failure; the savepoint pass ran all.
        let counts: Vec<_> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
        assert_eq!(counts, [3, 3, 2]);
        assert!(conn.is_autocommit(), "the batch left a transaction open");
    }

    /// A batch with a job that cannot run twice runs in savepoints from
    /// the start: every job runs once, and a failure still undoes only
    /// its own job.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_batch_with_a_once_job_runs_each_job_once() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("db.sqlite"), false, Durability::Full).unwrap();
        conn.execute_batch("CREATE TABLE t (name TEXT NOT NULL)")
            .unwrap();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (failing, failed) = inserting("x", true, &runs);
        let (done, once_rx) = oneshot::channel();
        let once: Box<dyn Job> = Box::new(Once {
            f: Some(|conn: &Connection| -> DbResult<()> {
                conn.execute_cached("INSERT INTO t (name) VALUES ('y')", [])?;
                Ok(())
            }),
            outcome: Outcome { result: None, done },
        });
        let mut batch = vec![failing, once];
        run_batch(&conn, &mut batch);
        assert!(failed.await.unwrap().is_err());
        once_rx.await.unwrap().unwrap();
        assert_eq!(names(&conn), ["y"]);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    /// A job and where its caller hears what it reports.
    type Reporting = (Box<dyn Job>, oneshot::Receiver<Result<u64>>);

    /// A repeatable job appending one event to `user`'s inbox (and failing
    /// after the append when `fails`); it reports the event's visible seq.
    #[allow(clippy::unwrap_used)]
    fn appending(user: &str, fails: bool) -> Reporting {
        let (done, rx) = oneshot::channel();
        let user = unimsg_proto::UserId::parse(user).unwrap();
        let f = move |conn: &Connection| -> DbResult<u64> {
            let seq = inbox::insert_event(
                conn,
                &user,
                unimsg_proto::EventType::MessageNew,
                None,
                Some("{}"),
                time::OffsetDateTime::UNIX_EPOCH,
            )?;
            if fails {
                return Err(StoreError::NotFound("the test's row").into());
            }
            Ok(seq.0)
        };
        let job: Box<dyn Job> = Box::new(Repeatable {
            f,
            outcome: Outcome { result: None, done },
        });
        (job, rx)
    }

    /// A job that runs once: `sql`; it reports 0.
    fn run_once(sql: &'static str) -> Reporting {
        let (done, rx) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Once {
            f: Some(move |conn: &Connection| -> DbResult<u64> {
                conn.execute_batch(sql)?;
                Ok(0)
            }),
            outcome: Outcome { result: None, done },
        });
        (job, rx)
    }

    /// Runs `jobs` as one batch: what each reported, `None` when it failed.
    async fn seqs_of(conn: &Connection, jobs: Vec<Reporting>) -> Vec<Option<u64>> {
        let (mut batch, outcomes): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
        run_batch(conn, &mut batch);
        let mut out = Vec::new();
        for rx in outcomes {
            out.push(rx.await.ok().and_then(|r| r.ok()));
        }
        out
    }

    /// The writer's memo of heads answers what the store would, whatever
    /// was undone: after a batch rolled back and run again, after a job
    /// rolled back to its savepoint, and after a job of another kind (a
    /// broadcast) moved a head. Each case, with the memo left as it was,
    /// hands out a seq that skips one (a gap the client would wait on) or
    /// repeats one.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn the_writers_memo_of_heads_follows_rollbacks_and_other_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn =
            open_connection(&dir.path().join("db.sqlite"), false, Durability::Full).unwrap();
        schema::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO users (user_id, username, display_name, created_at, bbase) \
             VALUES ('alice', 'alice', 'Alice', 0, 0)",
        )
        .unwrap();
        memo::install();

        // Plain pass: alice gets 1, the ghost's append fails (no such
        // user), the batch is rolled back and run again in savepoints.
        let seqs = seqs_of(
            &conn,
            vec![
                appending("alice", false),
                appending("ghost", false),
                appending("alice", false),
            ],
        )
        .await;
        assert_eq!(seqs, [Some(1), None, Some(2)]);

        // In savepoints (a job of another kind is in the batch): the
        // failing job's append is undone, and the next append reuses its seq.
        let seqs = seqs_of(
            &conn,
            vec![
                run_once("SELECT 1"),
                appending("alice", false),
                appending("alice", true),
                appending("alice", false),
            ],
        )
        .await;
        assert_eq!(seqs, [Some(0), Some(3), None, Some(4)]);

        // A broadcast moves every user's visible seq by one.
        let seqs = seqs_of(
            &conn,
            vec![
                appending("alice", false),
                run_once(
                    "INSERT INTO broadcasts (message_id, kind, sender, key_id, nonce, content, created_at) \
                     VALUES ('b1', 'text', 'admin', 0, x'', x'', 0)",
                ),
                appending("alice", false),
            ],
        )
        .await;
        assert_eq!(seqs, [Some(5), Some(0), Some(7)]);

        // The inbox holds each seq once, without a gap.
        let (rows, newest): (i64, i64) = conn
            .query_row(
                "SELECT count(*), max(seq) FROM inbox WHERE user_id = 'alice'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((rows, newest), (6, 6));
    }

    async fn outcomes_of(outcomes: Vec<oneshot::Receiver<Result<()>>>) -> Vec<Result<()>> {
        let mut out = Vec::new();
        for rx in outcomes {
            out.push(
                rx.await
                    .unwrap_or_else(|_| Err(StoreError::Internal("no outcome".into()))),
            );
        }
        out
    }

    /// The bundled SQLite is built with the options of `.cargo/config.toml`
    /// (a build that missed them still works, only slower: this says so).
    #[test]
    #[allow(clippy::unwrap_used)]
    fn sqlite_is_built_without_memory_statistics_or_shared_cache() {
        let conn = Connection::open_in_memory().unwrap();
        let options: Vec<String> = conn
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for wanted in ["DEFAULT_MEMSTATUS=0", "OMIT_SHARED_CACHE"] {
            assert!(
                options.iter().any(|o| o == wanted),
                "{wanted} is not among {options:?}"
            );
        }
    }

    /// With the planner's stability guarantee on, the hot lookups that go
    /// through a partial index still use it: their plans do not depend on
    /// a bound value.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn hot_lookups_keep_their_indexes_under_the_planner_guarantee() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut conn = open_connection(&path, false, Durability::Full).unwrap();
        schema::migrate(&mut conn).unwrap();
        assert!(
            conn.db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)
                .unwrap()
        );
        let plan = |sql: &str| -> String {
            let mut stmt = conn
                .prepare_cached(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let rows = stmt
                .query_map(["a", "b"], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap();
            rows.join("; ")
        };
        let dedup =
            plan("SELECT message_id FROM messages WHERE sender_id = ?1 AND client_msg_id = ?2");
        assert!(dedup.contains("messages_idempotency"), "{dedup}");
        let due = plan(
            "SELECT event_seq FROM hook_deliveries WHERE webhook_id = ?1 AND state = 'pending' AND next_at <= ?2",
        );
        assert!(due.contains("hook_deliveries_due"), "{due}");
    }
}
