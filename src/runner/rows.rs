//! The rows of one job: what every attempt row has in common, and the settlements of
//! attempts that never ran.

use crate::executor;
use crate::job::{JobSpec, Outcome};
use crate::policy::{Decision, LimitSource, Limits, Sizing};
use crate::provenance::LimitSources;
use crate::store::{NewPrediction, Settlement};

use super::keys::hostname;
use super::Plan;

/// A row for an attempt that never ran.
pub(crate) fn unrun(outcome: Outcome) -> Settlement {
    Settlement {
        actual_cpu_s: None,
        actual_rss_mb: None,
        actual_wall_s: None,
        rusage_maxrss_mb: None,
        measure_source: "none".into(),
        exit_code: None,
        signal: None,
        outcome,
        memory_enforced: false,
    }
}

/// A row for an attempt that a signal ended before its job started.
pub(crate) fn interrupted(sig: i32) -> Settlement {
    Settlement {
        signal: Some(sig),
        ..unrun(Outcome::Failed)
    }
}

/// What every row of one job has in common; `row` fills in one attempt. Shared by the
/// local and SLURM backends.
pub(crate) struct JobRows {
    pub(super) base: NewPrediction,
}

impl JobRows {
    pub(crate) fn new(
        spec: &JobSpec,
        plan: &Plan,
        job_id: &str,
        backend: &str,
        memory_enforced: bool,
        dry_run: bool,
    ) -> Self {
        let command_json = serde_json::to_string(
            &spec
                .command
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".into());
        let features_json =
            serde_json::to_string(&plan.extracted.vector.to_map()).unwrap_or_else(|_| "{}".into());
        let my_pid = std::process::id();
        let unset = Limits {
            memory_limit_mb: 0,
            timeout_s: 0,
            enforced: false,
        };
        JobRows {
            base: NewPrediction {
                job_id: job_id.to_string(),
                analysis_id: spec.analysis_id.clone(),
                job_key: plan.job_key.clone(),
                runtime: plan.runtime.clone(),
                script_path: plan.script.as_ref().map(|p| p.display().to_string()),
                script_sha256: plan.script_sha256.clone(),
                command_json,
                features_json,
                schema_hash: plan.extracted.vector.schema.hash.clone(),
                prediction: plan.prediction.clone(),
                predicted: unset,
                applied: None,
                memory_source: None,
                timeout_source: None,
                memory_enforced,
                dry_run,
                backend: backend.to_string(),
                priority: spec.priority.as_str().to_string(),
                attempt: 1,
                host: hostname(),
                executor_pid: my_pid,
                executor_start: executor::proc_start_ticks(my_pid),
                rejected: false,
                sizing: match &plan.decision {
                    Decision::Run { sizing, .. } => sizing.clone(),
                    Decision::Reject(r) => Sizing {
                        reason: format!("rejected: {}", r.reason),
                        ..Sizing::default()
                    },
                },
                size: plan.size,
            },
        }
    }

    /// The job's id.
    pub(crate) fn job_id(&self) -> &str {
        &self.base.job_id
    }

    /// Record where the applied limits came from (every later attempt row carries them).
    pub(crate) fn set_sources(&mut self, s: &LimitSources) {
        self.base.memory_source = Some(s.memory);
        self.base.timeout_source = Some(s.timeout);
    }

    /// The row of one attempt (or of a rejection). The `enforced` column is 1 only when the
    /// memory cap in force came from the prediction.
    pub(crate) fn row(
        &self,
        predicted: Limits,
        applied: Option<Limits>,
        sizing: &Sizing,
        attempt: u32,
        rejected: bool,
    ) -> NewPrediction {
        let from_prediction = !rejected && sizing.memory_source == LimitSource::Predicted;
        NewPrediction {
            memory_source: (!rejected).then_some(sizing.memory_source),
            timeout_source: (!rejected).then_some(sizing.timeout_source),
            predicted: Limits {
                enforced: predicted.enforced && from_prediction,
                ..predicted
            },
            applied,
            memory_enforced: applied.is_some() && self.base.memory_enforced,
            attempt,
            rejected,
            sizing: sizing.clone(),
            ..self.base.clone()
        }
    }
}
