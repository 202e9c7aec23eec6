//! Fleet demand forecast from the job history: the recent window (the horizon's length,
//! ending now) against the previous *active* window (the same length, ending at the newest
//! job before the recent window, so sparse history still has a baseline), a damped-trend
//! request rate, memory demand and peak concurrent capped memory over the horizon against
//! the host budget, posture signals and recommended actions.
//!
//! A job belongs to the window in which it settled; a job is counted once however many
//! attempts it took. Rates are jobs per hour.
//!
//! The forecast learns ([`learn`]): each one is recorded and scored once its horizon has
//! passed; the scored errors give every figure an interval, the risk that the budget is
//! exceeded and the advice confidence. With two weeks of history a weekly profile (the same
//! hours of the same weekdays in the last weeks) replaces the damped trend unless the scored
//! forecasts say the trend has been closer; known events from `[forecast]` (maintenance
//! windows, campaigns) scale the demand of the hours they cover.

pub mod learn;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::stats::{self, StatsOptions};
use crate::store::{JobRecord, Store, StoreError};
use crate::util::rfc3339;

/// Surge factor above which demand is "elevated" and the fleet switches to surge mode.
pub const SURGE_THRESHOLD: f64 = 1.5;
/// Surge factor above which demand is "critical".
pub const CRITICAL_THRESHOLD: f64 = 3.0;
/// Weight of the trend in the predicted rate: recent + φ (recent − baseline).
pub const TREND_DAMPING: f64 = 0.5;
/// OOM kills under predicted caps + timeouts under predicted timeouts in the recent window that make the
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
/// The damped trend of the two windows.
pub const METHOD_TREND: &str = "damped-trend";
/// The weekly profile (same hours of the same weekdays in the last weeks).
pub const METHOD_PROFILE: &str = "weekly-profile";
/// Default nominal coverage of the intervals.
pub const DEFAULT_INTERVAL_COVERAGE: f64 = 0.8;

const MIB_PER_GIB: f64 = 1024.0;

/// Errors of the forecast.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ForecastError {
    #[error("--horizon {0} is not a number of hours in (0, {MAX_HORIZON_HOURS}]")]
    Horizon(f64),
    #[error("--horizon {0:?} is not a list of horizons such as 15m,1h,24h or a number of hours")]
    HorizonList(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the forecast needs besides the history.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastOptions {
    pub horizon_hours: f64,
    /// Memory all concurrently running jobs may be capped to in total (MB).
    pub host_budget_mb: u64,
    /// Static default cap and nominal coverage (for the calibration signal).
    pub stats: StatsOptions,
    /// `[forecast]`: events, price, interval coverage.
    pub config: ForecastConfig,
}

/// `[forecast]` section of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForecastConfig {
    /// Price of one GB·h (any currency); actions then carry a money cost.
    pub price_per_gbh: Option<f64>,
    /// Nominal coverage of the intervals, in (0, 1).
    pub interval_coverage: f64,
    /// Known events (`[[forecast.events]]`).
    pub events: Vec<EventConfig>,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            price_per_gbh: None,
            interval_coverage: DEFAULT_INTERVAL_COVERAGE,
            events: Vec::new(),
        }
    }
}

impl ForecastConfig {
    /// Check the section (called when the config file is read).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = self.price_per_gbh {
            if !(p.is_finite() && p >= 0.0) {
                return Err("[forecast] price_per_gbh must be a number ≥ 0".into());
            }
        }
        if !(self.interval_coverage > 0.0 && self.interval_coverage < 1.0) {
            return Err("[forecast] interval_coverage must be in (0, 1)".into());
        }
        for e in &self.events {
            if e.times().is_none() {
                return Err(format!(
                    "[forecast] event {:?}: start and end must be RFC 3339 UTC times with start < end",
                    e.name
                ));
            }
            if !(e.demand_factor.is_finite() && e.demand_factor >= 0.0) {
                return Err(format!(
                    "[forecast] event {:?}: demand_factor must be a number ≥ 0",
                    e.name
                ));
            }
        }
        Ok(())
    }

    /// The maintenance windows, as times.
    pub fn maintenance(&self) -> Vec<(SystemTime, SystemTime)> {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::Maintenance)
            .filter_map(EventConfig::times)
            .collect()
    }
}

/// A known event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// No jobs run while it lasts.
    Maintenance,
    /// Demand × `demand_factor` while it lasts.
    Campaign,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Maintenance => "maintenance",
            EventKind::Campaign => "campaign",
        }
    }
}

/// One `[[forecast.events]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventConfig {
    pub name: String,
    pub kind: EventKind,
    /// RFC 3339 UTC.
    pub start: String,
    pub end: String,
    /// Campaigns: demand multiplier while it lasts (default 2).
    #[serde(default = "default_demand_factor")]
    pub demand_factor: f64,
}

fn default_demand_factor() -> f64 {
    2.0
}

impl EventConfig {
    /// Start and end, when both parse and start < end.
    pub fn times(&self) -> Option<(SystemTime, SystemTime)> {
        let s = humantime::parse_rfc3339_weak(&self.start).ok()?;
        let e = humantime::parse_rfc3339_weak(&self.end).ok()?;
        (s < e).then_some((s, e))
    }
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
    /// The method's rate × the events' factor. Damped trend: recent + φ (recent − baseline),
    /// φ = 0.5, at least 0; the recent rate without a baseline.
    pub predicted_request_rate: f64,
    /// recent / baseline rate (1 without a baseline, 0 without any recent job).
    pub surge_factor: f64,
    /// Of the surge factor: `critical` > 3, `elevated` > 1.5, `normal` > 1, else `low`.
    pub demand_level: &'static str,
    /// Which figure the prediction uses: `damped-trend` or `weekly-profile`.
    pub method: &'static str,
    /// Jobs over the horizon by the damped trend.
    pub trend_jobs: f64,
    /// Jobs over the horizon by the weekly profile (`null` before two weeks of history).
    pub profile_jobs: Option<f64>,
    /// Weeks the profile averaged.
    pub profile_weeks: Option<u32>,
    /// The profile is used and differs from the trend by more than 10 % (and one job).
    pub profile_changes_answer: bool,
    /// Known events overlapping the horizon.
    pub events: Vec<EventEffect>,
    /// Their multiplier on the jobs over the horizon.
    pub event_factor: f64,
    /// predicted_request_rate × horizon.
    pub predicted_jobs: f64,
    pub predicted_jobs_interval: learn::Interval,
    /// Predicted jobs over the horizon × the recent mean GB·h per job.
    pub memory_demand_gbh: f64,
    /// The jobs interval × the recent mean GB·h per job.
    pub memory_demand_interval: learn::Interval,
    /// Peak of Σ applied caps of attempts running at once in the recent window.
    pub observed_peak_concurrent_mb: f64,
    /// The observed peak scaled by predicted / recent rate (Little's law), at least the
    /// largest single cap while jobs are expected.
    pub peak_concurrent_mb: f64,
    /// The jobs interval scaled to the peak.
    pub peak_concurrent_interval: learn::Interval,
    pub host_budget_mb: u64,
    /// peak_concurrent_mb / host_budget_mb.
    pub budget_utilisation: f64,
    /// Probability that the peak exceeds the host budget over the horizon (from the interval's
    /// errors or count model).
    pub budget_exceed_risk: f64,
    /// `scale-up` (utilisation > 0.85), `scale-down` (< 0.25) or `maintain` (also without
    /// any recent job).
    pub capacity_advice: &'static str,
    /// In [0, 1]: min(1, recent jobs / 20) × (1 with a baseline, 0.5 without) × (with at
    /// least 8 scored forecasts of this horizon) 1 / (1 + their mean relative error).
    pub advice_confidence: f64,
    /// How earlier forecasts of this horizon fared (`null` before any was scored).
    pub accuracy: Option<learn::HorizonAccuracy>,
    /// OOM kills under a predicted memory cap and timeouts under a predicted timeout (not
    /// static defaults, overrides or dry run), recent window.
    pub failures_under_predicted_limits: usize,
    /// Share ≤ upper bound per target in the recent window (ok attempts), next to nominal.
    pub calibration: Vec<Calibration>,
    pub top_callers: Vec<Caller>,
    /// The texts of `actions`.
    pub recommended_actions: Vec<String>,
    /// Each action with its urgency, cost and risk.
    pub actions: Vec<Action>,
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

/// Parse `--horizon`: a comma-separated list of durations (`15m,1h,24h`, `1.5h`, `2d`) or of
/// plain numbers of hours (`24`, `0.5`). Each must be in (0, a year].
pub fn parse_horizons(s: &str) -> Result<Vec<f64>, ForecastError> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let p = part.trim();
        let hours = match p.parse::<f64>() {
            Ok(h) => h,
            Err(_) => crate::executor::burst::parse_duration(p)
                .map(|d| d.as_secs_f64() / 3600.0)
                .ok_or_else(|| ForecastError::HorizonList(s.to_string()))?,
        };
        horizon(hours)?;
        out.push(hours);
    }
    if out.is_empty() {
        return Err(ForecastError::HorizonList(s.to_string()));
    }
    Ok(out)
}

/// Read the two windows from the store, the weekly profile, the events and the scored
/// forecasts of this horizon, and forecast. Each window is `(end − horizon, end]`. Reads
/// only: score first with [`learn::score_pending`], record after with [`record`].
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
    let learned = Learned {
        profile: learn::profile_jobs(store, now, opts.horizon_hours, &opts.config.maintenance())?,
        events: event_effects(&opts.config, now, opts.horizon_hours),
        scored: learn::scored(store, opts.horizon_hours, now)?,
        price_per_gbh: opts.config.price_per_gbh,
        interval_coverage: opts.config.interval_coverage,
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
        &learned,
    ))
}

/// Record a forecast (`trigger`: `cli` or `timer`) so that it is scored once its horizon
/// has passed. Returns the row id.
pub fn record(store: &Store, f: &Forecast, trigger: &str) -> Result<i64, ForecastError> {
    Ok(learn::record(
        store,
        &learn::NewRecord {
            made_at: &f.now,
            trigger,
            horizon_hours: f.horizon_hours,
            method: f.method,
            trend_jobs: f.trend_jobs,
            profile_jobs: f.profile_jobs,
            event_factor: f.event_factor,
            predicted_jobs: f.predicted_jobs,
            jobs: f.predicted_jobs_interval,
            predicted_gbh: f.memory_demand_gbh,
            gbh: f.memory_demand_interval,
            peak_concurrent_mb: f.peak_concurrent_mb,
            budget_mb: f.host_budget_mb,
        },
    )?)
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

/// Known events and what each does to demand over a horizon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventEffect {
    pub name: String,
    /// `maintenance` or `campaign`.
    pub kind: &'static str,
    pub start: String,
    pub end: String,
    /// Hours of the horizon the event covers.
    pub overlap_hours: f64,
    /// Demand multiplier while it lasts (0 for maintenance).
    pub demand_factor: f64,
}

/// What the forecast learned beyond the two windows: the weekly profile, the known events
/// and the scored errors of earlier forecasts of this horizon.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Learned {
    /// Jobs over the horizon by the weekly profile and the weeks it averaged.
    pub profile: Option<(f64, u32)>,
    pub events: Vec<EventEffect>,
    /// Scored forecasts of this horizon, newest first.
    pub scored: Vec<learn::Scored>,
    /// `[forecast] price_per_gbh`, for the money cost of actions.
    pub price_per_gbh: Option<f64>,
    /// Nominal coverage of the intervals.
    pub interval_coverage: f64,
}

/// One recommended action with its urgency, cost and risk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    pub action: String,
    /// `immediate`, `soon` or `planned`.
    pub urgency: &'static str,
    /// GB·h the action commits (negative: saves), when it has a memory cost.
    pub cost_gbh: Option<f64>,
    /// `cost_gbh` × `[forecast] price_per_gbh`, when a price is set.
    pub cost_money: Option<f64>,
    /// Probability that the predicted peak exceeds the host budget over the horizon.
    pub risk: f64,
}

/// Urgency of an action about the horizon: immediate when the budget is likely (≥ 50 %)
/// exceeded within the hour, soon within a day, planned beyond.
fn urgency(hours_ahead: f64, risk: f64) -> &'static str {
    if hours_ahead <= 1.0 && risk >= 0.5 {
        "immediate"
    } else if hours_ahead <= 24.0 {
        "soon"
    } else {
        "planned"
    }
}

/// Effects of the configured events on `[now, now + h)`.
pub fn event_effects(cfg: &ForecastConfig, now: SystemTime, h: f64) -> Vec<EventEffect> {
    let t0 = now;
    let t1 = now + Duration::try_from_secs_f64(h * 3600.0).unwrap_or_default();
    cfg.events
        .iter()
        .filter_map(|e| {
            let (s, t) = e.times()?;
            let a = s.max(t0);
            let b = t.min(t1);
            let overlap = b.duration_since(a).ok()?.as_secs_f64() / 3600.0;
            (overlap > 0.0).then(|| EventEffect {
                name: e.name.clone(),
                kind: e.kind.as_str(),
                start: rfc3339(s),
                end: rfc3339(t),
                overlap_hours: overlap,
                demand_factor: match e.kind {
                    EventKind::Maintenance => 0.0,
                    EventKind::Campaign => e.demand_factor,
                },
            })
        })
        .collect()
}

/// Multiplier of the jobs over a horizon of `h` hours: each event replaces the demand of
/// the hours it covers by its factor × the demand (at least 0).
fn event_factor(events: &[EventEffect], h: f64) -> f64 {
    events
        .iter()
        .map(|e| (e.demand_factor - 1.0) * e.overlap_hours / h)
        .fold(1.0f64, |acc, d| acc + d)
        .max(0.0)
}

/// Forecast from the rows of the recent window and, if there is one, of the previous
/// active window (each with its `[from, to]` bounds as RFC 3339), with what was learned.
pub fn compute(
    recent: &[JobRecord],
    recent_bounds: (&str, &str),
    baseline: Option<(&[JobRecord], (&str, &str))>,
    opts: &ForecastOptions,
    learned: &Learned,
) -> Forecast {
    let h = opts.horizon_hours;
    let recent_w = window(recent, recent_bounds);
    let baseline_w = baseline.map(|(rows, b)| window(rows, b));
    let recent_rate = recent_w.jobs as f64 / h;
    let baseline_rate = baseline_w.as_ref().map(|w| w.jobs as f64 / h);
    let (surge_factor, trend_rate) = match baseline_rate {
        Some(b) if b > 0.0 => (
            recent_rate / b,
            (recent_rate + TREND_DAMPING * (recent_rate - b)).max(0.0),
        ),
        _ => (if recent_w.jobs > 0 { 1.0 } else { 0.0 }, recent_rate),
    };
    let level = demand_level(surge_factor);

    // Which figure: the weekly profile once there are two weeks of history, unless the scored
    // forecasts of this horizon say the damped trend has been closer.
    let trend_jobs = trend_rate * h;
    let profile_jobs = learned.profile.map(|(p, _)| p);
    let compared: Vec<(f64, f64, f64)> = learned
        .scored
        .iter()
        .filter_map(|s| {
            Some((
                s.figure(METHOD_TREND)?,
                s.figure(METHOD_PROFILE)?,
                s.actual_jobs,
            ))
        })
        .collect();
    let method = match profile_jobs {
        None => METHOD_TREND,
        Some(_) if compared.len() >= learn::MIN_SCORED => {
            let mae = |f: fn(&(f64, f64, f64)) -> f64| {
                compared.iter().map(|c| (f(c) - c.2).abs()).sum::<f64>()
            };
            if mae(|c| c.1) <= mae(|c| c.0) {
                METHOD_PROFILE
            } else {
                METHOD_TREND
            }
        }
        Some(_) => METHOD_PROFILE,
    };
    let ev_factor = event_factor(&learned.events, h);
    let method_rate = match (method, profile_jobs) {
        (METHOD_PROFILE, Some(p)) => p / h,
        _ => trend_rate,
    };
    let predicted_rate = if ev_factor == 1.0 {
        method_rate
    } else {
        method_rate * ev_factor
    };
    let predicted_jobs = predicted_rate * h;
    let profile_changes_answer = method == METHOD_PROFILE
        && profile_jobs.is_some_and(|p| (p - trend_jobs).abs() > (0.1 * trend_jobs).max(1.0));

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
    // A campaign raises concurrency while it lasts; maintenance does not lower the peak
    // outside its window.
    let peak_factor = learned
        .events
        .iter()
        .map(|e| e.demand_factor)
        .fold(1.0f64, f64::max);
    let peak_rate = method_rate * peak_factor;
    let peak = if recent_rate > 0.0 && peak_rate > 0.0 {
        (observed_peak * peak_rate / recent_rate).max(largest_cap)
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

    // Interval and risk: the scored errors of this method at this horizon once there are
    // enough, else the variance of Poisson counts (trend: recent, baseline and the future
    // count; profile: the weeks averaged and the future count).
    let var_per_job = match (method, learned.profile) {
        (METHOD_PROFILE, Some((_, weeks))) => 1.0 + 1.0 / weeks.max(1) as f64,
        _ if baseline_rate.is_some_and(|b| b > 0.0) => {
            1.0 + (1.0 + TREND_DAMPING).powi(2) + TREND_DAMPING.powi(2)
        }
        _ => 2.0,
    };
    let spread = learn::Spread::new(learn::residuals(&learned.scored, method), var_per_job);
    let nominal = learned.interval_coverage;
    let jobs_interval = spread.interval(predicted_jobs, nominal);
    let memory_interval = jobs_interval.scaled(gbh_per_job);
    let per_job_peak = if predicted_jobs > 0.0 {
        peak / predicted_jobs
    } else {
        0.0
    };
    let peak_interval = jobs_interval.scaled(per_job_peak);
    // The peak scales with the jobs (Little's law): the budget is exceeded when the jobs
    // exceed budget / peak × predicted jobs.
    let risk = if peak > 0.0 && predicted_jobs > 0.0 {
        let p = spread.p_exceed(predicted_jobs, predicted_jobs * budget / peak);
        (p * 1000.0).round() / 1000.0
    } else {
        0.0
    };
    let accuracy = learn::accuracy_of(h, &learned.scored, nominal);

    let data = (recent_w.jobs as f64 / CONFIDENT_JOBS as f64).min(1.0);
    let history = if baseline_w.is_some() { 1.0 } else { 0.5 };
    // Past errors of this horizon lower the confidence: × 1 / (1 + mean relative error).
    let skill = match &accuracy {
        Some(a) if a.scored >= learn::MIN_SCORED => 1.0 / (1.0 + a.jobs_rel_error),
        _ => 1.0,
    };
    let advice_confidence = (data * history * skill * 100.0).round() / 100.0;

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
    let money = |gbh: f64| learned.price_per_gbh.map(|p| gbh * p);
    let mut actions: Vec<Action> = Vec::new();
    let mut act = |text: String, urgency: &'static str, gbh: Option<f64>| {
        actions.push(Action {
            action: text,
            urgency,
            cost_gbh: gbh,
            cost_money: gbh.and_then(money),
            risk,
        })
    };
    if surge {
        act(
            format!(
                "pre-warm: expect about {:.1} jobs/h (×{:.1} the previous active window); reserve about {:.1} GB·h over the next {hs}",
                predicted_rate, surge_factor, memory_demand_gbh
            ),
            if surge_factor > CRITICAL_THRESHOLD { "immediate" } else { urgency(h, risk) },
            Some(memory_demand_gbh),
        );
    }
    if degraded {
        act(
            format!(
                "investigate model reliability: {failures_under_predicted} OOM kills or timeouts under predicted limits in the last {hs}"
            ),
            "immediate",
            None,
        );
    }
    for c in &all_callers {
        if c.attempts >= KEY_MIN_ATTEMPTS && c.failure_rate >= KEY_FAILURE_RATE {
            act(
                format!(
                    "investigate {}: {} of {} attempts failed in the last {hs}",
                    c.job_key, c.failures, c.attempts
                ),
                "soon",
                None,
            );
        }
    }
    if pressure && total_gbh > 0.0 {
        for c in &all_callers {
            let share = c.memory_gbh / total_gbh;
            if share >= HEAVY_SHARE {
                act(
                    format!(
                        "throttle or schedule off-peak: {} holds {:.0} % of the recent memory demand ({:.2} GB·h)",
                        c.job_key,
                        share * 100.0,
                        c.memory_gbh
                    ),
                    urgency(h, risk),
                    None,
                );
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
        act(
            format!(
                "retrain now: only {:.0} % of {} actuals stayed at or below the predicted upper bound (nominal {:.0} %)",
                worst.1 * 100.0,
                worst.0.target,
                worst.0.nominal_coverage * 100.0
            ),
            "soon",
            None,
        );
    }
    for e in &learned.events {
        let start = humantime::parse_rfc3339_weak(&e.start).ok();
        let now_t = humantime::parse_rfc3339_weak(recent_bounds.1).ok();
        let ahead = match (start, now_t) {
            (Some(s), Some(n)) => s
                .duration_since(n)
                .map_or(0.0, |d| d.as_secs_f64() / 3600.0),
            _ => 0.0,
        };
        let u = if ahead <= 1.0 {
            "immediate"
        } else if ahead <= 24.0 {
            "soon"
        } else {
            "planned"
        };
        let per_hour_gbh = if h > 0.0 {
            method_rate * gbh_per_job
        } else {
            0.0
        };
        match e.kind {
            "maintenance" => act(
                format!(
                    "drain for maintenance {}: no jobs {} … {}; hold jobs whose timeout crosses its start (about {:.1} jobs fewer over the next {hs})",
                    e.name,
                    e.start,
                    e.end,
                    method_rate * e.overlap_hours
                ),
                u,
                Some(0.0),
            ),
            _ => act(
                format!(
                    "prepare for campaign {}: demand ×{:.1} from {} for {:.1} h of the next {hs}, about {:.1} GB·h more",
                    e.name,
                    e.demand_factor,
                    e.start,
                    e.overlap_hours,
                    per_hour_gbh * (e.demand_factor - 1.0) * e.overlap_hours
                ),
                u,
                Some(per_hour_gbh * (e.demand_factor - 1.0) * e.overlap_hours),
            ),
        }
    }
    match capacity_advice {
        "scale-up" => {
            // Extra memory to hold the interval's upper peak for the whole horizon.
            let extra = (peak_interval.hi.max(peak) - budget).max(0.0) / MIB_PER_GIB * h;
            act(
                format!(
                    "scale up: predicted peak of {:.0} MB capped memory is {:.0} % of the host budget ({} MB)",
                    peak,
                    utilisation * 100.0,
                    opts.host_budget_mb
                ),
                urgency(h, risk),
                Some(extra),
            )
        }
        "scale-down" => {
            // Memory freed by shrinking the budget to the interval's upper peak.
            let saved = (budget - peak_interval.hi.max(peak)).max(0.0) / MIB_PER_GIB * h;
            act(
                format!(
                    "scale down: predicted peak of {:.0} MB capped memory is only {:.0} % of the host budget ({} MB)",
                    peak,
                    utilisation * 100.0,
                    opts.host_budget_mb
                ),
                "planned",
                Some(-saved),
            )
        }
        _ => {}
    }
    if actions.is_empty() {
        actions.push(Action {
            action: "maintain current allocation".into(),
            urgency: "planned",
            cost_gbh: None,
            cost_money: None,
            risk,
        });
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
        method,
        trend_jobs,
        profile_jobs,
        profile_weeks: learned.profile.map(|(_, w)| w),
        profile_changes_answer,
        events: learned.events.clone(),
        event_factor: ev_factor,
        predicted_jobs,
        predicted_jobs_interval: jobs_interval,
        memory_demand_gbh,
        memory_demand_interval: memory_interval,
        observed_peak_concurrent_mb: observed_peak,
        peak_concurrent_mb: peak,
        peak_concurrent_interval: peak_interval,
        host_budget_mb: opts.host_budget_mb,
        budget_utilisation: utilisation,
        budget_exceed_risk: risk,
        capacity_advice,
        advice_confidence,
        accuracy,
        failures_under_predicted_limits: failures_under_predicted,
        calibration,
        top_callers: top,
        recommended_actions: actions.iter().map(|a| a.action.clone()).collect(),
        actions,
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
    let ci = |i: &learn::Interval, d: usize| {
        format!(
            "{:.d$} … {:.d$} ({:.0} % interval, {})",
            i.lo,
            i.hi,
            i.nominal * 100.0,
            if i.source == "scored" {
                "from scored forecasts"
            } else {
                "count model"
            }
        )
    };
    s += &format!(
        "| predicted request rate | {} ({:.1} jobs over the next {hs}: {}) |\n",
        rate(f.predicted_request_rate),
        f.predicted_jobs,
        ci(&f.predicted_jobs_interval, 1)
    );
    if f.profile_changes_answer {
        s += &format!(
            "| weekly profile | **{:.1} jobs** from the same hours of the last {} week(s), where the damped trend says {:.1} |\n",
            f.profile_jobs.unwrap_or_default(),
            f.profile_weeks.unwrap_or_default(),
            f.trend_jobs
        );
    }
    for e in &f.events {
        s += &format!(
            "| {} {} | {} … {}: {:.1} h of the horizon, demand ×{:.1} |\n",
            e.kind,
            md_cell(&e.name),
            e.start,
            e.end,
            e.overlap_hours,
            e.demand_factor
        );
    }
    s += &format!(
        "| predicted memory demand | {:.2} GB·h over the next {hs} ({}) |\n",
        f.memory_demand_gbh,
        ci(&f.memory_demand_interval, 2)
    );
    s += &format!(
        "| peak concurrent capped memory | {:.0} MB predicted (observed {:.0} MB) of a {} MB host budget ({:.0} %) |\n",
        f.peak_concurrent_mb,
        f.observed_peak_concurrent_mb,
        f.host_budget_mb,
        f.budget_utilisation * 100.0
    );
    s += &format!(
        "| risk the budget is exceeded | {:.0} % over the next {hs} |\n",
        f.budget_exceed_risk * 100.0
    );
    s += &format!(
        "| capacity | **{}** (confidence {:.2}) |\n",
        f.capacity_advice, f.advice_confidence
    );
    match &f.accuracy {
        Some(a) => {
            s += &format!(
                "| past forecasts of {hs} | {} scored: mean error {:.1} jobs ({:.0} %), memory {:.0} %; {:.0} % inside their interval (nominal {:.0} %) |\n",
                a.scored,
                a.jobs_mae,
                a.jobs_rel_error * 100.0,
                a.gbh_rel_error * 100.0,
                a.interval_coverage * 100.0,
                a.nominal * 100.0
            );
        }
        None => s += &format!("| past forecasts of {hs} | none scored yet |\n"),
    }
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
    for a in &f.actions {
        let cost = match (a.cost_gbh, a.cost_money) {
            (Some(g), Some(m)) => format!(", cost {g:.2} GB·h ({m:.2})"),
            (Some(g), None) => format!(", cost {g:.2} GB·h"),
            _ => String::new(),
        };
        s += &format!(
            "- {} — *{}*{cost}, risk {:.0} %\n",
            md_text(&a.action),
            a.urgency,
            a.risk * 100.0
        );
    }
    s
}

/// Several horizons at once (`presize forecast --horizon 15m,1h,24h --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MultiForecast {
    pub now: String,
    pub forecasts: Vec<Forecast>,
}

/// Several horizons as Markdown: a summary table, then each forecast.
pub fn markdown_multi(m: &MultiForecast) -> String {
    let mut s = format!(
        "# presize forecast — {} horizons from {}\n\n",
        m.forecasts.len(),
        m.now
    );
    s += "| horizon | method | jobs (interval) | GB·h | peak MB | risk | capacity |\n|---|---|---|---:|---:|---:|---|\n";
    for f in &m.forecasts {
        s += &format!(
            "| {} | {} | {:.1} ({:.1} … {:.1}) | {:.2} | {:.0} | {:.0} % | {} |\n",
            fmt_hours(f.horizon_hours),
            f.method,
            f.predicted_jobs,
            f.predicted_jobs_interval.lo,
            f.predicted_jobs_interval.hi,
            f.memory_demand_gbh,
            f.peak_concurrent_mb,
            f.budget_exceed_risk * 100.0,
            f.capacity_advice
        );
    }
    for f in &m.forecasts {
        s += "\n";
        s += &markdown(f)
            .replacen("# ", "## ", 1)
            .replace("\n## ", "\n### ");
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
