//! Run one attempt: own process group, cgroup cap placed before exec, timeout with
//! SIGTERM → grace → SIGKILL, actuals measured from the kernel.

pub mod admission;
pub mod burst;
pub mod cgroup;
pub mod user;

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::CgroupChoice;
use crate::job::Outcome;
pub use cgroup::{Backend, CgroupKind, CgroupLimits};

/// Errors of the executor.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no command given: put the job after `--`, e.g. `presize run -- python3 job.py`")]
    EmptyCommand,
    #[error("command {0:?} not found in PATH: check the spelling or give a path")]
    NotFound(String),
    #[error("command {0} is a directory, not a program")]
    IsDirectory(PathBuf),
    #[error("command {0} is not executable: run `chmod +x` on it or call its interpreter")]
    NotExecutable(PathBuf),
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("cgroup setup failed: {0}")]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("waiting for the job failed: {0}")]
    Wait(io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
    #[error(transparent)]
    User(#[from] user::UserError),
}

impl ExecError {
    /// True for failures of presize itself rather than of the user's input.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            ExecError::Cgroup(_) | ExecError::Wait(_) | ExecError::Runtime(_)
        )
    }
}

/// One attempt to run.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: Vec<OsString>,
    pub cwd: Option<PathBuf>,
    /// Memory cap in MiB; `None` runs uncapped.
    pub memory_limit_mb: Option<u64>,
    pub timeout: Duration,
    pub grace: Duration,
    /// Run the job as this user (root only); `None` keeps presize's own user.
    pub run_as: Option<user::RunAs>,
    pub pids_max: Option<u64>,
    /// Cgroup directory name (sanitised id).
    pub cgroup_name: String,
}

/// Reported once the job has started.
#[derive(Debug, Clone)]
pub struct Started {
    pub pid: u32,
    /// `/proc/<pid>/stat` start time, to tell a pid from a later reuse.
    pub start_ticks: Option<u64>,
    pub cgroup_name: Option<String>,
}

/// What the kernel measured for one attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Actuals {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// CPU seconds (cgroup when available, else rusage of waited-for processes).
    pub cpu_s: Option<f64>,
    /// Peak memory in MiB (cgroup peak when available, else the largest process's maxrss).
    pub peak_rss_mb: Option<f64>,
    pub wall_s: f64,
    pub rusage_maxrss_mb: f64,
    pub rusage_cpu_s: f64,
    /// `cgroup-v2`, `cgroup-v1` or `rusage`.
    pub measure_source: String,
    /// True when a kernel memory cap was in force.
    pub memory_enforced: bool,
    /// A signal presize itself received (and forwarded to the job), if any.
    pub interrupted_by: Option<i32>,
}

/// Runs jobs through one cgroup backend.
pub struct Executor {
    backend: Backend,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("backend", &self.backend_name())
            .finish()
    }
}

/// Read the start time (clock ticks since boot) of a process, field 22 of `/proc/<pid>/stat`.
pub fn proc_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Is the process `pid` alive and (when `start` is given) the same process as recorded?
pub fn process_alive(pid: i64, start: Option<i64>) -> bool {
    if pid <= 0 || pid > i32::MAX as i64 {
        return false;
    }
    match proc_start_ticks(pid as u32) {
        None => false,
        Some(now) => start.is_none_or(|s| s as u64 == now),
    }
}

/// Resolve the program of a command the way `execvp` would, with clear errors.
pub fn resolve_program(program: &OsString) -> Result<PathBuf, ExecError> {
    let s = program.to_string_lossy();
    if s.is_empty() {
        return Err(ExecError::EmptyCommand);
    }
    let check = |p: &Path| -> Result<PathBuf, ExecError> {
        let meta = std::fs::metadata(p).map_err(|_| ExecError::NotFound(s.to_string()))?;
        if meta.is_dir() {
            return Err(ExecError::IsDirectory(p.to_owned()));
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(ExecError::NotExecutable(p.to_owned()));
        }
        Ok(p.to_owned())
    };
    if s.contains('/') {
        return check(Path::new(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let cand = dir.join(program);
        if let Ok(meta) = std::fs::metadata(&cand) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(cand);
            }
        }
    }
    Err(ExecError::NotFound(s.to_string()))
}

fn killpg(pgid: i32, sig: i32) {
    // SAFETY: plain syscall; errors (ESRCH when the group is gone) are expected and ignored.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

struct WaitResult {
    status: i32,
    rusage: libc::rusage,
}

fn wait_blocking(pid: i32) -> io::Result<WaitResult> {
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain old data; wait4 fills it.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if rc == pid {
            return Ok(WaitResult { status, rusage });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn tv_secs(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

impl Executor {
    /// An executor with the configured cgroup backend (`auto` detects).
    pub fn new(choice: CgroupChoice) -> Result<Self, ExecError> {
        let backend = match choice {
            CgroupChoice::Auto => Backend::detect(),
            CgroupChoice::V2 => Backend::from_kind(CgroupKind::V2)?,
            CgroupChoice::V1 => Backend::from_kind(CgroupKind::V1)?,
            CgroupChoice::None => Backend::from_kind(CgroupKind::None)?,
        };
        Ok(Self { backend })
    }

    /// An executor over an explicit backend.
    pub fn with_backend(backend: Backend) -> Self {
        Self { backend }
    }

    /// `cgroup-v2`, `cgroup-v1` or `none`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend.kind() {
            CgroupKind::V2 => "cgroup-v2",
            CgroupKind::V1 => "cgroup-v1",
            CgroupKind::None => "none",
        }
    }

    /// Whether memory caps are enforced by the kernel.
    pub fn enforces_memory(&self) -> bool {
        self.backend.enforces_memory()
    }

    /// Why no cgroup backend is in use, if none is.
    pub fn why_unenforced(&self) -> Option<&str> {
        self.backend.why_none()
    }

    /// The cgroup backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Run one attempt to completion (blocking; builds a small runtime of its own).
    pub fn run(
        &self,
        req: &ExecRequest,
        on_started: &mut dyn FnMut(&Started),
    ) -> Result<Actuals, ExecError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ExecError::Runtime)?;
        rt.block_on(self.run_async(req, on_started))
    }

    /// Run one attempt to completion inside an existing tokio runtime.
    pub async fn run_async(
        &self,
        req: &ExecRequest,
        on_started: &mut dyn FnMut(&Started),
    ) -> Result<Actuals, ExecError> {
        use tokio::signal::unix::{signal, SignalKind};

        let program = req.command.first().ok_or(ExecError::EmptyCommand)?;
        let resolved = resolve_program(program)?;
        let limits = CgroupLimits {
            memory_bytes: req.memory_limit_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
            pids_max: req.pids_max,
        };
        let cg = self.backend.create(&req.cgroup_name, &limits)?;
        // Only what was really written to the kernel counts as enforced.
        let memory_enforced = cg.applied().memory_bytes.is_some();

        let mut cmd = std::process::Command::new(&resolved);
        cmd.arg0(program).args(&req.command[1..]).process_group(0);
        if let Some(dir) = &req.cwd {
            cmd.current_dir(dir);
        }
        if let Some(who) = &req.run_as {
            cmd.env("HOME", &who.home)
                .env("USER", &who.name)
                .env("LOGNAME", &who.name);
        }
        let fds: Vec<i32> = cg.procs_fds().to_vec();
        let run_as = req.run_as.clone();
        // SAFETY: the closure only calls write(2) on pre-opened descriptors and
        // setgroups/setgid/setuid on data prepared before the fork (async-signal-safe, no
        // allocation), so the child joins its cgroups before exec and before it can fork,
        // and drops to the job's user only after that.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some(who) = &run_as {
                    who.apply_in_child()?;
                }
                Ok(())
            });
        }
        // Signal streams before spawning, so a signal during start-up is not lost.
        let mut sigint = signal(SignalKind::interrupt()).map_err(ExecError::Runtime)?;
        let mut sigterm = signal(SignalKind::terminate()).map_err(ExecError::Runtime)?;
        let mut sighup = signal(SignalKind::hangup()).map_err(ExecError::Runtime)?;

        let t0 = Instant::now();
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(source) => {
                let _ = cg.remove();
                return Err(ExecError::Spawn {
                    program: program.to_string_lossy().into_owned(),
                    source,
                });
            }
        };
        let pid = child.id() as i32;
        // Dropping std's Child neither waits nor kills; we reap with wait4 for rusage.
        drop(child);
        on_started(&Started {
            pid: pid as u32,
            start_ticks: proc_start_ticks(pid as u32),
            cgroup_name: (!cg.procs_fds().is_empty()).then(|| req.cgroup_name.clone()),
        });

        let (tx, mut rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(wait_blocking(pid));
        });

        let mut timed_out = false;
        let mut interrupted_by = None;
        let deadline = tokio::time::sleep(req.timeout);
        tokio::pin!(deadline);
        let first = tokio::select! {
            r = &mut rx => Some(r),
            _ = &mut deadline => { timed_out = true; None }
            _ = sigint.recv() => { interrupted_by = Some(libc::SIGINT); None }
            _ = sigterm.recv() => { interrupted_by = Some(libc::SIGTERM); None }
            _ = sighup.recv() => { interrupted_by = Some(libc::SIGHUP); None }
        };
        let waited = match first {
            Some(r) => r,
            None => {
                killpg(pid, libc::SIGTERM);
                match tokio::time::timeout(req.grace, &mut rx).await {
                    Ok(r) => r,
                    Err(_) => {
                        killpg(pid, libc::SIGKILL);
                        let _ = cg.kill_all();
                        rx.await
                    }
                }
            }
        };
        let wall_s = t0.elapsed().as_secs_f64();
        let waited = match waited {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                let _ = cg.remove();
                return Err(ExecError::Wait(e));
            }
            Err(_) => {
                let _ = cg.remove();
                return Err(ExecError::Wait(io::Error::other("wait thread vanished")));
            }
        };
        // The job is over: nothing it started may outlive it (group members, setsid escapees).
        killpg(pid, libc::SIGKILL);
        let _ = cg.kill_all();
        let stats = cg.stats();
        let measured_by_cgroup = stats.peak_bytes.is_some();
        let source = if measured_by_cgroup {
            self.backend_name().to_string()
        } else {
            "rusage".to_string()
        };
        let _ = cg.remove();

        let status = waited.status;
        let (exit_code, signal) = if libc::WIFEXITED(status) {
            (Some(libc::WEXITSTATUS(status)), None)
        } else if libc::WIFSIGNALED(status) {
            (None, Some(libc::WTERMSIG(status)))
        } else {
            (None, None)
        };
        let rusage_cpu_s = tv_secs(waited.rusage.ru_utime) + tv_secs(waited.rusage.ru_stime);
        let rusage_maxrss_mb = waited.rusage.ru_maxrss as f64 / 1024.0;
        let outcome = if interrupted_by.is_some() {
            Outcome::Failed
        } else if timed_out {
            Outcome::TimedOut
        } else if stats.oom_killed {
            Outcome::OomKilled
        } else if exit_code == Some(0) {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        Ok(Actuals {
            outcome,
            exit_code,
            signal,
            cpu_s: Some(
                stats
                    .cpu_ns
                    .map(|ns| ns as f64 / 1e9)
                    .unwrap_or(rusage_cpu_s),
            ),
            peak_rss_mb: Some(
                stats
                    .peak_bytes
                    .map(|b| b as f64 / (1024.0 * 1024.0))
                    .unwrap_or(rusage_maxrss_mb),
            ),
            wall_s,
            rusage_maxrss_mb,
            rusage_cpu_s,
            measure_source: source,
            memory_enforced,
            interrupted_by,
        })
    }
}
