//! `presize settle`: settle finished SLURM jobs from accounting (and resubmit OOM-killed
//! ones); and the hidden `slurm-wrap` the batch script runs a job under.

use std::ffi::OsString;
use std::path::PathBuf;

use super::{fmt_opt, out, out_json};
use crate::config::Settings;
use crate::error::Error;
use crate::slurm;

/// Arguments of `settle`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Run `settle`.
pub fn execute(args: Args) -> Result<i32, Error> {
    let settings = Settings::from_env()?;
    // Status lines on a terminal only (pipes and --json consumers see nothing).
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = move |m: &str| {
        if tty {
            super::say(&format!("presize: {m}"));
        }
    };
    let report = crate::runner::settle_all(&settings, &mut progress)?;
    if args.json {
        out_json(&report)?;
        return Ok(0);
    }
    let mut s = format!(
        "settled {}, resubmitted {}, still pending {}\n",
        report.settled.len(),
        report.resubmitted.len(),
        report.pending.len()
    );
    for x in &report.settled {
        s += &format!(
            "  row {} job {} attempt {}: SLURM {} {} → {}, peak {} MB ({}), cap {} MB, wall {} s\n",
            x.row_id,
            x.job_id,
            x.attempt,
            x.slurm_job_id,
            x.slurm_state,
            x.outcome,
            fmt_opt(x.peak_rss_mb, 1),
            x.measure_source,
            x.memory_limit_mb,
            fmt_opt(x.wall_s, 0)
        );
    }
    for x in &report.resubmitted {
        s += &format!(
            "  row {} job {} attempt {}: resubmitted as SLURM {} with {} MB\n",
            x.row_id, x.job_id, x.attempt, x.slurm_job_id, x.memory_limit_mb
        );
    }
    for e in &report.errors {
        s += &format!("  error: {e}\n");
    }
    out(&s)?;
    Ok(if report.errors.is_empty() { 0 } else { 4 })
}

/// Arguments of the hidden `slurm-wrap`.
#[derive(Debug, clap::Args)]
pub struct WrapArgs {
    /// Where to write the measured figures (JSON).
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,
    /// The job.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Run `slurm-wrap`: the job's exit code passes through.
pub fn wrap(args: WrapArgs) -> Result<i32, Error> {
    slurm::script::wrap(&args.report, &args.command)
        .map_err(|e| Error::Io(format!("slurm-wrap: {e}")))
}
