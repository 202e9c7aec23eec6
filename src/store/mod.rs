//! SQLite store: WAL, busy timeout, refinery migrations, IMMEDIATE write transactions.
//!
//! One file per table family, each an `impl Store` block: `jobs` (local attempts),
//! `slurm` (attempts handed to SLURM), `keys` (a key's history), `training` (rows for
//! retrain), `models` (the registry), `admission` (the host's reservation ledger), `history`
//! (reading by time, importing), `export`, `spool` (settlements that could not be written)
//! and `failpoints` (crash-test hooks). This file opens and migrates the database.

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use crate::util::create_private_dir;

mod embedded {
    refinery::embed_migrations!("migrations");
}

mod latest {
    include!(concat!(env!("OUT_DIR"), "/latest_migration.rs"));
}
pub use latest::{LATEST_MIGRATION, MIGRATIONS_FINGERPRINT};

mod admission;
mod export;
mod failpoints;
pub mod features;
mod history;
mod jobs;
mod keys;
mod models;
mod slurm;
pub mod spool;
mod training;
pub use admission::LedgerState;
pub(crate) use admission::{HeadView, NewReservation, ReservationHolder, Staleness};
pub use export::RowFeatures;
pub use features::{FeaturesError, TrainingRows, Unreadable};
pub use history::AttemptTimes;
pub use jobs::{JobRecord, Measured, NewPrediction, Settlement, WriterIdentity};
// For the sibling readers of whole rows (`export`, `history`).
use jobs::{record_from_row, RECORD_COLUMNS};
pub use keys::PRIOR_WINDOW;
pub use models::{ModelRecord, ModelVersionRecord};
pub use slurm::SlurmRow;
pub(crate) use slurm::{NextAttempt, SlurmSubmitted};

/// How long a writer waits for another one before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the store.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the database directory {path}: {source}; set PRESIZE_DB to a writable location")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {reason}; check PRESIZE_DB")]
    Open { path: PathBuf, reason: String },
    #[error("database {path} could not be migrated: {reason}")]
    Migrate { path: PathBuf, reason: String },
    #[error("database error while {what}: {source}{}", hint(source))]
    Query {
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error("{what} {value} does not fit the database (largest: {})", i64::MAX)]
    OutOfRange { what: &'static str, value: u64 },
}

/// A `u64` as SQLite's `INTEGER` (i64), refused rather than wrapped when it does not fit.
fn int(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

fn q(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

/// What to do about a busy database (the one error a user can act on).
fn hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            " (another process held the write lock longer than the busy timeout; retry, or raise [store] busy_timeout_ms)"
        }
        _ => "",
    }
}

/// The presize database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Computes the identity [`Store::insert_prediction`] records (see [`Store::set_writer`]).
    writer_fn: Option<fn() -> WriterIdentity>,
    writer: std::cell::OnceCell<WriterIdentity>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Open (creating if needed, 0700 directory / 0600 file) and migrate the database,
    /// waiting up to [`BUSY_TIMEOUT`] for other writers.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_timeout(path, BUSY_TIMEOUT)
    }

    /// [`Store::open`] with an explicit busy timeout.
    pub fn open_with_timeout(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|source| StoreError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        }
        if path.is_dir() {
            return Err(StoreError::Open {
                path: path.to_owned(),
                reason: "it is a directory".into(),
            });
        }
        // A device or FIFO (PRESIZE_DB=/dev/null) is no database: SQLite would create its
        // journal and presize its lock file beside it (e.g. in /dev).
        if path.exists() && !path.is_file() {
            return Err(StoreError::Open {
                path: path.to_owned(),
                reason: "it is not a regular file".into(),
            });
        }
        if !path.exists() {
            // Create the file ourselves so it is 0600 from the start (SQLite copies the mode
            // to the -wal and -shm files).
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::Open {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
        }
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(busy_timeout).map_err(open_err)?;
        prepare(&mut conn, path)?;
        Ok(Store {
            conn,
            path: path.to_owned(),
            writer_fn: None,
            writer: std::cell::OnceCell::new(),
        })
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying connection (read-only use by stats and reports).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The underlying connection for writers of other tables (burst mode's, from the CLI).
    #[cfg(feature = "cli")]
    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// The fast path of [`prepare`]: true when the file is already in WAL mode and
/// `PRAGMA user_version` equals [`MIGRATIONS_FINGERPRINT`] (a hash of every embedded
/// migration's name and text, so a migration merged with a lower number than the latest
/// still changes it). `user_version` is written only after refinery has applied every
/// embedded migration (under the migrate lock), so a process that reads this binary's
/// fingerprint has nothing to migrate and need not build refinery's runner (whose
/// migration-name regex alone cost 4.1 M instructions per command). Any error or other
/// value sends the caller to the full, locked path.
fn up_to_date(conn: &Connection) -> bool {
    let version = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0));
    let mode = conn.pragma_query_value(None, "journal_mode", |r| r.get::<_, String>(0));
    matches!((version, mode), (Ok(v), Ok(m)) if v == MIGRATIONS_FINGERPRINT && m.eq_ignore_ascii_case("wal"))
}

/// Switch to WAL and run the embedded migrations, serialised across processes with an
/// advisory file lock: changing the journal mode of a new file while another process opens
/// it fails with "database is locked" without consulting the busy handler, and refinery's
/// runner is not safe against two processes migrating a new file at once. An up-to-date
/// file (see [`up_to_date`]) skips the lock and refinery.
fn prepare(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    if up_to_date(conn) {
        return conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| StoreError::Open {
                path: path.to_owned(),
                reason: e.to_string(),
            });
    }
    let lock_path = {
        let mut s = path.as_os_str().to_owned();
        s.push(".migrate-lock");
        PathBuf::from(s)
    };
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| StoreError::Migrate {
            path: path.to_owned(),
            reason: format!("cannot create lock file {}: {e}", lock_path.display()),
        })?;
    let _ = std::fs::set_permissions(&lock_path, std::fs::Permissions::from_mode(0o600));
    // Released when `lock` is dropped (unlocked, then closed).
    let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, errno)| StoreError::Migrate {
            path: path.to_owned(),
            reason: format!("cannot lock {}: {errno}", lock_path.display()),
        },
    )?;
    let migrate_err = |reason: String| StoreError::Migrate {
        path: path.to_owned(),
        reason,
    };
    let res = set_wal(conn, path).and_then(|_| {
        embedded::migrations::runner()
            .run(conn)
            .map_err(|e| migrate_err(crate::util::one_line(&e.to_string())))?;
        features::convert_pending(conn)
            .map_err(|e| migrate_err(format!("converting stored features (V11): {e}")))?;
        // refinery returned Ok: every embedded migration is applied and none it does not
        // know of (it refuses missing and divergent ones), so the next open may skip it.
        conn.pragma_update(None, "user_version", MIGRATIONS_FINGERPRINT)
            .map_err(|e| migrate_err(format!("cannot record the schema version: {e}")))
    });
    drop(lock);
    res
}

fn set_wal(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let open_err = |e: rusqlite::Error| StoreError::Open {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open {
                path: path.to_owned(),
                reason: format!("could not switch to WAL (journal_mode is {mode})"),
            });
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)
}

#[cfg(test)]
mod tests;
