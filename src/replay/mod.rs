//! Trace import and online replay: the benchmark harness behind `presize replay`.
//!
//! A Nextflow trace (one row per task attempt) is replayed through the online allocation
//! model in [`crate::model::allocate`] under the published protocol of the Sizey paper
//! (Bader et al., IEEE CLUSTER 2024), so the numbers are comparable with the reference
//! methods listed in `shared/data/README.md`:
//!
//! 1. per `process`, keep rows with `rss > 0`;
//! 2. skip a process with fewer than [`MIN_ROWS_PER_PROCESS`] rows or any `realtime == 0`;
//! 3. feature `rchar`, target `rss` (bytes), runtime `realtime` (ms);
//! 4. split the rows into 30 % initial history and 70 % replayed online, exactly like
//!    scikit-learn `train_test_split(test_size=0.7, random_state=1996)` (numpy's legacy
//!    `RandomState(1996).permutation(n)` is reproduced bit for bit in [`permutation`]);
//! 5. each online row: allocate `a`; if `a ≥ y` wastage += (a − y)·t, otherwise the attempt
//!    fails (wastage += a·t, failures += 1) and the model picks a new `a` knowing only
//!    `y > a`; then the row joins the history;
//! 6. wastage GB·h = Σ bytes/1e9 × ms/3.6e6; MAQ = usage / (usage + wastage).

mod methods;
mod split;
pub mod store;
mod trace;

pub use methods::TovarMethod;
pub use split::{permutation, train_test_split};
pub use trace::{read_trace, read_trace_from, Trace, TraceRow};

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::job::Outcome;
use crate::model::Prediction;
use crate::policy::{
    Decision, Evidences, JobSize, KeyHistory, KeyRun, Limits, Policy, Sizer, Sizing,
};
use crate::runner::attempt::{next_attempt, Attempt};

/// Fewer rows than this and a process is left out (the published protocol).
pub const MIN_ROWS_PER_PROCESS: usize = 34;
/// The seed of the published protocol (`random_state=1996`).
pub const SPLIT_SEED: u32 = 1996;
/// Share of each process's rows replayed online (`test_size=0.7`).
pub const ONLINE_FRACTION: f64 = 0.7;
/// Attempts per task before the replay gives up on a method (a bug guard, never reached
/// by a model whose retries grow).
const MAX_ATTEMPTS: u32 = 200;

/// Errors reading or replaying a trace. Every message is one line naming the file.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read trace {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("trace {path} is empty: expected a Nextflow trace CSV with a header row")]
    Empty { path: PathBuf },
    #[error("trace {path} has no `{column}` column; export it with Nextflow `trace.fields` including {column} and `trace.raw = true`")]
    MissingColumn { path: PathBuf, column: &'static str },
    #[error("trace {path} line {line}: {reason}")]
    Malformed {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("trace {path} line {line}: column `{column}` is not a number: {value:?} (raw byte/ms values are needed: set `trace.raw = true`)")]
    NotNumeric {
        path: PathBuf,
        line: u64,
        column: &'static str,
        value: String,
    },
    #[error("{what}")]
    Invalid { what: String },
}

// ---------------------------------------------------------------------------------------
// protocol
// ---------------------------------------------------------------------------------------

/// One task instance as the protocol sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Input size feature (`rchar`, bytes; 0 when missing).
    pub x: f64,
    /// Target: `rss` in bytes.
    pub y: f64,
    /// Runtime: `realtime` in ms.
    pub runtime_ms: f64,
    /// Known before the run: requested CPUs and memory (bytes), if present.
    pub cpus: Option<f64>,
    pub memory: Option<f64>,
}

/// One process (task type) after the protocol's filters, split into history and online rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessSeries {
    pub process: String,
    pub initial: Vec<Task>,
    pub online: Vec<Task>,
}

/// Steps 1–4 of the protocol: filter, group by process (first-appearance order), split.
pub fn protocol_series(trace: &Trace) -> Vec<ProcessSeries> {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<&TraceRow>> = HashMap::new();
    for r in &trace.rows {
        if !groups.contains_key(r.process.as_str()) {
            order.push(r.process.as_str());
        }
        let g = groups.entry(r.process.as_str()).or_default();
        if r.rss.is_some_and(|v| v > 0.0) {
            g.push(r);
        }
    }
    let mut out = Vec::new();
    for p in order {
        let rows = match groups.get(p) {
            Some(r) => r,
            None => continue,
        };
        if rows.len() < MIN_ROWS_PER_PROCESS {
            continue;
        }
        // realtime == 0 (too short to measure) or missing: the process is left out.
        if rows.iter().any(|r| r.realtime.is_none_or(|t| t <= 0.0)) {
            continue;
        }
        let tasks: Vec<Task> = rows
            .iter()
            .map(|r| Task {
                x: r.rchar.unwrap_or(0.0).max(0.0),
                y: r.rss.unwrap_or(0.0),
                runtime_ms: r.realtime.unwrap_or(0.0),
                cpus: r.cpus,
                memory: r.memory,
            })
            .collect();
        let (train, test) = train_test_split(tasks.len(), ONLINE_FRACTION, SPLIT_SEED);
        out.push(ProcessSeries {
            process: p.to_string(),
            initial: train.iter().map(|&i| tasks[i]).collect(),
            online: test.iter().map(|&i| tasks[i]).collect(),
        });
    }
    out
}

/// Totals of one replay, in the protocol's units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Σ (allocation − y)·t over successes + Σ allocation·t over failed attempts, GB·h.
    pub wastage_gbh: f64,
    /// Σ y·t, GB·h.
    pub usage_gbh: f64,
    pub failures: u64,
    pub rows: u64,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.wastage_gbh += o.wastage_gbh;
        self.usage_gbh += o.usage_gbh;
        self.failures += o.failures;
        self.rows += o.rows;
    }

    /// usage / (usage + wastage); 1 when nothing was used or wasted.
    pub fn maq(&self) -> f64 {
        let d = self.usage_gbh + self.wastage_gbh;
        if d > 0.0 {
            self.usage_gbh / d
        } else {
            1.0
        }
    }
}

/// bytes × ms → GB·h.
pub fn gbh(bytes: f64, ms: f64) -> f64 {
    bytes / 1e9 * (ms / 3.6e6)
}

/// An online allocation method as the protocol drives it.
pub trait Method {
    /// Forget everything and learn the initial history of a new process.
    fn reset(&mut self, initial: &[Task]);
    /// First allocation (bytes) for a task, before it runs.
    fn first(&mut self, task: &Task) -> f64;
    /// Next allocation after attempt `attempt` (1-based) failed at `failed_at` bytes.
    fn retry(&mut self, task: &Task, failed_at: f64, attempt: u32) -> f64;
    /// The task finished: learn it.
    fn observe(&mut self, task: &Task);
    /// Timeouts set below a task's real wall time so far (methods that set none: 0).
    fn timeout_kills(&self) -> u64 {
        0
    }
}

/// MiB, the unit of the engine's memory limits.
const MIB: f64 = 1_048_576.0;

/// presize's sizing engine ([`crate::policy::Sizer`]) as a replay method: each process is a
/// job key, `rchar` its input size, `rss` its peak, `realtime` its wall time. The same
/// `first_limits`, retry decision (the runner's `next_attempt`, without `max_attempts`: the
/// protocol retries until the allocation fits) and window that `presize run` uses decide
/// every attempt,
/// under the same [`Policy`] (floors, margins, window, retry rule); a trace has no script,
/// so the cross-job prediction is empty and a key's own history is the only evidence.
#[derive(Debug, Clone)]
pub struct EngineMethod {
    pub policy: Policy,
    budget_mb: u64,
    key: KeyHistory,
    sizing: Sizing,
    /// Timeouts the engine set that the task's real wall time would have exceeded.
    pub timeout_kills: u64,
}

impl EngineMethod {
    pub fn new(policy: Policy) -> Self {
        EngineMethod {
            policy,
            // A large node: the budget never binds in the protocol.
            budget_mb: 1 << 30,
            key: KeyHistory::default(),
            sizing: Sizing::default(),
            timeout_kills: 0,
        }
    }

    fn run_of(t: &Task) -> KeyRun {
        KeyRun {
            input_mb: t.x / 1e6,
            arg: 0.0,
            peak_mb: t.y / MIB,
            wall_s: t.runtime_ms / 1000.0,
        }
    }

    fn evidences<'a>(&'a self, pred: &'a Prediction, t: &Task) -> Evidences<'a> {
        Evidences {
            prediction: pred,
            novelty: &[],
            key: &self.key,
            size: JobSize {
                input_mb: t.x / 1e6,
                arg: 0.0,
            },
            model_fallback: None,
        }
    }
}

/// No cross-job prediction: a trace row has no features.
fn empty_prediction() -> Prediction {
    let zero = crate::model::Bounds {
        peak_rss_mb: 0.0,
        wall_seconds: 0.0,
        cpu_seconds: 0.0,
    };
    Prediction {
        cpu_seconds: 0.0,
        peak_rss_mb: 0.0,
        wall_seconds: 0.0,
        confidence: 0.0,
        upper: zero,
        lower: zero,
        model_version: "trace".into(),
        source: crate::model::Source::Prior,
    }
}

impl Method for EngineMethod {
    fn reset(&mut self, initial: &[Task]) {
        let sizer = Sizer::new(&self.policy, self.budget_mb);
        let runs: Vec<KeyRun> = initial.iter().map(Self::run_of).collect();
        self.key = KeyHistory::from_runs(&runs, &sizer.alloc);
    }
    fn first(&mut self, task: &Task) -> f64 {
        let pred = empty_prediction();
        let sizer = Sizer::new(&self.policy, self.budget_mb);
        match sizer.first_limits(&self.evidences(&pred, task), false) {
            Decision::Run {
                applied, sizing, ..
            } => {
                if task.runtime_ms / 1000.0 > applied.timeout_s as f64 {
                    self.timeout_kills += 1;
                }
                self.sizing = sizing;
                applied.memory_limit_mb as f64 * MIB
            }
            Decision::Reject(_) => 0.0,
        }
    }
    /// The attempt killed at `failed_at` goes through `run`'s own retry decision
    /// (`runner::attempt::next_attempt`); the trace has no timeouts to kill at, so its
    /// timeout is unbounded.
    fn retry(&mut self, task: &Task, failed_at: f64, attempt: u32) -> f64 {
        let pred = empty_prediction();
        let killed = Attempt {
            number: attempt,
            limits: Limits {
                memory_limit_mb: (failed_at / MIB).ceil().max(1.0) as u64,
                timeout_s: u64::MAX,
                enforced: true,
            },
            sizing: self.sizing.clone(),
        };
        // The protocol retries until the allocation fits: no `max_attempts`.
        let policy = Policy {
            max_attempts: u32::MAX,
            ..self.policy.clone()
        };
        let retry = next_attempt(
            &policy,
            self.budget_mb,
            &self.evidences(&pred, task),
            &killed,
            Outcome::OomKilled,
            false,
        );
        match retry {
            Some(r) => {
                self.sizing = killed.next(&r).sizing;
                r.limits.memory_limit_mb as f64 * MIB
            }
            None => 0.0,
        }
    }
    fn observe(&mut self, task: &Task) {
        let alloc = crate::policy::engine::alloc_config(&self.policy);
        self.key.observe(&Self::run_of(task), &alloc);
    }
    fn timeout_kills(&self) -> u64 {
        self.timeout_kills
    }
}

/// The trace as a backend: an attempt with an allocation below the task's recorded peak
/// is OOM-killed, any other ends `ok`.
fn simulated_outcome(task: &Task, allocation: f64) -> Outcome {
    if allocation < task.y {
        Outcome::OomKilled
    } else {
        Outcome::Ok
    }
}

/// Step 5–6 for one process: each task's attempts on the simulated backend
/// (`simulated_outcome`), retried by the method until one fits.
pub fn replay_series(series: &ProcessSeries, method: &mut dyn Method) -> Tally {
    method.reset(&series.initial);
    let mut tally = Tally::default();
    for task in &series.online {
        let t = task.runtime_ms;
        tally.usage_gbh += gbh(task.y, t);
        tally.rows += 1;
        let mut a = sane(method.first(task));
        let mut attempt = 0;
        while simulated_outcome(task, a) == Outcome::OomKilled {
            attempt += 1;
            tally.failures += 1;
            tally.wastage_gbh += gbh(a, t);
            let next = sane(method.retry(task, a, attempt));
            // Guard against a method that does not grow (never hit by presize's model):
            // double instead, and after MAX_ATTEMPTS a jump that certainly ends the loop.
            a = if attempt >= MAX_ATTEMPTS {
                f64::MAX
            } else if next > a {
                next
            } else {
                (a * 2.0).max(1.0)
            };
        }
        tally.wastage_gbh += gbh(a - task.y, t);
        method.observe(task);
    }
    tally
}

fn sane(a: f64) -> f64 {
    if a.is_finite() && a > 0.0 {
        a
    } else {
        0.0
    }
}

/// One workflow's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowResult {
    pub name: String,
    pub wastage_gbh: f64,
    pub failures: u64,
    pub maq: f64,
    pub usage_gbh: f64,
    pub processes_used: usize,
    pub rows_used: usize,
    pub rows_online: usize,
    pub seconds: f64,
    /// First timeouts the engine set below the task's real wall time (a kill in `run`).
    #[serde(default)]
    pub timeout_kills: u64,
}

/// What `presize replay` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    pub workflows: Vec<WorkflowResult>,
    /// The policy replayed (the `[policy]` section `run` would use).
    pub config: serde_json::Value,
}

/// Replay one parsed trace with any method.
pub fn replay_trace(trace: &Trace, method: &mut dyn Method) -> WorkflowResult {
    let start = Instant::now();
    let series = protocol_series(trace);
    let mut tally = Tally::default();
    let mut rows_used = 0;
    let kills_before = method.timeout_kills();
    for s in &series {
        rows_used += s.initial.len() + s.online.len();
        tally.add(&replay_series(s, method));
    }
    let timeout_kills = method.timeout_kills() - kills_before;
    WorkflowResult {
        name: trace.workflow_name(),
        wastage_gbh: tally.wastage_gbh,
        failures: tally.failures,
        maq: tally.maq(),
        usage_gbh: tally.usage_gbh,
        processes_used: series.len(),
        rows_used,
        rows_online: tally.rows as usize,
        seconds: start.elapsed().as_secs_f64(),
        timeout_kills,
    }
}

/// Read and replay each trace through the sizing engine under `policy`;
/// `progress(done, total)` after each.
pub fn replay_files(
    paths: &[PathBuf],
    policy: &Policy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ReplayReport, ReplayError> {
    let mut method = EngineMethod::new(policy.clone());
    replay_files_with(paths, &mut method, policy, progress)
}

/// [`replay_files`] with any method (e.g. [`TovarMethod`] to check the harness).
pub fn replay_files_with(
    paths: &[PathBuf],
    method: &mut dyn Method,
    policy: &Policy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ReplayReport, ReplayError> {
    let config = serde_json::to_value(policy).map_err(|e| ReplayError::Invalid {
        what: format!("cannot serialise the policy: {e}"),
    })?;
    let mut workflows = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let trace = read_trace(p)?;
        let mut r = replay_trace(&trace, method);
        if r.processes_used == 0 {
            return Err(ReplayError::Invalid {
                what: format!(
                    "trace {}: no process has {MIN_ROWS_PER_PROCESS} or more rows with rss > 0 and realtime > 0; nothing to replay",
                    p.display()
                ),
            });
        }
        if r.name.is_empty() {
            r.name = p.display().to_string();
        }
        workflows.push(r);
        progress(i + 1, paths.len());
    }
    Ok(ReplayReport { workflows, config })
}

#[cfg(test)]
mod tests;
