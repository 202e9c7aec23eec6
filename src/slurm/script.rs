//! The batch script presize hands to `sbatch`, and the in-job wrapper that measures the
//! job's own peak memory.
//!
//! presize never passes a command through a shell; the batch script is a shell script only
//! because sbatch wants one, so every argument is single-quoted byte for byte.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Quote one argument for a POSIX shell: `'…'`, with each `'` written as `'\''`.
pub(crate) fn sh_quote(arg: &OsStr) -> Vec<u8> {
    let mut out = Vec::with_capacity(arg.len() + 2);
    out.push(b'\'');
    for &b in arg.as_bytes() {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

fn join_quoted(args: &[OsString]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(&sh_quote(a));
    }
    out
}

/// The hidden subcommand the batch script runs the job under.
pub const WRAP_SUBCOMMAND: &str = "slurm-wrap";

/// The file the wrapper writes for SLURM job `slurm_job_id`.
pub(crate) fn report_path(spool: &Path, slurm_job_id: &str) -> std::path::PathBuf {
    spool.join(format!("report-{slurm_job_id}.json"))
}

/// The batch script for a command. With a wrapper binary the job runs under
/// `wrapper slurm-wrap --report <spool>/report-$SLURM_JOB_ID.json -- CMD…` (falling back to
/// the plain command when the binary is missing on the node); without one, `exec CMD…`.
pub(crate) fn batch_script(
    command: &[OsString],
    wrapper: Option<&Path>,
    spool: &Path,
    comment: &str,
) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(b"#!/bin/sh\n");
    for line in comment.lines() {
        s.extend_from_slice(b"# ");
        s.extend_from_slice(line.replace(['\r'], " ").as_bytes());
        s.push(b'\n');
    }
    let cmd = join_quoted(command);
    if let Some(w) = wrapper {
        let w = sh_quote(w.as_os_str());
        let report = sh_quote(spool.join("report-").as_os_str());
        s.extend_from_slice(b"if [ -x ");
        s.extend_from_slice(&w);
        s.extend_from_slice(b" ]; then\n  exec ");
        s.extend_from_slice(&w);
        s.extend_from_slice(b" ");
        s.extend_from_slice(WRAP_SUBCOMMAND.as_bytes());
        s.extend_from_slice(b" --report ");
        s.extend_from_slice(&report);
        s.extend_from_slice(b"\"$SLURM_JOB_ID\".json -- ");
        s.extend_from_slice(&cmd);
        s.extend_from_slice(b"\nfi\n");
    }
    s.extend_from_slice(b"exec ");
    s.extend_from_slice(&cmd);
    s.push(b'\n');
    s
}

/// What the wrapper measured inside the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WrapReport {
    /// Peak memory in MiB: the job's memory cgroup when readable, else the largest process.
    pub peak_rss_mb: f64,
    /// `cgroup` or `rusage`.
    pub peak_from: String,
    pub rusage_maxrss_mb: f64,
    pub cpu_s: f64,
    pub wall_s: f64,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

/// Peak memory of the cgroup this process is in (v1 `memory.max_usage_in_bytes`, v2
/// `memory.peak`), in bytes.
fn own_cgroup_peak_bytes() -> Option<u64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cg.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        let file = if ctrls.split(',').any(|c| c == "memory") {
            Path::new("/sys/fs/cgroup/memory")
                .join(rel)
                .join("memory.max_usage_in_bytes")
        } else if ctrls.is_empty() {
            Path::new("/sys/fs/cgroup").join(rel).join("memory.peak")
        } else {
            continue;
        };
        if let Some(v) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|v| *v > 0)
        {
            return Some(v);
        }
    }
    None
}

extern "C" fn ignore_signal(_: nix::libc::c_int) {}

/// Seconds of a `timeval`.
fn seconds(t: nix::sys::time::TimeVal) -> f64 {
    t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6
}

/// Run `command` as a child, wait for it, write a `WrapReport` (JSON) to `report` (atomically),
/// and return the exit code the wrapper should exit with (the child's, or 128 + signal).
///
/// SIGTERM/SIGINT/SIGHUP reach the wrapper and the job alike (SLURM signals every process of
/// the step); the wrapper outlives them to write its report. A handler (not SIG_IGN) is used,
/// so the job itself still gets the default dispositions after exec.
pub fn wrap(report: &Path, command: &[OsString]) -> io::Result<i32> {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::signal::{signal, SigHandler, Signal};
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::Pid;

    let program = command
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command given"))?;
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: installing a no-op, async-signal-safe handler.
        unsafe { signal(sig, SigHandler::Handler(ignore_signal)) }.map_err(io::Error::from)?;
    }
    let t0 = std::time::Instant::now();
    let child = std::process::Command::new(program)
        .args(&command[1..])
        .spawn();
    let status = match child {
        Ok(c) => {
            let pid = Pid::from_raw(c.id() as i32);
            drop(c);
            loop {
                match waitpid(pid, None) {
                    Ok(WaitStatus::Exited(_, code)) => break Some((Some(code), None)),
                    Ok(WaitStatus::Signaled(_, sig, _)) => break Some((None, Some(sig as i32))),
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(e) => {
            eprintln!(
                "presize slurm-wrap: cannot start {}: {e}",
                program.to_string_lossy()
            );
            None
        }
    };
    let wall_s = t0.elapsed().as_secs_f64();
    // The wrapper's only child has been waited for: the children's usage is the job's.
    let usage = status
        .is_some()
        .then(|| getrusage(UsageWho::RUSAGE_CHILDREN).ok())
        .flatten();
    let rusage_maxrss_mb = usage.map_or(0.0, |u| u.max_rss() as f64 / 1024.0);
    let cpu_s = usage.map_or(0.0, |u| seconds(u.user_time()) + seconds(u.system_time()));
    let (exit_code, signal) = status.unwrap_or((Some(127), None));
    let cgroup_mb = own_cgroup_peak_bytes().map(|b| b as f64 / (1024.0 * 1024.0));
    let (peak_rss_mb, peak_from) = match cgroup_mb {
        Some(c) => (c, "cgroup"),
        None => (rusage_maxrss_mb, "rusage"),
    };
    let r = WrapReport {
        peak_rss_mb,
        peak_from: peak_from.into(),
        rusage_maxrss_mb,
        cpu_s,
        wall_s,
        exit_code,
        signal,
    };
    // A report that cannot be written costs the exact peak (sacct's figure is used), never
    // the job's exit code.
    match serde_json::to_vec(&r) {
        Ok(json) => {
            if let Err(e) = crate::util::write_private_file(report, &json) {
                eprintln!(
                    "presize slurm-wrap: cannot write {}: {e}; sacct's MaxRSS will be used",
                    report.display()
                );
            }
        }
        Err(e) => eprintln!("presize slurm-wrap: cannot encode the report: {e}"),
    }
    Ok(match (exit_code, signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nasty() -> Vec<OsString> {
        [
            "printf",
            "%s\\n",
            "a b",
            "$(rm -rf /)",
            "'",
            "\"",
            "`id`",
            "",
            "x;y",
            "*",
            "\\",
            "line\nbreak",
        ]
        .iter()
        .map(OsString::from)
        .collect()
    }

    #[test]
    fn quoting_is_exact() {
        assert_eq!(sh_quote(OsStr::new("a b")), b"'a b'");
        assert_eq!(sh_quote(OsStr::new("'")), b"''\\'''");
        assert_eq!(sh_quote(OsStr::new("")), b"''");
    }

    /// The script, run by a real `sh`, passes every argument through unchanged.
    #[test]
    fn batch_script_passes_nasty_arguments_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let args = nasty();
        for wrapper in [None, Some(dir.path().join("absent presize"))] {
            let script = batch_script(&args, wrapper.as_deref(), dir.path(), "test\nx");
            let path = dir.path().join("job.sh");
            std::fs::write(&path, &script).unwrap();
            let out = std::process::Command::new("sh")
                .arg(&path)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let expected: String = args[2..]
                .iter()
                .map(|a| format!("{}\n", a.to_string_lossy()))
                .collect();
            assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
            // Nothing was executed by the shell: no file named after the command substitution.
            assert!(std::fs::read_dir(dir.path()).unwrap().count() == 1);
        }
    }

    #[test]
    fn non_utf8_bytes_survive() {
        use std::os::unix::ffi::OsStringExt;
        let arg = OsString::from_vec(vec![b'a', 0xff, b'\'', b'b']);
        let dir = tempfile::tempdir().unwrap();
        let script = batch_script(
            &[OsString::from("printf"), OsString::from("%s"), arg.clone()],
            None,
            dir.path(),
            "",
        );
        let path = dir.path().join("job.sh");
        std::fs::write(&path, &script).unwrap();
        let out = std::process::Command::new("sh")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.stdout, arg.into_vec());
    }
}
