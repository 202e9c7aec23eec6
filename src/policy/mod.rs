//! The sizing policy: its knobs ([`Policy`], the `[policy]` config section), the limits
//! and decisions it produces, and the sizing engine ([`engine`]) that makes every decision.
//! The original formula (cap = `mem_headroom` × the point prediction) stays here as
//! [`limits_for`] / [`decide`] / [`escalate`] and is what `limit_mode = "headroom"` runs.
//! Pure functions, no I/O.

pub mod engine;

pub use engine::{Evidence, Evidences, JobSize, KeyHistory, KeyRun, LimitSource, Sizer, Sizing};

use serde::{Deserialize, Serialize};

use crate::model::Prediction;

/// Errors in the policy configuration.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid policy: {0}")]
    Invalid(String),
}

/// How the memory cap is derived from a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LimitMode {
    /// The original formula: cap = `mem_headroom` × predicted peak RSS.
    Headroom,
    /// The calibrated upper bound of the prediction (at the configured coverage).
    Upper,
    /// The sizing engine's cost-aware choice over the job's predictive distribution: the
    /// key's own history first, the cross-job model next, static defaults for what is novel.
    #[default]
    #[serde(rename = "cost-aware")]
    CostAware,
}

impl LimitMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitMode::Headroom => "headroom",
            LimitMode::Upper => "upper",
            LimitMode::CostAware => "cost-aware",
        }
    }

    /// Parse `headroom`, `upper` or `cost-aware`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "headroom" => Some(LimitMode::Headroom),
            "upper" => Some(LimitMode::Upper),
            "cost-aware" | "cost_aware" => Some(LimitMode::CostAware),
            _ => None,
        }
    }
}

/// Knobs of the limits policy; the `[policy]` section of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// cap = mem_headroom × predicted peak RSS (original formula).
    pub mem_headroom: f64,
    /// timeout = max(timeout_floor_s, wall_headroom × predicted wall).
    pub wall_headroom: f64,
    /// No cap below this.
    pub memory_floor_mb: u64,
    /// No timeout below this.
    pub timeout_floor_s: u64,
    /// Static default memory cap: used in dry-run and below the confidence threshold.
    pub default_memory_mb: u64,
    /// Static default timeout.
    pub default_timeout_s: u64,
    /// Below this confidence the static defaults apply (limits never tighter than them).
    pub confidence_threshold: f64,
    /// Attempts in total when a job is OOM-killed.
    pub max_attempts: u32,
    /// Next cap after an OOM kill: at least this × the killed cap.
    pub escalation_factor: f64,
    /// SIGTERM → SIGKILL grace period.
    pub grace_period_s: u64,
    /// 0 = 90 % of physical memory.
    pub host_budget_mb: u64,
    /// Retry a job killed at its timeout (with escalated timeout); off by default.
    pub retry_timeouts: bool,
    /// Reject jobs whose predicted lower bound of wall time exceeds this; 0 = no maximum.
    pub max_wall_s: u64,
    /// Memory cap derivation: `cost-aware` (the sizing engine), `headroom` (original
    /// formula) or `upper` (calibrated bound).
    pub limit_mode: LimitMode,
    /// Successful runs of a job key before its own history sizes it (evidence `history`).
    pub history_min_runs: u32,
    /// Runs of a key the engine looks at (the newest); bounds the work per decision.
    pub history_window: usize,
    /// Multiplier on the cost-aware memory choice (1 = none).
    pub history_margin: f64,
    /// Cost of a failed attempt beyond the memory it held, as a fraction of a typical peak.
    pub failure_cost: f64,
    /// A key's size fit is followed up to this many times its largest size seen.
    pub extrapolate: f64,
    /// Timeout = this × the top of the key's wall-time draws (evidence `history`).
    pub timeout_margin: f64,
    /// A model whose live coverage of the peak falls this far below nominal stops
    /// tightening limits until a retrain.
    pub coverage_drop: f64,
    /// Settled jobs of a model before its live coverage is judged.
    pub coverage_min_jobs: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            mem_headroom: 1.5,
            wall_headroom: 1.3,
            memory_floor_mb: 64,
            timeout_floor_s: 60,
            default_memory_mb: 8192,
            default_timeout_s: 3600,
            confidence_threshold: 0.05,
            max_attempts: 2,
            escalation_factor: 2.0,
            grace_period_s: 10,
            host_budget_mb: 0,
            retry_timeouts: false,
            max_wall_s: 0,
            limit_mode: LimitMode::CostAware,
            history_min_runs: 3,
            history_window: 100,
            history_margin: 1.0,
            failure_cost: 0.1,
            extrapolate: 3.0,
            timeout_margin: 2.0,
            coverage_drop: 0.10,
            coverage_min_jobs: 20,
        }
    }
}

impl Policy {
    /// Check the knobs are usable; the message names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        let pos = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("policy.{name} must be a positive number, got {v}"))
            }
        };
        pos("mem_headroom", self.mem_headroom)?;
        pos("wall_headroom", self.wall_headroom)?;
        pos("escalation_factor", self.escalation_factor)?;
        if self.escalation_factor < 1.0 {
            return Err("policy.escalation_factor must be at least 1.0".into());
        }
        if !(0.0..=1.0).contains(&self.confidence_threshold) {
            return Err("policy.confidence_threshold must be within 0..1".into());
        }
        if self.max_attempts == 0 || self.max_attempts > 10 {
            return Err("policy.max_attempts must be 1..=10".into());
        }
        if self.default_memory_mb == 0 || self.default_timeout_s == 0 {
            return Err("policy.default_memory_mb and default_timeout_s must be > 0".into());
        }
        pos("history_margin", self.history_margin)?;
        pos("extrapolate", self.extrapolate)?;
        pos("timeout_margin", self.timeout_margin)?;
        if !(self.failure_cost.is_finite() && self.failure_cost >= 0.0) {
            return Err("policy.failure_cost must be a non-negative number".into());
        }
        if self.history_min_runs == 0 {
            return Err("policy.history_min_runs must be at least 1".into());
        }
        if self.history_window < self.history_min_runs as usize || self.history_window > 10_000 {
            return Err("policy.history_window must be within history_min_runs..=10000".into());
        }
        if !(0.0..=1.0).contains(&self.coverage_drop) {
            return Err("policy.coverage_drop must be within 0..1".into());
        }
        Ok(())
    }
}

/// Limits applied to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory cap in MiB.
    pub memory_limit_mb: u64,
    /// Timeout in seconds.
    pub timeout_s: u64,
    /// True when these limits come from the prediction and are enforced (false in dry-run).
    pub enforced: bool,
}

/// Why a job was refused before running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub reason: String,
}

/// The policy's verdict for one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Decision {
    /// Run: `predicted` are the limits derived from the evidence, `applied` what is
    /// enforced, `sizing` why.
    Run {
        predicted: Limits,
        applied: Limits,
        sizing: Sizing,
    },
    /// Manifestly impossible.
    Reject(Rejection),
}

/// Largest memory cap (MB) or timeout (s) the policy sets: what the store's integer
/// columns can record (a larger `u64` would be stored as a negative number).
pub const MAX_LIMIT: u64 = i64::MAX as u64;

/// A predicted quantity as a finite, non-negative number: NaN and negatives → 0, +∞ →
/// `f64::MAX` (so limits grow with the prediction all the way, then clamp).
pub(crate) fn finite(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        0.0
    } else {
        v.min(f64::MAX)
    }
}

/// A possibly huge value for a one-line message.
pub(crate) fn shown(v: f64) -> String {
    if v < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3e}")
    }
}

pub(crate) fn to_u64_ceil(v: f64) -> u64 {
    let v = finite(v).ceil();
    if v >= u64::MAX as f64 {
        u64::MAX
    } else {
        v as u64
    }
}

/// The budget as a memory cap: at least 1 MB, at most [`MAX_LIMIT`].
pub(crate) fn memory_cap(budget_mb: u64) -> u64 {
    budget_mb.clamp(1, MAX_LIMIT)
}

/// The static-default limits, clamped to the budget.
pub fn static_limits(policy: &Policy, budget_mb: u64) -> Limits {
    Limits {
        memory_limit_mb: policy.default_memory_mb.clamp(1, memory_cap(budget_mb)),
        timeout_s: policy.default_timeout_s.clamp(1, MAX_LIMIT),
        enforced: false,
    }
}

/// Limits from a prediction by the original formula (`limit_mode` `headroom`, or `upper`:
/// the calibrated upper bound); `cost-aware` is the [`engine`]'s and reads as `headroom` here.
pub fn limits_for(pred: &Prediction, policy: &Policy, budget_mb: u64) -> Limits {
    let rss = match policy.limit_mode {
        LimitMode::Headroom | LimitMode::CostAware => {
            policy.mem_headroom * finite(pred.peak_rss_mb)
        }
        LimitMode::Upper => finite(pred.upper.peak_rss_mb).max(finite(pred.peak_rss_mb)),
    };
    // Never a 0 MB cap, even with a zero floor.
    let mut mem = to_u64_ceil(rss).max(policy.memory_floor_mb).max(1);
    let mut timeout = to_u64_ceil(policy.wall_headroom * finite(pred.wall_seconds))
        .max(policy.timeout_floor_s)
        .max(1);
    let confident = pred.confidence.is_finite() && pred.confidence >= policy.confidence_threshold;
    if !confident {
        mem = mem.max(policy.default_memory_mb);
        timeout = timeout.max(policy.default_timeout_s);
    }
    if policy.max_wall_s > 0 {
        timeout = timeout.min(policy.max_wall_s.max(policy.timeout_floor_s));
    }
    Limits {
        memory_limit_mb: mem.min(memory_cap(budget_mb)),
        timeout_s: timeout.min(MAX_LIMIT),
        enforced: true,
    }
}

/// Decide by the original formula alone (no key history, no applicability check): the
/// engine with no evidence but the prediction, in `headroom`/`upper` mode.
pub fn decide(pred: &Prediction, policy: &Policy, budget_mb: u64, dry_run: bool) -> Decision {
    let lower_rss = finite(pred.lower.peak_rss_mb);
    if lower_rss > budget_mb as f64 {
        return Decision::Reject(Rejection {
            reason: format!(
                "predicted peak RSS is at least {} MB (point {} MB), above the host budget of {budget_mb} MB",
                shown(lower_rss),
                shown(finite(pred.peak_rss_mb))
            ),
        });
    }
    let lower_wall = finite(pred.lower.wall_seconds);
    if policy.max_wall_s > 0 && lower_wall > policy.max_wall_s as f64 {
        return Decision::Reject(Rejection {
            reason: format!(
                "predicted wall time is at least {} s, above the configured maximum of {} s",
                shown(lower_wall),
                policy.max_wall_s
            ),
        });
    }
    let predicted = limits_for(pred, policy, budget_mb);
    let st = static_limits(policy, budget_mb);
    let src = |v: u64, s: u64| {
        if dry_run {
            LimitSource::DryRun
        } else if v == s {
            LimitSource::Static
        } else {
            LimitSource::Predicted
        }
    };
    let sizing = Sizing {
        evidence: if pred.source == crate::model::Source::Model {
            Evidence::Model
        } else {
            Evidence::Novel
        },
        memory_source: src(predicted.memory_limit_mb, st.memory_limit_mb),
        timeout_source: src(predicted.timeout_s, st.timeout_s),
        reason: format!(
            "original formula: {} × predicted peak, {} × predicted wall",
            policy.mem_headroom, policy.wall_headroom
        ),
    };
    if dry_run {
        Decision::Run {
            predicted: Limits {
                enforced: false,
                ..predicted
            },
            applied: st,
            sizing,
        }
    } else {
        Decision::Run {
            predicted,
            applied: predicted,
            sizing,
        }
    }
}

/// The memory cap for the next attempt after an OOM kill at `killed_cap_mb`.
///
/// The killed attempt only shows that the true peak exceeds the cap, so the next cap is at
/// least `escalation_factor` × the killed cap (and × the measured peak), at least the upper
/// bound of the prediction, always above the killed cap, and never above the host budget.
/// Returns `None` exactly when no higher cap fits in the budget.
pub fn escalate(
    killed_cap_mb: u64,
    measured_peak_mb: Option<f64>,
    pred: &Prediction,
    policy: &Policy,
    budget_mb: u64,
) -> Option<u64> {
    let by_factor = killed_cap_mb as f64 * policy.escalation_factor;
    let by_peak = measured_peak_mb.map(finite).unwrap_or(0.0) * policy.escalation_factor;
    let by_upper = finite(pred.upper.peak_rss_mb);
    let next = to_u64_ceil(by_factor.max(by_peak).max(by_upper))
        .max(killed_cap_mb.saturating_add(1))
        .min(budget_mb.min(MAX_LIMIT));
    (next > killed_cap_mb).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Bounds, Source};

    fn pred(rss: f64, wall: f64, conf: f64) -> Prediction {
        Prediction {
            cpu_seconds: wall,
            peak_rss_mb: rss,
            wall_seconds: wall,
            confidence: conf,
            upper: Bounds {
                peak_rss_mb: rss * 2.0,
                wall_seconds: wall * 2.0,
                cpu_seconds: wall * 2.0,
            },
            lower: Bounds {
                peak_rss_mb: rss / 2.0,
                wall_seconds: wall / 2.0,
                cpu_seconds: wall / 2.0,
            },
            model_version: "test".into(),
            source: Source::Model,
        }
    }

    #[test]
    fn original_formula_and_floors() {
        let p = Policy::default();
        let l = limits_for(&pred(200.0, 100.0, 0.9), &p, 10_000);
        assert_eq!(l.memory_limit_mb, 300);
        assert_eq!(l.timeout_s, 130);
        let l = limits_for(&pred(10.0, 1.0, 0.9), &p, 10_000);
        assert_eq!((l.memory_limit_mb, l.timeout_s), (64, 60));
    }

    #[test]
    fn low_confidence_never_tighter_than_defaults_and_budget_clamps() {
        let p = Policy::default();
        let l = limits_for(&pred(200.0, 100.0, 0.01), &p, 100_000);
        assert_eq!((l.memory_limit_mb, l.timeout_s), (8192, 3600));
        let l = limits_for(&pred(200.0, 100.0, 0.01), &p, 1000);
        assert_eq!(l.memory_limit_mb, 1000);
        let l = limits_for(&pred(f64::NAN, f64::INFINITY, f64::NAN), &p, 1000);
        assert_eq!(l.memory_limit_mb, 1000);
        assert!(l.timeout_s >= 60);
    }

    #[test]
    fn reject_and_dry_run() {
        let p = Policy::default();
        assert!(matches!(
            decide(&pred(5000.0, 10.0, 0.9), &p, 1000, false),
            Decision::Reject(_)
        ));
        match decide(&pred(100.0, 10.0, 0.9), &p, 100_000, true) {
            Decision::Run {
                predicted, applied, ..
            } => {
                assert_eq!(predicted.memory_limit_mb, 150);
                assert!(!predicted.enforced && !applied.enforced);
                assert_eq!(applied.memory_limit_mb, 8192);
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn escalation_is_bounded_by_budget() {
        let p = Policy::default();
        let pr = pred(100.0, 10.0, 0.9);
        assert_eq!(escalate(100, Some(100.0), &pr, &p, 10_000), Some(200));
        assert_eq!(escalate(100, Some(100.0), &pr, &p, 150), Some(150));
        assert_eq!(escalate(150, None, &pr, &p, 150), None);
    }

    // Regressions found by the property tests (tests/suite/policy_props.rs).

    #[test]
    fn never_a_zero_cap() {
        let p = Policy {
            memory_floor_mb: 0,
            confidence_threshold: 0.0,
            ..Policy::default()
        };
        let l = limits_for(&pred(0.0, 0.0, 0.0), &p, 1000);
        assert_eq!(l.memory_limit_mb, 1);
    }

    #[test]
    fn overflowing_products_saturate_instead_of_dropping_to_the_floor() {
        let p = Policy::default();
        // 1.5 × 1e308 overflows to +inf: the cap is the budget, not the 64 MB floor.
        let l = limits_for(&pred(1e308, 1e308, 0.9), &p, 10_000);
        assert_eq!(l.memory_limit_mb, 10_000);
        assert_eq!(l.timeout_s, MAX_LIMIT);
        // +inf behaves like the largest finite prediction.
        let mut inf = pred(100.0, 100.0, 0.9);
        inf.peak_rss_mb = f64::INFINITY;
        inf.wall_seconds = f64::INFINITY;
        let l = limits_for(&inf, &p, 10_000);
        assert_eq!((l.memory_limit_mb, l.timeout_s), (10_000, MAX_LIMIT));
        inf.lower.peak_rss_mb = f64::INFINITY;
        match decide(&inf, &p, 10_000, false) {
            Decision::Reject(r) => assert!(r.reason.contains("e308"), "{}", r.reason),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn limits_fit_the_store() {
        let p = Policy {
            default_memory_mb: u64::MAX,
            default_timeout_s: u64::MAX,
            ..Policy::default()
        };
        let l = limits_for(&pred(1.0, 1.0, 0.0), &p, u64::MAX);
        assert_eq!((l.memory_limit_mb, l.timeout_s), (MAX_LIMIT, MAX_LIMIT));
        let s = static_limits(&p, u64::MAX);
        assert_eq!((s.memory_limit_mb, s.timeout_s), (MAX_LIMIT, MAX_LIMIT));
    }

    #[test]
    fn escalation_always_rises_below_the_budget() {
        let pr = pred(10.0, 10.0, 0.9);
        // Factor 1.0 (allowed by validate): still one step up.
        let p = Policy {
            escalation_factor: 1.0,
            ..Policy::default()
        };
        assert_eq!(escalate(100, None, &pr, &p, 1000), Some(101));
        // × the largest factor overflows to +inf: the budget, not "no escalation".
        let p = Policy {
            escalation_factor: f64::MAX,
            ..Policy::default()
        };
        assert_eq!(escalate(0, Some(1708.0), &pr, &p, 1), Some(1));
        // Past 2^53 the f64 product rounds down: still strictly above.
        let big = (1u64 << 53) + 1;
        assert_eq!(
            escalate(
                big,
                None,
                &pr,
                &Policy {
                    escalation_factor: 1.0,
                    ..Policy::default()
                },
                u64::MAX
            ),
            Some(big + 1)
        );
    }
}
