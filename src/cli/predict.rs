//! `presize predict [SCRIPT] [-- CMD [ARGS]...]`: features, prediction and the limits `run`
//! would apply to the same job, with where each limit comes from. Records nothing.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use serde::Serialize;

use super::{out, out_json, JobArgs};
use crate::config::Settings;
use crate::error::Error;
use crate::job::JobSpec;
use crate::model::{Bounds, Predictor, Source};
use crate::policy::{Decision, Limits};
use crate::provenance::LimitSources;
use crate::runner::{self, RunOptions};

/// Arguments of `predict`: the job exactly as `run` takes it (`-- CMD [ARGS]...`), or just
/// its script.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job's script (.py, .ipynb, .R, .Rmd, .sh, …); alone, the job is `SCRIPT`.
    #[arg(value_name = "SCRIPT")]
    pub script: Option<PathBuf>,
    #[command(flatten)]
    pub job: JobArgs,
    /// The job's script, as `run --script`; default: the first argument with a script
    /// extension.
    #[arg(long = "script", value_name = "FILE", conflicts_with = "script")]
    pub script_file: Option<PathBuf>,
    /// Predict as `run --dry-run` would run (static defaults enforced).
    #[arg(long)]
    pub dry_run: bool,
    /// As `run --timeout`: show the limits with this timeout (seconds).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// As `run --memory-mb`: show the limits with this memory cap (MiB).
    #[arg(long, value_name = "MB")]
    pub memory_mb: Option<u64>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
    /// The job: program and arguments, as given to `run` (never run by `predict`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// The `predict --json` document.
#[derive(Debug, Serialize)]
pub struct PredictReport {
    pub cpu_seconds: f64,
    pub peak_rss_mb: f64,
    pub wall_seconds: f64,
    pub confidence: f64,
    pub upper: Bounds,
    pub lower: Bounds,
    pub model_version: String,
    pub source: Source,
    /// `run` or `reject`: what `run` would do with this job (`reject`: it records the
    /// rejection and exits 3 without running the job).
    pub verdict: &'static str,
    /// The limits the first attempt of `run` would be enforced under, overrides included;
    /// `enforced` is true only when the memory cap comes from the prediction. Null exactly
    /// when the verdict is `reject`.
    pub limits: Option<Limits>,
    /// The limits the prediction alone sets (recorded as `memory_limit_mb` / `timeout_s`).
    pub predicted_limits: Option<Limits>,
    /// Where each limit in `limits` comes from (`predicted`, `static`, `override`,
    /// `dry-run`) and why; null when rejected.
    pub limit_sources: Option<LimitSources>,
    /// The sizing engine's evidence level (`history`, `model`, `novel`) and why.
    pub evidence: Option<crate::policy::Evidence>,
    /// Why the trained model has not seen this job (empty: inside its domain).
    pub novelty: Vec<String>,
    /// Why the job would be rejected, if it would.
    pub rejected: Option<String>,
    /// The job's command as `run` would record it.
    pub command: Vec<String>,
    pub job_key: String,
    pub runtime: String,
    pub language: String,
    pub script: Option<String>,
    /// Hex sha256 of the script's bytes read; computed only for `--json` (else null).
    pub script_sha256: Option<String>,
    pub script_truncated: bool,
    pub imports: Vec<String>,
    pub schema_hash: String,
    pub features: BTreeMap<String, f64>,
    pub warnings: Vec<String>,
}

/// Build the report (shared with tests and embedders).
pub fn report(args: &Args, settings: &Settings) -> Result<PredictReport, Error> {
    let script = args.script_file.clone().or_else(|| args.script.clone());
    let command = if !args.command.is_empty() {
        args.command.clone()
    } else {
        match &args.script {
            Some(s) => vec![s.clone().into_os_string()],
            None => {
                return Err(Error::Usage(
                    "predict needs a job: `presize predict SCRIPT` or `presize predict -- CMD [ARGS]...` (as given to run)".into(),
                ))
            }
        }
    };
    let spec = JobSpec {
        command,
        script,
        runtime: args.job.runtime.clone(),
        inputs: args.job.inputs.clone(),
        job_key: args.job.job_key.clone(),
        ..JobSpec::default()
    };
    let (predictor, mut warnings) = Predictor::load(&settings.model_dir);
    // Earlier runs of the job are features; read them only if a database already exists.
    let store = if settings.db_path.is_file() {
        match settings.open_store() {
            Ok(s) => Some(s),
            Err(e) => {
                warnings.push(format!("{e}; predicting without earlier runs"));
                None
            }
        }
    } else {
        None
    };
    let dry_run = args.dry_run || settings.dry_run;
    // The script's sha256 is shown only in the JSON document: the text form skips it (it is
    // half of what `predict` executes on a 2,000-line script without SHA instructions).
    let plan = runner::plan_hashing(
        &spec,
        settings,
        &predictor,
        store.as_ref(),
        dry_run,
        args.json,
    )?;
    warnings.extend(plan.model_warning.clone());
    let opts = RunOptions {
        dry_run,
        timeout_s: args.timeout,
        memory_mb: args.memory_mb,
        ..RunOptions::default()
    };
    let (limits, predicted_limits, limit_sources, rejected) = match &plan.decision {
        Decision::Run {
            predicted,
            applied,
            sizing,
        } => {
            let mut applied = *applied;
            let mut sizing = sizing.clone();
            let sources = runner::apply_overrides(&mut applied, &mut sizing, &opts);
            applied.enforced = sources.memory_predicted();
            (Some(applied), Some(*predicted), Some(sources), None)
        }
        Decision::Reject(r) => (None, None, None, Some(r.reason.clone())),
    };
    let p = &plan.prediction;
    Ok(PredictReport {
        cpu_seconds: p.cpu_seconds,
        peak_rss_mb: p.peak_rss_mb,
        wall_seconds: p.wall_seconds,
        confidence: p.confidence,
        upper: p.upper,
        lower: p.lower,
        model_version: p.model_version.clone(),
        source: p.source,
        verdict: if rejected.is_some() { "reject" } else { "run" },
        limits,
        predicted_limits,
        limit_sources,
        evidence: match &plan.decision {
            Decision::Run { sizing, .. } => Some(sizing.evidence),
            Decision::Reject(_) => None,
        },
        novelty: plan.novelty.clone(),
        rejected,
        command: spec
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        job_key: plan.job_key.clone(),
        runtime: plan.runtime.clone(),
        language: plan.extracted.language.as_str().to_string(),
        script: plan.script.as_ref().map(|s| s.display().to_string()),
        script_sha256: plan.script_sha256.clone().filter(|h| !h.is_empty()),
        script_truncated: plan.script_truncated,
        imports: plan
            .extracted
            .scan
            .as_ref()
            .map(|s| s.imports.iter().cloned().collect())
            .unwrap_or_default(),
        schema_hash: plan.extracted.vector.schema.hash.clone(),
        features: plan.extracted.vector.to_map(),
        warnings,
    })
}

/// Run `predict`.
pub fn execute(args: Args) -> Result<i32, Error> {
    let settings = Settings::from_env()?;
    let r = report(&args, &settings)?;
    // Warnings go to stderr in both modes (with --json they are also in the document).
    for w in &r.warnings {
        super::say(&format!("presize: warning: {w}"));
    }
    if args.json {
        out_json(&r)?;
        return Ok(0);
    }
    let mut s = String::new();
    s += &format!(
        "script      {} ({}, job key {})\n",
        super::printable(r.script.as_deref().unwrap_or("-")),
        r.language,
        super::printable(&r.job_key)
    );
    if r.script_truncated {
        s += "            (script larger than the scan limit: scanned the first part only)\n";
    }
    s += &format!(
        "imports     {}\n",
        if r.imports.is_empty() {
            "-".to_string()
        } else {
            r.imports.join(", ")
        }
    );
    s += &format!(
        "source      {} ({}), confidence {:.2}\n",
        r.source.as_str(),
        r.model_version,
        r.confidence
    );
    s += "target            point      lower      upper\n";
    s += &format!(
        "peak RSS MB  {:>10.1} {:>10.1} {:>10.1}\n",
        r.peak_rss_mb, r.lower.peak_rss_mb, r.upper.peak_rss_mb
    );
    s += &format!(
        "wall s       {:>10.2} {:>10.2} {:>10.2}\n",
        r.wall_seconds, r.lower.wall_seconds, r.upper.wall_seconds
    );
    s += &format!(
        "CPU s        {:>10.2} {:>10.2} {:>10.2}\n",
        r.cpu_seconds, r.lower.cpu_seconds, r.upper.cpu_seconds
    );
    match (&r.limits, &r.limit_sources, &r.rejected) {
        (Some(l), Some(src), _) => {
            s += &format!(
                "limits      memory {} MB ({}), timeout {} s ({})\n",
                l.memory_limit_mb, src.memory, l.timeout_s, src.timeout
            );
            if let Some(why) = &src.reason {
                s += &format!("            {why}\n");
            }
        }
        (_, _, Some(why)) => {
            s += &format!("rejected    {why}\n            (run would record the rejection and exit 3 without running the job)\n")
        }
        _ => {}
    }
    out(&s)?;
    Ok(0)
}
