//! SLURM backend: the same features, prediction, policy and rejection as a local run, then
//! `sbatch` with the limits; settled later from accounting (`sacct`), with OOM escalation
//! by resubmission. Admission is SLURM's: there is no local reservation ledger here, and the
//! budget for rejecting impossible jobs is the largest node's memory as `sinfo` reports it.

pub mod sacct;
pub mod script;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Settings, SlurmConfig};
use crate::error::{exit_codes, Error};
use crate::executor::{self, Actuals};
use crate::job::{JobSpec, Outcome};
use crate::model::{Bounds, Prediction, Predictor, Source};
use crate::policy::{Decision, Limits};
use crate::runner::{self, AttemptReport, JobRows, RunOptions, RunReport};
use crate::store::{NextAttempt, Settlement, SlurmRow, SlurmSubmitted, Store};

/// The `backend` column of SLURM rows.
pub const BACKEND: &str = "slurm";

/// Errors of the SLURM backend.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("{0} not found: install the SLURM client tools (Debian: slurm-client) or fix PATH")]
    NotInstalled(&'static str),
    #[error("{cmd} failed: {message}; check SLURM_CONF and that the cluster is up (`sinfo`)")]
    Command { cmd: &'static str, message: String },
    #[error("{cmd} printed something presize cannot read: {output:?}")]
    Unreadable { cmd: &'static str, output: String },
    #[error("cannot write {path}: {source}; set [slurm] spool_dir to a writable shared directory")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot determine the working directory: {0}")]
    Cwd(std::io::Error),
}

impl SlurmError {
    /// True when the user can fix it (install the tools, fix the config).
    pub fn is_usage(&self) -> bool {
        matches!(self, SlurmError::NotInstalled(_) | SlurmError::Cwd(_))
    }
}

/// The SLURM client commands (`sbatch`, `sacct`, `sinfo`, `scontrol`), found in PATH and
/// run with the caller's environment (`SLURM_CONF` included).
#[derive(Debug, Clone)]
pub struct Slurm {
    cfg: SlurmConfig,
}

/// What one `sbatch` call gets.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    pub script: &'a Path,
    pub job_name: &'a str,
    pub memory_mb: u64,
    pub timeout_s: u64,
    pub cpus: Option<u32>,
    pub cwd: &'a Path,
    pub output: &'a Path,
    pub error: &'a Path,
}

/// `--time` in whole minutes, rounded up (SLURM limits are whole minutes).
pub fn time_minutes(timeout_s: u64) -> u64 {
    timeout_s.div_ceil(60).max(1)
}

/// A `--job-name` from a job key: `[A-Za-z0-9._-]`, at most 64 characters.
pub fn job_name(job_key: &str) -> String {
    let s: String = job_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() {
        "presize".into()
    } else {
        s
    }
}

/// `--cpus-per-task` where the prediction says the job keeps more than one CPU busy
/// (predicted CPU time / wall time, rounded up), capped by the largest node.
pub fn cpus_for(pred: &Prediction, node_cpus: Option<u32>) -> Option<u32> {
    let (cpu, wall) = (pred.cpu_seconds, pred.wall_seconds);
    if !(cpu.is_finite() && wall.is_finite() && wall > 0.0 && cpu > 0.0) {
        return None;
    }
    let n = (cpu / wall - 0.05).ceil();
    if n < 2.0 {
        return None;
    }
    let n = n.min(256.0) as u32;
    Some(node_cpus.map_or(n, |c| n.min(c.max(1))))
}

/// Escape `%` for sbatch's filename patterns.
fn escape_pattern(p: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        if b == b'%' {
            out.push(b'%');
        }
        out.push(b);
    }
    OsString::from_vec(out)
}

impl Slurm {
    pub fn new(cfg: &SlurmConfig) -> Self {
        Slurm { cfg: cfg.clone() }
    }

    fn run(&self, cmd: &'static str, args: &[OsString]) -> Result<String, SlurmError> {
        let out = Command::new(cmd).args(args).output().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SlurmError::NotInstalled(cmd)
            } else {
                SlurmError::Command {
                    cmd,
                    message: e.to_string(),
                }
            }
        })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(SlurmError::Command {
                cmd,
                message: crate::util::one_line(if err.trim().is_empty() {
                    "no message"
                } else {
                    &err
                }),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn partition_args(&self) -> Vec<OsString> {
        match &self.cfg.partition {
            Some(p) => vec!["-p".into(), p.into()],
            None => Vec::new(),
        }
    }

    /// The largest node memory (MB) of the partition: the budget for rejection.
    pub fn node_memory_mb(&self) -> Result<u64, SlurmError> {
        let mut args: Vec<OsString> = vec!["-h".into(), "-N".into(), "-o".into(), "%m".into()];
        args.extend(self.partition_args());
        let out = self.run("sinfo", &args)?;
        sacct::parse_sinfo_memory(&out).ok_or(SlurmError::Unreadable {
            cmd: "sinfo",
            output: out,
        })
    }

    /// The largest CPU count of a node of the partition.
    pub fn node_cpus(&self) -> Option<u32> {
        let mut args: Vec<OsString> = vec!["-h".into(), "-N".into(), "-o".into(), "%c".into()];
        args.extend(self.partition_args());
        self.run("sinfo", &args)
            .ok()
            .and_then(|o| sacct::parse_sinfo_cpus(&o))
    }

    /// Whether the cluster's configuration enforces `--mem`.
    pub fn enforces_memory(&self) -> bool {
        self.run("scontrol", &["show".into(), "config".into()])
            .map(|o| sacct::config_enforces_memory(&o))
            .unwrap_or(false)
    }

    /// Submit; returns the SLURM job id.
    pub fn submit(&self, s: &Submission<'_>) -> Result<String, SlurmError> {
        let mut args: Vec<OsString> = vec![
            "--parsable".into(),
            "--no-requeue".into(),
            format!("--job-name={}", s.job_name).into(),
            format!("--mem={}M", s.memory_mb.max(1)).into(),
            format!("--time={}", time_minutes(s.timeout_s)).into(),
        ];
        if let Some(c) = s.cpus {
            args.push(format!("--cpus-per-task={c}").into());
        }
        let mut chdir = OsString::from("--chdir=");
        chdir.push(s.cwd);
        args.push(chdir);
        // In --output/--error, `%` starts a pattern: escape the directory, keep our `%j`.
        for (name, p) in [("--output=", s.output), ("--error=", s.error)] {
            let mut a = OsString::from(name);
            if let (Some(dir), Some(file)) = (p.parent(), p.file_name()) {
                a.push(escape_pattern(dir));
                a.push("/");
                a.push(file);
            } else {
                a.push(p);
            }
            args.push(a);
        }
        if let Some(p) = &self.cfg.partition {
            args.push(format!("--partition={p}").into());
        }
        if let Some(a) = &self.cfg.account {
            args.push(format!("--account={a}").into());
        }
        args.extend(self.cfg.sbatch_args.iter().map(OsString::from));
        args.push(s.script.into());
        let out = self.run("sbatch", &args)?;
        sacct::parse_sbatch(&out).ok_or(SlurmError::Unreadable {
            cmd: "sbatch",
            output: out,
        })
    }

    /// Accounting lines of these jobs and their steps.
    pub fn sacct(&self, ids: &[&str]) -> Result<Vec<sacct::SacctLine>, SlurmError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let args: Vec<OsString> = vec![
            "--parsable2".into(),
            "--noheader".into(),
            "--units=K".into(),
            format!("--format={}", sacct::FORMAT).into(),
            "-j".into(),
            ids.join(",").into(),
        ];
        Ok(sacct::parse(&self.run("sacct", &args)?))
    }
}

/// Where batch scripts and wrapper reports live.
pub fn spool_dir(settings: &Settings) -> PathBuf {
    settings.file.slurm.spool_dir.clone().unwrap_or_else(|| {
        settings
            .db_path
            .parent()
            .unwrap_or(Path::new("."))
            .join("slurm")
    })
}

/// The presize binary the batch script wraps the job with, if any.
fn wrapper_binary(cfg: &SlurmConfig) -> Option<PathBuf> {
    match &cfg.wrapper {
        Some(p) if p.as_os_str().is_empty() => None,
        Some(p) => Some(p.clone()),
        None => std::env::current_exe()
            .ok()
            .filter(|p| p.file_name().is_some_and(|n| n == "presize"))
            .or_else(|| executor::resolve_program(&OsString::from("presize")).ok()),
    }
}

fn poll_interval(settings: &Settings) -> Duration {
    Duration::from_millis(
        settings
            .file
            .slurm
            .poll_ms
            .unwrap_or(1000)
            .clamp(50, 60_000),
    )
}

/// Submit one attempt row; on failure the row is settled `failed`.
#[allow(clippy::too_many_arguments)]
fn submit_row(
    store: &mut Store,
    slurm: &Slurm,
    id: i64,
    job_key: &str,
    attempt: u32,
    limits: (u64, u64),
    cpus: Option<u32>,
    script: &Path,
    cwd: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<String, Error> {
    let output = cwd.join("presize-%j.out");
    let error = cwd.join("presize-%j.err");
    let res = slurm.submit(&Submission {
        script,
        job_name: &job_name(job_key),
        memory_mb: limits.0,
        timeout_s: limits.1,
        cpus,
        cwd,
        output: &output,
        error: &error,
    });
    let sid = match res {
        Ok(s) => s,
        Err(e) => {
            let _ = store.settle(id, &runner::unrun(Outcome::Failed));
            return Err(e.into());
        }
    };
    let real = |p: &Path| p.display().to_string().replace("%j", &sid);
    let (out_s, err_s) = (real(&output), real(&error));
    store.mark_slurm_submitted(
        id,
        &SlurmSubmitted {
            slurm_job_id: &sid,
            script: &script.display().to_string(),
            output: &out_s,
            error: &err_s,
            cpus,
            cwd: &cwd.display().to_string(),
        },
    )?;
    progress(&format!(
        "attempt {attempt}: submitted SLURM job {sid} (--mem={}M --time={}{}); stdout {out_s}, stderr {err_s}",
        limits.0,
        time_minutes(limits.1),
        cpus.map(|c| format!(" --cpus-per-task={c}")).unwrap_or_default()
    ));
    Ok(sid)
}

/// `presize run` on the SLURM backend.
pub fn run(
    spec: &JobSpec,
    settings: &Settings,
    opts: &RunOptions,
    mut progress: impl FnMut(&str),
) -> Result<RunReport, Error> {
    let program = spec
        .command
        .first()
        .ok_or(executor::ExecError::EmptyCommand)?;
    executor::resolve_program(program)?;
    let slurm = Slurm::new(&settings.file.slurm);
    let budget = slurm.node_memory_mb()?;
    let enforced = slurm.enforces_memory();
    let mut store = settings.open_store()?;
    settle_at_start(&mut store, settings, &mut progress);
    let _ = Predictor::seed_model_dir(&settings.model_dir);
    let (predictor, warnings) = Predictor::load(&settings.model_dir);
    for w in warnings {
        progress(&format!("warning: {w}"));
    }
    let dry_run = opts.dry_run || settings.dry_run;
    // The same plan as locally, with SLURM's node memory as the budget.
    let mut cluster = settings.clone();
    cluster.host_budget_mb = budget;
    let plan = runner::plan(spec, &cluster, &predictor, Some(&store), dry_run)?;
    if let Some(w) = &plan.model_warning {
        progress(&format!("warning: {w}"));
    }
    let job_id = runner::new_job_id();
    let mut rows = JobRows::new(spec, &plan, &job_id, BACKEND, enforced, dry_run);
    let (predicted, mut applied, mut sizing) = match &plan.decision {
        Decision::Reject(r) => {
            let r = r.clone();
            return runner::reject(&mut store, &rows, plan.clone(), &cluster, &r, &mut progress)
                .map(|mut rep| {
                    rep.backend = BACKEND.into();
                    rep
                });
        }
        Decision::Run {
            predicted,
            applied,
            sizing,
        } => (*predicted, *applied, sizing.clone()),
    };
    let sources = runner::apply_overrides(&mut applied, &mut sizing, opts);
    rows.set_sources(&sources);
    if !enforced {
        progress("warning: this cluster's configuration does not enforce --mem (no task/cgroup); caps are requests only");
    }
    let cwd = match &spec.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir().map_err(SlurmError::Cwd)?,
    };
    let spool = spool_dir(settings);
    crate::util::create_private_dir(&spool).map_err(|source| SlurmError::Spool {
        path: spool.clone(),
        source,
    })?;
    let script_path = spool.join(format!("job-{job_id}.sh"));
    let body = script::batch_script(
        &spec.command,
        wrapper_binary(&settings.file.slurm).as_deref(),
        &spool,
        &format!(
            "presize job {job_id}, job key {}; submitted once per attempt",
            plan.job_key
        ),
    );
    write_script(&script_path, &body)?;
    let cpus = cpus_for(&plan.prediction, slurm.node_cpus());
    let id = store.insert_prediction(&rows.row(predicted, Some(applied), &sizing, 1, false))?;
    let sid = submit_row(
        &mut store,
        &slurm,
        id,
        &plan.job_key,
        1,
        (applied.memory_limit_mb, applied.timeout_s),
        cpus,
        &script_path,
        &cwd,
        &mut progress,
    )?;
    let mut report = RunReport {
        job_id: job_id.clone(),
        backend: BACKEND.into(),
        dry_run,
        attempts: Vec::new(),
        rejected_row: None,
        exit_code: exit_codes::OK,
        plan,
        slurm_job_ids: vec![sid],
        sources: Some(sources),
    };
    if !opts.wait {
        return Ok(report);
    }
    let poll = poll_interval(settings);
    loop {
        let pass = settle_pass(&mut store, &slurm, settings, Some(&job_id), &mut progress)?;
        report
            .slurm_job_ids
            .extend(pass.resubmitted.iter().map(|r| r.slurm_job_id.clone()));
        let attempts = store.slurm_attempts(&job_id)?;
        if attempts.iter().all(|a| a.settled_at.is_some()) {
            report.attempts = attempts.iter().map(attempt_report).collect();
            report.exit_code = report
                .attempts
                .last()
                .map(|a| runner::exit_code_for(&a.actuals))
                .unwrap_or(1);
            return Ok(report);
        }
        std::thread::sleep(poll);
    }
}

fn write_script(path: &Path, body: &[u8]) -> Result<(), SlurmError> {
    use std::os::unix::fs::PermissionsExt;
    crate::util::write_private_file(path, body)
        .and_then(|_| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)))
        .map_err(|source| SlurmError::Spool {
            path: path.to_owned(),
            source,
        })
}

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

/// One settled attempt, as `presize settle` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Settled {
    pub row_id: i64,
    pub job_id: String,
    pub attempt: u32,
    pub slurm_job_id: String,
    pub slurm_state: String,
    pub outcome: Outcome,
    pub peak_rss_mb: Option<f64>,
    pub sacct_max_rss_mb: Option<f64>,
    /// `slurm-wrapper-cgroup`, `slurm-wrapper-rusage` or `sacct`.
    pub measure_source: String,
    pub wall_s: Option<f64>,
    pub cpu_s: Option<f64>,
    pub memory_limit_mb: u64,
}

/// A retry submitted after an OOM kill (or a timeout, with `retry_timeouts`).
#[derive(Debug, Clone, Serialize)]
pub struct Resubmitted {
    pub row_id: i64,
    pub job_id: String,
    pub attempt: u32,
    pub slurm_job_id: String,
    pub memory_limit_mb: u64,
    pub timeout_s: u64,
}

/// The result of one settle pass (`presize settle --json`).
#[derive(Debug, Clone, Serialize, Default)]
pub struct SettleReport {
    pub settled: Vec<Settled>,
    pub resubmitted: Vec<Resubmitted>,
    /// Attempts still queued or running (or whose accounting is not complete yet).
    pub pending: Vec<String>,
    /// Resubmissions that failed (the new row is settled `failed`).
    pub errors: Vec<String>,
}

/// Combine accounting with the wrapper's report into a settlement.
pub fn settlement_for(
    res: &sacct::JobResult,
    wrap: Option<&script::WrapReport>,
    cap_mb: u64,
    memory_enforced: bool,
) -> Settlement {
    let (mut peak, source) = match wrap {
        Some(w) if w.peak_rss_mb.is_finite() && w.peak_rss_mb > 0.0 => (
            Some(w.peak_rss_mb),
            format!("slurm-wrapper-{}", w.peak_from),
        ),
        _ => (res.max_rss_mb, "sacct".to_string()),
    };
    if res.outcome == Outcome::OomKilled {
        // Censored: the job needed at least its cap; the sampled figure says less.
        peak = Some(peak.unwrap_or(0.0).max(cap_mb as f64));
    }
    Settlement {
        actual_cpu_s: res.cpu_s.or(wrap.map(|w| w.cpu_s)),
        actual_rss_mb: peak,
        actual_wall_s: res.wall_s.or(wrap.map(|w| w.wall_s)),
        rusage_maxrss_mb: wrap.map(|w| w.rusage_maxrss_mb),
        measure_source: source,
        exit_code: wrap.and_then(|w| w.exit_code).or(res.exit_code),
        signal: wrap.and_then(|w| w.signal).or(res.signal),
        outcome: res.outcome,
        memory_enforced,
    }
}

fn prediction_of(row: &SlurmRow) -> Prediction {
    let b = |rss: Option<f64>, wall: Option<f64>| Bounds {
        peak_rss_mb: rss.unwrap_or(0.0),
        wall_seconds: wall.unwrap_or(0.0),
        cpu_seconds: 0.0,
    };
    Prediction {
        cpu_seconds: 0.0,
        peak_rss_mb: row.predicted_rss_mb.unwrap_or(0.0),
        wall_seconds: row.predicted_wall_s.unwrap_or(0.0),
        confidence: 0.0,
        upper: b(row.upper_rss_mb, row.upper_wall_s),
        lower: b(None, None),
        model_version: String::new(),
        source: Source::Prior,
    }
}

/// Settle every finished SLURM attempt (of one job, or all), resubmitting OOM-killed ones
/// with the escalated cap. One `sacct` call per pass.
pub fn settle_pass(
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
    let spool = spool_dir(settings);
    let policy = settings.policy();
    let host = runner::hostname();
    let my_pid = std::process::id();
    let my_start = executor::proc_start_ticks(my_pid);
    let mut budget: Option<u64> = None;
    for row in &rows {
        let Some(sid) = row.slurm_job_id.as_deref() else {
            continue;
        };
        let Some(res) = sacct::job_result(sid, &lines) else {
            report.pending.push(sid.to_string());
            continue;
        };
        let report_file = script::report_path(&spool, sid);
        let wrap: Option<script::WrapReport> = std::fs::read(&report_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let settlement = settlement_for(
            &res,
            wrap.as_ref(),
            row.applied_memory_mb,
            row.memory_enforced,
        );
        let applied = Limits {
            memory_limit_mb: row.applied_memory_mb,
            timeout_s: row.applied_timeout_s,
            enforced: row.enforced,
        };
        let next = if row.attempt < policy.max_attempts
            && matches!(res.outcome, Outcome::OomKilled | Outcome::TimedOut)
        {
            let b = match budget {
                Some(b) => b,
                None => {
                    let b = slurm.node_memory_mb()?;
                    budget = Some(b);
                    b
                }
            };
            // The engine's one retry rule, on the evidence recorded with the job and the
            // key's window as it stands now.
            let sizer = crate::policy::Sizer::new(policy, b);
            let key = crate::policy::KeyHistory::from_runs(
                &store.key_runs(&row.job_key, 2 * sizer.alloc.window)?,
                &sizer.alloc,
            );
            let sizing = crate::policy::Sizing {
                evidence: row
                    .evidence
                    .as_deref()
                    .and_then(crate::policy::Evidence::parse)
                    .unwrap_or_default(),
                timeout_source: row
                    .timeout_source
                    .as_deref()
                    .and_then(crate::policy::LimitSource::parse)
                    .unwrap_or_default(),
                ..Default::default()
            };
            let prediction = prediction_of(row);
            sizer.retry_limits(
                &crate::policy::Evidences {
                    prediction: &prediction,
                    novelty: &[],
                    key: &key,
                    size: crate::policy::JobSize::from_columns(
                        row.size_input_mb,
                        row.size_arg_log10,
                    ),
                    model_fallback: None,
                },
                applied,
                &sizing,
                res.outcome,
                row.attempt,
            )
        } else {
            None
        };
        let next_row = next.map(|l| NextAttempt {
            memory_limit_mb: l.memory_limit_mb,
            timeout_s: l.timeout_s,
            host: &host,
            executor_pid: my_pid,
            executor_start: my_start,
        });
        let Some(new_id) = store.settle_slurm(
            row.id,
            &settlement,
            &res.state,
            res.max_rss_mb,
            next_row.as_ref(),
        )?
        else {
            continue; // another presize settled it first
        };
        let _ = std::fs::remove_file(&report_file);
        progress(&format!(
            "attempt {}: SLURM job {sid} {} ({}) — peak {:.1} MB ({}), cpu {:.2} s, wall {:.0} s",
            row.attempt,
            res.state,
            settlement.outcome,
            settlement.actual_rss_mb.unwrap_or(0.0),
            settlement.measure_source,
            settlement.actual_cpu_s.unwrap_or(0.0),
            settlement.actual_wall_s.unwrap_or(0.0),
        ));
        report.settled.push(Settled {
            row_id: row.id,
            job_id: row.job_id.clone(),
            attempt: row.attempt,
            slurm_job_id: sid.to_string(),
            slurm_state: res.state.clone(),
            outcome: settlement.outcome,
            peak_rss_mb: settlement.actual_rss_mb,
            sacct_max_rss_mb: res.max_rss_mb,
            measure_source: settlement.measure_source.clone(),
            wall_s: settlement.actual_wall_s,
            cpu_s: settlement.actual_cpu_s,
            memory_limit_mb: row.applied_memory_mb,
        });
        if let (Some(new_id), Some(l)) = (new_id, next) {
            if res.outcome == Outcome::OomKilled {
                progress(&format!(
                    "OOM-killed at {} MB; retrying with {} MB",
                    row.applied_memory_mb, l.memory_limit_mb
                ));
            }
            let (Some(script), Some(cwd)) = (row.script.as_deref(), row.cwd.as_deref()) else {
                let _ = store.settle(new_id, &runner::unrun(Outcome::Failed));
                report
                    .errors
                    .push(format!("row {} has no batch script to resubmit", row.id));
                continue;
            };
            match submit_row(
                store,
                slurm,
                new_id,
                &row.job_key,
                row.attempt + 1,
                (l.memory_limit_mb, l.timeout_s),
                row.cpus,
                Path::new(script),
                Path::new(cwd),
                progress,
            ) {
                Ok(new_sid) => report.resubmitted.push(Resubmitted {
                    row_id: new_id,
                    job_id: row.job_id.clone(),
                    attempt: row.attempt + 1,
                    slurm_job_id: new_sid,
                    memory_limit_mb: l.memory_limit_mb,
                    timeout_s: l.timeout_s,
                }),
                Err(e) => report
                    .errors
                    .push(format!("resubmitting row {}: {e}", row.id)),
            }
        }
    }
    Ok(report)
}

/// Settle finished SLURM jobs when presize starts; problems become warnings.
pub fn settle_at_start(store: &mut Store, settings: &Settings, progress: &mut dyn FnMut(&str)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_whole_minutes_rounded_up() {
        assert_eq!(time_minutes(0), 1);
        assert_eq!(time_minutes(1), 1);
        assert_eq!(time_minutes(60), 1);
        assert_eq!(time_minutes(61), 2);
        assert_eq!(time_minutes(3600), 60);
    }

    #[test]
    fn job_names_are_safe() {
        assert_eq!(job_name("k-0123abcd"), "k-0123abcd");
        assert_eq!(job_name("a b/$(x)"), "a_b___x_");
        assert_eq!(job_name(""), "presize");
        assert_eq!(job_name(&"x".repeat(100)).len(), 64);
    }

    fn pred(cpu: f64, wall: f64) -> Prediction {
        let b = Bounds {
            peak_rss_mb: 0.0,
            wall_seconds: 0.0,
            cpu_seconds: 0.0,
        };
        Prediction {
            cpu_seconds: cpu,
            peak_rss_mb: 100.0,
            wall_seconds: wall,
            confidence: 0.5,
            upper: b,
            lower: b,
            model_version: "t".into(),
            source: Source::Model,
        }
    }

    #[test]
    fn cpus_only_where_the_prediction_says_parallel() {
        assert_eq!(cpus_for(&pred(10.0, 10.0), Some(16)), None);
        assert_eq!(cpus_for(&pred(39.0, 10.0), Some(16)), Some(4));
        assert_eq!(cpus_for(&pred(1000.0, 10.0), Some(16)), Some(16));
        assert_eq!(cpus_for(&pred(f64::NAN, 10.0), Some(16)), None);
        assert_eq!(cpus_for(&pred(10.0, 0.0), Some(16)), None);
    }

    #[test]
    fn wrapper_figure_is_preferred_and_oom_is_censored() {
        let res = sacct::job_result(
            "1",
            &sacct::parse(
                "1|COMPLETED|0:0||00:00.5|5|300M|2\n1.batch|COMPLETED|0:0|204800K|00:00.5|5||\n",
            ),
        )
        .unwrap();
        let w = script::WrapReport {
            peak_rss_mb: 210.0,
            peak_from: "cgroup".into(),
            rusage_maxrss_mb: 205.0,
            cpu_s: 0.4,
            wall_s: 4.9,
            exit_code: Some(0),
            signal: None,
        };
        let s = settlement_for(&res, Some(&w), 300, true);
        assert_eq!(s.actual_rss_mb, Some(210.0));
        assert_eq!(s.measure_source, "slurm-wrapper-cgroup");
        let s = settlement_for(&res, None, 300, true);
        assert_eq!(s.actual_rss_mb, Some(200.0));
        assert_eq!(s.measure_source, "sacct");
        let oom = sacct::job_result(
            "2",
            &sacct::parse(
                "2|OUT_OF_MEMORY|0:125||0:0|0|100M|2\n2.batch|OUT_OF_MEMORY|0:125|2520K|0:0|0||\n",
            ),
        )
        .unwrap();
        let s = settlement_for(&oom, None, 100, true);
        assert_eq!(s.outcome, Outcome::OomKilled);
        assert_eq!(s.actual_rss_mb, Some(100.0));
    }
}
