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
//!    `RandomState(1996).permutation(n)` is reimplemented bit for bit in [`permutation`]);
//! 5. each online row: allocate `a`; if `a ≥ y` wastage += (a − y)·t, otherwise the attempt
//!    fails (wastage += a·t, failures += 1) and the model picks a new `a` knowing only
//!    `y > a`; then the row joins the history;
//! 6. wastage GB·h = Σ bytes/1e9 × ms/3.6e6; MAQ = usage / (usage + wastage).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::model::allocate::{self, AllocConfig, TaskHistory};

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

/// One row of a Nextflow trace (one task attempt). `None` = missing (`-` or empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRow {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    pub process: String,
    pub status: Option<String>,
    pub cpus: Option<f64>,
    /// Requested memory in bytes.
    pub memory: Option<f64>,
    /// Requested time in ms.
    pub time: Option<f64>,
    /// Measured wall time in ms.
    pub realtime: Option<f64>,
    pub rss: Option<f64>,
    pub peak_rss: Option<f64>,
    /// Bytes read (`rchar`), the protocol's "input size".
    pub rchar: Option<f64>,
}

/// A parsed trace file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub path: PathBuf,
    pub rows: Vec<TraceRow>,
}

impl Trace {
    /// Workflow name: `trace_eager.csv` → `eager` (the part after the first `_`).
    pub fn workflow_name(&self) -> String {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string());
        match stem.split_once('_') {
            Some((_, rest)) if !rest.is_empty() => rest.to_string(),
            _ => stem,
        }
    }
}

/// Read a Nextflow trace CSV (header row; columns by name; `-` = missing; RFC 4180 quoting).
///
/// Required columns: `process`, `realtime`, `rss`, `rchar`. Optional: `status`, `cpus`,
/// `memory`, `time`, `peak_rss`.
pub fn read_trace(path: &Path) -> Result<Trace, ReplayError> {
    let file = std::fs::File::open(path).map_err(|source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_trace_from(file, path)
}

/// [`read_trace`] from any reader; `path` only names the source in errors.
pub fn read_trace_from<R: std::io::Read>(reader: R, path: &Path) -> Result<Trace, ReplayError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(reader);
    let csv_err = |e: csv::Error| -> ReplayError {
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        let reason = match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => format!("expected {expected_len} fields like the header, found {len}"),
            csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
            csv::ErrorKind::Io(io) => io.to_string(),
            _ => e.to_string().replace('\n', " "),
        };
        ReplayError::Malformed {
            path: path.to_path_buf(),
            line,
            reason,
        }
    };
    let headers = rdr.headers().map_err(csv_err)?.clone();
    if headers.is_empty() || (headers.len() == 1 && headers[0].trim().is_empty()) {
        return Err(ReplayError::Empty {
            path: path.to_path_buf(),
        });
    }
    let find = |name: &str| headers.iter().position(|h| h.trim() == name);
    let require = |name: &'static str| {
        find(name).ok_or_else(|| ReplayError::MissingColumn {
            path: path.to_path_buf(),
            column: name,
        })
    };
    let c_process = require("process")?;
    let c_realtime = require("realtime")?;
    let c_rss = require("rss")?;
    let c_rchar = require("rchar")?;
    let c_status = find("status");
    let c_cpus = find("cpus");
    let c_memory = find("memory");
    let c_time = find("time");
    let c_peak = find("peak_rss");

    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_err(e)),
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let text = |c: Option<usize>| -> Option<&str> {
            let v = record.get(c?)?.trim();
            if v.is_empty() || v == "-" {
                None
            } else {
                Some(v)
            }
        };
        let num = |c: Option<usize>, column: &'static str| -> Result<Option<f64>, ReplayError> {
            match text(c) {
                None => Ok(None),
                Some(v) => match v.parse::<f64>() {
                    Ok(x) if x.is_finite() => Ok(Some(x)),
                    _ => Err(ReplayError::NotNumeric {
                        path: path.to_path_buf(),
                        line,
                        column,
                        value: v.chars().take(40).collect(),
                    }),
                },
            }
        };
        let process = match text(Some(c_process)) {
            Some(p) => p.to_string(),
            None => {
                return Err(ReplayError::Malformed {
                    path: path.to_path_buf(),
                    line,
                    reason: "empty `process`".to_string(),
                })
            }
        };
        rows.push(TraceRow {
            line,
            process,
            status: text(c_status).map(str::to_string),
            cpus: num(c_cpus, "cpus")?,
            memory: num(c_memory, "memory")?,
            time: num(c_time, "time")?,
            realtime: num(Some(c_realtime), "realtime")?,
            rss: num(Some(c_rss), "rss")?,
            peak_rss: num(c_peak, "peak_rss")?,
            rchar: num(Some(c_rchar), "rchar")?,
        });
    }
    Ok(Trace {
        path: path.to_path_buf(),
        rows,
    })
}

// ---------------------------------------------------------------------------------------
// numpy legacy RandomState(seed).permutation(n), bit for bit
// ---------------------------------------------------------------------------------------

/// MT19937 as seeded by numpy's legacy `RandomState(int)` (`init_genrand`).
struct Mt19937 {
    mt: [u32; 624],
    idx: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            let prev = mt[i - 1];
            mt[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { mt, idx: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        if self.idx >= 624 {
            for i in 0..624 {
                let y = (self.mt[i] & UPPER) | (self.mt[(i + 1) % 624] & LOWER);
                let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= MATRIX_A;
                }
                self.mt[i] = v;
            }
            self.idx = 0;
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        (hi << 32) | lo
    }

    /// numpy `random_interval(max)`: uniform in `0..=max` by masked rejection sampling.
    fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        mask |= mask >> 32;
        if max <= 0xffff_ffff {
            loop {
                let v = u64::from(self.next_u32()) & mask;
                if v <= max {
                    return v;
                }
            }
        } else {
            loop {
                let v = self.next_u64() & mask;
                if v <= max {
                    return v;
                }
            }
        }
    }
}

/// numpy `np.random.RandomState(seed).permutation(n)` (legacy Fisher–Yates).
pub fn permutation(n: usize, seed: u32) -> Vec<usize> {
    let mut rng = Mt19937::new(seed);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.interval(i as u64) as usize;
        v.swap(i, j);
    }
    v
}

/// scikit-learn `train_test_split(.., test_size, random_state=seed)` index sets:
/// `(train, test)`, test first in the permutation and in permutation order.
pub fn train_test_split(n: usize, test_size: f64, seed: u32) -> (Vec<usize>, Vec<usize>) {
    let n_test = ((test_size * n as f64).ceil() as usize).min(n);
    let perm = permutation(n, seed);
    let test = perm[..n_test].to_vec();
    let train = perm[n_test..].to_vec();
    (train, test)
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
}

/// presize's own model ([`crate::model::allocate`]) as a replay method.
#[derive(Debug, Clone)]
pub struct PresizeMethod {
    pub cfg: AllocConfig,
    hist: TaskHistory,
}

impl PresizeMethod {
    pub fn new(cfg: AllocConfig) -> Self {
        PresizeMethod {
            cfg,
            hist: TaskHistory::default(),
        }
    }
}

fn observation(t: &Task) -> allocate::Observation {
    allocate::Observation {
        x: t.x,
        y: t.y,
        runtime: t.runtime_ms,
    }
}

impl Method for PresizeMethod {
    fn reset(&mut self, initial: &[Task]) {
        self.hist = TaskHistory::default();
        for t in initial {
            self.hist.push(observation(t), &self.cfg);
        }
    }
    fn first(&mut self, task: &Task) -> f64 {
        allocate::first_allocation(&self.hist, task.x, &self.cfg)
    }
    fn retry(&mut self, task: &Task, failed_at: f64, attempt: u32) -> f64 {
        allocate::retry_allocation(&self.hist, task.x, failed_at, attempt, &self.cfg)
    }
    fn observe(&mut self, task: &Task) {
        self.hist.push(observation(task), &self.cfg);
    }
}

/// Tovar et al.'s first allocation (minimum expected waste over the peaks seen, runtime
/// weighted; retry at the largest peak seen, then at a 128 GB node) — the reference
/// baseline, kept to check that the harness reproduces the published numbers.
#[derive(Debug, Clone, Default)]
pub struct TovarMethod {
    seen: Vec<(f64, f64)>,
}

impl Method for TovarMethod {
    fn reset(&mut self, initial: &[Task]) {
        self.seen = initial.iter().map(|t| (t.y, t.runtime_ms)).collect();
    }
    fn first(&mut self, _task: &Task) -> f64 {
        // Group equal peaks, sort descending, E(a_i) = a_i·T + a_max·T(> a_i).
        let mut by_value: Vec<(f64, f64)> = Vec::new();
        let mut sorted = self.seen.clone();
        sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (v, t) in sorted {
            match by_value.last_mut() {
                Some(last) if last.0 == v => last.1 += t,
                _ => by_value.push((v, t)),
            }
        }
        let Some(&(am, _)) = by_value.first() else {
            return 0.0;
        };
        let count = self.seen.len() as f64;
        let total: f64 = by_value.iter().map(|p| p.1 / count).sum();
        let mut best = am;
        let mut best_e = am * total;
        let mut above = 0.0;
        for (i, &(ai, _)) in by_value.iter().enumerate() {
            if i > 0 {
                above += by_value[i - 1].1 / count;
            }
            let e = ai * total + am * above;
            if e < best_e {
                best_e = e;
                best = ai;
            }
        }
        best
    }
    fn retry(&mut self, _task: &Task, failed_at: f64, _attempt: u32) -> f64 {
        let max = self.seen.iter().map(|p| p.0).fold(0.0, f64::max);
        if failed_at < max {
            max
        } else {
            128e9
        }
    }
    fn observe(&mut self, task: &Task) {
        self.seen.push((task.y, task.runtime_ms));
    }
}

/// Step 5–6 for one process.
pub fn replay_series(series: &ProcessSeries, method: &mut dyn Method) -> Tally {
    method.reset(&series.initial);
    let mut tally = Tally::default();
    for task in &series.online {
        let t = task.runtime_ms;
        tally.usage_gbh += gbh(task.y, t);
        tally.rows += 1;
        let mut a = sane(method.first(task));
        let mut attempt = 0;
        while a < task.y {
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
}

/// What `presize replay` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    pub workflows: Vec<WorkflowResult>,
    /// The allocation configuration used (a JSON object in `replay --json`).
    pub config: serde_json::Value,
}

/// Replay one parsed trace with any method.
pub fn replay_trace(trace: &Trace, method: &mut dyn Method) -> WorkflowResult {
    let start = Instant::now();
    let series = protocol_series(trace);
    let mut tally = Tally::default();
    let mut rows_used = 0;
    for s in &series {
        rows_used += s.initial.len() + s.online.len();
        tally.add(&replay_series(s, method));
    }
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
    }
}

/// Read and replay each trace with presize's model; `progress(done, total)` after each.
pub fn replay_files(
    paths: &[PathBuf],
    cfg: &AllocConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ReplayReport, ReplayError> {
    let mut method = PresizeMethod::new(cfg.clone());
    replay_files_with(paths, &mut method, cfg, progress)
}

/// [`replay_files`] with any method (e.g. [`TovarMethod`] to check the harness).
pub fn replay_files_with(
    paths: &[PathBuf],
    method: &mut dyn Method,
    cfg: &AllocConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ReplayReport, ReplayError> {
    let config = serde_json::to_value(cfg).map_err(|e| ReplayError::Invalid {
        what: format!("cannot serialise the allocation configuration: {e}"),
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
mod tests {
    use super::*;
    use std::io::Write;

    fn parse(text: &str) -> Result<Trace, ReplayError> {
        read_trace_from(text.as_bytes(), Path::new("t.csv"))
    }

    #[test]
    fn permutation_matches_numpy_legacy_random_state() {
        // Values printed by numpy 2.4.6: np.random.RandomState(seed).permutation(n).
        assert_eq!(permutation(0, 1996), Vec::<usize>::new());
        assert_eq!(permutation(1, 1996), vec![0]);
        assert_eq!(permutation(2, 1996), vec![1, 0]);
        assert_eq!(permutation(5, 1996), vec![0, 3, 4, 1, 2]);
        assert_eq!(permutation(10, 1996), vec![0, 7, 8, 4, 6, 9, 3, 5, 2, 1]);
        assert_eq!(
            permutation(34, 1996),
            vec![
                28, 26, 18, 25, 23, 17, 13, 30, 19, 7, 24, 29, 0, 27, 31, 22, 8, 12, 33, 10, 5, 16,
                20, 2, 4, 11, 21, 14, 15, 32, 9, 6, 3, 1
            ]
        );
        assert_eq!(
            permutation(100, 1996)[..10],
            [35, 18, 40, 85, 63, 62, 77, 73, 12, 44]
        );
        assert_eq!(
            permutation(1000, 1996)[..10],
            [438, 831, 338, 46, 856, 850, 593, 53, 230, 71]
        );
        assert_eq!(
            permutation(70000, 1996)[..10],
            [57213, 31519, 25296, 12951, 13971, 58160, 66155, 2589, 25834, 59047]
        );
        assert_eq!(
            permutation(20, 7),
            vec![1, 17, 2, 5, 11, 0, 18, 6, 13, 19, 10, 14, 8, 16, 9, 12, 7, 3, 4, 15]
        );
    }

    #[test]
    fn split_matches_scikit_learn_train_test_split() {
        // sklearn 1.9.1: train_test_split(range(39), test_size=0.7, random_state=1996).
        let (train, test) = train_test_split(39, 0.7, 1996);
        assert_eq!(
            test,
            vec![
                33, 9, 29, 18, 22, 27, 32, 26, 35, 30, 23, 17, 37, 7, 24, 31, 21, 13, 0, 6, 8, 12,
                38, 19, 10, 25, 5, 16
            ]
        );
        assert_eq!(train, vec![20, 2, 28, 4, 11, 14, 15, 36, 3, 34, 1]);
        let (train, test) = train_test_split(137, 0.7, 1996);
        assert_eq!((test.len(), train.len()), (96, 41));
        assert_eq!(test[..5], [97, 40, 64, 82, 51]);
        assert_eq!(train[..5], [52, 70, 71, 80, 132]);
    }

    #[test]
    fn reads_quoted_fields_missing_values_and_extra_columns() {
        let t = parse(
            "task_id,process,status,cpus,memory,realtime,rss,peak_rss,rchar,note\n\
             1,\"A:B (x, y)\",COMPLETED,2,4294967296,1000,100,200,5000,\"a,b;c\"\n\
             2,A,FAILED,-,-,2000,-,,12.5,-\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.rows.len(), 2);
        let r = &t.rows[0];
        assert_eq!(r.process, "A:B (x, y)");
        assert_eq!(r.line, 2);
        assert_eq!(r.cpus, Some(2.0));
        assert_eq!(r.memory, Some(4294967296.0));
        assert_eq!(r.rss, Some(100.0));
        assert_eq!(r.time, None);
        let r = &t.rows[1];
        assert_eq!(
            (r.cpus, r.memory, r.rss, r.peak_rss),
            (None, None, None, None)
        );
        assert_eq!(r.rchar, Some(12.5));
        assert_eq!(r.status.as_deref(), Some("FAILED"));
        assert_eq!(r.line, 3);
    }

    #[test]
    fn malformed_files_give_one_line_errors() {
        let empty = parse("").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            empty.contains("t.csv") && empty.contains("empty"),
            "{empty}"
        );

        let missing = parse("process,realtime,rss\nA,1,2\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(missing.contains("`rchar`"), "{missing}");

        let nan = parse("process,realtime,rss,rchar\nA,1,2,3\nA,1,lots,3\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            nan.contains("line 3") && nan.contains("`rss`") && nan.contains("lots"),
            "{nan}"
        );

        let short = parse("process,realtime,rss,rchar\nA,1,2,3\nA,1\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(short.contains("line 3"), "{short}");

        let noproc = parse("process,realtime,rss,rchar\n-,1,2,3\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(noproc.contains("line 2"), "{noproc}");

        let io = read_trace(Path::new("/nonexistent/trace.csv"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(io.contains("/nonexistent/trace.csv"), "{io}");

        for e in [empty, missing, nan, short, noproc, io] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn header_only_file_has_nothing_to_replay() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("trace_none.csv");
        std::fs::write(&p, "process,realtime,rss,rchar\n").unwrap_or_else(|e| panic!("{e}"));
        let r = replay_files(&[p], &AllocConfig::default(), &mut |_, _| {});
        assert!(matches!(r, Err(ReplayError::Invalid { .. })));
    }

    /// Allocates 2 GB first, 4 GB on the first retry, 8 GB on the second…
    struct Doubling;
    impl Method for Doubling {
        fn reset(&mut self, _initial: &[Task]) {}
        fn first(&mut self, _task: &Task) -> f64 {
            2e9
        }
        fn retry(&mut self, _task: &Task, failed_at: f64, _attempt: u32) -> f64 {
            failed_at * 2.0
        }
        fn observe(&mut self, _task: &Task) {}
    }

    fn task(y_gb: f64, hours: f64) -> Task {
        Task {
            x: 1.0,
            y: y_gb * 1e9,
            runtime_ms: hours * 3.6e6,
            cpus: None,
            memory: None,
        }
    }

    #[test]
    fn wastage_and_failures_are_accounted_like_the_protocol() {
        let s = ProcessSeries {
            process: "p".into(),
            initial: vec![],
            // 1 GB for 1 h under 2 GB: 1 GB·h.
            // 3 GB for 1 h: fails at 2 (2 GB·h), then 4: +1 → 3 GB·h, 1 failure.
            // 5 GB for 2 h: fails at 2 (4) and 4 (8), then 8: +6 → 18 GB·h, 2 failures.
            online: vec![task(1.0, 1.0), task(3.0, 1.0), task(5.0, 2.0)],
        };
        let t = replay_series(&s, &mut Doubling);
        assert!((t.wastage_gbh - 22.0).abs() < 1e-9, "{}", t.wastage_gbh);
        assert_eq!(t.failures, 3);
        assert!((t.usage_gbh - 14.0).abs() < 1e-9);
        assert!((t.maq() - 14.0 / 36.0).abs() < 1e-12);
        assert_eq!(t.rows, 3);
    }

    #[test]
    fn a_method_that_does_not_grow_still_terminates() {
        struct Stuck;
        impl Method for Stuck {
            fn reset(&mut self, _: &[Task]) {}
            fn first(&mut self, _: &Task) -> f64 {
                f64::NAN
            }
            fn retry(&mut self, _: &Task, _: f64, _: u32) -> f64 {
                1.0
            }
            fn observe(&mut self, _: &Task) {}
        }
        let s = ProcessSeries {
            process: "p".into(),
            initial: vec![],
            online: vec![task(3.0, 1.0)],
        };
        let t = replay_series(&s, &mut Stuck);
        assert!(t.wastage_gbh.is_finite() && t.failures > 0);
    }

    fn synthetic_trace(rows: &[(&str, f64, f64, f64)]) -> String {
        let mut s = String::from("process,status,cpus,memory,realtime,rss,peak_rss,rchar\n");
        for (p, realtime, rss, rchar) in rows {
            s.push_str(&format!(
                "\"{p}\",COMPLETED,1,1000,{realtime},{rss},{rss},{rchar}\n"
            ));
        }
        s
    }

    #[test]
    fn protocol_filters_processes_like_the_published_code() {
        let mut rows = Vec::new();
        for i in 0..40 {
            rows.push(("keep", 1000.0, 1e9 + i as f64, 1e6 * i as f64));
            // rss 0 rows are dropped before counting: 30 left → skipped.
            rows.push(("few", 1000.0, if i < 30 { 1e9 } else { 0.0 }, 1.0));
            // one realtime of 0 → skipped.
            rows.push(("zero", if i == 5 { 0.0 } else { 1000.0 }, 1e9, 1.0));
        }
        rows.push(("keep", 1000.0, 0.0, 1.0)); // dropped (rss 0)
        let trace = parse(&synthetic_trace(&rows)).unwrap_or_else(|e| panic!("{e}"));
        let series = protocol_series(&trace);
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].process, "keep");
        assert_eq!(series[0].online.len(), 28);
        assert_eq!(series[0].initial.len(), 12);
        // The split is sklearn's: permutation(40)[..28] are the online rows, in order.
        let perm = permutation(40, SPLIT_SEED);
        assert_eq!(series[0].online[0].y, 1e9 + perm[0] as f64);
        assert_eq!(series[0].initial[0].y, 1e9 + perm[28] as f64);
    }

    #[test]
    fn replay_files_reports_each_workflow() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("trace_toy.csv");
        let rows: Vec<(&str, f64, f64, f64)> = (0..50)
            .map(|i| {
                (
                    "align",
                    3.6e6,
                    1e9 * (1.0 + (i % 7) as f64 / 10.0),
                    1e9 * i as f64,
                )
            })
            .collect();
        let mut f = std::fs::File::create(&p).unwrap_or_else(|e| panic!("{e}"));
        f.write_all(synthetic_trace(&rows).as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut calls = Vec::new();
        let report = replay_files(
            std::slice::from_ref(&p),
            &AllocConfig::default(),
            &mut |d, n| calls.push((d, n)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(calls, vec![(1, 1)]);
        let w = &report.workflows[0];
        assert_eq!(w.name, "toy");
        assert_eq!((w.processes_used, w.rows_used, w.rows_online), (1, 50, 35));
        assert!(w.wastage_gbh.is_finite() && w.wastage_gbh >= 0.0);
        assert!(w.maq > 0.0 && w.maq <= 1.0);
        assert!(
            report.config.get("failure_cost").is_some(),
            "{}",
            report.config
        );
        let json = serde_json::to_string(&report).unwrap_or_default();
        assert!(json.contains("\"wastage_gbh\""));

        // The Tovar baseline on the same trace runs through the same harness.
        let tovar = replay_files_with(
            &[p],
            &mut TovarMethod::default(),
            &AllocConfig::default(),
            &mut |_, _| {},
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tovar.workflows[0].rows_online, 35);
    }

    /// The nf-core traces: the repository copy (`tests/data/nfcore-traces`) or the
    /// shared data next to the checkout; the test is skipped when neither is there.
    fn nfcore_trace(name: &str) -> Option<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        [
            root.join("tests/data/nfcore-traces"),
            root.join("../shared/data/nfcore-traces"),
        ]
        .into_iter()
        .map(|d| d.join(format!("trace_{name}.csv")))
        .find(|p| p.is_file())
    }

    #[test]
    fn harness_reproduces_the_published_tovar_numbers() {
        // data README: Tovar eager 624.1 / 39, methylseq 4080.6 / 58, rnaseq 195.3 / 55.
        for (name, wastage, failures) in [
            ("eager", 624.1, 39),
            ("methylseq", 4080.6, 58),
            ("rnaseq", 195.3, 55),
        ] {
            let Some(p) = nfcore_trace(name) else {
                eprintln!("skipped: trace_{name}.csv not found");
                continue;
            };
            let trace = read_trace(&p).unwrap_or_else(|e| panic!("{e}"));
            let r = replay_trace(&trace, &mut TovarMethod::default());
            assert!(
                (r.wastage_gbh - wastage).abs() < 0.05,
                "{name}: {}",
                r.wastage_gbh
            );
            assert_eq!(r.failures, failures, "{name}");
        }
    }
}
