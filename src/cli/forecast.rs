//! `presize forecast`: near-term demand from the job history (Markdown, or `--json`).

use std::time::SystemTime;

use super::{out, out_json};
use crate::config::Settings;
use crate::error::Error;
use crate::forecast::{self, ForecastError, ForecastOptions};
use crate::stats::StatsOptions;

/// Arguments of `forecast`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Forecast horizon in hours; also the length of the windows compared.
    #[arg(long, default_value_t = 24.0, value_name = "HOURS")]
    pub horizon: f64,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
    /// For tests and what-if runs: take this RFC 3339 UTC time (e.g. 2026-01-05T12:00:00Z)
    /// as now.
    #[arg(long, hide = true, value_name = "RFC3339")]
    pub now: Option<String>,
}

/// Run `forecast`.
pub fn execute(args: Args) -> Result<i32, Error> {
    let now = match &args.now {
        None => SystemTime::now(),
        Some(s) => humantime::parse_rfc3339_weak(s).map_err(|e| {
            Error::Usage(format!(
                "--now {s:?} is not an RFC 3339 UTC time such as 2026-01-05T12:00:00Z: {e}"
            ))
        })?,
    };
    let settings = Settings::from_env()?;
    let opts = ForecastOptions {
        horizon_hours: args.horizon,
        host_budget_mb: settings.host_budget_mb,
        stats: StatsOptions::from_settings(&settings),
    };
    // Refuse a bad horizon before touching the store.
    forecast::horizon(args.horizon).map_err(|e| Error::Usage(e.to_string()))?;
    let store = settings.open_store()?;
    let f = forecast::forecast(&store, now, &opts).map_err(|e| match e {
        ForecastError::Store(s) => Error::Store(s),
        other => Error::Usage(other.to_string()),
    })?;
    if args.json {
        out_json(&f)?;
        return Ok(0);
    }
    out(&forecast::markdown(&f))?;
    Ok(0)
}
