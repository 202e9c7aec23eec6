//! The sizing engine: one place that turns the evidence about a job into its limits and
//! its retry rule. `presize run` (local and SLURM) and `presize replay` (Nextflow traces
//! and `--store`) all call it, so a replay number is a statement about what `run` does.
//!
//! Evidence, strongest first, decided per job and recorded with the row:
//!
//! - **history**: the job key has at least `history_min_runs` settled successful runs in its
//!   window and this job's size is within `extrapolate` × the largest size that window has
//!   seen → the cost-aware allocation of [`crate::model::allocate`] over the key's own runs
//!   (competing size fits on the input size and the numeric arguments, a tail beyond the
//!   largest peak) for the memory cap, and the top of the same kind of draws of wall time
//!   × `timeout_margin` for the timeout. This tightens limits from the third run on,
//!   without a retrain.
//! - **model**: too few runs of the key, but the trained model has seen jobs like this one
//!   ([`crate::model::Predictor::novelty`] is empty) and its live coverage holds → the cost-aware
//!   choice over the model's predictive distribution (point × the calibrated log
//!   residual spread), not a fixed multiple of the point.
//! - **novel**: anything else (no trained model, a runtime, heavy library, script or input
//!   range the model has not seen, confidence below the threshold, a model whose live
//!   coverage fell) → never tighter than the static defaults and the upper bounds of the
//!   prediction.
//!
//! A timeout below the static default needs the key's own wall-time history (evidence
//! `history`); a key that never ran never gets the timeout floor.
//!
//! Everything here is pure and deterministic: no I/O, no clock.

use serde::{Deserialize, Serialize};

use super::{finite, memory_cap, shown, to_u64_ceil, Decision, LimitMode, Limits, Policy};
use super::{Rejection, MAX_LIMIT};
use crate::job::Outcome;
use crate::model::allocate::{self, AllocConfig, Draw};
use crate::model::{Prediction, Source};

mod history;

pub use history::{JobSize, KeyHistory, KeyRun};

/// How much the engine knew about a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Evidence {
    /// The job key's own settled runs.
    History,
    /// The trained cross-job model, inside what it has seen.
    Model,
    /// Nothing trustworthy: the prior, static defaults and upper bounds.
    #[default]
    Novel,
}

impl Evidence {
    /// Parse a recorded level (`history`, `model`, `novel`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "history" => Some(Evidence::History),
            "model" => Some(Evidence::Model),
            "novel" => Some(Evidence::Novel),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::History => "history",
            Evidence::Model => "model",
            Evidence::Novel => "novel",
        }
    }
}

pub use crate::job::LimitSource;

impl Default for LimitSource {
    /// What a limit is until the engine says otherwise: the static default.
    fn default() -> Self {
        LimitSource::Static
    }
}

/// Why the limits are what they are; recorded with every row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Sizing {
    pub evidence: Evidence,
    pub memory_source: LimitSource,
    pub timeout_source: LimitSource,
    /// One line: which evidence, model and rule gave each limit.
    pub reason: String,
}

/// What the engine is told about one job.
#[derive(Debug, Clone, Copy)]
pub struct Evidences<'a> {
    /// The cross-job prediction (trained model or prior).
    pub prediction: &'a Prediction,
    /// Why the trained model has not seen this job; empty = inside its domain.
    pub novelty: &'a [String],
    /// The job key's own recent runs.
    pub key: &'a KeyHistory,
    /// The job's size.
    pub size: JobSize,
    /// Set when the model in force stopped tightening (live coverage fell): the reason.
    pub model_fallback: Option<&'a str>,
}

/// The sizing engine over a policy and a host budget.
#[derive(Debug, Clone)]
pub struct Sizer<'a> {
    pub policy: &'a Policy,
    pub budget_mb: u64,
    pub alloc: AllocConfig,
}

/// The allocation model's configuration under a policy (MB and seconds as units).
pub fn alloc_config(policy: &Policy) -> AllocConfig {
    AllocConfig {
        window: policy.history_window.max(1),
        margin: policy.history_margin,
        failure_cost: policy.failure_cost,
        extrapolate: policy.extrapolate,
        // The engine never asks the allocator for a cold start: novel jobs get the static
        // defaults before it is consulted.
        cold_start_bytes: policy.default_memory_mb as f64,
        ..AllocConfig::default()
    }
}

/// `Some(reason)` when a model's live coverage of the peak (`covered` of `jobs` settled jobs)
/// has fallen `coverage_drop` or more below `nominal` over at least `coverage_min_jobs`:
/// the model then stops tightening limits (evidence `novel`) until a retrain replaces it.
pub fn coverage_fallback(
    version: &str,
    jobs: u32,
    covered: u32,
    nominal: f64,
    policy: &Policy,
) -> Option<String> {
    if jobs < policy.coverage_min_jobs.max(1) {
        return None;
    }
    let live = covered as f64 / jobs as f64;
    (live <= nominal - policy.coverage_drop).then(|| {
        format!(
            "model {version} live coverage {:.0} % over {jobs} jobs is {:.0}+ points below nominal {:.0} %; not tightening until a retrain",
            100.0 * live,
            100.0 * policy.coverage_drop,
            100.0 * nominal
        )
    })
}

/// Quantiles of the standard normal used to turn a calibrated bound into draws.
const NORMAL_Q: [f64; 11] = [
    -1.645, -1.282, -0.842, -0.524, -0.253, 0.0, 0.253, 0.524, 0.842, 1.282, 1.645,
];
/// The standard normal quantile of the bounds' nominal 95 % coverage.
const Z95: f64 = 1.645;

impl<'a> Sizer<'a> {
    pub fn new(policy: &'a Policy, budget_mb: u64) -> Self {
        Sizer {
            policy,
            budget_mb,
            alloc: alloc_config(policy),
        }
    }

    /// The evidence level this job gets, with the reason it is not higher.
    pub fn evidence(&self, ev: &Evidences<'_>) -> (Evidence, String) {
        let p = self.policy;
        let runs = ev.key.runs();
        let min_runs = p.history_min_runs.max(1) as usize;
        let mut why = Vec::new();
        if runs >= min_runs {
            match self.beyond_key_range(ev) {
                None => {
                    return (
                        Evidence::History,
                        format!("{runs} successful runs of this job key"),
                    )
                }
                Some(w) => why.push(w),
            }
        } else {
            why.push(format!(
                "{runs} of {min_runs} successful runs of this job key"
            ));
        }
        if ev.prediction.source != Source::Model {
            why.push("no trained model".into());
        } else if let Some(f) = ev.model_fallback {
            why.push(f.to_string());
        } else if !ev.novelty.is_empty() {
            why.push(format!("novel to the model: {}", ev.novelty.join(", ")));
        } else if ev.prediction.confidence.is_nan()
            || ev.prediction.confidence < p.confidence_threshold
        {
            why.push(format!(
                "model confidence {:.2} below {:.2}",
                ev.prediction.confidence, p.confidence_threshold
            ));
        } else {
            return (Evidence::Model, why.join("; "));
        }
        (Evidence::Novel, why.join("; "))
    }

    /// `Some(reason)` when the job is larger than the key's runs allow extrapolating to.
    fn beyond_key_range(&self, ev: &Evidences<'_>) -> Option<String> {
        let e = self.alloc.extrapolate.max(1.0);
        for (name, h) in [("memory", &ev.key.mem), ("wall time", &ev.key.wall)] {
            let Some((kind, (_, hi))) = h.covariate_range(&self.alloc) else {
                continue;
            };
            let x = match kind {
                allocate::Covariate::Input => ev.size.input_mb,
                allocate::Covariate::Arg => ev.size.arg,
            };
            if x > hi * e {
                return Some(format!(
                    "{} {} is beyond {e} × the largest this key has run with ({}), which its {name} fit follows",
                    kind.as_str(),
                    shown(x),
                    shown(hi)
                ));
            }
        }
        None
    }

    /// Draws of the job's peak memory (MB) under the evidence level.
    fn memory_draws(&self, level: Evidence, ev: &Evidences<'_>) -> Vec<Draw> {
        match level {
            Evidence::History => ev.key.mem.draws(ev.size.input_mb, ev.size.arg, &self.alloc),
            Evidence::Model => model_draws(
                finite(ev.prediction.peak_rss_mb),
                finite(ev.prediction.upper.peak_rss_mb),
            ),
            Evidence::Novel => vec![Draw {
                value: self.novel_memory(ev) as f64,
                weight: 1.0,
            }],
        }
    }

    fn novel_memory(&self, ev: &Evidences<'_>) -> u64 {
        let p = self.policy;
        to_u64_ceil(finite(ev.prediction.upper.peak_rss_mb))
            .max(p.default_memory_mb)
            .max(p.memory_floor_mb)
            .max(1)
    }

    fn clamp_memory(&self, mb: u64) -> u64 {
        mb.max(self.policy.memory_floor_mb)
            .max(1)
            .min(memory_cap(self.budget_mb))
    }

    fn clamp_timeout(&self, s: u64) -> u64 {
        let p = self.policy;
        let mut t = s.max(p.timeout_floor_s).max(1);
        if p.max_wall_s > 0 {
            t = t.min(p.max_wall_s.max(p.timeout_floor_s));
        }
        t.min(MAX_LIMIT)
    }

    /// The limits for the first attempt (or a rejection), with why.
    pub fn first_limits(&self, ev: &Evidences<'_>, dry_run: bool) -> Decision {
        let p = self.policy;
        if let Some(r) = self.rejection(ev) {
            return Decision::Reject(r);
        }
        let (evidence, why) = self.evidence(ev);
        let (predicted, mut sizing) = match p.limit_mode {
            LimitMode::CostAware => self.cost_aware(evidence, why, ev),
            LimitMode::Headroom | LimitMode::Upper => {
                let l = super::limits_for(ev.prediction, p, self.budget_mb);
                let st = super::static_limits(p, self.budget_mb);
                let src = |v: u64, s: u64| {
                    if v == s {
                        LimitSource::Static
                    } else {
                        LimitSource::Predicted
                    }
                };
                let sizing = Sizing {
                    evidence,
                    memory_source: src(l.memory_limit_mb, st.memory_limit_mb),
                    timeout_source: src(l.timeout_s, st.timeout_s),
                    reason: format!(
                        "limit_mode {}: {} × predicted peak, {} × predicted wall ({why})",
                        p.limit_mode.as_str(),
                        p.mem_headroom,
                        p.wall_headroom
                    ),
                };
                (l, sizing)
            }
        };
        if dry_run {
            sizing.memory_source = LimitSource::DryRun;
            sizing.timeout_source = LimitSource::DryRun;
            Decision::Run {
                predicted: Limits {
                    enforced: false,
                    ..predicted
                },
                applied: super::static_limits(p, self.budget_mb),
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

    fn rejection(&self, ev: &Evidences<'_>) -> Option<Rejection> {
        let pred = ev.prediction;
        let p = self.policy;
        let lower_rss = finite(pred.lower.peak_rss_mb);
        // The key's own runs outweigh the cross-job lower bound: a key that has run within
        // the budget is never rejected for it.
        let key_fits = ev
            .key
            .mem
            .observations()
            .any(|o| o.y <= self.budget_mb as f64);
        if lower_rss > self.budget_mb as f64 && !key_fits {
            return Some(Rejection {
                reason: format!(
                    "predicted peak RSS is at least {} MB (point {} MB), above the host budget of {} MB",
                    shown(lower_rss),
                    shown(finite(pred.peak_rss_mb)),
                    self.budget_mb
                ),
            });
        }
        let lower_wall = finite(pred.lower.wall_seconds);
        if p.max_wall_s > 0 && lower_wall > p.max_wall_s as f64 && ev.key.runs() == 0 {
            return Some(Rejection {
                reason: format!(
                    "predicted wall time is at least {} s, above the configured maximum of {} s",
                    shown(lower_wall),
                    p.max_wall_s
                ),
            });
        }
        None
    }

    fn cost_aware(&self, evidence: Evidence, why: String, ev: &Evidences<'_>) -> (Limits, Sizing) {
        let p = self.policy;
        let (memory_limit_mb, memory_source, mem_why) = match evidence {
            Evidence::History | Evidence::Model => {
                let draws = self.memory_draws(evidence, ev);
                match allocate::cost_aware_choice(&draws, &self.alloc) {
                    Some(a) => {
                        let a = a * self.alloc.margin.max(0.0);
                        let mb = self.clamp_memory(to_u64_ceil(a));
                        let model = if evidence == Evidence::History {
                            ev.key.mem.chosen_model(&self.alloc).describe()
                        } else {
                            "the model's calibrated spread"
                        };
                        (
                            mb,
                            LimitSource::Predicted,
                            format!(
                                "memory: cost-aware over {} draws ({model}) → {mb} MB",
                                draws.len()
                            ),
                        )
                    }
                    None => (
                        self.clamp_memory(self.novel_memory(ev)),
                        LimitSource::Static,
                        "memory: no usable draws → static default".into(),
                    ),
                }
            }
            Evidence::Novel => {
                let mb = self.clamp_memory(self.novel_memory(ev));
                let src =
                    if to_u64_ceil(finite(ev.prediction.upper.peak_rss_mb)) > p.default_memory_mb {
                        LimitSource::Predicted
                    } else {
                        LimitSource::Static
                    };
                (
                    mb,
                    src,
                    format!(
                        "memory: the wider of the static default and the upper bound → {mb} MB"
                    ),
                )
            }
        };
        let (timeout_s, timeout_source, t_why) = self.timeout(evidence, ev);
        let reason = if why.is_empty() {
            format!("{}: {mem_why}; {t_why}", evidence.as_str())
        } else {
            format!("{} ({why}): {mem_why}; {t_why}", evidence.as_str())
        };
        (
            Limits {
                memory_limit_mb,
                timeout_s,
                enforced: true,
            },
            Sizing {
                evidence,
                memory_source,
                timeout_source,
                reason,
            },
        )
    }

    /// The timeout: below the static default only on the key's own wall-time history.
    fn timeout(&self, evidence: Evidence, ev: &Evidences<'_>) -> (u64, LimitSource, String) {
        let p = self.policy;
        let by_model = to_u64_ceil(p.wall_headroom * finite(ev.prediction.upper.wall_seconds));
        if evidence == Evidence::History {
            let draws = ev
                .key
                .wall
                .draws(ev.size.input_mb, ev.size.arg, &self.alloc);
            let top = draws.iter().map(|d| d.value).fold(0.0, f64::max);
            if top > 0.0 {
                let t = self.clamp_timeout(to_u64_ceil(p.timeout_margin * top));
                return (
                    t,
                    LimitSource::Predicted,
                    format!(
                        "timeout: {} × the top wall-time draw {} s → {t} s",
                        p.timeout_margin,
                        shown(top)
                    ),
                );
            }
        }
        let base = p.default_timeout_s.max(1);
        if evidence == Evidence::Model && by_model > base {
            let t = self.clamp_timeout(by_model);
            return (
                t,
                LimitSource::Predicted,
                format!(
                    "timeout: {} × the upper wall bound → {t} s",
                    p.wall_headroom
                ),
            );
        }
        let t = self.clamp_timeout(base);
        (
            t,
            LimitSource::Static,
            format!("timeout: static default {t} s (no wall-time history of this key)"),
        )
    }

    /// The limits of the next attempt after one killed with `cause` under `killed`, or
    /// `None` when it is not retried. The caller checks `max_attempts`.
    ///
    /// - OOM kill: all that is known is peak > cap, so the next cap is the top of the
    ///   evidence's draws if that is at least `retry_min_step` × the killed cap, else
    ///   geometric growth ([`allocate::retry_over_draws`]), never above the budget.
    /// - Timeout kill: when the engine set that timeout below the static default, its own
    ///   evidence was wrong and the job gets the static default (at least twice the killed
    ///   timeout); otherwise only with `retry_timeouts` (× `escalation_factor`).
    pub fn retry_limits(
        &self,
        ev: &Evidences<'_>,
        killed: Limits,
        sizing: &Sizing,
        cause: Outcome,
        attempt: u32,
    ) -> Option<Limits> {
        let p = self.policy;
        match cause {
            Outcome::OomKilled => {
                let mut draws = self.memory_draws(sizing.evidence, ev);
                if p.limit_mode != LimitMode::CostAware {
                    // The original rule's escalation: the upper bound and the factor.
                    draws.push(Draw {
                        value: finite(ev.prediction.upper.peak_rss_mb),
                        weight: 1.0,
                    });
                }
                let failed = killed.memory_limit_mb.max(1) as f64;
                let mut cfg = self.alloc.clone();
                cfg.retry_beyond_step = cfg.retry_beyond_step.max(p.escalation_factor);
                let next = allocate::retry_over_draws(&draws, failed, attempt, &cfg);
                let next = to_u64_ceil(next)
                    .max(killed.memory_limit_mb.saturating_add(1))
                    .min(memory_cap(self.budget_mb));
                (next > killed.memory_limit_mb).then_some(Limits {
                    memory_limit_mb: next,
                    ..killed
                })
            }
            Outcome::TimedOut => {
                let ours = sizing.timeout_source == LimitSource::Predicted
                    && killed.timeout_s < p.default_timeout_s;
                let next = if ours {
                    p.default_timeout_s.max(killed.timeout_s.saturating_mul(2))
                } else if p.retry_timeouts {
                    to_u64_ceil(killed.timeout_s as f64 * p.escalation_factor)
                } else {
                    return None;
                };
                let next = next.min(MAX_LIMIT);
                (next > killed.timeout_s).then_some(Limits {
                    timeout_s: next,
                    ..killed
                })
            }
            _ => None,
        }
    }
}

/// Draws from a point prediction and its calibrated 95 % upper bound: the log residual
/// spread σ = ln(upper / point) / 1.645, at eleven normal quantiles.
fn model_draws(point: f64, upper: f64) -> Vec<Draw> {
    if point.is_nan() || point <= 0.0 {
        return Vec::new();
    }
    let sigma = if upper > point {
        (upper / point).ln() / Z95
    } else {
        0.0
    };
    NORMAL_Q
        .iter()
        .map(|z| Draw {
            value: point * (z * sigma).exp(),
            weight: 1.0,
        })
        .filter(|d| d.value.is_finite() && d.value > 0.0)
        .collect()
}

#[cfg(test)]
mod tests;
