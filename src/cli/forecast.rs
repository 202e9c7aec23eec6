//! `presize forecast`: near-term demand from the job history (Markdown, or `--json`). Each
//! run first scores the recorded forecasts whose horizon has passed, then records its own.

use std::time::SystemTime;

use super::{out, out_json};
use crate::config::Settings;
use crate::error::Error;
use crate::forecast::{self, ForecastError, ForecastOptions, MultiForecast};
use crate::stats::StatsOptions;
use crate::util::rfc3339;

/// Arguments of `forecast`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Forecast horizon(s): durations such as 15m,1h,24h, or hours (24); each is also the
    /// length of the windows compared.
    #[arg(long, default_value = "24", value_name = "H[,H...]")]
    pub horizon: String,
    /// Print one JSON document (one horizon: the forecast; several: {"now", "forecasts"}).
    #[arg(long)]
    pub json: bool,
    /// Do not record this forecast (it will then not be scored).
    #[arg(long)]
    pub no_record: bool,
    /// Record as the periodic forecast of the systemd timer and print nothing.
    #[arg(long, hide = true)]
    pub timer: bool,
    /// For tests and what-if runs: take this RFC 3339 UTC time (e.g. 2026-01-05T12:00:00Z)
    /// as now.
    #[arg(long, hide = true, value_name = "RFC3339")]
    pub now: Option<String>,
}

fn usage(e: ForecastError) -> Error {
    match e {
        ForecastError::Store(s) => Error::Store(s),
        other => Error::Usage(other.to_string()),
    }
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
    // Refuse a bad horizon before touching the store.
    let horizons = forecast::parse_horizons(&args.horizon).map_err(usage)?;
    let settings = Settings::from_env()?;
    let store = settings.open_store()?;
    forecast::learn::score_pending(&store, now)?;
    let mut all = Vec::new();
    for h in horizons {
        let opts = ForecastOptions {
            horizon_hours: h,
            host_budget_mb: settings.host_budget_mb,
            stats: StatsOptions::from_policy(settings.policy(), settings.file.model.coverage),
            config: settings.file.forecast.clone(),
        };
        let f = forecast::forecast(&store, now, &opts).map_err(usage)?;
        if !args.no_record {
            forecast::record(&store, &f, if args.timer { "timer" } else { "cli" })
                .map_err(usage)?;
        }
        all.push(f);
    }
    if args.timer {
        return Ok(0);
    }
    if all.len() == 1 {
        let f = &all[0];
        if args.json {
            out_json(f)?;
        } else {
            out(&forecast::markdown(f))?;
        }
        return Ok(0);
    }
    let m = MultiForecast {
        now: rfc3339(now),
        forecasts: all,
    };
    if args.json {
        out_json(&m)?;
    } else {
        out(&forecast::markdown_multi(&m))?;
    }
    Ok(0)
}
