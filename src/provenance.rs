//! Where each applied limit came from: the prediction, the static defaults (and why), a
//! command-line override, or dry run. Recorded in the `memory_source` / `timeout_source`
//! columns and shown by `run`, `predict`, `stats`, `forecast` and `report`, so that every
//! figure that says "predicted" counts only limits the prediction really set.

use serde::Serialize;

pub use crate::job::LimitSource;
use crate::model::Prediction;
use crate::policy::{self, Policy};

/// The source of both limits of an attempt, with the reason when it is not the prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitSources {
    pub memory: LimitSource,
    pub timeout: LimitSource,
    /// Why a limit did not come from the prediction (`None` when both did).
    pub reason: Option<String>,
}

impl LimitSources {
    /// True when the memory cap was set by the prediction.
    pub fn memory_predicted(&self) -> bool {
        self.memory == LimitSource::Predicted
    }

    /// One phrase for messages: `memory predicted, timeout static (confidence …)`.
    pub fn describe(&self) -> String {
        let mut s = if self.memory == self.timeout {
            format!("both {}", self.memory)
        } else {
            format!("memory {}, timeout {}", self.memory, self.timeout)
        };
        if let Some(r) = &self.reason {
            s += &format!(": {r}");
        }
        s
    }
}

/// Which overrides the command line gave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub memory: bool,
    pub timeout: bool,
}

/// The sources of the limits the policy's decision applies to `pred`, with `overrides` on
/// top. An override wins; then dry run (the static defaults are enforced); then, below the
/// confidence threshold, a limit is `static` when the static default is at least what
/// the prediction alone would set (the default is what binds), else `predicted`.
///
/// This infers the source from the headroom policy ([`policy::limits_for`]); a decision
/// that knows its own sources can build [`LimitSources`] directly instead.
pub fn infer(
    pred: &Prediction,
    policy: &Policy,
    budget_mb: u64,
    dry_run: bool,
    overrides: Overrides,
) -> LimitSources {
    let confident = pred.confidence.is_finite() && pred.confidence >= policy.confidence_threshold;
    // What the prediction alone would set, without the static floor.
    let raw = policy::limits_for(
        pred,
        &Policy {
            confidence_threshold: 0.0,
            ..policy.clone()
        },
        budget_mb,
    );
    let static_limits = policy::static_limits(policy, budget_mb);
    let pick = |overridden: bool, static_binds: bool| {
        if overridden {
            LimitSource::Override
        } else if dry_run {
            LimitSource::DryRun
        } else if !confident && static_binds {
            LimitSource::Static
        } else {
            LimitSource::Predicted
        }
    };
    let memory = pick(
        overrides.memory,
        raw.memory_limit_mb <= static_limits.memory_limit_mb,
    );
    let timeout = pick(overrides.timeout, raw.timeout_s <= static_limits.timeout_s);
    let mut why = Vec::new();
    if memory == LimitSource::Override || timeout == LimitSource::Override {
        why.push("set on the command line".to_string());
    }
    if memory == LimitSource::DryRun || timeout == LimitSource::DryRun {
        why.push(
            "dry run: the static defaults are enforced, the prediction is only recorded".into(),
        );
    }
    if memory == LimitSource::Static || timeout == LimitSource::Static {
        why.push(format!(
            "confidence {:.2} is below the threshold {:.2}: the static defaults apply",
            if pred.confidence.is_finite() {
                pred.confidence
            } else {
                0.0
            },
            policy.confidence_threshold
        ));
    }
    LimitSources {
        memory,
        timeout,
        reason: (!why.is_empty()).then(|| why.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Bounds, Source};

    fn pred(rss: f64, wall: f64, conf: f64) -> Prediction {
        let b = Bounds {
            peak_rss_mb: rss,
            wall_seconds: wall,
            cpu_seconds: wall,
        };
        Prediction {
            cpu_seconds: wall,
            peak_rss_mb: rss,
            wall_seconds: wall,
            confidence: conf,
            upper: b,
            lower: b,
            model_version: "t".into(),
            source: Source::Model,
        }
    }

    #[test]
    fn each_source() {
        let p = Policy::default();
        let none = Overrides::default();
        let s = infer(&pred(100.0, 10.0, 0.9), &p, 100_000, false, none);
        assert_eq!(
            (s.memory, s.timeout),
            (LimitSource::Predicted, LimitSource::Predicted)
        );
        assert_eq!(s.reason, None);
        // Low confidence, small prediction: the static defaults bind.
        let s = infer(&pred(100.0, 10.0, 0.01), &p, 100_000, false, none);
        assert_eq!(
            (s.memory, s.timeout),
            (LimitSource::Static, LimitSource::Static)
        );
        assert!(s.reason.as_deref().unwrap().contains("below the threshold"));
        // Low confidence but a prediction above the default memory: that cap is predicted.
        let s = infer(&pred(12_000.0, 10.0, 0.01), &p, 100_000, false, none);
        assert_eq!(
            (s.memory, s.timeout),
            (LimitSource::Predicted, LimitSource::Static)
        );
        let s = infer(&pred(100.0, 10.0, 0.9), &p, 100_000, true, none);
        assert_eq!(
            (s.memory, s.timeout),
            (LimitSource::DryRun, LimitSource::DryRun)
        );
        // An override wins over dry run, per limit.
        let o = Overrides {
            memory: true,
            timeout: false,
        };
        let s = infer(&pred(100.0, 10.0, 0.9), &p, 100_000, true, o);
        assert_eq!(
            (s.memory, s.timeout),
            (LimitSource::Override, LimitSource::DryRun)
        );
        assert!(s.describe().contains("memory override, timeout dry-run"));
    }
}
