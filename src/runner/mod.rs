//! One job end to end: features → predict → limits → record → run → settle (→ retry).
//!
//! The CLI and embedding executors both call this; the stages it strings together stay pure
//! and unaware of each other. [`plan`] decides the first attempt; the attempt loop
//! (`attempt`) runs it and every retry on a backend: the local executor (`local`) or SLURM
//! (`cluster`, which also holds the settle pass that continues jobs submitted without
//! waiting). `keys` names jobs, `rows` builds their rows, `orphans` cleans up after a dead
//! presize.

pub(crate) mod attempt;
mod cluster;
mod keys;
mod local;
mod orphans;
mod rows;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::config::{BackendChoice, Settings};
use crate::error::{exit_codes, Error};
use crate::executor::{self, Executor};
use crate::features::{self, Catalog, Extracted, FeatureRequest, PriorRuns, ScanOptions};
use crate::job::{JobSpec, Outcome};
use crate::model::{Prediction, Predictor};
use crate::policy::{
    self, Decision, Evidences, JobSize, KeyHistory, LimitSource, Limits, Rejection, Sizer, Sizing,
};
use crate::provenance::LimitSources;
use crate::slurm::Slurm;
use crate::store::Store;

use attempt::{Attempt, Backend, Finish};
pub use cluster::settle_all;
use cluster::settle_at_start;
use cluster::Cluster;
use keys::job_keys;
pub(crate) use keys::new_job_id;
pub use keys::{hostname, legacy_job_key};
use local::{Local, LocalJob};
use orphans::recover_orphans;
use rows::JobRows;

/// Everything decided about a job before it runs.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub job_key: String,
    /// The key this job had before readable keys; history under it belongs to this job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_job_key: Option<String>,
    pub runtime: String,
    pub script: Option<PathBuf>,
    pub script_sha256: Option<String>,
    pub script_truncated: bool,
    pub prediction: Prediction,
    pub decision: Decision,
    /// Why the trained model was not used, if it was not.
    pub model_warning: Option<String>,
    /// Why the trained model has not seen this job (empty: inside its domain).
    pub novelty: Vec<String>,
    /// Set when the model in force stopped tightening because its live coverage fell.
    pub model_fallback: Option<String>,
    /// The job's size covariates, as the sizing engine uses them.
    pub size: JobSize,
    #[serde(skip)]
    pub extracted: Extracted,
    /// The job key's window of recent successful runs.
    #[serde(skip)]
    pub key_history: KeyHistory,
}

impl Plan {
    /// The evidence the engine was given, for its retry rule.
    pub fn evidences(&self) -> Evidences<'_> {
        Evidences {
            prediction: &self.prediction,
            novelty: &self.novelty,
            key: &self.key_history,
            size: self.size,
            model_fallback: self.model_fallback.as_deref(),
        }
    }
}

/// Settled jobs of a model its live coverage is judged over (the newest, by index).
pub const LIVE_COVERAGE_JOBS: usize = 100;

/// `Some(reason)` when the model in force has stopped tightening limits: its live coverage
/// of the peak over its newest settled jobs fell `coverage_drop` or more below nominal.
fn model_fallback(
    store: &Store,
    settings: &Settings,
    prediction: &Prediction,
) -> Result<Option<String>, Error> {
    if prediction.source != crate::model::Source::Model {
        return Ok(None);
    }
    let (jobs, covered) = store.live_coverage(&prediction.model_version, LIVE_COVERAGE_JOBS)?;
    Ok(policy::engine::coverage_fallback(
        &prediction.model_version,
        jobs,
        covered,
        settings.file.model.coverage,
        settings.policy(),
    ))
}

/// One attempt as run.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptReport {
    pub row_id: i64,
    pub attempt: u32,
    pub applied: Limits,
    pub actuals: executor::Actuals,
}

/// The result of `run`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub job_id: String,
    pub plan: Plan,
    pub backend: String,
    pub dry_run: bool,
    pub attempts: Vec<AttemptReport>,
    /// Row id of a rejected job.
    pub rejected_row: Option<i64>,
    /// The exit code `presize run` should exit with.
    pub exit_code: i32,
    /// SLURM job ids of the submitted attempts (SLURM backend only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slurm_job_ids: Vec<String>,
    /// Where the first attempt's limits came from (`None` for a rejected job).
    pub sources: Option<LimitSources>,
}

/// Per-run overrides from the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub dry_run: bool,
    /// Force a timeout (seconds) instead of the policy's.
    pub timeout_s: Option<u64>,
    /// Force a memory cap (MiB) instead of the policy's.
    pub memory_mb: Option<u64>,
    /// Give up waiting for admission after this long.
    pub queue_timeout: Option<Duration>,
    /// Override `[executor] backend`.
    pub backend: Option<BackendChoice>,
    /// SLURM backend: block until every attempt is settled (else return once submitted).
    pub wait: bool,
}

/// Build the catalog and scan options from the settings.
pub fn catalog_and_options(settings: &Settings) -> (Catalog, ScanOptions) {
    let catalog = Catalog::with_overrides(&settings.file.catalog);
    let opts = ScanOptions {
        max_script_bytes: settings.file.features.max_script_bytes,
        ..ScanOptions::default()
    };
    (catalog, opts)
}

/// Features → prediction → decision. Reads earlier runs from the store when given.
pub fn plan(
    spec: &JobSpec,
    settings: &Settings,
    predictor: &Predictor,
    store: Option<&Store>,
    dry_run: bool,
) -> Result<Plan, Error> {
    plan_hashing(spec, settings, predictor, store, dry_run, true)
}

/// [`plan`], computing the script's sha256 ([`Plan::script_sha256`]) only when
/// `script_sha256` is true (no feature depends on it; `predict` without `--json` skips it).
pub fn plan_hashing(
    spec: &JobSpec,
    settings: &Settings,
    predictor: &Predictor,
    store: Option<&Store>,
    dry_run: bool,
    script_sha256: bool,
) -> Result<Plan, Error> {
    let script = spec
        .script
        .clone()
        .or_else(|| features::resolve_script(&spec.command));
    let runtime_hint = spec
        .runtime
        .clone()
        .or_else(|| features::runtime_from_command(&spec.command));
    let (job_key, legacy_job_key) = job_keys(spec, script.as_deref());
    let prior = match store {
        Some(s) => s.prior_runs(&job_key, legacy_job_key.as_deref())?,
        None => PriorRuns::default(),
    };
    let (catalog, mut opts) = catalog_and_options(settings);
    opts.script_sha256 = script_sha256;
    let req = FeatureRequest {
        script: script.as_deref(),
        runtime: runtime_hint.as_deref(),
        inputs: &spec.inputs,
        command: &spec.command,
        prior: &prior,
    };
    let extracted = features::extract(&req, &catalog, &opts)?;
    let runtime = runtime_hint
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| extracted.language.as_str().to_string());
    let (prediction, model_warning) = predictor.predict_with_warning(&extracted.vector);
    let sizer = Sizer::new(settings.policy(), settings.host_budget_mb);
    let (key_history, model_fallback) = match store {
        Some(s) => (
            KeyHistory::from_runs(
                &s.key_runs_with_alias(
                    &job_key,
                    legacy_job_key.as_deref(),
                    2 * sizer.alloc.window,
                )?,
                &sizer.alloc,
            ),
            model_fallback(s, settings, &prediction)?,
        ),
        None => (KeyHistory::default(), None),
    };
    let size = JobSize::from_features(|k| extracted.vector.get(k));
    let novelty = predictor.novelty(&extracted.vector, &job_key);
    let decision = sizer.first_limits(
        &Evidences {
            prediction: &prediction,
            novelty: &novelty,
            key: &key_history,
            size,
            model_fallback: model_fallback.as_deref(),
        },
        dry_run,
    );
    Ok(Plan {
        job_key,
        legacy_job_key,
        runtime,
        script_sha256: extracted.scan.as_ref().map(|s| s.sha256.clone()),
        script_truncated: extracted.scan.as_ref().is_some_and(|s| s.truncated),
        script,
        prediction,
        decision,
        model_warning,
        novelty,
        model_fallback,
        size,
        extracted,
        key_history,
    })
}

pub(crate) fn exit_code_for(a: &executor::Actuals) -> i32 {
    if let Some(sig) = a.interrupted_by {
        return 128 + sig;
    }
    match a.outcome {
        Outcome::Ok => 0,
        Outcome::TimedOut => exit_codes::TIMED_OUT,
        Outcome::OomKilled => exit_codes::OOM_KILLED,
        _ => match (a.exit_code, a.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            _ => 1,
        },
    }
}

/// Record a rejection and build its report.
pub(crate) fn reject(
    store: &mut Store,
    rows: &JobRows,
    plan: Plan,
    settings: &Settings,
    r: &Rejection,
    progress: &mut dyn FnMut(&str),
) -> Result<RunReport, Error> {
    let lim = policy::limits_for(&plan.prediction, settings.policy(), settings.host_budget_mb);
    let sizing = rows.base.sizing.clone();
    let id = store.insert_prediction(&rows.row(lim, None, &sizing, 1, true))?;
    progress(&format!("rejected: {}", r.reason));
    Ok(RunReport {
        job_id: rows.base.job_id.clone(),
        backend: rows.base.backend.clone(),
        dry_run: rows.base.dry_run,
        attempts: Vec::new(),
        rejected_row: Some(id),
        exit_code: exit_codes::REJECTED,
        plan,
        slurm_job_ids: Vec::new(),
        sources: None,
    })
}

/// Apply `--timeout` / `--memory-mb` to the decision's applied limits, record them as
/// those limits' source, and say where each resulting limit came from. `run` (local and
/// SLURM) and `predict` all call this, so `predict` shows what `run` enforces.
pub fn apply_overrides(
    applied: &mut Limits,
    sizing: &mut Sizing,
    opts: &RunOptions,
) -> LimitSources {
    if let Some(t) = opts.timeout_s {
        applied.timeout_s = t.max(1);
        sizing.timeout_source = LimitSource::Override;
    }
    if let Some(m) = opts.memory_mb {
        applied.memory_limit_mb = m.max(1);
        sizing.memory_source = LimitSource::Override;
    }
    LimitSources::from_sizing(sizing)
}

/// Run a job end to end, recording every attempt: locally under the executor, or on SLURM
/// (`[executor] backend` / `--backend`). Both go through the same attempt loop.
pub fn run(
    spec: &JobSpec,
    settings: &Settings,
    opts: &RunOptions,
    mut progress: impl FnMut(&str),
) -> Result<RunReport, Error> {
    let program = spec
        .command
        .first()
        .ok_or(executor::ExecError::EmptyCommand)?;
    if opts.backend.unwrap_or(settings.file.executor.backend) == BackendChoice::Slurm {
        if spec.user.is_some() {
            // sbatch runs the job as the submitting user; say so rather than ignore it.
            return Err(Error::Usage(
                "--user is not supported with the SLURM backend: submit as that user instead"
                    .into(),
            ));
        }
        executor::resolve_program(program)?;
        let slurm = Slurm::new(&settings.file.slurm);
        let budget = slurm.node_memory_mb()?;
        let enforced = slurm.enforces_memory();
        let mut backend = Cluster::new(slurm, settings, enforced);
        let mut store = settings.open_store()?;
        settle_at_start(&mut store, settings, &mut progress);
        // The same plan as locally, with SLURM's node memory as the budget.
        let mut cluster = settings.clone();
        cluster.host_budget_mb = budget;
        return run_on(
            &mut backend,
            &mut store,
            spec,
            &cluster,
            opts,
            &mut progress,
            |b, p| {
                let job = cluster::batch_job(b, settings, spec, p.plan, p.job_id, p.dry_run)?;
                b.set_job(job);
                Ok(())
            },
        );
    }
    let run_as = spec
        .user
        .as_deref()
        .map(executor::user::RunAs::resolve)
        .transpose()
        .map_err(executor::ExecError::from)?;
    executor::resolve_program_for(program, run_as.as_ref())?;
    // From here on SIGINT/TERM/HUP/QUIT settle the row and free the reservation in every phase.
    executor::signals::install().map_err(executor::ExecError::Runtime)?;
    let exec = Executor::with_v2_options(
        settings.file.executor.cgroup,
        &executor::cgroup::V2Options {
            move_peers: settings.file.executor.v2_move_peers,
        },
    )?;
    let mut store = settings.open_store()?;
    recover_orphans(&mut store, &exec)?;
    settle_at_start(&mut store, settings, &mut progress);
    let mut backend = Local::new(exec, settings, opts.queue_timeout);
    run_on(
        &mut backend,
        &mut store,
        spec,
        settings,
        opts,
        &mut progress,
        |b, p| {
            b.set_job(LocalJob {
                command: spec.command.clone(),
                cwd: spec.cwd.clone(),
                run_as,
                priority: spec.priority,
                predicted_peak_mb: p.plan.prediction.peak_rss_mb,
                sources: p.sources.clone(),
            });
            Ok(())
        },
    )
}

/// A planned job about to run, as a backend is given it before the first attempt.
struct Planned<'a> {
    plan: &'a Plan,
    job_id: &'a str,
    dry_run: bool,
    sources: &'a LimitSources,
}

/// Plan the job against `settings` (whose budget is the backend's), record a rejection or
/// run the attempt loop on `backend`; `prepare` gives the backend the job before its
/// first attempt.
fn run_on<B: Backend>(
    backend: &mut B,
    store: &mut Store,
    spec: &JobSpec,
    settings: &Settings,
    opts: &RunOptions,
    progress: &mut dyn FnMut(&str),
    prepare: impl FnOnce(&mut B, Planned<'_>) -> Result<(), Error>,
) -> Result<RunReport, Error> {
    let _ = Predictor::seed_model_dir(&settings.model_dir);
    let (predictor, warnings) = Predictor::load(&settings.model_dir);
    for w in warnings {
        progress(&format!("warning: {w}"));
    }
    let dry_run = opts.dry_run || settings.dry_run;
    let plan = plan(spec, settings, &predictor, Some(store), dry_run)?;
    if let Some(w) = &plan.model_warning {
        progress(&format!("warning: {w}"));
    }
    let job_id = new_job_id();
    let mut rows = JobRows::new(
        spec,
        &plan,
        &job_id,
        backend.name(),
        backend.enforces_memory(),
        dry_run,
    );
    let (predicted, mut applied, mut sizing) = match &plan.decision {
        Decision::Reject(r) => {
            let r = r.clone();
            return reject(store, &rows, plan.clone(), settings, &r, progress);
        }
        Decision::Run {
            predicted,
            applied,
            sizing,
        } => (*predicted, *applied, sizing.clone()),
    };
    let sources = apply_overrides(&mut applied, &mut sizing, opts);
    rows.set_sources(&sources);
    if let Some(w) = backend.unenforced_warning() {
        progress(&w);
    }
    prepare(
        backend,
        Planned {
            plan: &plan,
            job_id: &job_id,
            dry_run,
            sources: &sources,
        },
    )?;
    let driven = attempt::drive(
        store,
        backend,
        &rows,
        predicted,
        Attempt {
            number: 1,
            limits: applied,
            sizing,
        },
        &plan.evidences(),
        settings.policy(),
        settings.host_budget_mb,
        opts.wait,
        progress,
    )?;
    let (attempts, exit_code) = match driven.finish {
        Finish::Submitted => (driven.attempts, exit_codes::OK),
        Finish::Interrupted(sig) => {
            progress(&format!("interrupted by signal {sig}"));
            (driven.attempts, 128 + sig)
        }
        Finish::Ended => {
            let attempts = backend.attempts(store, &job_id, driven.attempts)?;
            let code = attempts
                .last()
                .map(|a| exit_code_for(&a.actuals))
                .unwrap_or(1);
            (attempts, code)
        }
    };
    Ok(RunReport {
        job_id,
        backend: backend.name().into(),
        dry_run,
        attempts,
        rejected_row: None,
        exit_code,
        plan,
        slurm_job_ids: driven.handles,
        sources: Some(sources),
    })
}
