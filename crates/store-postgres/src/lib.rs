//! The PostgreSQL backend of the storage traits, for cluster mode.
//!
//! Any number of unimsg nodes share one database. Consistency comes from
//! row locks taken in one global order, never from a single writer:
//!
//! 1. the broadcast clock row, `FOR SHARE` (a broadcast takes it
//!    `FOR UPDATE`, so it commits strictly between the inbox rows before
//!    and after it: see ARCHITECTURE.md, "Broadcast positions");
//! 2. conversation and group rows;
//! 3. user rows, sorted by user id, `FOR UPDATE`: a user's seq is bumped
//!    under that lock, so inbox seqs stay gap-free and never repeat
//!    whichever node writes.
//!
//! A transaction that still hits a deadlock or a serialization failure is
//! run again from the start ([`transaction!`]). Reads that combine several
//! statements run in one read-only `REPEATABLE READ` snapshot. Content
//! arrives sealed, exactly as in the embedded store.
//!
//! One file per storage trait, named as in the embedded backend:
//! `users.rs`, `sessions.rs`, `inbox.rs`, `data_keys.rs`, `admins.rs`,
//! `notifications.rs`, `broadcasts.rs`, `audit.rs`, `relationships.rs`,
//! `groups.rs`; `schema.rs` holds the migrations and `macros.rs` the
//! transaction helpers.

#[macro_use]
mod macros;
mod admins;
mod audit;
mod broadcasts;
mod data_keys;
mod groups;
mod inbox;
mod notifications;
mod relationships;
mod schema;
mod sessions;
mod tls;
mod users;
mod webhooks;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;
use tokio_postgres::{NoTls, Row};
use unimsg_proto::{EventType, Seq, UserId};
use unimsg_store::sql::{SqlRow, bad_column, ms, to_u64};
use unimsg_store::{Result, Store, StoreError};

/// Options of the PostgreSQL store.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database` (or key=value form).
    pub url: String,
    /// Connections kept by this node.
    pub pool_size: usize,
    /// How long a request waits for a connection, or for a new one to open,
    /// before failing with "unavailable" (503).
    pub timeout: Duration,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PgOptions")
            .field("url", &"[redacted]")
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            timeout: Duration::from_secs(5),
        }
    }
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl PgStore {
    /// Connects, applies migrations (one node at a time) and keeps a pool.
    pub async fn connect(options: PgOptions) -> Result<Self> {
        let (url, roots) = tls::split(&options.url)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?;
        config.connect_timeout(options.timeout);
        if config.get_application_name().is_none() {
            config.application_name("unimsg");
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match roots {
            None => Manager::from_config(config, NoTls, manager_config),
            Some(roots) => Manager::from_config(
                config,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls::client_config(&roots)?),
                manager_config,
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .recycle_timeout(Some(options.timeout))
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot build the pool: {e}")))?;
        let store = Self { pool };
        let mut client = store.client().await?;
        schema::migrate(&mut client).await?;
        Ok(store)
    }

    /// A pooled connection; "unavailable" when none can be had in time.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("PostgreSQL: {e}")))
    }
}

/// Maps a driver error: lost connections, and deadlocks or serialization
/// failures that [`transaction!`] gave up retrying, are "unavailable" (the
/// caller may retry, HTTP 503); unique violations are left to the caller
/// ([`unique`]); anything else is internal.
pub(crate) fn pg(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if is_contention(c) => StoreError::Unavailable(format!("PostgreSQL: {e}")),
        Some(c) if c.code().starts_with("08") || c.code().starts_with("57P") => {
            StoreError::Unavailable(format!("PostgreSQL: {e}"))
        }
        Some(_) => StoreError::Internal(format!("PostgreSQL: {e}")),
        None if e.is_closed() || e.as_db_error().is_none() => {
            StoreError::Unavailable(format!("PostgreSQL: {e}"))
        }
        None => StoreError::Internal(format!("PostgreSQL: {e}")),
    }
}

/// Maps a unique violation to `Conflict(what)`, anything else as [`pg`].
pub(crate) fn unique(e: tokio_postgres::Error, what: &'static str) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Conflict(what)
    } else {
        pg(e)
    }
}

/// What the code running on a connection fails with: a driver error or a
/// decision of the store. `?` takes both, so that code reads without a
/// `map_err` per statement; [`transaction!`], [`snapshot!`] and
/// [`connected!`] hand the caller a [`StoreError`] ([`pg`] for a driver
/// error). A unique violation that is a conflict is still mapped where it
/// can occur, with [`unique`].
#[derive(Debug)]
pub(crate) enum Error {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(e)
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
            Error::Pg(e) => pg(e),
            Error::Store(e) => e,
        }
    }
}

/// The result of the code that runs on a connection.
pub(crate) type DbResult<T> = std::result::Result<T, Error>;

/// A deadlock or a serialization failure: the transaction lost a race with
/// another and may simply run again.
fn is_contention(code: &SqlState) -> bool {
    *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
}

impl Error {
    /// Whether [`transaction!`] should run the transaction again.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, Self::Pg(e) if e.code().is_some_and(is_contention))
    }
}

/// Reads column `i`; a value of an unexpected type is a corrupt row, not a
/// lost connection (which is what [`pg`] would make of a driver error
/// without a server code).
pub(crate) fn column<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i).map_err(|e| bad_column(i, e))
}

/// Reads `row` with one of the shared readers of [`unimsg_store::sql`].
pub(crate) fn read<T>(row: &Row, reader: impl FnOnce(&dyn SqlRow) -> Result<T>) -> DbResult<T> {
    Ok(reader(&Cols(row))?)
}

/// A PostgreSQL row read through the shared readers of [`unimsg_store::sql`].
struct Cols<'a>(&'a Row);

impl SqlRow for Cols<'_> {
    fn text(&self, i: usize) -> Result<String> {
        column(self.0, i)
    }
    fn text_opt(&self, i: usize) -> Result<Option<String>> {
        column(self.0, i)
    }
    fn int(&self, i: usize) -> Result<i64> {
        column(self.0, i)
    }
    fn int_opt(&self, i: usize) -> Result<Option<i64>> {
        column(self.0, i)
    }
    fn bytes(&self, i: usize) -> Result<Vec<u8>> {
        column(self.0, i)
    }
    fn bytes_opt(&self, i: usize) -> Result<Option<Vec<u8>>> {
        column(self.0, i)
    }
    fn flag(&self, i: usize) -> Result<bool> {
        column(self.0, i)
    }
}

/// One inbox row to append.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InboxRow<'a> {
    pub user: &'a UserId,
    pub kind: EventType,
    /// The message or notification the event is about.
    pub message_id: Option<&'a str>,
    /// The event's own JSON data (any other event).
    pub data: Option<&'a str>,
    pub at: OffsetDateTime,
}

/// Takes the broadcast clock `FOR SHARE` and returns the newest bseq: no
/// broadcast can commit until this transaction ends. Call it before any
/// user row is locked (lock order, see the crate docs).
pub(crate) async fn broadcast_clock(tx: &deadpool_postgres::Transaction<'_>) -> DbResult<i64> {
    let stmt = tx
        .prepare_cached("SELECT head FROM broadcast_clock WHERE id = 1 FOR SHARE")
        .await?;
    let row = tx.query_one(&stmt, &[]).await?;
    Ok(row.get(0))
}

/// What [`append_inbox`] does with a row for a user that does not exist
/// (deleted meanwhile): fail the transaction, or give that row no seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnknownUsers {
    Fail,
    Skip,
}

/// Appends inbox rows in one go and returns each row's visible seq, in
/// input order. Locks the broadcast clock and then every user involved in
/// user-id order, bumps each user's seq by the number of their rows and
/// inserts the rows with one statement. Unknown users are `NotFound("user")`,
/// or `None` with `UnknownUsers::Skip`.
pub(crate) async fn append_inbox(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[InboxRow<'_>],
    unknown: UnknownUsers,
) -> DbResult<Vec<Option<Seq>>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let head = broadcast_clock(tx).await?;
    let mut users: Vec<&str> = rows.iter().map(|r| r.user.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    let lock = tx
        .prepare_cached(
            "SELECT user_id, last_seq, bbase FROM users WHERE user_id = ANY($1) \
             ORDER BY user_id FOR UPDATE",
        )
        .await?;
    // user → (last seq so far, bbase)
    let mut state: std::collections::HashMap<String, (i64, i64)> = tx
        .query(&lock, &[&users])
        .await?
        .into_iter()
        .map(|r| (r.get::<_, String>(0), (r.get(1), r.get(2))))
        .collect();
    let mut seqs = Vec::with_capacity(rows.len());
    let (mut c_user, mut c_seq, mut c_kind, mut c_msg, mut c_data, mut c_at) = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    for row in rows {
        let Some((last, base)) = state.get_mut(row.user.as_str()) else {
            if unknown == UnknownUsers::Skip {
                seqs.push(None);
                continue;
            }
            return Err(StoreError::NotFound("user").into());
        };
        *last += 1;
        seqs.push(Some(Seq(to_u64(*last + head - *base))));
        c_user.push(row.user.as_str());
        c_seq.push(*last);
        c_kind.push(row.kind.as_str());
        c_msg.push(row.message_id);
        c_data.push(row.data);
        c_at.push(ms(row.at));
    }
    if c_user.is_empty() {
        return Ok(seqs);
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO inbox (user_id, seq, kind, message_id, data, created_at, bpos) \
             SELECT u, s, k, m, d, a, $7 FROM unnest($1::text[], $2::int8[], $3::text[], \
             $4::text[], $5::text[], $6::int8[]) AS t(u, s, k, m, d, a)",
        )
        .await?;
    tx.execute(
        &insert,
        &[&c_user, &c_seq, &c_kind, &c_msg, &c_data, &c_at, &head],
    )
    .await?;
    let (ids, lasts): (Vec<&str>, Vec<i64>) = users
        .iter()
        .filter_map(|u| state.get(*u).map(|(last, _)| (*u, *last)))
        .unzip();
    let bump = tx
        .prepare_cached(
            "UPDATE users AS u SET last_seq = t.last \
             FROM unnest($1::text[], $2::int8[]) AS t(id, last) WHERE u.user_id = t.id",
        )
        .await?;
    tx.execute(&bump, &[&ids, &lasts]).await?;
    state.clear();
    Ok(seqs)
}

/// Locks the rows of `users` `FOR UPDATE` in user-id order (the order
/// [`append_inbox`] uses) and returns the ids of those that exist. The
/// caller has taken the broadcast clock already.
pub(crate) async fn lock_users(
    tx: &deadpool_postgres::Transaction<'_>,
    mut ids: Vec<&str>,
) -> DbResult<HashSet<String>> {
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let stmt = tx
        .prepare_cached(
            "SELECT user_id FROM users WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE",
        )
        .await?;
    tx.query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|r| Ok(column::<String>(r, 0)?))
        .collect()
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<()> {
        timed(async {
            let client = self.client().await?;
            client.simple_query("SELECT 1").await.map_err(pg)?;
            Ok(())
        })
        .await
    }
}

/// Times a call that does not go through the macros, as `connected!`
/// does (`unimsg_store_duration_seconds{call="statement"}`).
pub(crate) async fn timed<T>(work: impl std::future::Future<Output = T>) -> T {
    let started = tokio::time::Instant::now();
    let out = work.await;
    unimsg_store::timing::observe(unimsg_store::timing::Call::Statement, started.elapsed());
    out
}
