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

mod compute;
mod config;
pub mod learn;
mod markdown;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::stats::{self, StatsOptions};
use crate::store::{JobRecord, Store, StoreError};
use crate::util::rfc3339;

pub use compute::compute;
use compute::held_gbh;
use config::event_factor;
pub use config::{event_effects, EventConfig, EventEffect, EventKind, ForecastConfig};
use markdown::fmt_hours;
pub use markdown::{markdown, markdown_multi, MultiForecast};

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

#[cfg(test)]
mod tests;
