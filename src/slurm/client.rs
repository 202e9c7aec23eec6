//! The SLURM client commands presize runs: `sbatch`, `sacct`, `sinfo`, `scontrol`.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use crate::config::SlurmConfig;

use super::{sacct, time_minutes, SlurmError};

/// The SLURM client commands (`sbatch`, `sacct`, `sinfo`, `scontrol`), found in PATH and
/// run with the caller's environment (`SLURM_CONF` included).
#[derive(Debug, Clone)]
pub(crate) struct Slurm {
    cfg: SlurmConfig,
}

/// What one `sbatch` call gets.
#[derive(Debug, Clone)]
pub(crate) struct Submission<'a> {
    pub(crate) script: &'a Path,
    pub(crate) job_name: &'a str,
    pub(crate) memory_mb: u64,
    pub(crate) timeout_s: u64,
    pub(crate) cpus: Option<u32>,
    pub(crate) cwd: &'a Path,
    pub(crate) output: &'a Path,
    pub(crate) error: &'a Path,
}

/// Escape `%` for sbatch's filename patterns.
fn escape_pattern(p: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        if b == b'%' {
            out.push(b'%');
        }
        out.push(b);
    }
    OsString::from_vec(out)
}

impl Slurm {
    pub(crate) fn new(cfg: &SlurmConfig) -> Self {
        Slurm { cfg: cfg.clone() }
    }

    fn run(&self, cmd: &'static str, args: &[OsString]) -> Result<String, SlurmError> {
        let out = Command::new(cmd).args(args).output().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SlurmError::NotInstalled(cmd)
            } else {
                SlurmError::Command {
                    cmd,
                    message: e.to_string(),
                }
            }
        })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(SlurmError::Command {
                cmd,
                message: crate::util::one_line(if err.trim().is_empty() {
                    "no message"
                } else {
                    &err
                }),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn partition_args(&self) -> Vec<OsString> {
        match &self.cfg.partition {
            Some(p) => vec!["-p".into(), p.into()],
            None => Vec::new(),
        }
    }

    /// The largest node memory (MB) of the partition: the budget for rejection.
    pub(crate) fn node_memory_mb(&self) -> Result<u64, SlurmError> {
        let mut args: Vec<OsString> = vec!["-h".into(), "-N".into(), "-o".into(), "%m".into()];
        args.extend(self.partition_args());
        let out = self.run("sinfo", &args)?;
        sacct::parse_sinfo_memory(&out).ok_or(SlurmError::Unreadable {
            cmd: "sinfo",
            output: out,
        })
    }

    /// The largest CPU count of a node of the partition.
    pub(crate) fn node_cpus(&self) -> Option<u32> {
        let mut args: Vec<OsString> = vec!["-h".into(), "-N".into(), "-o".into(), "%c".into()];
        args.extend(self.partition_args());
        self.run("sinfo", &args)
            .ok()
            .and_then(|o| sacct::parse_sinfo_cpus(&o))
    }

    /// Whether the cluster's configuration enforces `--mem`.
    pub(crate) fn enforces_memory(&self) -> bool {
        self.run("scontrol", &["show".into(), "config".into()])
            .map(|o| sacct::config_enforces_memory(&o))
            .unwrap_or(false)
    }

    /// Submit; returns the SLURM job id.
    pub(crate) fn submit(&self, s: &Submission<'_>) -> Result<String, SlurmError> {
        let mut args: Vec<OsString> = vec![
            "--parsable".into(),
            "--no-requeue".into(),
            format!("--job-name={}", s.job_name).into(),
            format!("--mem={}M", s.memory_mb.max(1)).into(),
            format!("--time={}", time_minutes(s.timeout_s)).into(),
        ];
        if let Some(c) = s.cpus {
            args.push(format!("--cpus-per-task={c}").into());
        }
        let mut chdir = OsString::from("--chdir=");
        chdir.push(s.cwd);
        args.push(chdir);
        // In --output/--error, `%` starts a pattern: escape the directory, keep our `%j`.
        for (name, p) in [("--output=", s.output), ("--error=", s.error)] {
            let mut a = OsString::from(name);
            if let (Some(dir), Some(file)) = (p.parent(), p.file_name()) {
                a.push(escape_pattern(dir));
                a.push("/");
                a.push(file);
            } else {
                a.push(p);
            }
            args.push(a);
        }
        if let Some(p) = &self.cfg.partition {
            args.push(format!("--partition={p}").into());
        }
        if let Some(a) = &self.cfg.account {
            args.push(format!("--account={a}").into());
        }
        args.extend(self.cfg.sbatch_args.iter().map(OsString::from));
        args.push(s.script.into());
        let out = self.run("sbatch", &args)?;
        sacct::parse_sbatch(&out).ok_or(SlurmError::Unreadable {
            cmd: "sbatch",
            output: out,
        })
    }

    /// Accounting lines of these jobs and their steps.
    pub(crate) fn sacct(&self, ids: &[&str]) -> Result<Vec<sacct::SacctLine>, SlurmError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let args: Vec<OsString> = vec![
            "--parsable2".into(),
            "--noheader".into(),
            "--units=K".into(),
            format!("--format={}", sacct::FORMAT).into(),
            "-j".into(),
            ids.join(",").into(),
        ];
        Ok(sacct::parse(&self.run("sacct", &args)?))
    }
}
