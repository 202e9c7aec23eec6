//! `presize report`: one self-contained HTML page — inline SVG and CSS, no script, no
//! network — with predicted-vs-actual scatters (caps marked by limit source), calibration
//! per model version with a warning when live coverage falls below nominal, memory slack
//! over time, the failed / OOM-killed / timed-out attempts, a per-job-key table, the
//! `stats` numbers and the model registry.
//!
//! Every number comes from [`crate::stats`], so the page and `presize stats` agree. The
//! charts are written by hand: a few hundred lines of SVG replace a plotting crate (see
//! README "Report").

mod charts;
mod tables;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use crate::numfmt::{fmt_opt, fmt_pct};
use crate::stats::{self, GroupBy, StatsOptions, StatsReport, Summary};
use crate::store::{JobRecord, ModelVersionRecord};

use charts::{calibration, scatter, slack};
use tables::{
    bursts_table, chips, coverage_warnings, failures_table, keys_table, models_table, stats_tables,
};

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

fn source_name(s: Option<crate::job::LimitSource>) -> &'static str {
    s.map_or("unknown", |s| s.as_str())
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

#[cfg(test)]
mod tests;
