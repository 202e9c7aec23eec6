//! Fleet demand forecast from the job history: the recent window (the horizon's length,
//! ending now) against the previous *active* window (the same length, ending at the newest
//! job before the recent window, so sparse history still has a baseline), a damped-trend
//! request rate, memory demand and peak concurrent capped memory over the horizon against
//! the host budget, posture signals and recommended actions.
//!
//! A job belongs to the window in which it settled; a job is counted once however many
//! attempts it took. Rates are jobs per hour.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::stats::{self, StatsOptions};
use crate::store::{rfc3339, JobRecord, Store, StoreError};

/// Surge factor above which demand is "elevated" and the fleet switches to surge mode.
pub const SURGE_THRESHOLD: f64 = 1.5;
/// Surge factor above which demand is "critical".
pub const CRITICAL_THRESHOLD: f64 = 3.0;
/// Weight of the trend in the predicted rate: recent + φ (recent − baseline).
pub const TREND_DAMPING: f64 = 0.5;
/// OOM kills + timeouts under enforced predicted limits in the recent window that make the
/// posture degraded.
pub const RELIABILITY_FAILURES: usize = 2;
/// A job key with at least this many attempts and this failure rate is named.
pub const KEY_MIN_ATTEMPTS: usize = 3;
pub const KEY_FAILURE_RATE: f64 = 0.5;
/// A job key with at least this share of the recent memory demand is heavy (named when
/// demand is elevated or the budget is tight).
pub const HEAVY_SHARE: f64 = 0.5;
/// Calibration drift: share ≤ upper bound this far below nominal, over at least
/// `DRIFT_MIN_ROWS` rows, asks for a retrain.
pub const DRIFT_MARGIN: f64 = 0.10;
pub const DRIFT_MIN_ROWS: usize = 10;
/// Predicted peak over this share of the host budget: scale up; under the lower one: scale
/// down.
pub const SCALE_UP_UTILISATION: f64 = 0.85;
pub const SCALE_DOWN_UTILISATION: f64 = 0.25;
/// Jobs in the recent window for full confidence in the capacity advice.
pub const CONFIDENT_JOBS: usize = 20;
/// Longest horizon accepted (a year).
pub const MAX_HORIZON_HOURS: f64 = 8760.0;
/// Callers listed.
pub const TOP_CALLERS: usize = 5;

const MIB_PER_GIB: f64 = 1024.0;

/// Errors of the forecast.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ForecastError {
    #[error("--horizon {0} is not a number of hours in (0, {MAX_HORIZON_HOURS}]")]
    Horizon(f64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the forecast needs besides the history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastOptions {
    pub horizon_hours: f64,
    /// Memory all concurrently running jobs may be capped to in total (MB).
    pub host_budget_mb: u64,
    /// Static default cap and nominal coverage (for the calibration signal).
    pub stats: StatsOptions,
}

/// A window of history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub from: String,
    pub to: String,
    pub jobs: usize,
    pub attempts: usize,
}

/// One job key's share of the recent window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Caller {
    pub job_key: String,
    pub jobs: usize,
    pub attempts: usize,
    /// Σ applied cap × wall over its attempts (GB·h: GiB × hours).
    pub memory_gbh: f64,
    /// Attempts that ended failed, oom_killed, timed_out or lost.
    pub failures: usize,
    /// failures / attempts (rejected attempts excluded).
    pub failure_rate: f64,
}

/// The forecast (`presize forecast --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    /// `steady` or `surge`.
    pub resource_mode: &'static str,
    /// `normal` or `degraded`.
    pub dispatch_posture: &'static str,
    pub now: String,
    pub horizon_hours: f64,
    pub recent_window: Window,
    /// `null` when there is no job before the recent window.
    pub baseline_window: Option<Window>,
    /// Jobs per hour in the recent window.
    pub recent_request_rate: f64,
    /// Jobs per hour in the previous active window; `null` without one.
    pub baseline_request_rate: Option<f64>,
    /// recent + φ (recent − baseline), φ = 0.5, at least 0; the recent rate without a baseline.
    pub predicted_request_rate: f64,
    /// recent / baseline rate (1 without a baseline, 0 without any recent job).
    pub surge_factor: f64,
    /// Of the surge factor: `critical` > 3, `elevated` > 1.5, `normal` > 1, else `low`.
    pub demand_level: &'static str,
    /// Predicted jobs over the horizon × the recent mean GB·h per job.
    pub memory_demand_gbh: f64,
    /// Peak of Σ applied caps of attempts running at once in the recent window.
    pub observed_peak_concurrent_mb: f64,
    /// The observed peak scaled by predicted / recent rate (Little's law), at least the
    /// largest single cap while jobs are expected.
    pub peak_concurrent_mb: f64,
    pub host_budget_mb: u64,
    /// peak_concurrent_mb / host_budget_mb.
    pub budget_utilisation: f64,
    /// `scale-up` (utilisation > 0.85), `scale-down` (< 0.25) or `maintain` (also without
    /// any recent job).
    pub capacity_advice: &'static str,
    /// In [0, 1]: min(1, recent jobs / 20) × (1 with a baseline, 0.5 without).
    pub advice_confidence: f64,
    /// OOM kills under a predicted memory cap and timeouts under a predicted timeout (not
    /// static defaults, overrides or dry run), recent window.
    pub failures_under_predicted_limits: usize,
    /// Share ≤ upper bound per target in the recent window (ok attempts), next to nominal.
    pub calibration: Vec<Calibration>,
    pub top_callers: Vec<Caller>,
    pub recommended_actions: Vec<String>,
}

/// Calibration of one target in the recent window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub target: &'static str,
    pub n: usize,
    pub share_within_upper: Option<f64>,
    pub nominal: f64,
}

/// The demand level of a surge factor.
pub fn demand_level(surge_factor: f64) -> &'static str {
    if surge_factor > CRITICAL_THRESHOLD {
        "critical"
    } else if surge_factor > SURGE_THRESHOLD {
        "elevated"
    } else if surge_factor > 1.0 {
        "normal"
    } else {
        "low"
    }
}

/// Check a horizon in hours and turn it into a duration.
pub fn horizon(h: f64) -> Result<Duration, ForecastError> {
    if !(h.is_finite() && h > 0.0 && h <= MAX_HORIZON_HOURS) {
        return Err(ForecastError::Horizon(h));
    }
    Duration::try_from_secs_f64(h * 3600.0).map_err(|_| ForecastError::Horizon(h))
}

/// Read the two windows from the store and forecast. Each window is `(end − horizon, end]`.
pub fn forecast(
    store: &Store,
    now: SystemTime,
    opts: &ForecastOptions,
) -> Result<Forecast, ForecastError> {
    let span = horizon(opts.horizon_hours)?;
    let ms = Duration::from_millis(1);
    let start_of = |end: SystemTime| end.checked_sub(span).unwrap_or(SystemTime::UNIX_EPOCH);
    // Timestamps have millisecond resolution: (a, b] is [a + 1 ms, b + 1 ms).
    let read =
        |end: SystemTime| store.settled_between(&rfc3339(start_of(end) + ms), &rfc3339(end + ms));
    let recent = read(now)?;
    let baseline = match store.last_settled_before(&rfc3339(start_of(now) + ms))? {
        Some(last) => match humantime::parse_rfc3339_weak(&last) {
            Ok(end) => Some((end, read(end)?)),
            Err(_) => None,
        },
        None => None,
    };
    let (rs, re) = (rfc3339(start_of(now)), rfc3339(now));
    let bounds = baseline
        .as_ref()
        .map(|(end, _)| (rfc3339(start_of(*end)), rfc3339(*end)));
    Ok(compute(
        &recent,
        (&rs, &re),
        baseline
            .as_ref()
            .zip(bounds.as_ref())
            .map(|((_, rows), (f, t))| (rows.as_slice(), (f.as_str(), t.as_str()))),
        opts,
    ))
}

fn window(rows: &[JobRecord], (from, to): (&str, &str)) -> Window {
    let jobs: BTreeSet<&str> = rows.iter().map(|r| r.job_id.as_str()).collect();
    Window {
        from: from.to_string(),
        to: to.to_string(),
        jobs: jobs.len(),
        attempts: rows.len(),
    }
}

/// GB·h an attempt held: applied cap × wall (0 when it did not run).
fn held_gbh(r: &JobRecord) -> f64 {
    match (r.applied_memory_mb, r.actual_wall_s) {
        (Some(c), Some(w)) if c > 0 && w.is_finite() && w > 0.0 => {
            c as f64 / MIB_PER_GIB * w / 3600.0
        }
        _ => 0.0,
    }
}

fn is_failure(r: &JobRecord) -> bool {
    matches!(
        r.outcome.as_deref(),
        Some("failed" | "oom_killed" | "timed_out" | "lost")
    )
}

/// Peak of Σ applied caps over attempts running at the same time.
fn peak_concurrent_mb(rows: &[JobRecord]) -> f64 {
    let secs = |s: &str| {
        humantime::parse_rfc3339_weak(s)
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
    };
    let mut events: Vec<(f64, f64)> = Vec::new();
    for r in rows {
        let Some(cap) = r.applied_memory_mb.filter(|c| *c > 0) else {
            continue;
        };
        let Some(end) = r.settled_at.as_deref().and_then(secs) else {
            continue;
        };
        let start = r
            .started_at
            .as_deref()
            .and_then(secs)
            .or_else(|| r.actual_wall_s.map(|w| end - w));
        let Some(start) = start.filter(|s| *s <= end) else {
            continue;
        };
        events.push((start, cap as f64));
        events.push((end, -(cap as f64)));
    }
    // Ends before starts at the same instant: back-to-back jobs do not overlap.
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let (mut cur, mut peak) = (0.0f64, 0.0f64);
    for (_, d) in events {
        cur += d;
        peak = peak.max(cur);
    }
    peak
}

fn callers(rows: &[JobRecord]) -> Vec<Caller> {
    let mut by: BTreeMap<&str, (BTreeSet<&str>, Caller)> = BTreeMap::new();
    for r in rows {
        let (jobs, c) = by.entry(&r.job_key).or_insert_with(|| {
            (
                BTreeSet::new(),
                Caller {
                    job_key: r.job_key.clone(),
                    jobs: 0,
                    attempts: 0,
                    memory_gbh: 0.0,
                    failures: 0,
                    failure_rate: 0.0,
                },
            )
        });
        jobs.insert(&r.job_id);
        c.memory_gbh += held_gbh(r);
        if r.outcome.as_deref() != Some("rejected") {
            c.attempts += 1;
            if is_failure(r) {
                c.failures += 1;
            }
        }
    }
    let mut v: Vec<Caller> = by
        .into_values()
        .map(|(jobs, mut c)| {
            c.jobs = jobs.len();
            c.failure_rate = if c.attempts > 0 {
                c.failures as f64 / c.attempts as f64
            } else {
                0.0
            };
            c
        })
        .collect();
    v.sort_by(|a, b| {
        b.memory_gbh
            .total_cmp(&a.memory_gbh)
            .then(b.jobs.cmp(&a.jobs))
            .then(a.job_key.cmp(&b.job_key))
    });
    v
}

/// Forecast from the rows of the recent window and, if there is one, of the previous
/// active window (each with its `[from, to]` bounds as RFC 3339).
pub fn compute(
    recent: &[JobRecord],
    recent_bounds: (&str, &str),
    baseline: Option<(&[JobRecord], (&str, &str))>,
    opts: &ForecastOptions,
) -> Forecast {
    let h = opts.horizon_hours;
    let recent_w = window(recent, recent_bounds);
    let baseline_w = baseline.map(|(rows, b)| window(rows, b));
    let recent_rate = recent_w.jobs as f64 / h;
    let baseline_rate = baseline_w.as_ref().map(|w| w.jobs as f64 / h);
    let (surge_factor, predicted_rate) = match baseline_rate {
        Some(b) if b > 0.0 => (
            recent_rate / b,
            (recent_rate + TREND_DAMPING * (recent_rate - b)).max(0.0),
        ),
        _ => (if recent_w.jobs > 0 { 1.0 } else { 0.0 }, recent_rate),
    };
    let level = demand_level(surge_factor);

    let all_callers = callers(recent);
    let total_gbh: f64 = all_callers.iter().map(|c| c.memory_gbh).sum();
    let gbh_per_job = if recent_w.jobs > 0 {
        total_gbh / recent_w.jobs as f64
    } else {
        0.0
    };
    let memory_demand_gbh = predicted_rate * h * gbh_per_job;
    let observed_peak = peak_concurrent_mb(recent);
    let largest_cap = recent
        .iter()
        .filter_map(|r| r.applied_memory_mb)
        .max()
        .unwrap_or(0) as f64;
    let peak = if recent_rate > 0.0 && predicted_rate > 0.0 {
        (observed_peak * predicted_rate / recent_rate).max(largest_cap)
    } else {
        0.0
    };
    let budget = opts.host_budget_mb.max(1) as f64;
    let utilisation = peak / budget;
    let capacity_advice = if recent_w.jobs == 0 {
        "maintain"
    } else if utilisation > SCALE_UP_UTILISATION {
        "scale-up"
    } else if utilisation < SCALE_DOWN_UTILISATION {
        "scale-down"
    } else {
        "maintain"
    };
    let data = (recent_w.jobs as f64 / CONFIDENT_JOBS as f64).min(1.0);
    let history = if baseline_w.is_some() { 1.0 } else { 0.5 };
    let advice_confidence = (data * history * 100.0).round() / 100.0;

    let failures_under_predicted = recent
        .iter()
        .filter(|r| stats::failed_under_predicted(r))
        .count();
    let refs: Vec<&JobRecord> = recent.iter().collect();
    let summary = stats::summarise(&refs, &opts.stats);
    let calibration: Vec<Calibration> = summary
        .targets
        .iter()
        .map(|t| Calibration {
            target: t.target,
            n: t.n,
            share_within_upper: t.calibration,
            nominal: t.nominal_coverage,
        })
        .collect();

    let surge = surge_factor > SURGE_THRESHOLD;
    let degraded = failures_under_predicted >= RELIABILITY_FAILURES;
    // Throttling helps when demand surges or when jobs running together (not one job's
    // own cap) push the peak over the budget, and only if there is someone to make room for.
    let crowded = utilisation > SCALE_UP_UTILISATION && observed_peak > largest_cap;
    let pressure = (surge || crowded) && all_callers.len() >= 2;
    let hs = fmt_hours(h);
    let mut actions = Vec::new();
    if surge {
        actions.push(format!(
            "pre-warm: expect about {:.1} jobs/h (×{:.1} the previous active window); reserve about {:.1} GB·h over the next {hs}",
            predicted_rate, surge_factor, memory_demand_gbh
        ));
    }
    if degraded {
        actions.push(format!(
            "investigate model reliability: {failures_under_predicted} OOM kills or timeouts under predicted limits in the last {hs}"
        ));
    }
    for c in &all_callers {
        if c.attempts >= KEY_MIN_ATTEMPTS && c.failure_rate >= KEY_FAILURE_RATE {
            actions.push(format!(
                "investigate {}: {} of {} attempts failed in the last {hs}",
                c.job_key, c.failures, c.attempts
            ));
        }
    }
    if pressure && total_gbh > 0.0 {
        for c in &all_callers {
            let share = c.memory_gbh / total_gbh;
            if share >= HEAVY_SHARE {
                actions.push(format!(
                    "throttle or schedule off-peak: {} holds {:.0} % of the recent memory demand ({:.2} GB·h)",
                    c.job_key,
                    share * 100.0,
                    c.memory_gbh
                ));
            }
        }
    }
    if let Some(worst) = summary
        .targets
        .iter()
        .filter(|t| t.n >= DRIFT_MIN_ROWS)
        .filter_map(|t| t.calibration.map(|c| (t, c)))
        .filter(|(t, c)| *c < t.nominal_coverage - DRIFT_MARGIN)
        .min_by(|a, b| a.1.total_cmp(&b.1))
    {
        actions.push(format!(
            "retrain now: only {:.0} % of {} actuals stayed at or below the predicted upper bound (nominal {:.0} %)",
            worst.1 * 100.0,
            worst.0.target,
            worst.0.nominal_coverage * 100.0
        ));
    }
    match capacity_advice {
        "scale-up" => actions.push(format!(
            "scale up: predicted peak of {:.0} MB capped memory is {:.0} % of the host budget ({} MB)",
            peak,
            utilisation * 100.0,
            opts.host_budget_mb
        )),
        "scale-down" => actions.push(format!(
            "scale down: predicted peak of {:.0} MB capped memory is only {:.0} % of the host budget ({} MB)",
            peak,
            utilisation * 100.0,
            opts.host_budget_mb
        )),
        _ => {}
    }
    if actions.is_empty() {
        actions.push("maintain current allocation".into());
    }
    let mut top = all_callers;
    top.truncate(TOP_CALLERS);
    Forecast {
        resource_mode: if surge || degraded { "surge" } else { "steady" },
        dispatch_posture: if degraded { "degraded" } else { "normal" },
        now: recent_bounds.1.to_string(),
        horizon_hours: h,
        recent_window: recent_w,
        baseline_window: baseline_w,
        recent_request_rate: recent_rate,
        baseline_request_rate: baseline_rate,
        predicted_request_rate: predicted_rate,
        surge_factor,
        demand_level: level,
        memory_demand_gbh,
        observed_peak_concurrent_mb: observed_peak,
        peak_concurrent_mb: peak,
        host_budget_mb: opts.host_budget_mb,
        budget_utilisation: utilisation,
        capacity_advice,
        advice_confidence,
        failures_under_predicted_limits: failures_under_predicted,
        calibration,
        top_callers: top,
        recommended_actions: actions,
    }
}

fn fmt_hours(h: f64) -> String {
    if h.fract() == 0.0 {
        format!("{h:.0} h")
    } else {
        format!("{h} h")
    }
}

/// Text that renders as itself in Markdown: no control characters, no HTML tags.
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            c if c.is_control() => out.push(' '),
            '\\' | '<' | '>' | '`' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Text safe inside a Markdown table cell.
fn md_cell(s: &str) -> String {
    md_text(s).replace('|', "\\|")
}

/// The forecast as Markdown (the default output).
pub fn markdown(f: &Forecast) -> String {
    let hs = fmt_hours(f.horizon_hours);
    let rate = |r: f64| format!("{r:.2} jobs/h");
    let mut s = format!("# presize forecast — next {hs} from {}\n\n", f.now);
    s += "| | |\n|---|---|\n";
    // Surge mode also follows from failures under predicted limits: say which it is, so
    // "surge" beside a low demand level is not read as a demand surge.
    let why_mode = match (f.resource_mode, f.surge_factor > SURGE_THRESHOLD) {
        ("surge", true) => " (demand surge)",
        ("surge", false) => " (headroom for failures under predicted limits, not a demand surge)",
        _ => "",
    };
    s += &format!("| resource mode | **{}**{why_mode} |\n", f.resource_mode);
    s += &format!("| dispatch posture | **{}** |\n", f.dispatch_posture);
    s += &format!(
        "| demand level | **{}** (surge factor {:.2}) |\n",
        f.demand_level, f.surge_factor
    );
    s += &format!(
        "| recent window | {} jobs, {} ({} … {}) |\n",
        f.recent_window.jobs,
        rate(f.recent_request_rate),
        f.recent_window.from,
        f.recent_window.to
    );
    match (&f.baseline_window, f.baseline_request_rate) {
        (Some(w), Some(r)) => {
            s += &format!(
                "| previous active window | {} jobs, {} ({} … {}) |\n",
                w.jobs,
                rate(r),
                w.from,
                w.to
            )
        }
        _ => s += "| previous active window | none (no earlier job) |\n",
    }
    s += &format!(
        "| predicted request rate | {} |\n",
        rate(f.predicted_request_rate)
    );
    s += &format!(
        "| predicted memory demand | {:.2} GB·h over the next {hs} |\n",
        f.memory_demand_gbh
    );
    s += &format!(
        "| peak concurrent capped memory | {:.0} MB predicted (observed {:.0} MB) of a {} MB host budget ({:.0} %) |\n",
        f.peak_concurrent_mb,
        f.observed_peak_concurrent_mb,
        f.host_budget_mb,
        f.budget_utilisation * 100.0
    );
    s += &format!(
        "| capacity | **{}** (confidence {:.2}) |\n",
        f.capacity_advice, f.advice_confidence
    );
    s += &format!(
        "| OOM kills under predicted caps + timeouts under predicted timeouts (not static defaults, overrides or dry run) | {} |\n",
        f.failures_under_predicted_limits
    );
    s += "\n## Top callers (recent window, by memory demand)\n\n";
    if f.top_callers.is_empty() {
        s += "No job settled in the recent window.\n";
    } else {
        s += "| job key | jobs | attempts | memory GB·h | failures | failure rate |\n|---|---:|---:|---:|---:|---:|\n";
        for c in &f.top_callers {
            s += &format!(
                "| {} | {} | {} | {:.2} | {} | {:.0} % |\n",
                md_cell(&c.job_key),
                c.jobs,
                c.attempts,
                c.memory_gbh,
                c.failures,
                c.failure_rate * 100.0
            );
        }
    }
    s += "\n## Recommended actions\n\n";
    for a in &f.recommended_actions {
        s += &format!("- {}\n", md_text(a));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_surge_factor() {
        assert_eq!(demand_level(3.01), "critical");
        assert_eq!(demand_level(3.0), "elevated");
        assert_eq!(demand_level(1.5), "normal");
        assert_eq!(demand_level(1.0), "low");
        assert_eq!(demand_level(0.0), "low");
    }

    #[test]
    fn horizon_is_validated() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 9000.0] {
            assert!(horizon(bad).is_err(), "{bad}");
        }
        assert_eq!(horizon(1.5).unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        assert_eq!(md_cell("a|b\n`c`"), "a\\|b \\`c\\`");
        assert_eq!(md_text("<script>"), "\\<script\\>");
    }
}
