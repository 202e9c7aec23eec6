//! Number formatting shared by the text tables of the CLI and the HTML report.

/// Format an optional number for tables (`-` when absent or not finite).
pub fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "-".into(),
    }
}

/// Format an optional share (0..1) as a percentage for tables (`-` when absent or not finite).
pub fn fmt_pct(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{:.1}%", x * 100.0),
        _ => "-".into(),
    }
}
