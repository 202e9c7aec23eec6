//! The page's SVG charts, drawn by hand: predicted-vs-actual scatters on log axes,
//! calibration per model version, cumulative memory slack over time.

use super::*;

/// A log10 axis mapping values to pixels.
pub(super) struct LogAxis {
    pub(super) lo: i32,
    pub(super) hi: i32,
    px0: f64,
    px1: f64,
}

impl LogAxis {
    pub(super) fn covering(min: f64, max: f64, px0: f64, px1: f64) -> Self {
        let lo = min.log10().floor() as i32;
        let mut hi = max.log10().ceil() as i32;
        if hi <= lo {
            hi = lo + 1;
        }
        LogAxis { lo, hi, px0, px1 }
    }

    pub(super) fn at(&self, v: f64) -> f64 {
        let f = (v.log10() - f64::from(self.lo)) / f64::from(self.hi - self.lo);
        self.px0 + f * (self.px1 - self.px0)
    }
}

pub(super) fn decade_label(e: i32) -> String {
    match e {
        i32::MIN..=-1 => format!("{}", 10f64.powi(e)),
        0..=2 => format!("{}", 10i64.pow(e as u32)),
        3..=5 => format!("{}k", 10i64.pow((e - 3) as u32)),
        6..=8 => format!("{}M", 10i64.pow((e - 6) as u32)),
        _ => format!("1e{e}"),
    }
}

pub(super) fn outcome_class(o: Option<&str>) -> &'static str {
    match o {
        Some("ok") => "ok",
        Some("failed") => "failed",
        Some("oom_killed") => "oom_killed",
        Some("timed_out") => "timed_out",
        _ => "other",
    }
}

pub(super) const SW: f64 = 360.0;
pub(super) const SH: f64 = 330.0;
pub(super) const ML: f64 = 48.0;
pub(super) const MR: f64 = 12.0;
pub(super) const MT: f64 = 10.0;
pub(super) const MB: f64 = 40.0;

pub(super) fn scatter(h: &mut String, t: &Target, rows: &[JobRecord], overall: &Summary) {
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
pub(super) fn legend(
    h: &mut String,
    pts: &[(&JobRecord, f64, f64)],
    caps: &[(f64, f64, &JobRecord)],
) {
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

/// Calibration: share of actuals at or below the predicted upper bound, per model version
/// and target, against the nominal coverage.
pub(super) fn calibration(h: &mut String, rows: &[JobRecord], report: &StatsReport) {
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
pub(super) fn nice_step(raw: f64) -> f64 {
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

pub(super) fn epoch_secs(s: &str) -> Option<f64> {
    humantime::parse_rfc3339_weak(s)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

/// "MM-DD HH:MM" of an epoch time.
pub(super) fn short_time(secs: f64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0.0) as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // 2026-11-30T20:29:00Z
    s.get(5..16).map_or(s.clone(), |x| x.replace('T', " "))
}

/// Cumulative memory slack (GB·h) of attempts under predicted limits, against the same
/// attempts under the static default cap: the running sums of `stats`' impact figures.
pub(super) fn slack(h: &mut String, rows: &[JobRecord], opts: &StatsOptions, overall: &Summary) {
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
