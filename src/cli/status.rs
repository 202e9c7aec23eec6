//! `presize status [--json] [--watch]`: the host now, read-only.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::{out, out_json};
use crate::config::Settings;
use crate::error::Error;
use crate::status::{self, StatusOptions};

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON document (with --watch: one per line, every second).
    #[arg(long)]
    pub json: bool,
    /// Redraw every second until Ctrl-C (plain repeated output when stdout is not a terminal).
    #[arg(long)]
    pub watch: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: std::ffi::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn render(args: &Args, s: &status::Status) -> Result<String, Error> {
    if args.json {
        let one = if args.watch {
            serde_json::to_string(s)
        } else {
            serde_json::to_string_pretty(s)
        };
        one.map(|t| t + "\n")
            .map_err(|e| Error::Io(format!("cannot serialise the status: {e}")))
    } else {
        Ok(status::text(s))
    }
}

/// Run `status`.
pub fn execute(args: Args) -> Result<i32, Error> {
    let settings = Settings::from_env()?;
    let store = settings.open_store()?;
    let host = crate::runner::hostname();
    let opts = StatusOptions {
        host: &host,
        budget_mb: settings.host_budget_mb,
        static_burst_factor: settings.file.admission.burst_factor,
        auto_burst: settings.file.admission.auto_burst,
        dry_run: settings.dry_run,
        model_dir: &settings.model_dir,
        policy: settings.policy(),
        nominal_coverage: settings.file.model.coverage,
    };
    let read =
        || status::read(&store, SystemTime::now(), &opts).map_err(|e| Error::Io(e.to_string()));
    if !args.watch {
        let s = read()?;
        if args.json {
            out_json(&s)?;
        } else {
            out(&status::text(&s))?;
        }
        return Ok(0);
    }
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler is async-signal-safe (it only stores to an atomic) and no
        // other handler for these signals is installed in this process.
        if let Err(e) = unsafe { signal(sig, SigHandler::Handler(on_stop)) } {
            return Err(Error::Io(format!("cannot install the {sig} handler: {e}")));
        }
    }
    let tty = std::io::stdout().is_terminal();
    let mut so = std::io::stdout();
    while !STOP.load(Ordering::SeqCst) {
        let t0 = Instant::now();
        let body = render(&args, &read()?)?;
        let frame = if tty && !args.json {
            format!("\x1b[H\x1b[2J{body}")
        } else if args.json {
            body
        } else {
            body + "\n"
        };
        match so.write_all(frame.as_bytes()).and_then(|_| so.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
            Err(e) => return Err(Error::Io(format!("cannot write to stdout: {e}"))),
        }
        while !STOP.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(0)
}
