//! `presize report`: one self-contained HTML page — inline SVG and CSS, no script, no
//! network — with predicted-vs-actual scatters (caps marked by limit source), calibration
//! per model version with a warning when live coverage falls below nominal, memory slack
//! over time, the failed / OOM-killed / timed-out attempts, a per-job-key table, the
//! `stats` numbers and the model registry.
//!
//! Every number comes from [`crate::stats`], so the page and `presize stats` agree. The
//! charts are written by hand: a few hundred lines of SVG replace a plotting crate (see
//! README "Report").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use crate::numfmt::{fmt_opt, fmt_pct};
use crate::stats::{self, GroupBy, StatsOptions, StatsReport, Summary};
use crate::store::{JobRecord, ModelVersionRecord};

/// What the page is built from.
#[derive(Debug, Clone)]
pub struct ReportInput<'a> {
    /// Settled rows (any order).
    pub rows: &'a [JobRecord],
    /// The `model_version` registry.
    pub models: &'a [ModelVersionRecord],
    /// The `--last N` the rows were read with.
    pub window: usize,
    pub opts: StatsOptions,
    /// When the page was made (RFC 3339), shown in the header.
    pub generated_at: String,
    /// Where the rows came from, shown in the header.
    pub source: String,
    /// Burst periods (newest first), shown in their own table.
    pub bursts: &'a [crate::executor::burst::BurstRecord],
}

/// One scatter: a target, how to read it from a row, and the smallest value a log axis shows.
struct Target {
    /// Name as in `presize stats` (also the SVG id suffix: `scatter-<name>`).
    name: &'static str,
    title: &'static str,
    unit: &'static str,
    floor: f64,
    get: fn(&JobRecord) -> (Option<f64>, Option<f64>),
}

const TARGETS: [Target; 3] = [
    Target {
        name: "cpu_seconds",
        title: "CPU time",
        unit: "s",
        floor: 0.01,
        get: |r| (r.predicted_cpu_s, r.actual_cpu_s),
    },
    Target {
        name: "peak_rss_mb",
        title: "Peak memory (RSS)",
        unit: "MB",
        floor: 1.0,
        get: |r| (r.predicted_rss_mb, r.actual_rss_mb),
    },
    Target {
        name: "wall_seconds",
        title: "Wall time",
        unit: "s",
        floor: 0.01,
        get: |r| (r.predicted_wall_s, r.actual_wall_s),
    },
];

/// Escape text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "
body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;margin:16px 20px;color:#222;background:#fff;font-size:13px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:18px 0 6px}
.meta{color:#555;margin-bottom:8px}
.chips span{display:inline-block;border:1px solid #ccc;border-radius:4px;padding:3px 8px;margin:0 6px 4px 0}
.row{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:4px;padding:6px;width:fit-content}
.card h3{font-size:13px;margin:0 0 2px}.card .sub{color:#555;font-size:11px;margin-bottom:2px;width:0;min-width:100%}
svg text{font-family:inherit;font-size:10px;fill:#333}
.grid{stroke:#e6e6e6}.axis{stroke:#888}.diag{stroke:#555;stroke-dasharray:5 4}
.pt{stroke:#fff;stroke-width:.6;fill-opacity:.85}
.ok{fill:#1f77b4}.failed{fill:#7f7f7f}.oom_killed{fill:#d62728}.timed_out{fill:#ff7f0e}.other{fill:#9467bd}
.cap{stroke:#2ca02c;stroke-width:1.6}
.cap[data-source=static]{stroke:#8c8c8c;stroke-dasharray:2 1.5}.cap[data-source=override]{stroke:#8c564b}.cap[data-source=dry-run]{stroke:#e377c2;stroke-dasharray:2 1.5}
tr.oom_killed td{background:#fbe0e0}tr.timed_out td{background:#fde9cf}tr.lost td{background:#ece6f5}
.warn{background:#fff3cd;border:1px solid #d6a100;border-radius:4px;padding:5px 9px;margin:4px 0 6px;color:#5c4400}
.bar0{fill:#9467bd}.bar1{fill:#1f77b4}.bar2{fill:#17becf}
.nominal{stroke:#d62728;stroke-dasharray:4 3}
.l-presize{fill:none;stroke:#1f77b4;stroke-width:2}.l-static{fill:none;stroke:#ff7f0e;stroke-width:2}
table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ddd;padding:2px 7px;text-align:right}
th{background:#f4f4f4}td.k,th.k{text-align:left;max-width:260px;overflow-wrap:anywhere}
.note{color:#555;font-style:italic}
";

/// Render the page.
pub fn render(input: &ReportInput<'_>) -> String {
    let mut h = String::with_capacity(64 * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<title>presize report</title><style>");
    h.push_str(CSS);
    h.push_str("</style></head><body>\n<h1>presize report</h1>\n");
    let _ = writeln!(
        h,
        "<div class=\"meta\">{} settled attempts (last {} requested) from {} · generated {}</div>",
        input.rows.len(),
        input.window,
        escape(&input.source),
        escape(&input.generated_at)
    );
    if input.rows.is_empty() {
        h.push_str(
            "<p class=\"empty\">Nothing to report yet: no job has been settled in this store. \
             Run jobs with <code>presize run -- CMD</code>, then make the report again.</p>\n",
        );
        models_table(&mut h, input.models, input.rows, None);
        bursts_table(&mut h, input.bursts);
        h.push_str("</body></html>\n");
        return h;
    }
    let report = stats::compute(input.rows, input.window, Some(GroupBy::JobKey), &input.opts);
    chips(&mut h, &report.overall);
    coverage_warnings(&mut h, &report);
    h.push_str("<h2>Predicted vs actual</h2>\n<div class=\"row\">\n");
    for t in &TARGETS {
        scatter(&mut h, t, input.rows, &report.overall);
    }
    h.push_str("</div>\n<div class=\"row\">\n<div>\n<h2>Calibration</h2>\n");
    calibration(&mut h, input.rows, &report);
    h.push_str("</div>\n<div>\n<h2>Memory slack over time</h2>\n");
    slack(&mut h, input.rows, &input.opts, &report.overall);
    h.push_str("</div>\n</div>\n");
    failures_table(&mut h, input.rows);
    keys_table(&mut h, input.rows, &report);
    stats_tables(&mut h, &report);
    models_table(&mut h, input.models, input.rows, Some(&report));
    bursts_table(&mut h, input.bursts);
    h.push_str("</body></html>\n");
    h
}

/// Burst periods: when admission let caps exceed the budget, who started it and why.
fn bursts_table(h: &mut String, bursts: &[crate::executor::burst::BurstRecord]) {
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

fn chips(h: &mut String, s: &Summary) {
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

/// A log10 axis mapping values to pixels.
struct LogAxis {
    lo: i32,
    hi: i32,
    px0: f64,
    px1: f64,
}

impl LogAxis {
    fn covering(min: f64, max: f64, px0: f64, px1: f64) -> Self {
        let lo = min.log10().floor() as i32;
        let mut hi = max.log10().ceil() as i32;
        if hi <= lo {
            hi = lo + 1;
        }
        LogAxis { lo, hi, px0, px1 }
    }

    fn at(&self, v: f64) -> f64 {
        let f = (v.log10() - f64::from(self.lo)) / f64::from(self.hi - self.lo);
        self.px0 + f * (self.px1 - self.px0)
    }
}

fn decade_label(e: i32) -> String {
    match e {
        i32::MIN..=-1 => format!("{}", 10f64.powi(e)),
        0..=2 => format!("{}", 10i64.pow(e as u32)),
        3..=5 => format!("{}k", 10i64.pow((e - 3) as u32)),
        6..=8 => format!("{}M", 10i64.pow((e - 6) as u32)),
        _ => format!("1e{e}"),
    }
}

fn outcome_class(o: Option<&str>) -> &'static str {
    match o {
        Some("ok") => "ok",
        Some("failed") => "failed",
        Some("oom_killed") => "oom_killed",
        Some("timed_out") => "timed_out",
        _ => "other",
    }
}

const SW: f64 = 360.0;
const SH: f64 = 330.0;
const ML: f64 = 48.0;
const MR: f64 = 12.0;
const MT: f64 = 10.0;
const MB: f64 = 40.0;

fn scatter(h: &mut String, t: &Target, rows: &[JobRecord], overall: &Summary) {
    let clamp = |v: f64| v.max(t.floor);
    let pts: Vec<(&JobRecord, f64, f64)> = rows
        .iter()
        .filter_map(|r| match (t.get)(r) {
            (Some(p), Some(a)) if p.is_finite() && a.is_finite() && p >= 0.0 && a >= 0.0 => {
                Some((r, clamp(p), clamp(a)))
            }
            _ => None,
        })
        .collect();
    let is_rss = t.name == "peak_rss_mb";
    let caps: Vec<(f64, f64, &JobRecord)> = if is_rss {
        pts.iter()
            .filter_map(|(r, p, _)| {
                r.applied_memory_mb
                    .filter(|c| *c > 0)
                    .map(|c| (*p, clamp(c as f64), *r))
            })
            .collect()
    } else {
        Vec::new()
    };
    let acc = overall.targets.iter().find(|a| a.target == t.name);
    let _ = writeln!(
        h,
        "<div class=\"card\"><h3>{} ({})</h3><div class=\"sub\">{} attempts plotted · R² {} · MAPE {} · median APE {}</div>",
        t.title,
        t.unit,
        pts.len(),
        fmt_opt(acc.and_then(|a| a.r2), 3),
        fmt_pct(acc.and_then(|a| a.mape)),
        fmt_pct(acc.and_then(|a| a.median_ape)),
    );
    let _ = write!(
        h,
        "<svg id=\"scatter-{}\" width=\"{SW}\" height=\"{SH}\" viewBox=\"0 0 {SW} {SH}\" role=\"img\" aria-label=\"{} predicted against actual\">",
        t.name, t.title
    );
    if pts.is_empty() {
        let _ = writeln!(
            h,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no measured attempts</text></svg></div>",
            SW / 2.0,
            SH / 2.0
        );
        return;
    }
    let (mut min, mut max) = (f64::INFINITY, 0.0f64);
    for (_, p, a) in &pts {
        min = min.min(*p).min(*a);
        max = max.max(*p).max(*a);
    }
    for (_, c, _) in &caps {
        min = min.min(*c);
        max = max.max(*c);
    }
    let x = LogAxis::covering(min, max, ML, SW - MR);
    let y = LogAxis::covering(min, max, SH - MB, MT);
    let step = if x.hi - x.lo > 8 { 2 } else { 1 };
    for e in (x.lo..=x.hi).step_by(step) {
        let v = 10f64.powi(e);
        let (px, py) = (x.at(v), y.at(v));
        let _ = write!(
            h,
            "<line class=\"grid\" x1=\"{px:.1}\" y1=\"{MT}\" x2=\"{px:.1}\" y2=\"{:.1}\"/>\
             <line class=\"grid\" x1=\"{ML}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\"/>\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            SH - MB,
            SW - MR,
            SH - MB + 13.0,
            decade_label(e),
            ML - 4.0,
            py + 3.0,
            decade_label(e)
        );
    }
    let _ = write!(
        h,
        "<rect x=\"{ML}\" y=\"{MT}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" class=\"axis\" stroke=\"#888\"/>",
        SW - MR - ML,
        SH - MB - MT
    );
    let (d0, d1) = (10f64.powi(x.lo), 10f64.powi(x.hi));
    let _ = write!(
        h,
        "<line class=\"diag\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"><title>y = x</title></line>",
        x.at(d0),
        y.at(d0),
        x.at(d1),
        y.at(d1)
    );
    let _ = write!(
        h,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">predicted ({})</text>\
         <text transform=\"translate(11 {:.1}) rotate(-90)\" text-anchor=\"middle\">actual ({})</text>",
        (ML + SW - MR) / 2.0,
        SH - 8.0,
        t.unit,
        (MT + SH - MB) / 2.0,
        t.unit
    );
    for (p, c, r) in &caps {
        let (cx, cy) = (x.at(*p), y.at(*c));
        let _ = write!(
            h,
            "<line class=\"cap\" data-source=\"{src}\" x1=\"{:.1}\" y1=\"{cy:.1}\" x2=\"{:.1}\" y2=\"{cy:.1}\"><title>{} · applied cap {} MB ({src})</title></line>",
            cx - 5.0,
            cx + 5.0,
            escape(&r.job_key),
            r.applied_memory_mb.unwrap_or(0),
            src = source_name(stats::memory_source(r)),
        );
    }
    for (r, p, a) in &pts {
        let _ = write!(
            h,
            "<circle class=\"pt {}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\"><title>{} · attempt {} · {} · predicted {} {} · actual {} {}</title></circle>",
            outcome_class(r.outcome.as_deref()),
            x.at(*p),
            y.at(*a),
            escape(&r.job_key),
            r.attempt,
            escape(r.outcome.as_deref().unwrap_or("unsettled")),
            sig(*p),
            t.unit,
            sig(*a),
            t.unit
        );
    }
    legend(h, &pts, &caps);
    h.push_str("</svg></div>\n");
}

/// Outcome colours present in a scatter (and the cap mark), top left inside the plot.
fn legend(h: &mut String, pts: &[(&JobRecord, f64, f64)], caps: &[(f64, f64, &JobRecord)]) {
    let mut present: Vec<&'static str> = Vec::new();
    for (r, _, _) in pts {
        let c = outcome_class(r.outcome.as_deref());
        if !present.contains(&c) {
            present.push(c);
        }
    }
    let mut yy = MT + 12.0;
    for c in present {
        let _ = write!(
            h,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"7\" height=\"7\" class=\"{c}\"/><text x=\"{:.1}\" y=\"{:.1}\">{c}</text>",
            ML + 6.0,
            yy - 7.0,
            ML + 16.0,
            yy
        );
        yy += 12.0;
    }
    let mut sources: Vec<&'static str> = Vec::new();
    for (_, _, r) in caps {
        let s = source_name(stats::memory_source(r));
        if !sources.contains(&s) {
            sources.push(s);
        }
    }
    sources.sort();
    for s in sources {
        let _ = write!(
            h,
            "<line class=\"cap legend\" data-source=\"{s}\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\">cap: {s}</text>",
            ML + 5.0,
            yy - 3.5,
            ML + 13.0,
            yy - 3.5,
            ML + 16.0,
            yy
        );
        yy += 12.0;
    }
}

fn source_name(s: Option<crate::job::LimitSource>) -> &'static str {
    s.map_or("unknown", |s| s.as_str())
}

/// A warning above the charts for each target whose live coverage is clearly below
/// nominal ([`stats::coverage_warning`]), overall and per model version.
fn coverage_warnings(h: &mut String, report: &StatsReport) {
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
const FAILURE_ROWS: usize = 200;

/// Failed, OOM-killed, timed-out and lost attempts, newest first: key, script, attempt,
/// cap and its source, peak, wall, timeout, exit code.
fn failures_table(h: &mut String, rows: &[JobRecord]) {
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
fn keys_table(h: &mut String, rows: &[JobRecord], report: &StatsReport) {
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

/// A number with three significant digits, for tooltips.
fn sig(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Model versions in the order they were first used.
fn version_order(rows: &[JobRecord]) -> Vec<String> {
    let mut first: BTreeMap<&str, &str> = BTreeMap::new();
    for r in rows {
        let e = first.entry(&r.model_version).or_insert(&r.predicted_at);
        if r.predicted_at.as_str() < *e {
            *e = &r.predicted_at;
        }
    }
    let mut v: Vec<(&str, &str)> = first.into_iter().map(|(k, t)| (t, k)).collect();
    v.sort();
    v.into_iter().map(|(_, k)| k.to_string()).collect()
}

/// Calibration: share of actuals at or below the predicted upper bound, per model version
/// and target, against the nominal coverage.
fn calibration(h: &mut String, rows: &[JobRecord], report: &StatsReport) {
    const W: f64 = 540.0;
    const LABEL: f64 = 200.0;
    const BAR: f64 = 9.0;
    const MAX_VERSIONS: usize = 10;
    let order = version_order(rows);
    let shown: Vec<&String> = order.iter().rev().take(MAX_VERSIONS).rev().collect();
    let groups: Vec<&stats::Group> = shown
        .iter()
        .filter_map(|v| report.by_model_version.iter().find(|g| &g.key == *v))
        .collect();
    let nominal = report
        .overall
        .targets
        .first()
        .map_or(0.95, |t| t.nominal_coverage);
    let band = 3.0 * BAR + 10.0;
    let height = 30.0 + band * groups.len() as f64 + 34.0;
    let _ = write!(
        h,
        "<div class=\"card\"><div class=\"sub\">share of actuals ≤ predicted upper bound (ok attempts), per model version; dashed: nominal {:.0} %</div>\
         <svg id=\"calibration\" width=\"{W}\" height=\"{height:.0}\" viewBox=\"0 0 {W} {height:.0}\" role=\"img\" aria-label=\"calibration per model version\">",
        nominal * 100.0
    );
    let x0 = LABEL;
    let x1 = W - 40.0;
    let xa = |f: f64| x0 + f.clamp(0.0, 1.0) * (x1 - x0);
    let top = 22.0;
    let bottom = top + band * groups.len() as f64;
    for k in 0..=4 {
        let f = f64::from(k) * 0.25;
        let _ = write!(
            h,
            "<line class=\"grid\" x1=\"{:.1}\" y1=\"{top}\" x2=\"{:.1}\" y2=\"{bottom:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0} %</text>",
            xa(f),
            xa(f),
            xa(f),
            bottom + 13.0,
            f * 100.0
        );
    }
    for (i, g) in groups.iter().enumerate() {
        let y0 = top + band * i as f64 + 5.0;
        let label: String = if g.key.chars().count() > 28 {
            let tail: String = g
                .key
                .chars()
                .rev()
                .take(27)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("…{tail}")
        } else {
            g.key.clone()
        };
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\"><title>{}</title>{} ({})</text>",
            LABEL - 6.0,
            y0 + 1.5 * BAR + 3.0,
            escape(&g.key),
            escape(&label),
            g.summary.jobs
        );
        for (j, name) in ["cpu_seconds", "peak_rss_mb", "wall_seconds"]
            .iter()
            .enumerate()
        {
            let yb = y0 + BAR * j as f64;
            let a = g.summary.targets.iter().find(|t| t.target == *name);
            match a.and_then(|a| a.calibration) {
                Some(c) => {
                    let _ = write!(
                        h,
                        "<rect class=\"bar{j}\" x=\"{x0:.1}\" y=\"{yb:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{name}: {:.1} % of {} ≤ upper</title></rect><text x=\"{:.1}\" y=\"{:.1}\">{:.0} %</text>",
                        xa(c) - x0,
                        BAR - 1.0,
                        c * 100.0,
                        a.map_or(0, |a| a.n),
                        xa(c) + 3.0,
                        yb + BAR - 1.5,
                        c * 100.0
                    );
                }
                None => {
                    let _ = write!(
                        h,
                        "<text x=\"{:.1}\" y=\"{:.1}\">{name}: no upper bounds</text>",
                        x0 + 3.0,
                        yb + BAR - 1.5
                    );
                }
            }
        }
    }
    let _ = write!(
        h,
        "<line class=\"nominal\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{bottom:.1}\"/>",
        xa(nominal),
        top - 6.0,
        xa(nominal)
    );
    let ly = height - 8.0;
    for (j, name) in ["CPU", "peak RSS", "wall"].iter().enumerate() {
        let lx = x0 + 95.0 * j as f64;
        let _ = write!(
            h,
            "<rect class=\"bar{j}\" x=\"{lx:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\"/><text x=\"{:.1}\" y=\"{ly:.1}\">{name}</text>",
            ly - 8.0,
            lx + 11.0
        );
    }
    if order.len() > MAX_VERSIONS {
        let _ = write!(
            h,
            "<text x=\"4\" y=\"12\">latest {MAX_VERSIONS} of {} versions</text>",
            order.len()
        );
    }
    h.push_str("</svg></div>\n");
}

/// A round axis step (1, 2 or 5 × 10^k) near `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let f = raw / p;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * p
}

fn epoch_secs(s: &str) -> Option<f64> {
    humantime::parse_rfc3339_weak(s)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

/// "MM-DD HH:MM" of an epoch time.
fn short_time(secs: f64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0.0) as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // 2026-11-30T20:29:00Z
    s.get(5..16).map_or(s.clone(), |x| x.replace('T', " "))
}

/// Cumulative memory slack (GB·h) of attempts under predicted limits, against the same
/// attempts under the static default cap: the running sums of `stats`' impact figures.
fn slack(h: &mut String, rows: &[JobRecord], opts: &StatsOptions, overall: &Summary) {
    const W: f64 = 540.0;
    const H: f64 = 250.0;
    const L: f64 = 52.0;
    const R: f64 = 14.0;
    const T: f64 = 12.0;
    const B: f64 = 44.0;
    let mut pts: Vec<(f64, stats::AttemptSlack)> = rows
        .iter()
        .filter_map(|r| {
            let t = epoch_secs(r.settled_at.as_deref()?)?;
            stats::attempt_slack(r, opts).map(|s| (t, s))
        })
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let i = &overall.impact;
    let _ = write!(
        h,
        "<div class=\"card\"><div class=\"sub\">cumulative (cap − peak) × wall over {} attempts whose memory cap came from the prediction (not static defaults, overrides or dry run), and the same attempts under the static default cap ({} MB)</div>\
         <svg id=\"slack\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"memory slack over time\">",
        pts.len(),
        opts.static_memory_mb
    );
    if pts.is_empty() {
        let _ = writeln!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no attempt ran under a predicted memory cap yet (all static, override or dry run)</text></svg></div>",
            W / 2.0,
            H / 2.0
        );
        return;
    }
    let (mut cp, mut cs) = (0.0, 0.0);
    let mut series: Vec<(f64, f64, f64)> = Vec::with_capacity(pts.len());
    for (t, s) in &pts {
        cp += s.slack_gbh;
        cs += s.static_slack_gbh.unwrap_or(0.0);
        series.push((*t, cp, cs));
    }
    let (t0, mut t1) = (pts[0].0, pts[pts.len() - 1].0);
    if t1 - t0 < 60.0 {
        t1 = t0 + 60.0;
    }
    let step = nice_step(cp.max(cs) / 4.0);
    let ymax = ((cp.max(cs) / step).ceil() * step).max(step);
    let xa = |t: f64| L + (t - t0) / (t1 - t0) * (W - L - R);
    let ya = |v: f64| (H - B) - v / ymax * (H - B - T);
    let digits = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let mut v = 0.0;
    while v <= ymax + step / 2.0 {
        let _ = write!(
            h,
            "<line class=\"grid\" x1=\"{L}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.digits$}</text>",
            ya(v),
            W - R,
            ya(v),
            L - 4.0,
            ya(v) + 3.0,
        );
        v += step;
    }
    for k in 0..=4 {
        let tt = t0 + (t1 - t0) * f64::from(k) / 4.0;
        let anchor = match k {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            xa(tt),
            H - B + 13.0,
            short_time(tt)
        );
    }
    let _ = write!(
        h,
        "<rect x=\"{L}\" y=\"{T}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#888\"/>\
         <text transform=\"translate(12 {:.1}) rotate(-90)\" text-anchor=\"middle\">GB·h (cumulative)</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">settled at (UTC)</text>",
        W - L - R,
        H - B - T,
        (T + H - B) / 2.0,
        (L + W - R) / 2.0,
        H - 16.0
    );
    for (class, pick) in [("l-static", 2usize), ("l-presize", 1usize)] {
        let mut d = format!("{:.1},{:.1}", xa(t0), ya(0.0));
        let mut prev = 0.0;
        for (t, p, s) in &series {
            let v = if pick == 1 { *p } else { *s };
            let _ = write!(
                d,
                " {:.1},{:.1} {:.1},{:.1}",
                xa(*t),
                ya(prev),
                xa(*t),
                ya(v)
            );
            prev = v;
        }
        let _ = write!(h, "<polyline class=\"{class}\" points=\"{d}\"/>");
    }
    let ly = H - 4.0;
    let _ = write!(
        h,
        "<line class=\"l-presize\" x1=\"{L}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/><text x=\"{:.1}\" y=\"{ly:.1}\">presize caps: {:.3} GB·h</text>\
         <line class=\"l-static\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/><text x=\"{:.1}\" y=\"{ly:.1}\">static default: {:.3} GB·h (saved {:.3})</text>",
        ly - 4.0,
        L + 16.0,
        ly - 4.0,
        L + 20.0,
        i.slack_gbh,
        L + 200.0,
        ly - 4.0,
        L + 216.0,
        ly - 4.0,
        L + 220.0,
        i.static_slack_gbh,
        i.saved_gbh
    );
    h.push_str("</svg></div>\n");
}

/// The numbers of `presize stats` (overall and per model version) as two tables.
fn stats_tables(h: &mut String, report: &StatsReport) {
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
fn holdout(m: &serde_json::Value, target: &str, field: &str) -> Option<f64> {
    m.get("candidate")?
        .get("targets")?
        .as_array()?
        .iter()
        .find(|t| t.get("target").and_then(|v| v.as_str()) == Some(target))?
        .get(field)?
        .as_f64()
}

/// The `model_version` registry, newest first.
fn models_table(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn log_axis_spans_whole_decades() {
        let a = LogAxis::covering(3.0, 700.0, 0.0, 300.0);
        assert_eq!((a.lo, a.hi), (0, 3));
        assert!((a.at(10.0) - 100.0).abs() < 1e-9);
        let b = LogAxis::covering(5.0, 5.0, 0.0, 100.0);
        assert_eq!((b.lo, b.hi), (0, 1));
        assert_eq!(decade_label(-2), "0.01");
        assert_eq!(decade_label(4), "10k");
    }
}
