//! Run one attempt: own process group, cgroup cap placed before exec, timeout with
//! SIGTERM → grace → SIGKILL, actuals measured from the kernel.

pub mod admission;
pub mod burst;
pub mod cgroup;
pub mod owner;
pub mod signals;
mod spawn;
pub mod user;

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SigSet, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{getpgrp, isatty, tcgetpgrp, Pid};
use serde::Serialize;

use crate::job::Outcome;
pub use cgroup::{Backend, CgroupKind, CgroupLimits};

/// Which cgroup backend the executor uses (`[executor] cgroup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CgroupChoice {
    /// Detect at start-up: v2 if delegated, else v1, else none.
    #[default]
    Auto,
    V2,
    V1,
    None,
}

/// Environment variable that turns the v1 migration warm-up off when set to `0`.
const PREWARM_ENV: &str = "PRESIZE_CGROUP_PREWARM";

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
    #[error("interrupted by signal {0} before the job started")]
    Interrupted(i32),
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
    /// What the job needed, MiB: the peak of non-reclaimable memory (anon + shmem, and
    /// unreclaimable kernel memory on v2; never page cache) sampled from the cgroup while it
    /// ran, at least the largest process's maxrss, at most the charged peak; the charged peak
    /// (the cap) when it was OOM-killed. Without a cgroup: the largest process's maxrss.
    pub peak_rss_mb: Option<f64>,
    /// The cgroup's charged peak (page cache included), MiB; `None` without a cgroup.
    pub charged_peak_mb: Option<f64>,
    /// Processes the kernel OOM-killed inside the job (also under a job that exited 0).
    pub oom_events: u64,
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
    /// On cgroup v1: keeps the kernel's migration lock warm until the first job is placed.
    prewarm: Option<cgroup::Prewarm>,
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
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    resolve_program_in(program, &path)
}

/// Resolve the program the way it will be run: with the `--user`'s `PATH` when given
/// (`/usr/local/bin:/usr/bin:/bin`), else with presize's own.
pub fn resolve_program_for(
    program: &OsString,
    run_as: Option<&user::RunAs>,
) -> Result<PathBuf, ExecError> {
    match run_as {
        Some(_) => resolve_program_in(program, OsStr::new(user::USER_PATH)),
        None => resolve_program(program),
    }
}

/// Resolve `program` in the directories of `path` (or as given when it contains a `/`).
pub(crate) fn resolve_program_in(program: &OsString, path: &OsStr) -> Result<PathBuf, ExecError> {
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
    for dir in std::env::split_paths(path) {
        let cand = dir.join(program);
        if let Ok(meta) = std::fs::metadata(&cand) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(cand);
            }
        }
    }
    Err(ExecError::NotFound(s.to_string()))
}

fn killpg(pgid: i32, sig: Signal) {
    // ESRCH when the group is gone is expected.
    let _ = signal::killpg(Pid::from_raw(pgid), sig);
}

struct WaitResult {
    status: i32,
    rusage: libc::rusage,
}

/// `wait4(2)`: nix has `waitpid` but no call that also returns the child's rusage.
fn wait_blocking(pid: i32) -> io::Result<WaitResult> {
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain old data; wait4 fills it.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child; both out-pointers are valid for the call.
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

/// The controlling terminal presize holds in the foreground, if any (fd 0, 1 or 2). A job in
/// its own process group must get it, or reading the terminal stops it with SIGTTIN.
fn foreground_tty() -> Option<i32> {
    let me = getpgrp();
    [
        io::stdin().as_fd(),
        io::stdout().as_fd(),
        io::stderr().as_fd(),
    ]
    .into_iter()
    .find(|fd| isatty(fd).unwrap_or(false) && tcgetpgrp(fd).is_ok_and(|pg| pg == me))
    .map(|fd| fd.as_raw_fd())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn tv_secs(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

impl Executor {
    /// An executor with the configured cgroup backend (`auto` detects).
    pub fn new(choice: CgroupChoice) -> Result<Self, ExecError> {
        Self::with_v2_options(choice, &cgroup::V2Options::default())
    }

    /// [`Executor::new`] with the v2 options of `[executor]` (`v2_move_peers`).
    pub fn with_v2_options(
        choice: CgroupChoice,
        v2: &cgroup::V2Options,
    ) -> Result<Self, ExecError> {
        let backend = match choice {
            CgroupChoice::Auto => Backend::detect_with(v2),
            CgroupChoice::V2 => Backend::from_kind_with(CgroupKind::V2, v2)?,
            CgroupChoice::V1 => Backend::from_kind(CgroupKind::V1)?,
            CgroupChoice::None => Backend::from_kind(CgroupKind::None)?,
        };
        // On v1 the child's migration into its cgroups waits for a grace period unless one
        // ran shortly before: start that wait now, while the store is opened and the job
        // planned (`PRESIZE_CGROUP_PREWARM=0` turns it off).
        let prewarm = match &backend {
            Backend::V1(v1) if std::env::var_os(PREWARM_ENV).is_none_or(|v| v != "0") => {
                Some(v1.prewarm())
            }
            _ => None,
        };
        Ok(Self { backend, prewarm })
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
    ///
    /// Answers SIGINT, SIGTERM, SIGHUP and SIGQUIT (see [`signals`]): a signal pending before
    /// the spawn returns [`ExecError::Interrupted`] without starting the job; one received while
    /// it runs is forwarded to its process group as the same signal, then SIGKILL follows after
    /// the grace period (at once on a second signal).
    pub async fn run_async(
        &self,
        req: &ExecRequest,
        on_started: &mut dyn FnMut(&Started),
    ) -> Result<Actuals, ExecError> {
        let program = req.command.first().ok_or(ExecError::EmptyCommand)?;
        let resolved = resolve_program_for(program, req.run_as.as_ref())?;
        signals::install().map_err(ExecError::Runtime)?;
        if let Some(sig) = signals::pending() {
            return Err(ExecError::Interrupted(sig));
        }
        let limits = CgroupLimits {
            memory_bytes: req.memory_limit_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
            pids_max: req.pids_max,
        };
        let cg = self.backend.create(&req.cgroup_name, &limits)?;
        // Only what was really written to the kernel counts as enforced.
        let memory_enforced = cg.applied().memory_bytes.is_some();

        let tty = foreground_tty();
        let spawn_req = spawn::SpawnRequest {
            arg0: program,
            program: &resolved,
            args: &req.command[1..],
            cwd: req.cwd.as_deref(),
            run_as: req.run_as.as_ref(),
            tty,
        };
        let t0 = Instant::now();
        let spawned = spawn::spawn(&spawn_req, cg.clone_into(), cg.procs_fds());
        if let Some(p) = &self.prewarm {
            p.stop();
        }
        let (pid, _placement) = match spawned {
            Ok(p) => p,
            Err(source) => {
                let _ = cg.remove();
                return Err(ExecError::Spawn {
                    program: program.to_string_lossy().into_owned(),
                    source,
                });
            }
        };
        on_started(&Started {
            pid: pid as u32,
            start_ticks: proc_start_ticks(pid as u32),
            cgroup_name: (!cg.procs_fds().is_empty()).then(|| req.cgroup_name.clone()),
        });

        let (tx, mut rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(wait_blocking(pid));
        });

        // The need is sampled every tick for the first second (short jobs), then every 5th.
        let need_peak: Cell<Option<u64>> = Cell::new(None);
        let sample = || {
            if let Some(n) = cg.need_bytes() {
                need_peak.set(Some(need_peak.get().map_or(n, |p| p.max(n))));
            }
        };
        sample();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        let deadline = tokio::time::sleep(req.timeout);
        tokio::pin!(deadline);
        let mut timed_out = false;
        let mut interrupted_by = None;
        let first = loop {
            tokio::select! {
                r = &mut rx => break Some(r),
                _ = &mut deadline => { timed_out = true; break None; }
                _ = tick.tick() => {
                    if let Some(sig) = signals::pending() {
                        interrupted_by = Some(sig);
                        break None;
                    }
                    ticks += 1;
                    if ticks < 50 || ticks % 5 == 0 {
                        sample();
                    }
                }
            }
        };
        let waited = match first {
            Some(r) => r,
            None => {
                // The job's own handler sees what presize saw; a timeout is a SIGTERM.
                let sig = interrupted_by
                    .and_then(|s| Signal::try_from(s).ok())
                    .unwrap_or(Signal::SIGTERM);
                killpg(pid, sig);
                let seen = signals::count();
                let grace = tokio::time::sleep(req.grace);
                tokio::pin!(grace);
                let within = loop {
                    tokio::select! {
                        r = &mut rx => break Some(r),
                        _ = &mut grace => break None,
                        _ = tick.tick() => {
                            sample();
                            if signals::count() > seen {
                                break None;
                            }
                        }
                    }
                };
                match within {
                    Some(r) => r,
                    None => {
                        killpg(pid, Signal::SIGKILL);
                        let _ = cg.kill_all();
                        rx.await
                    }
                }
            }
        };
        let wall_s = t0.elapsed().as_secs_f64();
        if let Some(fd) = tty {
            let mut ttou = SigSet::empty();
            ttou.add(Signal::SIGTTOU);
            spawn::give_tty(fd, getpgrp(), &ttou);
        }
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
        sample();
        killpg(pid, Signal::SIGKILL);
        let _ = cg.kill_all();
        let stats = cg.stats();
        let oom_events = cg.oom_kills();
        let measured_by_cgroup = stats.peak_bytes.is_some();
        let source = if measured_by_cgroup {
            self.backend_name().to_string()
        } else {
            "rusage".to_string()
        };
        let _ = cg.remove();

        let (exit_code, signal) = match WaitStatus::from_raw(Pid::from_raw(pid), waited.status) {
            Ok(WaitStatus::Exited(_, code)) => (Some(code), None),
            Ok(WaitStatus::Signaled(_, sig, _)) => (None, Some(sig as i32)),
            _ => (None, None),
        };
        let rusage_cpu_s = tv_secs(waited.rusage.ru_utime) + tv_secs(waited.rusage.ru_stime);
        let rusage_maxrss_mb = waited.rusage.ru_maxrss as f64 / 1024.0;
        let oom = stats.oom_killed || oom_events > 0;
        // The job's main process decides: exit 0 is `ok` even when the kernel OOM-killed one
        // of its children (the event is kept in `oom_events`), as systemd's OOMPolicy=continue
        // judges a unit by its main process.
        let outcome = if interrupted_by.is_some() {
            Outcome::Failed
        } else if timed_out {
            Outcome::TimedOut
        } else if exit_code == Some(0) {
            Outcome::Ok
        } else if oom {
            Outcome::OomKilled
        } else {
            Outcome::Failed
        };
        let charged_peak_mb = stats.peak_bytes.map(mib);
        let peak_rss_mb = match (need_peak.get(), charged_peak_mb) {
            (Some(need), charged) => {
                let need = mib(need).max(rusage_maxrss_mb);
                match charged {
                    // It needed more than it was allowed; the charged peak (the cap) is the
                    // best known lower bound (memory.stat may lag behind the kill).
                    Some(c) if outcome == Outcome::OomKilled => c,
                    // Non-reclaimable memory is part of the charge: a larger sum is stat lag.
                    Some(c) => need.min(c),
                    None => need,
                }
            }
            // A cgroup without memory.stat: the charged peak is all there is.
            (None, Some(charged)) => charged,
            (None, None) => rusage_maxrss_mb,
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
            peak_rss_mb: Some(peak_rss_mb),
            charged_peak_mb,
            oom_events,
            wall_s,
            rusage_maxrss_mb,
            rusage_cpu_s,
            measure_source: source,
            memory_enforced,
            interrupted_by,
        })
    }
}
