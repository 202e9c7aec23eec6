//! `presize predict SCRIPT`: features, prediction and the limits that would apply.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::{out, out_json, JobArgs};
use crate::config::Settings;
use crate::error::Error;
use crate::job::JobSpec;
use crate::model::{Bounds, Predictor, Source};
use crate::policy::{Decision, Limits};
use crate::runner;

/// Arguments of `predict`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job's script (.py, .ipynb, .R, .Rmd, .sh, …).
    pub script: PathBuf,
    #[command(flatten)]
    pub job: JobArgs,
    /// Predict as in dry-run (limits reported as not enforced).
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
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
    /// The limits that would apply (null when rejected).
    pub limits: Option<Limits>,
    /// Why the job would be rejected, if it would.
    pub rejected: Option<String>,
    pub job_key: String,
    pub runtime: String,
    pub language: String,
    pub script: Option<String>,
    pub script_sha256: Option<String>,
    pub script_truncated: bool,
    pub imports: Vec<String>,
    pub schema_hash: String,
    pub features: BTreeMap<String, f64>,
    pub warnings: Vec<String>,
}

/// Build the report (shared with tests and embedders).
pub fn report(args: &Args, settings: &Settings) -> Result<PredictReport, Error> {
    let spec = JobSpec {
        command: vec![args.script.clone().into_os_string()],
        script: Some(args.script.clone()),
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
    let plan = runner::plan(&spec, settings, &predictor, store.as_ref(), dry_run)?;
    warnings.extend(plan.model_warning.clone());
    let (limits, rejected) = match &plan.decision {
        Decision::Run { predicted, .. } => (Some(*predicted), None),
        Decision::Reject(r) => (None, Some(r.reason.clone())),
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
        limits,
        rejected,
        job_key: plan.job_key.clone(),
        runtime: plan.runtime.clone(),
        language: plan.extracted.language.as_str().to_string(),
        script: plan.script.as_ref().map(|s| s.display().to_string()),
        script_sha256: plan.script_sha256.clone(),
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
    match (&r.limits, &r.rejected) {
        (Some(l), _) => {
            s += &format!(
                "limits      memory {} MB, timeout {} s{}\n",
                l.memory_limit_mb,
                l.timeout_s,
                if r.confidence < settings.policy().confidence_threshold {
                    " (static defaults: confidence below the threshold)"
                } else {
                    ""
                }
            );
        }
        (None, Some(why)) => s += &format!("rejected    {why}\n"),
        _ => {}
    }
    out(&s)?;
    Ok(0)
}
