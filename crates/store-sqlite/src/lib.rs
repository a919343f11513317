//! The embedded backend: one SQLite file in WAL mode.
//!
//! Writes go through one writer thread that drains its queue into a single
//! transaction (group commit): concurrent sends share one `COMMIT` and one
//! fsync. Each job runs inside its own savepoint, so a failing job is rolled
//! back alone while the others in the batch commit. Callers hear back only
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

/// A job the writer runs inside the batch transaction. It returns whether it
/// succeeded (failed jobs are rolled back to their savepoint) and a
/// completion that receives the outcome of the `COMMIT`. Given `None`, the
/// job must not touch the database and just fails (no transaction could be
/// opened).
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Completion) + Send>;
type Completion = Box<dyn FnOnce(Result<()>) + Send>;

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
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
        let (tx, rx) = mpsc::channel::<Job>(options.max_batch.max(1) * 4);
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
    /// result once the transaction is durable.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    {
        let started = tokio::time::Instant::now();
        let (done_tx, done_rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => f(conn).map_err(StoreError::from),
                None => Err(StoreError::Unavailable("no transaction".into())),
            };
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |commit| {
                let _ = done_tx.send(commit.and(result));
            });
            (ok, completion)
        });
        self.jobs
            .send(job)
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
    /// Set by the checkpointer after a pass: the writer finishes it.
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
    let done = copied.clone();
    std::thread::Builder::new()
        .name("unimsg-sqlite-checkpointer".into())
        .spawn(move || {
            while woken.recv().is_ok() {
                match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
                    Ok((frames, copied)) => {
                        tracing::debug!(frames, copied, "WAL checkpoint");
                        done.store(true, Ordering::Release);
                    }
                    Err(error) => tracing::warn!(%error, "WAL checkpoint failed"),
                }
            }
        })
        .map_err(|e| StoreError::Internal(format!("cannot start the checkpointer thread: {e}")))?;
    Ok(Checkpoints { wake, copied })
}

/// The writer thread: waits for one job, drains what else is queued (up to
/// `max_batch`) and commits them together. After a batch whose waiters
/// have heard back, if the checkpointer has copied the WAL since, it
/// copies what was committed during that pass, so that the next write
/// starts the WAL over.
fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    checkpointed: &AtomicBool,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, &mut batch);
        if checkpointed.swap(false, Ordering::Acquire)
            && let Err(error) = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE)
        {
            tracing::warn!(%error, "WAL checkpoint failed");
        }
    }
    tracing::debug!("sqlite writer stopped");
}

/// Runs one of the writer's fixed statements (`BEGIN`, `SAVEPOINT`, …)
/// from the statement cache: parsed once, not on every job.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn run_batch(conn: &Connection, batch: &mut Vec<Job>) {
    let size = batch.len();
    if let Err(e) = control(conn, "BEGIN IMMEDIATE") {
        let err = StoreError::Unavailable(format!("cannot begin a transaction: {e}"));
        for job in batch.drain(..) {
            // The job never ran; its completion still has to hear about it.
            let (_, completion) = job(None);
            completion(Err(err.clone()));
        }
        let _ = control(conn, "ROLLBACK");
        return;
    }
    let mut completions = Vec::with_capacity(size);
    // A batch of one needs no savepoint: its failure rolls the whole
    // transaction back.
    let alone = size == 1;
    for job in batch.drain(..) {
        if !alone && let Err(e) = control(conn, "SAVEPOINT job") {
            tracing::error!(error = %e, "savepoint failed");
        }
        let (ok, completion) = job(Some(conn));
        if !alone {
            if !ok {
                let _ = control(conn, "ROLLBACK TO job");
            }
            let _ = control(conn, "RELEASE job");
        }
        completions.push((ok, completion));
    }
    let finish = if alone && !completions.first().is_some_and(|(ok, _)| *ok) {
        // The one job failed: nothing to keep.
        control(conn, "ROLLBACK")
    } else {
        control(conn, "COMMIT")
    };
    let commit = finish.map_err(|e| {
        tracing::error!(error = %e, "group commit failed");
        let _ = control(conn, "ROLLBACK");
        StoreError::Unavailable(format!("commit failed: {e}"))
    });
    for (_, completion) in completions {
        completion(commit.clone());
    }
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

    /// The WAL is checkpointed by the checkpointer thread, not by the
    /// commit that crosses the threshold: with the auto-checkpoint gone
    /// and no checkpointer, 1,000 commits of a 4 KiB row would leave
    /// about 2,400 frames in the WAL file (the row's pages and the table's
    /// leaf), and one checkpoint per pass that never finished would leave
    /// the WAL growing too. Every row is still there after a reopen.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn the_checkpointer_keeps_the_wal_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut options = SqliteOptions::new(&path);
        options.checkpoint_frames = 20;
        let store = SqliteStore::open(options).unwrap();
        store
            .write(|conn| Ok(conn.execute_cached("CREATE TABLE filler (b BLOB NOT NULL)", [])?))
            .await
            .unwrap();
        const WRITES: usize = 1000;
        for _ in 0..WRITES {
            store
                .write(|conn| {
                    Ok(conn.execute_cached("INSERT INTO filler (b) VALUES (zeroblob(4096))", [])?)
                })
                .await
                .unwrap();
        }
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal_bytes = std::fs::metadata(&wal).unwrap().len();
        // A frame is a 4 KiB page and its 24-byte header. The file keeps
        // its largest size; how far it got past the threshold of 20
        // depends on how soon the checkpointer ran, hence the margin.
        let frames = wal_bytes / (4096 + 24);
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
