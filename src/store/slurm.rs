//! Attempts handed to SLURM: submission, the rows waiting on `sacct`, and the settlement
//! that records the retry in the same transaction.

use rusqlite::{params, TransactionBehavior};
use serde::Serialize;

use super::jobs::{settle_in, Settlement};
use super::{q, Store, StoreError};
use crate::job::{LimitSource, Outcome};
use crate::util::now_rfc3339;

/// What `sbatch` was given for one attempt.
#[derive(Debug, Clone)]
pub(crate) struct SlurmSubmitted<'a> {
    pub slurm_job_id: &'a str,
    pub script: &'a str,
    pub output: &'a str,
    pub error: &'a str,
    pub cpus: Option<u32>,
    pub cwd: &'a str,
}

/// The limits and submitter of the attempt that follows a settled one.
#[derive(Debug, Clone)]
pub(crate) struct NextAttempt<'a> {
    pub memory_limit_mb: u64,
    pub timeout_s: u64,
    pub host: &'a str,
    pub executor_pid: u32,
    pub executor_start: Option<u64>,
    /// Where the retry's limits came from, where the retry changed them (else copied).
    pub memory_source: Option<LimitSource>,
    pub timeout_source: Option<LimitSource>,
    /// The retry's `enforced` column, where the retry changed it (else copied).
    pub enforced: Option<bool>,
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

impl Store {
    /// Record that an attempt was handed to SLURM (`started_at` is the submission time).
    pub(crate) fn mark_slurm_submitted(
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
    pub(crate) fn has_unsettled_slurm(&self) -> Result<bool, StoreError> {
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
    pub(crate) fn unsettled_slurm(
        &self,
        job_id: Option<&str>,
    ) -> Result<Vec<SlurmRow>, StoreError> {
        self.slurm_rows(
            "settled_at IS NULL AND slurm_job_id IS NOT NULL AND (?1 IS NULL OR job_id = ?1)",
            job_id,
        )
    }

    /// Every SLURM attempt of one job, oldest first.
    pub(crate) fn slurm_attempts(&self, job_id: &str) -> Result<Vec<SlurmRow>, StoreError> {
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
    pub(crate) fn settle_slurm(
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
                    confidence, source, memory_limit_mb, timeout_s, coalesce(?10, enforced),
                    memory_enforced, dry_run, backend, priority, model_version, cwd, slurm_script,
                    slurm_cpus, ?2, ?3, attempt + 1, ?4, ?5, ?6, ?7, coalesce(?8, memory_source),
                    coalesce(?9, timeout_source), evidence,
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
                    now,
                    nx.memory_source.map(LimitSource::as_str),
                    nx.timeout_source.map(LimitSource::as_str),
                    nx.enforced.map(i64::from)
                ],
            )
            .map_err(q("recording the next attempt"))?;
            new_id = Some(tx.last_insert_rowid());
        }
        tx.commit().map_err(q("committing a SLURM settlement"))?;
        Ok(Some(new_id))
    }
}
