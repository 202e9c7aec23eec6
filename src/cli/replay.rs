//! `presize replay TRACE...`: online replay of Nextflow traces through presize's sizing
//! engine and retry rule (the published Sizey protocol); `presize replay --store [DB]`: the
//! host's own history through the engine under the configured policy and alternatives.

use std::path::PathBuf;

use super::progress::Bar;
use super::{out, out_json};
use crate::config::Settings;
use crate::error::Error;
use crate::replay::{self, EngineMethod, TovarMethod};

/// Which allocation method to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayPolicy {
    /// presize's sizing engine under the configured `[policy]` (what `run` does).
    Presize,
    /// Tovar's first-allocation method (the reference; checks the harness).
    Tovar,
}

/// Arguments of `replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nextflow trace CSV files (one workflow each).
    #[arg(required_unless_present = "store", value_name = "TRACE")]
    pub traces: Vec<PathBuf>,
    /// Replay the host's settled history instead (the configured database, or DB).
    #[arg(long, value_name = "DB", num_args = 0..=1, conflicts_with = "traces")]
    pub store: Option<Option<PathBuf>>,
    /// Traces: `presize` (the sizing engine) or `tovar` (the reference). With --store:
    /// `cost-aware`, `headroom` or `upper` (default: the configured mode and the others).
    #[arg(long)]
    pub policy: Option<String>,
    /// With --store: replay at most this many of the newest jobs.
    #[arg(long, default_value_t = 100_000)]
    pub max_jobs: usize,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Run `replay`.
pub fn execute(args: Args) -> Result<i32, Error> {
    let settings = Settings::from_env()?;
    let cfg = settings.policy().clone();
    if let Some(db) = &args.store {
        return execute_store(&settings, db.as_deref(), &args);
    }
    let policy = match args.policy.as_deref() {
        None | Some("presize") => ReplayPolicy::Presize,
        Some("tovar") => ReplayPolicy::Tovar,
        Some(p) => {
            return Err(Error::Usage(format!(
                "--policy {p}: traces replay `presize` or `tovar`"
            )))
        }
    };
    let bar = Bar::new(args.traces.len() as u64);
    let replaying = |i: usize| match args.traces.get(i) {
        Some(p) => format!(
            "replaying {}",
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            )
        ),
        None => "done".into(),
    };
    bar.set(0, &replaying(0));
    let mut progress = |done: usize, _total: usize| bar.set(done as u64, &replaying(done));
    let report = match policy {
        ReplayPolicy::Presize => replay::replay_files_with(
            &args.traces,
            &mut EngineMethod::new(cfg.clone()),
            &cfg,
            &mut progress,
        ),
        ReplayPolicy::Tovar => replay::replay_files_with(
            &args.traces,
            &mut TovarMethod::default(),
            &cfg,
            &mut progress,
        ),
    }
    .map_err(|e| Error::Usage(e.to_string()))?;
    bar.finish();
    if args.json {
        out_json(&report)?;
        return Ok(0);
    }
    let mut s = String::from(
        "workflow          wastage GB·h  failures    MAQ  processes  rows (online)  seconds  timeout kills\n",
    );
    for w in &report.workflows {
        s += &format!(
            "{:<16} {:>13.1} {:>9} {:>6.3} {:>10} {:>7} ({:>5}) {:>8.2} {:>14}\n",
            w.name,
            w.wastage_gbh,
            w.failures,
            w.maq,
            w.processes_used,
            w.rows_used,
            w.rows_online,
            w.seconds,
            w.timeout_kills
        );
    }
    s += "\nwastage GB·h: memory allocated but not used (cap − peak) × time, plus the whole cap × time of\n\
          every failed (OOM-killed) attempt; failures: attempts killed at their cap;\n\
          MAQ (memory allocation quality) = used / (used + wasted) GB·h: 1 is a perfect fit, 0.5 means\n\
          as much memory wasted as used.\n";
    out(&s)?;
    Ok(0)
}

fn execute_store(
    settings: &Settings,
    db: Option<&std::path::Path>,
    args: &Args,
) -> Result<i32, Error> {
    let only = match args.policy.as_deref() {
        None => None,
        Some(p) => Some(crate::policy::LimitMode::parse(p).ok_or_else(|| {
            Error::Usage(format!(
                "--policy {p}: with --store use cost-aware, headroom or upper"
            ))
        })?),
    };
    let path = db.map_or_else(|| settings.db_path.clone(), |d| d.to_path_buf());
    if !path.exists() {
        return Err(Error::Usage(format!(
            "--store: no database at {}",
            path.display()
        )));
    }
    let store = crate::store::Store::open(&path)?;
    let bar = Bar::new(1);
    bar.set(0, "replaying the history");
    let r = replay::store::replay_store(
        &store,
        settings.policy(),
        settings.host_budget_mb,
        only,
        args.max_jobs.max(1),
    )?;
    bar.finish();
    if args.json {
        out_json(&r)?;
        return Ok(0);
    }
    let mut s = format!(
        "{} jobs replayed from {} ({} left out: never succeeded or rejected); a failed attempt costs {} GB·h more\n\n",
        r.jobs_replayed,
        path.display(),
        r.jobs_left_out,
        r.failure_penalty_gbh
    );
    s += "policy                  reserved GB·h  used GB·h  wastage GB·h  first OOM  first timeout  final failures  hours lost  cost GB·h\n";
    for p in &r.policies {
        s += &format!(
            "{:<22} {:>14.3} {:>10.3} {:>13.3} {:>10} {:>14} {:>15} {:>11.3} {:>10.3}\n",
            p.policy,
            p.reserved_gbh,
            p.used_gbh,
            p.wastage_gbh,
            p.first_attempt_oom_kills,
            p.first_attempt_timeout_kills,
            p.final_failures,
            p.hours_lost_to_kills,
            p.cost_gbh
        );
        if let Some((m, n)) = p.first_caps_matching_rows {
            s += &format!("  first caps matching the recorded rows: {m} of {n}\n");
        }
    }
    out(&s)?;
    Ok(0)
}
