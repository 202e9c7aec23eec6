//! The forecast itself: the two windows' figures, the damped trend or weekly profile, the
//! budget risk, the posture and the recommended actions.

use super::*;

pub(super) fn window(rows: &[JobRecord], (from, to): (&str, &str)) -> Window {
    let jobs: BTreeSet<&str> = rows.iter().map(|r| r.job_id.as_str()).collect();
    Window {
        from: from.to_string(),
        to: to.to_string(),
        jobs: jobs.len(),
        attempts: rows.len(),
    }
}

/// GB·h an attempt held: applied cap × wall (0 when it did not run).
pub(super) fn held_gbh(r: &JobRecord) -> f64 {
    match (r.applied_memory_mb, r.actual_wall_s) {
        (Some(c), Some(w)) if c > 0 && w.is_finite() && w > 0.0 => {
            c as f64 / MIB_PER_GIB * w / 3600.0
        }
        _ => 0.0,
    }
}

pub(super) fn is_failure(r: &JobRecord) -> bool {
    matches!(
        r.outcome.as_deref(),
        Some("failed" | "oom_killed" | "timed_out" | "lost")
    )
}

/// Peak of Σ applied caps over attempts running at the same time.
pub(super) fn peak_concurrent_mb(rows: &[JobRecord]) -> f64 {
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

pub(super) fn callers(rows: &[JobRecord]) -> Vec<Caller> {
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

/// Urgency of an action about the horizon: immediate when the budget is likely (≥ 50 %)
/// exceeded within the hour, soon within a day, planned beyond.
pub(super) fn urgency(hours_ahead: f64, risk: f64) -> &'static str {
    if hours_ahead <= 1.0 && risk >= 0.5 {
        "immediate"
    } else if hours_ahead <= 24.0 {
        "soon"
    } else {
        "planned"
    }
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
