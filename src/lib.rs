//! presize predicts what a batch job will need (CPU seconds, peak RSS, wall time) before it
//! runs, then runs it under limits built from that prediction, and learns from every job.
//!
//! The pipeline, one module per stage:
//! [`features`] → [`model`] → [`policy`] → [`executor`] → [`store`], strung together by
//! [`runner`]. Embedding executors call [`runner::run`] (or the stages themselves).
//!
//! # A minimal executor embedding presize
//!
//! ```no_run
//! use presize::{config::Settings, job::JobSpec, model::Predictor, policy, runner};
//!
//! # fn main() -> Result<(), presize::Error> {
//! let settings = Settings::from_env()?;
//! let spec = JobSpec {
//!     command: vec!["python3".into(), "examples/jobs/summarise_table.py".into()],
//!     ..JobSpec::default()
//! };
//! // Predict only: features → prediction → limits; records nothing.
//! let predictor = Predictor::prior_only();
//! let plan = runner::plan(&spec, &settings, &predictor, None, false)?;
//! if let policy::Decision::Run { applied, .. } = &plan.decision {
//!     println!("cap {} MB, timeout {} s", applied.memory_limit_mb, applied.timeout_s);
//! }
//! // Or the whole loop: record, run under the limits, settle, escalate on OOM.
//! let report = runner::run(&spec, &settings, &runner::RunOptions::default(), |msg| {
//!     eprintln!("{msg}")
//! })?;
//! std::process::exit(report.exit_code);
//! # }
//! ```

#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod error;
pub mod executor;
pub mod features;
pub mod forecast;
pub mod job;
pub mod model;
pub mod numfmt;
pub mod policy;
pub mod provenance;
pub mod replay;
pub mod report;
pub mod retrain;
pub mod runner;
pub mod slurm;
pub mod stats;
pub mod status;
pub mod store;
pub mod util;
pub mod verdict;

pub use error::{exit_codes, Error};
pub use executor::{Actuals, Executor};
pub use job::{JobSpec, Outcome, Priority};
pub use model::{Prediction, Predictor};
pub use policy::{Decision, Limits, Policy};
pub use store::Store;
