//! `presize stats`: accuracy per target, outcome counts, cap coverage, per model version.

use super::{fmt_opt, fmt_pct, out, out_json};
use crate::config::Settings;
use crate::error::Error;
use crate::stats::{self, GroupBy, StatsOptions, Summary};

/// Arguments of `stats`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Consider the last N settled jobs.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub last: usize,
    /// Also break the numbers down by runtime, job key or backend (local cgroup vs SLURM).
    #[arg(long, value_enum)]
    pub by: Option<GroupBy>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

fn table(title: &str, s: &Summary) -> String {
    let mut t = format!("{title}: {} jobs in {} attempts", s.jobs, s.attempts);
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
    t += "  target           n       R²     MAPE   median APE  ≤ upper (nominal)\n";
    for a in &s.targets {
        t += &format!(
            "  {:<12} {:>5} {:>8} {:>8} {:>12}  {:>7} ({:.0}%)\n",
            a.target,
            a.n,
            fmt_opt(a.r2, 3),
            fmt_pct(a.mape),
            fmt_pct(a.median_ape),
            fmt_pct(a.calibration),
            a.nominal_coverage * 100.0,
        );
    }
    for a in &s.targets {
        if let Some(w) = stats::coverage_warning(a) {
            t += &format!("  warning: {w}\n");
        }
    }
    let i = &s.impact;
    let sources = |m: &std::collections::BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    t += &format!(
        "  limit sources: memory cap {}; timeout {}\n",
        sources(&i.memory_sources),
        sources(&i.timeout_sources)
    );
    t += &format!(
        "  impact: {} attempts under a predicted memory cap, slack {:.3} GB·h vs {:.3} GB·h under the static default → {:.3} GB·h saved; OOM kills {} ({} under a predicted cap), timeouts {} ({} under a predicted timeout), rejected {}, queue timeouts {}, lost {}\n",
        i.predicted_cap_attempts, i.slack_gbh, i.static_slack_gbh, i.saved_gbh, i.oom_kills, i.oom_kills_under_predicted, i.timeouts, i.timeouts_under_predicted, i.rejections, i.queue_timeouts, i.lost
    );
    if i.dry_run.jobs > 0 {
        t += &format!(
            "  dry run: {} jobs; under the predicted limits {} would have been OOM-killed, {} timed out; enforcement would have saved {:.3} GB·h\n",
            i.dry_run.jobs, i.dry_run.would_oom, i.dry_run.would_timeout, i.dry_run.saved_gbh
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
    let store = settings.open_store()?;
    let rows = store.recent_settled(args.last)?;
    let opts = StatsOptions::from_settings(&settings);
    let report = stats::compute(&rows, args.last, args.by, &opts);
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
            &format!(
                "\n{} {}",
                report.by.as_deref().unwrap_or(""),
                super::printable(&g.key)
            ),
            &g.summary,
        );
    }
    out(&s)?;
    Ok(0)
}
