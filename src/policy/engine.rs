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
use crate::model::allocate::{self, AllocConfig, Draw, Observation, TaskHistory};
use crate::model::{Prediction, Source};

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
mod tests {
    use super::*;
    use crate::model::Bounds;

    fn pred(source: Source, rss: f64, wall: f64) -> Prediction {
        Prediction {
            cpu_seconds: wall,
            peak_rss_mb: rss,
            wall_seconds: wall,
            confidence: 0.9,
            upper: Bounds {
                peak_rss_mb: rss * 1.5,
                wall_seconds: wall * 1.5,
                cpu_seconds: wall * 1.5,
            },
            lower: Bounds {
                peak_rss_mb: rss / 2.0,
                wall_seconds: wall / 2.0,
                cpu_seconds: wall / 2.0,
            },
            model_version: "m".into(),
            source,
        }
    }

    fn key(runs: &[(f64, f64, f64)], policy: &Policy) -> KeyHistory {
        let cfg = alloc_config(policy);
        let runs: Vec<KeyRun> = runs
            .iter()
            .map(|&(arg, peak, wall)| KeyRun {
                input_mb: 0.0,
                arg,
                peak_mb: peak,
                wall_s: wall,
            })
            .collect();
        KeyHistory::from_runs(&runs, &cfg)
    }

    fn run(d: &Decision) -> (Limits, Sizing) {
        match d {
            Decision::Run {
                applied, sizing, ..
            } => (*applied, sizing.clone()),
            Decision::Reject(r) => panic!("rejected: {}", r.reason),
        }
    }

    #[test]
    fn each_evidence_level_and_its_limits() {
        let p = Policy::default();
        let s = Sizer::new(&p, 100_000);
        let empty = KeyHistory::default();
        let model = pred(Source::Model, 200.0, 100.0);
        // Inside the model's domain, few runs of the key: model level, cost-aware cap
        // between the point and the upper bound, timeout not below the static default.
        let e = Evidences {
            prediction: &model,
            novelty: &[],
            key: &empty,
            size: JobSize::default(),
            model_fallback: None,
        };
        let (l, sz) = run(&s.first_limits(&e, false));
        assert_eq!(sz.evidence, Evidence::Model, "{}", sz.reason);
        assert!(
            l.memory_limit_mb >= 200 && l.memory_limit_mb <= 300,
            "{l:?}"
        );
        assert_eq!(l.timeout_s, p.default_timeout_s);
        // Each novelty cause, no trained model, low confidence and a fallen model: novel,
        // never tighter than the static defaults, and the reason says why.
        let novel = ["heavy library scanpy".to_string()];
        let prior = pred(Source::Prior, 20.0, 1.0);
        let mut low = model.clone();
        low.confidence = 0.0;
        let cases: Vec<(Evidences<'_>, &str)> = vec![
            (
                Evidences {
                    novelty: &novel,
                    ..e
                },
                "scanpy",
            ),
            (
                Evidences {
                    prediction: &prior,
                    ..e
                },
                "no trained model",
            ),
            (
                Evidences {
                    prediction: &low,
                    ..e
                },
                "confidence",
            ),
            (
                Evidences {
                    model_fallback: Some("live coverage fell"),
                    ..e
                },
                "live coverage",
            ),
        ];
        for (c, why) in cases {
            let (l, sz) = run(&s.first_limits(&c, false));
            assert_eq!(sz.evidence, Evidence::Novel);
            assert!(sz.reason.contains(why), "{}", sz.reason);
            assert!(l.memory_limit_mb >= p.default_memory_mb, "{l:?}");
            assert!(l.timeout_s >= p.default_timeout_s, "{l:?}");
        }
        // A key with steady runs: history level below the static defaults, above the peaks.
        let steady = key(
            &[(0.0, 500.0, 30.0), (0.0, 505.0, 31.0), (0.0, 498.0, 29.0)],
            &p,
        );
        let h = Evidences {
            key: &steady,
            novelty: &novel,
            ..e
        };
        let (l, sz) = run(&s.first_limits(&h, false));
        assert_eq!(sz.evidence, Evidence::History, "{}", sz.reason);
        assert_eq!(sz.memory_source, LimitSource::Predicted);
        assert!(l.memory_limit_mb >= 505 && l.memory_limit_mb < 600, "{l:?}");
        assert!(
            l.timeout_s >= 62 && l.timeout_s < p.default_timeout_s,
            "{l:?}"
        );
        // Dry run: the static defaults apply, the sources say so.
        let (l, sz) = run(&s.first_limits(&h, true));
        assert_eq!(l.memory_limit_mb, p.default_memory_mb);
        assert_eq!(sz.memory_source, LimitSource::DryRun);
    }

    #[test]
    fn size_fit_follows_a_job_larger_than_seen_and_stops_far_beyond() {
        let p = Policy::default();
        let s = Sizer::new(&p, 100_000);
        // Peak = 1.0 × argument + 10, argument 20..300.
        let runs: Vec<(f64, f64, f64)> = (0..30)
            .map(|i| {
                let a = 20.0 + (i * 7919 % 281) as f64;
                (a, a + 10.0, 1.0)
            })
            .collect();
        let k = key(&runs, &p);
        let prior = pred(Source::Prior, 20.0, 1.0);
        let at = |arg: f64| {
            let e = Evidences {
                prediction: &prior,
                novelty: &[],
                key: &k,
                size: JobSize { input_mb: 0.0, arg },
                model_fallback: None,
            };
            run(&s.first_limits(&e, false))
        };
        let (l, sz) = at(390.0);
        assert_eq!(sz.evidence, Evidence::History, "{}", sz.reason);
        assert!(
            l.memory_limit_mb >= 400 && l.memory_limit_mb < 480,
            "{l:?} {}",
            sz.reason
        );
        let (l, sz) = at(150.0);
        assert!(
            l.memory_limit_mb >= 160 && l.memory_limit_mb < 200,
            "{l:?} {}",
            sz.reason
        );
        // Far beyond what the key has run with: not the key's history any more.
        let (l, sz) = at(5_000.0);
        assert_eq!(sz.evidence, Evidence::Novel, "{}", sz.reason);
        assert!(l.memory_limit_mb >= p.default_memory_mb);
    }

    #[test]
    fn live_coverage_fallback_needs_enough_jobs_and_a_real_drop() {
        let p = Policy::default();
        // 73 % over 30 jobs at nominal 95 %: stops tightening, and says why.
        let f = coverage_fallback("m1", 30, 22, 0.95, &p).expect("fallback");
        assert!(f.contains("73 %") && f.contains("m1"), "{f}");
        // Too few jobs to judge, or within 10 points of nominal: keeps tightening.
        assert_eq!(coverage_fallback("m1", 19, 0, 0.95, &p), None);
        assert_eq!(coverage_fallback("m1", 100, 86, 0.95, &p), None);
        assert!(coverage_fallback("m1", 100, 85, 0.95, &p).is_some());
    }

    #[test]
    fn one_retry_rule() {
        let p = Policy::default();
        let s = Sizer::new(&p, 10_000);
        let k = key(
            &[(0.0, 500.0, 30.0), (0.0, 520.0, 31.0), (0.0, 900.0, 29.0)],
            &p,
        );
        let prior = pred(Source::Prior, 20.0, 1.0);
        let e = Evidences {
            prediction: &prior,
            novelty: &[],
            key: &k,
            size: JobSize::default(),
            model_fallback: None,
        };
        let (l, sz) = run(&s.first_limits(&e, false));
        // OOM: next cap above the killed one, at the top of the draws, within the budget.
        let next = s
            .retry_limits(&e, l, &sz, Outcome::OomKilled, 1)
            .expect("retry");
        assert!(next.memory_limit_mb > l.memory_limit_mb && next.memory_limit_mb >= 900);
        assert!(next.memory_limit_mb <= 10_000);
        let at_budget = Limits {
            memory_limit_mb: 10_000,
            ..l
        };
        assert_eq!(
            s.retry_limits(&e, at_budget, &sz, Outcome::OomKilled, 2),
            None
        );
        // A timeout the engine set below the static default: retried at the default.
        let t = s
            .retry_limits(&e, l, &sz, Outcome::TimedOut, 1)
            .expect("timeout retry");
        assert_eq!(t.timeout_s, p.default_timeout_s);
        // A static timeout is not retried (retry_timeouts off), a failure never.
        let st = Sizing {
            timeout_source: LimitSource::Static,
            ..sz.clone()
        };
        assert_eq!(s.retry_limits(&e, l, &st, Outcome::TimedOut, 1), None);
        assert_eq!(s.retry_limits(&e, l, &sz, Outcome::Failed, 1), None);
        // Hostile numbers never overflow.
        let huge = Limits {
            memory_limit_mb: u64::MAX,
            timeout_s: u64::MAX,
            enforced: true,
        };
        assert_eq!(s.retry_limits(&e, huge, &sz, Outcome::OomKilled, 1), None);
        let p2 = Policy {
            retry_timeouts: true,
            ..Policy::default()
        };
        let s2 = Sizer::new(&p2, 10_000);
        assert_eq!(s2.retry_limits(&e, huge, &st, Outcome::TimedOut, 1), None);
    }
}
