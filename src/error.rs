//! The crate-level error: one variant per stage, each mapped to a documented exit code.

use crate::{config, executor, features, model, policy, slurm, store};

/// Exit codes of `presize` itself (a job's own exit code passes through unchanged).
pub mod exit_codes {
    /// Success.
    pub const OK: i32 = 0;
    /// Usage or input error: bad flag, unreadable script, invalid environment value.
    pub const USAGE: i32 = 2;
    /// Rejected before running: the job is manifestly impossible under the host budget.
    pub const REJECTED: i32 = 3;
    /// Store or model error: the database or a model file could not be used.
    pub const STORE: i32 = 4;
    /// The job was killed at its timeout.
    pub const TIMED_OUT: i32 = 124;
    /// The job was OOM-killed after the last allowed attempt.
    pub const OOM_KILLED: i32 = 137;
}

/// Any error presize can report; `exit_code` gives the documented exit status.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Features(#[from] features::FeatureError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Executor(#[from] executor::ExecError),
    #[error(transparent)]
    Admission(#[from] executor::admission::AdmissionError),
    #[error(transparent)]
    Slurm(#[from] slurm::SlurmError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
}

impl Error {
    /// The exit code DESIGN.md documents for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Store(_) | Error::Model(_) => exit_codes::STORE,
            Error::Executor(e) if e.is_internal() => exit_codes::STORE,
            Error::Admission(executor::admission::AdmissionError::QueueTimeout { .. }) => {
                exit_codes::REJECTED
            }
            Error::Admission(_) => exit_codes::STORE,
            Error::Slurm(e) if e.is_usage() => exit_codes::USAGE,
            Error::Slurm(_) => exit_codes::STORE,
            _ => exit_codes::USAGE,
        }
    }
}
