//! What makes the forecast learn: every forecast is recorded (`forecast_record`), scored
//! once its horizon has passed against what then happened (jobs and GB·h settled in it), and
//! the scored errors give each new figure its interval, its risk and its confidence; the
//! weekly profile (same hours of the same weekdays in the last weeks) and the known events
//! from `[forecast]` are computed here too.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use rusqlite::params;
use serde::Serialize;

use crate::store::{Store, StoreError};
use crate::util::{now_rfc3339, rfc3339};

/// Scored forecasts of a horizon needed before their errors give the interval (before, the
/// interval comes from the variance of Poisson counts).
pub const MIN_SCORED: usize = 8;
/// History needed before the weekly profile is used.
pub const PROFILE_MIN_DAYS: f64 = 14.0;
/// Weeks the profile averages at most.
pub const PROFILE_MAX_WEEKS: u32 = 4;
/// Scored forecasts of a horizon read at most (newest first).
pub const MAX_SCORED_READ: usize = 1000;

const WEEK_S: f64 = 7.0 * 86400.0;

fn q(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn at(s: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::try_from_secs_f64(s.max(0.0)).unwrap_or_default()
}

fn parse(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// An interval around a figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
    /// Nominal coverage of `[lo, hi]`.
    pub nominal: f64,
    /// `scored`: quantiles of the errors of past forecasts of this horizon; `model`: the
    /// variance of Poisson job counts under the method (too few scored forecasts yet).
    pub source: &'static str,
}

impl Interval {
    /// The same interval scaled by `k` (e.g. jobs → GB·h).
    pub fn scaled(self, k: f64) -> Interval {
        Interval {
            lo: self.lo * k,
            hi: self.hi * k,
            ..self
        }
    }
}

/// A recorded forecast whose horizon has passed and which has been scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub made_at: String,
    pub method: String,
    pub trend_jobs: f64,
    pub profile_jobs: Option<f64>,
    pub event_factor: f64,
    pub predicted_jobs: f64,
    pub jobs_lo: f64,
    pub jobs_hi: f64,
    pub interval_source: String,
    pub predicted_gbh: f64,
    pub actual_jobs: f64,
    pub actual_gbh: f64,
}

impl Scored {
    /// The jobs figure `method` gave (with the events applied), if it gave one.
    pub fn figure(&self, method: &str) -> Option<f64> {
        match method {
            super::METHOD_PROFILE => self.profile_jobs.map(|p| p * self.event_factor),
            _ => Some(self.trend_jobs * self.event_factor),
        }
    }
}

/// One forecast figure to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecord<'a> {
    pub made_at: &'a str,
    pub trigger: &'a str,
    pub horizon_hours: f64,
    pub method: &'a str,
    pub trend_jobs: f64,
    pub profile_jobs: Option<f64>,
    pub event_factor: f64,
    pub predicted_jobs: f64,
    pub jobs: Interval,
    pub predicted_gbh: f64,
    pub gbh: Interval,
    pub peak_concurrent_mb: f64,
    pub budget_mb: u64,
}

/// Record a forecast figure; returns its id.
pub fn record(store: &Store, r: &NewRecord<'_>) -> Result<i64, StoreError> {
    let made = parse(r.made_at).unwrap_or_else(SystemTime::now);
    let end = made + Duration::try_from_secs_f64(r.horizon_hours * 3600.0).unwrap_or_default();
    store
        .conn()
        .execute(
            "INSERT INTO forecast_record (made_at, recorded_at, trigger, horizon_hours, target_end,
                method, trend_jobs, profile_jobs, event_factor, predicted_jobs, jobs_lo, jobs_hi,
                interval_nominal, interval_source, predicted_gbh, gbh_lo, gbh_hi,
                peak_concurrent_mb, budget_mb)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18, ?19)",
            params![
                rfc3339(made),
                now_rfc3339(),
                r.trigger,
                r.horizon_hours,
                rfc3339(end),
                r.method,
                r.trend_jobs,
                r.profile_jobs,
                r.event_factor,
                r.predicted_jobs,
                r.jobs.lo,
                r.jobs.hi,
                r.jobs.nominal,
                r.jobs.source,
                r.predicted_gbh,
                r.gbh.lo,
                r.gbh.hi,
                r.peak_concurrent_mb,
                r.budget_mb as i64
            ],
        )
        .map_err(q("recording a forecast"))?;
    Ok(store.conn().last_insert_rowid())
}

/// Score every recorded forecast whose horizon ended at or before `now`: the jobs and GB·h
/// that settled in `(made_at, target_end]`. Returns how many were scored.
pub fn score_pending(store: &Store, now: SystemTime) -> Result<usize, StoreError> {
    let pending: Vec<(i64, String, String)> = {
        let mut st = store
            .conn()
            .prepare(
                "SELECT id, made_at, target_end FROM forecast_record
                 WHERE scored_at IS NULL AND target_end <= ?1 ORDER BY id",
            )
            .map_err(q("reading forecasts to score"))?;
        let rows = st
            .query_map([rfc3339(now)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(q("reading forecasts to score"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(q("reading forecasts to score"))?;
        rows
    };
    let ms = Duration::from_millis(1);
    let mut n = 0;
    for (id, made, end) in pending {
        let (Some(m), Some(e)) = (parse(&made), parse(&end)) else {
            continue;
        };
        let rows = store.settled_between(&rfc3339(m + ms), &rfc3339(e + ms))?;
        let jobs: BTreeSet<&str> = rows.iter().map(|r| r.job_id.as_str()).collect();
        let gbh: f64 = rows.iter().map(super::held_gbh).sum();
        n += store
            .conn()
            .execute(
                "UPDATE forecast_record SET actual_jobs = ?2, actual_gbh = ?3, scored_at = ?4
                 WHERE id = ?1 AND scored_at IS NULL",
                params![id, jobs.len() as f64, gbh, now_rfc3339()],
            )
            .map_err(q("scoring a forecast"))?;
    }
    Ok(n)
}

const SCORED_COLUMNS: &str = "made_at, method, trend_jobs, profile_jobs, event_factor, \
    predicted_jobs, jobs_lo, jobs_hi, interval_source, predicted_gbh, actual_jobs, actual_gbh";

fn scored_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Scored> {
    Ok(Scored {
        made_at: r.get(0)?,
        method: r.get(1)?,
        trend_jobs: r.get(2)?,
        profile_jobs: r.get(3)?,
        event_factor: r.get(4)?,
        predicted_jobs: r.get(5)?,
        jobs_lo: r.get(6)?,
        jobs_hi: r.get(7)?,
        interval_source: r.get(8)?,
        predicted_gbh: r.get(9)?,
        actual_jobs: r.get(10)?,
        actual_gbh: r.get(11)?,
    })
}

/// Scored forecasts of one horizon whose horizon ended by `now`, newest first.
pub fn scored(
    store: &Store,
    horizon_hours: f64,
    now: SystemTime,
) -> Result<Vec<Scored>, StoreError> {
    let mut st = store
        .conn()
        .prepare(&format!(
            "SELECT {SCORED_COLUMNS} FROM forecast_record
             WHERE horizon_hours = ?1 AND scored_at IS NOT NULL AND target_end <= ?2
             ORDER BY made_at DESC, id DESC LIMIT ?3"
        ))
        .map_err(q("reading scored forecasts"))?;
    let rows = st
        .query_map(
            params![horizon_hours, rfc3339(now), MAX_SCORED_READ as i64],
            scored_from_row,
        )
        .map_err(q("reading scored forecasts"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(q("reading scored forecasts"))?;
    Ok(rows)
}

/// How good past forecasts of one horizon were.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HorizonAccuracy {
    pub horizon_hours: f64,
    /// Scored forecasts.
    pub scored: usize,
    /// Mean |predicted − actual| jobs over the horizon.
    pub jobs_mae: f64,
    /// Mean |predicted − actual| / max(actual, 1), jobs.
    pub jobs_rel_error: f64,
    /// Mean |predicted − actual| / max(actual, 1 GB·h), memory demand.
    pub gbh_rel_error: f64,
    /// Share of scored forecasts whose actual job count fell in their recorded interval.
    pub interval_coverage: f64,
    /// The same, over forecasts whose interval came from scored errors.
    pub scored_interval_coverage: Option<f64>,
    pub nominal: f64,
    /// Mean absolute error of each method's figure over the forecasts that had both.
    pub trend_mae: Option<f64>,
    pub profile_mae: Option<f64>,
    pub compared: usize,
}

/// Summarise scored forecasts of one horizon.
pub fn accuracy_of(horizon_hours: f64, rows: &[Scored], nominal: f64) -> Option<HorizonAccuracy> {
    if rows.is_empty() {
        return None;
    }
    let n = rows.len() as f64;
    let mean = |f: &dyn Fn(&Scored) -> f64| rows.iter().map(f).sum::<f64>() / n;
    let within = |r: &Scored| r.actual_jobs >= r.jobs_lo && r.actual_jobs <= r.jobs_hi;
    let from_scores: Vec<&Scored> = rows
        .iter()
        .filter(|r| r.interval_source == "scored")
        .collect();
    let both: Vec<(f64, f64, f64)> = rows
        .iter()
        .filter_map(|r| {
            Some((
                r.figure(super::METHOD_TREND)?,
                r.figure(super::METHOD_PROFILE)?,
                r.actual_jobs,
            ))
        })
        .collect();
    let m = both.len() as f64;
    Some(HorizonAccuracy {
        horizon_hours,
        scored: rows.len(),
        jobs_mae: mean(&|r| (r.predicted_jobs - r.actual_jobs).abs()),
        jobs_rel_error: mean(&|r| {
            (r.predicted_jobs - r.actual_jobs).abs() / r.actual_jobs.max(1.0)
        }),
        gbh_rel_error: mean(&|r| (r.predicted_gbh - r.actual_gbh).abs() / r.actual_gbh.max(1.0)),
        interval_coverage: rows.iter().filter(|r| within(r)).count() as f64 / n,
        scored_interval_coverage: (!from_scores.is_empty()).then(|| {
            from_scores.iter().filter(|r| within(r)).count() as f64 / from_scores.len() as f64
        }),
        nominal,
        trend_mae: (m > 0.0).then(|| both.iter().map(|(t, _, a)| (t - a).abs()).sum::<f64>() / m),
        profile_mae: (m > 0.0).then(|| both.iter().map(|(_, p, a)| (p - a).abs()).sum::<f64>() / m),
        compared: both.len(),
    })
}

/// Accuracy of every horizon forecast so far (scored by `now`), shortest horizon first.
pub fn accuracy(
    store: &Store,
    now: SystemTime,
    nominal: f64,
) -> Result<Vec<HorizonAccuracy>, StoreError> {
    let horizons: Vec<f64> = {
        let mut st = store
            .conn()
            .prepare(
                "SELECT DISTINCT horizon_hours FROM forecast_record
                 WHERE scored_at IS NOT NULL ORDER BY horizon_hours",
            )
            .map_err(q("reading forecast horizons"))?;
        let rows = st
            .query_map([], |r| r.get(0))
            .map_err(q("reading forecast horizons"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(q("reading forecast horizons"))?;
        rows
    };
    let mut out = Vec::new();
    for h in horizons {
        if let Some(a) = accuracy_of(h, &scored(store, h, now)?, nominal) {
            out.push(a);
        }
    }
    Ok(out)
}

/// Errors of `method` over scored forecasts on the square-root scale, √actual − √figure:
/// for Poisson-like counts their spread hardly depends on the level, so errors made at busy
/// and quiet times can be pooled.
pub fn residuals(rows: &[Scored], method: &str) -> Vec<f64> {
    rows.iter()
        .filter_map(|r| Some(r.actual_jobs.max(0.0).sqrt() - r.figure(method)?.max(0.0).sqrt()))
        .filter(|x| x.is_finite())
        .collect()
}

/// The `k`-th smallest (1-based, clamped to the range) of sorted values.
fn order_stat(sorted: &[f64], k: usize) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n => sorted[k.clamp(1, n) - 1],
    }
}

/// Standard normal CDF (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// z with Φ(z) = p, by bisection on [`normal_cdf`].
pub fn normal_quantile(p: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    let (mut lo, mut hi) = (-10.0f64, 10.0f64);
    for _ in 0..80 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// How a job-count figure is spread, on the square-root scale: its errors so far, or a
/// count variance.
#[derive(Debug, Clone, PartialEq)]
pub enum Spread {
    /// Sorted errors √actual − √figure of past forecasts (at least [`MIN_SCORED`]).
    Scored(Vec<f64>),
    /// Variance of (figure − actual) per expected job, for Poisson counts; on the
    /// square-root scale its standard deviation is √var_per_job / 2.
    Model { var_per_job: f64 },
}

impl Spread {
    /// The scored errors when there are enough, else the count model.
    pub fn new(mut residuals: Vec<f64>, var_per_job: f64) -> Spread {
        if residuals.len() >= MIN_SCORED {
            residuals.sort_by(f64::total_cmp);
            Spread::Scored(residuals)
        } else {
            Spread::Model { var_per_job }
        }
    }

    /// The interval of nominal coverage `c` around `jobs`. From scored errors: the
    /// split-conformal order statistics ⌊(n+1)(1−c)/2⌋ and ⌈(n+1)(1+c)/2⌉ (the extremes
    /// while n is small), so the coverage holds for exchangeable errors.
    pub fn interval(&self, jobs: f64, c: f64) -> Interval {
        let root = jobs.max(0.0).sqrt();
        let back = |e: f64| (root + e).max(0.0).powi(2);
        match self {
            Spread::Scored(r) => {
                let n1 = (r.len() + 1) as f64;
                // The epsilon keeps 20 × 0.1 from flooring to 1 through rounding.
                let k_lo = (n1 * (1.0 - c) / 2.0 + 1e-9).floor() as usize;
                let k_hi = (n1 * (1.0 + c) / 2.0 - 1e-9).ceil() as usize;
                Interval {
                    lo: back(order_stat(r, k_lo)),
                    hi: back(order_stat(r, k_hi)),
                    nominal: c,
                    source: "scored",
                }
            }
            Spread::Model { var_per_job } => {
                let z = normal_quantile((1.0 + c) / 2.0);
                let sd = var_per_job.sqrt() / 2.0;
                Interval {
                    lo: back(-z * sd),
                    hi: back(z * sd),
                    nominal: c,
                    source: "model",
                }
            }
        }
    }

    /// Probability that the realised job count exceeds `threshold`.
    pub fn p_exceed(&self, jobs: f64, threshold: f64) -> f64 {
        let root = jobs.max(0.0).sqrt();
        match self {
            Spread::Scored(r) => {
                let over = r
                    .iter()
                    .filter(|e| (root + *e).max(0.0).powi(2) > threshold)
                    .count();
                over as f64 / r.len() as f64
            }
            Spread::Model { var_per_job } => {
                let sd = var_per_job.sqrt() / 2.0;
                1.0 - normal_cdf((threshold.max(0.0).sqrt() - root) / sd)
            }
        }
    }
}

/// Jobs settled in `(from, to]`, counting a job once.
fn jobs_in(store: &Store, from: SystemTime, to: SystemTime) -> Result<f64, StoreError> {
    let ms = Duration::from_millis(1);
    store
        .conn()
        .query_row(
            "SELECT count(DISTINCT job_id) FROM resource_prediction
             WHERE settled_at >= ?1 AND settled_at < ?2",
            [rfc3339(from + ms), rfc3339(to + ms)],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n as f64)
        .map_err(q("counting jobs for the weekly profile"))
}

/// The weekly profile's figure for `(now, now + h]`: the mean number of jobs in the same
/// hours of the same weekdays in each of the last (up to [`PROFILE_MAX_WEEKS`]) weeks,
/// skipping weeks in which a maintenance window overlapped those hours. `None` until the
/// history spans [`PROFILE_MIN_DAYS`] days, for horizons over a week, or when no week is
/// usable. Returns (jobs, weeks averaged).
pub fn profile_jobs(
    store: &Store,
    now: SystemTime,
    horizon_hours: f64,
    maintenance: &[(SystemTime, SystemTime)],
) -> Result<Option<(f64, u32)>, StoreError> {
    let h = horizon_hours * 3600.0;
    if h > WEEK_S {
        return Ok(None);
    }
    let first: Option<String> = store
        .conn()
        .query_row(
            "SELECT min(settled_at) FROM resource_prediction WHERE settled_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .map_err(q("reading the first settled job"))?;
    let Some(first) = first.as_deref().and_then(parse) else {
        return Ok(None);
    };
    let span = secs(now) - secs(first);
    if span < PROFILE_MIN_DAYS * 86400.0 {
        return Ok(None);
    }
    let mut counts = Vec::new();
    for k in 1..=PROFILE_MAX_WEEKS {
        let from = secs(now) - k as f64 * WEEK_S;
        let to = from + h;
        if from < secs(first) {
            break;
        }
        let overlaps = maintenance
            .iter()
            .any(|(a, b)| secs(*a) < to && secs(*b) > from);
        if overlaps {
            continue;
        }
        counts.push(jobs_in(store, at(from), at(to))?);
    }
    if counts.is_empty() {
        return Ok(None);
    }
    let n = counts.len();
    Ok(Some((counts.iter().sum::<f64>() / n as f64, n as u32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_functions_agree() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959964) - 0.975).abs() < 1e-6);
        assert!((normal_quantile(0.9) - 1.281552).abs() < 1e-5);
        assert!((normal_quantile(0.1) + 1.281552).abs() < 1e-5);
    }

    #[test]
    fn spreads_give_ordered_intervals_and_risks() {
        let m = Spread::new(vec![0.0; 3], 1.0);
        assert!(matches!(m, Spread::Model { .. }));
        // √100 ± 1.2816 × ½ → (10 ± 0.6408)².
        let i = m.interval(100.0, 0.8);
        assert!((i.hi - 10.6408f64.powi(2)).abs() < 1e-2, "{i:?}");
        assert!((i.lo - 9.3592f64.powi(2)).abs() < 1e-2, "{i:?}");
        assert!((m.p_exceed(100.0, 100.0) - 0.5).abs() < 1e-6);
        // 19 errors −0.9 … 0.9: (n+1)·0.1 = 2nd and (n+1)·0.9 = 18th smallest.
        let s = Spread::new((0..19).map(|k| (k as f64 - 9.0) / 10.0).collect(), 1.0);
        let i = s.interval(9.0, 0.8);
        assert_eq!(i.source, "scored");
        assert!((i.lo - 2.2f64.powi(2)).abs() < 1e-9, "{i:?}");
        assert!((i.hi - 3.8f64.powi(2)).abs() < 1e-9, "{i:?}");
        assert!((s.p_exceed(9.0, 9.0) - 9.0 / 19.0).abs() < 1e-9);
        assert_eq!(s.p_exceed(9.0, 1e9), 0.0);
    }
}
