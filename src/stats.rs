//! Accuracy and impact metrics shared by `retrain`, `stats` and `report`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::job::LimitSource;
use crate::store::JobRecord;

pub use crate::model::conformal::{mape, median_ape, r2};

/// Accuracy for one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetAccuracy {
    pub target: &'static str,
    pub n: usize,
    pub r2: Option<f64>,
    pub mape: Option<f64>,
    pub median_ape: Option<f64>,
    /// Share of jobs whose actual stayed at or below the predicted upper bound; compare
    /// with `nominal_coverage`.
    pub calibration: Option<f64>,
    pub nominal_coverage: f64,
}

/// Settings the impact figures depend on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsOptions {
    /// The static default memory cap (MiB) presize is compared against.
    pub static_memory_mb: u64,
    /// Nominal coverage of the upper bounds.
    pub coverage: f64,
}

impl StatsOptions {
    /// The options in force: the policy's static default cap and the model's coverage
    /// (`[model] coverage`).
    pub fn from_policy(policy: &crate::policy::Policy, coverage: f64) -> Self {
        Self {
            static_memory_mb: policy.default_memory_mb,
            coverage,
        }
    }
}

impl Default for StatsOptions {
    fn default() -> Self {
        Self {
            static_memory_mb: 8192,
            coverage: 0.95,
        }
    }
}

/// What enforcement did, in memory and failures. GB·h here: GiB (1024 MiB) × hours.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Impact {
    pub oom_kills: usize,
    pub timeouts: usize,
    pub rejections: usize,
    pub lost: usize,
    /// Attempts whose `--queue-timeout` expired before they could start.
    pub queue_timeouts: usize,
    /// OOM kills of attempts whose memory cap came from the prediction.
    pub oom_kills_under_predicted: usize,
    /// Timeouts of attempts whose timeout came from the prediction.
    pub timeouts_under_predicted: usize,
    /// Attempts run under a memory cap from the prediction (not static defaults, an
    /// override or dry run); the slack figures below are over these.
    pub predicted_cap_attempts: usize,
    /// Attempts per source of their memory cap (`predicted`, `static`, `override`,
    /// `dry-run`).
    pub memory_sources: BTreeMap<String, usize>,
    /// Attempts per source of their timeout.
    pub timeout_sources: BTreeMap<String, usize>,
    /// Σ (cap − peak) × wall over predicted-cap attempts; an OOM-killed attempt counts its
    /// whole cap × wall (the memory was held for nothing).
    pub slack_gbh: f64,
    /// Σ (static default − peak) × wall over the same attempts that completed.
    pub static_slack_gbh: f64,
    /// `static_slack_gbh − slack_gbh`.
    pub saved_gbh: f64,
    pub dry_run: DryRunImpact,
}

/// Counterfactual for dry-run jobs: what the predicted limits would have done.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct DryRunImpact {
    pub jobs: usize,
    /// Jobs whose actual peak exceeded the predicted memory limit.
    pub would_oom: usize,
    /// Jobs whose actual wall time exceeded the predicted timeout.
    pub would_timeout: usize,
    /// Σ (static cap applied − predicted cap) × wall over dry-run jobs that would have fit.
    pub saved_gbh: f64,
}

/// Metrics over a set of attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Distinct jobs (a job OOM-killed and retried once counts once).
    pub jobs: usize,
    /// Attempts (rows); `outcomes` counts these.
    pub attempts: usize,
    pub outcomes: BTreeMap<String, usize>,
    pub targets: Vec<TargetAccuracy>,
    /// Share of measured jobs whose actual peak stayed within the predicted memory limit.
    pub cap_coverage: Option<f64>,
    pub impact: Impact,
}

/// A summary per group (model version, runtime, job key).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub key: String,
    #[serde(flatten)]
    pub summary: Summary,
}

/// The `stats` report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsReport {
    pub window: usize,
    #[serde(flatten)]
    pub overall: Summary,
    pub by_model_version: Vec<Group>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Group>,
}

/// Grouping for `stats --by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum GroupBy {
    Runtime,
    JobKey,
    /// Where the job ran: `cgroup-v1`, `cgroup-v2`, `none` (local) or `slurm`.
    Backend,
}

type Triple = (Option<f64>, Option<f64>, Option<f64>);

fn accuracy(
    rows: &[&JobRecord],
    target: &'static str,
    coverage: f64,
    f: impl Fn(&JobRecord) -> Triple,
) -> TargetAccuracy {
    let (mut a, mut p, mut under, mut with_upper) = (Vec::new(), Vec::new(), 0usize, 0usize);
    for r in rows {
        if r.outcome.as_deref() != Some("ok") {
            continue;
        }
        let (x, y, up) = f(r);
        if let (Some(x), Some(y)) = (x, y) {
            if x.is_finite() && y.is_finite() {
                a.push(x);
                p.push(y);
                if let Some(u) = up.filter(|u| u.is_finite()) {
                    with_upper += 1;
                    if x <= u {
                        under += 1;
                    }
                }
            }
        }
    }
    TargetAccuracy {
        target,
        n: a.len(),
        r2: r2(&a, &p),
        mape: mape(&a, &p),
        median_ape: median_ape(&a, &p),
        calibration: (with_upper > 0).then(|| under as f64 / with_upper as f64),
        nominal_coverage: coverage,
    }
}

const MIB_PER_GIB: f64 = 1024.0;

/// Fewest attempts with an upper bound before a coverage shortfall is reported.
pub const COVERAGE_MIN_N: usize = 10;

/// When the live share of actuals at or below the upper bound is clearly below nominal:
/// more than two binomial standard errors (√(p(1−p)/n)) under it, over at least
/// [`COVERAGE_MIN_N`] attempts. Returns the shortfall message, or `None`.
pub fn coverage_warning(t: &TargetAccuracy) -> Option<String> {
    let live = t.calibration?;
    if t.n < COVERAGE_MIN_N {
        return None;
    }
    let p = t.nominal_coverage.clamp(0.0, 1.0);
    let se = (p * (1.0 - p) / t.n as f64).sqrt();
    (live < p - 2.0 * se).then(|| {
        format!(
            "live coverage of {} is {:.1} % over {} attempts, below the nominal {:.0} %: the upper bounds (and caps built on them) are too tight; retrain or widen the coverage",
            t.target,
            live * 100.0,
            t.n,
            p * 100.0
        )
    })
}

/// Where an attempt's memory cap came from; rows recorded without a source (rejected ones)
/// fall back to the old `enforced` / `dry_run` flags.
pub fn memory_source(r: &JobRecord) -> Option<LimitSource> {
    r.memory_source.or_else(|| fallback_source(r))
}

/// Where an attempt's timeout came from (see [`memory_source`]).
pub fn timeout_source(r: &JobRecord) -> Option<LimitSource> {
    r.timeout_source.or_else(|| fallback_source(r))
}

fn fallback_source(r: &JobRecord) -> Option<LimitSource> {
    r.applied_memory_mb?;
    Some(if r.dry_run {
        LimitSource::DryRun
    } else if r.enforced {
        LimitSource::Predicted
    } else {
        LimitSource::Static
    })
}

/// True for an OOM kill under a predicted memory cap or a timeout under a predicted
/// timeout: the failures the prediction is answerable for.
pub fn failed_under_predicted(r: &JobRecord) -> bool {
    match r.outcome.as_deref() {
        Some("oom_killed") => memory_source(r) == Some(LimitSource::Predicted),
        Some("timed_out") => timeout_source(r) == Some(LimitSource::Predicted),
        _ => false,
    }
}

fn impact(rows: &[&JobRecord], opts: &StatsOptions) -> Impact {
    let mut im = Impact::default();
    for r in rows {
        let outcome = r.outcome.as_deref().unwrap_or("");
        match outcome {
            "oom_killed" => im.oom_kills += 1,
            "timed_out" => im.timeouts += 1,
            "rejected" => im.rejections += 1,
            "lost" => im.lost += 1,
            "queue_timeout" => im.queue_timeouts += 1,
            _ => {}
        }
        if failed_under_predicted(r) {
            if outcome == "oom_killed" {
                im.oom_kills_under_predicted += 1;
            } else {
                im.timeouts_under_predicted += 1;
            }
        }
        if let Some(s) = memory_source(r) {
            *im.memory_sources.entry(s.as_str().into()).or_insert(0) += 1;
        }
        if let Some(s) = timeout_source(r) {
            *im.timeout_sources.entry(s.as_str().into()).or_insert(0) += 1;
        }
        let hours = r
            .actual_wall_s
            .filter(|w| w.is_finite() && *w >= 0.0)
            .map(|w| w / 3600.0);
        let peak = r.actual_rss_mb.filter(|p| p.is_finite() && *p >= 0.0);
        if r.dry_run {
            let (Some(h), Some(peak), Some(pred_cap)) = (hours, peak, r.memory_limit_mb) else {
                continue;
            };
            if !matches!(outcome, "ok" | "failed") {
                continue;
            }
            im.dry_run.jobs += 1;
            let would_oom = peak > pred_cap as f64;
            if would_oom {
                im.dry_run.would_oom += 1;
            }
            if let Some(t) = r.timeout_s {
                if h * 3600.0 > t as f64 {
                    im.dry_run.would_timeout += 1;
                }
            }
            if !would_oom {
                let applied = r.applied_memory_mb.unwrap_or(opts.static_memory_mb as i64);
                im.dry_run.saved_gbh += (applied - pred_cap) as f64 / MIB_PER_GIB * h;
            }
            continue;
        }
        if let Some(s) = attempt_slack(r, opts) {
            im.predicted_cap_attempts += 1;
            im.slack_gbh += s.slack_gbh;
            im.static_slack_gbh += s.static_slack_gbh.unwrap_or(0.0);
        }
    }
    im.saved_gbh = im.static_slack_gbh - im.slack_gbh;
    im
}

/// Memory slack of one attempt run under limits from the prediction (see [`Impact`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptSlack {
    /// (cap − peak) × wall in GB·h; an OOM-killed attempt counts its whole cap × wall.
    pub slack_gbh: f64,
    /// (static default − peak) × wall for attempts that completed (`ok`, `failed`).
    pub static_slack_gbh: Option<f64>,
}

/// The slack of one attempt, or `None` when its memory cap did not come from the
/// prediction or it was not measured. [`Impact`] sums exactly these.
pub fn attempt_slack(r: &JobRecord, opts: &StatsOptions) -> Option<AttemptSlack> {
    if r.dry_run || memory_source(r) != Some(LimitSource::Predicted) {
        return None;
    }
    let h = r
        .actual_wall_s
        .filter(|w| w.is_finite() && *w >= 0.0)
        .map(|w| w / 3600.0)?;
    let cap = r.applied_memory_mb? as f64;
    let peak = r.actual_rss_mb.filter(|p| p.is_finite() && *p >= 0.0);
    match r.outcome.as_deref() {
        Some("oom_killed") => Some(AttemptSlack {
            slack_gbh: cap / MIB_PER_GIB * h,
            static_slack_gbh: None,
        }),
        Some(o @ ("ok" | "failed" | "timed_out")) => {
            let peak = peak?;
            Some(AttemptSlack {
                slack_gbh: (cap - peak).max(0.0) / MIB_PER_GIB * h,
                static_slack_gbh: (o != "timed_out")
                    .then(|| (opts.static_memory_mb as f64 - peak).max(0.0) / MIB_PER_GIB * h),
            })
        }
        _ => None,
    }
}

/// Summarise a set of settled jobs.
pub fn summarise(rows: &[&JobRecord], opts: &StatsOptions) -> Summary {
    let mut outcomes = BTreeMap::new();
    for r in rows {
        *outcomes
            .entry(r.outcome.clone().unwrap_or_else(|| "unsettled".into()))
            .or_insert(0) += 1;
    }
    let c = opts.coverage;
    let targets = vec![
        accuracy(rows, "peak_rss_mb", c, |r| {
            (r.actual_rss_mb, r.predicted_rss_mb, r.upper_rss_mb)
        }),
        accuracy(rows, "wall_seconds", c, |r| {
            (r.actual_wall_s, r.predicted_wall_s, r.upper_wall_s)
        }),
        accuracy(rows, "cpu_seconds", c, |r| {
            (r.actual_cpu_s, r.predicted_cpu_s, r.upper_cpu_s)
        }),
    ];
    let (mut covered, mut measured) = (0usize, 0usize);
    for r in rows {
        match (r.outcome.as_deref(), r.actual_rss_mb, r.memory_limit_mb) {
            (Some("oom_killed"), _, Some(_)) => measured += 1,
            (Some("ok" | "failed"), Some(peak), Some(cap)) => {
                measured += 1;
                if peak <= cap as f64 {
                    covered += 1;
                }
            }
            _ => {}
        }
    }
    let jobs: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.job_id.as_str()).collect();
    Summary {
        jobs: jobs.len(),
        attempts: rows.len(),
        outcomes,
        targets,
        cap_coverage: (measured > 0).then(|| covered as f64 / measured as f64),
        impact: impact(rows, opts),
    }
}

fn grouped(
    rows: &[JobRecord],
    opts: &StatsOptions,
    key: impl Fn(&JobRecord) -> String,
) -> Vec<Group> {
    let mut map: BTreeMap<String, Vec<&JobRecord>> = BTreeMap::new();
    for r in rows {
        map.entry(key(r)).or_default().push(r);
    }
    map.into_iter()
        .map(|(key, rs)| Group {
            key,
            summary: summarise(&rs, opts),
        })
        .collect()
}

/// Compute the `stats` report over settled rows.
pub fn compute(
    rows: &[JobRecord],
    window: usize,
    by: Option<GroupBy>,
    opts: &StatsOptions,
) -> StatsReport {
    let all: Vec<&JobRecord> = rows.iter().collect();
    StatsReport {
        window,
        overall: summarise(&all, opts),
        by_model_version: grouped(rows, opts, |r| r.model_version.clone()),
        by: by.map(|b| match b {
            GroupBy::Runtime => "runtime".into(),
            GroupBy::JobKey => "job-key".into(),
            GroupBy::Backend => "backend".into(),
        }),
        groups: match by {
            None => Vec::new(),
            Some(GroupBy::Runtime) => grouped(rows, opts, |r| r.runtime.clone()),
            Some(GroupBy::JobKey) => grouped(rows, opts, |r| r.job_key.clone()),
            Some(GroupBy::Backend) => grouped(rows, opts, |r| {
                r.backend.clone().unwrap_or_else(|| "unknown".into())
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_known_answers() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let p = [1.0, 2.0, 3.0, 5.0];
        // SS_res = 1, SS_tot = 5 → 0.8
        assert!((r2(&a, &p).unwrap() - 0.8).abs() < 1e-12);
        // APEs 0,0,0,0.25 → mean 0.0625, median 0
        assert!((mape(&a, &p).unwrap() - 0.0625).abs() < 1e-12);
        assert_eq!(median_ape(&a, &p), Some(0.0));
        assert_eq!(mape(&[0.0], &[1.0]), None);
    }
}
