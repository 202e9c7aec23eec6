//! SLURM as presize uses it: the client commands (`Slurm`: `sbatch`, `sacct`, `sinfo`,
//! `scontrol`), the batch script and its in-job wrapper ([`script`]), accounting parsing
//! (`sacct`) and the settlement an attempt's accounting gives. Admission is SLURM's:
//! there is no local reservation ledger, and the budget for rejecting impossible jobs is
//! the largest node's memory as `sinfo` reports it.
//!
//! The attempt loop that submits, settles and retries is the runner's (`runner::cluster`,
//! the SLURM backend); this module knows nothing of it.

mod client;
pub(crate) mod sacct;
pub mod script;

pub(crate) use client::{Slurm, Submission};

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{Settings, SlurmConfig};
use crate::executor;
use crate::job::Outcome;
use crate::model::Prediction;
use crate::store::Settlement;

/// The `backend` column of SLURM rows.
pub(crate) const BACKEND: &str = "slurm";

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

/// `--time` in whole minutes, rounded up (SLURM limits are whole minutes).
pub(crate) fn time_minutes(timeout_s: u64) -> u64 {
    timeout_s.div_ceil(60).max(1)
}

/// A `--job-name` from a job key: `[A-Za-z0-9._-]`, at most 64 characters.
pub(crate) fn job_name(job_key: &str) -> String {
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
pub(crate) fn cpus_for(pred: &Prediction, node_cpus: Option<u32>) -> Option<u32> {
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

/// Where batch scripts and wrapper reports live.
pub(crate) fn spool_dir(settings: &Settings) -> PathBuf {
    settings.file.slurm.spool_dir.clone().unwrap_or_else(|| {
        settings
            .db_path
            .parent()
            .unwrap_or(Path::new("."))
            .join("slurm")
    })
}

/// The presize binary the batch script wraps the job with, if any.
pub(crate) fn wrapper_binary(cfg: &SlurmConfig) -> Option<PathBuf> {
    match &cfg.wrapper {
        Some(p) if p.as_os_str().is_empty() => None,
        Some(p) => Some(p.clone()),
        None => std::env::current_exe()
            .ok()
            .filter(|p| p.file_name().is_some_and(|n| n == "presize"))
            .or_else(|| executor::resolve_program(&OsString::from("presize")).ok()),
    }
}

pub(crate) fn poll_interval(settings: &Settings) -> Duration {
    Duration::from_millis(
        settings
            .file
            .slurm
            .poll_ms
            .unwrap_or(1000)
            .clamp(50, 60_000),
    )
}

pub(crate) fn write_script(path: &Path, body: &[u8]) -> Result<(), SlurmError> {
    use std::os::unix::fs::PermissionsExt;
    crate::util::write_private_file(path, body)
        .and_then(|_| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)))
        .map_err(|source| SlurmError::Spool {
            path: path.to_owned(),
            source,
        })
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
pub(crate) fn settlement_for(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Bounds, Source};

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
