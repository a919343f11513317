//! Online backup of the embedded store, and restoring one.
//!
//! A backup is one SQLite database file: a copy of the store made with
//! SQLite's online backup API while the server keeps writing. It holds the
//! data keys only wrapped by the master key, which is not in it, so the
//! file alone opens no message; with the master key included (on
//! request), a table of its own carries it and restoring takes it out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::{create_private, schema};

/// Why a backup or a restore failed, in words for the operator.
#[derive(Debug)]
pub struct BackupError(String);

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackupError {}

impl From<rusqlite::Error> for BackupError {
    fn from(e: rusqlite::Error) -> Self {
        BackupError(format!("the database refused: {e}"))
    }
}

impl From<unimsg_store::StoreError> for BackupError {
    fn from(e: unimsg_store::StoreError) -> Self {
        BackupError(e.to_string())
    }
}

type Result<T> = std::result::Result<T, BackupError>;

/// The table a backup made with the master key carries it in.
const KEY_TABLE: &str = "backup_master_key";

/// What restoring a backup found in it.
#[derive(Debug)]
pub struct Restored {
    /// The master key (base64) the backup carried, if it was made with it.
    pub master_key: Option<MasterKeyText>,
    /// The size of the restored database, in bytes.
    pub bytes: u64,
}

/// A master key as base64 text; `Debug` never shows it.
pub struct MasterKeyText(pub String);

impl std::fmt::Debug for MasterKeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKeyText([redacted])")
    }
}

fn unavailable(what: &str, path: &Path, e: impl std::fmt::Display) -> BackupError {
    BackupError(format!("{what} {}: {e}", path.display()))
}

/// `path` with `suffix` added to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Copies the database at `db_path` into a new file `out` (readable by its
/// owner only) while a server may be writing it: all pages in one step of
/// the backup API, under one read transaction, so the copy is the store
/// at one moment. With `master_key` the copy carries it. Returns the
/// copy's size in bytes. An existing `out` is refused.
pub fn backup(db_path: &Path, out: &Path, master_key: Option<&MasterKeyText>) -> Result<u64> {
    if out.exists() {
        return Err(BackupError(format!(
            "{} exists; choose a new file",
            out.display()
        )));
    }
    let source = Connection::open_with_flags(
        db_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| unavailable("cannot open", db_path, e))?;
    let partial = beside(out, ".partial");
    let _ = std::fs::remove_file(&partial);
    create_private(&partial)?;
    let copied = (|| -> Result<u64> {
        let mut copy =
            Connection::open(&partial).map_err(|e| unavailable("cannot open", &partial, e))?;
        copy_all(&source, &mut copy)?;
        // One self-contained file: no write-ahead log beside it.
        copy.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))?;
        if let Some(key) = master_key {
            copy.execute_batch(&format!("CREATE TABLE {KEY_TABLE} (key TEXT NOT NULL)"))?;
            copy.execute(
                &format!("INSERT INTO {KEY_TABLE} (key) VALUES (?1)"),
                [&key.0],
            )?;
        }
        check_integrity(&copy, &partial)?;
        drop(copy);
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(|e| unavailable("cannot write", &partial, e))?;
        Ok(std::fs::metadata(&partial)
            .map_err(|e| unavailable("cannot read", &partial, e))?
            .len())
    })();
    match copied {
        Ok(bytes) => {
            std::fs::rename(&partial, out).map_err(|e| unavailable("cannot write", out, e))?;
            Ok(bytes)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// The master key a backup carries, if it was made with one.
pub fn master_key_in(from: &Path) -> Result<Option<MasterKeyText>> {
    let conn = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| unavailable("cannot open", from, e))?;
    let present: bool = conn
        .query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [KEY_TABLE],
            |r| r.get(0),
        )
        .map_err(|e| BackupError(format!("{} is not a unimsg backup: {e}", from.display())))?;
    if !present {
        return Ok(None);
    }
    Ok(conn
        .query_row(&format!("SELECT key FROM {KEY_TABLE}"), [], |r| r.get(0))
        .optional()?
        .map(MasterKeyText))
}

/// Copies every page of `source` into `copy` in one step of the backup
/// API: one read transaction, so one consistent moment. In WAL mode it
/// does not hold writers up; a busy source is waited for by the source's
/// busy timeout.
fn copy_all(source: &Connection, copy: &mut Connection) -> Result<()> {
    use rusqlite::backup::{Backup, StepResult};
    source.busy_timeout(Duration::from_secs(5))?;
    let backup = Backup::new(source, copy)?;
    match backup.step(-1)? {
        StepResult::Done => Ok(()),
        _ => Err(BackupError(
            "the database stayed busy for 5 seconds; try again".into(),
        )),
    }
}

fn check_integrity(conn: &Connection, path: &Path) -> Result<()> {
    let verdict: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(BackupError(format!(
            "{} is damaged: {verdict}",
            path.display()
        )));
    }
    Ok(())
}

/// Puts the backup `from` in place of the database at `db_path` (with no
/// server running on it): checked first, its master key (if any) taken out
/// of the restored copy and returned. The old database and its
/// write-ahead log are replaced only once the new copy is complete.
pub fn restore(from: &Path, db_path: &Path) -> Result<Restored> {
    let incoming = beside(db_path, ".restoring");
    let _ = std::fs::remove_file(&incoming);
    create_private(&incoming)?;
    let restored = (|| -> Result<Restored> {
        let source = Connection::open_with_flags(
            from,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| unavailable("cannot open", from, e))?;
        let mut copy =
            Connection::open(&incoming).map_err(|e| unavailable("cannot open", &incoming, e))?;
        copy_all(&source, &mut copy)
            .map_err(|e| BackupError(format!("{} is not a unimsg backup: {e}", from.display())))?;
        check_integrity(&copy, from)?;
        let version: i64 = copy.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let has_audit: bool = copy
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_log')",
                [],
                |r| r.get(0),
            )
            ?;
        if !has_audit || version <= 0 {
            return Err(BackupError(format!(
                "{} is not a unimsg backup",
                from.display()
            )));
        }
        if usize::try_from(version).unwrap_or(usize::MAX) > schema::VERSION {
            return Err(BackupError(format!(
                "{} comes from a newer unimsg (schema {version}); restore it with that version",
                from.display()
            )));
        }
        let key_table: bool = copy.query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [KEY_TABLE],
            |r| r.get(0),
        )?;
        let master_key = if key_table {
            let key: Option<String> = copy
                .query_row(&format!("SELECT key FROM {KEY_TABLE}"), [], |r| r.get(0))
                .optional()?;
            copy.execute_batch(&format!("DROP TABLE {KEY_TABLE}; VACUUM;"))?;
            key.map(MasterKeyText)
        } else {
            None
        };
        drop(copy);
        std::fs::File::open(&incoming)
            .and_then(|f| f.sync_all())
            .map_err(|e| unavailable("cannot write", &incoming, e))?;
        let bytes = std::fs::metadata(&incoming)
            .map_err(|e| unavailable("cannot read", &incoming, e))?
            .len();
        Ok(Restored { master_key, bytes })
    })();
    let restored = match restored {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&incoming);
            return Err(e);
        }
    };
    // A log left by the old database must not be applied to the new one.
    for stale in [beside(db_path, "-wal"), beside(db_path, "-shm")] {
        match std::fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(unavailable("cannot remove", &stale, e)),
        }
    }
    std::fs::rename(&incoming, db_path).map_err(|e| unavailable("cannot write", db_path, e))?;
    Ok(restored)
}
