//! What the engine learns a job key from: its settled runs ([`KeyRun`]) in a window
//! ([`KeyHistory`]), and a job's size covariates ([`JobSize`]).

use serde::{Deserialize, Serialize};

use crate::model::allocate::{AllocConfig, Observation, TaskHistory};

/// One settled successful run of a job key, as the engine learns from it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct KeyRun {
    /// Total size of the job's input files (MB); 0 = none.
    pub input_mb: f64,
    /// The job's largest numeric argument; 0 = none.
    pub arg: f64,
    /// Measured peak memory need (MB).
    pub peak_mb: f64,
    /// Wall time (s).
    pub wall_s: f64,
}

/// The job's size covariates, known before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct JobSize {
    pub input_mb: f64,
    pub arg: f64,
}

impl JobSize {
    /// From the recorded size columns (`size_input_mb`, `size_arg_log10`).
    pub fn from_columns(input_mb: Option<f64>, arg_log10: Option<f64>) -> Self {
        JobSize {
            input_mb: input_mb
                .filter(|v| v.is_finite() && *v > 0.0)
                .unwrap_or(0.0),
            arg: arg_log10
                .filter(|v| v.is_finite())
                .map(|l| 10f64.powf(l.clamp(-300.0, 300.0)))
                .unwrap_or(0.0),
        }
    }

    /// From a feature vector's `input_total_mb` and `arg_max_numeric_log10`.
    pub fn from_features(get: impl Fn(&str) -> Option<f64>) -> Self {
        let has_arg = get("arg_numeric_count").is_some_and(|c| c.is_finite() && c > 0.0);
        JobSize::from_columns(
            get("input_total_mb"),
            get("arg_max_numeric_log10").filter(|_| has_arg),
        )
    }
}

/// A job key's recent successful runs: memory and wall-time histories over one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyHistory {
    pub mem: TaskHistory,
    pub wall: TaskHistory,
}

impl KeyHistory {
    /// Rebuild from runs, oldest first (pass the last 2 × window to get exactly the state
    /// of a history that saw every run; see [`TaskHistory::rebuild`]).
    pub fn from_runs(runs: &[KeyRun], cfg: &AllocConfig) -> Self {
        let mut h = KeyHistory::default();
        for r in runs {
            h.observe(r, cfg);
        }
        h
    }

    /// Learn one settled successful run.
    pub fn observe(&mut self, r: &KeyRun, cfg: &AllocConfig) {
        let runtime = if r.wall_s.is_finite() && r.wall_s > 0.0 {
            r.wall_s
        } else {
            1.0
        };
        self.mem.push(
            Observation {
                x: r.input_mb,
                x2: r.arg,
                y: r.peak_mb,
                runtime,
            },
            cfg,
        );
        self.wall.push(
            Observation {
                x: r.input_mb,
                x2: r.arg,
                y: r.wall_s,
                runtime: 1.0,
            },
            cfg,
        );
    }

    /// Successful runs in the window.
    pub fn runs(&self) -> usize {
        self.mem.len().min(self.wall.len())
    }
}
