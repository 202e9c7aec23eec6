//! The forecast as Markdown (the default output of `presize forecast`).

use super::*;

pub(super) fn fmt_hours(h: f64) -> String {
    if h.fract() == 0.0 {
        format!("{h:.0} h")
    } else {
        format!("{h} h")
    }
}

/// Text that renders as itself in Markdown: no control characters, no HTML tags.
pub(super) fn md_text(s: &str) -> String {
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
pub(super) fn md_cell(s: &str) -> String {
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
