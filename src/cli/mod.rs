//! Command-line interface: one module per subcommand; `main.rs` only parses and exits.

pub(crate) mod burst;
pub(crate) mod export;
pub(crate) mod forecast;
pub(crate) mod predict;
pub(crate) mod progress;
pub(crate) mod replay;
pub(crate) mod report;
pub(crate) mod retrain;
pub(crate) mod run;
pub(crate) mod settle;
pub(crate) mod stats;
pub(crate) mod status;

use std::io::Write;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

use crate::error::Error;
pub(crate) use crate::numfmt::{fmt_opt, fmt_pct};

/// Environment variables, shown in `--help`.
const ENV_HELP: &str = "Environment:
  PRESIZE_DB              SQLite database path (default ~/.local/share/presize/presize.db)
  PRESIZE_MODEL_DIR       model directory (default ~/.local/share/presize/models)
  PRESIZE_DRY_RUN         1/true: predict and record, enforce only the static defaults
  PRESIZE_HOST_BUDGET_MB  memory all concurrently running jobs may be capped to in total
  PRESIZE_CONFIG          TOML config file (default /etc/presize/config.toml if present)

Exit codes: 0 ok, 2 usage/input error, 3 rejected, 4 store/model error,
124 job timed out, 137 job OOM-killed after the last attempt; otherwise the job's own code.";

/// Predict what a batch job will need, then run it under limits built from that prediction.
#[derive(Debug, Parser)]
#[command(name = "presize", version, about, after_help = ENV_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Features + prediction + the limits that would apply; records nothing.
    Predict(predict::Args),
    /// Predict, record, run under limits, settle; exits with the job's exit code.
    Run(run::Args),
    /// Online replay of Nextflow traces: wastage GB·h, failures, MAQ per workflow.
    Replay(replay::Args),
    /// Train from settled rows; promote only if not worse on a time-ordered holdout.
    Retrain(retrain::Args),
    /// Accuracy per target and outcome counts over the last settled jobs.
    Stats(stats::Args),
    /// Write one self-contained HTML page: scatters, calibration, slack, stats, models.
    Report(report::Args),
    /// Near-term demand from history: surge factor, posture, recommended actions.
    Forecast(forecast::Args),
    /// The host now: running and waiting jobs, budget, burst, model and fallbacks.
    Status(status::Args),
    /// Force burst mode for a bounded time (`--factor F --for 2h`) or end it (`--off`).
    Burst(burst::Args),
    /// Settle finished SLURM jobs from accounting; resubmit OOM-killed ones.
    Settle(settle::Args),
    /// Every row with its features in the wide form (CSV or JSON lines).
    Export(export::Args),
    /// Inside a SLURM job: run the command, write its measured peak to a report file.
    #[command(name = "slurm-wrap", hide = true)]
    SlurmWrap(settle::WrapArgs),
}

/// One line for a clap usage error: its first line, the possible values if clap listed
/// them, and for `run` / `predict` the hint to put the job after `--`.
pub(crate) fn usage_line(e: &clap::Error, args: &[std::ffi::OsString]) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines
        .next()
        .unwrap_or("invalid command line")
        .trim_start_matches("error: ")
        .to_string();
    let mut msg = first;
    if let Some(values) = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("[possible values"))
    {
        msg += &format!(" {values}");
    }
    let sub = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy())
        .find(|a| !a.starts_with('-'));
    let has_dashdash = args.iter().any(|a| a == "--");
    match sub.as_deref() {
        Some(s @ ("run" | "predict"))
            if e.kind() == clap::error::ErrorKind::UnknownArgument && !has_dashdash =>
        {
            msg += &format!("; put the job after `--`: presize {s} [OPTIONS] -- CMD [ARGS]...");
        }
        Some(s) if Cli::command().find_subcommand(s).is_some() => {
            msg += &format!(" (see `presize {s} --help`)");
        }
        _ => msg += " (see `presize --help`)",
    }
    msg
}

/// Parse the command line. Help and version are printed (exit 0); a usage error is one
/// line on stderr and exit 2.
pub fn parse_or_exit() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            eprintln!("presize: error: {}", usage_line(&e, &args));
            std::process::exit(crate::exit_codes::USAGE);
        }
    }
}

/// Run a parsed command line; returns the process exit code.
pub fn dispatch(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Predict(a) => predict::execute(a),
        Command::Run(a) => run::execute(a),
        Command::Stats(a) => stats::execute(a),
        Command::Retrain(a) => retrain::execute(a),
        Command::Replay(a) => replay::execute(a),
        Command::Report(a) => report::execute(a),
        Command::Forecast(a) => forecast::execute(a),
        Command::Status(a) => status::execute(a),
        Command::Burst(a) => burst::execute(a),
        Command::Settle(a) => settle::execute(a),
        Command::Export(a) => export::execute(a),
        Command::SlurmWrap(a) => settle::wrap(a),
    }
}

/// Escape control characters (terminal escapes, newlines) so that untrusted text — a job
/// key, a path — prints as one inert line.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Write one line to stderr. A closed or full stderr is ignored: presize's own messages must
/// never stop (or panic) a job (`presize run … 2>&1 | head -c 10`).
pub fn say(line: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{line}");
}

/// Write to stdout; a closed pipe (`presize stats | head`) is not an error.
pub(crate) fn out(text: &str) -> Result<(), Error> {
    let mut so = std::io::stdout().lock();
    match so.write_all(text.as_bytes()).and_then(|_| so.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Io(format!("cannot write to stdout: {e}"))),
    }
}

/// Serialise a report as one JSON document on stdout.
pub(crate) fn out_json<T: serde::Serialize>(value: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Io(format!("cannot serialise the report: {e}")))?;
    out(&(text + "\n"))
}

/// Arguments shared by `predict` and `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    /// Runtime of the job (python, r, shell, …); default: from the program name.
    #[arg(long, value_name = "R")]
    pub runtime: Option<String>,
    /// An input file whose size feeds the prediction (repeatable).
    #[arg(long = "input", value_name = "FILE")]
    pub inputs: Vec<PathBuf>,
    /// Groups runs of the same job; default: a hash of the script path.
    #[arg(long, value_name = "K")]
    pub job_key: Option<String>,
}
