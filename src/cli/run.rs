//! `presize run -- CMD...`: predict, record, run under limits, settle.

use std::ffi::OsString;
use std::path::PathBuf;

use super::JobArgs;
use crate::config::Settings;
use crate::error::Error;
use crate::job::{JobSpec, LimitSource, Priority};
use crate::policy::Decision;
use crate::runner::{self, RunOptions, RunReport};
use crate::verdict::RunStatus;

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub job: JobArgs,
    /// The job's script; default: the first argument with a script extension.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// Admission priority.
    #[arg(long, value_enum, default_value_t = Priority::Normal)]
    pub priority: Priority,
    /// Predict and record, but enforce only the static defaults.
    #[arg(long)]
    pub dry_run: bool,
    /// Override the timeout in seconds (recorded as applied).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Override the memory cap in MiB (recorded as applied).
    #[arg(long, value_name = "MB")]
    pub memory_mb: Option<u64>,
    /// Give up waiting for admission after this many seconds (exit 3).
    #[arg(long, value_name = "SECS")]
    pub queue_timeout: Option<u64>,
    /// The caller's own id for this analysis, stored with the record.
    #[arg(long, value_name = "ID")]
    pub analysis_id: Option<String>,
    /// Run the job as this user (name or uid); presize must run as root.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Where the job runs (default: `[executor] backend`, i.e. `local`).
    #[arg(long, value_enum, value_name = "B")]
    pub backend: Option<crate::config::BackendChoice>,
    /// SLURM backend: block until the job (and its retries) are settled; without it
    /// `run` prints the SLURM job id and returns (settle later with `presize settle`).
    #[arg(long)]
    pub wait: bool,
    /// When presize is done, write one JSON line to FILE with presize's verdict (ok,
    /// job_failed, oom_killed, timed_out, rejected, queue_timeout, interrupted, submitted,
    /// error), the last attempt's outcome, the job's own exit code and signal, and the code
    /// presize exits with: tells presize's verdict from the job's own exit status.
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    /// Print nothing of presize's own on stderr except errors.
    #[arg(long, short)]
    pub quiet: bool,
    /// The job: program and arguments (never passed through a shell).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Longest `--timeout` accepted: 366 days.
pub const MAX_TIMEOUT_S: u64 = 366 * 24 * 3600;

/// `--timeout` and `--memory-mb` must be real limits: 0 is refused (not silently 1), and a cap
/// larger than the host budget would make the admission ledger meaningless.
fn check_overrides(args: &Args, budget_mb: u64) -> Result<(), Error> {
    if let Some(t) = args.timeout {
        if t == 0 || t > MAX_TIMEOUT_S {
            return Err(Error::Usage(format!(
                "--timeout {t}: give 1 to {MAX_TIMEOUT_S} seconds"
            )));
        }
    }
    if let Some(m) = args.memory_mb {
        if m == 0 {
            return Err(Error::Usage(
                "--memory-mb 0: give a cap of at least 1 MB".into(),
            ));
        }
        if m > budget_mb {
            return Err(Error::Usage(format!(
                "--memory-mb {m} exceeds the host memory budget of {budget_mb} MB; lower it or raise PRESIZE_HOST_BUDGET_MB"
            )));
        }
    }
    if let Some(q) = args.queue_timeout {
        if q > MAX_TIMEOUT_S {
            return Err(Error::Usage(format!(
                "--queue-timeout {q}: give at most {MAX_TIMEOUT_S} seconds"
            )));
        }
    }
    Ok(())
}

/// Run `run`.
pub fn execute(mut args: Args) -> Result<i32, Error> {
    let Some(path) = args.status_file.take() else {
        return execute_job(args).map(|r| r.exit_code);
    };
    crate::verdict::check_writable(&path)?;
    let result = execute_job(args);
    let status = match &result {
        Ok(report) => RunStatus::from_report(report),
        Err(e) => RunStatus::from_error(e),
    };
    crate::verdict::write(&path, &status)?;
    result.map(|r| r.exit_code)
}

fn execute_job(args: Args) -> Result<RunReport, Error> {
    if args.command.is_empty() {
        return Err(crate::executor::ExecError::EmptyCommand.into());
    }
    let settings = Settings::from_env()?;
    check_overrides(&args, settings.host_budget_mb)?;
    let spec = JobSpec {
        command: args.command,
        script: args.script,
        runtime: args.job.runtime,
        inputs: args.job.inputs,
        job_key: args.job.job_key,
        analysis_id: args.analysis_id,
        priority: args.priority,
        cwd: None,
        user: args.user,
    };
    let opts = RunOptions {
        dry_run: args.dry_run,
        timeout_s: args.timeout,
        memory_mb: args.memory_mb,
        queue_timeout: args.queue_timeout.map(std::time::Duration::from_secs),
        backend: args.backend,
        wait: args.wait,
    };
    let quiet = args.quiet;
    let say = |m: &str| {
        // -q keeps errors (e.g. a result that could not be recorded).
        if !quiet || m.starts_with("error:") {
            super::say(&format!("presize: {m}"));
        }
    };
    let report = runner::run(&spec, &settings, &opts, say)?;
    // SLURM: the job ids on stdout, one per submission (the job's own output is in files).
    if !report.slurm_job_ids.is_empty() {
        super::out(&(report.slurm_job_ids.join("\n") + "\n"))?;
    }
    if !quiet {
        let p = &report.plan.prediction;
        super::say(&format!(
            "presize: predicted peak {:.1} MB (upper {:.1}), wall {:.2} s, cpu {:.2} s — {} {} confidence {:.2}; job key {}",
            p.peak_rss_mb,
            p.upper.peak_rss_mb,
            p.wall_seconds,
            p.cpu_seconds,
            p.source.as_str(),
            p.model_version,
            p.confidence,
            super::printable(&report.plan.job_key)
        ));
        if let (
            Decision::Run {
                predicted, applied, ..
            },
            Some(src),
        ) = (&report.plan.decision, &report.sources)
        {
            let first = report.attempts.first().map_or(*applied, |a| a.applied);
            let unused = if first != *predicted
                && matches!(src.memory, LimitSource::DryRun | LimitSource::Override)
            {
                format!(
                    " (the prediction's limits, not enforced: memory {} MB, timeout {} s)",
                    predicted.memory_limit_mb, predicted.timeout_s
                )
            } else {
                String::new()
            };
            super::say(&format!(
                "presize: limits: memory {} MB ({}), timeout {} s ({}){unused}; backend {}; rows {:?}",
                first.memory_limit_mb,
                src.memory,
                first.timeout_s,
                src.timeout,
                report.backend,
                report.attempts.iter().map(|a| a.row_id).collect::<Vec<_>>()
            ));
        }
    }
    Ok(report)
}
