//! `presize retrain`: train from settled rows; promote only if not worse.

use super::progress::Bar;
use super::{fmt_opt, fmt_pct, out, out_json};
use crate::config::Settings;
use crate::error::Error;
use crate::retrain::{self, ModelEval, RetrainOptions};

/// Arguments of `retrain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Train only with at least this many settled rows.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub min_rows: usize,
    /// Promote the new model even if it is worse on the holdout.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

fn eval_table(title: &str, e: &ModelEval) -> String {
    let mut s = format!(
        "{title} {}\n  target           n     MAPE  median APE  pinball  coverage\n",
        e.version
    );
    for t in &e.targets {
        s += &format!(
            "  {:<12} {:>5} {:>8} {:>11} {:>8} {:>9}\n",
            t.target,
            t.n,
            fmt_pct(t.mape),
            fmt_pct(t.median_ape),
            fmt_opt(t.pinball, 3),
            fmt_pct(t.coverage),
        );
    }
    s
}

/// Run `retrain`.
pub fn execute(args: Args) -> Result<i32, Error> {
    let settings = Settings::from_env()?;
    let opts = RetrainOptions {
        min_rows: args.min_rows,
        force: args.force,
    };
    let bar = Bar::new(retrain::STEPS as u64);
    let r = retrain::retrain(&settings, &opts, &mut |s| bar.set(s.done as u64, s.what))?;
    bar.finish();
    if args.json {
        out_json(&r)?;
        return Ok(0);
    }
    let latest = if r.used_rows < r.settled_rows {
        format!(" (the latest {}: [model] max_train_rows)", r.used_rows)
    } else {
        String::new()
    };
    let mut s = format!(
        "{}\nrows: {} settled, {} trained on, {} held out{latest}\n",
        r.message, r.settled_rows, r.train_rows, r.holdout_rows
    );
    if let Some(c) = &r.candidate {
        s += &eval_table("candidate", c);
    }
    if let Some(c) = &r.current {
        s += &eval_table("current  ", c);
    }
    if let Some(p) = &r.model_path {
        s += &format!("model file: {p}\n");
    }
    out(&s)?;
    Ok(0)
}
