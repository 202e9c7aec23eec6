//! Pure parsing of `sacct --parsable2 --noheader` output and of the other SLURM command
//! outputs presize reads. No I/O here: every function is tested on real sample lines.

use crate::job::Outcome;

/// The fields presize asks `sacct` for, in this order.
pub(crate) const FORMAT: &str =
    "JobID,State,ExitCode,MaxRSS,TotalCPU,ElapsedRaw,ReqMem,TimelimitRaw";

/// One line of `sacct` output (the job line, or one of its steps).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SacctLine {
    /// `12` for the job line, `12.batch`, `12.0`, … for steps.
    pub job_id: String,
    /// First word of State (`CANCELLED by 0` → `CANCELLED`).
    pub state: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// MaxRSS in KiB (step lines only).
    pub max_rss_kib: Option<u64>,
    pub total_cpu_s: Option<f64>,
    pub elapsed_s: Option<f64>,
    /// Whether the Timelimit field is filled (it is empty while accounting is incomplete).
    pub timelimit_set: bool,
}

impl SacctLine {
    /// The job id without the step suffix.
    pub fn base_id(&self) -> &str {
        self.job_id.split('.').next().unwrap_or(&self.job_id)
    }

    /// True for a step line (`12.batch`), false for the job line.
    pub fn is_step(&self) -> bool {
        self.job_id.contains('.')
    }
}

/// `[D-]HH:MM:SS[.frac]`, `MM:SS.frac`, or a bare number times `raw_unit_s` (ElapsedRaw is
/// seconds, TimelimitRaw minutes). `None` for empty, `UNLIMITED`, `Partition_Limit`, junk.
pub(crate) fn parse_duration_s(field: &str, raw_unit_s: f64) -> Option<f64> {
    let f = field.trim();
    if f.is_empty() {
        return None;
    }
    if f.bytes().all(|b| b.is_ascii_digit()) {
        return f.parse::<f64>().ok().map(|v| v * raw_unit_s);
    }
    let (days, rest) = match f.split_once('-') {
        Some((d, r)) => (d.parse::<f64>().ok()?, r),
        None => (0.0, f),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let mut secs = 0.0;
    for p in &parts {
        if !p.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
        secs = secs * 60.0 + p.parse::<f64>().ok()?;
    }
    Some(days * 86_400.0 + secs)
}

/// A memory figure such as `207688K`, `203M`, `1.5G` in KiB; a bare number is KiB (sacct's
/// base unit for RSS).
pub(crate) fn parse_mem_kib(field: &str) -> Option<u64> {
    let f = field.trim();
    if f.is_empty() {
        return None;
    }
    let (num, mult) = match f.as_bytes()[f.len() - 1].to_ascii_uppercase() {
        b'K' => (&f[..f.len() - 1], 1.0),
        b'M' => (&f[..f.len() - 1], 1024.0),
        b'G' => (&f[..f.len() - 1], 1024.0 * 1024.0),
        b'T' => (&f[..f.len() - 1], 1024.0 * 1024.0 * 1024.0),
        b'0'..=b'9' => (f, 1.0),
        _ => return None,
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| (v * mult).round() as u64)
}

fn parse_exit(field: &str) -> (Option<i32>, Option<i32>) {
    match field.split_once(':') {
        Some((c, s)) => (c.trim().parse().ok(), s.trim().parse().ok()),
        None => (field.trim().parse().ok(), None),
    }
}

/// Parse one line in [`FORMAT`] order (`Elapsed`/`Timelimit` in clock form are accepted too).
pub(crate) fn parse_line(line: &str) -> Option<SacctLine> {
    let f: Vec<&str> = line.trim_end_matches(['\n', '\r']).split('|').collect();
    if f.len() < 8 || f[0].trim().is_empty() {
        return None;
    }
    let (exit_code, signal) = parse_exit(f[2]);
    Some(SacctLine {
        job_id: f[0].trim().to_string(),
        state: f[1].split_whitespace().next().unwrap_or("").to_string(),
        exit_code,
        signal,
        max_rss_kib: parse_mem_kib(f[3]),
        total_cpu_s: parse_duration_s(f[4], 1.0),
        elapsed_s: parse_duration_s(f[5], 1.0),
        timelimit_set: !f[7].trim().is_empty(),
    })
}

/// Parse `sacct` output; lines that do not parse are skipped.
pub(crate) fn parse(text: &str) -> Vec<SacctLine> {
    text.lines().filter_map(parse_line).collect()
}

/// States after which a job will not run again.
fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "OUT_OF_MEMORY"
            | "TIMEOUT"
            | "CANCELLED"
            | "NODE_FAIL"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "PREEMPTED"
            | "REVOKED"
    )
}

/// Terminal states in which a job may have no step at all (it never started).
fn may_lack_steps(state: &str) -> bool {
    matches!(
        state,
        "CANCELLED" | "NODE_FAIL" | "BOOT_FAIL" | "DEADLINE" | "PREEMPTED" | "REVOKED"
    )
}

/// What accounting says about one finished job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobResult {
    /// State of the job line (a timeout's batch step says CANCELLED; the job line TIMEOUT).
    pub state: String,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// MaxRSS, the max over steps, in MiB (sampled: a spike shorter than the interval is
    /// missed; an OOM-killed step shows almost nothing).
    pub max_rss_mb: Option<f64>,
    pub cpu_s: Option<f64>,
    pub wall_s: Option<f64>,
}

/// Map a job line's state to an outcome; an OUT_OF_MEMORY step makes it an OOM kill.
pub(crate) fn outcome_of(job_state: &str, exit_code: Option<i32>, any_step_oom: bool) -> Outcome {
    match job_state {
        "TIMEOUT" => Outcome::TimedOut,
        "OUT_OF_MEMORY" => Outcome::OomKilled,
        _ if any_step_oom => Outcome::OomKilled,
        "COMPLETED" if exit_code.unwrap_or(0) == 0 => Outcome::Ok,
        _ => Outcome::Failed,
    }
}

/// The result for job `slurm_id` from its sacct lines, or `None` while it is not finished or
/// accounting is not complete yet (job line missing, still running, Timelimit empty, or no
/// step recorded for a job that ran).
pub(crate) fn job_result(slurm_id: &str, lines: &[SacctLine]) -> Option<JobResult> {
    let job = lines.iter().find(|l| l.job_id == slurm_id)?;
    if !is_terminal(&job.state) || !job.timelimit_set {
        return None;
    }
    let steps: Vec<&SacctLine> = lines
        .iter()
        .filter(|l| l.is_step() && l.base_id() == slurm_id)
        .collect();
    if steps.is_empty() && !may_lack_steps(&job.state) {
        return None;
    }
    let any_step_oom = steps.iter().any(|s| s.state == "OUT_OF_MEMORY");
    let max_rss_mb = steps
        .iter()
        .chain(std::iter::once(&job))
        .filter_map(|l| l.max_rss_kib)
        .max()
        .map(|k| k as f64 / 1024.0);
    Some(JobResult {
        outcome: outcome_of(&job.state, job.exit_code, any_step_oom),
        state: job.state.clone(),
        exit_code: job.exit_code,
        signal: job.signal.filter(|s| *s != 0),
        max_rss_mb,
        cpu_s: job.total_cpu_s,
        wall_s: job.elapsed_s,
    })
}

/// `sbatch --parsable` prints `id` or `id;cluster`.
pub(crate) fn parse_sbatch(stdout: &str) -> Option<String> {
    let first = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    let id = first.split(';').next()?.trim();
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit() || b == b'_')).then(|| id.into())
}

/// Largest node memory in MB from `sinfo -h -N -o %m` (`23081`, `23081+` for mixed groups).
pub(crate) fn parse_sinfo_memory(stdout: &str) -> Option<u64> {
    stdout
        .lines()
        .filter_map(|l| l.trim().trim_end_matches('+').parse::<u64>().ok())
        .filter(|m| *m > 0)
        .max()
}

/// Largest CPU count per node from `sinfo -h -N -o %c`.
pub(crate) fn parse_sinfo_cpus(stdout: &str) -> Option<u32> {
    stdout
        .lines()
        .filter_map(|l| l.trim().trim_end_matches('+').parse::<u32>().ok())
        .filter(|c| *c > 0)
        .max()
}

/// Whether `scontrol show config` describes a cluster that enforces `--mem`: a cgroup task
/// plugin (with ConstrainRAMSpace, checked by the caller when it can), or the poll-based
/// OverMemoryKill.
pub(crate) fn config_enforces_memory(show_config: &str) -> bool {
    let value = |key: &str| {
        show_config.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let task = value("TaskPlugin").unwrap_or_default();
    let gather = value("JobAcctGatherParams").unwrap_or_default();
    task.split(',').any(|p| p.trim() == "task/cgroup") || gather.contains("OverMemoryKill")
}

#[cfg(test)]
mod tests {
    use super::*;

    // The exact sample lines of the verified findings (clock-form Elapsed/Timelimit).
    const FITS: &str = "1|COMPLETED|0:0||00:00.056|00:00:06|300M|00:02:00\n\
                        1.batch|COMPLETED|0:0|207688K|00:00.056|00:00:06||\n";
    const OOM: &str = "2|OUT_OF_MEMORY|0:125||00:00.032|00:00:00|100M|00:02:00\n\
                       2.batch|OUT_OF_MEMORY|0:125|2520K|00:00.032|00:00:00||\n";
    const TIMEOUT: &str = "6|TIMEOUT|0:0||00:00:00|00:01:15|50M|00:01:00\n\
                           6.batch|CANCELLED|0:15|3124K|00:00:00|00:01:16||\n";

    #[test]
    fn findings_sample_fits() {
        let lines = parse(FITS);
        assert_eq!(lines.len(), 2);
        let r = job_result("1", &lines).unwrap();
        assert_eq!(r.outcome, Outcome::Ok);
        assert_eq!(r.state, "COMPLETED");
        assert!((r.max_rss_mb.unwrap() - 207688.0 / 1024.0).abs() < 1e-9);
        assert!((r.cpu_s.unwrap() - 0.056).abs() < 1e-9);
        assert_eq!(r.wall_s, Some(6.0));
        assert_eq!(r.exit_code, Some(0));
        assert_eq!(r.signal, None);
    }

    #[test]
    fn findings_sample_oom_is_oom_killed() {
        let r = job_result("2", &parse(OOM)).unwrap();
        assert_eq!(r.outcome, Outcome::OomKilled);
        // The OOM-killed step's MaxRSS says almost nothing about the real peak.
        assert!(r.max_rss_mb.unwrap() < 3.0);
        assert_eq!(r.signal, Some(125));
    }

    #[test]
    fn findings_sample_timeout_takes_the_job_line() {
        let r = job_result("6", &parse(TIMEOUT)).unwrap();
        assert_eq!(r.outcome, Outcome::TimedOut);
        assert_eq!(r.state, "TIMEOUT");
        assert_eq!(r.wall_s, Some(75.0));
    }

    #[test]
    fn raw_units_as_presize_asks_for_them() {
        // Real output of this cluster with FORMAT and --units=K.
        let text = "1|COMPLETED|0:0||00:00.580|5|307200K|2\n\
                    1.batch|COMPLETED|0:0|219780K|00:00.580|5||\n\
                    1.0|COMPLETED|0:0|1000K|00:00.100|1||\n";
        let r = job_result("1", &parse(text)).unwrap();
        assert_eq!(r.wall_s, Some(5.0));
        assert!((r.max_rss_mb.unwrap() - 219780.0 / 1024.0).abs() < 1e-9);
        assert!((r.cpu_s.unwrap() - 0.58).abs() < 1e-9);
    }

    #[test]
    fn incomplete_accounting_is_not_settled() {
        // Timelimit not yet filled.
        assert!(job_result("1", &parse("1|COMPLETED|0:0||00:00.05|6|300M|\n")).is_none());
        // Running.
        assert!(job_result("1", &parse("1|RUNNING|0:0||00:00:00|3|300M|2\n")).is_none());
        // Finished but its batch step not recorded yet.
        assert!(job_result("1", &parse("1|COMPLETED|0:0||00:00.05|6|300M|2\n")).is_none());
        // Another job's lines only.
        assert!(job_result("1", &parse(FITS.replace('1', "7").as_str())).is_none());
        // Cancelled while pending: no steps, still final.
        let r = job_result("3", &parse("3|CANCELLED by 0|0:0||00:00:00|0|300M|2\n")).unwrap();
        assert_eq!(
            (r.outcome, r.state.as_str()),
            (Outcome::Failed, "CANCELLED")
        );
    }

    #[test]
    fn failed_and_oom_step_mapping() {
        let r = job_result(
            "4",
            &parse("4|FAILED|3:0||00:00.1|1|300M|2\n4.batch|FAILED|3:0|5000K|00:00.1|1||\n"),
        )
        .unwrap();
        assert_eq!((r.outcome, r.exit_code), (Outcome::Failed, Some(3)));
        // A job line that says FAILED with an OOM-killed step is an OOM kill.
        let r = job_result(
            "5",
            &parse("5|FAILED|0:125||0:0|1|1M|2\n5.batch|OUT_OF_MEMORY|0:125|900K|0:0|1||\n"),
        )
        .unwrap();
        assert_eq!(r.outcome, Outcome::OomKilled);
    }

    #[test]
    fn durations_and_memory_units() {
        assert_eq!(parse_duration_s("00:00.056", 1.0), Some(0.056));
        assert_eq!(parse_duration_s("01:02:03", 1.0), Some(3723.0));
        assert_eq!(parse_duration_s("2-00:00:01", 1.0), Some(172_801.0));
        assert_eq!(parse_duration_s("2", 60.0), Some(120.0));
        assert_eq!(parse_duration_s("UNLIMITED", 60.0), None);
        assert_eq!(parse_duration_s("", 1.0), None);
        assert_eq!(parse_duration_s("1::2", 1.0), None);
        assert_eq!(parse_mem_kib("207688K"), Some(207_688));
        assert_eq!(parse_mem_kib("203M"), Some(203 * 1024));
        assert_eq!(parse_mem_kib("1.5G"), Some(1_572_864));
        assert_eq!(parse_mem_kib("12"), Some(12));
        assert_eq!(parse_mem_kib("x"), None);
        assert_eq!(parse_mem_kib("-5K"), None);
    }

    #[test]
    fn other_command_outputs() {
        assert_eq!(parse_sbatch("42\n").as_deref(), Some("42"));
        assert_eq!(parse_sbatch("42;presize\n").as_deref(), Some("42"));
        assert_eq!(parse_sbatch("Submitted batch job 42"), None);
        assert_eq!(parse_sbatch(""), None);
        assert_eq!(parse_sinfo_memory("23081\n"), Some(23081));
        assert_eq!(parse_sinfo_memory("1000\n64000+\n"), Some(64000));
        assert_eq!(parse_sinfo_memory("junk\n"), None);
        assert_eq!(parse_sinfo_cpus("16\n"), Some(16));
        let cfg = "TaskPlugin              = task/cgroup,task/affinity\nJobAcctGatherParams     = (null)\n";
        assert!(config_enforces_memory(cfg));
        let cfg = "TaskPlugin              = task/affinity\nJobAcctGatherParams     = (null)\n";
        assert!(!config_enforces_memory(cfg));
        let cfg = "TaskPlugin = (null)\nJobAcctGatherParams = OverMemoryKill\n";
        assert!(config_enforces_memory(cfg));
    }
}
