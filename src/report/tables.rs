//! The page's HTML tables: summary chips, coverage warnings, failures, job keys, the
//! `stats` numbers, the model registry and burst periods.

use super::*;

/// Burst periods: when admission let caps exceed the budget, who started it and why.
pub(super) fn bursts_table(h: &mut String, bursts: &[crate::executor::burst::BurstRecord]) {
    h.push_str("<h2>Burst periods</h2>\n");
    if bursts.is_empty() {
        h.push_str("<p class=\"note\">No burst so far: caps never exceeded the host budget.</p>\n");
        return;
    }
    h.push_str("<table id=\"bursts\"><tr><th class=\"k\">host</th><th class=\"k\">from</th><th class=\"k\">to</th><th>factor</th><th class=\"k\">source</th><th class=\"k\">who</th><th class=\"k\">why</th><th class=\"k\">ended early</th></tr>\n");
    for b in bursts {
        let _ = writeln!(
            h,
            "<tr><td class=\"k\">{}</td><td class=\"k\">{}</td><td class=\"k\">{}</td><td>{:.2}</td><td class=\"k\">{}</td><td class=\"k\">{}</td><td class=\"k\">{}</td><td class=\"k\">{}</td></tr>",
            escape(&b.host),
            escape(&b.started_at),
            escape(b.end()),
            b.factor,
            escape(&b.source),
            escape(&b.who),
            escape(&b.why),
            escape(b.end_reason.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>\n");
}

pub(super) fn chips(h: &mut String, s: &Summary) {
    let i = &s.impact;
    let _ = writeln!(
        h,
        "<div class=\"chips\"><span>jobs <b>{}</b></span><span>attempts <b>{}</b></span><span>cap coverage <b>{}</b></span>\
         <span>OOM kills <b>{}</b></span><span>timeouts <b>{}</b></span>\
         <span>slack <b>{:.2} GB·h</b> vs static <b>{:.2} GB·h</b></span>\
         <span>saved <b>{:.2} GB·h</b></span></div>",
        s.jobs,
        s.attempts,
        fmt_pct(s.cap_coverage),
        i.oom_kills,
        i.timeouts,
        i.slack_gbh,
        i.static_slack_gbh,
        i.saved_gbh
    );
}

/// A warning above the charts for each target whose live coverage is clearly below
/// nominal ([`stats::coverage_warning`]), overall and per model version.
pub(super) fn coverage_warnings(h: &mut String, report: &StatsReport) {
    let mut groups: Vec<(String, &Summary)> = vec![("all attempts".into(), &report.overall)];
    for g in &report.by_model_version {
        groups.push((format!("model {}", g.key), &g.summary));
    }
    for (name, s) in groups {
        for t in &s.targets {
            if let Some(w) = stats::coverage_warning(t) {
                let _ = writeln!(
                    h,
                    "<div class=\"warn\" id=\"coverage-warning\">⚠ {}: {}</div>",
                    escape(&name),
                    escape(&w)
                );
            }
        }
    }
}

/// Most rows the failures table lists (newest first).
pub(super) const FAILURE_ROWS: usize = 200;

/// Failed, OOM-killed, timed-out and lost attempts, newest first: key, script, attempt,
/// cap and its source, peak, wall, timeout, exit code.
pub(super) fn failures_table(h: &mut String, rows: &[JobRecord]) {
    let mut failed: Vec<&JobRecord> = rows
        .iter()
        .filter(|r| {
            matches!(
                r.outcome.as_deref(),
                Some("failed" | "oom_killed" | "timed_out" | "lost")
            )
        })
        .collect();
    failed.sort_by(|a, b| b.settled_at.cmp(&a.settled_at).then(b.id.cmp(&a.id)));
    let _ = writeln!(
        h,
        "<h2>Failures</h2>\n<div class=\"sub\">{} failed, OOM-killed, timed-out or lost attempts{}</div>",
        failed.len(),
        if failed.len() > FAILURE_ROWS {
            format!(" (the newest {FAILURE_ROWS} listed)")
        } else {
            String::new()
        }
    );
    if failed.is_empty() {
        h.push_str("<p class=\"note\" id=\"no-failures\">No attempt failed.</p>\n");
        return;
    }
    h.push_str("<table id=\"failures\"><tr><th class=\"k\">settled</th><th class=\"k\">job key</th><th class=\"k\">script</th><th>attempt</th><th class=\"k\">outcome</th><th>cap MB</th><th class=\"k\">cap source</th><th>peak MB</th><th>wall s</th><th>timeout s</th><th class=\"k\">timeout source</th><th>exit</th></tr>\n");
    for r in failed.iter().take(FAILURE_ROWS) {
        let _ = writeln!(
            h,
            "<tr class=\"{}\"><td class=\"k\">{}</td><td class=\"k\">{}</td><td class=\"k\">{}</td><td>{}</td><td class=\"k\">{}</td><td>{}</td><td class=\"k\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"k\">{}</td><td>{}</td></tr>",
            escape(r.outcome.as_deref().unwrap_or("")),
            escape(r.settled_at.as_deref().unwrap_or("-")),
            escape(&r.job_key),
            escape(r.script_path.as_deref().unwrap_or("-")),
            r.attempt,
            escape(r.outcome.as_deref().unwrap_or("")),
            r.applied_memory_mb.map_or("-".into(), |c| c.to_string()),
            source_name(stats::memory_source(r)),
            fmt_opt(r.actual_rss_mb, 1),
            fmt_opt(r.actual_wall_s, 1),
            r.applied_timeout_s.map_or("-".into(), |c| c.to_string()),
            source_name(stats::timeout_source(r)),
            r.exit_code.map_or("-".into(), |c| c.to_string()),
        );
    }
    h.push_str("</table>\n");
}

/// One row per job key: jobs, attempts, outcomes, peak-RSS accuracy, cap coverage, slack.
pub(super) fn keys_table(h: &mut String, rows: &[JobRecord], report: &StatsReport) {
    let mut script: BTreeMap<&str, &str> = BTreeMap::new();
    for r in rows {
        if let Some(s) = r.script_path.as_deref() {
            script.insert(&r.job_key, s);
        }
    }
    h.push_str("<h2>Job keys</h2>\n<table id=\"keys\"><tr><th class=\"k\">job key</th><th class=\"k\">script</th><th>jobs</th><th>attempts</th><th class=\"k\">outcomes</th><th>peak RSS median APE</th><th>peak RSS ≤ upper</th><th>cap coverage</th><th>OOM kills</th><th>timeouts</th><th>slack GB·h</th></tr>\n");
    for g in &report.groups {
        let s = &g.summary;
        let rss = s.targets.iter().find(|t| t.target == "peak_rss_mb");
        let outcomes: Vec<String> = s.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            h,
            "<tr><td class=\"k\">{}</td><td class=\"k\">{}</td><td>{}</td><td>{}</td><td class=\"k\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td></tr>",
            escape(&g.key),
            escape(script.get(g.key.as_str()).copied().unwrap_or("-")),
            s.jobs,
            s.attempts,
            escape(&outcomes.join(", ")),
            fmt_pct(rss.and_then(|t| t.median_ape)),
            fmt_pct(rss.and_then(|t| t.calibration)),
            fmt_pct(s.cap_coverage),
            s.impact.oom_kills,
            s.impact.timeouts,
            s.impact.slack_gbh,
        );
    }
    h.push_str("</table>\n");
}

/// The numbers of `presize stats` (overall and per model version) as two tables.
pub(super) fn stats_tables(h: &mut String, report: &StatsReport) {
    let mut groups: Vec<(String, &Summary)> = vec![("all".into(), &report.overall)];
    for g in &report.by_model_version {
        groups.push((format!("model {}", g.key), &g.summary));
    }
    h.push_str(
        "<h2>Accuracy (the numbers of <code>presize stats</code>)</h2>\n<table id=\"stats\"><tr><th class=\"k\">group</th><th class=\"k\">target</th><th>n</th><th>R²</th><th>MAPE</th><th>median APE</th><th>≤ upper (nominal)</th></tr>\n",
    );
    for (name, s) in &groups {
        for a in &s.targets {
            let _ = writeln!(
                h,
                "<tr><td class=\"k\">{}</td><td class=\"k\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({:.0}%)</td></tr>",
                escape(name),
                a.target,
                a.n,
                fmt_opt(a.r2, 3),
                fmt_pct(a.mape),
                fmt_pct(a.median_ape),
                fmt_pct(a.calibration),
                a.nominal_coverage * 100.0
            );
        }
    }
    h.push_str("</table>\n<h2>Outcomes and impact</h2>\n<table id=\"impact\"><tr><th class=\"k\">group</th><th>attempts</th><th class=\"k\">outcomes</th><th>cap coverage</th><th>under a predicted cap</th><th>slack GB·h</th><th>static GB·h</th><th>saved GB·h</th><th>OOM kills (predicted cap)</th><th>timeouts (predicted timeout)</th><th>rejected</th><th>queue timeouts</th><th>lost</th><th class=\"k\">memory cap sources</th><th class=\"k\">dry run</th></tr>\n");
    for (name, s) in &groups {
        let i = &s.impact;
        let outcomes: Vec<String> = s.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let dry = if i.dry_run.jobs > 0 {
            format!(
                "{} jobs; would OOM {}, time out {}; would save {:.3} GB·h",
                i.dry_run.jobs, i.dry_run.would_oom, i.dry_run.would_timeout, i.dry_run.saved_gbh
            )
        } else {
            "-".into()
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"k\">{}</td><td>{}</td><td class=\"k\">{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{} ({})</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td class=\"k\">{}</td><td class=\"k\">{}</td></tr>",
            escape(name),
            s.attempts,
            escape(&outcomes.join(", ")),
            fmt_pct(s.cap_coverage),
            i.predicted_cap_attempts,
            i.slack_gbh,
            i.static_slack_gbh,
            i.saved_gbh,
            i.oom_kills,
            i.oom_kills_under_predicted,
            i.timeouts,
            i.timeouts_under_predicted,
            i.rejections,
            i.queue_timeouts,
            i.lost,
            escape(
                &i.memory_sources
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            dry
        );
    }
    h.push_str("</table>\n");
}

/// Holdout metric of the candidate for one target, from the registry's metrics JSON.
pub(super) fn holdout(m: &serde_json::Value, target: &str, field: &str) -> Option<f64> {
    m.get("candidate")?
        .get("targets")?
        .as_array()?
        .iter()
        .find(|t| t.get("target").and_then(|v| v.as_str()) == Some(target))?
        .get(field)?
        .as_f64()
}

/// The `model_version` registry, newest first.
pub(super) fn models_table(
    h: &mut String,
    models: &[ModelVersionRecord],
    rows: &[JobRecord],
    report: Option<&StatsReport>,
) {
    h.push_str("<h2>Model versions</h2>\n");
    if models.is_empty() {
        h.push_str("<p class=\"note\">No model has been trained yet (predictions come from the shipped prior); <code>presize retrain</code> adds one here.</p>\n");
        return;
    }
    h.push_str("<table id=\"models\"><tr><th class=\"k\">version</th><th class=\"k\">trained at</th><th>rows</th><th class=\"k\">promoted</th><th>holdout MAPE (peak RSS)</th><th>holdout ≤ upper (peak RSS)</th><th>live ≤ upper (peak RSS)</th><th>attempts in this report</th></tr>\n");
    for m in models.iter().rev() {
        let used = rows.iter().filter(|r| r.model_version == m.version).count();
        let promoted = match (&m.promoted, &m.promoted_at) {
            (true, Some(t)) => format!("yes, {t}"),
            (true, None) => "yes".into(),
            (false, _) => "no".into(),
        };
        let live = report
            .and_then(|r| r.by_model_version.iter().find(|g| g.key == m.version))
            .and_then(|g| g.summary.targets.iter().find(|t| t.target == "peak_rss_mb"));
        let live_cell = match live {
            Some(t) if stats::coverage_warning(t).is_some() => {
                format!("⚠ {} (below nominal)", fmt_pct(t.calibration))
            }
            Some(t) => fmt_pct(t.calibration),
            None => "-".into(),
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"k\">{}</td><td class=\"k\">{}</td><td>{}</td><td class=\"k\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&m.version),
            escape(&m.trained_at),
            m.rows,
            escape(&promoted),
            fmt_pct(holdout(&m.metrics, "peak_rss_mb", "mape")),
            fmt_pct(holdout(&m.metrics, "peak_rss_mb", "coverage")),
            escape(&live_cell),
            used
        );
    }
    h.push_str("</table>\n");
}
