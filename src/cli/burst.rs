//! `presize burst --factor F --for DURATION | --off`: force burst mode for a bounded time, or
//! end it; without arguments, show the burst in force and the last ones.

use std::time::SystemTime;

use super::{out, out_json};
use crate::config::Settings;
use crate::error::Error;
use crate::executor::burst::{self, BurstError, BurstRecord};
use crate::util::rfc3339;

/// Arguments of `burst`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Caps of running jobs may sum to F × the host budget while their predicted peaks fit it.
    #[arg(long, value_name = "F", requires = "duration", conflicts_with = "off")]
    pub factor: Option<f64>,
    /// How long (e.g. 90s, 15m, 2h); the burst ends by itself then.
    #[arg(
        long = "for",
        value_name = "DURATION",
        requires = "factor",
        conflicts_with = "off"
    )]
    pub duration: Option<String>,
    /// End the burst in force now.
    #[arg(long)]
    pub off: bool,
    /// Why (recorded with the burst).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// The burst in force and the last bursts (`presize burst --json`).
#[derive(Debug, serde::Serialize)]
struct BurstView {
    now: String,
    host: String,
    active: Option<BurstRecord>,
    /// What this call changed: `started`, `ended`, `none in force` or `shown`.
    change: &'static str,
    recent: Vec<BurstRecord>,
}

fn who() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| format!("uid {}", nix::unistd::getuid()))
}

fn err(e: BurstError) -> Error {
    match e {
        BurstError::Db { .. } => Error::Io(e.to_string()),
        other => Error::Usage(other.to_string()),
    }
}

/// Run `burst`.
pub fn execute(args: Args) -> Result<i32, Error> {
    // Check the request before touching the store.
    let request = match (&args.factor, &args.duration) {
        (Some(f), Some(d)) => {
            let dur = burst::parse_duration(d).ok_or_else(|| {
                Error::Usage(format!(
                    "--for {d:?} is not a duration such as 90s, 15m or 2h"
                ))
            })?;
            burst::validate(*f, dur).map_err(err)?;
            Some((*f, dur))
        }
        _ => None,
    };
    let settings = Settings::from_env()?;
    let mut store = settings.open_store()?;
    let host = crate::runner::hostname();
    let reason = args.reason.clone().map(|r| crate::util::one_line(&r));
    let change = if let Some((f, dur)) = request {
        let why = reason.unwrap_or_else(|| "forced with presize burst".into());
        burst::start(store.conn_mut(), &host, f, dur, ("manual", &who(), &why)).map_err(err)?;
        "started"
    } else if args.off {
        let why = reason.unwrap_or_else(|| format!("ended with presize burst --off by {}", who()));
        match burst::stop(store.conn_mut(), &host, &why).map_err(err)? {
            0 => "none in force",
            _ => "ended",
        }
    } else {
        "shown"
    };
    let now = rfc3339(SystemTime::now());
    let view = BurstView {
        active: burst::active(store.conn(), &host, &now).map_err(err)?,
        recent: burst::recent(store.conn(), &host, 10).map_err(err)?,
        now,
        host,
        change,
    };
    if args.json {
        out_json(&view)?;
        return Ok(0);
    }
    let mut t = match (&view.active, change) {
        (Some(b), _) => format!(
            "burst {}: ×{:.2} on {} until {} ({} by {}: {})\n",
            if change == "started" {
                "started"
            } else {
                "in force"
            },
            b.factor,
            view.host,
            b.until,
            b.source,
            b.who,
            b.why
        ),
        (None, "ended") => format!("burst ended on {}\n", view.host),
        (None, _) => format!("no burst in force on {}\n", view.host),
    };
    if !view.recent.is_empty() {
        t += "recent bursts:\n";
        for b in &view.recent {
            t += &format!(
                "  {} … {}  ×{:.2}  {:<6} {:<10} {}{}\n",
                b.started_at,
                b.end(),
                b.factor,
                b.source,
                b.who,
                b.why,
                b.end_reason
                    .as_deref()
                    .map(|r| format!(" (ended: {r})"))
                    .unwrap_or_default()
            );
        }
    }
    out(&t)?;
    Ok(0)
}
