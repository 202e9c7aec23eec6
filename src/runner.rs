//! One job end to end: features → predict → limits → record → run → settle (→ escalate).
//!
//! The CLI and embedding executors both call this; the stages it strings together stay pure
//! and unaware of each other.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{BackendChoice, Settings};
use crate::error::{exit_codes, Error};
use crate::executor::admission::{Admission, AdmissionConfig, AdmissionError};
use crate::executor::{self, ExecRequest, Executor};
use crate::features::{self, Catalog, Extracted, FeatureRequest, PriorRuns, ScanOptions};
use crate::job::{JobSpec, Outcome};
use crate::model::{Prediction, Predictor};
use crate::policy::{
    self, Decision, Evidences, JobSize, KeyHistory, LimitSource, Limits, Rejection, Sizer, Sizing,
};
use crate::provenance::LimitSources;
use crate::store::{Measured, NewPrediction, Settlement, Store};

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
pub fn model_fallback(
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

/// A row for an attempt that never ran.
pub(crate) fn unrun(outcome: Outcome) -> Settlement {
    Settlement {
        actual_cpu_s: None,
        actual_rss_mb: None,
        actual_wall_s: None,
        rusage_maxrss_mb: None,
        measure_source: "none".into(),
        exit_code: None,
        signal: None,
        outcome,
        memory_enforced: false,
    }
}

/// A row for an attempt that a signal ended before its job started.
pub(crate) fn interrupted(sig: i32) -> Settlement {
    Settlement {
        signal: Some(sig),
        ..unrun(Outcome::Failed)
    }
}

/// The name of this host, as recorded with each row.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn hex(bytes: &[u8], n: usize) -> String {
    bytes.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

/// The job key presize used before readable keys: `k-` + a hash of the script's canonical
/// path (or of the program). Still looked up, so history recorded under it is found.
pub fn legacy_job_key(script: Option<&Path>, command: &[OsString]) -> String {
    let digest = Sha256::digest(key_basis(script, command).as_os_str().as_encoded_bytes());
    format!("k-{}", hex(&digest, 8))
}

fn key_basis(script: Option<&Path>, command: &[OsString]) -> PathBuf {
    match script {
        Some(s) => std::fs::canonicalize(s).unwrap_or_else(|_| s.to_owned()),
        None => command
            .first()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("?")),
    }
}

/// A name fit for a key: ASCII letters, digits, `.`, `_`, `-`, at most 40 characters.
fn key_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if s.is_empty() {
        "job".into()
    } else {
        s
    }
}

/// The inline program of `python3 -c CODE`, `Rscript -e CODE`, `sh -c CODE`, `perl -e CODE`
/// … (the argument after the first `-c` / `-e` that precedes any script), with the flag.
fn inline_code(command: &[OsString]) -> Option<(&'static str, &OsString)> {
    let mut it = command.iter().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-c") => return it.next().map(|c| ("c", c)),
            Some("-e") => return it.next().map(|c| ("e", c)),
            Some(s) if s.starts_with('-') => continue,
            _ => return None,
        }
    }
    None
}

/// Default job key, readable and stable: the script's file name plus a short hash of its
/// canonical path (`alloc.py-1a2b3c4d`); for an inline program (`python3 -c CODE`) the
/// program name, the flag and a hash of the code (`python3-c-5e6f7a8b`), so different
/// programs get different keys; otherwise the program name and a hash of it as given.
pub fn default_job_key(script: Option<&Path>, command: &[OsString]) -> String {
    let program = command
        .first()
        .and_then(|p| Path::new(p).file_name())
        .map(|n| key_name(&n.to_string_lossy()))
        .unwrap_or_else(|| "job".into());
    if script.is_none() {
        if let Some((flag, code)) = inline_code(command) {
            let digest = Sha256::digest(code.as_encoded_bytes());
            return format!("{program}-{flag}-{}", hex(&digest, 4));
        }
    }
    let basis = key_basis(script, command);
    let name = match script {
        Some(s) => s
            .file_name()
            .map(|n| key_name(&n.to_string_lossy()))
            .unwrap_or_else(|| "script".into()),
        None => program,
    };
    let digest = Sha256::digest(basis.as_os_str().as_encoded_bytes());
    format!("{name}-{}", hex(&digest, 4))
}

/// The job key of `spec` and, for a default key, the key the same job had before readable
/// keys (absent for inline programs, whose old key was shared by every program).
pub fn job_keys(spec: &JobSpec, script: Option<&Path>) -> (String, Option<String>) {
    match &spec.job_key {
        Some(k) => (k.clone(), None),
        None => {
            let legacy = (script.is_some() || inline_code(&spec.command).is_none())
                .then(|| legacy_job_key(script, &spec.command));
            (default_job_key(script, &spec.command), legacy)
        }
    }
}

pub(crate) fn new_job_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(hostname().as_bytes());
    hex(&h.finalize(), 8)
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

/// Settle rows whose executor died, kill what they left behind, remove their cgroups.
/// Returns the ids marked `lost`.
pub fn recover_orphans(store: &mut Store, exec: &Executor) -> Result<Vec<i64>, Error> {
    let host = hostname();
    Admission::new(
        store.conn_mut(),
        host.clone(),
        AdmissionConfig {
            budget_mb: 0,
            burst_factor: 1.0,
            auto_burst: None,
            queue_timeout: None,
            poll: Duration::from_millis(200),
        },
    )
    .reclaim_dead()?;
    // Only what is proven orphaned is touched: rows and cgroups of an executor in another PID
    // namespace (a container, `unshare -p`) are left alone even when its pid means nothing here.
    let me = executor::owner::Identity::current();
    let orphans = store.orphans(&host, &|o| match o.executor_pid {
        Some(pid) => {
            executor::owner::liveness(
                me,
                o.executor_boot_id.as_deref(),
                o.executor_pidns.and_then(|n| u64::try_from(n).ok()),
                pid,
                o.executor_start,
            ) == executor::owner::Liveness::Dead
        }
        None => true,
    })?;
    for o in &orphans {
        let same_ns = o.executor_pidns.and_then(|n| u64::try_from(n).ok()) == me.pidns
            || o.executor_pidns.is_none();
        if let (Some(pid), start, true) = (o.job_pid, o.job_start, same_ns) {
            // The job leads its own process group; kill it only if it is the same process.
            if executor::process_alive(pid, start) {
                // SAFETY: plain syscall on a verified live process group.
                unsafe {
                    libc::killpg(pid as i32, libc::SIGKILL);
                }
            }
        }
    }
    exec.backend().cleanup_stale(CGROUP_PREFIX, &|name| {
        executor::owner::cgroup_liveness(me, name) != executor::owner::Liveness::Dead
    });
    // Settlements spooled when the disk was full are recorded before anything is called lost.
    crate::store::spool::replay(store)?;
    let ids: Vec<i64> = orphans.iter().map(|o| o.id).collect();
    store.mark_lost(&ids)?;
    Ok(ids)
}

/// Prefix of every cgroup presize creates.
pub const CGROUP_PREFIX: &str = executor::owner::CGROUP_PREFIX;

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

/// What every row of one job has in common; `row` fills in one attempt. Shared by the
/// local and SLURM backends.
pub(crate) struct JobRows {
    base: NewPrediction,
}

impl JobRows {
    pub(crate) fn new(
        spec: &JobSpec,
        plan: &Plan,
        job_id: &str,
        backend: &str,
        memory_enforced: bool,
        dry_run: bool,
    ) -> Self {
        let command_json = serde_json::to_string(
            &spec
                .command
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".into());
        let features_json =
            serde_json::to_string(&plan.extracted.vector.to_map()).unwrap_or_else(|_| "{}".into());
        let my_pid = std::process::id();
        let unset = Limits {
            memory_limit_mb: 0,
            timeout_s: 0,
            enforced: false,
        };
        JobRows {
            base: NewPrediction {
                job_id: job_id.to_string(),
                analysis_id: spec.analysis_id.clone(),
                job_key: plan.job_key.clone(),
                runtime: plan.runtime.clone(),
                script_path: plan.script.as_ref().map(|p| p.display().to_string()),
                script_sha256: plan.script_sha256.clone(),
                command_json,
                features_json,
                schema_hash: plan.extracted.vector.schema.hash.clone(),
                prediction: plan.prediction.clone(),
                predicted: unset,
                applied: None,
                memory_source: None,
                timeout_source: None,
                memory_enforced,
                dry_run,
                backend: backend.to_string(),
                priority: spec.priority.as_str().to_string(),
                attempt: 1,
                host: hostname(),
                executor_pid: my_pid,
                executor_start: executor::proc_start_ticks(my_pid),
                rejected: false,
                sizing: match &plan.decision {
                    Decision::Run { sizing, .. } => sizing.clone(),
                    Decision::Reject(r) => Sizing {
                        reason: format!("rejected: {}", r.reason),
                        ..Sizing::default()
                    },
                },
                size: plan.size,
            },
        }
    }

    /// Record where the applied limits came from (every later attempt row carries them).
    pub(crate) fn set_sources(&mut self, s: &LimitSources) {
        self.base.memory_source = Some(s.memory);
        self.base.timeout_source = Some(s.timeout);
    }

    /// The row of one attempt (or of a rejection). The `enforced` column is 1 only when the
    /// memory cap in force came from the prediction.
    pub(crate) fn row(
        &self,
        predicted: Limits,
        applied: Option<Limits>,
        sizing: &Sizing,
        attempt: u32,
        rejected: bool,
    ) -> NewPrediction {
        let from_prediction = !rejected && sizing.memory_source == LimitSource::Predicted;
        NewPrediction {
            memory_source: (!rejected).then_some(sizing.memory_source),
            timeout_source: (!rejected).then_some(sizing.timeout_source),
            predicted: Limits {
                enforced: predicted.enforced && from_prediction,
                ..predicted
            },
            applied,
            memory_enforced: applied.is_some() && self.base.memory_enforced,
            attempt,
            rejected,
            sizing: sizing.clone(),
            ..self.base.clone()
        }
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

/// The limits of the next attempt after one that ended with `outcome` under `applied`, or
/// `None` when it is not retried: the sizing engine's one retry rule
/// ([`Sizer::retry_limits`]), shared by the local and SLURM backends. The caller checks
/// `max_attempts`.
pub(crate) fn next_limits(
    plan: &Plan,
    settings: &Settings,
    applied: Limits,
    sizing: &Sizing,
    outcome: Outcome,
    attempt: u32,
) -> Option<Limits> {
    Sizer::new(settings.policy(), settings.host_budget_mb).retry_limits(
        &plan.evidences(),
        applied,
        sizing,
        outcome,
        attempt,
    )
}

/// Run a job end to end, recording every attempt.
pub fn run(
    spec: &JobSpec,
    settings: &Settings,
    opts: &RunOptions,
    mut progress: impl FnMut(&str),
) -> Result<RunReport, Error> {
    if opts.backend.unwrap_or(settings.file.executor.backend) == BackendChoice::Slurm {
        if spec.user.is_some() {
            // sbatch runs the job as the submitting user; say so rather than ignore it.
            return Err(Error::Usage(
                "--user is not supported with the SLURM backend: submit as that user instead"
                    .into(),
            ));
        }
        return crate::slurm::run(spec, settings, opts, progress);
    }
    let program = spec
        .command
        .first()
        .ok_or(executor::ExecError::EmptyCommand)?;
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
    crate::slurm::settle_at_start(&mut store, settings, &mut progress);
    let _ = Predictor::seed_model_dir(&settings.model_dir);
    let (predictor, warnings) = Predictor::load(&settings.model_dir);
    for w in warnings {
        progress(&format!("warning: {w}"));
    }
    let dry_run = opts.dry_run || settings.dry_run;
    let plan = plan(spec, settings, &predictor, Some(&store), dry_run)?;
    if let Some(w) = &plan.model_warning {
        progress(&format!("warning: {w}"));
    }
    let job_id = new_job_id();
    let host = hostname();
    let mut rows = JobRows::new(
        spec,
        &plan,
        &job_id,
        exec.backend_name(),
        exec.enforces_memory(),
        dry_run,
    );

    let (predicted, mut applied, mut sizing) = match &plan.decision {
        Decision::Reject(r) => {
            let r = r.clone();
            return reject(&mut store, &rows, plan.clone(), settings, &r, &mut progress);
        }
        Decision::Run {
            predicted,
            applied,
            sizing,
        } => (*predicted, *applied, sizing.clone()),
    };
    let sources = apply_overrides(&mut applied, &mut sizing, opts);
    rows.set_sources(&sources);
    if !exec.enforces_memory() {
        if let Some(why) = exec.why_unenforced() {
            progress(&format!(
                "warning: memory caps are not enforced ({why}); measuring with rusage"
            ));
        }
    }

    let policy = settings.policy();
    let admission = AdmissionConfig {
        budget_mb: settings.host_budget_mb,
        burst_factor: settings.file.admission.burst_factor,
        auto_burst: settings.file.admission.auto_burst_rule(),
        queue_timeout: opts.queue_timeout,
        poll: Duration::from_millis(settings.file.admission.poll_ms.clamp(10, 10_000)),
    };
    let mut attempts = Vec::new();
    let mut attempt = 1u32;
    let mut interrupted_before_start = None;
    loop {
        if let Some(sig) = executor::signals::pending() {
            // A signal before this attempt (e.g. while waiting to retry): do not start it.
            interrupted_before_start = Some(sig);
            break;
        }
        let id = store.insert_prediction(&rows.row(
            predicted,
            Some(applied),
            &sizing,
            attempt,
            false,
        ))?;
        // Space for the settlement, reserved while there is some (see store::spool).
        let mut spool = crate::store::spool::Spool::reserve(store.path(), id).ok();
        progress(&format!(
            "attempt {attempt}: memory cap {} MB ({}{}), timeout {} s ({}){}",
            applied.memory_limit_mb,
            sources.memory,
            if exec.enforces_memory() {
                ""
            } else {
                ", not enforced"
            },
            applied.timeout_s,
            sources.timeout,
            match (&sources.reason, attempt) {
                (Some(r), 1) => format!(" — {r}"),
                _ => String::new(),
            }
        ));
        let req = ExecRequest {
            command: spec.command.clone(),
            cwd: spec.cwd.clone(),
            memory_limit_mb: Some(applied.memory_limit_mb),
            timeout: Duration::from_secs(applied.timeout_s),
            grace: Duration::from_secs(policy.grace_period_s),
            pids_max: (settings.file.executor.pids_max > 0)
                .then_some(settings.file.executor.pids_max),
            cgroup_name: executor::owner::Identity::current().cgroup_name(id),
            run_as: run_as.clone(),
        };
        let reservation = match Admission::new(store.conn_mut(), host.clone(), admission.clone())
            .acquire(
                Some(id),
                applied.memory_limit_mb,
                plan.prediction.peak_rss_mb,
                spec.priority,
                &mut |m: &str| progress(m),
            ) {
            Ok(r) => r,
            Err(AdmissionError::Interrupted(sig)) => {
                let _ = store.settle(id, &interrupted(sig));
                interrupted_before_start = Some(sig);
                break;
            }
            Err(e) => {
                let outcome = match e {
                    AdmissionError::QueueTimeout { .. } => Outcome::QueueTimeout,
                    _ => Outcome::Failed,
                };
                let _ = store.settle(id, &unrun(outcome));
                return Err(e.into());
            }
        };
        let mut start_err = None;
        let result = exec.run(&req, &mut |st| {
            if let Err(e) =
                store.mark_started(id, st.pid, st.start_ticks, st.cgroup_name.as_deref())
            {
                start_err = Some(e);
            }
        });
        let released =
            Admission::new(store.conn_mut(), host.clone(), admission.clone()).release(reservation);
        let actuals = match result {
            Ok(a) => a,
            Err(executor::ExecError::Interrupted(sig)) => {
                let _ = store.settle(id, &interrupted(sig));
                interrupted_before_start = Some(sig);
                break;
            }
            Err(e) => {
                // Never leave the row dangling.
                let _ = store.settle(id, &unrun(Outcome::Failed));
                return Err(e.into());
            }
        };
        if let Err(e) = released {
            progress(&format!("warning: could not release the reservation: {e}"));
        }
        if let Some(e) = start_err {
            progress(&format!("warning: could not record the start: {e}"));
        }
        let settlement = Settlement {
            actual_cpu_s: actuals.cpu_s,
            actual_rss_mb: actuals.peak_rss_mb,
            actual_wall_s: Some(actuals.wall_s),
            rusage_maxrss_mb: Some(actuals.rusage_maxrss_mb),
            measure_source: actuals.measure_source.clone(),
            exit_code: actuals.exit_code,
            signal: actuals.signal,
            outcome: actuals.outcome,
            memory_enforced: actuals.memory_enforced,
        };
        let measured = Measured {
            charged_peak_mb: actuals.charged_peak_mb,
            oom_events: actuals
                .charged_peak_mb
                .is_some()
                .then_some(actuals.oom_events),
        };
        let settled = store.settle_measured(id, &settlement, &measured);
        if let Err(e) = settled {
            // The job ran: its exit code must not be hidden behind a store error (disk full).
            let kept = spool.as_mut().and_then(|sp| {
                sp.write(id, &settlement, &measured)
                    .ok()
                    .map(|()| sp.path().display().to_string())
            });
            progress(&match kept {
                Some(path) => format!(
                    "error: the job ended ({}) but row {id} could not be written ({e}); its result is kept in {path} and is recorded by the next presize run",
                    actuals.outcome
                ),
                None => format!(
                    "error: the job ended ({}) but its result could not be recorded in row {id}: {e}",
                    actuals.outcome
                ),
            });
            let exit_code = exit_code_for(&actuals);
            attempts.push(AttemptReport {
                row_id: id,
                attempt,
                applied,
                actuals,
            });
            return Ok(RunReport {
                job_id,
                backend: exec.backend_name().into(),
                dry_run,
                attempts,
                rejected_row: None,
                exit_code,
                plan,
                slurm_job_ids: Vec::new(),
                sources: Some(sources),
            });
        }
        if actuals.outcome == Outcome::Ok && actuals.oom_events > 0 {
            progress(&format!(
                "warning: the kernel OOM-killed {} process(es) inside the job at its {} MB cap, \
                 but its main process exited 0: recorded as ok with oom_events = {}",
                actuals.oom_events, applied.memory_limit_mb, actuals.oom_events
            ));
        }
        progress(&format!(
            "attempt {attempt}: {} — peak {:.1} MB, cpu {:.2} s, wall {:.2} s ({})",
            actuals.outcome,
            actuals.peak_rss_mb.unwrap_or(0.0),
            actuals.cpu_s.unwrap_or(0.0),
            actuals.wall_s,
            actuals.measure_source
        ));
        let outcome = actuals.outcome;
        let interrupted = actuals.interrupted_by.is_some();
        attempts.push(AttemptReport {
            row_id: id,
            attempt,
            applied,
            actuals,
        });
        if interrupted || attempt >= policy.max_attempts {
            break;
        }
        match next_limits(&plan, settings, applied, &sizing, outcome, attempt) {
            Some(next) => {
                if outcome == Outcome::OomKilled {
                    progress(&format!(
                        "OOM-killed at {} MB (peak > cap); retrying with {} MB",
                        applied.memory_limit_mb, next.memory_limit_mb
                    ));
                    sizing.memory_source = LimitSource::Predicted;
                } else if outcome == Outcome::TimedOut {
                    progress(&format!(
                        "killed at its {} s timeout; retrying with {} s",
                        applied.timeout_s, next.timeout_s
                    ));
                    sizing.timeout_source = if next.timeout_s == policy.default_timeout_s {
                        LimitSource::Static
                    } else {
                        LimitSource::Predicted
                    };
                }
                sizing.reason = format!("retry after {outcome}: the engine's retry rule");
                applied = next;
            }
            None => break,
        }
        attempt += 1;
    }
    let exit_code = match interrupted_before_start {
        Some(sig) => {
            progress(&format!("interrupted by signal {sig}"));
            128 + sig
        }
        None => attempts
            .last()
            .map(|a| exit_code_for(&a.actuals))
            .unwrap_or(1),
    };
    Ok(RunReport {
        job_id,
        backend: exec.backend_name().into(),
        dry_run,
        attempts,
        rejected_row: None,
        exit_code,
        plan,
        slurm_job_ids: Vec::new(),
        sources: Some(sources),
    })
}
