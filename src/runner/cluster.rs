//! The SLURM backend: an attempt is a `sbatch` submission; it ends when accounting
//! (`sacct`) has its result. `run --wait` waits for it in the attempt loop; otherwise the
//! settle pass (`presize settle`, and every presize start) settles it and continues the
//! job through the same retry decision ([`next_attempt`]) and recording
//! ([`after_attempt`]) as the loop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Settings;
use crate::error::Error;
use crate::executor::{self, Actuals};
use crate::job::Outcome;
use crate::model::{Bounds, Prediction, Source};
use crate::policy::{
    engine::alloc_config, Evidence, Evidences, JobSize, KeyHistory, LimitSource, Limits, Sizing,
};
use crate::store::{NextAttempt, SlurmRow, SlurmSubmitted, Store};

use crate::slurm::{
    self, job_name, poll_interval, sacct, script, settlement_for, spool_dir, time_minutes,
    Resubmitted, SettleReport, Settled, Slurm, SlurmError, Submission,
};

use super::attempt::{
    after_attempt, next_attempt, retry_possible, After, Attempt, Backend, Launched, Recorded, Retry,
};
use super::keys::hostname;
use super::rows::unrun;
use super::AttemptReport;

/// The `backend` column of SLURM rows.
pub(crate) const BACKEND: &str = slurm::BACKEND;

/// What resubmitting an attempt of one job needs: the batch script and where it runs.
#[derive(Debug, Clone)]
pub(crate) struct SlurmJob {
    pub job_key: String,
    pub script: PathBuf,
    pub cwd: PathBuf,
    pub cpus: Option<u32>,
    pub dry_run: bool,
}

/// SLURM as a [`Backend`].
pub(crate) struct Cluster {
    slurm: Slurm,
    enforced: bool,
    spool: PathBuf,
    poll: Duration,
    host: String,
    pid: u32,
    start: Option<u64>,
    job: Option<SlurmJob>,
}

/// A SLURM attempt's end: its accounting, the settlement made of it, the wrapper's report.
pub(crate) struct SlurmEnd {
    slurm_job_id: String,
    state: String,
    sacct_max_rss_mb: Option<f64>,
    settlement: crate::store::Settlement,
    report_file: PathBuf,
}

impl Cluster {
    /// `enforced`: whether the cluster enforces `--mem` (recorded as `memory_enforced`).
    pub(crate) fn new(slurm: Slurm, settings: &Settings, enforced: bool) -> Self {
        let pid = std::process::id();
        Cluster {
            slurm,
            enforced,
            spool: spool_dir(settings),
            poll: poll_interval(settings),
            host: hostname(),
            pid,
            start: executor::proc_start_ticks(pid),
            job: None,
        }
    }

    pub(crate) fn slurm(&self) -> &Slurm {
        &self.slurm
    }

    pub(crate) fn spool(&self) -> &Path {
        &self.spool
    }

    /// The job the next attempts belong to.
    pub(crate) fn set_job(&mut self, job: SlurmJob) {
        self.job = Some(job);
    }

    /// The end of SLURM job `sid` (attempt under `cap_mb`) from its accounting result.
    fn end_of(&self, sid: &str, res: &sacct::JobResult, cap_mb: u64, enforced: bool) -> SlurmEnd {
        let report_file = script::report_path(&self.spool, sid);
        let wrap: Option<script::WrapReport> = std::fs::read(&report_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        SlurmEnd {
            slurm_job_id: sid.to_string(),
            state: res.state.clone(),
            sacct_max_rss_mb: res.max_rss_mb,
            settlement: settlement_for(res, wrap.as_ref(), cap_mb, enforced),
            report_file,
        }
    }
}

impl Backend for Cluster {
    type End = SlurmEnd;

    fn name(&self) -> &'static str {
        BACKEND
    }

    fn enforces_memory(&self) -> bool {
        self.enforced
    }

    fn unenforced_warning(&self) -> Option<String> {
        (!self.enforced).then(|| {
            "warning: this cluster's configuration does not enforce --mem (no task/cgroup); caps are requests only".into()
        })
    }

    /// Submit; on failure the row is settled `failed`.
    fn launch(
        &mut self,
        store: &mut Store,
        id: i64,
        a: &Attempt,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Launched<SlurmEnd>, Error> {
        let Some(job) = &self.job else {
            let _ = store.settle(id, &unrun(Outcome::Failed));
            return Err(Error::Usage("internal: no batch script to submit".into()));
        };
        let output = job.cwd.join("presize-%j.out");
        let error = job.cwd.join("presize-%j.err");
        let (memory_mb, timeout_s) = (a.limits.memory_limit_mb, a.limits.timeout_s);
        let res = self.slurm.submit(&Submission {
            script: &job.script,
            job_name: &job_name(&job.job_key),
            memory_mb,
            timeout_s,
            cpus: job.cpus,
            cwd: &job.cwd,
            output: &output,
            error: &error,
        });
        let sid = match res {
            Ok(s) => s,
            Err(e) => {
                let _ = store.settle(id, &unrun(Outcome::Failed));
                return Err(e.into());
            }
        };
        let real = |p: &Path| p.display().to_string().replace("%j", &sid);
        let (out_s, err_s) = (real(&output), real(&error));
        store.mark_slurm_submitted(
            id,
            &SlurmSubmitted {
                slurm_job_id: &sid,
                script: &job.script.display().to_string(),
                output: &out_s,
                error: &err_s,
                cpus: job.cpus,
                cwd: &job.cwd.display().to_string(),
            },
        )?;
        progress(&format!(
            "attempt {}: submitted SLURM job {sid} (--mem={memory_mb}M --time={}{}); stdout {out_s}, stderr {err_s}",
            a.number,
            time_minutes(timeout_s),
            job.cpus
                .map(|c| format!(" --cpus-per-task={c}"))
                .unwrap_or_default()
        ));
        Ok(Launched::Submitted(sid))
    }

    /// Poll accounting for `sid` until it has a result (one `sacct` call a poll).
    fn wait(
        &mut self,
        store: &mut Store,
        id: i64,
        a: &Attempt,
        sid: &str,
        _progress: &mut dyn FnMut(&str),
    ) -> Result<Option<SlurmEnd>, Error> {
        loop {
            let lines = self.slurm.sacct(&[sid])?;
            if let Some(res) = sacct::job_result(sid, &lines) {
                return Ok(Some(self.end_of(
                    sid,
                    &res,
                    a.limits.memory_limit_mb,
                    self.enforced,
                )));
            }
            if store.record(id)?.is_some_and(|r| r.settled_at.is_some()) {
                return Ok(None);
            }
            std::thread::sleep(self.poll);
        }
    }

    fn outcome(end: &SlurmEnd) -> (Outcome, bool) {
        (end.settlement.outcome, false)
    }

    /// Settle the attempt and, in the same transaction, write the retry's row (so a
    /// concurrent settle neither misses nor duplicates it).
    fn record(
        &mut self,
        store: &mut Store,
        id: i64,
        a: &Attempt,
        end: &mut SlurmEnd,
        retry: Option<&Retry>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Recorded, Error> {
        let dry_run = self.job.as_ref().is_some_and(|j| j.dry_run);
        let next = retry.map(|r| NextAttempt {
            memory_limit_mb: r.limits.memory_limit_mb,
            timeout_s: r.limits.timeout_s,
            host: &self.host,
            executor_pid: self.pid,
            executor_start: self.start,
            memory_source: r.memory_source,
            timeout_source: r.timeout_source,
            // As a local retry row: the cap came from the prediction unless a dry run.
            enforced: r
                .memory_source
                .map(|s| s == LimitSource::Predicted && !dry_run),
        });
        let s = &end.settlement;
        let Some(next_row) =
            store.settle_slurm(id, s, &end.state, end.sacct_max_rss_mb, next.as_ref())?
        else {
            return Ok(Recorded::Elsewhere);
        };
        let _ = std::fs::remove_file(&end.report_file);
        progress(&format!(
            "attempt {}: SLURM job {} {} ({}) — peak {:.1} MB ({}), cpu {:.2} s, wall {:.0} s",
            a.number,
            end.slurm_job_id,
            end.state,
            s.outcome,
            s.actual_rss_mb.unwrap_or(0.0),
            s.measure_source,
            s.actual_cpu_s.unwrap_or(0.0),
            s.actual_wall_s.unwrap_or(0.0),
        ));
        Ok(Recorded::Settled { next_row })
    }

    fn report(&self, row: i64, a: &Attempt, end: SlurmEnd) -> AttemptReport {
        let s = end.settlement;
        AttemptReport {
            row_id: row,
            attempt: a.number,
            applied: a.limits,
            actuals: Actuals {
                outcome: s.outcome,
                exit_code: s.exit_code,
                signal: s.signal,
                cpu_s: s.actual_cpu_s,
                peak_rss_mb: s.actual_rss_mb,
                charged_peak_mb: None,
                oom_events: 0,
                wall_s: s.actual_wall_s.unwrap_or(0.0),
                rusage_maxrss_mb: end.sacct_max_rss_mb.unwrap_or(0.0),
                rusage_cpu_s: s.actual_cpu_s.unwrap_or(0.0),
                measure_source: s.measure_source,
                memory_enforced: s.memory_enforced,
                interrupted_by: None,
            },
        }
    }

    /// The job's newest attempt while it is unsettled; waits (one poll at a time) while
    /// another presize is still submitting it.
    fn follow(
        &mut self,
        store: &mut Store,
        job_id: &str,
    ) -> Result<Option<(i64, Attempt, String)>, Error> {
        loop {
            let rows = store.slurm_attempts(job_id)?;
            let Some(last) = rows.last().filter(|r| r.settled_at.is_none()) else {
                return Ok(None);
            };
            if let Some(sid) = &last.slurm_job_id {
                return Ok(Some((last.id, attempt_of(last), sid.clone())));
            }
            std::thread::sleep(self.poll);
        }
    }

    /// Every attempt of the job as recorded (those another presize settled included).
    fn attempts(
        &self,
        store: &Store,
        job_id: &str,
        _collected: Vec<AttemptReport>,
    ) -> Result<Vec<AttemptReport>, Error> {
        Ok(store
            .slurm_attempts(job_id)?
            .iter()
            .map(attempt_report)
            .collect())
    }
}

/// An attempt as its row records it.
fn attempt_of(row: &SlurmRow) -> Attempt {
    Attempt {
        number: row.attempt,
        limits: Limits {
            memory_limit_mb: row.applied_memory_mb,
            timeout_s: row.applied_timeout_s,
            enforced: row.enforced,
        },
        sizing: Sizing {
            evidence: row
                .evidence
                .as_deref()
                .and_then(Evidence::parse)
                .unwrap_or_default(),
            timeout_source: row
                .timeout_source
                .as_deref()
                .and_then(LimitSource::parse)
                .unwrap_or_default(),
            ..Default::default()
        },
    }
}

/// A settled attempt row as `run` reports it.
fn attempt_report(r: &SlurmRow) -> AttemptReport {
    AttemptReport {
        row_id: r.id,
        attempt: r.attempt,
        applied: Limits {
            memory_limit_mb: r.applied_memory_mb,
            timeout_s: r.applied_timeout_s,
            enforced: r.enforced,
        },
        actuals: Actuals {
            outcome: r.outcome.unwrap_or(Outcome::Lost),
            exit_code: r.exit_code,
            signal: r.signal,
            cpu_s: r.actual_cpu_s,
            peak_rss_mb: r.actual_rss_mb,
            charged_peak_mb: None,
            oom_events: 0,
            wall_s: r.actual_wall_s.unwrap_or(0.0),
            rusage_maxrss_mb: r.slurm_max_rss_mb.unwrap_or(0.0),
            rusage_cpu_s: r.actual_cpu_s.unwrap_or(0.0),
            measure_source: r.measure_source.clone().unwrap_or_default(),
            memory_enforced: r.memory_enforced,
            interrupted_by: None,
        },
    }
}

/// The evidence recorded with a job's row, and its key's window as it stands now: what the
/// retry rule is given for an attempt settled by another presize than the one that planned
/// it.
struct RowEvidence {
    prediction: Prediction,
    key: KeyHistory,
    size: JobSize,
}

impl RowEvidence {
    fn read(store: &Store, settings: &Settings, row: &SlurmRow) -> Result<Self, Error> {
        let alloc = alloc_config(settings.policy());
        let key = KeyHistory::from_runs(&store.key_runs(&row.job_key, 2 * alloc.window)?, &alloc);
        let b = |rss: Option<f64>, wall: Option<f64>| Bounds {
            peak_rss_mb: rss.unwrap_or(0.0),
            wall_seconds: wall.unwrap_or(0.0),
            cpu_seconds: 0.0,
        };
        Ok(RowEvidence {
            prediction: Prediction {
                cpu_seconds: 0.0,
                peak_rss_mb: row.predicted_rss_mb.unwrap_or(0.0),
                wall_seconds: row.predicted_wall_s.unwrap_or(0.0),
                confidence: 0.0,
                upper: b(row.upper_rss_mb, row.upper_wall_s),
                lower: b(None, None),
                model_version: String::new(),
                source: Source::Prior,
            },
            key,
            size: JobSize::from_columns(row.size_input_mb, row.size_arg_log10),
        })
    }

    fn evidences(&self) -> Evidences<'_> {
        Evidences {
            prediction: &self.prediction,
            novelty: &[],
            key: &self.key,
            size: self.size,
            model_fallback: None,
        }
    }
}

/// Settle every finished SLURM attempt (of one job, or all) and continue each job: an
/// attempt the retry rule retries is resubmitted. One `sacct` call per pass; `sinfo` only
/// when an attempt may be retried.
pub(crate) fn settle_pass(
    store: &mut Store,
    slurm: &Slurm,
    settings: &Settings,
    only_job: Option<&str>,
    progress: &mut dyn FnMut(&str),
) -> Result<SettleReport, Error> {
    let rows = store.unsettled_slurm(only_job)?;
    let mut report = SettleReport::default();
    if rows.is_empty() {
        return Ok(report);
    }
    let ids: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.slurm_job_id.as_deref())
        .collect();
    let lines = slurm.sacct(&ids)?;
    let policy = settings.policy();
    // Each row carries its own `memory_enforced`; the backend's flag is not used here.
    let mut backend = Cluster::new(slurm.clone(), settings, false);
    let mut budget: Option<u64> = None;
    for row in &rows {
        let Some(sid) = row.slurm_job_id.as_deref() else {
            continue;
        };
        let Some(res) = sacct::job_result(sid, &lines) else {
            report.pending.push(sid.to_string());
            continue;
        };
        let mut end = backend.end_of(sid, &res, row.applied_memory_mb, row.memory_enforced);
        let a = attempt_of(row);
        backend.job = match (row.script.as_deref(), row.cwd.as_deref()) {
            (Some(script), Some(cwd)) => Some(SlurmJob {
                job_key: row.job_key.clone(),
                script: PathBuf::from(script),
                cwd: PathBuf::from(cwd),
                cpus: row.cpus,
                dry_run: row.dry_run,
            }),
            _ => None,
        };
        let outcome = end.settlement.outcome;
        let retry = if retry_possible(policy, &a, outcome, false) {
            let b = match budget {
                Some(b) => b,
                None => *budget.insert(slurm.node_memory_mb()?),
            };
            let ev = RowEvidence::read(store, settings, row)?;
            next_attempt(policy, b, &ev.evidences(), &a, outcome, false)
        } else {
            None
        };
        let after = after_attempt(store, &mut backend, row.id, &a, &mut end, retry, progress)?;
        if matches!(after, After::Elsewhere) {
            continue; // another presize settled it first
        }
        let s = &end.settlement;
        report.settled.push(Settled {
            row_id: row.id,
            job_id: row.job_id.clone(),
            attempt: row.attempt,
            slurm_job_id: sid.to_string(),
            slurm_state: end.state.clone(),
            outcome: s.outcome,
            peak_rss_mb: s.actual_rss_mb,
            sacct_max_rss_mb: end.sacct_max_rss_mb,
            measure_source: s.measure_source.clone(),
            wall_s: s.actual_wall_s,
            cpu_s: s.actual_cpu_s,
            memory_limit_mb: row.applied_memory_mb,
        });
        let After::Next {
            row: Some(new_id),
            attempt: next,
        } = after
        else {
            continue;
        };
        if backend.job.is_none() {
            let _ = store.settle(new_id, &unrun(Outcome::Failed));
            report
                .errors
                .push(format!("row {} has no batch script to resubmit", row.id));
            continue;
        }
        match backend.launch(store, new_id, &next, progress) {
            Ok(Launched::Submitted(new_sid)) => report.resubmitted.push(Resubmitted {
                row_id: new_id,
                job_id: row.job_id.clone(),
                attempt: next.number,
                slurm_job_id: new_sid,
                memory_limit_mb: next.limits.memory_limit_mb,
                timeout_s: next.limits.timeout_s,
            }),
            Ok(_) => {}
            Err(e) => report
                .errors
                .push(format!("resubmitting row {}: {e}", row.id)),
        }
    }
    Ok(report)
}

/// Settle finished SLURM jobs when presize starts; problems become warnings. With nothing
/// pending this is one indexed `EXISTS` query and nothing is spawned.
pub(crate) fn settle_at_start(
    store: &mut Store,
    settings: &Settings,
    progress: &mut dyn FnMut(&str),
) {
    match store.has_unsettled_slurm() {
        Ok(true) => {}
        _ => return,
    }
    let slurm = Slurm::new(&settings.file.slurm);
    if let Err(e) = settle_pass(store, &slurm, settings, None, progress) {
        progress(&format!("warning: could not settle SLURM jobs: {e}"));
    }
}

/// `presize settle`: one pass over every unsettled SLURM attempt.
pub fn settle_all(
    settings: &Settings,
    progress: &mut dyn FnMut(&str),
) -> Result<SettleReport, Error> {
    let mut store = settings.open_store()?;
    if !store.has_unsettled_slurm()? {
        return Ok(SettleReport::default());
    }
    let slurm = Slurm::new(&settings.file.slurm);
    settle_pass(&mut store, &slurm, settings, None, progress)
}

/// Write the job's batch script into the spool directory; the job every attempt submits.
pub(crate) fn batch_job(
    backend: &Cluster,
    settings: &Settings,
    spec: &crate::job::JobSpec,
    plan: &super::Plan,
    job_id: &str,
    dry_run: bool,
) -> Result<SlurmJob, Error> {
    let cwd = match &spec.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir().map_err(SlurmError::Cwd)?,
    };
    let spool = backend.spool();
    crate::util::create_private_dir(spool).map_err(|source| SlurmError::Spool {
        path: spool.to_owned(),
        source,
    })?;
    let script_path = spool.join(format!("job-{job_id}.sh"));
    let body = script::batch_script(
        &spec.command,
        slurm::wrapper_binary(&settings.file.slurm).as_deref(),
        spool,
        &format!(
            "presize job {job_id}, job key {}; submitted once per attempt",
            plan.job_key
        ),
    );
    slurm::write_script(&script_path, &body)?;
    Ok(SlurmJob {
        job_key: plan.job_key.clone(),
        script: script_path,
        cwd,
        cpus: slurm::cpus_for(&plan.prediction, backend.slurm().node_cpus()),
        dry_run,
    })
}
