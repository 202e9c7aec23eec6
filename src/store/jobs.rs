//! The `resource_prediction` rows of local attempts: insert before the start, record the
//! start, settle (first result wins), find orphans, read back.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::failpoints::failpoint;
use super::{int, q, Store, StoreError};
use crate::job::{LimitSource, Outcome};
use crate::util::now_rfc3339;

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

pub(super) const RECORD_COLUMNS: &str =
    "id, job_id, analysis_id, job_key, runtime, script_sha256, \
    predicted_cpu_s, predicted_rss_mb, predicted_wall_s, upper_cpu_s, upper_rss_mb, upper_wall_s, \
    confidence, source, memory_limit_mb, timeout_s, applied_memory_mb, applied_timeout_s, \
    enforced, memory_enforced, dry_run, backend, attempt, actual_cpu_s, actual_rss_mb, \
    actual_wall_s, exit_code, outcome, model_version, predicted_at, started_at, settled_at, \
    memory_source, timeout_source, script_path";

pub(super) fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
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

/// Who writes this store's rows, recorded with every prediction (`executor_boot_id`,
/// `executor_pidns`, `executor_token`) so that a later run can prove the writer gone
/// before it marks the row lost. [`Store::open`] records none (NULL, as in rows of older
/// versions); `Settings::open_store` gives the executor's own (see [`Store::set_writer`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterIdentity {
    /// The boot id of the writer's kernel.
    pub boot_id: Option<String>,
    /// The inode of the writer's PID namespace.
    pub pidns: Option<u64>,
    /// The writer's random per-process token (also in its cgroup names).
    pub token: Option<String>,
}

/// An unsettled row whose executor is gone.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrphanRow {
    pub id: i64,
    pub executor_pid: Option<i64>,
    pub executor_start: Option<i64>,
    pub executor_boot_id: Option<String>,
    pub executor_pidns: Option<i64>,
    pub job_pid: Option<i64>,
    pub job_start: Option<i64>,
    pub cgroup_name: Option<String>,
}

/// The settlement UPDATE shared by local and SLURM settling (first result wins: only an
/// unsettled row changes). Returns how many rows changed (0 or 1).
pub(super) fn settle_in(
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

impl Store {
    /// Record `writer()` with every prediction this handle inserts from now on. It is called
    /// at the first insert only (a command that inserts nothing does not compute it).
    pub fn set_writer(&mut self, writer: fn() -> WriterIdentity) {
        self.writer_fn = Some(writer);
        self.writer = std::cell::OnceCell::new();
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
        let features = super::features::Encoder::default()
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
        let me = self
            .writer
            .get_or_init(|| self.writer_fn.map(|f| f()).unwrap_or_default());
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
    pub(crate) fn settle_measured(
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
    pub(crate) fn orphans(
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
    pub(crate) fn mark_lost(&mut self, ids: &[i64]) -> Result<usize, StoreError> {
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
}
