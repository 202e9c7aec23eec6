//! `presize replay TRACE...`: online replay of Nextflow traces through presize's allocation
//! model and retry rule (the published Sizey protocol).

use std::path::PathBuf;

use super::progress::Bar;
use super::{out, out_json};
use crate::error::Error;
use crate::model::allocate::AllocConfig;
use crate::replay::{self, PresizeMethod, TovarMethod};

/// Which allocation method to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayPolicy {
    /// presize's cost-aware allocation with per-task model choice (the shipped policy).
    Presize,
    /// Tovar's first-allocation method (the reference; checks the harness).
    Tovar,
}

/// Arguments of `replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nextflow trace CSV files (one workflow each).
    #[arg(required = true, value_name = "TRACE")]
    pub traces: Vec<PathBuf>,
    /// Allocation method to replay.
    #[arg(long, value_enum, default_value_t = ReplayPolicy::Presize)]
    pub policy: ReplayPolicy,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Run `replay`.
pub fn execute(args: Args) -> Result<i32, Error> {
    let cfg = AllocConfig::default();
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
    let report = match args.policy {
        ReplayPolicy::Presize => replay::replay_files_with(
            &args.traces,
            &mut PresizeMethod::new(cfg.clone()),
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
        "workflow          wastage GB·h  failures    MAQ  processes  rows (online)  seconds\n",
    );
    for w in &report.workflows {
        s += &format!(
            "{:<16} {:>13.1} {:>9} {:>6.3} {:>10} {:>7} ({:>5}) {:>8.2}\n",
            w.name,
            w.wastage_gbh,
            w.failures,
            w.maq,
            w.processes_used,
            w.rows_used,
            w.rows_online,
            w.seconds
        );
    }
    s += "\nwastage GB·h: memory allocated but not used (cap − peak) × time, plus the whole cap × time of\n\
          every failed (OOM-killed) attempt; failures: attempts killed at their cap;\n\
          MAQ (memory allocation quality) = used / (used + wasted) GB·h: 1 is a perfect fit, 0.5 means\n\
          as much memory wasted as used.\n";
    out(&s)?;
    Ok(0)
}
