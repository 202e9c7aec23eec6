//! Cgroup backends written directly against cgroupfs: v2 (a delegated subtree), v1 (including
//! hybrid hosts, where the controller-less cgroup2 tree is used for `cgroup.kill`) and none.
//!
//! The backend is chosen once at start-up (detected, or the kind `[executor] cgroup` forces) and
//! dispatches by enum, like youki's `AnyCgroupManager`. Each job gets a [`JobCgroup`] that owns
//! its directories, pre-opened `cgroup.procs` descriptors for race-free placement in `pre_exec`,
//! and removes everything again (also on drop, so error paths do not leak cgroups).
//!
//! Every call here is blocking file-system work (kill and rmdir loops sleep for a few
//! milliseconds); call it from `spawn_blocking` inside an async runtime.
//!
//! Files: `procfs` (where this process is), `fs` (cgroupfs I/O behind the `CgroupOps`
//! seam), `job` (one job's cgroup), `v1`, `v2`, `none` (the backends), `measure` (need vs
//! charged memory).

mod fs;
mod job;
mod measure;
mod none;
mod procfs;
mod v1;
mod v2;

#[cfg(test)]
mod fakefs;
#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod tests;

pub use job::JobCgroup;
pub use none::NoneBackend;
pub use v1::{Prewarm, V1Backend};
pub use v2::{MovePeers, V2Backend, V2Options};

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use fs::Fs;
use procfs::{parse_mountinfo, read_proc_self, ProcCgroup};

/// Longest accepted job cgroup name.
const MAX_NAME_LEN: usize = 64;
/// Name of the leaf the executor moves itself into on a delegated v2 subtree; never a job name.
pub(crate) const SUPERVISOR_DIR: &str = "supervisor";

/// Which cgroup implementation runs the jobs (config `cgroup = "v2" | "v1" | "none"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupKind {
    /// Unified hierarchy (cgroup2) with a delegated subtree.
    V2,
    /// Legacy per-controller hierarchies (also hybrid hosts).
    V1,
    /// No cgroups: limits are not enforced, measurement falls back to rusage.
    None,
}

impl CgroupKind {
    /// The lowercase name used in config files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupKind::V2 => "v2",
            CgroupKind::V1 => "v1",
            CgroupKind::None => "none",
        }
    }
}

impl fmt::Display for CgroupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Limits to apply to one job cgroup; `None` leaves the kernel default (unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory cap in bytes (`memory.max` / `memory.limit_in_bytes`, swap capped to the same).
    pub memory_bytes: Option<u64>,
    /// Maximum number of processes and threads (`pids.max`).
    pub pids_max: Option<u64>,
}

/// What [`Backend::create`] actually wrote, so the caller can report what was enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppliedLimits {
    /// Memory cap that was written, if any.
    pub memory_bytes: Option<u64>,
    /// True when swap is capped too (`memory.swap.max = 0` on v2, `memory.memsw.limit_in_bytes`
    /// = the memory cap on v1); false where the file is missing (no swap accounting) or refused.
    pub swap_limited: bool,
    /// Process limit that was written, if any (none without a pids controller).
    pub pids_max: Option<u64>,
}

/// Measurements read from a job cgroup; `None` means "not measured", never 0.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    /// Peak memory of the whole cgroup (page cache included), bytes.
    pub peak_bytes: Option<u64>,
    /// CPU time used by every process that ever ran in the cgroup, nanoseconds.
    pub cpu_ns: Option<u64>,
    /// The kernel OOM killer killed at least one process in the cgroup.
    pub oom_killed: bool,
}

/// Errors of the cgroup backends; file-system errors always carry the path that failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroupfs read, write, mkdir or rmdir failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory that failed.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A job cgroup name that is not `[A-Za-z0-9_.-]{1,64}` (or is `.`, `..`, `supervisor`).
    #[error("invalid cgroup name {0:?}: use 1-64 characters from [A-Za-z0-9_.-], not \".\", \"..\" or \"supervisor\"")]
    InvalidName(String),
    /// The requested backend cannot be used on this host; the text says why.
    #[error("cgroup backend unavailable: {0}")]
    Unsupported(String),
    /// The job cgroup directory already exists (a name clash or a leftover: see `cleanup_stale`).
    #[error("cgroup {} already exists", path.display())]
    AlreadyExists {
        /// The existing directory.
        path: PathBuf,
    },
    /// Processes were still running in the cgroup after every kill round.
    #[error("processes {pids:?} still in {} after {rounds} kill rounds", path.display())]
    KillTimeout {
        /// The cgroup that did not empty.
        path: PathBuf,
        /// The pids still listed in its `cgroup.procs`.
        pids: Vec<i32>,
        /// How many rounds were tried.
        rounds: u32,
    },
}

/// The cgroup implementation chosen at start-up; dispatches to one backend.
#[derive(Debug)]
pub enum Backend {
    /// cgroup2 with a delegated subtree.
    V2(V2Backend),
    /// cgroup v1 hierarchies (plus the hybrid cgroup2 tree when there is one).
    V1(V1Backend),
    /// No cgroups; carries the reason.
    None(NoneBackend),
}

impl Backend {
    /// Detects the backend of the running system from `/proc/self/cgroup` and
    /// `/proc/self/mountinfo`; falls back to [`Backend::None`] with the reason kept.
    ///
    /// On a delegated v2 subtree this prepares delegation once: it may move this process into
    /// `<base>/supervisor` and enable `memory`, `pids` (and `cpu`) in `<base>/cgroup.subtree_control`.
    /// With the default [`V2Options`] ([`MovePeers::Auto`]) it also moves other processes that
    /// share `<base>` into `supervisor` when `<base>` is delegated to this user (see
    /// [`MovePeers`]). Prints nothing.
    pub(crate) fn detect_with(v2: &V2Options) -> Backend {
        match read_proc_self() {
            Ok((cgroup, mountinfo)) => {
                Self::detect_in(&Fs::kernel(), Path::new("/"), &cgroup, &mountinfo, v2)
            }
            Err(e) => Backend::None(NoneBackend::new(format!(
                "no writable memory controller: {e}"
            ))),
        }
    }

    /// Detection with every mount point taken relative to `root`, the contents of
    /// `/proc/self/cgroup` and `/proc/self/mountinfo` given, and cgroupfs reached through `fs`
    /// (the unit tests pass a fake filesystem here).
    pub(crate) fn detect_in(
        fs: &Fs,
        root: &Path,
        proc_self_cgroup: &str,
        mountinfo: &str,
        v2: &V2Options,
    ) -> Backend {
        let own = ProcCgroup::parse(proc_self_cgroup);
        let mounts = parse_mountinfo(mountinfo);
        let v2_reason = match V2Backend::detect_at(fs, root, &own, &mounts, v2) {
            Ok(b) => return Backend::V2(b),
            Err(reason) => reason,
        };
        let v1_reason = match V1Backend::detect_at(fs, root, &own, &mounts) {
            Ok(b) => return Backend::V1(b),
            Err(reason) => reason,
        };
        Backend::None(NoneBackend::new(format!(
            "no writable memory controller: cgroup v2: {v2_reason}; cgroup v1: {v1_reason}"
        )))
    }

    /// Forces one kind (config `cgroup = "v2" | "v1" | "none"`); `Unsupported` when it is not usable.
    pub(crate) fn from_kind(kind: CgroupKind) -> Result<Backend, CgroupError> {
        Self::from_kind_with(kind, &V2Options::default())
    }

    /// [`Backend::from_kind`] with the v2 options of `[executor]`.
    pub(crate) fn from_kind_with(kind: CgroupKind, v2: &V2Options) -> Result<Backend, CgroupError> {
        if kind == CgroupKind::None {
            return Ok(Backend::None(NoneBackend::disabled()));
        }
        let (cgroup, mountinfo) = read_proc_self().map_err(CgroupError::Unsupported)?;
        Self::from_kind_in(&Fs::kernel(), kind, Path::new("/"), &cgroup, &mountinfo, v2)
    }

    /// [`Backend::from_kind`] against a given root and cgroupfs (see [`Backend::detect_in`]).
    pub(crate) fn from_kind_in(
        fs: &Fs,
        kind: CgroupKind,
        root: &Path,
        proc_self_cgroup: &str,
        mountinfo: &str,
        v2: &V2Options,
    ) -> Result<Backend, CgroupError> {
        let own = ProcCgroup::parse(proc_self_cgroup);
        let mounts = parse_mountinfo(mountinfo);
        match kind {
            CgroupKind::V2 => V2Backend::detect_at(fs, root, &own, &mounts, v2)
                .map(Backend::V2)
                .map_err(|r| CgroupError::Unsupported(format!("cgroup v2: {r}"))),
            CgroupKind::V1 => V1Backend::detect_at(fs, root, &own, &mounts)
                .map(Backend::V1)
                .map_err(|r| CgroupError::Unsupported(format!("cgroup v1: {r}"))),
            CgroupKind::None => Ok(Backend::None(NoneBackend::disabled())),
        }
    }

    /// Which implementation this is.
    pub fn kind(&self) -> CgroupKind {
        match self {
            Backend::V2(_) => CgroupKind::V2,
            Backend::V1(_) => CgroupKind::V1,
            Backend::None(_) => CgroupKind::None,
        }
    }

    /// Whether memory caps are enforced by the kernel (false for [`Backend::None`]).
    pub fn enforces_memory(&self) -> bool {
        !matches!(self, Backend::None(_))
    }

    /// Why no cgroup backend is used, for [`Backend::None`].
    pub(crate) fn why_none(&self) -> Option<&str> {
        match self {
            Backend::None(b) => Some(b.reason()),
            _ => None,
        }
    }

    /// Creates the job cgroup `name` (validated) with `limits` applied; nothing is placed in it yet.
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> Result<JobCgroup, CgroupError> {
        validate_name(name)?;
        match self {
            Backend::V2(b) => b.create(name, limits),
            Backend::V1(b) => b.create(name, limits),
            Backend::None(b) => b.create(name, limits),
        }
    }

    /// Removes leftovers of a crashed executor: every child cgroup of our parent(s) whose name
    /// starts with `prefix` and for which `is_live(name)` is false has its processes killed and
    /// is removed. Returns the names removed (sorted). An empty or invalid prefix removes nothing.
    pub fn cleanup_stale(&self, prefix: &str, is_live: &dyn Fn(&str) -> bool) -> Vec<String> {
        if prefix.is_empty() || !prefix.bytes().all(valid_name_byte) {
            return Vec::new();
        }
        let select =
            |name: &str| name.starts_with(prefix) && validate_name(name).is_ok() && !is_live(name);
        match self {
            Backend::V2(b) => b.cleanup_stale(&select),
            Backend::V1(b) => b.cleanup_stale(&select),
            Backend::None(_) => Vec::new(),
        }
    }
}

/// Checks a job cgroup name: `^[A-Za-z0-9_.-]{1,64}$`, not `.`, `..` or `supervisor`.
pub(crate) fn validate_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(valid_name_byte)
        && name != "."
        && name != ".."
        && name != SUPERVISOR_DIR;
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName(name.to_string()))
    }
}

fn valid_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}
