//! What a job is: the request an executor hands to presize, and how an attempt ended.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A job to predict and run.
#[derive(Debug, Clone, Default)]
pub struct JobSpec {
    /// Program and arguments; never passed through a shell.
    pub command: Vec<OsString>,
    /// The script the job runs; resolved from the command when `None`.
    pub script: Option<PathBuf>,
    /// Runtime (`python`, `r`, `shell`, …); resolved from the program name when `None`.
    pub runtime: Option<String>,
    /// Input files whose sizes feed the prediction.
    pub inputs: Vec<PathBuf>,
    /// Groups runs of the same job; defaults to a hash of the script path.
    pub job_key: Option<String>,
    /// The caller's own id for this analysis, stored with the row.
    pub analysis_id: Option<String>,
    /// Admission priority.
    pub priority: Priority,
    /// Working directory of the job (default: inherited).
    pub cwd: Option<PathBuf>,
    /// Run the job as this user (name or uid; presize must be root); default: presize's own.
    pub user: Option<String>,
}

/// Admission priority of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Exited 0.
    Ok,
    /// Non-zero exit or killed by a signal other than presize's limits.
    Failed,
    /// Killed by the kernel for exceeding its memory cap (the cgroup says so).
    OomKilled,
    /// Killed by presize at its timeout.
    TimedOut,
    /// Refused before running.
    Rejected,
    /// Never settled: its executor died.
    Lost,
    /// Never ran: its `--queue-timeout` expired while waiting for admission (the job
    /// itself was not judged impossible, unlike [`Outcome::Rejected`]).
    QueueTimeout,
}

impl Outcome {
    /// All outcomes, in display order.
    pub const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::Failed,
        Outcome::OomKilled,
        Outcome::TimedOut,
        Outcome::Rejected,
        Outcome::Lost,
        Outcome::QueueTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::OomKilled => "oom_killed",
            Outcome::TimedOut => "timed_out",
            Outcome::Rejected => "rejected",
            Outcome::Lost => "lost",
            Outcome::QueueTimeout => "queue_timeout",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an applied limit came from (the `memory_source` / `timeout_source` columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitSource {
    /// Derived from the job's prediction.
    Predicted,
    /// The policy's static default (the prediction was not trusted; the reason says why).
    Static,
    /// Given on the command line (`--memory-mb`, `--timeout`).
    Override,
    /// Dry run: the static defaults were enforced while the prediction was only recorded.
    DryRun,
}

impl LimitSource {
    /// All sources, in display order.
    pub const ALL: [LimitSource; 4] = [
        LimitSource::Predicted,
        LimitSource::Static,
        LimitSource::Override,
        LimitSource::DryRun,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitSource::Predicted => "predicted",
            LimitSource::Static => "static",
            LimitSource::Override => "override",
            LimitSource::DryRun => "dry-run",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl std::fmt::Display for LimitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
