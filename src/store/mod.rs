//! SQLite store: WAL, busy timeout, refinery migrations, IMMEDIATE write transactions.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::features::PriorRuns;
use crate::job::{LimitSource, Outcome};

mod embedded {
    refinery::embed_migrations!("migrations");
}

mod latest {
    include!(concat!(env!("OUT_DIR"), "/latest_migration.rs"));
}
pub use latest::{LATEST_MIGRATION, MIGRATIONS_FINGERPRINT};

mod export;
pub mod features;
mod history;
pub mod spool;
pub use export::RowFeatures;
pub use features::{FeaturesError, TrainingRows, Unreadable};
pub use history::{rfc3339, AttemptTimes, ModelVersionRecord};

/// How many of a key's latest successful runs [`Store::prior_runs`] summarises.
pub const PRIOR_WINDOW: i64 = 1000;

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

/// The settlement UPDATE shared by local and SLURM settling (first result wins: only an
/// unsettled row changes). Returns how many rows changed (0 or 1).
fn settle_in(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    s: &Settlement,
    now: &str,
) -> rusqlite::Result<usize> {
    settle_measured_in(tx, id, s, &Measured::default(), now)
}

/// [`settle_in`] with the cgroup's charged peak and OOM event count.
fn settle_measured_in(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    s: &Settlement,
    m: &Measured,
    now: &str,
) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE resource_prediction SET actual_cpu_s = ?2, actual_rss_mb = ?3,
            actual_wall_s = ?4, rusage_maxrss_mb = ?5, measure_source = ?6, exit_code = ?7,
            signal = ?8, outcome = ?9, settled_at = ?10, memory_enforced = ?11,
            charged_peak_mb = ?12, oom_events = ?13
         WHERE id = ?1 AND settled_at IS NULL",
        params![
            id,
            s.actual_cpu_s,
            s.actual_rss_mb,
            s.actual_wall_s,
            s.rusage_maxrss_mb,
            s.measure_source,
            s.exit_code,
            s.signal,
            s.outcome.as_str(),
            now,
            s.memory_enforced as i64,
            m.charged_peak_mb,
            m.oom_events.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
        ],
    )
    .and_then(|n| {
        if n == 1 {
            // The attempt joins its key's window in the same transaction (see
            // `Store::key_runs`); outcomes that say nothing about the job's needs do not.
            tx.execute(
                "INSERT OR REPLACE INTO key_history (row_id, job_key, outcome, peak_mb, wall_s,
                    cpu_s, input_mb, arg_log10, cap_mb, timeout_s)
                 SELECT id, job_key, outcome, actual_rss_mb, actual_wall_s, actual_cpu_s,
                    size_input_mb, size_arg_log10,
                    CASE WHEN memory_enforced = 1 THEN applied_memory_mb END, applied_timeout_s
                 FROM resource_prediction
                 WHERE id = ?1 AND outcome IN ('ok', 'oom_killed', 'timed_out')",
                [id],
            )?;
        }
        Ok(n)
    })
}

/// Crash-test hook, compiled into debug builds only: with `PRESIZE_FAILPOINT=<name>:<ms>`,
/// a write transaction named `<name>` announces itself on stderr and sleeps `<ms>` before
/// it commits, so a test can `kill -9` the process inside an open write transaction.
#[cfg(debug_assertions)]
fn failpoint(name: &str) {
    let Some(spec) = std::env::var_os("PRESIZE_FAILPOINT") else {
        return;
    };
    let spec = spec.to_string_lossy();
    if let Some((n, ms)) = spec.split_once(':') {
        if n == name {
            let ms: u64 = ms.parse().unwrap_or(0);
            eprintln!("presize: failpoint {name}: in transaction");
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
fn failpoint(_name: &str) {}

/// Current time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Create a directory (and parents) readable only by its owner.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Write a file readable only by its owner (atomically: temp file + rename).
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// A row to insert before a job starts.
#[derive(Debug, Clone)]
pub struct NewPrediction {
    pub job_id: String,
    pub analysis_id: Option<String>,
    pub job_key: String,
    pub runtime: String,
    pub script_path: Option<String>,
    pub script_sha256: Option<String>,
    pub command_json: String,
    pub features_json: String,
    pub schema_hash: String,
    pub prediction: crate::model::Prediction,
    pub predicted: crate::policy::Limits,
    pub applied: Option<crate::policy::Limits>,
    /// Where the applied memory cap came from (`None` for a rejected job).
    pub memory_source: Option<LimitSource>,
    /// Where the applied timeout came from (`None` for a rejected job).
    pub timeout_source: Option<LimitSource>,
    pub memory_enforced: bool,
    pub dry_run: bool,
    pub backend: String,
    pub priority: String,
    pub attempt: u32,
    pub host: String,
    pub executor_pid: u32,
    pub executor_start: Option<u64>,
    /// Rejected rows are settled at once.
    pub rejected: bool,
    /// Why the limits are what they are (the sizing engine's evidence and sources).
    pub sizing: crate::policy::Sizing,
    /// The job's size covariates (the engine's window learns them with the actuals).
    pub size: crate::policy::JobSize,
}

/// The actuals of a finished attempt.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Settlement {
    pub actual_cpu_s: Option<f64>,
    pub actual_rss_mb: Option<f64>,
    pub actual_wall_s: Option<f64>,
    pub rusage_maxrss_mb: Option<f64>,
    pub measure_source: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub outcome: Outcome,
    /// Whether a kernel memory cap was really in force.
    pub memory_enforced: bool,
}

/// What the cgroup measured beside the settlement (V6 columns).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Measured {
    /// The cgroup's charged peak (page cache included), MiB.
    pub charged_peak_mb: Option<f64>,
    /// OOM kills inside the job's cgroup (`None`: not measured).
    pub oom_events: Option<u64>,
}

/// What `sbatch` was given for one attempt.
#[derive(Debug, Clone)]
pub struct SlurmSubmitted<'a> {
    pub slurm_job_id: &'a str,
    pub script: &'a str,
    pub output: &'a str,
    pub error: &'a str,
    pub cpus: Option<u32>,
    pub cwd: &'a str,
}

/// The limits and submitter of the attempt that follows a settled one.
#[derive(Debug, Clone)]
pub struct NextAttempt<'a> {
    pub memory_limit_mb: u64,
    pub timeout_s: u64,
    pub host: &'a str,
    pub executor_pid: u32,
    pub executor_start: Option<u64>,
}

/// An attempt submitted to SLURM, as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlurmRow {
    pub id: i64,
    pub job_id: String,
    pub job_key: String,
    pub attempt: u32,
    pub slurm_job_id: Option<String>,
    pub applied_memory_mb: u64,
    pub applied_timeout_s: u64,
    pub enforced: bool,
    pub dry_run: bool,
    pub predicted_rss_mb: Option<f64>,
    pub upper_rss_mb: Option<f64>,
    pub script: Option<String>,
    pub cpus: Option<u32>,
    pub cwd: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub settled_at: Option<String>,
    pub outcome: Option<Outcome>,
    pub actual_cpu_s: Option<f64>,
    pub actual_rss_mb: Option<f64>,
    pub actual_wall_s: Option<f64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub measure_source: Option<String>,
    pub slurm_max_rss_mb: Option<f64>,
    pub memory_enforced: bool,
    pub slurm_state: Option<String>,
    /// The sizing engine's evidence level for the job.
    pub evidence: Option<String>,
    pub timeout_source: Option<String>,
    pub size_input_mb: Option<f64>,
    pub size_arg_log10: Option<f64>,
    pub upper_wall_s: Option<f64>,
    pub predicted_wall_s: Option<f64>,
}

/// One row of `resource_prediction`, as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub id: i64,
    pub job_id: String,
    pub analysis_id: Option<String>,
    pub job_key: String,
    pub runtime: String,
    pub script_sha256: Option<String>,
    pub predicted_cpu_s: Option<f64>,
    pub predicted_rss_mb: Option<f64>,
    pub predicted_wall_s: Option<f64>,
    pub upper_cpu_s: Option<f64>,
    pub upper_rss_mb: Option<f64>,
    pub upper_wall_s: Option<f64>,
    pub confidence: Option<f64>,
    pub source: Option<String>,
    pub memory_limit_mb: Option<i64>,
    pub timeout_s: Option<i64>,
    pub applied_memory_mb: Option<i64>,
    pub applied_timeout_s: Option<i64>,
    pub enforced: bool,
    pub memory_enforced: bool,
    pub dry_run: bool,
    pub backend: Option<String>,
    pub attempt: i64,
    /// Where the applied memory cap came from.
    pub memory_source: Option<LimitSource>,
    /// Where the applied timeout came from.
    pub timeout_source: Option<LimitSource>,
    pub script_path: Option<String>,
    pub actual_cpu_s: Option<f64>,
    pub actual_rss_mb: Option<f64>,
    pub actual_wall_s: Option<f64>,
    pub exit_code: Option<i64>,
    pub outcome: Option<String>,
    pub model_version: String,
    pub predicted_at: String,
    pub started_at: Option<String>,
    pub settled_at: Option<String>,
}

const RECORD_COLUMNS: &str = "id, job_id, analysis_id, job_key, runtime, script_sha256, \
    predicted_cpu_s, predicted_rss_mb, predicted_wall_s, upper_cpu_s, upper_rss_mb, upper_wall_s, \
    confidence, source, memory_limit_mb, timeout_s, applied_memory_mb, applied_timeout_s, \
    enforced, memory_enforced, dry_run, backend, attempt, actual_cpu_s, actual_rss_mb, \
    actual_wall_s, exit_code, outcome, model_version, predicted_at, started_at, settled_at, \
    memory_source, timeout_source, script_path";

fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    Ok(JobRecord {
        id: r.get(0)?,
        job_id: r.get(1)?,
        analysis_id: r.get(2)?,
        job_key: r.get(3)?,
        runtime: r.get(4)?,
        script_sha256: r.get(5)?,
        predicted_cpu_s: r.get(6)?,
        predicted_rss_mb: r.get(7)?,
        predicted_wall_s: r.get(8)?,
        upper_cpu_s: r.get(9)?,
        upper_rss_mb: r.get(10)?,
        upper_wall_s: r.get(11)?,
        confidence: r.get(12)?,
        source: r.get(13)?,
        memory_limit_mb: r.get(14)?,
        timeout_s: r.get(15)?,
        applied_memory_mb: r.get(16)?,
        applied_timeout_s: r.get(17)?,
        enforced: r.get::<_, i64>(18)? != 0,
        memory_enforced: r.get::<_, i64>(19)? != 0,
        dry_run: r.get::<_, i64>(20)? != 0,
        backend: r.get(21)?,
        attempt: r.get(22)?,
        actual_cpu_s: r.get(23)?,
        actual_rss_mb: r.get(24)?,
        actual_wall_s: r.get(25)?,
        exit_code: r.get(26)?,
        outcome: r.get(27)?,
        model_version: r.get(28)?,
        predicted_at: r.get(29)?,
        started_at: r.get(30)?,
        settled_at: r.get(31)?,
        memory_source: r
            .get::<_, Option<String>>(32)?
            .as_deref()
            .and_then(LimitSource::parse),
        timeout_source: r
            .get::<_, Option<String>>(33)?
            .as_deref()
            .and_then(LimitSource::parse),
        script_path: r.get(34)?,
    })
}

/// A trained model to record in the registry.
#[derive(Debug, Clone)]
pub struct ModelRecord<'a> {
    pub version: &'a str,
    pub path: &'a Path,
    pub trained_at: &'a str,
    pub rows: usize,
    pub schema_hash: &'a str,
    pub metrics_json: &'a str,
    pub promoted: bool,
}

/// An unsettled row whose executor is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct OrphanRow {
    pub id: i64,
    pub executor_pid: Option<i64>,
    pub executor_start: Option<i64>,
    pub executor_boot_id: Option<String>,
    pub executor_pidns: Option<i64>,
    pub job_pid: Option<i64>,
    pub job_start: Option<i64>,
    pub cgroup_name: Option<String>,
}

/// The presize database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
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

    /// The underlying connection for writers of other tables (admission ledger).
    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Insert a prediction row before the job starts; returns its id.
    pub fn insert_prediction(&mut self, row: &NewPrediction) -> Result<i64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q("starting a write"))?;
        let now = now_rfc3339();
        let p = &row.prediction;
        let applied = match row.applied {
            Some(a) => Some((
                int("memory cap (MB)", a.memory_limit_mb)?,
                int("timeout (s)", a.timeout_s)?,
            )),
            None => None,
        };
        let predicted_mem = int("memory cap (MB)", row.predicted.memory_limit_mb)?;
        let predicted_timeout = int("timeout (s)", row.predicted.timeout_s)?;
        let features = features::Encoder::default()
            .stored(&tx, &row.features_json)
            .map_err(q("recording a prediction"))?;
        tx.execute(
            "INSERT INTO resource_prediction (job_id, analysis_id, job_key, runtime, script_path,
                script_sha256, command, features, schema_hash, predicted_cpu_s, predicted_rss_mb,
                predicted_wall_s, upper_cpu_s, upper_rss_mb, upper_wall_s, lower_rss_mb, confidence,
                source, memory_limit_mb, timeout_s, applied_memory_mb, applied_timeout_s, enforced,
                memory_enforced, dry_run, backend, priority, attempt, model_version, host,
                executor_pid, executor_start, predicted_at, outcome, settled_at, memory_source,
                timeout_source, evidence, limit_reason, size_input_mb, size_arg_log10)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33,
                ?34, ?35, ?36, ?37, ?38, ?39, ?40, ?41)",
            params![
                row.job_id,
                row.analysis_id,
                row.job_key,
                row.runtime,
                row.script_path,
                row.script_sha256,
                row.command_json,
                features,
                row.schema_hash,
                p.cpu_seconds,
                p.peak_rss_mb,
                p.wall_seconds,
                p.upper.cpu_seconds,
                p.upper.peak_rss_mb,
                p.upper.wall_seconds,
                p.lower.peak_rss_mb,
                p.confidence,
                p.source.as_str(),
                predicted_mem,
                predicted_timeout,
                applied.map(|a| a.0),
                applied.map(|a| a.1),
                row.predicted.enforced as i64,
                row.memory_enforced as i64,
                row.dry_run as i64,
                row.backend,
                row.priority,
                row.attempt,
                p.model_version,
                row.host,
                row.executor_pid,
                row.executor_start.map(|v| v as i64),
                now,
                row.rejected.then_some("rejected"),
                row.rejected.then_some(now.clone()),
                row.memory_source.map(LimitSource::as_str),
                row.timeout_source.map(LimitSource::as_str),
                row.sizing.evidence.as_str(),
                row.sizing.reason,
                (row.size.input_mb > 0.0).then_some(row.size.input_mb),
                (row.size.arg > 0.0).then_some(row.size.arg.log10()),
            ],
        )
        .map_err(q("recording a prediction"))?;
        let id = tx.last_insert_rowid();
        let me = crate::executor::owner::Identity::current();
        tx.execute(
            "UPDATE resource_prediction SET executor_boot_id = ?2, executor_pidns = ?3,
                executor_token = ?4 WHERE id = ?1",
            params![
                id,
                me.boot_id,
                me.pidns.and_then(|n| i64::try_from(n).ok()),
                me.token
            ],
        )
        .map_err(q("recording the executor"))?;
        failpoint("insert");
        tx.commit().map_err(q("committing a prediction"))?;
        Ok(id)
    }

    /// Record that the job started (its pid and process start time, for crash recovery).
    pub fn mark_started(
        &mut self,
        id: i64,
        job_pid: u32,
        job_start: Option<u64>,
        cgroup_name: Option<&str>,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q("starting a write"))?;
        tx.execute(
            "UPDATE resource_prediction SET started_at = ?2, job_pid = ?3, job_start = ?4,
                cgroup_name = ?5 WHERE id = ?1",
            params![
                id,
                now_rfc3339(),
                job_pid,
                job_start.map(|v| v as i64),
                cgroup_name
            ],
        )
        .map_err(q("recording a start"))?;
        failpoint("start");
        tx.commit().map_err(q("committing a start"))
    }

    /// Settle a row with the measured actuals. Settling twice is refused (first result wins).
    pub fn settle(&mut self, id: i64, s: &Settlement) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q("starting a write"))?;
        let n = settle_in(&tx, id, s, &now_rfc3339()).map_err(q("settling a job"))?;
        failpoint("settle");
        tx.commit().map_err(q("committing a settlement"))?;
        Ok(n == 1)
    }

    /// [`Store::settle`] with the cgroup's charged peak and OOM event count.
    pub fn settle_measured(
        &mut self,
        id: i64,
        s: &Settlement,
        m: &Measured,
    ) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q("starting a write"))?;
        let n = settle_measured_in(&tx, id, s, m, &now_rfc3339()).map_err(q("settling a job"))?;
        failpoint("settle");
        tx.commit().map_err(q("committing a settlement"))?;
        Ok(n == 1)
    }

    /// Unsettled rows of this host whose executor is proven gone (per `is_dead(row)`).
    pub fn orphans(
        &self,
        host: &str,
        is_dead: &dyn Fn(&OrphanRow) -> bool,
    ) -> Result<Vec<OrphanRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, executor_pid, executor_start, job_pid, job_start, cgroup_name,
                        executor_boot_id, executor_pidns
                 FROM resource_prediction WHERE settled_at IS NULL AND host = ?1
                   AND slurm_job_id IS NULL",
            )
            .map_err(q("finding unsettled rows"))?;
        let rows = stmt
            .query_map([host], |r| {
                Ok(OrphanRow {
                    id: r.get(0)?,
                    executor_pid: r.get(1)?,
                    executor_start: r.get(2)?,
                    job_pid: r.get(3)?,
                    job_start: r.get(4)?,
                    cgroup_name: r.get(5)?,
                    executor_boot_id: r.get(6)?,
                    executor_pidns: r.get(7)?,
                })
            })
            .map_err(q("finding unsettled rows"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(q("finding unsettled rows"))?;
        Ok(rows.into_iter().filter(|o| is_dead(o)).collect())
    }

    /// Mark rows as `lost` (only if still unsettled). Returns how many changed.
    pub fn mark_lost(&mut self, ids: &[i64]) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q("starting a write"))?;
        let now = now_rfc3339();
        let mut n = 0;
        for id in ids {
            n += tx
                .execute(
                    "UPDATE resource_prediction SET outcome = 'lost', settled_at = ?2
                     WHERE id = ?1 AND settled_at IS NULL",
                    params![id, now],
                )
                .map_err(q("marking lost rows"))?;
        }
        tx.commit().map_err(q("committing lost rows"))?;
        Ok(n)
    }

    /// [`Store::key_runs`] of `job_key`, preceded by runs recorded under `alias` (the key
    /// the job had before readable keys) while the new key has fewer than `n`.
    pub fn key_runs_with_alias(
        &self,
        job_key: &str,
        alias: Option<&str>,
        n: usize,
    ) -> Result<Vec<crate::policy::KeyRun>, StoreError> {
        let runs = self.key_runs(job_key, n)?;
        match alias {
            Some(a) if runs.len() < n && a != job_key => {
                let mut old = self.key_runs(a, n - runs.len())?;
                old.extend(runs);
                Ok(old)
            }
            _ => Ok(runs),
        }
    }

    /// The newest `n` successful runs of a job key (oldest first), the sizing engine's
    /// window: an index range scan of the small `key_history` table, the same cost at any
    /// history size.
    pub fn key_runs(
        &self,
        job_key: &str,
        n: usize,
    ) -> Result<Vec<crate::policy::KeyRun>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT input_mb, arg_log10, peak_mb, wall_s FROM key_history
                 WHERE job_key = ?1 AND outcome = 'ok' ORDER BY row_id DESC LIMIT ?2",
            )
            .map_err(q("reading the key's window"))?;
        let mut runs = stmt
            .query_map(params![job_key, n.min(i64::MAX as usize) as i64], |r| {
                // The same conversion as the decision's own size (one place).
                let size = crate::policy::JobSize::from_columns(r.get(0)?, r.get(1)?);
                Ok(crate::policy::KeyRun {
                    input_mb: size.input_mb,
                    arg: size.arg,
                    peak_mb: r.get::<_, Option<f64>>(2)?.unwrap_or(0.0),
                    wall_s: r.get::<_, Option<f64>>(3)?.unwrap_or(0.0),
                })
            })
            .map_err(q("reading the key's window"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(q("reading the key's window"))?;
        runs.reverse();
        Ok(runs)
    }

    /// Live coverage of a model's upper bound on peak memory over its newest `n` settled
    /// jobs: `(jobs judged, jobs whose peak stayed within the bound)`. An OOM kill under a cap
    /// at or above the bound counts as not covered; one under a lower cap says nothing.
    pub fn live_coverage(&self, model_version: &str, n: usize) -> Result<(u32, u32), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT outcome, actual_rss_mb, upper_rss_mb, applied_memory_mb, memory_enforced
                 FROM resource_prediction
                 WHERE model_version = ?1 AND source = 'model' AND settled_at IS NOT NULL
                 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(q("reading live coverage"))?;
        let mut rows = stmt
            .query(params![model_version, n.min(i64::MAX as usize) as i64])
            .map_err(q("reading live coverage"))?;
        let (mut jobs, mut covered) = (0u32, 0u32);
        while let Some(r) = rows.next().map_err(q("reading live coverage"))? {
            let outcome: Option<String> = r.get(0).map_err(q("reading live coverage"))?;
            let peak: Option<f64> = r.get(1).map_err(q("reading live coverage"))?;
            let upper: Option<f64> = r.get(2).map_err(q("reading live coverage"))?;
            let cap: Option<i64> = r.get(3).map_err(q("reading live coverage"))?;
            let enforced: i64 = r.get(4).map_err(q("reading live coverage"))?;
            let Some(upper) = upper.filter(|u| u.is_finite()) else {
                continue;
            };
            match outcome.as_deref() {
                Some("ok") => {
                    if let Some(p) = peak {
                        jobs += 1;
                        covered += (p <= upper) as u32;
                    }
                }
                Some("oom_killed") if enforced != 0 && cap.is_some_and(|c| c as f64 >= upper) => {
                    jobs += 1;
                }
                _ => {}
            }
        }
        Ok((jobs, covered))
    }

    /// The job keys with a settled attempt up to row `max_id` (a retrain's training set),
    /// read from the key index.
    pub fn job_keys_through(&self, max_id: i64) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT job_key FROM key_history WHERE row_id <= ?1
                 AND outcome IN ('ok', 'oom_killed', 'timed_out')",
            )
            .map_err(q("reading job keys"))?;
        let keys = stmt
            .query_map([max_id], |r| r.get(0))
            .map_err(q("reading job keys"))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(q("reading job keys"))?;
        Ok(keys)
    }

    /// Actuals of the latest [`PRIOR_WINDOW`] successful runs of the same job key: count,
    /// last, mean and max of each. Read from the covering partial index
    /// `idx_resource_prediction_prior` (migration V7), newest first and aggregated inside
    /// SQLite, so a key with 40k runs reads the same bounded index range as one with a
    /// thousand and no table page of the wide rows.
    ///
    /// `alias` is the key the same job was recorded under before readable keys (`k-…`): its
    /// runs count until the job has runs under its new key.
    pub fn prior_runs(&self, job_key: &str, alias: Option<&str>) -> Result<PriorRuns, StoreError> {
        let pr = self.prior_runs_of(job_key)?;
        match alias {
            Some(a) if pr.count == 0 && a != job_key => self.prior_runs_of(a),
            _ => Ok(pr),
        }
    }

    fn prior_runs_of(&self, job_key: &str) -> Result<PriorRuns, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT count(*), sum(ifnull(c, 0)), sum(r), sum(ifnull(w, 0)),
                        max(0, max(ifnull(c, 0))), max(0, max(r)), max(0, max(ifnull(w, 0)))
                 FROM (SELECT actual_cpu_s AS c, actual_rss_mb AS r, actual_wall_s AS w
                       FROM resource_prediction INDEXED BY idx_resource_prediction_prior
                       WHERE job_key = ?1 AND outcome = 'ok' AND actual_rss_mb IS NOT NULL
                       ORDER BY id DESC LIMIT ?2)",
            )
            .map_err(q("reading earlier runs"))?;
        type Agg = (i64, f64, f64, f64, f64, f64, f64);
        let (n, sc, sr, sw, xc, xr, xw): Agg = stmt
            .query_row(params![job_key, PRIOR_WINDOW], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, Option<f64>>(1)?.unwrap_or(0.0),
                    r.get::<_, Option<f64>>(2)?.unwrap_or(0.0),
                    r.get::<_, Option<f64>>(3)?.unwrap_or(0.0),
                    r.get::<_, Option<f64>>(4)?.unwrap_or(0.0),
                    r.get::<_, Option<f64>>(5)?.unwrap_or(0.0),
                    r.get::<_, Option<f64>>(6)?.unwrap_or(0.0),
                ))
            })
            .map_err(q("reading earlier runs"))?;
        if n == 0 {
            return Ok(PriorRuns::default());
        }
        let mut last = self
            .conn
            .prepare_cached(
                "SELECT actual_cpu_s, actual_rss_mb, actual_wall_s
                 FROM resource_prediction INDEXED BY idx_resource_prediction_prior
                 WHERE job_key = ?1 AND outcome = 'ok' AND actual_rss_mb IS NOT NULL
                 ORDER BY id DESC LIMIT 1",
            )
            .map_err(q("reading earlier runs"))?;
        let (c0, r0, w0): (Option<f64>, f64, Option<f64>) = last
            .query_row([job_key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(q("reading earlier runs"))?;
        let nf = n as f64;
        Ok(PriorRuns {
            count: n as u32,
            last_cpu_s: c0.unwrap_or(0.0),
            mean_cpu_s: sc / nf,
            max_cpu_s: xc,
            last_rss_mb: r0,
            mean_rss_mb: sr / nf,
            max_rss_mb: xr,
            last_wall_s: w0.unwrap_or(0.0),
            mean_wall_s: sw / nf,
            max_wall_s: xw,
        })
    }

    /// How many settled attempts are usable for training (ok, oom_killed, timed_out);
    /// counted on the `outcome` index of migration V7, not on the wide rows.
    pub fn count_training_rows(&self) -> Result<usize, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM resource_prediction INDEXED BY idx_resource_prediction_outcome
                 WHERE outcome IN ('ok', 'oom_killed', 'timed_out')",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as usize)
            .map_err(q("counting training rows"))
    }

    /// The latest `limit` settled attempts usable for training (ok, and censored oom_killed /
    /// timed_out), oldest first, each row's features decoded straight into a dense vector in
    /// the order of `names` (no per-row map; a feature the row lacks is 0). A row whose
    /// features cannot be read is left out and counted in [`TrainingRows::unreadable`].
    pub fn training_rows(
        &self,
        names: &[String],
        limit: usize,
    ) -> Result<TrainingRows, StoreError> {
        let dec = features::Decoder::new(&self.conn, names).map_err(q("reading feature names"))?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, features, outcome, actual_cpu_s, actual_rss_mb, actual_wall_s,
                        applied_memory_mb, applied_timeout_s, memory_enforced
                 FROM resource_prediction
                 WHERE outcome IN ('ok', 'oom_killed', 'timed_out') ORDER BY id DESC LIMIT ?1",
            )
            .map_err(q("reading training rows"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut out = TrainingRows::default();
        let mut rows = stmt.query([limit]).map_err(q("reading training rows"))?;
        while let Some(r) = rows.next().map_err(q("reading training rows"))? {
            let id: i64 = r.get(0).map_err(q("reading training rows"))?;
            let mut features = vec![0.0; names.len()];
            let stored = r.get_ref(1).map_err(q("reading training rows"))?;
            if let Err(e) = dec.dense(stored, &mut features) {
                out.unreadable.note(id, e);
                continue;
            }
            let row = (|| {
                let outcome: String = r.get(2)?;
                let enforced: i64 = r.get(8)?;
                let cap: Option<i64> = r.get(6)?;
                Ok(crate::model::trained::TrainingRow {
                    id,
                    features,
                    outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Failed),
                    cpu_s: r.get(3)?,
                    rss_mb: r.get(4)?,
                    wall_s: r.get(5)?,
                    memory_cap_mb: cap.filter(|_| enforced != 0).map(|c| c as f64),
                    timeout_s: r.get::<_, Option<i64>>(7)?.map(|t| t as f64),
                })
            })()
            .map_err(q("reading training rows"))?;
            out.rows.push(row);
        }
        out.rows.reverse();
        Ok(out)
    }

    /// Record a trained model in the registry.
    pub fn register_model(&mut self, m: &ModelRecord<'_>) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q("starting a write"))?;
        tx.execute(
            "INSERT OR REPLACE INTO model_version (version, path, trained_at, rows, schema_hash,
                metrics, promoted, promoted_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                m.version,
                m.path.display().to_string(),
                m.trained_at,
                m.rows as i64,
                m.schema_hash,
                m.metrics_json,
                m.promoted as i64,
                m.promoted.then(now_rfc3339)
            ],
        )
        .map_err(q("registering a model"))?;
        tx.commit().map_err(q("committing a model"))
    }

    /// Record that an attempt was handed to SLURM (`started_at` is the submission time).
    pub fn mark_slurm_submitted(
        &mut self,
        id: i64,
        sub: &SlurmSubmitted<'_>,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q("starting a write"))?;
        tx.execute(
            "UPDATE resource_prediction SET started_at = ?2, slurm_job_id = ?3, slurm_script = ?4,
                slurm_output = ?5, slurm_error = ?6, slurm_cpus = ?7, cwd = ?8 WHERE id = ?1",
            params![
                id,
                now_rfc3339(),
                sub.slurm_job_id,
                sub.script,
                sub.output,
                sub.error,
                sub.cpus.map(|c| c as i64),
                sub.cwd
            ],
        )
        .map_err(q("recording a submission"))?;
        tx.commit().map_err(q("committing a submission"))
    }

    /// Is any attempt still waiting on SLURM?
    pub fn has_unsettled_slurm(&self) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM resource_prediction
                 WHERE settled_at IS NULL AND slurm_job_id IS NOT NULL)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n != 0)
            .map_err(q("looking for SLURM jobs"))
    }

    /// Unsettled attempts submitted to SLURM (of one job, or all), oldest first.
    pub fn unsettled_slurm(&self, job_id: Option<&str>) -> Result<Vec<SlurmRow>, StoreError> {
        self.slurm_rows(
            "settled_at IS NULL AND slurm_job_id IS NOT NULL AND (?1 IS NULL OR job_id = ?1)",
            job_id,
        )
    }

    /// Every SLURM attempt of one job, oldest first.
    pub fn slurm_attempts(&self, job_id: &str) -> Result<Vec<SlurmRow>, StoreError> {
        self.slurm_rows("backend = 'slurm' AND job_id = ?1", Some(job_id))
    }

    fn slurm_rows(&self, filter: &str, job_id: Option<&str>) -> Result<Vec<SlurmRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT id, job_id, job_key, attempt, slurm_job_id, applied_memory_mb,
                    applied_timeout_s, enforced, dry_run, predicted_rss_mb, upper_rss_mb,
                    slurm_script, slurm_cpus, cwd, slurm_output, slurm_error, settled_at, outcome,
                    actual_cpu_s, actual_rss_mb, actual_wall_s, exit_code, signal, measure_source,
                    slurm_max_rss_mb, memory_enforced, slurm_state, evidence, timeout_source,
                    size_input_mb, size_arg_log10, upper_wall_s, predicted_wall_s
                 FROM resource_prediction WHERE {filter} ORDER BY id"
            ))
            .map_err(q("reading SLURM rows"))?;
        let rows = stmt
            .query_map([job_id], |r| {
                Ok(SlurmRow {
                    id: r.get(0)?,
                    job_id: r.get(1)?,
                    job_key: r.get(2)?,
                    attempt: r.get::<_, i64>(3)?.max(1) as u32,
                    slurm_job_id: r.get(4)?,
                    applied_memory_mb: r.get::<_, Option<i64>>(5)?.unwrap_or(0).max(0) as u64,
                    applied_timeout_s: r.get::<_, Option<i64>>(6)?.unwrap_or(0).max(0) as u64,
                    enforced: r.get::<_, i64>(7)? != 0,
                    dry_run: r.get::<_, i64>(8)? != 0,
                    predicted_rss_mb: r.get(9)?,
                    upper_rss_mb: r.get(10)?,
                    script: r.get(11)?,
                    cpus: r.get::<_, Option<i64>>(12)?.map(|c| c.max(1) as u32),
                    cwd: r.get(13)?,
                    output: r.get(14)?,
                    error: r.get(15)?,
                    settled_at: r.get(16)?,
                    outcome: r
                        .get::<_, Option<String>>(17)?
                        .and_then(|o| Outcome::parse(&o)),
                    actual_cpu_s: r.get(18)?,
                    actual_rss_mb: r.get(19)?,
                    actual_wall_s: r.get(20)?,
                    exit_code: r.get(21)?,
                    signal: r.get(22)?,
                    measure_source: r.get(23)?,
                    slurm_max_rss_mb: r.get(24)?,
                    memory_enforced: r.get::<_, i64>(25)? != 0,
                    slurm_state: r.get(26)?,
                    evidence: r.get(27)?,
                    timeout_source: r.get(28)?,
                    size_input_mb: r.get(29)?,
                    size_arg_log10: r.get(30)?,
                    upper_wall_s: r.get(31)?,
                    predicted_wall_s: r.get(32)?,
                })
            })
            .map_err(q("reading SLURM rows"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(q("reading SLURM rows"))?;
        Ok(rows)
    }

    /// Settle a SLURM attempt and, in the same transaction, record the next attempt when
    /// `next` is given (so a concurrent `settle` neither misses nor duplicates the retry).
    /// Returns `None` when the row was already settled, else the id of the new attempt row.
    pub fn settle_slurm(
        &mut self,
        id: i64,
        s: &Settlement,
        slurm_state: &str,
        slurm_max_rss_mb: Option<f64>,
        next: Option<&NextAttempt<'_>>,
    ) -> Result<Option<Option<i64>>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q("starting a write"))?;
        let now = now_rfc3339();
        let n = settle_in(&tx, id, s, &now).map_err(q("settling a SLURM job"))?;
        if n != 1 {
            return Ok(None);
        }
        tx.execute(
            "UPDATE resource_prediction SET slurm_state = ?2, slurm_max_rss_mb = ?3 WHERE id = ?1",
            params![id, slurm_state, slurm_max_rss_mb],
        )
        .map_err(q("settling a SLURM job"))?;
        let mut new_id = None;
        if let Some(nx) = next {
            tx.execute(
                "INSERT INTO resource_prediction (job_id, analysis_id, job_key, runtime,
                    script_path, script_sha256, command, features, schema_hash, predicted_cpu_s,
                    predicted_rss_mb, predicted_wall_s, upper_cpu_s, upper_rss_mb, upper_wall_s,
                    lower_rss_mb, confidence, source, memory_limit_mb, timeout_s, enforced,
                    memory_enforced, dry_run, backend, priority, model_version, cwd, slurm_script,
                    slurm_cpus, applied_memory_mb, applied_timeout_s, attempt, host, executor_pid,
                    executor_start, predicted_at, memory_source, timeout_source, evidence,
                    limit_reason, size_input_mb, size_arg_log10)
                 SELECT job_id, analysis_id, job_key, runtime, script_path, script_sha256,
                    command, features, schema_hash, predicted_cpu_s, predicted_rss_mb,
                    predicted_wall_s, upper_cpu_s, upper_rss_mb, upper_wall_s, lower_rss_mb,
                    confidence, source, memory_limit_mb, timeout_s, enforced, memory_enforced,
                    dry_run, backend, priority, model_version, cwd, slurm_script, slurm_cpus,
                    ?2, ?3, attempt + 1, ?4, ?5, ?6, ?7, memory_source, timeout_source, evidence,
                    'retry after ' || outcome || ': the engine''s retry rule', size_input_mb,
                    size_arg_log10
                 FROM resource_prediction WHERE id = ?1",
                params![
                    id,
                    nx.memory_limit_mb as i64,
                    nx.timeout_s as i64,
                    nx.host,
                    nx.executor_pid,
                    nx.executor_start.map(|v| v as i64),
                    now
                ],
            )
            .map_err(q("recording the next attempt"))?;
            new_id = Some(tx.last_insert_rowid());
        }
        tx.commit().map_err(q("committing a SLURM settlement"))?;
        Ok(Some(new_id))
    }

    /// One row by id.
    pub fn record(&self, id: i64) -> Result<Option<JobRecord>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {RECORD_COLUMNS} FROM resource_prediction WHERE id = ?1"),
                [id],
                record_from_row,
            )
            .optional()
            .map_err(q("reading a row"))
    }

    /// The last `n` settled rows, newest first.
    pub fn recent_settled(&self, n: usize) -> Result<Vec<JobRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM resource_prediction WHERE settled_at IS NOT NULL
                 ORDER BY settled_at DESC, id DESC LIMIT ?1"
            ))
            .map_err(q("reading settled rows"))?;
        let rows = stmt
            .query_map([n as i64], record_from_row)
            .map_err(q("reading settled rows"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(q("reading settled rows"))?;
        Ok(rows)
    }

    /// All rows of one job (its attempts), oldest first.
    pub fn job_attempts(&self, job_id: &str) -> Result<Vec<JobRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM resource_prediction WHERE job_id = ?1 ORDER BY attempt"
            ))
            .map_err(q("reading a job"))?;
        let rows = stmt
            .query_map([job_id], record_from_row)
            .map_err(q("reading a job"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(q("reading a job"))?;
        Ok(rows)
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
    // SAFETY: flock on a valid, owned descriptor; released when `lock` is closed.
    let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    if rc != 0 {
        return Err(StoreError::Migrate {
            path: path.to_owned(),
            reason: format!("cannot lock {}", lock_path.display()),
        });
    }
    let migrate_err = |reason: String| StoreError::Migrate {
        path: path.to_owned(),
        reason,
    };
    let res = set_wal(conn, path).and_then(|_| {
        embedded::migrations::runner()
            .run(conn)
            .map_err(|e| migrate_err(crate::config::one_line(&e.to_string())))?;
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
mod tests {
    use super::*;

    #[test]
    fn migrations_are_idempotent_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/presize.db");
        drop(Store::open(&p).unwrap());
        let s = Store::open(&p).unwrap();
        let n: i64 = s
            .conn()
            .query_row("SELECT count(*) FROM refinery_schema_history", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert!(n >= 1);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(p.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
    }

    fn user_version(s: &Store) -> i64 {
        s.conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn latest_migration_matches_the_embedded_list() {
        let max = embedded::migrations::runner()
            .get_migrations()
            .iter()
            .map(|m| i64::from(m.version()))
            .max()
            .unwrap();
        assert_eq!(LATEST_MIGRATION, max);
        assert!(MIGRATIONS_FINGERPRINT > 0 && MIGRATIONS_FINGERPRINT <= i64::from(i32::MAX));
    }

    #[test]
    fn an_up_to_date_store_skips_refinery_and_an_old_one_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("presize.db");
        let s = Store::open(&p).unwrap();
        assert_eq!(user_version(&s), MIGRATIONS_FINGERPRINT);
        // Proof that the second open does not run refinery: a history row refinery would
        // refuse (an applied migration this binary does not have) goes unnoticed.
        s.conn()
            .execute(
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
                 VALUES (9999, 'future', '2026-12-03T00:00:00Z', '1')",
                [],
            )
            .unwrap();
        drop(s);
        drop(Store::open(&p).unwrap());
        // With user_version cleared (a store last migrated by an older presize), the full
        // path runs and refuses the unknown migration, as before.
        Connection::open(&p)
            .unwrap()
            .pragma_update(None, "user_version", 0)
            .unwrap();
        let e = Store::open(&p).unwrap_err().to_string();
        assert!(e.contains("could not be migrated"), "{e}");
        // Without it, the full path records the version again.
        let c = Connection::open(&p).unwrap();
        c.execute(
            "DELETE FROM refinery_schema_history WHERE version = 9999",
            [],
        )
        .unwrap();
        drop(c);
        assert_eq!(
            user_version(&Store::open(&p).unwrap()),
            MIGRATIONS_FINGERPRINT
        );
    }

    #[test]
    fn concurrent_first_opens_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("presize.db");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || Store::open(&p).map(|s| user_version(&s)))
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), MIGRATIONS_FINGERPRINT);
        }
    }

    fn insert_run(
        s: &Store,
        key: &str,
        outcome: &str,
        c: Option<f64>,
        r: Option<f64>,
        w: Option<f64>,
    ) {
        s.conn()
            .execute(
                "INSERT INTO resource_prediction (job_id, job_key, runtime, command, features,
                    schema_hash, model_version, host, predicted_at, settled_at, outcome,
                    actual_cpu_s, actual_rss_mb, actual_wall_s)
                 VALUES ('j', ?1, 'python', '[]', '{}', 'h', 'm', 'h', 't', 't', ?2, ?3, ?4, ?5)",
                params![key, outcome, c, r, w],
            )
            .unwrap();
    }

    #[test]
    fn prior_runs_summarise_the_latest_window_from_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("presize.db")).unwrap();
        assert_eq!(s.prior_runs("k", None).unwrap(), PriorRuns::default());
        // 1,300 ok runs of k (some without cpu/wall), others interleaved that must not count.
        let mut want: Vec<(f64, f64, f64)> = Vec::new();
        for i in 0..1300 {
            let c = (i % 7 != 0).then_some(i as f64 * 0.5);
            let r = 100.0 + (i * 37 % 101) as f64;
            let w = (i % 5 != 0).then_some(1.0 + (i % 13) as f64);
            insert_run(&s, "k", "ok", c, Some(r), w);
            want.push((c.unwrap_or(0.0), r, w.unwrap_or(0.0)));
            insert_run(&s, "k", "failed", Some(1e6), Some(1e6), Some(1e6));
            insert_run(&s, "k", "ok", Some(1e6), None, Some(1e6));
            insert_run(&s, "other", "ok", Some(1e6), Some(1e6), Some(1e6));
        }
        let win: Vec<_> = want.iter().rev().take(PRIOR_WINDOW as usize).collect();
        let n = win.len() as f64;
        let got = s.prior_runs("k", None).unwrap();
        assert_eq!(got.count, PRIOR_WINDOW as u32);
        let last = want[want.len() - 1];
        assert_eq!((got.last_cpu_s, got.last_rss_mb, got.last_wall_s), last);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        assert!(close(
            got.mean_cpu_s,
            win.iter().map(|v| v.0).sum::<f64>() / n
        ));
        assert!(close(
            got.mean_rss_mb,
            win.iter().map(|v| v.1).sum::<f64>() / n
        ));
        assert!(close(
            got.mean_wall_s,
            win.iter().map(|v| v.2).sum::<f64>() / n
        ));
        assert_eq!(got.max_cpu_s, win.iter().map(|v| v.0).fold(0.0, f64::max));
        assert_eq!(got.max_rss_mb, win.iter().map(|v| v.1).fold(0.0, f64::max));
        assert_eq!(got.max_wall_s, win.iter().map(|v| v.2).fold(0.0, f64::max));
        // The plan: the covering index, no sort, no table access.
        let plan: Vec<String> = s
            .conn()
            .prepare(
                "EXPLAIN QUERY PLAN SELECT actual_cpu_s, actual_rss_mb, actual_wall_s
                 FROM resource_prediction INDEXED BY idx_resource_prediction_prior
                 WHERE job_key = 'k' AND outcome = 'ok' AND actual_rss_mb IS NOT NULL
                 ORDER BY id DESC LIMIT 1000",
            )
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join(" | ");
        assert!(
            plan.contains("COVERING INDEX idx_resource_prediction_prior"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn training_rows_are_the_latest_dense_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("presize.db")).unwrap();
        for i in 0..10 {
            let outcome = if i == 3 { "failed" } else { "ok" };
            s.conn()
                .execute(
                    "INSERT INTO resource_prediction (job_id, job_key, runtime, command,
                        features, schema_hash, model_version, host, predicted_at, settled_at,
                        outcome, actual_rss_mb)
                     VALUES ('j', 'k', 'python', '[]', ?1, 'h', 'm', 'h', 't', 't', ?2, 1)",
                    params![format!(r#"{{"b": {i}, "x": 1, "a": 0.5}}"#), outcome],
                )
                .unwrap();
        }
        assert_eq!(s.count_training_rows().unwrap(), 9);
        let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let rows = s.training_rows(&names, 4).unwrap().rows;
        let got: Vec<_> = rows.iter().map(|r| r.features.clone()).collect();
        assert_eq!(
            got,
            vec![
                vec![0.5, 6.0, 0.0],
                vec![0.5, 7.0, 0.0],
                vec![0.5, 8.0, 0.0],
                vec![0.5, 9.0, 0.0]
            ]
        );
        assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(s.training_rows(&names, 100).unwrap().rows.len(), 9);
    }

    #[test]
    fn not_a_database_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.db");
        std::fs::write(&p, vec![0xAB; 8192]).unwrap();
        let e = Store::open(&p).unwrap_err().to_string();
        assert!(e.contains("x.db"), "{e}");
    }
}
