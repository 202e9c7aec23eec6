//! `presize stats`: accuracy per target, outcome counts, cap coverage, per model version.

use super::{fmt_opt, out, out_json};
use crate::config::Settings;
use crate::error::Error;
use crate::stats::{self, GroupBy, Summary};
use crate::store::Store;

/// Arguments of `stats`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Consider the last N settled jobs.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub last: usize,
    /// Also break the numbers down by runtime or job key.
    #[arg(long, value_enum)]
    pub by: Option<GroupBy>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

fn table(title: &str, s: &Summary) -> String {
    let mut t = format!("{title}: {} jobs", s.jobs);
    let outcomes: Vec<String> = s.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    if !outcomes.is_empty() {
        t += &format!(" ({})", outcomes.join(", "));
    }
    t += &format!(
        "; cap coverage {}\n",
        s.cap_coverage
            .map(|c| format!("{:.1} %", c * 100.0))
            .unwrap_or_else(|| "-".into())
    );
    t += "  target           n       R²     MAPE   median APE\n";
    for a in &s.targets {
        t += &format!(
            "  {:<12} {:>5} {:>8} {:>8} {:>12}\n",
            a.target,
            a.n,
            fmt_opt(a.r2, 3),
            a.mape
                .map(|m| format!("{:.1}%", m * 100.0))
                .unwrap_or_else(|| "-".into()),
            a.median_ape
                .map(|m| format!("{:.1}%", m * 100.0))
                .unwrap_or_else(|| "-".into()),
        );
    }
    t
}

/// Run `stats`.
pub fn execute(args: Args) -> Result<i32, Error> {
    if args.last == 0 {
        return Err(Error::Usage("--last must be at least 1".into()));
    }
    let settings = Settings::from_env()?;
    let store = Store::open(&settings.db_path)?;
    let rows = store.recent_settled(args.last)?;
    let report = stats::compute(&rows, args.last, args.by);
    if args.json {
        out_json(&report)?;
        return Ok(0);
    }
    let mut s = table(&format!("last {} settled", args.last), &report.overall);
    for g in &report.by_model_version {
        s += &table(&format!("\nmodel {}", g.key), &g.summary);
    }
    for g in &report.groups {
        s += &table(
            &format!("\n{} {}", report.by.as_deref().unwrap_or(""), g.key),
            &g.summary,
        );
    }
    out(&s)?;
    Ok(0)
}
