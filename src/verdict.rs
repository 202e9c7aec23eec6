//! presize's verdict on a `run`, kept apart from the job's own exit status.
//!
//! `presize run` exits with the job's own exit code, or with its own codes (3 rejected, 124
//! timed out, 137 OOM-killed, …), and the two ranges overlap: a job that exits 3 or kills
//! itself with SIGKILL exits like a rejection or an OOM kill. `run --status-file FILE`
//! writes one JSON line ([`RunStatus`]) whose `verdict` says which it was.

use std::path::Path;

use serde::Serialize;

use crate::error::{exit_codes, Error};
use crate::executor::admission::AdmissionError;
use crate::job::Outcome;
use crate::runner::RunReport;

/// What presize decided or observed, for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The job ran and exited 0.
    Ok,
    /// The job ran and ended on its own with a non-zero exit code or a signal presize did
    /// not send; `exit_code` / `signal` are the job's.
    JobFailed,
    /// presize's memory cap killed the job on its last allowed attempt.
    OomKilled,
    /// presize killed the job at its timeout.
    TimedOut,
    /// Refused before running: the job is predicted to be impossible under the budget.
    Rejected,
    /// Never ran: `--queue-timeout` expired while waiting for host memory.
    QueueTimeout,
    /// presize was interrupted (SIGINT/SIGTERM/SIGHUP/SIGQUIT) and stopped the job, or
    /// did not start the next attempt.
    Interrupted,
    /// SLURM without `--wait`: submitted, not yet settled (`presize settle` settles it).
    Submitted,
    /// presize itself failed (usage, store, executor); `error` says why.
    Error,
}

/// The one JSON line `--status-file` receives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStatus {
    pub verdict: Verdict,
    /// Outcome of the last attempt as recorded in the store (`ok`, `failed`, `oom_killed`,
    /// `timed_out`, `rejected`, `queue_timeout`, …); null when nothing was recorded.
    pub outcome: Option<Outcome>,
    /// Attempts that ran.
    pub attempts: usize,
    /// The job's own exit code (last attempt), when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended the job (last attempt), when one did.
    pub signal: Option<i32>,
    /// The exit code `presize run` itself exits with.
    pub presize_exit: i32,
    pub job_id: Option<String>,
    pub job_key: Option<String>,
    /// Store row ids of the attempts (or of the rejection).
    pub rows: Vec<i64>,
    /// presize's error message when the verdict is `error` or `queue_timeout`.
    pub error: Option<String>,
}

impl RunStatus {
    /// The status of a run that returned a report.
    pub fn from_report(r: &RunReport) -> Self {
        let last = r.attempts.last();
        let outcome = match (last, r.rejected_row) {
            (Some(a), _) => Some(a.actuals.outcome),
            (None, Some(_)) => Some(Outcome::Rejected),
            (None, None) => None,
        };
        // A local run whose exit code is not its last attempt's was stopped by a signal
        // before an attempt started (admission wait, retry wait).
        let stopped_between = r.slurm_job_ids.is_empty()
            && r.rejected_row.is_none()
            && last.map(|a| crate::runner::exit_code_for(&a.actuals)) != Some(r.exit_code);
        let verdict = if r.rejected_row.is_some() {
            Verdict::Rejected
        } else if last.is_some_and(|a| a.actuals.interrupted_by.is_some()) || stopped_between {
            Verdict::Interrupted
        } else {
            match outcome {
                None => Verdict::Submitted,
                Some(Outcome::Ok) => Verdict::Ok,
                Some(Outcome::OomKilled) => Verdict::OomKilled,
                Some(Outcome::TimedOut) => Verdict::TimedOut,
                Some(Outcome::Rejected) => Verdict::Rejected,
                Some(Outcome::QueueTimeout) => Verdict::QueueTimeout,
                Some(Outcome::Failed) => Verdict::JobFailed,
                Some(Outcome::Lost) => Verdict::Error,
            }
        };
        let mut rows: Vec<i64> = r.attempts.iter().map(|a| a.row_id).collect();
        rows.extend(r.rejected_row);
        RunStatus {
            verdict,
            outcome,
            attempts: r.attempts.len(),
            exit_code: last.and_then(|a| a.actuals.exit_code),
            signal: last.and_then(|a| a.actuals.signal),
            presize_exit: r.exit_code,
            job_id: Some(r.job_id.clone()),
            job_key: Some(r.plan.job_key.clone()),
            rows,
            error: None,
        }
    }

    /// The status of a run that ended in an error.
    pub fn from_error(e: &Error) -> Self {
        let queue = matches!(e, Error::Admission(AdmissionError::QueueTimeout { .. }));
        RunStatus {
            verdict: if queue {
                Verdict::QueueTimeout
            } else {
                Verdict::Error
            },
            outcome: queue.then_some(Outcome::QueueTimeout),
            attempts: 0,
            exit_code: None,
            signal: None,
            presize_exit: e.exit_code(),
            job_id: None,
            job_key: None,
            rows: Vec::new(),
            error: Some(e.to_string()),
        }
    }

    /// The JSON line (with its newline).
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                "{{\"verdict\":\"error\",\"presize_exit\":{}}}",
                exit_codes::STORE
            )
        });
        s.push('\n');
        s
    }
}

/// Check early that `path` can be written (so a bad path fails before the job runs).
pub fn check_writable(path: &Path) -> Result<(), Error> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map(|_| ())
        .map_err(|e| {
            Error::Usage(format!(
                "cannot write the status file {}: {e}; pass a writable --status-file path",
                path.display()
            ))
        })
}

/// Write the status line to `path`, replacing it whole (temp file + rename), so a reader
/// never sees half a line.
pub fn write(path: &Path, status: &RunStatus) -> Result<(), Error> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "status".into());
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, status.to_line().as_bytes())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::Io(format!(
                "cannot write the status file {}: {e}",
                path.display()
            ))
        })
}
