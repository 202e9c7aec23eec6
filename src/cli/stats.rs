//! `presize stats`: accuracy per target, outcome counts, cap coverage, per model version.

use super::{fmt_opt, fmt_pct, out, out_json};
use crate::config::Settings;
use crate::error::Error;
use crate::executor::burst::{self, BurstRecord};
use crate::forecast::learn::{self, HorizonAccuracy};
use crate::stats::{self, GroupBy, StatsOptions, StatsReport, Summary};

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

/// `stats --json`: the accuracy report plus the operator's view of bursts and forecasts.
#[derive(Debug, serde::Serialize)]
struct StatsOut<'a> {
    #[serde(flatten)]
    report: &'a StatsReport,
    /// Burst in force on this host, if any.
    burst: Option<BurstRecord>,
    /// The last bursts of every host, newest first.
    bursts: Vec<BurstRecord>,
    /// How recorded forecasts fared, per horizon (scored now if their horizon has passed).
    forecast_accuracy: Vec<HorizonAccuracy>,
}

/// Run `stats`.
pub fn execute(args: Args) -> Result<i32, Error> {
    if args.last == 0 {
        return Err(Error::Usage("--last must be at least 1".into()));
    }
    let settings = Settings::from_env()?;
    let store = settings.open_store()?;
    let rows = store.recent_settled(args.last)?;
    let opts = StatsOptions::from_policy(settings.policy(), settings.file.model.coverage);
    let report = stats::compute(&rows, args.last, args.by, &opts);
    let now = std::time::SystemTime::now();
    learn::score_pending(&store, now)?;
    let forecast_accuracy = learn::accuracy(&store, now, settings.file.forecast.interval_coverage)?;
    let bursty = |e: burst::BurstError| Error::Io(e.to_string());
    let host = crate::runner::hostname();
    let burst_now =
        burst::active(store.conn(), &host, &crate::util::now_rfc3339()).map_err(bursty)?;
    let bursts = burst::all_recent(store.conn(), 10).map_err(bursty)?;
    if args.json {
        out_json(&StatsOut {
            report: &report,
            burst: burst_now,
            bursts,
            forecast_accuracy,
        })?;
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
    s += &match &burst_now {
        Some(b) => format!(
            "\nburst in force on {host}: ×{:.2} until {} ({} by {}: {})\n",
            b.factor, b.until, b.source, b.who, b.why
        ),
        None => format!("\nno burst in force on {host}\n"),
    };
    for b in &bursts {
        s += &format!(
            "  burst {} … {} ×{:.2} on {} ({} by {}: {})\n",
            b.started_at,
            b.end(),
            b.factor,
            b.host,
            b.source,
            b.who,
            b.why
        );
    }
    if !forecast_accuracy.is_empty() {
        s += "\nrecorded forecasts, scored against what happened:\n  horizon  scored  MAE jobs  rel err jobs  rel err GB·h  in interval (nominal)\n";
        for a in &forecast_accuracy {
            s += &format!(
                "  {:>6} h {:>7} {:>9.2} {:>12.1}% {:>12.1}% {:>12.1}% ({:.0}%)\n",
                a.horizon_hours,
                a.scored,
                a.jobs_mae,
                a.jobs_rel_error * 100.0,
                a.gbh_rel_error * 100.0,
                a.interval_coverage * 100.0,
                a.nominal * 100.0
            );
        }
    }
    out(&s)?;
    Ok(0)
}
